"""RESTORE's revalidation: an index that does not match its table is rebuilt, in batches."""

from __future__ import annotations

import pytest

import tidemark
from tidemark.backup import restore
from tidemark.catalog import catalog
from tidemark.kv.keys import index_span
from tidemark.storage import engine as storage_engine


@pytest.mark.parametrize("damage", [None, "missing", "extra", "different"])
def test_a_damaged_index_is_rebuilt_and_a_sound_one_left_alone(tmp_path, monkeypatch, damage):
    monkeypatch.setattr(storage_engine, "SCAN_BATCH", 7)  # several batches
    with tidemark.connect(tmp_path / "s") as conn:
        conn.execute("CREATE TABLE t (id INT PRIMARY KEY, g INT, INDEX t_g (g))")
        conn.execute("INSERT INTO t VALUES " + ", ".join(f"({i}, {i % 4})" for i in range(50)))
        want = conn.execute("SHOW FINGERPRINTS FROM TABLE t").rows
        desc = conn.node.db.run(lambda txn: catalog.table_by_name(
            txn, catalog.database_by_name(txn, "defaultdb").id, "t"))
        index = next(i for i in desc.indexes if i.name == "t_g")
        engine = conn.node.engine
        start, end = index_span(desc.id, index.id)
        keys = [k for k, _ in engine.scan(start, end, engine.frontier())]
        if damage == "missing":
            engine.ingest([(k, None) for k in keys[::5]])
        elif damage == "extra":
            engine.ingest([(keys[3][:-1] + bytes([keys[3][-1] ^ 0x40]), b"")])
        elif damage == "different":
            engine.ingest([(keys[7], b"\x00")])
        before = engine.frontier()
        rebuilt = restore.RestoreResumer._rebuild_if_wrong(conn.node, desc, index)
        assert rebuilt is (damage is not None)
        if damage is None:
            assert engine.frontier() == before  # nothing written
        assert conn.execute("SHOW FINGERPRINTS FROM TABLE t").rows == want
        assert conn.execute("SELECT count(*) FROM t@t_g WHERE g = 1").rows == [(13,)]
