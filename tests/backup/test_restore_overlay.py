"""RESTORE of a chain whose spans come from several layers: the base layer's files, each with
the overlay of the later layers over it (``tidemark/backup/restore.py``).

Every restore is compared with its source through SQL (``scenario_util.assert_restored``:
rows, every index read through a hint, and ``SHOW EXPERIMENTAL_FINGERPRINTS`` against the
source AS OF SYSTEM TIME the restored time), and the rows and index entries RESTORE reports
(counted from the files) with what the source holds then. Small ``file_versions`` cut each
span into several base files.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from scenario_util import Cluster, aost, assert_restored

from tidemark.backup.restore import PAUSE_MID_SPAN
from tidemark.kv.keys import index_prefix, prefix_end, table_prefix
from tidemark.sql.ast import TableName

COLL = "nodelocal://self/coll"
SCHEMA = "(id INT PRIMARY KEY, v STRING, n INT, INDEX {t}_n (n))"


@pytest.fixture
def c(tmp_path):
    cluster = Cluster(tmp_path / "s")
    cluster.setting("bulkio.backup.file_versions", "70")
    yield cluster
    cluster.close()


def create(c: Cluster, table: str, ids: range) -> None:
    c.sql(f"CREATE TABLE {table} {SCHEMA.format(t=table.rpartition('.')[2])}")
    insert(c, table, ids, "a")


def insert(c: Cluster, table: str, ids: range | list[int], tag: str) -> None:
    if ids:
        c.sql(f"INSERT INTO {table} VALUES " + ", ".join(
            f"({i}, '{tag}{i}', {i % 7})" for i in ids))


def backup(c: Cluster, stmt: str, opts: str = "") -> int:
    """Run a BACKUP into COLL (``opts``: its WITH clause); returns the layer's end time."""
    res = c.sql(f"{stmt}{opts}")
    assert res.rows[0][1:3] == ("succeeded", 1.0), res.rows
    time.sleep(0.02)  # layer folders are named to 1/100 s: the next one must differ
    shown = c.sql(f"SHOW BACKUP FROM LATEST IN '{COLL}'{opts}")
    col = shown.columns.index("end_time")
    return max(int(Decimal(r[col])) for r in shown.rows)


def restore_and_check(c: Cluster, db: str, at: int, tables: list[str], opts: str = "",
                      as_of: bool = True) -> None:
    """RESTORE DATABASE ``db`` as of ``at`` as ``r_<db>``; it must equal the source then,
    and report the source's rows and index entries."""
    target = f"r_{db}"
    c.sql(f"DROP DATABASE IF EXISTS {target} CASCADE")
    res = c.restore(f"RESTORE DATABASE {db} FROM LATEST IN '{COLL}' "
                    f"{aost(at) if as_of else ''} WITH new_db_name = '{target}'{opts}")
    got = dict(zip(res.columns, res.rows[0], strict=True))
    rows = entries = 0
    for t in tables:
        assert_restored(c, f"{db}.{t}", f"{target}.{t}", at)
        n = c.count(f"SELECT count(*) FROM {db}.{t} {aost(at)}")
        rows += n
        # (the restored table has the indexes PUBLIC at `at`: assert_restored checked)
        entries += n * (len({r[1] for r in c.rows(f"SHOW INDEXES FROM {target}.{t}")}) - 1)
    assert (got["rows"], got["index_entries"]) == (rows, entries)


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_chain_of_updates_deletes_and_new_keys_restores_at_every_layer(c, encrypted):
    opts = ", encryption_passphrase = 'pw'" if encrypted else ""
    with_opts = " WITH encryption_passphrase = 'pw'" if encrypted else ""
    c.sql("CREATE DATABASE d")
    create(c, "d.t", range(0, 300))
    c.sql(f"CREATE TABLE d.u {SCHEMA.format(t='u')}")  # empty: its base layer has no file
    ends = [backup(c, f"BACKUP DATABASE d INTO '{COLL}'", with_opts)]

    # Updates (n moves index entries), deletes, keys before and after the base's, and a
    # new index, introduced by the next layer (its base) and changed by the one after.
    c.sql("UPDATE d.t SET v = 'b' || v, n = n + 1 WHERE id % 5 = 0")
    c.sql("DELETE FROM d.t WHERE id % 7 = 3")
    insert(c, "d.t", [*range(-20, 0), *range(300, 340)], "b")
    insert(c, "d.u", range(0, 150), "b")
    c.sql("CREATE INDEX t_v ON d.t (v)")
    ends.append(backup(c, f"BACKUP DATABASE d INTO LATEST IN '{COLL}'", with_opts))

    # Deleted and created again, updated again, deleted for good.
    c.sql("DELETE FROM d.t WHERE id % 10 = 0")
    insert(c, "d.t", range(0, 300, 20), "c")
    c.sql("UPDATE d.t SET v = 'c' || v WHERE id % 3 = 0")
    c.sql("DELETE FROM d.u WHERE id < 100")
    c.sql("DELETE FROM d.t WHERE id < 0")
    ends.append(backup(c, f"BACKUP DATABASE d INTO LATEST IN '{COLL}'", with_opts))
    ends.append(backup(c, f"BACKUP DATABASE d INTO LATEST IN '{COLL}'", with_opts))

    for at in ends:
        restore_and_check(c, "d", at, ["t", "u"], opts)
    restore_and_check(c, "d", ends[-1], ["t", "u"], opts, as_of=False)


def test_restore_as_of_times_inside_revision_history_layers(c):
    c.sql("CREATE DATABASE d")
    create(c, "d.t", range(0, 200))
    c.backup(f"BACKUP DATABASE d INTO '{COLL}' WITH revision_history", COLL)
    c.sql("UPDATE d.t SET v = 'b' || v, n = n + 3 WHERE id % 4 = 0")
    updated = c.mark()
    c.sql("DELETE FROM d.t WHERE id % 6 = 1")
    deleted = c.mark()
    insert(c, "d.t", [i for i in range(0, 200) if i % 6 == 1][:10], "c")  # created again
    insert(c, "d.t", range(200, 230), "c")
    c.backup(f"BACKUP DATABASE d INTO LATEST IN '{COLL}' WITH revision_history", COLL)
    c.sql("UPDATE d.t SET v = 'd' || v WHERE id % 3 = 0")
    c.sql("DELETE FROM d.t WHERE id >= 210")
    late = c.mark()
    c.sql("UPDATE d.t SET n = n + 1 WHERE id % 2 = 0")  # after `late`: must not show there
    c.backup(f"BACKUP DATABASE d INTO LATEST IN '{COLL}' WITH revision_history", COLL)
    for at in (updated, deleted, late):
        restore_and_check(c, "d", at, ["t"])


def test_a_version_ingested_later_at_an_older_timestamp_loses_to_a_newer_one(c):
    """A bulk ingest (what an index backfill, IMPORT or RESTORE does) writes rows at a
    timestamp older than its arrival: the incremental has them (it selects by arrival), but
    the base's newer versions of the same keys win."""
    c.sql("CREATE DATABASE d")
    c.sql("CREATE TABLE d.t (id INT PRIMARY KEY, v STRING)")
    c.sql("INSERT INTO d.t VALUES " + ", ".join(f"({i}, 'a{i}')" for i in range(100)))
    old = c.now()
    c.sql("UPDATE d.t SET v = 'newer' WHERE id < 50")
    c.backup(f"BACKUP DATABASE d INTO '{COLL}'", COLL)

    # Rows 0..99 rewritten at `old` + 1: newer than the values of 50..99, older than 0..49's.
    desc = c.conn.node.db.run(lambda txn: c.conn.session.table(txn, TableName("t", "d")))
    p = index_prefix(desc.id, desc.primary_index.id)
    engine = c.conn.node.engine
    entries = engine.scan(p, prefix_end(p), engine.frontier())
    donor = dict(entries)[entries[-1][0]]  # row 99's value: a valid row for every key
    engine.ingest([(k, donor) for k, _ in entries], ts=old + 1)
    end = c.backup(f"BACKUP DATABASE d INTO LATEST IN '{COLL}'", COLL)

    assert c.rows(f"SELECT count(*) FROM d.t {aost(end)} WHERE v = 'newer'") == [(50,)]
    assert c.rows(f"SELECT count(*) FROM d.t {aost(end)} WHERE v = 'a99'") == [(50,)]
    restore_and_check(c, "d", end, ["t"])


def test_a_span_replayed_after_a_pause_mid_way_restores_and_counts_once(c):
    c.sql("CREATE DATABASE d")
    create(c, "d.t", range(0, 300))
    c.backup(f"BACKUP DATABASE d INTO '{COLL}'", COLL)
    c.sql("UPDATE d.t SET v = 'b' || v, n = n + 1 WHERE id % 5 = 0")
    c.sql("DELETE FROM d.t WHERE id % 7 = 3")
    insert(c, "d.t", range(300, 320), "b")
    end = c.backup(f"BACKUP DATABASE d INTO LATEST IN '{COLL}'", COLL)

    job_id = c.paused(f"RESTORE DATABASE d FROM LATEST IN '{COLL}' WITH new_db_name = 'r'",
                      PAUSE_MID_SPAN)
    record = c.conn.registry.get(job_id)
    assert record.checkpoint["done"] == []  # a span half ingested, not checkpointed
    new_id = record.details["tables"][0]["new_id"]
    engine = c.conn.node.engine
    assert engine.count_versions(table_prefix(new_id), prefix_end(table_prefix(new_id))) > 0
    c.resume(job_id)

    n = c.count(f"SELECT count(*) FROM d.t {aost(end)}")
    checkpoint = c.conn.registry.get(job_id).checkpoint
    assert (checkpoint["rows"], checkpoint["index_entries"]) == (n, n)
    assert_restored(c, "d.t", "r.t", end)
    # Every version at the job's one timestamp, one per key: live rows, and tombstones
    # where a later layer deleted a key of the base.
    versions = engine.versions(table_prefix(new_id), prefix_end(table_prefix(new_id)))
    assert {ts for _, ts, _, _ in versions} == {checkpoint["ts"]}
    assert len({k for k, *_ in versions}) == len(versions)
    assert sum(v is not None for *_, v in versions) == 2 * n
