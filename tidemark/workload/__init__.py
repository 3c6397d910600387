"""Workloads (``bank``, ``kv``) and the nemesis: random schedules of writes, schema changes,
imports, restores, GC and backups on one store, every backup restored and compared with its
source at the end (DESIGN.md "Testing")."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import tidemark
from tidemark.errors import RetryableError

__all__ = ["RunStats", "parse_duration", "retry", "run_workers"]

T = TypeVar("T")


@dataclass
class RunStats:
    ops: int = 0
    retries: int = 0
    seconds: float = 0.0

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


def run_workers(store: str | Path, duration: float, concurrency: int, seed: int | None,
                op: Callable[[tidemark.Connection, random.Random], tuple[int, int]]
                ) -> RunStats:
    """Run ``op`` in a loop on ``concurrency`` threads, each with its own connection and a
    seeded generator, for ``duration`` seconds. ``op`` returns (operations done, retries);
    the first error any thread raises is raised here once all have stopped."""
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
                    ops, retries = op(c, rng)
                    with lock:
                        stats.ops += ops
                        stats.retries += retries
        except BaseException as exc:  # reported by the caller
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


def retry(fn: Callable[[], T], attempts: int = 100, on_retry: Callable[[], None] | None = None
          ) -> T:
    """Run ``fn`` until it does not raise a retryable error (SQLSTATE 40001)."""
    for n in range(attempts):
        try:
            return fn()
        except RetryableError:
            if n == attempts - 1:
                raise
            if on_retry is not None:
                on_retry()
            time.sleep(min(0.001 * 2 ** n, 0.05))
    raise AssertionError("unreachable")


def parse_duration(text: str) -> float:
    """``10s``, ``500ms``, ``2m``, ``1h`` or a bare number of seconds."""
    t = text.strip().lower()
    for suffix, mult in (("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if t.endswith(suffix):
            return float(t[: -len(suffix)]) * mult
    return float(t)
