"""Workloads (``bank``, ``kv``) and the nemesis: random schedules of writes, schema changes,
imports, restores, GC and backups on one store, every backup restored and compared with its
source at the end (DESIGN.md "Testing")."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from tidemark.errors import RetryableError

__all__ = ["RunStats", "parse_duration", "retry"]

T = TypeVar("T")


@dataclass
class RunStats:
    ops: int = 0
    retries: int = 0
    seconds: float = 0.0

    @property
    def ops_per_second(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


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
