"""The SQLite engine: MVCC reads, arrival time, export/import, GC and protected timestamps."""

from __future__ import annotations

import itertools
from pathlib import Path

import apsw
import pytest

from tidemark.clock import wall_now
from tidemark.errors import (
    FutureReadError,
    GCThresholdError,
    PreconditionFailedError,
    ProtectionError,
    StoreError,
    TxnConflictError,
)
from tidemark.kv.db import DB
from tidemark.storage import sqlite
from tidemark.storage.engine import Span, Window
from tidemark.storage.sqlite import SQLiteEngine

ALL = Span(b"", b"\xff")


def put(engine, **kv) -> int:
    return engine.commit([(k.encode(), None if v is None else v.encode()) for k, v in kv.items()],
                         engine.frontier())


def read_export(path):
    conn = apsw.Connection(str(path))
    rows = conn.execute("SELECT key, ts, value FROM versions ORDER BY key, ts").fetchall()
    conn.close()
    return rows


def test_reads_see_latest_version_at_or_below_ts(engine):
    t1 = put(engine, a="1", b="1")
    t2 = put(engine, a="2")
    t3 = put(engine, b=None)
    assert engine.get(b"a", t1) == b"1"
    assert engine.get(b"a", t2 - 1) == b"1"
    assert engine.get(b"a", t3) == b"2"
    assert engine.get(b"b", t3) is None  # tombstone hides the key
    assert engine.get(b"a", t1 - 1) is None
    assert engine.scan(b"", b"\xff", t2) == [(b"a", b"2"), (b"b", b"1")]
    assert engine.scan(b"", b"\xff", t3) == [(b"a", b"2")]


def test_scan_bounds_limits_and_reverse(engine):
    ts = put(engine, a="1", b="2", c="3", d="4")
    assert engine.scan(b"b", b"d", ts) == [(b"b", b"2"), (b"c", b"3")]
    assert engine.scan(b"", b"\xff", ts, limit=2) == [(b"a", b"1"), (b"b", b"2")]
    assert engine.scan(b"", b"\xff", ts, limit=2, reverse=True) == [(b"d", b"4"), (b"c", b"3")]
    assert engine.scan(b"b", b"d", ts, reverse=True) == [(b"c", b"3"), (b"b", b"2")]
    ts2 = put(engine, b=None)
    assert engine.scan(b"", b"\xff", ts2, limit=2) == [(b"a", b"1"), (b"c", b"3")]


def test_commit_timestamps_increase_and_advance_frontier(engine):
    seen = []
    for i in range(50):
        seen.append(put(engine, k=str(i)))
        assert engine.frontier() == seen[-1]
    assert seen == sorted(set(seen))


def test_read_above_frontier_and_below_gc_threshold_are_refused(db, engine):
    put(engine, a="1")
    t2 = put(engine, a="2")
    with pytest.raises(FutureReadError, match="in the future"):
        db.get(b"a", wall_now() + 10**10)
    with pytest.raises(FutureReadError):
        db.txn(read_ts=wall_now() + 10**10)
    # after the last commit but not after the wall clock: closes the timestamps up to it
    later = engine.frontier() + 1
    assert db.get(b"a", later) == b"2" and engine.frontier() == later
    assert engine.commit([(b"z", b"1")], later) > later
    engine.gc(t2)
    with pytest.raises(GCThresholdError, match="below the GC threshold"):
        db.get(b"a", t2 - 1)
    with pytest.raises(GCThresholdError):
        db.scan(b"", b"\xff", ts=t2 - 1)
    assert db.get(b"a", t2) == b"2"


def test_ingest_at_historical_timestamp_has_later_arrival(engine):
    t1 = put(engine, a="1")
    put(engine, a="2")
    commit = engine.ingest([(b"x", b"old"), (b"y", b"old")], ts=t1)
    versions = {k: (ts, arrival) for k, ts, arrival, _ in engine.versions(b"x", b"z")}
    assert versions == {b"x": (t1, commit), b"y": (t1, commit)}
    assert commit > t1 and engine.frontier() == commit
    assert engine.get(b"x", t1) == b"old"  # visible at its MVCC timestamp
    # a transaction's version at the same (key, ts) wins over an ingest of it
    engine.ingest([(b"a", b"ingested")], ts=t1)
    assert engine.get(b"a", t1) == b"1"


def test_ingest_refuses_timestamps_below_gc_or_in_future(engine):
    put(engine, a="1")
    t2 = put(engine, a="2")
    engine.gc(t2)
    with pytest.raises(GCThresholdError):
        engine.ingest([(b"z", b"1")], ts=t2 - 5)
    with pytest.raises(FutureReadError):
        engine.ingest([(b"z", b"1")], ts=engine.frontier() + 10**12)
    assert engine.versions(b"z", b"zz") == []


def test_conflicting_commit_writes_nothing(db, engine):
    put(engine, a="0")
    t = db.txn()
    assert t.get(b"a") == b"0"
    put(engine, a="1")
    t.put(b"a", b"from-t")
    t.put(b"other", b"x")
    with pytest.raises(TxnConflictError):
        t.commit()
    assert db.get(b"other") is None
    assert db.get(b"a") == b"1"


def test_commit_conflicts_with_ingest_that_arrived_after_read(db, engine):
    t0 = put(engine, a="0")
    t = db.txn()
    assert t.scan(b"m", b"n") == []
    engine.ingest([(b"mm", b"historical")], ts=t0)  # ts below t.read_ts, arrival after it
    t.put(b"a", b"x")
    with pytest.raises(TxnConflictError):
        t.commit()


@pytest.mark.parametrize("all_revisions", [False, True])
def test_export_mvcc_window(engine, tmp_path, all_revisions):
    t1 = put(engine, a="1", b="1", c="1")
    t2 = put(engine, a="2", b=None)
    t3 = put(engine, d="3")
    full = engine.export(str(tmp_path / "full"), ALL, 0, t3, all_revisions=all_revisions)
    rows = read_export(full.path)
    if all_revisions:
        assert rows == [(b"a", t1, b"1"), (b"a", t2, b"2"), (b"b", t1, b"1"), (b"b", t2, None),
                        (b"c", t1, b"1"), (b"d", t3, b"3")]
    else:  # latest only, and a full export has no tombstones
        assert rows == [(b"a", t2, b"2"), (b"c", t1, b"1"), (b"d", t3, b"3")]
    assert full.rows == len(rows)
    inc = engine.export(str(tmp_path / "inc"), ALL, t1, t2, all_revisions=all_revisions)
    assert read_export(inc.path) == [(b"a", t2, b"2"), (b"b", t2, None)]


def test_export_arrival_window_catches_historical_ingest(engine, tmp_path):
    t1 = put(engine, a="1")
    t2 = put(engine, b="2")
    backfill = engine.ingest([(b"idx1", b"e1"), (b"idx2", b"e2")], ts=t1)
    t4 = put(engine, c="3")
    by_mvcc = engine.export(str(tmp_path / "mvcc"), ALL, t2, t4)
    by_arrival = engine.export(str(tmp_path / "arr"), ALL, t2, t4, window=Window.ARRIVAL)
    assert [r[0] for r in read_export(by_mvcc.path)] == [b"c"]  # the classic miss
    assert read_export(by_arrival.path) == [(b"c", t4, b"3"), (b"idx1", t1, b"e1"),
                                            (b"idx2", t1, b"e2")]
    assert backfill > t2


@pytest.mark.parametrize("all_revisions", [False, True])
def test_export_arrival_window_of_a_span(engine, tmp_path, all_revisions):
    """Only the span's keys, from every commit of the window: latest only gives each key's
    newest version that arrived in it (a tombstone too), even when an older MVCC timestamp
    arrived later; all revisions gives every version that arrived in it."""
    t1 = put(engine, a="0", b="0", c="0", d="0")
    t2 = put(engine, b="1", c="1", x="1")
    t3 = put(engine, b="2", c=None, y="2")
    late = engine.ingest([(b"d", b"late")], ts=t1 + 1)
    put(engine, z="3")
    end = engine.frontier()
    out = engine.export(str(tmp_path / "w"), Span(b"b", b"x"), t1, end, window=Window.ARRIVAL,
                        all_revisions=all_revisions)
    if all_revisions:
        want = [(b"b", t2, b"1"), (b"b", t3, b"2"), (b"c", t2, b"1"), (b"c", t3, None),
                (b"d", t1 + 1, b"late")]
    else:
        want = [(b"b", t3, b"2"), (b"c", t3, None), (b"d", t1 + 1, b"late")]
    assert read_export(out.path) == want
    assert out.rows == len(want) and late > t3


def test_arrival_split_points_cut_what_arrived_not_the_span(engine):
    """Cuts come from the window's keys (here all in the upper half of a big span), keep
    parts near the size asked for, and never split one key's versions."""
    engine.ingest([(b"k%06d" % i, b"old") for i in range(0, 40_000, 2)])
    after = engine.frontier()
    changed = [(b"k%06d" % i, b"new") for i in range(20_000, 40_000, 2)]
    engine.ingest(changed[::2])
    engine.ingest(changed)  # two versions of half the keys: one key, one part
    upto = engine.frontier()
    span = Span(b"k", b"l")
    cuts = engine.arrival_split_points(span, after, upto, 3000)
    assert cuts == sorted(set(cuts)) and all(c > b"k020000" for c in cuts)
    bounds = [span.start, *cuts, span.end]
    sizes = [sum(after < arrival <= upto for _k, _ts, arrival, _v in engine.versions(lo, hi))
             for lo, hi in itertools.pairwise(bounds)]
    assert sum(sizes) == 15_000 and len(sizes) >= 5 and max(sizes) <= 4500, sizes
    assert engine.arrival_split_points(span, after, upto, 15_000) == []
    assert engine.arrival_split_points(span, upto, upto, 1) == []


def test_export_span_is_respected_and_partial_file_never_left(engine, tmp_path):
    ts = put(engine, a="1", b="2", c="3")
    out = engine.export(str(tmp_path / "x"), Span(b"b", b"c"), 0, ts)
    assert read_export(out.path) == [(b"b", ts, b"2")]
    with pytest.raises(StoreError, match="exists"):
        engine.export(str(tmp_path / "x"), ALL, 0, ts)
    with pytest.raises(FutureReadError):
        engine.export(str(tmp_path / "y"), ALL, 0, ts + 10**12)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "store") == ["x"]


def test_import_with_prefix_rewrite(engine, tmp_path):
    t1 = put(engine, **{"t1/a": "1", "t1/b": "2", "t2/a": "9"})
    put(engine, **{"t1/a": "1b", "t1/b": None})
    t3 = engine.frontier()
    path = engine.export(str(tmp_path / "exp"), Span(b"t1/", b"t10"), 0, t3,
                         all_revisions=True).path
    commit = engine.import_file(path, rewrites=[(b"t1/", b"t7/")])
    assert engine.scan(b"t7/", b"t70", commit) == [(b"t7/a", b"1b")]
    # the state at an earlier time, written at a chosen timestamp
    commit2 = engine.import_file(path, rewrites=[(b"t1/", b"t8/")], as_of=t1)
    assert engine.scan(b"t8/", b"t80", commit2) == [(b"t8/a", b"1"), (b"t8/b", b"2")]
    assert {a for _, _, a, _ in engine.versions(b"t8/", b"t80")} == {commit2}
    # every revision, keeping its timestamp
    commit3 = engine.import_file(path, rewrites=[(b"t1/", b"t9/")], revisions=True)
    assert [(k, ts) for k, ts, _, _ in engine.versions(b"t9/", b"t90")] == [
        (b"t9/a", t1), (b"t9/a", t3), (b"t9/b", t1), (b"t9/b", t3)]
    assert engine.get(b"t9/b", t1) == b"2"
    assert commit3 > commit2 > commit


def test_an_import_fenced_by_a_failing_guard_writes_nothing(engine, tmp_path):
    """A restore job that lost its lease (another node adopted it) must not write: the guard
    is tested under the write lock, in the import's own commit."""
    put(engine, **{"t1/a": "1", "lease": "mine"})
    path = engine.export(str(tmp_path / "exp"), Span(b"t1/", b"t10"), 0,
                         engine.frontier()).path
    with pytest.raises(PreconditionFailedError):
        engine.import_file(path, rewrites=[(b"t1/", b"t7/")],
                           guard=(b"lease", lambda v: v == b"someone else's"))
    assert engine.versions(b"t7/", b"t70") == []
    commit = engine.import_file(path, rewrites=[(b"t1/", b"t7/")],
                                guard=(b"lease", lambda v: v == b"mine"))
    assert engine.scan(b"t7/", b"t70", commit) == [(b"t7/a", b"1")]


def test_import_refuses_non_export_files(engine, tmp_path):
    other = tmp_path / "other.sqlite"
    conn = apsw.Connection(str(other))
    conn.execute("CREATE TABLE versions(key, ts, value)")
    conn.close()
    with pytest.raises(StoreError, match="not a tidemark export file"):
        engine.import_file(str(other))
    with pytest.raises(StoreError, match="no such file"):
        engine.import_file(str(tmp_path / "missing"))


def test_gc_keeps_what_reads_at_threshold_need(engine):
    t1 = put(engine, a="1", b="1", c="1")
    t2 = put(engine, a="2", b=None)
    t3 = put(engine, a="3")
    stats = engine.gc(t2)
    assert stats.threshold == t2 and engine.gc_threshold() == t2
    assert [(k, ts) for k, ts, _, _ in engine.versions(b"", b"\xff")] == [
        (b"a", t2), (b"a", t3), (b"c", t1)]  # a@t1 shadowed; b's tombstone and b@t1 gone
    assert stats.removed == 3
    assert engine.gc(t1).threshold == t2  # the threshold never moves back


def test_protected_timestamp_keeps_history_of_its_spans(db, engine):
    t1 = put(engine, a="1", m="1")
    put(engine, a="2", m="2")
    rec = engine.protect(t1, [Span(b"a", b"b")], owner="backup 1")
    assert engine.protected_records() == [rec]
    engine.gc(engine.frontier())
    assert db.get(b"a", t1) == b"1"  # protected
    with pytest.raises(GCThresholdError):
        db.get(b"m", t1)  # not protected
    assert [k for k, _, _, _ in engine.versions(b"m", b"n")] == [b"m"]
    with pytest.raises(ProtectionError, match="below the GC threshold"):
        engine.protect(t1, [Span(b"m", b"n")], owner="too late")
    engine.release(rec.id)
    with pytest.raises(ProtectionError, match="does not exist"):
        engine.release(rec.id)
    engine.gc(engine.frontier())
    assert len(engine.versions(b"a", b"b")) == 1
    with pytest.raises(GCThresholdError):
        db.get(b"a", t1)


def test_gc_segments_take_the_lowest_protection():
    from tidemark.storage.engine import ProtectedRecord
    from tidemark.storage.sqlite import SQLiteEngine

    recs = [ProtectedRecord("1", 50, (Span(b"b", b"f"),), "x", 0),
            ProtectedRecord("2", 30, (Span(b"d", b"h"),), "y", 0)]
    assert SQLiteEngine._gc_segments(100, recs) == [
        (b"", b"b", 100), (b"b", b"d", 50), (b"d", b"h", 30), (b"h", None, 100)]


def test_db_run_retries_conflicts(engine):
    db = DB(engine)
    put(engine, n="0")
    attempts = []

    def incr(txn):
        attempts.append(1)
        n = int(txn.get(b"n"))
        if len(attempts) == 1:
            put(engine, n=str(n + 100))  # a concurrent writer sneaks in
        txn.put(b"n", str(n + 1).encode())

    db.run(incr)
    assert len(attempts) == 2
    assert db.get(b"n") == b"101"


def test_import_latest_only_file(engine, tmp_path):
    t1 = put(engine, **{"t1/a": "1", "t1/b": "2"})
    t2 = put(engine, **{"t1/a": "1b", "t1/b": None, "t1/c": "3"})
    path = engine.export(str(tmp_path / "latest"), Span(b"t1/", b"t10"), 0, t2).path
    commit = engine.import_file(path, rewrites=[(b"t1/", b"t5/")])
    assert engine.scan(b"t5/", b"t50", commit) == [(b"t5/a", b"1b"), (b"t5/c", b"3")]
    with pytest.raises(StoreError, match="only the latest versions"):
        engine.import_file(path, as_of=t1)


def test_delete_range_tombstones_live_keys_only(engine):
    t1 = put(engine, a="1", b="2", c="3")
    put(engine, b=None)
    ts, count = engine.delete_range(b"a", b"c")
    assert count == 1  # b is already deleted
    assert engine.scan(b"", b"\xff", ts) == [(b"c", b"3")]
    assert engine.scan(b"", b"\xff", t1) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]


def test_every_connection_pragma_takes_effect(tmp_path):
    """apsw runs a multi-statement string only up to the first statement returning a row,
    so settings listed after ``PRAGMA mmap_size`` once silently never applied."""
    from tidemark.storage.sqlite import (
        DEFAULT_CACHE_KIB,
        DEFAULT_MMAP_BYTES,
        STREAM_CACHE_KIB,
        WAL_AUTOCHECKPOINT_PAGES,
        SQLiteEngine,
    )
    engine = SQLiteEngine(tmp_path / "s", create=True)
    try:
        conn = engine._conn()
        got = {p: conn.execute(f"PRAGMA {p}").fetchall()[0][0]
               for p in ("synchronous", "cache_size", "mmap_size", "wal_autocheckpoint")}
        assert got == {"synchronous": 1, "cache_size": -DEFAULT_CACHE_KIB,
                       "mmap_size": DEFAULT_MMAP_BYTES,
                       "wal_autocheckpoint": WAL_AUTOCHECKPOINT_PAGES}
        # A streaming pass gets a connection of its own: small cache, no map; the thread's
        # connection keeps its own.
        with engine._streaming() as streaming:
            assert streaming.execute("PRAGMA cache_size").fetchall()[0][0] == \
                -STREAM_CACHE_KIB
            assert streaming.execute("PRAGMA mmap_size").fetchall()[0][0] == 0
        engine.commit([(b"a", b"1")], engine.frontier())
        engine.export(str(tmp_path / "e.sqlite"), ALL, 0, engine.frontier())
        assert conn.execute("PRAGMA cache_size").fetchall()[0][0] == -DEFAULT_CACHE_KIB
        assert conn.execute("PRAGMA mmap_size").fetchall()[0][0] == DEFAULT_MMAP_BYTES
    finally:
        engine.close()


# -- the WAL under imports that follow each other ----------------------------------------


def test_imports_one_after_another_start_the_wal_over(tmp_path, monkeypatch):
    """Each import is checkpointed beside the next one; every WAL_RESTART_PAGES frames an
    import waits for that checkpoint so the WAL starts over, instead of growing by all the
    imports wrote."""
    monkeypatch.setattr(sqlite, "WAL_RESTART_PAGES", 500)
    engine = SQLiteEngine(tmp_path / "store")
    try:
        engine.ingest([(b"t1/%06d" % i, b"v" * 200) for i in range(20_000)])
        path = engine.export(str(tmp_path / "f"), ALL, 0, engine.frontier()).path
        wal = Path(engine.db_path).with_name(sqlite.STORE_FILE + "-wal")
        sizes = []
        for n in range(12):
            engine.import_file(path, rewrites=[(b"t1/", b"t%d/" % (20 + n))])
            sizes.append(wal.stat().st_size)
        one = sizes[1] - sizes[0]  # what one import adds to the WAL: some 780 frames
        assert one > 500 * sqlite.PAGE_SIZE
        # It starts over a few imports after passing the mark (the helper's count lags);
        # the file keeps its size, and reuses it. Without that: sizes[0] + 11 * one.
        assert max(sizes) < sizes[0] + 6 * one, sizes
        assert engine.count_versions(b"t20/", b"t4") == 12 * 20_000
    finally:
        engine.close()
