"""The kv workload: random point reads and upserts on a key-value table."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import tidemark
from tidemark.errors import RetryableError
from tidemark.workload import RunStats, retry

DATABASE = "workload"
TABLE = f"{DATABASE}.kv"


def init(store: str | Path, rows: int = 1000) -> None:
    with tidemark.connect(store) as conn:
        conn.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
        conn.execute(f"CREATE TABLE {TABLE} (k INT PRIMARY KEY, v STRING)")
        for start in range(0, rows, 500):
            ids = range(start, min(rows, start + 500))
            conn.execute(f"INSERT INTO {TABLE} VALUES " +
                         ", ".join(f"({i}, 'v{i}')" for i in ids))


def run(store: str | Path, duration: float, concurrency: int = 1, read_fraction: float = 0.5,
        seed: int | None = None) -> RunStats:
    with tidemark.connect(store) as conn:
        ((keys,),) = conn.execute(f"SELECT count(*) FROM {TABLE}").rows
    keys = max(int(keys), 1)
    stats = RunStats()
    lock = threading.Lock()
    errors: list[BaseException] = []
    deadline = time.monotonic() + duration
    base = random.Random(seed).randrange(2**32)

    def worker(n: int) -> None:
        rng = random.Random(base + n)
        try:
            with tidemark.connect(store) as c:
                while time.monotonic() < deadline:
                    k = rng.randrange(keys)
                    try:
                        if rng.random() < read_fraction:
                            retry(lambda k=k: c.execute(f"SELECT v FROM {TABLE} WHERE k = $1",
                                                        [k]))
                        else:
                            v = f"v{rng.randrange(1 << 30)}"
                            retry(lambda k=k, v=v: c.execute(
                                f"UPSERT INTO {TABLE} VALUES ($1, $2)", [k, v]))
                    except RetryableError:
                        with lock:
                            stats.retries += 1
                        continue
                    with lock:
                        stats.ops += 1
        except BaseException as exc:
            errors.append(exc)

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats.seconds = time.monotonic() - start
    if errors:
        raise errors[0]
    return stats
