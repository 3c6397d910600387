"""Writes maintain a secondary index according to its state, and online CREATE INDEX."""

from __future__ import annotations

import pytest

import tidemark
from tidemark.catalog.descriptors import IndexState
from tidemark.errors import SQLError
from tidemark.kv.keys import index_prefix, prefix_end
from tidemark.schemachange import index as index_mod
from tidemark.sql import ddl
from tidemark.sql.ast import TableName
from tidemark.sql.parser import parse_one


@pytest.fixture
def conn(tmp_path):
    c = tidemark.connect(tmp_path / "s")
    c.execute("CREATE TABLE t (id INT PRIMARY KEY, v STRING)")
    yield c
    c.close()


def entries(conn, index_id: int) -> int:
    table = conn.node.db.run(lambda txn: conn.session.table(txn, TableName("t")))
    p = index_prefix(table.id, index_id)
    return len(conn.node.db.scan(p, prefix_end(p)))


def add_index(conn, state: IndexState) -> int:
    stmt = parse_one("CREATE INDEX t_v_idx ON t (v)")
    _, index = conn.node.db.run(lambda txn: ddl.add_index(
        txn, conn.session.table(txn, TableName("t")), stmt, state))
    return index.id


def set_state(conn, index_id: int, state: IndexState) -> None:
    table = conn.node.db.run(lambda txn: conn.session.table(txn, TableName("t")))
    conn.node.db.run(lambda txn: index_mod.set_index_state(txn, table.id, index_id, state))


def test_delete_only_index_gets_deletes_not_inserts(conn):
    conn.execute("INSERT INTO t VALUES (1, 'a')")
    idx = add_index(conn, IndexState.DELETE_ONLY)
    conn.execute("INSERT INTO t VALUES (2, 'b')")
    assert entries(conn, idx) == 0
    set_state(conn, idx, IndexState.WRITE_ONLY)
    conn.execute("INSERT INTO t VALUES (3, 'c')")
    conn.execute("UPDATE t SET v = 'bb' WHERE id = 2")
    assert entries(conn, idx) == 2  # rows 2 and 3; row 1 awaits the backfill
    set_state(conn, idx, IndexState.DELETE_ONLY)
    conn.execute("DELETE FROM t WHERE id = 3")
    conn.execute("UPDATE t SET v = 'bbb' WHERE id = 2")
    assert entries(conn, idx) == 0  # deletes and updates remove, never add
    with pytest.raises(SQLError, match="not found"):
        conn.execute("SELECT * FROM t@t_v_idx")  # not readable before PUBLIC


def test_online_create_index_over_many_batches(conn):
    conn.execute("SET CLUSTER SETTING bulkio.index_backfill.batch_size = 7")
    conn.execute("INSERT INTO t SELECT * FROM t")  # no-op, exercises INSERT ... SELECT
    values = ", ".join(f"({i}, 'v{i % 13}')" for i in range(100))
    conn.execute(f"INSERT INTO t VALUES {values}")
    before = conn.node.db.now()
    conn.execute("CREATE INDEX t_v_idx ON t (v)")
    arrivals = {a for _, _, a, _ in conn.node.engine.versions(
        *index_mod.index_span(*_ids(conn)))}
    assert len(arrivals) == 15  # ceil(100 / 7) batches, each its own arrival
    assert all(a > before for a in arrivals)
    via_index = conn.execute("SELECT id, v FROM t@t_v_idx").rows
    via_primary = conn.execute("SELECT id, v FROM t@t_pkey").rows
    assert sorted(via_index) == sorted(via_primary) and len(via_index) == 100
    assert conn.execute("SELECT count(*) FROM t WHERE v = 'v3'").rows == [(8,)]


def _ids(conn) -> tuple[int, int]:
    table = conn.node.db.run(lambda txn: conn.session.table(txn, TableName("t")))
    return table.id, table.index("t_v_idx").id


def test_unique_index_on_duplicates_fails_and_leaves_nothing(conn):
    conn.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'a')")
    with pytest.raises(SQLError, match=r"duplicate.*\(v\)=\(a\)") as err:
        conn.execute("CREATE UNIQUE INDEX t_v_key ON t (v)")
    assert err.value.code == "23505"
    assert [r[1] for r in conn.execute("SHOW INDEXES FROM t").rows] == ["t_pkey", "t_pkey"]
    table = conn.node.db.run(lambda txn: conn.session.table(txn, TableName("t")))
    p = index_prefix(table.id, 2)
    assert conn.node.db.scan(p, prefix_end(p)) == []  # no readable entry left
    conn.execute("INSERT INTO t VALUES (4, 'a')")  # and writes no longer maintain it


def test_create_index_inside_transaction(conn):
    conn.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES (3, 'c')")
    conn.execute("CREATE INDEX t_v_idx ON t (v)")
    assert conn.execute("SELECT id FROM t@t_v_idx WHERE v >= 'b'").rows == [(2,), (3,)]
    conn.execute("ROLLBACK")
    with pytest.raises(SQLError, match="not found"):
        conn.execute("SELECT * FROM t@t_v_idx")
