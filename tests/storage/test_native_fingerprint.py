"""The C fingerprint extension (tidemark/native) against the Python definition.

``tm_fingerprint`` and ``tm_fingerprint_delta`` must give exactly what
``tidemark.catalog.fingerprint`` gives, or every manifest fingerprint, doctor check and restore
comparison would be silently wrong; the engine's C paths must equal the Python fallback they
replace. ``make`` builds the extension; a test environment without it is a broken build.
"""

from __future__ import annotations

import hashlib

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidemark import native
from tidemark.catalog import fingerprint
from tidemark.storage import engine as storage_engine
from tidemark.storage.engine import Span, Window
from tidemark.storage.sqlite import (
    SQLiteEngine,
    export_entries,
    export_fingerprint,
    export_keys,
)

MASK = fingerprint.MASK


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    assert native.available(), (
        f"the C extension is not built ({native.LIBRARY}): run `python -m tidemark.native` "
        "(make does it)")


def _conn() -> apsw.Connection:
    conn = apsw.Connection(":memory:")
    assert native.load(conn)
    return conn


blobs = st.binary(max_size=300)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(blobs, st.none() | blobs), max_size=60), st.integers(0, 3))
def test_tm_fingerprint_equals_python(rows, plen):
    rows = [(k, v) for k, v in rows if len(k) >= plen]
    conn = _conn()
    conn.execute("CREATE TABLE t(k BLOB, v BLOB)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", rows)
    got = conn.execute("SELECT tm_fingerprint(k, v, ?) FROM t", (plen,)).fetchall()[0][0]
    want = fingerprint.fingerprint([(k, v) for k, v in rows if v is not None], plen)
    assert got & MASK == want


def test_entry_hash_is_blake2b_across_block_boundaries():
    """Messages of every length around BLAKE2b's 128-byte blocks (the padding and
    last-block cases a hand-written compression function gets wrong)."""
    conn = _conn()
    for n in [*range(0, 260), 1000, 4096]:
        value = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
        got = conn.execute("SELECT tm_fingerprint(?, ?, 0)", (b"", value)).fetchall()[0][0]
        msg = b"\x00\x00\x00\x00" + value
        want = int.from_bytes(hashlib.blake2b(msg, digest_size=8).digest(), "big")
        assert got & MASK == want, n


def test_a_key_shorter_than_its_prefix_is_an_error():
    with pytest.raises(apsw.SQLError, match="shorter than its prefix"):
        _conn().execute("SELECT tm_fingerprint(x'01', x'02', 2)").fetchall()


versions = st.lists(st.tuples(st.binary(min_size=1, max_size=4), st.integers(1, 20),
                              st.none() | st.binary(max_size=40)), max_size=50)


@settings(max_examples=150, deadline=None)
@given(versions, st.integers(0, 21))
def test_tm_fingerprint_delta_equals_python(history, before_ts):
    """Each key's entry after (its newest version) minus before (newest at or below
    before_ts), summed: what fingerprint.update gives for the keys that changed."""
    by_key: dict[bytes, dict[int, bytes | None]] = {}
    for key, ts, value in history:
        by_key.setdefault(key, {})[ts] = value
    rows = sorted((k, ts, v) for k, vs in by_key.items() for ts, v in vs.items())
    conn = _conn()
    conn.execute("CREATE TABLE t(k BLOB, ts INT, v BLOB)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    got = conn.execute("SELECT tm_fingerprint_delta(k, ts, v, ?, 1) FROM "
                       "(SELECT * FROM t ORDER BY k, ts)", (before_ts,)).fetchall()[0][0]
    removed, added = [], []
    for key, vs in by_key.items():
        before = [vs[t] for t in sorted(vs) if t <= before_ts]
        after = vs[max(vs)]
        if before and before[-1] is not None:
            removed.append((key, before[-1]))
        if after is not None:
            added.append((key, after))
    assert got & MASK == fingerprint.update(0, 1, removed, added)


def test_tm_fingerprint_delta_refuses_rows_out_of_order():
    conn = _conn()
    conn.execute("CREATE TABLE t(k BLOB, ts INT, v BLOB)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)",
                     [(b"b", 1, b"x"), (b"a", 1, b"y")])
    with pytest.raises(apsw.SQLError, match="not ordered"):
        conn.execute("SELECT tm_fingerprint_delta(k, ts, v, 0, 0) FROM t").fetchall()


def _python_paths(engine: SQLiteEngine, path: str, span: Span, before: int, after: int,
                  plen: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    monkeypatch.setenv("TIDEMARK_NO_NATIVE", "1")
    try:
        assert export_fingerprint(path, plen) is None
        assert engine.fingerprint_change(span, before, after, after, before, plen) is None
        full = fingerprint.fingerprint(export_entries(path), plen)
        keys = export_keys(path)
        old = engine.get_many_checked(keys, before)
        new = engine.get_many_checked(keys, after)
        delta = fingerprint.update(0, plen, [(k, v) for k, v in old.items() if v is not None],
                                   [(k, v) for k, v in new.items() if v is not None])
        return full, delta
    finally:
        monkeypatch.delenv("TIDEMARK_NO_NATIVE")


def test_span_fingerprint_in_c_equals_python_at_every_time(tmp_path, monkeypatch):
    """engine.fingerprint (C, streamed) against batches of scan (Python): several versions
    per key, tombstones, keys outside the span, reads at past times; batches smaller than
    the span in the fallback."""
    engine = SQLiteEngine(tmp_path / "s", create=True)
    try:
        prefix = b"\x89\x8a"
        span = Span(prefix, b"\x89\x8b")
        key = [prefix + i.to_bytes(2, "big") for i in range(500)]
        times = [engine.commit([(k, b"v0-%d" % i) for i, k in enumerate(key)] +
                               [(b"\x89\x8b", b"outside")], engine.frontier())]
        times.append(engine.commit([(key[i], None) for i in range(0, 500, 4)],
                                   engine.frontier()))
        times.append(engine.commit([(key[i], b"v2") for i in range(0, 500, 6)],
                                   engine.frontier()))
        engine.close_timestamp(times[-1])
        monkeypatch.setattr(storage_engine, "SCAN_BATCH", 37)
        for ts in (times[0] - 1, *times):
            want = fingerprint.fingerprint(engine.scan(span.start, span.end, ts), len(prefix))
            assert engine.fingerprint(span, ts, len(prefix)) == want
            assert fingerprint.span_fingerprint(engine, span, ts, len(prefix)) == want
            monkeypatch.setenv("TIDEMARK_NO_NATIVE", "1")
            assert engine.fingerprint(span, ts, len(prefix)) is None
            assert fingerprint.span_fingerprint(engine, span, ts, len(prefix)) == want
            monkeypatch.delenv("TIDEMARK_NO_NATIVE")
    finally:
        engine.close()


@pytest.mark.parametrize("all_revisions", [False, True])
def test_engine_c_paths_equal_the_python_fallback(tmp_path, monkeypatch, all_revisions):
    """export_fingerprint and fingerprint_change (C) against export_entries and
    get_many_checked over the keys of an arrival-window export (Python), on a real store: inserts, updates, deletes, re-inserts, and
    a bulk ingest at an old timestamp arriving late."""
    engine = SQLiteEngine(tmp_path / "s", create=True)
    try:
        prefix = b"\x89\x8a"
        span = Span(prefix, b"\x89\x8b")
        key = [prefix + i.to_bytes(2, "big") for i in range(300)]
        engine.commit([(k, b"v0-%d" % i) for i, k in enumerate(key)], engine.frontier())
        before = engine.commit([(key[i], b"v1") for i in range(0, 300, 3)], engine.frontier())
        engine.commit([(key[i], None) for i in range(0, 300, 5)], engine.frontier())
        engine.commit([(key[i], b"v2-%d" % i) for i in range(0, 300, 10)], engine.frontier())
        engine.ingest([(key[i], b"late") for i in range(1, 300, 7)], ts=before - 1)
        after = engine.commit([(key[7], b"last")], engine.frontier())
        engine.close_timestamp(after)

        full = str(tmp_path / "full.sqlite")
        engine.export(full, span, 0, after, all_revisions=all_revisions)
        window = str(tmp_path / "window.sqlite")
        engine.export(window, span, before, after, window=Window.ARRIVAL,
                      all_revisions=all_revisions)
        c_full = export_fingerprint(full, len(prefix))
        c_delta = engine.fingerprint_change(span, before, after, after, before, len(prefix))
        py_full, _ = _python_paths(engine, full, span, before, after, len(prefix), monkeypatch)
        _, py_delta = _python_paths(engine, window, span, before, after, len(prefix),
                                    monkeypatch)
        assert c_full == py_full
        assert c_full == fingerprint.fingerprint(engine.scan(span.start, span.end, after),
                                                 len(prefix))
        assert c_delta == py_delta
        assert c_delta != 0
    finally:
        engine.close()


def _manifest_fingerprints(coll) -> list[dict]:
    from tidemark.backup import destination
    from tidemark.backup.chain import load_chain
    from tidemark.cloud import open_storage
    storage = open_storage(f"file://{coll}")
    try:
        chain = load_chain(storage, destination.read_latest(storage), None)
        return [layer.manifest.fingerprints for layer in chain.layers]
    finally:
        storage.close()


@pytest.mark.parametrize("revision_history", [False, True])
def test_backups_record_the_same_fingerprints_with_and_without_the_extension(
        tmp_path, monkeypatch, revision_history):
    """A chain backed up with the C extension and the same chain (same AS OF times) backed
    up with the Python fallback record identical fingerprints, equal to SHOW FINGERPRINTS."""
    import tidemark
    conn = tidemark.connect(tmp_path / "s")
    try:
        conn.execute("CREATE TABLE t (id INT PRIMARY KEY, v STRING, n INT, INDEX t_n (n))")
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 70")
        conn.execute("INSERT INTO t VALUES " + ", ".join(
            f"({i}, 'v{i}', {i % 13})" for i in range(400)))
        t1 = conn.execute("SELECT cluster_logical_timestamp()").rows[0][0]
        conn.execute("UPDATE t SET n = n + 1 WHERE id % 7 = 0")
        conn.execute("DELETE FROM t WHERE id % 11 = 0")
        t2 = conn.execute("SELECT cluster_logical_timestamp()").rows[0][0]
        opts = " WITH revision_history" if revision_history else ""
        got = {}
        for mode in ("c", "python"):
            if mode == "python":
                monkeypatch.setenv("TIDEMARK_NO_NATIVE", "1")
            uri = f"file://{tmp_path / mode}"
            conn.execute(f"BACKUP TABLE t INTO '{uri}' AS OF SYSTEM TIME {t1}{opts}")
            conn.execute(f"BACKUP TABLE t INTO LATEST IN '{uri}' AS OF SYSTEM TIME {t2}{opts}")
            got[mode] = _manifest_fingerprints(tmp_path / mode)
        assert got["c"] == got["python"]
        want = [fp for _, fp in conn.execute(
            f"SHOW FINGERPRINTS FROM TABLE t AS OF SYSTEM TIME {t2}").rows]
        assert sorted(got["c"][-1][next(iter(got["c"][-1]))].values()) == sorted(want)
    finally:
        conn.close()
