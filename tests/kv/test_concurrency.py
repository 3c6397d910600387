"""Serializable transactions: real processes racing on one store, anomalies refused, and a
transaction's view of its own writes compared with a brute-force model.

``TIDEMARK_COUNTER_N`` sets how many increments each process makes (default 200);
``TIDEMARK_PROPERTY_EXAMPLES`` sets the number of hypothesis examples.
"""

from __future__ import annotations

import os
import subprocess
import sys
from itertools import count
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidemark.errors import GCThresholdError, TransactionError, TxnConflictError
from tidemark.kv.db import DB
from tidemark.kv.txn import TxnState
from tidemark.storage.engine import KEY_MAX, Span
from tidemark.storage.sqlite import SQLiteEngine

REPO = Path(__file__).resolve().parents[2]
COUNTER_N = int(os.environ.get("TIDEMARK_COUNTER_N", "200"))
EXAMPLES = int(os.environ.get("TIDEMARK_PROPERTY_EXAMPLES", "100"))


@pytest.fixture
def kv(tmp_path):
    eng = SQLiteEngine(tmp_path / "store")
    yield DB(eng)
    eng.close()


def commit(db: DB, **kv: str | None) -> int:
    txn = db.txn()
    for k, v in kv.items():
        if v is None:
            txn.delete(k.encode())
        else:
            txn.put(k.encode(), v.encode())
    return txn.commit()


# -- two processes, one counter ------------------------------------------------------------

COUNTER_CHILD = r"""
import os, sys, time
from tidemark.kv.db import DB
from tidemark.storage.sqlite import SQLiteEngine
store, go, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = DB(SQLiteEngine(store))
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
attempts = 0
def incr(txn):
    global attempts
    attempts += 1
    value = int(txn.get(b"counter") or b"0")
    txn.put(b"counter", b"%d" % (value + 1))
for _ in range(n):
    db.run(incr)
print("done", attempts, flush=True)
"""


def test_two_processes_increment_one_counter(tmp_path):
    store = tmp_path / "store"
    SQLiteEngine(store).close()
    go = tmp_path / "go"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    procs = [subprocess.Popen([sys.executable, "-c", COUNTER_CHILD, str(store), str(go),
                               str(COUNTER_N)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        go.touch()  # both start incrementing at once
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.startswith("done")
    attempts = sum(int(out.split()[1]) for out, _err in outs)
    with SQLiteEngine(store) as eng:
        assert DB(eng).get(b"counter") == b"%d" % (2 * COUNTER_N)
        versions = eng.versions(b"counter", b"counter\x00")
    # One version per increment, in timestamp order 1, 2, ..., 2N: a serial history.
    assert [v for _k, _ts, _a, v in versions] == [b"%d" % i for i in range(1, 2 * COUNTER_N + 1)]
    assert all(ts == arrival for _k, ts, arrival, _v in versions)
    assert attempts >= 2 * COUNTER_N


# -- anomalies refused ---------------------------------------------------------------------


def test_write_skew_is_refused(kv):
    """Two doctors on call: each checks the other is on call, then goes off call."""
    commit(kv, x="on", y="on")
    t1 = kv.txn()
    t2 = kv.txn(t1.read_ts)
    assert t1.read_ts == t2.read_ts
    for t in (t1, t2):
        assert (t.get(b"x"), t.get(b"y")) == (b"on", b"on")
    t1.put(b"x", b"off")
    t2.put(b"y", b"off")
    t2.put(b"z", b"written by t2")
    ts1 = t1.commit()
    frontier = kv.engine.frontier()
    versions = kv.engine.versions(b"", KEY_MAX)
    with pytest.raises(TxnConflictError):
        t2.commit()
    assert t2.state is TxnState.ABORTED and t2.commit_ts is None
    assert kv.engine.frontier() == frontier == ts1  # the failed commit took no timestamp
    assert kv.engine.versions(b"", KEY_MAX) == versions  # and wrote nothing
    assert kv.scan(b"", KEY_MAX) == [(b"x", b"off"), (b"y", b"on")]
    with pytest.raises(TransactionError):
        t2.commit()


def test_write_skew_through_scans_is_refused(kv):
    commit(kv, x="on", y="on")
    t1 = kv.txn()
    t2 = kv.txn(t1.read_ts)
    assert t1.scan(b"x", b"z") == t2.scan(b"x", b"z") == [(b"x", b"on"), (b"y", b"on")]
    t1.delete(b"x")
    t2.delete(b"y")
    t1.commit()
    with pytest.raises(TxnConflictError):
        t2.commit()
    assert kv.scan(b"x", b"z") == [(b"y", b"on")]


def test_lost_update_is_refused(kv):
    commit(kv, counter="5")
    t1, t2 = kv.txn(), kv.txn()
    for t in (t1, t2):
        t.put(b"counter", b"%d" % (int(t.get(b"counter")) + 1))
    t1.commit()
    with pytest.raises(TxnConflictError):
        t2.commit()
    assert kv.get(b"counter") == b"6"
    # The retry helper re-runs the read-modify-write on fresh data.
    kv.run(lambda t: t.put(b"counter", b"%d" % (int(t.get(b"counter")) + 1)))
    assert kv.get(b"counter") == b"7"


def test_blind_writes_do_not_conflict(kv):
    commit(kv, a="0")
    t1, t2 = kv.txn(), kv.txn()
    t1.put(b"a", b"1")
    t2.put(b"a", b"2")
    ts1 = t1.commit()
    ts2 = t2.commit()
    assert ts2 > ts1
    assert kv.get(b"a") == b"2"


def test_historical_ingest_after_a_read_conflicts(kv):
    """An ingest landing after the read, at a timestamp at or below it, invalidates it."""
    commit(kv, a="1", b="1")
    t = kv.txn()
    assert t.get(b"a") == b"1"
    assert t.scan(b"b", b"c") == [(b"b", b"1")]
    kv.engine.ingest([(b"a", b"ingested")], ts=t.read_ts - 1)
    t.put(b"out", b"x")
    with pytest.raises(TxnConflictError):
        t.commit()
    t = kv.txn()
    assert t.scan(b"b", b"d") == [(b"b", b"1")]
    kv.engine.ingest([(b"c", b"ingested")], ts=t.read_ts)
    t.put(b"out", b"x")
    with pytest.raises(TxnConflictError):
        t.commit()


@pytest.mark.parametrize(("reverse", "written", "conflicts"), [
    (False, b"b", True),  # a key the scan returned
    (False, b"bb", True),  # a phantom between returned keys
    (False, b"c", True),  # the last key returned
    (False, b"c\x00", False),  # right after the last key returned: not read
    (False, b"d", False),  # the next key, which the limit cut off
    (False, b"g", False),
    (True, b"f", True),
    (True, b"dd", True),
    (True, b"d", True),  # the last key returned (scanning down)
    (True, b"cz", False),
    (True, b"c", False),
    (True, b"a", False),
])
def test_limited_scan_conflicts_only_with_what_it_read(kv, reverse, written, conflicts):
    commit(kv, a="1", b="1", c="1", d="1", e="1", f="1")
    t = kv.txn()
    rows = t.scan(b"a", b"g", limit=3, reverse=reverse)
    assert [k for k, _v in rows] == ([b"f", b"e", b"d"] if reverse else [b"a", b"b", b"c"])
    commit(kv, **{written.decode("latin-1"): "new"})
    t.put(b"zz", b"result")
    if conflicts:
        with pytest.raises(TxnConflictError):
            t.commit()
        assert kv.get(b"zz") is None
    else:
        t.commit()
        assert kv.get(b"zz") == b"result"


def test_limited_scan_over_own_writes_records_what_it_returned(kv):
    commit(kv, a="1", c="1", e="1", g="1")
    t = kv.txn()
    t.delete(b"a")
    t.put(b"b", b"mine")
    assert t.scan(b"a", b"z", limit=2) == [(b"b", b"mine"), (b"c", b"1")]
    commit(kv, f="new")  # after the last key returned
    t.put(b"zz-out", b"1")
    t.commit()
    t = kv.txn()
    t.put(b"d", b"mine")
    assert t.scan(b"a", b"z", limit=2, reverse=True) == [(b"g", b"1"), (b"f", b"new")]
    commit(kv, e="changed")  # below the last key returned: not read
    t.put(b"zz-out", b"2")
    t.commit()
    t = kv.txn()
    assert t.scan(b"a", b"z", limit=2, reverse=True) == [(b"g", b"1"), (b"f", b"new")]
    commit(kv, f=None)
    t.put(b"zz-out", b"3")
    with pytest.raises(TxnConflictError):
        t.commit()


# -- GC against open transactions ------------------------------------------------------------


def gc_past(kv: DB, ts: int) -> int:
    later = commit(kv, unrelated=str(ts))
    stats = kv.engine.gc(later)
    assert stats.threshold > ts
    return stats.threshold


def test_reads_after_gc_past_read_ts_fail(kv):
    commit(kv, a="1", b="1")
    t = kv.txn()
    assert t.get(b"a") == b"1"
    commit(kv, a="2", b=None)
    gc_past(kv, t.read_ts)
    with pytest.raises(GCThresholdError):
        t.get(b"b")
    with pytest.raises(GCThresholdError):
        t.scan(b"a", b"c")
    with pytest.raises(GCThresholdError):
        kv.get(b"a", t.read_ts)
    with pytest.raises(GCThresholdError):
        kv.txn(t.read_ts).get(b"a")


def test_read_only_txn_after_gc_past_its_read_ts(kv):
    """GC past a read-only transaction's read_ts fails every later read with
    GCThresholdError. Txn.commit documents that a read-only commit only returns read_ts (each
    read was checked against GC right after it ran), so the reads that succeeded stand.
    """
    commit(kv, a="1", b="1")
    t = kv.txn()
    assert t.get(b"a") == b"1"
    assert t.scan(b"a", b"c", limit=1) == [(b"a", b"1")]
    commit(kv, a="2")
    gc_past(kv, t.read_ts)
    with pytest.raises(GCThresholdError):
        t.get(b"a")
    with pytest.raises(GCThresholdError):
        t.scan(b"a", b"c")
    assert t.commit() == t.read_ts
    # A transaction beginning at that read_ts now cannot read anything either.
    with pytest.raises(GCThresholdError):
        kv.txn(t.read_ts).scan(b"", KEY_MAX)


def test_writing_txn_commit_after_gc_past_its_read_ts_fails(kv):
    commit(kv, a="1")
    t = kv.txn()
    assert t.get(b"a") == b"1"
    commit(kv, a=None)
    gc_past(kv, t.read_ts)
    t.put(b"copy", b"1")
    frontier = kv.engine.frontier()
    with pytest.raises(GCThresholdError):
        t.commit()
    assert kv.engine.frontier() == frontier
    assert kv.get(b"copy") is None


def test_gc_of_a_tombstone_cannot_hide_a_conflict_behind_a_protected_scan(kv):
    """T reads k, k is deleted, GC removes the tombstone: T must not commit."""
    commit(kv, k="v", m="1")
    t = kv.txn()
    kv.engine.protect(t.read_ts, [Span(b"m", b"n")], "backup")
    assert t.get(b"k") == b"v"
    assert t.scan(b"m", b"n") == [(b"m", b"1")]
    commit(kv, k=None)
    gc_past(kv, t.read_ts)
    assert kv.engine.versions(b"k", b"k\x00") == []  # the delete left no trace
    t.put(b"copy-of-k", b"v")
    with pytest.raises((TxnConflictError, GCThresholdError)):
        t.commit()
    assert kv.get(b"copy-of-k") is None


# -- a transaction sees its own writes: brute force -------------------------------------------

LETTERS = [bytes([c]) for c in b"abcdefgh"]
_examples = count()

op_st = st.tuples(st.sampled_from(LETTERS), st.one_of(st.none(), st.sampled_from([b"x", b"y"])))


def model_scan(view: dict[bytes, bytes | None], start: bytes, end: bytes, limit: int | None,
               reverse: bool) -> list[tuple[bytes, bytes]]:
    rows = [(k, v) for k, v in sorted(view.items(), reverse=reverse)
            if start <= k < end and v is not None]
    return rows if limit is None else rows[:max(limit, 0)]


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory):
    eng = SQLiteEngine(tmp_path_factory.mktemp("txn-model") / "store")
    yield DB(eng)
    eng.close()


def seed_example(db: DB, committed: list[list[tuple[bytes, bytes | None]]]
                 ) -> tuple[bytes, dict[bytes, bytes | None]]:
    """Commit the drawn history under a fresh prefix; return it and the view it leaves."""
    prefix = b"ex%06d/" % next(_examples)
    view: dict[bytes, bytes | None] = {}
    for batch in committed:
        txn = db.txn()
        for k, v in batch:
            if v is None:
                txn.delete(prefix + k)
            else:
                txn.put(prefix + k, v)
            view[k] = v
        txn.commit()
    return prefix, view


scan_st = st.tuples(
    st.sampled_from([b"", *LETTERS, b"i"]), st.sampled_from([b"", *LETTERS, b"i"]),
    st.one_of(st.none(), st.integers(-1, 9)), st.booleans())


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(committed=st.lists(st.lists(op_st, max_size=6), max_size=3),
       steps=st.lists(st.tuples(st.lists(op_st, max_size=4), st.lists(scan_st, max_size=3)),
                      min_size=1, max_size=4))
def test_txn_reads_its_own_writes(shared_db, committed, steps):
    db = shared_db
    prefix, view = seed_example(db, committed)
    stored = dict(view)
    txn = db.txn()
    hi = prefix[:-1] + b"0"
    for ops, scans in steps:
        for k, v in ops:
            if v is None:
                txn.delete(prefix + k)
            else:
                txn.put(prefix + k, v)
            view[k] = v
        for k in LETTERS:
            assert txn.get(prefix + k) == view.get(k), k
        assert txn.scan(prefix, hi) == [(prefix + k, v) for k, v in model_scan(
            view, b"", b"\xff", None, False)]
        for a, b, limit, reverse in scans:
            got = txn.scan(prefix + a, prefix + b, limit, reverse)
            want = model_scan(view, a, b, limit, reverse)
            assert got == [(prefix + k, v) for k, v in want], (a, b, limit, reverse)
    # Nothing of it is visible outside until commit; after commit exactly the view is.
    assert db.scan(prefix, hi) == [(prefix + k, v) for k, v in model_scan(
        stored, b"", b"\xff", None, False)]
    txn.commit()
    assert db.scan(prefix, hi) == [(prefix + k, v) for k, v in model_scan(
        view, b"", b"\xff", None, False)]


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(committed=st.lists(st.lists(op_st, min_size=1, max_size=8), min_size=1, max_size=3),
       scan=st.tuples(st.sampled_from(LETTERS), st.sampled_from([*LETTERS[1:], b"i"]),
                      st.integers(1, 5), st.booleans()),
       written=st.tuples(st.sampled_from([*LETTERS, b"i", b"bb", b"d\x00"]),
                         st.one_of(st.none(), st.just(b"w"))))
def test_scan_conflicts_exactly_with_what_it_read(shared_db, committed, scan, written):
    """Without own writes in the span, a limited scan reads [start, last] (or [last, end)
    scanning down) when it filled its limit, else the whole span; a concurrent write
    conflicts iff it is in there."""
    db = shared_db
    prefix, view = seed_example(db, committed)
    a, b, limit, reverse = scan
    if a >= b:
        a, b = b, a
    t = db.txn()
    rows = t.scan(prefix + a, prefix + b, limit, reverse)
    want = model_scan(view, a, b, limit, reverse)
    assert rows == [(prefix + k, v) for k, v in want]
    if len(want) < limit:
        lo, hi = a, b
    elif reverse:
        lo, hi = want[-1][0], b
    else:
        lo, hi = a, want[-1][0] + b"\x00"
    key, value = written
    other = db.txn()
    if value is None:
        other.delete(prefix + key)
    else:
        other.put(prefix + key, value)
    other.commit()
    t.put(b"zz-out", prefix)
    if lo <= key < hi:
        with pytest.raises(TxnConflictError):
            t.commit()
    else:
        t.commit()


def test_concurrent_txns_at_one_read_ts_serialize_in_commit_order(kv):
    """A reader that began before a commit keeps its snapshot; a later reader sees it."""
    commit(kv, a="1")
    reader = kv.txn()
    ts = commit(kv, a="2", b="2")
    assert reader.get(b"a") == b"1" and reader.scan(b"a", b"c") == [(b"a", b"1")]
    assert reader.commit() == reader.read_ts  # read-only: nothing to validate
    assert kv.txn().scan(b"a", b"c") == [(b"a", b"2"), (b"b", b"2")]
    assert kv.now() == ts
