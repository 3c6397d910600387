"""The kv workload: random point reads and upserts on a key-value table."""

from __future__ import annotations

import random
from pathlib import Path

import tidemark
from tidemark.errors import RetryableError
from tidemark.workload import RunStats, retry, run_workers

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
    def op(c: tidemark.Connection, rng: random.Random) -> tuple[int, int]:
        k = rng.randrange(keys)
        try:
            if rng.random() < read_fraction:
                retry(lambda: c.execute(f"SELECT v FROM {TABLE} WHERE k = $1", [k]))
            else:
                v = f"v{rng.randrange(1 << 30)}"
                retry(lambda: c.execute(f"UPSERT INTO {TABLE} VALUES ($1, $2)", [k, v]))
        except RetryableError:
            return 0, 1
        return 1, 0

    return run_workers(store, duration, concurrency, seed, op)
