"""Serializable transactions over an engine: reads at one timestamp, buffered writes.

A transaction reads at ``read_ts`` (the frontier when it began), remembers every key it read
and every span it scanned, and buffers its writes. ``commit`` hands both to the engine, which,
under the store's write lock, refuses with a retryable error if anything read has a version
that arrived after ``read_ts`` (so write skew is refused, not only lost updates), and otherwise
writes everything at one new timestamp. A failed commit writes nothing.
"""

from __future__ import annotations

import bisect
import enum

from tidemark.clock import format_ts
from tidemark.errors import TransactionError, TxnConflictError
from tidemark.kv.keys import pretty_key
from tidemark.storage.engine import Engine, Span


class TxnState(enum.Enum):
    OPEN = "open"  # reads and writes allowed
    COMMITTED = "committed"  # commit succeeded; commit_ts is set
    ABORTED = "aborted"  # rolled back, or commit failed: nothing was written


class Txn:
    """One transaction. Not thread-safe: use it from one thread."""

    def __init__(self, engine: Engine, read_ts: int, historical: bool = False):
        self.engine = engine
        self.read_ts = read_ts
        self.historical = historical  # reads at a chosen past time (AS OF SYSTEM TIME)
        self.commit_ts: int | None = None
        self.state = TxnState.OPEN
        self._writes: dict[bytes, bytes | None] = {}
        self._write_keys: list[bytes] = []  # sorted, for merging into scans
        self._read_keys: set[bytes] = set()
        self._read_spans: list[Span] = []

    def _check_open(self) -> None:
        if self.state is not TxnState.OPEN:
            raise TransactionError(f"transaction is {self.state.value}; begin a new one")

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        if key in self._writes:
            return self._writes[key]
        self._read_keys.add(key)
        return self.engine.get_checked(key, self.read_ts)

    def get_many(self, keys: list[bytes]) -> dict[bytes, bytes | None]:
        """``get`` of many keys in one round trip to the engine."""
        self._check_open()
        out = {k: self._writes[k] for k in keys if k in self._writes}
        missing = [k for k in keys if k not in out]
        if missing:
            self._read_keys.update(missing)
            out.update(self.engine.get_many_checked(missing, self.read_ts))
        return out

    def scan(self, start: bytes, end: bytes, limit: int | None = None,
             reverse: bool = False) -> list[tuple[bytes, bytes]]:
        """Live keys in ``[start, end)`` at ``read_ts``, with this transaction's own writes."""
        self._check_open()
        if limit is not None and limit <= 0:
            return []
        lo = bisect.bisect_left(self._write_keys, start)
        hi = bisect.bisect_left(self._write_keys, end)
        pending = self._write_keys[lo:hi]
        # Each buffered write hides at most one stored row, so this many stored rows suffice.
        fetch = None if limit is None else limit + len(pending)
        stored = self.engine.scan(start, end, self.read_ts, fetch, reverse)
        self.engine.check_read_ts(self.read_ts, [Span(start, end)])
        exhausted = fetch is None or len(stored) < fetch
        if pending:
            merged = {k: v for k, v in stored}
            for k in pending:
                merged[k] = self._writes[k]
            rows = [(k, v) for k, v in sorted(merged.items(), reverse=reverse)
                    if v is not None]
            if not exhausted and stored:
                # Buffered keys beyond the last stored row read are not yet in order with
                # what the engine has not returned: cut there.
                last = stored[-1][0]
                rows = [r for r in rows if (r[0] >= last if reverse else r[0] <= last)]
        else:
            rows = stored
        if limit is not None and len(rows) > limit:
            rows = rows[:limit]
            exhausted = False
        if exhausted or not rows:
            self._read_spans.append(Span(start, end))
        elif reverse:
            self._read_spans.append(Span(rows[-1][0], end))
        else:
            self._read_spans.append(Span(start, rows[-1][0] + b"\x00"))
        return rows

    def has_writes_in(self, start: bytes, end: bytes) -> bool:
        """Whether this transaction wrote (and has not committed) a key in ``[start, end)``."""
        i = bisect.bisect_left(self._write_keys, start)
        return i < len(self._write_keys) and self._write_keys[i] < end

    def add_read_span(self, span: Span) -> None:
        """Count ``span`` as read without reading it: a commit then conflicts with any write
        into it after ``read_ts`` (how a statement claims a whole table)."""
        self._check_open()
        self._read_spans.append(span)

    # -- writes --------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes) -> None:
        self._check_open()
        self._buffer(key, value)

    def delete(self, key: bytes) -> None:
        self._check_open()
        self._buffer(key, None)

    def _buffer(self, key: bytes, value: bytes | None) -> None:
        if key not in self._writes:
            bisect.insort(self._write_keys, key)
        self._writes[key] = value

    def wrote(self, key: bytes) -> bool:
        return key in self._writes

    @property
    def has_writes(self) -> bool:
        return bool(self._writes)

    # -- end -----------------------------------------------------------------------------

    def commit(self) -> int:
        """Commit and return the commit timestamp (``read_ts`` for a read-only transaction)."""
        self._check_open()
        try:
            if self._writes:
                self.commit_ts = self.engine.commit(
                    list(self._writes.items()), self.read_ts, self._read_keys, self._read_spans)
            else:
                # Read-only: serializable at read_ts already, and every read checked GC.
                self.commit_ts = self.read_ts
        except TxnConflictError as exc:
            self.state = TxnState.ABORTED
            key = getattr(exc, "key", None)
            if key is None:
                raise
            raise TxnConflictError(
                f"restart transaction: {pretty_key(key)} was written by a concurrent "
                f"transaction after this one read it at {format_ts(self.read_ts)}",
                hint="retry the transaction") from exc
        except BaseException:
            self.state = TxnState.ABORTED
            raise
        self.state = TxnState.COMMITTED
        return self.commit_ts

    def rollback(self) -> None:
        if self.state is TxnState.OPEN:
            self.state = TxnState.ABORTED
            self._writes.clear()
            self._write_keys.clear()
