"""The key-value database: transactions, checked reads at a timestamp, and the retry helper."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from tidemark.errors import RetryableError
from tidemark.kv.txn import Txn
from tidemark.storage.engine import Engine, Span

T = TypeVar("T")

DEFAULT_MAX_ATTEMPTS = 200
_BACKOFF_START_S = 0.0005
_BACKOFF_MAX_S = 0.05


class DB:
    """Transactions and reads over one engine."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def now(self) -> int:
        """The timestamp a read "now" reads at: the closed timestamp."""
        return self.engine.frontier()

    def txn(self, read_ts: int | None = None) -> Txn:
        """Begin a transaction at the frontier, or at a given (checked) timestamp."""
        if read_ts is None:
            return Txn(self.engine, self.engine.frontier())
        self._close(read_ts)  # GC is checked after each read
        return Txn(self.engine, read_ts, historical=True)

    def get(self, key: bytes, ts: int | None = None) -> bytes | None:
        return self.engine.get_checked(key, self._read_ts(ts))

    def scan(self, start: bytes, end: bytes, ts: int | None = None, limit: int | None = None,
             reverse: bool = False) -> list[tuple[bytes, bytes]]:
        ts = self._read_ts(ts)
        rows = self.engine.scan(start, end, ts, limit, reverse)
        self.engine.check_read_ts(ts, [Span(start, end)])
        return rows

    def _read_ts(self, ts: int | None) -> int:
        if ts is None:
            return self.engine.frontier()
        self._close(ts)
        return ts

    def _close(self, ts: int) -> None:
        """A read above the frontier closes the timestamps up to it, or is refused when it is
        in the future."""
        if ts > self.engine.frontier():
            self.engine.close_timestamp(ts)

    def run(self, fn: Callable[[Txn], T], *, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> T:
        """Run ``fn`` in a transaction and commit, re-running it on a retryable error.

        ``fn`` may run several times, so it must have no effects outside the transaction.
        """
        delay = _BACKOFF_START_S
        for attempt in range(1, max_attempts + 1):
            txn = self.txn()
            try:
                result = fn(txn)
                txn.commit()
                return result
            except RetryableError:
                txn.rollback()
                if attempt == max_attempts:
                    raise
                time.sleep(random.uniform(0, delay))
                delay = min(delay * 2, _BACKOFF_MAX_S)
            except BaseException:
                txn.rollback()
                raise
        raise AssertionError("unreachable")
