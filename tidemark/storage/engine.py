"""The engine interface: what every MVCC storage engine offers, and the values it exchanges.

An engine stores versions ``(key, ts, arrival, value)`` (``value`` None is a tombstone) and is
the clock authority for writes: every commit gets ``commit_ts = max(wall clock, frontier + 1)``
under the engine's write lock, and advances the closed timestamp ``frontier``. It knows nothing
of tables or settings; what it needs from them (a GC threshold, say) comes in as arguments.
"""

from __future__ import annotations

import concurrent.futures
import enum
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

KEY_MAX = b"\xff\xff\xff\xff"  # sorts after every key the key codec produces
SCAN_BATCH = 50_000  # keys per batch of scan_batches


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """Keys in ``[start, end)``."""

    start: bytes
    end: bytes

    def contains(self, key: bytes) -> bool:
        return self.start <= key < self.end

    def covers(self, other: Span) -> bool:
        return self.start <= other.start and other.end <= self.end


EVERYTHING = Span(b"", KEY_MAX)


class Window(enum.Enum):
    """How an export selects versions from ``(start_ts, end_ts]``."""

    MVCC = "mvcc"  # by MVCC timestamp: what a read at end_ts sees, changed after start_ts
    ARRIVAL = "arrival"  # by arrival: everything that physically landed in the window


@dataclass(frozen=True, slots=True)
class ProtectedRecord:
    """GC keeps every version needed to read ``spans`` at any time at or after ``ts``."""

    id: str
    ts: int
    spans: tuple[Span, ...]
    owner: str
    created: int


@dataclass(frozen=True, slots=True)
class ExportStats:
    path: str
    rows: int
    bytes: int


@dataclass(frozen=True, slots=True)
class GCStats:
    threshold: int
    removed: int


class Engine(Protocol):
    """An MVCC store. Reads never see a version with ``ts`` above the timestamp asked for.

    ``get``/``scan`` do not check their timestamp: callers check with ``check_read_ts``
    (before reading, for the frontier; after, for GC, so a GC pass that ran meanwhile is seen).
    """

    def frontier(self) -> int:
        """The closed timestamp: nothing will ever be written by a transaction at or below it."""
        ...

    def gc_threshold(self) -> int: ...

    def close_timestamp(self, ts: int) -> int:
        """Advance the frontier to ``ts`` (not past the wall clock); returns the frontier."""
        ...

    def check_read_ts(self, ts: int, spans: Sequence[Span] = (), *, gc: bool = True) -> None:
        """Raise FutureReadError above the frontier; with ``gc``, GCThresholdError when GC
        removed versions a read of ``spans`` at ``ts`` needs (protected spans are readable)."""
        ...

    def get(self, key: bytes, ts: int) -> bytes | None: ...

    def get_checked(self, key: bytes, ts: int) -> bytes | None:
        """``get``, refusing (GCThresholdError) when GC removed what the read needs."""
        ...

    def get_many_checked(self, keys: Sequence[bytes], ts: int) -> dict[bytes, bytes | None]:
        """``get_checked`` of many keys at once."""
        ...

    def scan(self, start: bytes, end: bytes, ts: int, limit: int | None = None,
             reverse: bool = False) -> list[tuple[bytes, bytes]]: ...

    def fingerprint(self, span: Span, ts: int, prefix_len: int) -> int | None:
        """The fingerprint of what a read of ``span`` at ``ts`` sees, streamed in C; None
        when the engine cannot (``tidemark.catalog.fingerprint.span_fingerprint`` then
        computes it in Python)."""
        ...

    def count_versions(self, start: bytes = b"", end: bytes = KEY_MAX) -> int:
        """How many versions a span stores (an upper bound of its rows)."""
        ...

    def count_live(self, start: bytes, end: bytes, ts: int) -> int:
        """How many live keys a read of the span at ``ts`` sees."""
        ...

    def commit(self, writes: Sequence[tuple[bytes, bytes | None]], read_ts: int,
               read_keys: Iterable[bytes] = (), read_spans: Sequence[Span] = ()) -> int:
        """Write atomically at a new timestamp, unless a read was invalidated (TxnConflictError)."""
        ...

    def ingest(self, rows: Iterable[tuple[bytes, bytes | None]], ts: int | None = None,
               guard: tuple[bytes, Callable[[bytes | None], bool]] | None = None) -> int:
        """One commit of many rows at ``ts`` (default: the commit's own timestamp), only if
        ``guard``'s test of its key's newest value passes (PreconditionFailedError)."""
        ...

    def delete_range(self, start: bytes, end: bytes) -> tuple[int, int]:
        """Tombstone every live key of a span in one commit; returns (commit ts, count)."""
        ...

    def ingest_counted(self, rows: Iterable[tuple[bytes, bytes | None]], ts: int | None = None,
                       guard: tuple[bytes, Callable[[bytes | None], bool]] | None = None
                       ) -> tuple[int, int]:
        """``ingest``, returning (commit ts, rows written); a row whose ``(key, ts)`` is
        already stored is kept as it was and not counted."""
        ...

    def arrivals_at(self, keys: Sequence[bytes], ts: int) -> dict[bytes, int]:
        """For each key that has a version at exactly ``ts``, that version's arrival; keys
        without one are absent from the result."""
        ...

    def revert_range(self, start: bytes, end: bytes, ts: int,
                     since_arrival: int) -> tuple[int, int]:
        """Undo a bulk ingest at ``ts`` with MVCC writes, in one commit: every key of the
        span with a version at ``ts`` that arrived after ``since_arrival`` gets back the
        value it had just below ``ts`` (a tombstone if none), unless it already reads so.
        Idempotent; needs the history below ``ts``. Returns (commit ts, keys written)."""
        ...

    def export(self, path: str, span: Span, start_ts: int, end_ts: int, *,
               window: Window = Window.MVCC, all_revisions: bool = False) -> ExportStats: ...

    def import_file(self, path: str, *, rewrites: Sequence[tuple[bytes, bytes]] = (),
                    ts: int | None = None, as_of: int | None = None,
                    overlay: str | None = None) -> int: ...

    def gc(self, threshold: int) -> GCStats: ...

    def protect(self, ts: int, spans: Sequence[Span], owner: str) -> ProtectedRecord: ...

    def release(self, record_id: str) -> None: ...

    def protected_records(self) -> list[ProtectedRecord]: ...

    def fingerprint_change(self, span: Span, after: int, upto: int, ts_cap: int,
                           before_ts: int, prefix_len: int) -> int | None: ...

    def arrival_split_points(self, span: Span, after: int, upto: int,
                             versions_per_part: int) -> list[bytes]:
        """Keys cutting what arrived in a window into parts (read from the arrival index)."""
        ...

    def beside(self) -> concurrent.futures.ThreadPoolExecutor: ...

    def release_thread(self) -> None:
        """Free what the calling thread holds (its connection); a thread that used the
        engine calls it before it ends."""
        ...

    def close(self) -> None: ...


def scan_batches(engine: Engine, start: bytes, end: bytes, ts: int
                 ) -> Iterator[list[tuple[bytes, bytes]]]:
    """What a read of ``[start, end)`` at ``ts`` sees, in key order, ``SCAN_BATCH`` keys at a
    time: memory stays at a batch, however big the span. Does not check ``ts``."""
    while batch := engine.scan(start, end, ts, limit=SCAN_BATCH):
        yield batch
        start = batch[-1][0] + b"\x00"
