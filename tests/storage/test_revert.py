"""revert_range, ingest_counted and arrivals_at: undoing a bulk ingest at a historical ts."""

from __future__ import annotations

import pytest

from tidemark.storage.engine import Span


def live(engine, ts=None):
    return dict(engine.scan(b"", b"\xff", engine.frontier() if ts is None else ts))


@pytest.fixture
def ingested(engine):
    """Keys a..d written normally, then an ingest at S (between them and now) that
    overwrites b, re-creates the deleted c, adds e, and leaves a and d alone."""
    engine.commit([(b"a", b"a1"), (b"b", b"b1"), (b"c", b"c1"), (b"d", b"d1")], 0)
    engine.commit([(b"c", None)], engine.frontier())  # c deleted before S
    s = engine.frontier() + 1
    engine.commit([(b"d", b"d2")], engine.frontier())  # ts > S: not the ingest's
    before = live(engine)
    engine.ingest([(b"b", b"b-imp"), (b"c", b"c-imp"), (b"e", b"e-imp")], ts=s)
    return s, before


def test_revert_restores_values_before_s_and_tombstones_new_keys(engine, ingested):
    s, before = ingested
    assert live(engine) == {**before, b"b": b"b-imp", b"c": b"c-imp", b"e": b"e-imp"}
    ts, count = engine.revert_range(b"", b"\xff", s, since_arrival=s)
    assert count == 3
    assert live(engine) == before == {b"a": b"a1", b"b": b"b1", b"d": b"d2"}
    # MVCC: the ingest stays readable in history; the revert is new versions at ts.
    assert live(engine, ts - 1)[b"e"] == b"e-imp"
    assert {(k, v) for k, t, a, v in engine.versions(b"", b"\xff") if t == ts} == {
        (b"b", b"b1"), (b"c", None), (b"e", None)}


def test_revert_is_idempotent_and_limited_to_its_span_and_arrivals(engine, ingested):
    s, before = ingested
    _, count = engine.revert_range(b"c", b"d", s, since_arrival=s)
    assert count == 1  # only c
    assert live(engine)[b"b"] == b"b-imp"
    _, again = engine.revert_range(b"c", b"d", s, since_arrival=s)
    assert again == 0
    # Versions at s that arrived at or before since_arrival are not the ingest's.
    _, none = engine.revert_range(b"", b"\xff", s, since_arrival=engine.frontier())
    assert none == 0
    engine.revert_range(b"", b"\xff", s, since_arrival=s)
    assert live(engine) == before


def test_revert_leaves_transactional_writes_at_s_alone(engine):
    # A transaction's version has arrival == ts: with since_arrival = s it is not an ingest.
    engine.commit([(b"k", b"v")], 0)
    s = engine.frontier()
    _, count = engine.revert_range(b"", b"\xff", s, since_arrival=s)
    assert count == 0 and live(engine) == {b"k": b"v"}


def test_ingest_counted_and_arrivals_at(engine):
    s = engine.frontier()
    first, written = engine.ingest_counted([(b"x", b"1"), (b"y", b"2")], s)
    assert written == 2
    second, written = engine.ingest_counted([(b"x", b"other"), (b"z", b"3")], s)
    assert written == 1 and second > first
    assert engine.get(b"x", s) == b"1"  # kept as it was
    assert engine.arrivals_at([b"x", b"y", b"z", b"nope"], s) == {
        b"x": first, b"y": first, b"z": second}
    assert engine.arrivals_at([], s) == {}


def test_revert_honours_protection_of_the_history_below_s(engine):
    engine.commit([(b"k", b"old")], 0)
    s = engine.frontier() + 1
    engine.protect(s - 1, [Span(b"", b"\xff")], owner="test")
    engine.ingest([(b"k", b"new")], ts=s)
    engine.gc(engine.frontier())  # the old version is shadowed, but protected
    engine.revert_range(b"", b"\xff", s, s)
    assert live(engine) == {b"k": b"old"}
