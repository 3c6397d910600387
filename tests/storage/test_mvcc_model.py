"""MVCC reads, ingest, GC, protected timestamps and exports against an in-memory model.

The model is ``key -> [Version(ts, arrival, value-or-None)]`` (sorted by ts) and mirrors what
the design says the SQLite engine stores: transactions write at their commit timestamp
(``arrival == ts``), ingest writes at a historical timestamp with the batch's commit timestamp
as arrival and keeps a version already at the same ``(key, ts)``, and GC keeps, per key, the
newest version at or below the effective threshold (unless it is a tombstone) and every newer
version. After every step the engine's stored versions must equal the model's exactly; reads
at readable timestamps must equal model reads; reads below the GC threshold (outside
protection) and above the frontier must fail with the documented errors.

Run more examples with ``TIDEMARK_PROPERTY_EXAMPLES=<n>`` (and ``TIDEMARK_PROPERTY_STEPS``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import apsw
import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tidemark.clock import wall_now
from tidemark.errors import FutureReadError, GCThresholdError, ProtectionError
from tidemark.kv.db import DB
from tidemark.storage.engine import KEY_MAX, Span, Window
from tidemark.storage.sqlite import SQLiteEngine

EXAMPLES = int(os.environ.get("TIDEMARK_PROPERTY_EXAMPLES", "60"))
STEPS = int(os.environ.get("TIDEMARK_PROPERTY_STEPS", "50"))

KEYS = [b"a", b"b", b"c", b"d", b"e", b"f"]
# Span bounds: every key, plus the empty key and KEY_MAX, so spans can be open on either side.
BOUNDS = [b"", *KEYS, KEY_MAX]

keys_st = st.sampled_from(KEYS)


@dataclass(frozen=True)
class Version:
    ts: int
    arrival: int
    value: bytes | None


@dataclass(frozen=True)
class Record:
    id: str
    ts: int
    lo: bytes
    hi: bytes

    def contains(self, key: bytes) -> bool:
        return self.lo <= key < self.hi


def read_export(path: str) -> list[tuple[bytes, int, bytes | None]]:
    conn = apsw.Connection(path, flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("SELECT key, ts, value FROM versions ORDER BY key, ts").fetchall()
    finally:
        conn.close()


class MVCCModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="tidemark-mvcc-model-")
        self.engine = SQLiteEngine(Path(self.dir) / "store")
        self.db = DB(self.engine)
        self.model: dict[bytes, list[Version]] = {k: [] for k in KEYS}
        self.frontier = self.engine.frontier()
        self.threshold = 0
        self.records: dict[str, Record] = {}  # in creation order: ids are random
        self.stamps: list[int] = [self.frontier]  # every commit timestamp so far
        self.n_values = 0
        self.n_exports = 0

    def teardown(self) -> None:
        event(f"stamps {len(self.stamps) // 10 * 10}+")
        self.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- model helpers ---------------------------------------------------------------------

    def new_value(self) -> bytes:
        self.n_values += 1
        return b"v%d" % self.n_values

    def model_get(self, key: bytes, ts: int) -> bytes | None:
        visible = [v for v in self.model[key] if v.ts <= ts]
        return visible[-1].value if visible else None

    def model_scan(self, lo: bytes, hi: bytes, ts: int, limit: int | None,
                   reverse: bool) -> list[tuple[bytes, bytes]]:
        rows = [(k, self.model_get(k, ts)) for k in sorted(self.model, reverse=reverse)
                if lo <= k < hi]
        live = [(k, v) for k, v in rows if v is not None]
        return live if limit is None else live[:limit]

    def protected_at(self, key: bytes, ts: int) -> bool:
        return any(r.contains(key) and r.ts <= ts for r in self.records.values())

    def readable(self, lo: bytes, hi: bytes, ts: int) -> bool:
        """May the span ``[lo, hi)`` be read at ``ts``?

        Every record bound is one of BOUNDS, so ``[lo, hi)`` is covered iff each elementary
        interval between consecutive bounds inside it is, and each is covered iff its first
        key is in some record span.
        """
        if ts > self.frontier:
            return False
        if ts >= self.threshold:
            return True
        points = sorted({lo, *(b for b in BOUNDS if lo <= b < hi)})
        return all(self.protected_at(p, ts) for p in points)

    def ts_candidates(self) -> list[int]:
        """Timestamps worth reading at: every commit timestamp, its neighbours, thresholds."""
        out = {self.threshold, self.frontier, self.frontier + 1, 0}
        for s in self.stamps:
            out.update((s - 1, s, s + 1))
        out.update(r.ts for r in self.records.values())
        return sorted(t for t in out if t >= 0)

    def draw_ts(self, data: st.DataObject) -> int:
        """A read timestamp: any candidate, or often one only a protection makes readable."""
        candidates = self.ts_candidates()
        if self.records and data.draw(st.booleans(), label="aim_at_protection"):
            rec = data.draw(st.sampled_from(list(self.records.values())),
                            label="record")
            inside = [t for t in candidates if rec.ts <= t < self.threshold]
            if inside:
                return data.draw(st.sampled_from(inside), label="ts")
        return data.draw(st.sampled_from(candidates), label="ts")

    def draw_span(self, data: st.DataObject) -> tuple[bytes, bytes]:
        """A non-empty span with bounds among BOUNDS, often inside a protected span."""
        if self.records and data.draw(st.booleans(), label="inside_protection"):
            rec = data.draw(st.sampled_from(list(self.records.values())),
                            label="record")
            bounds = [b for b in BOUNDS if rec.lo <= b <= rec.hi]
        else:
            bounds = BOUNDS
        lo, hi = sorted(data.draw(st.lists(st.sampled_from(bounds), min_size=2, max_size=2,
                                           unique=True), label="span"))
        return lo, hi

    def add_version(self, key: bytes, version: Version) -> bool:
        """Insert unless a version is already at ``(key, ts)`` (INSERT OR IGNORE)."""
        versions = self.model[key]
        if any(v.ts == version.ts for v in versions):
            return False
        versions.append(version)
        versions.sort(key=lambda v: v.ts)
        return True

    def advance(self, commit_ts: int) -> None:
        assert commit_ts > self.frontier, "a commit timestamp must be above the old frontier"
        self.frontier = commit_ts
        self.stamps.append(commit_ts)

    # -- operations ------------------------------------------------------------------------

    @initialize(data=st.data())
    def seed(self, data: st.DataObject) -> None:
        """Start with a few committed versions so early steps have history to work on."""
        for key in data.draw(st.lists(keys_st, min_size=1, max_size=4, unique=True)):
            self.txn_commit_one(key, self.new_value())

    def txn_commit_one(self, key: bytes, value: bytes | None) -> None:
        txn = self.db.txn()
        if value is None:
            txn.delete(key)
        else:
            txn.put(key, value)
        ts = txn.commit()
        self.advance(ts)
        self.model[key].append(Version(ts, ts, value))

    @rule(data=st.data())
    def transaction(self, data: st.DataObject) -> None:
        """A transaction reading and writing a few keys, committed through DB.txn or DB.run."""
        ops = data.draw(st.lists(st.tuples(keys_st, st.booleans(), st.booleans()),
                                 min_size=1, max_size=4), label="ops")
        via_run = data.draw(st.booleans(), label="via_run")
        values = [None if delete else self.new_value() for _key, delete, _read in ops]
        before = self.frontier
        seen: list[tuple[bytes, bytes | None, bytes | None]] = []

        def body(txn):  # type: ignore[no-untyped-def]
            seen.clear()
            buffered: dict[bytes, bytes | None] = {}
            assert txn.read_ts == before
            for (key, _delete, read), value in zip(ops, values, strict=True):
                if read:
                    expected = (buffered[key] if key in buffered
                                else self.model_get(key, txn.read_ts))
                    seen.append((key, txn.get(key), expected))
                if value is None:
                    txn.delete(key)
                else:
                    txn.put(key, value)
                buffered[key] = value
            return buffered

        if via_run:
            final = self.db.run(body)
            ts = self.engine.frontier()
        else:
            txn = self.db.txn()
            final = body(txn)
            ts = txn.commit()
            assert txn.commit_ts == ts
        for key, got, expected in seen:
            assert got == expected, (key, got, expected)
        self.advance(ts)
        assert self.engine.frontier() == ts
        for key, value in final.items():
            assert self.add_version(key, Version(ts, ts, value))

    @rule(data=st.data())
    def ingest(self, data: st.DataObject) -> None:
        """A bulk ingest at a historical timestamp (or its own), as one commit."""
        rows = data.draw(st.lists(
            st.tuples(keys_st, st.one_of(st.none(), st.just(b""))), min_size=1, max_size=5),
            label="rows")
        rows = [(k, None if v is None else self.new_value()) for k, v in rows]
        at_or_above = [s for s in self.stamps if s >= self.threshold] + [self.threshold]
        choice = data.draw(st.sampled_from(["historical", "own", "below_gc", "future"]),
                           label="ts_kind")
        if choice == "below_gc" and self.threshold == 0:
            choice = "own"
        if choice == "historical":
            ts: int | None = data.draw(st.sampled_from(sorted(set(at_or_above))), label="ts")
        elif choice == "own":
            ts = None
        elif choice == "below_gc":
            ts = self.threshold - 1
        else:
            ts = self.frontier + 10**15  # far past any commit timestamp the clock will give
        if choice == "below_gc":
            # Allowed only where one protection at or below ts covers every written key
            # (the engine checks the rows' bounds against each record's span).
            lo, hi = min(k for k, _ in rows), max(k for k, _ in rows) + b"\x00"
            if not any(r.ts <= ts and r.lo <= lo and hi <= r.hi for r in self.records.values()):
                with pytest.raises(GCThresholdError):
                    self.engine.ingest(iter(rows), ts=ts)
                return
            event("ingest below the GC threshold under a protection")
        if choice == "future":
            with pytest.raises(FutureReadError):
                self.engine.ingest(iter(rows), ts=ts)
            return
        commit_ts = self.engine.ingest(iter(rows), ts=ts)
        self.advance(commit_ts)
        assert self.engine.frontier() == commit_ts
        write_ts = commit_ts if ts is None else ts
        assert write_ts <= commit_ts
        for key, value in rows:
            if not self.add_version(key, Version(write_ts, commit_ts, value)):
                event("ingest kept an existing version")

    @rule(data=st.data())
    def gc(self, data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(["past", "past", "future"]), label="gc_kind")
        if kind == "past":
            thr = data.draw(st.sampled_from([*self.stamps, self.threshold]), label="thr")
        else:
            thr = self.frontier + 10**12
        effective = max(self.threshold, min(thr, self.frontier))
        removed = self.model_gc(effective)
        stats = self.engine.gc(thr)
        assert stats.threshold == effective
        assert stats.removed == removed
        event(f"gc removed {'some' if removed else 'none'}")
        assert self.engine.gc_threshold() == effective

    def model_gc(self, effective: int) -> int:
        candidates = self.ts_candidates()
        before = {k: [self.model_get(k, t) for t in candidates] for k in KEYS}
        old_threshold = self.threshold
        removed = 0
        for key, versions in self.model.items():
            thr = min([effective, *(r.ts for r in self.records.values() if r.contains(key))])
            below = [v for v in versions if v.ts <= thr]
            if not below:
                continue
            newest = below[-1]
            drop = below[:-1] + ([newest] if newest.value is None else [])
            removed += len(drop)
            self.model[key] = [v for v in versions if v not in drop]
        self.threshold = effective
        # Self-check of the model: GC must not change any read it still allows.
        for key in KEYS:
            for t, old in zip(candidates, before[key], strict=True):
                if t <= self.frontier and (t >= effective or self.protected_at(key, t)):
                    assert t >= old_threshold or self.protected_at(key, t)
                    assert self.model_get(key, t) == old, (key, t)
        return removed

    @rule(data=st.data())
    def protect(self, data: st.DataObject) -> None:
        lo, hi = sorted(data.draw(st.lists(st.sampled_from(BOUNDS), min_size=2, max_size=2,
                                           unique=True), label="span"))
        if data.draw(st.booleans(), label="at_or_above_threshold"):
            valid = [t for t in self.ts_candidates() if self.threshold <= t <= self.frontier]
            ts = data.draw(st.sampled_from(valid), label="ts")
        else:
            ts = min(data.draw(st.sampled_from(self.ts_candidates()), label="ts"),
                     self.frontier)
        if ts < self.threshold and not self.readable(lo, hi, ts):
            with pytest.raises(ProtectionError):
                self.engine.protect(ts, [Span(lo, hi)], "model")
            return
        rec = self.engine.protect(ts, [Span(lo, hi)], "model")
        if ts < self.threshold:
            event("protect below the GC threshold under an older record")
        assert rec.ts == ts and rec.spans == (Span(lo, hi),)
        self.records[rec.id] = Record(rec.id, ts, lo, hi)
        assert {r.id for r in self.engine.protected_records()} == set(self.records)

    @precondition(lambda self: bool(self.records))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(list(self.records)), label="record")
        self.engine.release(rid)
        del self.records[rid]
        with pytest.raises(ProtectionError):
            self.engine.release(rid)
        assert {r.id for r in self.engine.protected_records()} == set(self.records)

    # -- checks ----------------------------------------------------------------------------

    @invariant()
    def stored_versions_equal_model(self) -> None:
        expected = [(k, v.ts, v.arrival, v.value) for k in KEYS for v in self.model[k]]
        assert self.engine.versions(b"", KEY_MAX) == expected
        assert self.engine.frontier() == self.frontier
        assert self.engine.gc_threshold() == self.threshold
        for k in KEYS:
            for v in self.model[k]:
                assert v.ts <= v.arrival <= self.frontier

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        lo, _hi = self.draw_span(data)
        key = lo if lo in KEYS else data.draw(keys_st, label="key")
        ts = self.draw_ts(data)
        expected = self.model_get(key, ts)
        if ts > self.frontier:
            # Above the frontier but not after the wall clock: the read closes the
            # timestamps up to ts (nothing can commit there any more) and succeeds.
            assert self.db.get(key, ts) == expected
            assert self.engine.frontier() == ts
            self.frontier = ts
        elif self.readable(key, key + b"\x00", ts):
            if ts < self.threshold:
                event("protected get below the GC threshold")
            assert self.engine.get(key, ts) == expected
            assert self.db.get(key, ts) == expected
        else:
            with pytest.raises(GCThresholdError):
                self.db.get(key, ts)
        assert self.db.get(key) == self.model_get(key, self.frontier)

    @rule(data=st.data())
    def scan(self, data: st.DataObject) -> None:
        lo, hi = self.draw_span(data)
        ts = self.draw_ts(data)
        limit = data.draw(st.one_of(st.none(), st.integers(0, len(KEYS) + 1)), label="limit")
        reverse = data.draw(st.booleans(), label="reverse")
        expected = self.model_scan(lo, hi, ts, limit, reverse)
        if ts > self.frontier:  # closes the timestamps up to ts, as for get
            assert self.db.scan(lo, hi, ts, limit, reverse) == expected
            assert self.engine.frontier() == ts
            self.frontier = ts
            return
        if self.readable(lo, hi, ts):
            if ts < self.threshold:
                event("protected scan below the GC threshold")
            assert self.engine.scan(lo, hi, ts, limit, reverse) == expected
            assert self.db.scan(lo, hi, ts, limit, reverse) == expected
        else:
            with pytest.raises(GCThresholdError):
                self.db.scan(lo, hi, ts, limit, reverse)

    @rule(data=st.data())
    def future_reads_are_refused(self, data: st.DataObject) -> None:
        ahead = data.draw(st.sampled_from([10**10, 10**12]), label="ahead")
        future = wall_now() + ahead  # after the wall clock: truly in the future
        with pytest.raises(FutureReadError):
            self.db.get(KEYS[0], future)
        with pytest.raises(FutureReadError):
            self.db.scan(b"", KEY_MAX, future)
        with pytest.raises(FutureReadError):
            self.db.txn(future)
        assert self.engine.frontier() == self.frontier

    @rule(data=st.data())
    def export(self, data: st.DataObject) -> None:
        lo, hi = self.draw_span(data)
        window = data.draw(st.sampled_from([Window.ARRIVAL, Window.ARRIVAL, Window.MVCC]),
                           label="window")
        all_revisions = data.draw(st.sampled_from([True, True, False]), label="all_revisions")
        stamps = sorted({0, *self.stamps, *(s - 1 for s in self.stamps), self.threshold})
        start, end = sorted(data.draw(st.lists(st.sampled_from(stamps), min_size=2,
                                               max_size=2), label="window_ts"))
        self.n_exports += 1
        path = os.path.join(self.dir, f"export-{self.n_exports}.sqlite")
        span = Span(lo, hi)
        ok = self.readable(lo, hi, end) and (start <= 0 or self.readable(lo, hi, start))
        if not ok:
            with pytest.raises(GCThresholdError):
                self.engine.export(path, span, start, end, window=window,
                                   all_revisions=all_revisions)
            assert not os.path.exists(path)
            return
        stats = self.engine.export(path, span, start, end, window=window,
                                   all_revisions=all_revisions)
        expected = self.model_export(lo, hi, start, end, window, all_revisions)
        assert read_export(path) == expected
        event(f"export {window.value} {'non-empty' if expected else 'empty'}")
        assert stats.rows == len(expected)

    def model_export(self, lo: bytes, hi: bytes, start: int, end: int, window: Window,
                     all_revisions: bool) -> list[tuple[bytes, int, bytes | None]]:
        out: list[tuple[bytes, int, bytes | None]] = []
        for key in KEYS:
            if not lo <= key < hi:
                continue
            versions = self.model[key]
            if window is Window.ARRIVAL:
                chosen = [v for v in versions if start < v.arrival <= end and v.ts <= end]
                if not all_revisions:
                    chosen = chosen[-1:]
            elif all_revisions:
                chosen = [v for v in versions if start < v.ts <= end]
            else:
                visible = [v for v in versions if v.ts <= end][-1:]
                chosen = [v for v in visible
                          if v.ts > start and (start > 0 or v.value is not None)]
            out.extend((key, v.ts, v.value) for v in chosen)
        return out


MVCCModel.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None)
TestMVCCModel = MVCCModel.TestCase


# -- focused scenarios the model exercises only by chance ---------------------------------


@pytest.fixture
def model_engine(tmp_path):
    eng = SQLiteEngine(tmp_path / "store")
    yield eng
    eng.close()


def _commit(engine: SQLiteEngine, **kv: str | None) -> int:
    db = DB(engine)
    txn = db.txn()
    for k, v in kv.items():
        if v is None:
            txn.delete(k.encode())
        else:
            txn.put(k.encode(), v.encode())
    return txn.commit()


def test_arrival_export_includes_historical_ingest_after_previous_end(model_engine, tmp_path):
    """An ingest landing after t1 at a timestamp before t1 is in the arrival window (t1, t2]."""
    t0 = _commit(model_engine, a="1")
    t1 = _commit(model_engine, b="1")
    arrival = model_engine.ingest([(b"c", b"old"), (b"a", b"ignored")], ts=t0)
    t2 = _commit(model_engine, d="1")
    assert model_engine.versions(b"a", b"b") == [(b"a", t0, t0, b"1")]  # kept, not replaced
    mvcc = str(tmp_path / "mvcc.sqlite")
    arr = str(tmp_path / "arrival.sqlite")
    model_engine.export(mvcc, Span(b"", KEY_MAX), t1, t2, all_revisions=True)
    model_engine.export(arr, Span(b"", KEY_MAX), t1, t2, window=Window.ARRIVAL,
                        all_revisions=True)
    assert read_export(mvcc) == [(b"d", t2, b"1")]  # the MVCC window misses the ingest
    assert read_export(arr) == [(b"c", t0, b"old"), (b"d", t2, b"1")]
    assert t1 < arrival <= t2


def test_arrival_export_after_gc_past_start_is_refused(model_engine, tmp_path):
    """GC removing a tombstone of the window would make an incremental miss a delete."""
    t1 = _commit(model_engine, k="v")
    _commit(model_engine, k=None)
    t3 = _commit(model_engine, z="z")
    model_engine.gc(t3)
    assert model_engine.versions(b"k", b"l") == []
    for all_revisions in (False, True):
        path = str(tmp_path / f"inc-{all_revisions}.sqlite")
        with pytest.raises(GCThresholdError):
            model_engine.export(path, Span(b"", KEY_MAX), t1, t3, window=Window.ARRIVAL,
                                all_revisions=all_revisions)
        assert not os.path.exists(path)


def test_gc_in_protected_span_keeps_history_from_record_ts(model_engine):
    t1 = _commit(model_engine, a="1", m="1")
    t2 = _commit(model_engine, a="2", m="2")
    rec = model_engine.protect(t1, [Span(b"m", b"n")], "test")
    t3 = _commit(model_engine, a=None, m=None)
    db = DB(model_engine)
    assert model_engine.gc(t3).threshold == t3
    assert model_engine.versions(b"a", b"b") == []
    assert [v[1] for v in model_engine.versions(b"m", b"n")] == [t1, t2, t3]
    assert db.get(b"m", t1) == b"1"
    assert db.get(b"m", t2) == b"2"
    assert db.scan(b"m", b"n", t2) == [(b"m", b"2")]
    with pytest.raises(GCThresholdError):
        db.get(b"a", t2)
    with pytest.raises(GCThresholdError):
        db.scan(b"a", b"n", t2)  # half protected is not readable
    with pytest.raises(GCThresholdError):
        db.get(b"m", t1 - 1)  # below the record's timestamp
    model_engine.release(rec.id)
    with pytest.raises(GCThresholdError):
        db.get(b"m", t2)
    model_engine.gc(t3)
    assert model_engine.versions(b"m", b"n") == []
