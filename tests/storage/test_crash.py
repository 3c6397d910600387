"""Crash safety: real child processes killed with SIGKILL in the middle of writing.

A child process writes to a store (a huge ingest, repeated ingests, or a loop of large
transactions) and reports on stdout what it began and what committed; the test kills it with
SIGKILL at a chosen or random moment. Afterwards the store must open (engine and node), show
every batch or transaction completely or not at all (each carries a unique tag, counted per
tag), keep everything whose commit was reported, keep its frontier at or above every stored
version's arrival, and hand the next commit a timestamp above the frontier.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import apsw
import pytest

from tidemark.cluster.node import Node
from tidemark.kv.db import DB
from tidemark.storage.sqlite import STORE_FILE, SQLiteEngine

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 60.0

# Ingest batches of ``size`` rows tagged ``batch-<n>``, all at one historical timestamp (as
# IMPORT does); print "mid <n>" from inside the ingest (its transaction is open then).
INGEST_CHILD = r"""
import sys
from tidemark.storage.sqlite import SQLiteEngine
store, first, count, size, mark_at, cache_kib = sys.argv[1:7]
first, count, size, mark_at, cache_kib = map(int, (first, count, size, mark_at, cache_kib))
eng = SQLiteEngine(store, cache_kib=cache_kib)
at = eng.frontier()
print("ready", at, flush=True)
for b in range(first, first + count):
    tag = b"batch-%06d" % b
    def rows(b=b, tag=tag):
        for j in range(size):
            if j == mark_at:
                print("mid", b, flush=True)
            yield (b"ingest/%06d/%08d" % (b, j), tag)
    print("begin", b, flush=True)
    ts = eng.ingest(rows(), ts=at)
    print("end", b, ts, flush=True)
print("done", flush=True)
"""

# Transactions of ``size`` keys of 1 KB each, tagged by their number, plus a pointer key.
COMMIT_CHILD = r"""
import sys
from tidemark.kv.db import DB
from tidemark.storage.sqlite import SQLiteEngine
store, first, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
db = DB(SQLiteEngine(store))
print("ready", flush=True)
i = first
while True:
    pad = (b"%06d|" % i) * 146
    txn = db.txn()
    for j in range(size):
        txn.put(b"txn/%06d/%05d" % (i, j), pad)
    txn.put(b"txn-last", b"%06d" % i)
    print("begin", i, flush=True)
    ts = txn.commit()
    print("committed", i, ts, flush=True)
    i += 1
"""


class Child:
    """A child process running ``code``, with its stdout lines collected by a thread."""

    def __init__(self, code: str, *args: object):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.strip())
        self._queue.put(None)

    def _drain(self) -> bool:
        """Move queued lines to ``lines``; False once the child closed stdout."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return True
            if line is None:
                return False
            self.lines.append(line)

    def wait_for(self, predicate, what: str, timeout: float = WAIT_S) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not predicate():
            alive = self._drain()
            if predicate():
                return
            if not alive or self.proc.poll() is not None:
                self._drain()
                if predicate():
                    return
                raise AssertionError(f"child exited ({self.proc.poll()}) before {what}; "
                                     f"stdout {self.lines[-5:]}, stderr {self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; stdout {self.lines[-5:]}")
            time.sleep(0.005)

    def has(self, prefix: str) -> bool:
        self._drain()
        return any(line.startswith(prefix) for line in self.lines)

    def count(self, prefix: str) -> int:
        self._drain()
        return sum(line.startswith(prefix) for line in self.lines)

    def kill(self) -> None:
        """SIGKILL, then collect everything the child printed before dying."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=WAIT_S)
        self._reader.join(timeout=WAIT_S)
        self._drain()
        assert self.proc.returncode == -signal.SIGKILL, (self.proc.returncode, self.stderr())

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "<running>"
        return self.proc.stderr.read()[-2000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT_S)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def children():
    started: list[Child] = []

    def start(code: str, *args: object) -> Child:
        child = Child(code, *args)
        started.append(child)
        return child

    yield start
    for child in started:
        child.close()


def tag_counts(store: Path, prefix: bytes, tag_len: int) -> dict[bytes, int]:
    """Rows per tag (the first ``tag_len`` bytes of the key) under ``prefix``, read in SQL.

    The engine opens the store first, so SQLite recovers it as the engine would.
    """
    SQLiteEngine(store).close()
    conn = apsw.Connection(str(store / STORE_FILE), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        hi = prefix[:-1] + bytes([prefix[-1] + 1])
        return dict(conn.execute(
            "SELECT substr(key, 1, ?), count(*) FROM versions WHERE key >= ? AND key < ? "
            "GROUP BY 1", (tag_len, prefix, hi)).fetchall())
    finally:
        conn.close()


def check_recovered_store(store: Path) -> int:
    """The store opens, is intact, its frontier covers every arrival, and commits go on.

    Returns the timestamp of a fresh commit made here.
    """
    with SQLiteEngine(store) as eng:
        frontier = eng.frontier()
        conn = apsw.Connection(str(store / STORE_FILE), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            max_arrival, bad = conn.execute(
                "SELECT max(arrival), sum(arrival < ts) FROM versions").fetchall()[0]
        finally:
            conn.close()
        assert max_arrival is not None and max_arrival <= frontier
        assert not bad, "a version arrived before its own timestamp"
        db = DB(eng)
        txn = db.txn()
        assert txn.read_ts == frontier
        txn.put(b"after-crash", b"%d" % frontier)
        ts = txn.commit()
        assert ts > frontier and ts > max_arrival
        assert eng.frontier() == ts
        assert db.get(b"after-crash") == b"%d" % frontier
    with Node(store) as node:
        assert node.db.get(b"after-crash") == b"%d" % frontier
        assert node.db.now() >= ts
        assert node.version.active() is not None
        txn = node.db.txn()
        txn.put(b"after-crash-node", b"1")
        assert txn.commit() > ts
    return ts


def test_sigkill_mid_ingest_leaves_nothing_of_the_batch(tmp_path, children):
    """Kill a 2M-row ingest after it spilled uncommitted pages into the WAL."""
    store = tmp_path / "store"
    with SQLiteEngine(store) as eng:
        before = DB(eng).txn()
        before.put(b"k", b"v")
        t0 = before.commit()
        eng.ingest(((b"ingest/000000/%08d" % j, b"batch-000000") for j in range(10_000)),
                   ts=t0)
    wal = store / (STORE_FILE + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # the last close checkpointed it

    # A small page cache makes SQLite spill the open transaction's pages into the WAL.
    child = children(INGEST_CHILD, store, 1, 1, 2_000_000, 100_000, 2048)
    child.wait_for(lambda: child.has("mid 1"), "the ingest to be under way")
    child.wait_for(lambda: wal.exists() and wal.stat().st_size > 16 * 2**20,
                   "the WAL to hold uncommitted pages")
    child.kill()
    assert not child.has("end 1"), "the ingest finished before the kill: nothing was tested"
    assert wal.stat().st_size > 16 * 2**20  # the dead transaction's frames are still there

    with SQLiteEngine(store) as eng:
        assert eng.scan(b"ingest/000001/", b"ingest/000002/", eng.frontier(), limit=1) == []
        assert eng.get(b"k", eng.frontier()) == b"v"
    assert tag_counts(store, b"ingest/", 13) == {b"ingest/000000": 10_000}
    check_recovered_store(store)


def test_sigkill_at_a_random_moment_of_repeated_ingests(tmp_path, children):
    """Every visible batch is complete, and every batch reported done is visible."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    store = tmp_path / "store"
    SQLiteEngine(store).close()
    size = 40_000
    child = children(INGEST_CHILD, store, 0, 10_000, size, -1, 2048)
    child.wait_for(lambda: child.count("end ") >= 2, "two batches to commit")
    time.sleep(rng.uniform(0, 0.3))
    child.kill()
    begun = {int(line.split()[1]) for line in child.lines if line.startswith("begin ")}
    ended = {int(line.split()[1]) for line in child.lines if line.startswith("end ")}
    counts = tag_counts(store, b"ingest/", 13)
    visible = {int(tag.split(b"/")[1]) for tag in counts}
    assert all(n == size for n in counts.values()), (seed, counts)
    assert ended <= visible <= begun, (seed, sorted(ended), sorted(visible), sorted(begun))
    assert len(begun - ended) <= 1
    check_recovered_store(store)


def test_sigkill_during_transaction_commits(tmp_path, children):
    """Kill a loop of large commits inside a commit, three times over the same store."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    store = tmp_path / "store"
    SQLiteEngine(store).close()
    size = 4_000
    last_ts = 0
    for round_ in range(3):
        first = round_ * 100_000
        child = children(COMMIT_CHILD, store, first, size)
        child.wait_for(lambda c=child: c.count("committed ") >= 2, "two commits")
        # Aim at a commit: "begin" is printed just before Txn.commit, which takes ~20-40 ms.
        n = child.count("begin ")
        child.wait_for(lambda c=child, n=n: c.count("begin ") > n, "the next commit")
        time.sleep(rng.uniform(0, 0.01))
        child.kill()
        committed = {int(line.split()[1]): int(line.split()[2])
                     for line in child.lines if line.startswith("committed ")}
        counts = tag_counts(store, b"txn/", 10)
        visible = {int(tag.split(b"/")[1]) for tag in counts}
        assert all(n == size for n in counts.values()), (seed, round_, counts)
        mine = {i for i in visible if i >= first}
        assert set(committed) <= mine <= set(committed) | {max(committed) + 1}, (
            seed, round_, sorted(committed), sorted(mine))
        with SQLiteEngine(store) as eng:
            assert eng.get(b"txn-last", eng.frontier()) == b"%06d" % max(mine)
            assert eng.frontier() >= max(committed.values())
            versions = eng.versions(b"txn/%06d/" % max(mine), b"txn/%06d0" % max(mine))
            assert len({ts for _k, ts, _a, _v in versions}) == 1  # one commit, one timestamp
        ts = check_recovered_store(store)
        assert ts > last_ts
        last_ts = ts
