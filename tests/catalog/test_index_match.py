"""index_matches_primary: a secondary index against what its table's rows derive, streamed."""

from __future__ import annotations

import pytest

import tidemark
from tidemark.catalog import catalog, entries
from tidemark.kv.keys import index_span
from tidemark.storage import engine as storage_engine


@pytest.fixture
def table(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_engine, "SCAN_BATCH", 7)  # several batches of the primary
    conn = tidemark.connect(tmp_path / "s")
    conn.execute("CREATE TABLE t (id INT PRIMARY KEY, g INT, s STRING, INDEX t_g (g) "
                 "STORING (s))")
    conn.execute("INSERT INTO t VALUES " + ", ".join(f"({i}, {i % 5}, 's{i}')"
                                                      for i in range(40)))
    desc = conn.node.db.run(lambda txn: catalog.table_by_name(
        txn, catalog.database_by_name(txn, "defaultdb").id, "t"))
    yield conn, desc, next(i for i in desc.indexes if i.name == "t_g")
    conn.close()


def test_a_complete_index_matches(table):
    conn, desc, index = table
    assert entries.index_matches_primary(conn.node.engine, desc, index, conn.node.db.now())


@pytest.mark.parametrize("damage", ["missing", "extra", "different"])
def test_a_damaged_index_does_not_match(table, damage):
    conn, desc, index = table
    engine = conn.node.engine
    start, end = index_span(desc.id, index.id)
    key, value = engine.scan(start, end, engine.frontier(), limit=1)[0]
    before = engine.frontier()
    if damage == "missing":
        engine.ingest([(key, None)])
    elif damage == "extra":
        engine.ingest([(key[:-1] + bytes([key[-1] ^ 0x40]), value)])
    else:
        engine.ingest([(key, value + b"\x00")])
    assert not entries.index_matches_primary(engine, desc, index, engine.frontier())
    assert entries.index_matches_primary(engine, desc, index, before)
