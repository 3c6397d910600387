"""The SQLite engine: every MVCC version of every key in one table, with its arrival time.

A store is a directory holding ``store.sqlite`` (WAL mode). Several processes may open it at
once: SQLite's write lock (``BEGIN IMMEDIATE``) is the store's write lock, and the closed
timestamp ``frontier`` lives in a side table updated by the same transaction as the versions,
so commit order equals timestamp order across every process.

This module is the only place with SQLite SQL in it. Bulk paths (ingest, export, import, GC)
are single SQL statements run by SQLite in C; per-row Python on them is a performance bug.
"""

from __future__ import annotations

import bisect
import concurrent.futures
import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import msgspec

from tidemark import native
from tidemark.clock import format_ts, wall_now
from tidemark.errors import (
    FutureReadError,
    GCThresholdError,
    NotAStoreError,
    PreconditionFailedError,
    ProtectionError,
    StoreError,
    StoreVersionError,
    TxnConflictError,
)
from tidemark.storage.engine import (
    KEY_MAX,
    ExportStats,
    GCStats,
    ProtectedRecord,
    Span,
    Window,
)

STORE_FILE = "store.sqlite"
EXTERNAL_DIR = "external"  # the store's own external storage (nodelocal://self/...)
APPLICATION_ID = 0x54444D4B  # "TDMK": marks a SQLite file as a tidemark store
SCHEMA_VERSION = 1  # layout of the SQLite schema below; bumped only with a migration
DEFAULT_CACHE_KIB = 64 * 1024
DEFAULT_BUSY_TIMEOUT_MS = 60_000
# A thread's connection reads through a memory map this big: random reads (an incremental's
# lookups, point queries) beyond it go through read() into the page cache, measured 1.5x as
# slow. Mapped pages are clean file pages the kernel may drop at any time; streaming passes
# use a connection without a map (see _streaming).
DEFAULT_MMAP_BYTES = 1 << 30
STREAM_CACHE_KIB = 8 * 1024  # page cache of a streaming connection (see SQLiteEngine._streaming)
PAGE_SIZE = 8192
EXPORT_PAGE_SIZE = 65536  # export files are written once, appended in key order: big pages win
WAL_AUTOCHECKPOINT_PAGES = 10_000  # checkpoint less often than SQLite's 1000 during bulk writes
WAL_RESTART_PAGES = 32_768  # 256 MiB: how far bulk imports let the WAL grow before starting it over

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS versions(
    key BLOB NOT NULL,
    ts INTEGER NOT NULL,
    arrival INTEGER NOT NULL,
    value BLOB,
    PRIMARY KEY (key, ts)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS versions_by_arrival ON versions(arrival);
CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS protected_ts(
    id TEXT PRIMARY KEY,
    ts INTEGER NOT NULL,
    spans BLOB NOT NULL,
    owner TEXT NOT NULL,
    created INTEGER NOT NULL
);
PRAGMA application_id = {APPLICATION_ID};
PRAGMA user_version = {SCHEMA_VERSION};
"""

# Export files: self-describing SQLite files of (key, ts, value) for one span.
_EXPORT_SCHEMA = """
CREATE TABLE exp.versions(
    key BLOB NOT NULL,
    ts INTEGER NOT NULL,
    value BLOB,
    PRIMARY KEY (key, ts)
) WITHOUT ROWID;
CREATE TABLE exp.export_info(name TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""
# Credentials a job needs to resume (external storage URIs with keys, passphrases): kept out of
# job records, which live in the MVCC keyspace where SHOW JOBS and backups would show them.
_SECRETS_SCHEMA = """
CREATE TABLE IF NOT EXISTS job_secrets(owner TEXT PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID;
"""
EXPORT_FORMAT_VERSION = 1
_MASK64 = (1 << 64) - 1

# A key and a test of its newest value (None: no value) that a guarded write requires.
Guard = tuple[bytes, Callable[[bytes | None], bool]]
_OPEN_FLAGS = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI
_spans_codec = msgspec.msgpack.Encoder()
_spans_decoder = msgspec.msgpack.Decoder(list[tuple[bytes, bytes]])


def _pragmas(conn: apsw.Connection, *pragmas: str) -> None:
    """Run each ``PRAGMA``, one statement at a time: apsw runs a multi-statement string
    only up to the first statement that returns a row (``PRAGMA mmap_size=N`` does), so
    the rest would silently not happen."""
    for pragma in pragmas:
        conn.execute(f"PRAGMA {pragma}").fetchall()


def _check_existing_file(db_path: Path) -> None:
    """Refuse a file that is not a tidemark store, without changing a byte of it."""
    if db_path.stat().st_size == 0:
        return  # another process is creating the store right now
    try:
        conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as exc:
        raise NotAStoreError(f"cannot open {db_path}: {exc}") from exc
    try:
        app_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
        tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()[0][0]
        user_version = conn.execute("PRAGMA user_version").fetchall()[0][0]
    except apsw.NotADBError as exc:
        raise NotAStoreError(
            f"{db_path} is not a tidemark store: it is not a SQLite database",
            hint="point --store at a tidemark store directory, or at a new path to create one",
        ) from exc
    except apsw.Error as exc:
        raise NotAStoreError(f"{db_path} cannot be read as a tidemark store: {exc}") from exc
    finally:
        conn.close()
    if app_id == 0 and tables == 0:
        return  # an empty database: a store being created
    if app_id != APPLICATION_ID:
        raise NotAStoreError(
            f"{db_path} is not a tidemark store: it is a SQLite database of another "
            f"application (application_id {app_id:#x}, expected {APPLICATION_ID:#x})",
            hint="point --store at a tidemark store directory, or at a new path to create one",
        )
    if user_version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"store {db_path} has storage schema version {user_version}, newer than this "
            f"binary's {SCHEMA_VERSION}",
            hint="open it with a newer tidemark binary",
        )


def _resolve_store_path(path: str | os.PathLike[str], create: bool) -> Path:
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise NotAStoreError(
            f"{root} is a file, not a tidemark store (a store is a directory holding "
            f"{STORE_FILE})",
            hint="pass the store's directory, or a path that does not exist yet to create one",
        )
    db_path = root / STORE_FILE
    if db_path.exists():
        _check_existing_file(db_path)
        return db_path
    if not create:
        raise NotAStoreError(f"{root} holds no tidemark store ({STORE_FILE} is missing)")
    if root.exists() and any(p.name not in (EXTERNAL_DIR,) for p in root.iterdir()):
        raise NotAStoreError(
            f"{root} is a directory that holds other files and no tidemark store",
            hint="create the store in a new or empty directory",
        )
    root.mkdir(parents=True, exist_ok=True)
    return db_path


def _bounds(rows: list[tuple[bytes, bytes | None]]) -> Span | None:
    if not rows:
        return None
    keys = [k for k, _ in rows]
    return Span(min(keys), max(keys) + b"\x00")


def _prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with ``prefix`` (as kv.keys.prefix_end)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else KEY_MAX


def _merge_spans(spans: Iterable[Span]) -> list[Span]:
    merged: list[Span] = []
    for s in sorted(spans):
        if merged and s.start <= merged[-1].end:
            if s.end > merged[-1].end:
                merged[-1] = Span(merged[-1].start, s.end)
        else:
            merged.append(s)
    return merged


def _covered(span: Span, merged: list[Span]) -> bool:
    """Is ``span`` inside one span of ``merged`` (sorted, non-overlapping, non-adjacent)?"""
    i = bisect.bisect_right([m.start for m in merged], span.start) - 1
    return i >= 0 and merged[i].covers(span)


class SQLiteEngine:
    """MVCC engine on one SQLite file. Thread-safe: each thread gets its own connection."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 cache_kib: int = DEFAULT_CACHE_KIB,
                 busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS):
        self.root = Path(path)
        self.db_path = _resolve_store_path(path, create)
        self._cache_kib = cache_kib
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._conns: list[apsw.Connection] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self._beside: concurrent.futures.ThreadPoolExecutor | None = None
        self._checkpointing: concurrent.futures.Future[object] | None = None
        # WAL frames at the helper's last checkpoint, and at how many an import waits for one
        # so that the WAL starts over (see _restart_wal).
        self._wal_frames = 0
        self._wal_wait_at = WAL_RESTART_PAGES
        conn = self._conn()
        with self._immediate(conn):
            if conn.execute("PRAGMA application_id").fetchall()[0][0] != APPLICATION_ID:
                conn.execute(_SCHEMA)
                now = wall_now()
                conn.executemany(
                    "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                    [("frontier", now), ("gc_threshold", 0), ("store_id", uuid.uuid4().hex),
                     ("created", now)])
            conn.execute(_SECRETS_SCHEMA)  # outside the branch: stores made before it lack it
        (self.root / EXTERNAL_DIR).mkdir(exist_ok=True)

    # -- connections ---------------------------------------------------------------------

    def _conn(self) -> apsw.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreError(f"store {self.root} is closed")
        conn = apsw.Connection(str(self.db_path), flags=_OPEN_FLAGS)
        conn.set_busy_timeout(self._busy_timeout_ms)
        if conn.execute("PRAGMA journal_mode").fetchall()[0][0] != "wal":
            # A new file: larger pages make bulk ingest and export measurably faster.
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            conn.execute("PRAGMA journal_mode=WAL")
        # Temporary b-trees (the sort of an arrival window) stay in files: memory must not
        # grow with what a statement sorts.
        _pragmas(conn, "synchronous=NORMAL", f"cache_size=-{self._cache_kib}",
                 f"mmap_size={DEFAULT_MMAP_BYTES}",
                 f"wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        native.load(conn)  # tm_fingerprint(_delta), when built: see fingerprint_change()
        self._local.conn = conn
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    @contextlib.contextmanager
    def _streaming(self) -> Iterator[apsw.Connection]:
        """A connection of its own for one pass over a whole span (export, split points,
        fingerprint), closed after it: no memory map, since mapped pages stay resident and
        would make a backup's memory grow with the store (measured: 401 MB vs 149 MB at
        5M), and a small page cache. The thread's own connection keeps its map and cache
        warm for the random reads it serves (an incremental's lookups cost about 2.5 times
        as much on a cold connection)."""
        if self._closed:
            raise StoreError(f"store {self.root} is closed")
        conn = apsw.Connection(str(self.db_path), flags=_OPEN_FLAGS)
        try:
            conn.set_busy_timeout(self._busy_timeout_ms)
            _pragmas(conn, "mmap_size=0", f"cache_size=-{STREAM_CACHE_KIB}")
            native.load(conn)
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _immediate(self, conn: apsw.Connection) -> Iterator[apsw.Connection]:
        """A write transaction: holds the store's write lock across every process."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if not conn.get_autocommit():
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextlib.contextmanager
    def _commit_ts(self, conn: apsw.Connection) -> Iterator[int]:
        """A write transaction with a fresh commit timestamp; advances the frontier to it."""
        with self._immediate(conn):
            frontier = self._meta(conn, "frontier")
            ts = max(wall_now(), frontier + 1)
            yield ts
            conn.execute("UPDATE meta SET value = ? WHERE name = 'frontier'", (ts,))

    @staticmethod
    def _meta(conn: apsw.Connection, name: str) -> int:
        return conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchall()[0][0]

    def beside(self) -> concurrent.futures.ThreadPoolExecutor:
        """A thread of this store's own for reads that run beside the caller's (a backup
        part's fingerprint beside its export). It lives as long as the store, so its
        connection's page cache stays warm from one job to the next."""
        with self._conns_lock:
            if self._closed:
                raise StoreError(f"store {self.root} is closed")
            if self._beside is None:
                self._beside = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="store-beside")
            return self._beside

    def release_thread(self) -> None:
        """Close the calling thread's connection. Connections are per thread and live until
        the store closes, so a short-lived thread (a job's heartbeat, a backup's exporter)
        that did not release its own would leave one open per thread for good."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._conns_lock:
            if conn in self._conns:
                self._conns.remove(conn)
        conn.close()

    def close(self) -> None:
        self._closed = True
        if self._beside is not None:
            self._beside.shutdown(wait=True)  # its connection is closed below
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()

    def __enter__(self) -> SQLiteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- clock and read checks -----------------------------------------------------------

    def frontier(self) -> int:
        return self._meta(self._conn(), "frontier")

    def gc_threshold(self) -> int:
        return self._meta(self._conn(), "gc_threshold")

    def close_timestamp(self, ts: int) -> int:
        """Advance the frontier to ``ts`` so reads there are stable; returns the frontier.

        Without writes the frontier stays at the last commit; a read at a time after it but
        not after the wall clock (``AS OF SYSTEM TIME '-1s'`` on an idle store) closes the
        timestamps in between: every later commit then gets a larger timestamp.
        """
        now = wall_now()
        if ts > now:
            raise FutureReadError(
                f"cannot read at {format_ts(ts)}: it is in the future (the time is now "
                f"{format_ts(now)})", hint="read at a time at or before now()")
        conn = self._conn()
        with self._immediate(conn):
            frontier = self._meta(conn, "frontier")
            if ts > frontier:
                conn.execute("UPDATE meta SET value = ? WHERE name = 'frontier'", (ts,))
                frontier = ts
        return frontier

    def store_id(self) -> str:
        return self._conn().execute(
            "SELECT value FROM meta WHERE name = 'store_id'").fetchall()[0][0]

    def check_read_ts(self, ts: int, spans: Sequence[Span] = (), *, gc: bool = True) -> None:
        rows = self._conn().execute(
            "SELECT name, value FROM meta WHERE name IN ('frontier', 'gc_threshold')").fetchall()
        meta = dict(rows)
        self._check_ts(ts, spans, meta["frontier"], meta["gc_threshold"] if gc else 0,
                       self.protected_records)

    def _check_ts(self, ts: int, spans: Sequence[Span], frontier: int, threshold: int,
                  records: Callable[[], list[ProtectedRecord]]) -> None:
        if ts > frontier:
            raise FutureReadError(
                f"cannot read at {format_ts(ts)}: it is in the future (the newest closed "
                f"timestamp is {format_ts(frontier)})",
                hint="read at a time at or before cluster_logical_timestamp()")
        if ts >= threshold:
            return
        if spans:
            protected = _merge_spans(
                s for r in records() if r.ts <= ts for s in r.spans)
            if all(_covered(s, protected) for s in spans):
                return
        raise GCThresholdError(
            f"cannot read at {format_ts(ts)}: it is below the GC threshold "
            f"{format_ts(threshold)}; the history before it was garbage collected",
            hint="read at a later time, or raise gc.ttlseconds / protect the timestamp "
                 "before GC runs")

    # -- reads ---------------------------------------------------------------------------

    def get(self, key: bytes, ts: int) -> bytes | None:
        for (value,) in self._conn().execute(
                "SELECT value FROM versions WHERE key = ? AND ts <= ? ORDER BY ts DESC LIMIT 1",
                (key, ts)):
            return value
        return None

    def get_checked(self, key: bytes, ts: int) -> bytes | None:
        """``get`` and the GC check of the read in one statement, hence one snapshot."""
        value, threshold = self._conn().execute(
            "SELECT (SELECT value FROM versions WHERE key = ?1 AND ts <= ?2 ORDER BY ts DESC "
            "LIMIT 1), (SELECT value FROM meta WHERE name = 'gc_threshold')",
            (key, ts)).fetchall()[0]
        if ts < threshold:
            self._check_ts(ts, [Span(key, key + b"\x00")], ts, threshold,
                           self.protected_records)
        return value

    def get_many_checked(self, keys: Sequence[bytes], ts: int) -> dict[bytes, bytes | None]:
        """``get_checked`` of many keys; the per-key loop runs in C (executemany)."""
        if not keys:
            return {}
        conn = self._conn()
        out: dict[bytes, bytes | None] = dict(conn.executemany(
            "SELECT ?1, (SELECT value FROM versions WHERE key = ?1 AND ts <= ?2 "
            "ORDER BY ts DESC LIMIT 1)", [(k, ts) for k in keys]))
        threshold = self._meta(conn, "gc_threshold")  # after the reads: GC shows up here
        if ts < threshold:
            self._check_ts(ts, [Span(k, k + b"\x00") for k in keys], ts, threshold,
                           self.protected_records)
        return out

    def fingerprint_change(self, span: Span, after: int, upto: int, ts_cap: int,
                           before_ts: int, prefix_len: int) -> int | None:
        """How the keys of ``span`` with a version that arrived in ``(after, upto]`` at or
        below ``ts_cap`` (the keys an arrival-window export of that window holds) change a
        fingerprint (``tidemark.catalog.fingerprint``) from ``before_ts`` to ``min(ts_cap,
        upto)``: one pass over each key's versions, in C. The keys come from the arrival
        index, not the export file, so this can run beside the export. None when the C
        extension is not available. GC past ``before_ts`` under ``span`` is refused, as in
        ``get_many_checked``."""
        if not native.available():
            return None
        read_at = min(ts_cap, upto)
        # CROSS JOIN keeps the key order of the outer loop; the aggregate refuses rows out
        # of (key, ts) order rather than sum them wrongly.
        delta = self._conn().execute(
            "SELECT tm_fingerprint_delta(v.key, v.ts, v.value, :before, :plen) FROM "
            "(SELECT DISTINCT key FROM versions INDEXED BY versions_by_arrival "
            " WHERE arrival > :after AND arrival <= :upto AND key >= :lo AND key < :hi "
            " AND ts <= :read_at ORDER BY key) e "
            "CROSS JOIN versions v WHERE v.key = e.key AND v.ts <= :read_at",
            {"before": before_ts, "plen": prefix_len, "after": after, "upto": upto,
             "lo": span.start, "hi": span.end, "read_at": read_at}).fetchall()[0][0]
        self.check_read_ts(before_ts, [span])  # after the reads: GC shows up here
        return delta & _MASK64

    def scan(self, start: bytes, end: bytes, ts: int, limit: int | None = None,
             reverse: bool = False) -> list[tuple[bytes, bytes]]:
        # GROUP BY on the primary key streams in key order; with max(ts), SQLite takes the
        # bare column `value` from the row holding the maximum, i.e. the visible version.
        order = "DESC" if reverse else "ASC"
        sql = (
            "SELECT key, value FROM (SELECT key, max(ts), value FROM versions "
            "WHERE key >= ?1 AND key < ?2 AND ts <= ?3 GROUP BY key ORDER BY key " + order +
            ") WHERE value IS NOT NULL LIMIT ?4")
        return self._conn().execute(sql, (start, end, ts, -1 if limit is None else limit)).fetchall()

    def count_live(self, start: bytes, end: bytes, ts: int) -> int:
        """How many keys of a span a read at ``ts`` sees (in C: for progress estimates)."""
        return self._conn().execute(
            "SELECT count(*) FROM (SELECT max(ts), value FROM versions WHERE key >= ? AND "
            "key < ? AND ts <= ? GROUP BY key) WHERE value IS NOT NULL",
            (start, end, ts)).fetchall()[0][0]

    def fingerprint(self, span: Span, ts: int, prefix_len: int) -> int | None:
        """The fingerprint (``tidemark.catalog.fingerprint``) of what a read of ``span`` at
        ``ts`` sees, keys without their first ``prefix_len`` bytes: one streaming pass in C,
        whatever the span's size. None when the C extension is not available. Like ``scan``,
        it does not check ``ts``: the caller does, after."""
        if not native.available():
            return None
        with self._streaming() as conn:
            return conn.execute(
                "SELECT tm_fingerprint(key, value, ?) FROM (SELECT key, max(ts), value FROM "
                "versions WHERE key >= ? AND key < ? AND ts <= ? GROUP BY key)",
                (prefix_len, span.start, span.end, ts)).fetchall()[0][0] & _MASK64

    def versions(self, start: bytes, end: bytes) -> list[tuple[bytes, int, int, bytes | None]]:
        """Every stored version in a span, (key, ts, arrival, value): for tests and tools."""
        return self._conn().execute(
            "SELECT key, ts, arrival, value FROM versions WHERE key >= ? AND key < ? "
            "ORDER BY key, ts", (start, end)).fetchall()

    def count_versions(self, start: bytes = b"", end: bytes = KEY_MAX) -> int:
        """How many versions (of every key, tombstones too) a span stores: a cheap upper
        bound of its rows, for progress estimates."""
        return self._conn().execute("SELECT count(*) FROM versions WHERE key >= ? AND key < ?",
                                    (start, end)).fetchall()[0][0]

    # -- writes --------------------------------------------------------------------------

    def commit(self, writes: Sequence[tuple[bytes, bytes | None]], read_ts: int,
               read_keys: Iterable[bytes] = (), read_spans: Sequence[Span] = ()) -> int:
        conn = self._conn()
        with self._commit_ts(conn) as ts:
            self._validate(conn, read_ts, read_keys, read_spans)
            conn.executemany(f"INSERT INTO versions VALUES (?, {ts}, {ts}, ?)", writes)
        return ts

    def validate(self, read_ts: int, read_keys: Iterable[bytes] = (),
                 read_spans: Sequence[Span] = ()) -> None:
        """Check a read-only transaction's reads are still those it would see now."""
        conn = self._conn()
        with self._immediate(conn):
            self._validate(conn, read_ts, read_keys, read_spans)

    def _validate(self, conn: apsw.Connection, read_ts: int, read_keys: Iterable[bytes],
                  read_spans: Sequence[Span]) -> None:
        """Under the write lock: refuse if anything read changed after ``read_ts``.

        Selecting by arrival rather than MVCC timestamp also catches a bulk ingest that
        landed after the read at a timestamp at or below it. The arrival index makes this
        cost the number of versions written since ``read_ts``, not the size of what was read.
        """
        keys = read_keys if isinstance(read_keys, (set, frozenset, dict)) else set(read_keys)
        threshold = self._meta(conn, "gc_threshold")
        if read_ts < threshold:
            # GC may have removed a write that would show as a conflict below: every read
            # must still be protected, keys as well as spans.
            everything = [*read_spans, *(Span(k, k + b"\x00") for k in keys)]
            self._check_ts(read_ts, everything, read_ts, threshold, self._records_in(conn))
        spans = _merge_spans(read_spans)
        starts = [s.start for s in spans]
        if not keys and not spans:
            return
        for key, arrival in conn.execute(
                "SELECT key, arrival FROM versions INDEXED BY versions_by_arrival "
                "WHERE arrival > ?", (read_ts,)):
            hit = key in keys
            if not hit and spans:
                i = bisect.bisect_right(starts, key) - 1
                hit = i >= 0 and spans[i].contains(key)
            if hit:
                err = TxnConflictError(
                    f"restart transaction: key {key!r} was written at {format_ts(arrival)}, "
                    f"after this transaction read it at {format_ts(read_ts)}",
                    hint="retry the transaction")
                err.key = key  # type: ignore[attr-defined]
                raise err

    def ingest(self, rows: Iterable[tuple[bytes, bytes | None]], ts: int | None = None,
               guard: Guard | None = None) -> int:
        """Write many rows as one commit, at ``ts`` or at the commit's own timestamp.

        Every row gets the commit's timestamp as its arrival. Versions a transaction already
        wrote at the same ``(key, ts)`` are kept (replaying a batch is a no-op).
        Sorted input is fastest (appends to the B-tree). With ``guard`` (a key and a test of
        its newest value), nothing is written unless the test passes under the write lock:
        a job fences its writes with its lease this way.
        """
        return self.ingest_counted(rows, ts, guard)[0]

    @staticmethod
    def _check_guard(conn: apsw.Connection, guard: Guard) -> None:
        key, test = guard
        rows = conn.execute("SELECT value FROM versions WHERE key = ? ORDER BY ts DESC LIMIT 1",
                            (key,)).fetchall()
        if not test(rows[0][0] if rows else None):
            raise PreconditionFailedError(f"write refused: the guard on {key!r} failed")

    def delete_range(self, start: bytes, end: bytes) -> tuple[int, int]:
        """Write an MVCC tombstone over every live key in ``[start, end)``, as one commit.

        History stays readable with AS OF SYSTEM TIME until GC. Returns (commit ts, count).
        """
        conn = self._conn()
        with self._commit_ts(conn) as ts:
            conn.execute(
                f"INSERT INTO versions SELECT key, {ts}, {ts}, NULL FROM (SELECT key, max(ts), "
                "value FROM versions WHERE key >= ? AND key < ? GROUP BY key) "
                "WHERE value IS NOT NULL", (start, end))
            count = conn.changes()
        return ts, count

    def ingest_counted(self, rows: Iterable[tuple[bytes, bytes | None]], ts: int | None = None,
                       guard: Guard | None = None) -> tuple[int, int]:
        """``ingest`` that also counts the rows it wrote: (commit ts, written).

        A row whose ``(key, ts)`` is already stored is left as it was and not counted, so
        ``written < len(rows)`` means some keys were there already (a replayed batch, or a
        duplicate): ``arrivals_at`` tells which.
        """
        conn = self._conn()
        with self._commit_ts(conn) as commit_ts:
            if guard is not None:
                self._check_guard(conn, guard)
            write_ts = commit_ts if ts is None else ts
            if ts is not None:
                rows = rows if isinstance(rows, list) else list(rows)
                self._check_write_ts(conn, ts, commit_ts, lambda: _bounds(rows))
            before = conn.total_changes()
            conn.executemany(
                f"INSERT OR IGNORE INTO versions VALUES (?, {int(write_ts)}, {commit_ts}, ?)",
                rows)
            written = conn.total_changes() - before
        return commit_ts, written

    def arrivals_at(self, keys: Sequence[bytes], ts: int) -> dict[bytes, int]:
        """For each key with a version at exactly ``ts``: that version's arrival (in C)."""
        if not keys:
            return {}
        return dict(self._conn().executemany(
            "SELECT key, arrival FROM versions WHERE key = ? AND ts = ?",
            [(k, ts) for k in keys]))

    def revert_range(self, start: bytes, end: bytes, ts: int,
                     since_arrival: int) -> tuple[int, int]:
        """Undo, with MVCC writes, a bulk ingest at ``ts`` into ``[start, end)``; one commit.

        Every key with a version at exactly ``ts`` that arrived after ``since_arrival`` gets,
        at the commit's timestamp, the value it had just below ``ts`` (a tombstone if it had
        none), unless it already reads so. Nothing else changes: keys the ingest did not
        touch keep their history and value, a key that existed before gets its old value
        back, and running it twice writes nothing the second time. It needs the history below
        ``ts`` (protect ``ts - 1`` from GC while an ingest may have to be reverted). One
        ``INSERT ... SELECT`` run in C. Returns (commit ts, keys written).
        """
        conn = self._conn()
        with self._commit_ts(conn) as now:
            conn.execute(
                "INSERT INTO versions (key, ts, arrival, value) "
                "SELECT key, :now, :now, prev FROM (SELECT i.key AS key, "
                "(SELECT p.value FROM versions AS p WHERE p.key = i.key AND p.ts < :ts "
                "ORDER BY p.ts DESC LIMIT 1) AS prev, "
                "(SELECT c.value FROM versions AS c WHERE c.key = i.key "
                "ORDER BY c.ts DESC LIMIT 1) AS cur "
                "FROM versions AS i WHERE i.key >= :lo AND i.key < :hi AND i.ts = :ts "
                "AND i.arrival > :since) WHERE cur IS NOT prev",
                {"now": now, "ts": ts, "lo": start, "hi": end, "since": since_arrival})
            count = conn.changes()
        return now, count

    def _check_write_ts(self, conn: apsw.Connection, ts: int, commit_ts: int,
                        span: Callable[[], Span | None] | None = None) -> None:
        """Refuse a write below the GC threshold, unless a protected timestamp at or below
        ``ts`` covers the written ``span`` (GC kept that span's history there: a job that
        protected its write timestamp can resume after GC passed it)."""
        threshold = self._meta(conn, "gc_threshold")
        if ts < threshold and span is not None:
            written = span()
            if written is not None and any(
                    r.ts <= ts and any(s.covers(written) for s in r.spans)
                    for r in self._records_in(conn)()):
                threshold = ts
        if ts < threshold:
            raise GCThresholdError(
                f"cannot write at {format_ts(ts)}: it is below the GC threshold "
                f"{format_ts(threshold)}", hint="write at a later timestamp")
        if ts > commit_ts:
            raise FutureReadError(
                f"cannot ingest at {format_ts(ts)}: it is after the commit timestamp "
                f"{format_ts(commit_ts)}")

    # -- export and import (in C: ATTACH + INSERT ... SELECT) ----------------------------

    def export(self, path: str, span: Span, start_ts: int, end_ts: int, *,
               window: Window = Window.MVCC, all_revisions: bool = False,
               ts_cap: int | None = None) -> ExportStats:
        """Write the versions of ``span`` selected from ``(start_ts, end_ts]`` to a new file.

        MVCC window: latest only gives what a read at ``end_ts`` sees, for keys changed after
        ``start_ts`` (tombstones only when ``start_ts > 0``: a full export has nothing to
        delete); all revisions gives every version with ``start_ts < ts <= end_ts``.
        Arrival window: every version that arrived in the window (latest only: the newest
        such version of each key), whatever its MVCC timestamp; ``ts_cap`` leaves out
        versions above it (a table offline for an import is backed up as it was just below
        the import's timestamp). The file appears only when complete: it is written under a
        temporary name and renamed.
        """
        self.check_read_ts(end_ts, [span])
        if start_ts > 0:
            # GC past start_ts may have removed a tombstone of the window: refuse.
            self.check_read_ts(start_ts, [span])
        if os.path.exists(path):
            raise StoreError(f"cannot export to {path}: the file exists",
                             hint="export to a new path")
        where = "key >= :lo AND key < :hi"
        if window is Window.MVCC:
            if all_revisions:
                select = (f"SELECT key, ts, value FROM main.versions WHERE {where} "
                          "AND ts > :start AND ts <= :cap")
            else:
                live = " AND value IS NOT NULL" if start_ts <= 0 else ""
                select = (
                    "SELECT key, ts, value FROM (SELECT key, max(ts) AS ts, value FROM "
                    f"main.versions WHERE {where} AND ts <= :cap GROUP BY key) "
                    f"WHERE ts > :start{live}")
        elif start_ts <= 0:  # a window from zero is the whole span, read in key order
            cond = f"{where} AND arrival <= :end AND ts <= :cap"
            select = (f"SELECT key, ts, value FROM main.versions WHERE {cond}"
                      if all_revisions else
                      f"SELECT key, max(ts), value FROM main.versions WHERE {cond} GROUP BY key")
        else:
            # A small window reads the arrival index: (key, ts) from the index alone, and
            # only then each chosen version's value. Selecting the value straight from the
            # index scan made SQLite look up every row of the window before testing its key
            # against the span: each span of a backup paid for the whole window.
            cond = f"{where} AND arrival > :start AND arrival <= :end AND ts <= :cap"
            source = "main.versions INDEXED BY versions_by_arrival"
            chosen = (f"SELECT key, ts FROM {source} WHERE {cond}" if all_revisions else
                      f"SELECT key, max(ts) AS ts FROM {source} WHERE {cond} GROUP BY key")
            select = (f"SELECT a.key, a.ts, v.value FROM ({chosen}) a CROSS JOIN "
                      "main.versions v WHERE v.key = a.key AND v.ts = a.ts")
        tmp = f"{path}.partial"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        # A whole span streams through a connection of its own; an arrival window reads
        # few pages, by lookups, on the thread's connection, whose memory map and page
        # cache stay warm from one backup to the next.
        with contextlib.ExitStack() as stack:
            streaming = start_ts <= 0 or window is Window.MVCC
            conn = stack.enter_context(self._streaming()) if streaming else self._conn()
            rows = self._export_into(conn, tmp, select, span, start_ts, end_ts, window,
                                     all_revisions, ts_cap)
        # Verify GC did not run under the export: its snapshot was taken after these checks.
        self.check_read_ts(end_ts, [span])
        if start_ts > 0:
            self.check_read_ts(start_ts, [span])
        os.replace(tmp, path)
        return ExportStats(path=path, rows=rows, bytes=os.path.getsize(path))

    @staticmethod
    def _export_into(conn: apsw.Connection, tmp: str, select: str, span: Span, start_ts: int,
                     end_ts: int, window: Window, all_revisions: bool, ts_cap: int | None
                     ) -> int:
        conn.execute("ATTACH DATABASE ? AS exp", (tmp,))
        try:
            _pragmas(conn, f"exp.page_size={EXPORT_PAGE_SIZE}", "exp.journal_mode=OFF",
                 "exp.synchronous=OFF")
            conn.execute("BEGIN")
            conn.execute(_EXPORT_SCHEMA)
            cap = end_ts if ts_cap is None else min(ts_cap, end_ts)
            params = {"lo": span.start, "hi": span.end, "start": start_ts, "end": end_ts,
                      "cap": cap}
            conn.execute(f"INSERT INTO exp.versions {select}", params)
            rows = conn.changes()
            conn.executemany("INSERT INTO exp.export_info VALUES (?, ?)", [
                ("format_version", EXPORT_FORMAT_VERSION), ("span_start", span.start),
                ("span_end", span.end), ("start_ts", start_ts), ("end_ts", end_ts),
                ("window", window.value), ("all_revisions", int(all_revisions)),
                ("rows", rows), ("ts_cap", cap)])
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(apsw.Error):
                if not conn.get_autocommit():
                    conn.execute("ROLLBACK")
            conn.execute("DETACH DATABASE exp")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        conn.execute("DETACH DATABASE exp")
        return rows

    def import_file(self, path: str, *, rewrites: Sequence[tuple[bytes, bytes]] = (),
                    ts: int | None = None, as_of: int | None = None,
                    revisions: bool = False, overlay: str | None = None,
                    guard: Guard | None = None) -> int:
        """Ingest an export file as one commit; returns the commit timestamp.

        ``rewrites`` maps old key prefixes to new ones (keys matching none are skipped when
        any are given). With ``revisions`` every version keeps its own timestamp; otherwise
        the latest live version of each key at ``as_of`` (default: newest) is written at
        ``ts`` (default: the commit's timestamp), and a version already stored at that
        ``(key, ts)`` is kept. Then, in the same commit, every version of the export file
        ``overlay`` (a restore's, from ``build_overlay``: tombstones too) is written at
        ``ts``, replacing what is stored there. Arrival is always the commit timestamp.
        With ``guard`` nothing is written unless its test passes under the write lock (see
        ``ingest``).
        """
        for p in (path, overlay):
            if p is not None and not os.path.exists(p):
                raise StoreError(f"cannot import {p}: no such file")
        if overlay is not None and revisions:
            raise StoreError("an overlay is written at one timestamp: not with revisions")
        conn = self._conn()
        # Keys matching no rewrite come out NULL and are dropped.
        key_expr, params = "key", {}
        if rewrites:
            cases = []
            for i, (old, new) in enumerate(rewrites):
                cases.append(f"WHEN substr(key, 1, {len(old)}) = :old{i} "
                             f"THEN CAST(:new{i} || substr(key, {len(old) + 1}) AS BLOB)")
                params[f"old{i}"], params[f"new{i}"] = old, new
            key_expr = f"(CASE {' '.join(cases)} END)"
        as_of_cond = "" if as_of is None else f" AND ts <= {int(as_of)}"
        attached: list[str] = []
        # The commit of a big ingest would checkpoint the WAL in this thread (copying every
        # page it wrote into the store: measured, a quarter of a restore's time); the
        # store's helper thread does it instead, while the caller fetches and ingests more.
        _pragmas(conn, "wal_autocheckpoint=0")
        try:
            info = _attach_export(conn, "imp", path, attached)
            if overlay is not None:
                _attach_export(conn, "ovl", overlay, attached)
            # A latest-only file has one version per key: no GROUP BY needed (much faster).
            # It holds the span as of its cap (a table offline for an IMPORT is exported
            # as of just below the import), which is its end time unless it says otherwise.
            one_per_key = not info["all_revisions"]
            latest_at = info.get("ts_cap", info["end_ts"])
            if one_per_key and as_of is not None and as_of < latest_at:
                raise StoreError(
                    f"cannot import {path} as of {format_ts(as_of)}: it holds only the latest "
                    f"versions as of {format_ts(latest_at)}, not the history before",
                    hint="import at or after its end time, or export with all revisions")
            self._restart_wal(conn)
            with self._commit_ts(conn) as commit_ts:
                if guard is not None:
                    self._check_guard(conn, guard)
                if revisions:
                    max_ts = conn.execute("SELECT max(ts) FROM imp.versions").fetchall()[0][0]
                    if max_ts is not None and max_ts > commit_ts:
                        raise StoreError(
                            f"cannot import {path} with its timestamps: it holds versions at "
                            f"{format_ts(max_ts)}, after this store's clock "
                            f"{format_ts(commit_ts)}")
                    select = (f"SELECT k, ts, {commit_ts}, value FROM (SELECT {key_expr} AS k, "
                              f"ts, value FROM imp.versions WHERE 1{as_of_cond}) "
                              "WHERE k IS NOT NULL")
                else:
                    write_ts = commit_ts if ts is None else ts
                    if ts is not None:
                        news = [new for _, new in rewrites]
                        self._check_write_ts(conn, ts, commit_ts, lambda: Span(
                            min(news), _prefix_end(max(news))) if news else None)
                    latest = ("SELECT key, ts, value FROM imp.versions" if one_per_key else
                              "SELECT key, max(ts) AS ts, value FROM imp.versions "
                              f"WHERE 1{as_of_cond} GROUP BY key")
                    select = (
                        f"SELECT k, {int(write_ts)}, {commit_ts}, value FROM (SELECT "
                        f"{key_expr} AS k, value FROM ({latest})) "
                        "WHERE k IS NOT NULL AND value IS NOT NULL")
                conn.execute(f"INSERT OR IGNORE INTO main.versions {select}", params)
                if overlay is not None:
                    # After the file, not before: its rows then append to the B-tree
                    # (measured: an overlay of 1 % of the keys written first makes the
                    # file's insert twice as slow); the overlay's few rows replace theirs.
                    conn.execute(
                        f"INSERT OR REPLACE INTO main.versions SELECT k, {int(write_ts)}, "
                        f"{commit_ts}, value FROM (SELECT {key_expr} AS k, value FROM "
                        "ovl.versions) WHERE k IS NOT NULL", params)
        finally:
            for alias in attached:
                conn.execute(f"DETACH DATABASE {alias}")
            _pragmas(conn, f"wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        self._checkpoint_beside()
        return commit_ts

    def wait_checkpoint(self) -> None:
        """Wait for the background WAL checkpoint a big import started, if one runs (a
        benchmark measuring something else waits so the two do not overlap)."""
        with self._conns_lock:
            pending = self._checkpointing
        if pending is not None:
            concurrent.futures.wait([pending])

    def _checkpoint_beside(self) -> None:
        """A passive WAL checkpoint on the helper thread (one at a time): it copies what
        readers no longer need into the store while writers go on appending to the WAL."""
        with self._conns_lock:
            pending = self._checkpointing
        if pending is not None and not pending.done():
            return
        with contextlib.suppress(StoreError):  # a closing store checkpoints on close
            self._checkpointing = self.beside().submit(self._checkpoint_passive)

    def _checkpoint_passive(self) -> None:
        frames = self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0][1]
        if frames < self._wal_frames:  # the WAL started over
            self._wal_wait_at = WAL_RESTART_PAGES
        self._wal_frames = frames

    def _restart_wal(self, conn: apsw.Connection) -> None:
        """Before an import's transaction: once the WAL holds ``WAL_RESTART_PAGES`` frames,
        wait for the helper's checkpoint and finish it, so that the transaction begins on a
        fully checkpointed WAL, where SQLite starts the WAL over. Imports following each
        other never give it that chance by themselves (the next begins while the last is
        being checkpointed): measured, the WAL grew by all a restore wrote, to 1.8 GB after
        six restores of a 300 MB table, each restore slower as the files grew. A reader of
        an older snapshot may still prevent it: then wait again only once the WAL has grown
        as much again."""
        if self._wal_frames < self._wal_wait_at:
            return
        self.wait_checkpoint()
        frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0][1]
        self._wal_wait_at = frames + WAL_RESTART_PAGES

    # -- GC and protected timestamps -----------------------------------------------------

    def gc(self, threshold: int) -> GCStats:
        """Remove versions no read at or after ``threshold`` can see, except where protected.

        Per key, the newest version at or below the effective threshold is kept (unless it is
        a tombstone, which goes with everything older); every newer version is kept. In a span
        protected at ``p``, the effective threshold is ``min(threshold, p)``.
        """
        conn = self._conn()
        removed = 0
        with self._immediate(conn):
            threshold = min(threshold, self._meta(conn, "frontier"))
            old = self._meta(conn, "gc_threshold")
            threshold = max(threshold, old)
            for lo, hi, thr in self._gc_segments(threshold, self._records_in(conn)()):
                bound = "" if hi is None else " AND key < :hi"
                params = {"lo": lo, "hi": hi, "thr": thr}
                conn.execute(
                    f"DELETE FROM versions WHERE key >= :lo{bound} AND ts < :thr AND ts < "
                    "(SELECT max(v.ts) FROM versions AS v WHERE v.key = versions.key "
                    "AND v.ts <= :thr)", params)
                removed += conn.changes()
                conn.execute(
                    f"DELETE FROM versions WHERE key >= :lo{bound} AND ts <= :thr "
                    "AND value IS NULL", params)
                removed += conn.changes()
            conn.execute("UPDATE meta SET value = ? WHERE name = 'gc_threshold'", (threshold,))
        return GCStats(threshold=threshold, removed=removed)

    @staticmethod
    def _gc_segments(threshold: int, records: list[ProtectedRecord]
                     ) -> list[tuple[bytes, bytes | None, int]]:
        """Split the keyspace into ``(start, end or None, effective threshold)`` segments."""
        bounds = sorted({b"", *(b for r in records for s in r.spans for b in (s.start, s.end))})
        segments: list[tuple[bytes, bytes | None, int]] = []
        for i, lo in enumerate(bounds):
            hi = bounds[i + 1] if i + 1 < len(bounds) else None
            thr = threshold
            for r in records:
                if any(s.start <= lo and (hi is not None and hi <= s.end) for s in r.spans):
                    thr = min(thr, r.ts)
            if segments and segments[-1][2] == thr:
                segments[-1] = (segments[-1][0], hi, thr)
            else:
                segments.append((lo, hi, thr))
        return segments

    def protect(self, ts: int, spans: Sequence[Span], owner: str) -> ProtectedRecord:
        """Keep what reads of ``spans`` at ``ts`` or later need, until released."""
        if not spans:
            raise ProtectionError("cannot protect a timestamp without any span")
        conn = self._conn()
        record = ProtectedRecord(id=uuid.uuid4().hex, ts=ts, spans=tuple(spans), owner=owner,
                                 created=wall_now())
        with self._immediate(conn):
            threshold = self._meta(conn, "gc_threshold")
            if ts < threshold:
                try:
                    self._check_ts(ts, spans, ts, threshold, self._records_in(conn))
                except GCThresholdError:
                    raise ProtectionError(
                        f"cannot protect {format_ts(ts)} for {owner}: it is below the GC "
                        f"threshold {format_ts(threshold)}, so its history is already gone",
                        hint="protect a later timestamp") from None
            conn.execute("INSERT INTO protected_ts VALUES (?, ?, ?, ?, ?)", (
                record.id, ts, _spans_codec.encode([(s.start, s.end) for s in spans]),
                owner, record.created))
        return record

    def release(self, record_id: str) -> None:
        conn = self._conn()
        conn.execute("DELETE FROM protected_ts WHERE id = ?", (record_id,))
        if conn.changes() == 0:
            raise ProtectionError(f"protected timestamp record {record_id} does not exist")

    def protected_records(self) -> list[ProtectedRecord]:
        return self._records_in(self._conn())()

    @staticmethod
    def _records_in(conn: apsw.Connection) -> Callable[[], list[ProtectedRecord]]:
        def load() -> list[ProtectedRecord]:
            return [
                ProtectedRecord(id=rid, ts=ts, owner=owner, created=created,
                                spans=tuple(Span(a, b) for a, b in _spans_decoder.decode(sp)))
                for rid, ts, sp, owner, created in conn.execute(
                    "SELECT id, ts, spans, owner, created FROM protected_ts ORDER BY created, id")
            ]
        return load

    # -- job secrets and bulk helpers ----------------------------------------------------

    def put_secret(self, owner: str, data: bytes) -> None:
        """Keep ``data`` (credentials a job needs) for ``owner``, outside the keyspace."""
        self._conn().execute("INSERT OR REPLACE INTO job_secrets VALUES (?, ?)", (owner, data))

    def get_secret(self, owner: str) -> bytes | None:
        rows = self._conn().execute("SELECT data FROM job_secrets WHERE owner = ?",
                                    (owner,)).fetchall()
        return rows[0][0] if rows else None

    def secret_owners(self) -> list[str]:
        return [o for (o,) in self._conn().execute("SELECT owner FROM job_secrets")]

    def delete_secret(self, owner: str) -> None:
        self._conn().execute("DELETE FROM job_secrets WHERE owner = ?", (owner,))

    def split_points(self, span: Span, versions_per_part: int) -> list[bytes]:
        """Keys cutting ``span`` into parts of about ``versions_per_part`` versions each.

        Every version of a key falls in one part (parts are ``[cut_i, cut_i+1)``). One index
        walk per cut, in C.
        """
        if versions_per_part < 1:
            raise ValueError("versions_per_part must be at least 1")
        with self._streaming() as conn:  # a walk over the span
            return self._split_points(conn, span, versions_per_part, [], span.start)

    def arrival_split_points(self, span: Span, after: int, upto: int,
                             versions_per_part: int) -> list[bytes]:
        """Keys cutting the versions of ``span`` that arrived in ``(after, upto]`` into parts
        of about ``versions_per_part`` versions. Every version of a key falls in one part.

        Read from the arrival index, so the cost follows the window, not the span (an
        incremental after a big import into a bigger table does not walk the table): one
        pass counts the window, another samples about 64 keys per part, and the cuts are the
        samples' quantiles."""
        conn = self._conn()
        bounds = {"after": after, "upto": upto, "lo": span.start, "hi": span.end}
        window = ("FROM versions INDEXED BY versions_by_arrival WHERE arrival > :after "
                  "AND arrival <= :upto AND key >= :lo AND key < :hi")
        n = conn.execute(f"SELECT count(*) {window}", bounds).fetchall()[0][0]
        count = -(-n // max(1, versions_per_part))
        if count <= 1:
            return []
        step = max(1, n // (count * 64))
        # Without ORDER BY the index yields rows by arrival, and row_number() numbers them
        # as they stream: no sort of the window.
        samples = sorted({k for (k,) in conn.execute(
            f"SELECT key FROM (SELECT key, row_number() OVER () AS r {window}) "
            "WHERE r % :step = 0", {**bounds, "step": step})})
        cuts = {samples[len(samples) * i // count] for i in range(1, count)}
        return sorted(c for c in cuts if c > span.start)

    @staticmethod
    def _split_points(conn: apsw.Connection, span: Span, versions_per_part: int,
                      cuts: list[bytes], lo: bytes) -> list[bytes]:
        while True:
            row = conn.execute(
                "SELECT key FROM versions WHERE key > ? AND key < ? ORDER BY key "
                "LIMIT 1 OFFSET ?", (lo, span.end, versions_per_part - 1)).fetchall()
            if not row:
                return cuts
            nxt = conn.execute("SELECT key FROM versions WHERE key > ? AND key < ? "
                               "ORDER BY key LIMIT 1", (row[0][0], span.end)).fetchall()
            if not nxt:
                return cuts
            cuts.append(nxt[0][0])
            lo = nxt[0][0]


def _attach_export(conn: apsw.Connection, alias: str, path: str, attached: list[str]
                   ) -> dict[str, Any]:
    """Attach the export file ``path`` read-only as ``alias`` (appended to ``attached``,
    for the caller to detach); returns its export_info."""
    conn.execute(f"ATTACH DATABASE ? AS {alias}", (f"file:{path}?mode=ro",))
    attached.append(alias)
    try:
        info = dict(conn.execute(f"SELECT name, value FROM {alias}.export_info").fetchall())
    except apsw.Error as exc:
        raise StoreError(f"cannot read {path}: it is not a tidemark export file ({exc})"
                         ) from exc
    version = info.get("format_version")
    if version != EXPORT_FORMAT_VERSION:
        raise StoreError(f"cannot read {path}: export format version {version} is not "
                         f"supported (this binary reads {EXPORT_FORMAT_VERSION})")
    return info


@dataclass(frozen=True, slots=True)
class OverlayStats:
    """What ``build_overlay`` found for the later layers' keys: ``rows`` versions written
    (the later layers' winners a base import needs replaced: values, and tombstones of keys
    the base has live), ``live`` keys whose winner is live, ``shadowed`` keys the base has
    live (each replaced or deleted by its winner, or its own winner)."""

    rows: int
    live: int
    shadowed: int


# Per key, the newest version in the later layers, then the winner against the base's newest
# (both at or below as_of). A later layer's version does not always win: an index backfill
# or an IMPORT in a later layer ingests at an older MVCC timestamp than the base's version.
_OVERLAY_WORK = """
CREATE TABLE exp.later(key BLOB PRIMARY KEY, ts INTEGER NOT NULL, value BLOB) WITHOUT ROWID;
CREATE TABLE exp.winner(key BLOB PRIMARY KEY, ts INTEGER NOT NULL, value BLOB,
                        later_won INTEGER NOT NULL, base_live INTEGER NOT NULL) WITHOUT ROWID;
"""
_OVERLAY_LATER = (
    "INSERT INTO exp.later SELECT key, ts, value FROM src.versions WHERE {cond} "
    "ON CONFLICT(key) DO UPDATE SET ts = excluded.ts, value = excluded.value "
    "WHERE excluded.ts > ts")
# The later keys drive (LEFT JOIN), each looks its base versions up by primary key; with
# max(), SQLite takes the bare b.value from the row holding the maximum. A tie is one version
# (a key and a timestamp name a version): the base's, which its import writes.
_OVERLAY_WINNER = (
    "INSERT INTO exp.winner SELECT key, CASE WHEN later_won THEN lts ELSE bts END, "
    "CASE WHEN later_won THEN lvalue ELSE bvalue END, later_won, bvalue IS NOT NULL FROM ("
    "SELECT *, bts IS NULL OR lts > bts AS later_won FROM ("
    "SELECT l.key AS key, l.ts AS lts, l.value AS lvalue, max(b.ts) AS bts, "
    "b.value AS bvalue FROM exp.later AS l LEFT JOIN src.versions AS b "
    "ON b.key = l.key{as_of} GROUP BY l.key))")
# What the base import must have replaced: a winner from the base is what it writes anyway,
# and a deleted key the base does not have live needs no tombstone.
_OVERLAY_ROWS = ("INSERT INTO exp.versions SELECT key, ts, value FROM exp.winner "
                 "WHERE later_won AND (value IS NOT NULL OR base_live)")


def build_overlay(later: Sequence[str], base: str, out: str, *, lo: bytes = b"",
                  hi: bytes | None = None, as_of: int | None = None) -> OverlayStats:
    """Write the overlay of export files ``later`` over ``base`` to a new export file ``out``.

    For each key in ``[lo, hi)`` with a version at or below ``as_of`` (default: any) in
    ``later``, the winner is its newest version at or below ``as_of`` in ``later`` and
    ``base`` together, by MVCC timestamp, not by file. ``out`` holds the winners from
    ``later`` that an import of ``base`` as of ``as_of`` does not write: live values, and
    tombstones for keys ``base`` has live. Written over that import at the same timestamp
    (``import_file(overlay=...)``), it gives every key its winner. Work in C, in ``out``: the
    cost follows ``later`` (each of its keys is looked up in ``base``), not ``base``.
    """
    if os.path.exists(out):
        raise StoreError(f"cannot write an overlay to {out}: the file exists")
    params: dict[str, object] = {"lo": lo, "hi": hi, "as_of": as_of}
    cond = "key >= :lo" + ("" if hi is None else " AND key < :hi") + \
        ("" if as_of is None else " AND ts <= :as_of")
    conn = apsw.Connection(":memory:", flags=_OPEN_FLAGS)
    try:
        conn.execute("ATTACH DATABASE ? AS exp", (out,))
        _pragmas(conn, f"exp.page_size={EXPORT_PAGE_SIZE}", "exp.journal_mode=OFF",
                 "exp.synchronous=OFF")
        conn.execute(_EXPORT_SCHEMA + _OVERLAY_WORK)
        end_ts = 0
        for path, sql in [*((p, _OVERLAY_LATER.format(cond=cond)) for p in later), (
                base, _OVERLAY_WINNER.format(as_of="" if as_of is None else
                                             " AND b.ts <= :as_of"))]:
            attached: list[str] = []
            try:
                end_ts = max(end_ts, int(_attach_export(conn, "src", path, attached)["end_ts"]))
                conn.execute(sql, params)
            finally:
                if attached:
                    conn.execute("DETACH DATABASE src")
        conn.execute(_OVERLAY_ROWS)
        rows = conn.changes()
        live, shadowed = conn.execute(
            "SELECT count(value), count(*) FILTER (WHERE base_live) FROM exp.winner"
        ).fetchall()[0]
        conn.execute("DROP TABLE exp.later; DROP TABLE exp.winner")
        conn.executemany("INSERT INTO exp.export_info VALUES (?, ?)", [
            ("format_version", EXPORT_FORMAT_VERSION), ("span_start", lo),
            ("span_end", KEY_MAX if hi is None else hi), ("start_ts", 0),
            ("end_ts", end_ts if as_of is None else min(as_of, end_ts)),
            ("window", "overlay"), ("all_revisions", 0), ("rows", rows)])
    except BaseException:
        conn.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out)
        raise
    conn.close()
    return OverlayStats(rows=rows, live=live, shadowed=shadowed)


def export_live_count(path: str, as_of: int | None = None) -> int:
    """How many live keys an export file holds as of ``as_of`` (default: its end): the rows
    ``import_file`` of it writes into an empty span. Read from its header when it holds only
    live versions (a latest-only export from time zero), otherwise counted in C."""
    conn = _open_export(path)
    try:
        info = dict(conn.execute("SELECT name, value FROM export_info").fetchall())
        if info.get("all_revisions"):
            cond = "" if as_of is None else f" WHERE ts <= {int(as_of)}"
            sql = ("SELECT count(*) FROM (SELECT max(ts), value FROM versions"
                   f"{cond} GROUP BY key) WHERE value IS NOT NULL")
        elif info.get("window") == Window.MVCC.value and info.get("start_ts") == 0 and \
                "rows" in info:
            return int(info["rows"])
        else:
            sql = "SELECT count(*) FROM versions WHERE value IS NOT NULL"
        return conn.execute(sql).fetchall()[0][0]
    finally:
        conn.close()


def _open_export(path: str) -> apsw.Connection:
    return apsw.Connection(f"file:{path}?mode=ro",
                           flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)


def read_export(path: str) -> list[tuple[bytes, int, bytes | None]]:
    """Every version in a (small) export file, by key and timestamp; for system tables."""
    conn = _open_export(path)
    try:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            "SELECT key, ts, value FROM versions ORDER BY key, ts")]
    finally:
        conn.close()


def export_entries(path: str, as_of: int | None = None) -> Iterator[tuple[bytes, bytes]]:
    """The live entries (key, value) an export file holds as of ``as_of`` (default: its end),
    in key order; for fingerprints of what a backup file restores to."""
    conn = _open_export(path)
    try:
        revisions = conn.execute("SELECT value FROM export_info WHERE name = 'all_revisions'"
                                 ).fetchall()
        if revisions and revisions[0][0]:
            cond = "" if as_of is None else f" WHERE ts <= {int(as_of)}"
            sql = ("SELECT key, value FROM (SELECT key, max(ts), value FROM versions"
                   f"{cond} GROUP BY key) WHERE value IS NOT NULL")
        else:
            sql = "SELECT key, value FROM versions WHERE value IS NOT NULL ORDER BY key"
        yield from conn.execute(sql)
    finally:
        conn.close()


def export_fingerprint(path: str, prefix_len: int, as_of: int | None = None) -> int | None:
    """The fingerprint sum of the live entries ``export_entries`` yields, computed in C;
    None when the C extension is not available (the caller then sums ``export_entries``)."""
    conn = _open_export(path)
    try:
        if not native.load(conn):
            return None
        revisions = conn.execute("SELECT value FROM export_info WHERE name = 'all_revisions'"
                                 ).fetchall()
        if revisions and revisions[0][0]:
            cond = "" if as_of is None else f" WHERE ts <= {int(as_of)}"
            sql = ("SELECT tm_fingerprint(key, value, ?) FROM (SELECT key, max(ts), value "
                   f"FROM versions{cond} GROUP BY key)")
        else:
            sql = "SELECT tm_fingerprint(key, value, ?) FROM versions"
        return conn.execute(sql, (prefix_len,)).fetchall()[0][0] & _MASK64
    finally:
        conn.close()


def export_keys(path: str) -> list[bytes]:
    """Every distinct key in an export file, in order."""
    conn = _open_export(path)
    try:
        return [k for (k,) in conn.execute("SELECT DISTINCT key FROM versions ORDER BY key")]
    finally:
        conn.close()
