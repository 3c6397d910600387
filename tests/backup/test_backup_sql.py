"""BACKUP, RESTORE, SHOW BACKUPS and SHOW BACKUP through SQL, on real stores and collections.

Every restore is checked against the source as of the backup's end time (or the restore's
AS OF SYSTEM TIME): the same rows, the same secondary index contents (read through index
hints), and the same ``SHOW FINGERPRINTS`` of every index.
"""

from __future__ import annotations

import random
import time
from decimal import Decimal
from pathlib import Path

import pytest

import tidemark
import tidemark.importer  # registers the IMPORT job type in this process
from tidemark.clock import format_ts
from tidemark.errors import JobPausedError, TidemarkError
from tidemark.storage.engine import KEY_MAX

COLL = "nodelocal://self/coll"
SHOW_COLUMNS = ["database_name", "table_name", "start_time", "end_time", "backup_type",
                "rows", "size_bytes", "is_full_cluster"]
JOB_COLUMNS = ["job_id", "status", "fraction_completed", "rows", "index_entries", "bytes"]


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
def conn(tmp_path):
    c = tidemark.connect(tmp_path / "s")
    yield c
    c.close()


@pytest.fixture
def ext(conn) -> Path:
    """The store's external folder: where nodelocal://self/ points."""
    return Path(conn.node.engine.root) / "external"


def rows(conn, sql: str, params=()) -> list[tuple]:
    return conn.execute(sql, params).rows


def aost(ts: int) -> str:
    return f"AS OF SYSTEM TIME '{format_ts(ts)}'"


def now(conn) -> int:
    (value,), = rows(conn, "SELECT cluster_logical_timestamp()")
    assert isinstance(value, Decimal)
    return int(value)


def fingerprints(conn, table: str, as_of: int | None = None) -> list[tuple]:
    clause = f" {aost(as_of)}" if as_of is not None else ""
    return rows(conn, f"SHOW FINGERPRINTS FROM TABLE {table}{clause}")


def show_backup(conn, coll: str = COLL, subdir: str = "LATEST", opts: str = "") -> list[dict]:
    where = "LATEST" if subdir == "LATEST" else f"'{subdir}'"
    res = conn.execute(f"SHOW BACKUP FROM {where} IN '{coll}'{opts}")
    assert res.columns == SHOW_COLUMNS
    return [dict(zip(res.columns, r, strict=True)) for r in res.rows]


def layer_ends(conn, coll: str = COLL, subdir: str = "LATEST", opts: str = "") -> list[int]:
    """The end time of every layer of the chain, oldest first (from SHOW BACKUP)."""
    return sorted({int(Decimal(r["end_time"])) for r in show_backup(conn, coll, subdir, opts)})


def full_backups(conn, coll: str = COLL) -> list[str]:
    res = conn.execute(f"SHOW BACKUPS IN '{coll}'")
    assert res.columns == ["path"]
    return [p for (p,) in res.rows]


def backup(conn, sql: str) -> int:
    """Run a BACKUP statement (not detached); check its result; return its job ID."""
    res = conn.execute(sql)
    assert res.columns == JOB_COLUMNS
    assert res.rows[0][1:3] == ("succeeded", 1.0)
    time.sleep(0.02)  # layer folders are named to 1/100 s: the next one must differ
    return res.rows[0][0]


def restore(conn, sql: str) -> tuple:
    res = conn.execute(sql)
    assert res.columns == JOB_COLUMNS
    assert res.rows[0][1:3] == ("succeeded", 1.0)
    return res.rows[0]


def assert_restored(conn, src: str, dst: str, as_of: int, indexes: dict[str, str]) -> None:
    """``dst`` now holds what ``src`` held at ``as_of``: rows, index contents, fingerprints.

    ``indexes`` maps each secondary index name to the columns to read through it.
    """
    dst_name = dst.rpartition(".")[2]
    assert rows(conn, f"SELECT * FROM {dst} ORDER BY id") == \
        rows(conn, f"SELECT * FROM {src} {aost(as_of)} ORDER BY id")
    for index, cols in indexes.items():
        got = rows(conn, f"SELECT {cols} FROM {dst}@{index}")
        want = rows(conn, f"SELECT {cols} FROM {src}@{index} {aost(as_of)}")
        assert got == want, index
        assert sorted(got) == sorted(rows(conn, f"SELECT {cols} FROM {dst}@{dst_name}_pkey"))
    assert fingerprints(conn, dst) == fingerprints(conn, src, as_of)


def make_shop(conn, n: int = 60) -> None:
    """Database shop: t (n rows, two secondary indexes, some history) and u (5 rows)."""
    conn.execute("CREATE DATABASE shop")
    conn.execute("CREATE TABLE shop.t (id INT PRIMARY KEY, v STRING, n INT, "
                 "INDEX t_v_idx (v), UNIQUE INDEX t_n_key (n))")
    conn.execute("CREATE TABLE shop.u (id INT PRIMARY KEY, label STRING)")
    for i in range(n):
        conn.execute("INSERT INTO shop.t VALUES ($1, $2, $3)", [i, f"v{i % 7}", i * 10])
    conn.execute("UPDATE shop.t SET v = 'changed' WHERE id % 5 = 0")
    conn.execute("DELETE FROM shop.t WHERE id % 11 = 3")
    for i in range(5):
        conn.execute("INSERT INTO shop.u VALUES ($1, $2)", [i, f"label{i}"])


T_INDEXES = {"t_v_idx": "id, v", "t_n_key": "id, n"}


def mutate(conn, step: int) -> None:
    """Inserts, updates and deletes on shop.t (distinct for each step)."""
    base = 1000 * (step + 1)
    for i in range(base, base + 7):
        conn.execute("INSERT INTO shop.t VALUES ($1, $2, $3)", [i, f"s{step}", i * 10])
    conn.execute("UPDATE shop.t SET v = $1 WHERE id % 4 = $2 AND id < 1000",
                 [f"upd{step}", step % 4])
    conn.execute("DELETE FROM shop.t WHERE id % 9 = $1 AND id < 1000", [step % 9])


def data_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.tdf") if p.is_file())


def error_of(conn, sql: str, match: str | None = None) -> TidemarkError:
    with pytest.raises(TidemarkError, match=match) as err:
        conn.execute(sql)
    return err.value


# -- 1. full backup and restore ------------------------------------------------------------


def test_full_backup_restore_database_with_new_db_name(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    (end,) = layer_ends(conn)
    mutate(conn, 0)  # after the backup: must not be restored
    conn.execute("INSERT INTO shop.u VALUES (99, 'late')")
    job_id, _status, _frac, n_rows, n_entries, nbytes = restore(
        conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH new_db_name = 'shop2'")
    (t_count,), = rows(conn, f"SELECT count(*) FROM shop.t {aost(end)}")
    assert n_rows == t_count + 5  # primary index rows of t and u
    assert n_entries == 2 * t_count  # t's two secondary indexes
    assert nbytes > 0
    assert_restored(conn, "shop.t", "shop2.t", end, T_INDEXES)
    assert_restored(conn, "shop.u", "shop2.u", end, {})
    assert rows(conn, "SELECT id FROM shop2.t@t_v_idx WHERE v = 'v3' ORDER BY id") == \
        rows(conn, f"SELECT id FROM shop.t@t_v_idx {aost(end)} WHERE v = 'v3' ORDER BY id")
    assert rows(conn, "SELECT id FROM shop2.t@t_n_key WHERE n = 420") == [(42,)]
    assert rows(conn, "SHOW INDEXES FROM shop2.t") == rows(conn, "SHOW INDEXES FROM shop.t")
    # The restored tables are ordinary tables: writable, unique index enforced.
    conn.execute("INSERT INTO shop2.t VALUES (5000, 'new', 50000)")
    with pytest.raises(TidemarkError):
        conn.execute("INSERT INTO shop2.t VALUES (5001, 'dup', 420)")
    job = dict(zip(*(lambda r: (r.columns, r.rows[0]))(
        conn.execute(f"SHOW JOB {job_id}")), strict=True))
    assert (job["job_type"], job["status"]) == ("RESTORE", "succeeded")


def test_full_backup_restore_table_into_another_database(conn):
    make_shop(conn)
    backup(conn, f"BACKUP TABLE shop.t INTO '{COLL}'")
    (end,) = layer_ends(conn)
    mutate(conn, 1)
    conn.execute("CREATE DATABASE other")
    conn.execute("CREATE TABLE other.keep (id INT PRIMARY KEY)")
    restore(conn, f"RESTORE TABLE shop.t FROM LATEST IN '{COLL}' WITH into_db = 'other'")
    assert_restored(conn, "shop.t", "other.t", end, T_INDEXES)
    assert sorted(r[1] for r in rows(conn, "SHOW TABLES FROM other")) == ["keep", "t"]
    assert rows(conn, "SELECT count(*) FROM other.keep") == [(0,)]
    # u was not in the backup.
    error_of(conn, f"RESTORE TABLE shop.u FROM LATEST IN '{COLL}' WITH into_db = 'other'",
             "not in the backup")


# -- 2. incrementals -----------------------------------------------------------------------


def test_incrementals_restore_from_latest_and_from_a_listed_subdir(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    for step in range(3):
        mutate(conn, step)
        conn.execute("INSERT INTO shop.u VALUES ($1, 'inc')", [100 + step])
        backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'")
    first_chain = layer_ends(conn)
    assert len(first_chain) == 4
    rows_by_layer = [r for r in show_backup(conn) if r["table_name"] == "t"]
    assert [r["backup_type"] for r in rows_by_layer] == ["full"] + ["incremental"] * 3
    # An incremental holds only what changed: 7 inserts + updates + deletes, not the table.
    (full_rows,), = rows(conn, f"SELECT count(*) FROM shop.t {aost(first_chain[0])}")
    assert rows_by_layer[0]["rows"] == full_rows
    assert all(0 < r["rows"] < full_rows for r in rows_by_layer[1:])

    # A second chain: SHOW BACKUPS lists both full backups, never the incrementals.
    mutate(conn, 3)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    mutate(conn, 4)
    backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'")
    second_chain = layer_ends(conn)
    assert len(second_chain) == 2 and second_chain[0] > first_chain[-1]
    paths = full_backups(conn)
    assert len(paths) == 2 and paths == sorted(paths)
    mutate(conn, 5)  # after every backup

    restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH new_db_name = 'latest'")
    assert_restored(conn, "shop.t", "latest.t", second_chain[-1], T_INDEXES)
    assert_restored(conn, "shop.u", "latest.u", second_chain[-1], {})

    restore(conn, f"RESTORE DATABASE shop FROM '{paths[0]}' IN '{COLL}' "
                  "WITH new_db_name = 'older'")
    assert_restored(conn, "shop.t", "older.t", first_chain[-1], T_INDEXES)
    assert_restored(conn, "shop.u", "older.u", first_chain[-1], {})
    assert layer_ends(conn, subdir=paths[0]) == first_chain

    # An incremental appended to a named (older) full backup extends that chain only.
    backup(conn, f"BACKUP DATABASE shop INTO '{paths[0]}' IN '{COLL}'")
    assert len(layer_ends(conn, subdir=paths[0])) == 5
    assert layer_ends(conn) == second_chain


# -- 3. AS OF SYSTEM TIME ------------------------------------------------------------------


def test_revision_history_restores_any_time_inside_the_chain(conn):
    make_shop(conn)
    start = now(conn)
    times = []
    for step in range(2):
        mutate(conn, step)
        times.append(now(conn))
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}' WITH revision_history")
    for step in range(2, 6):
        mutate(conn, step)
        times.append(now(conn))
        if step % 2:
            backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}' WITH revision_history")
    ends = layer_ends(conn)
    assert len(ends) == 3
    mutate(conn, 6)
    rng = random.Random(20261121)
    picks = [rng.randrange(start, ends[-1]) for _ in range(3)] + \
        [rng.choice(times[:-1]), ends[1] - 1, ends[-1]]
    for n, ts in enumerate(picks):
        restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' {aost(ts)} "
                      f"WITH new_db_name = 'at{n}'")
        assert_restored(conn, "shop.t", f"at{n}.t", ts, T_INDEXES)
        assert_restored(conn, "shop.u", f"at{n}.u", ts, {})


def test_without_revision_history_only_layer_end_times_restore(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    for step in range(2):
        mutate(conn, step)
        backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'")
    ends = layer_ends(conn)
    assert len(ends) == 3
    mutate(conn, 2)
    after = now(conn)

    between = (ends[0] + ends[1]) // 2
    err = error_of(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' {aost(between)} "
                         "WITH new_db_name = 'x'")
    assert "revision_history" in err.message + (err.hint or "")
    err = error_of(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' {aost(ends[0] - 1)} "
                         "WITH new_db_name = 'x'")
    assert "revision_history" in err.message + (err.hint or "")
    err = error_of(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' {aost(after)} "
                         "WITH new_db_name = 'x'")
    assert "after the newest backup" in err.message
    assert rows(conn, "SHOW DATABASES") == [("defaultdb", "root"), ("shop", "root")]

    # Exactly a layer's end time, as SHOW BACKUP prints it.
    middle = next(r["end_time"] for r in show_backup(conn)
                  if int(Decimal(r["end_time"])) == ends[1])
    restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' AS OF SYSTEM TIME "
                  f"'{middle}' WITH new_db_name = 'mid'")
    assert_restored(conn, "shop.t", "mid.t", ends[1], T_INDEXES)
    conn.execute("CREATE DATABASE first")
    restore(conn, f"RESTORE TABLE shop.t FROM LATEST IN '{COLL}' {aost(ends[0])} "
                  "WITH into_db = 'first'")
    assert_restored(conn, "shop.t", "first.t", ends[0], T_INDEXES)


# -- 4. SHOW BACKUPS / SHOW BACKUP ---------------------------------------------------------


def test_show_backups_and_show_backup_rows_per_table_per_layer(conn):
    conn.execute("CREATE DATABASE d")
    conn.execute("CREATE TABLE d.big (id INT PRIMARY KEY, v STRING, INDEX big_v (v))")
    conn.execute("CREATE TABLE d.small (id INT PRIMARY KEY)")
    for i in range(37):
        conn.execute("INSERT INTO d.big VALUES ($1, $2)", [i, f"x{i}"])
    for i in range(5):
        conn.execute("INSERT INTO d.small VALUES ($1)", [i])
    backup(conn, f"BACKUP DATABASE d INTO '{COLL}'")
    for i in range(37, 40):
        conn.execute("INSERT INTO d.big VALUES ($1, $2)", [i, f"x{i}"])
    backup(conn, f"BACKUP DATABASE d INTO LATEST IN '{COLL}'")
    (path,) = full_backups(conn)
    ends = layer_ends(conn)
    shown = show_backup(conn)
    assert show_backup(conn, subdir=path) == shown
    key = [(r["database_name"], r["table_name"], r["backup_type"]) for r in shown]
    assert key == [("d", "big", "full"), ("d", "small", "full"),
                   ("d", "big", "incremental"), ("d", "small", "incremental")]
    full_big, full_small, inc_big, inc_small = shown
    assert (full_big["rows"], full_small["rows"], inc_big["rows"], inc_small["rows"]) == \
        (37, 5, 3, 0)
    assert full_big["start_time"] is None and full_small["start_time"] is None
    assert inc_big["start_time"] == full_big["end_time"] == format_ts(ends[0])
    assert inc_big["end_time"] == inc_small["end_time"] == format_ts(ends[1])
    assert all(r["is_full_cluster"] is False for r in shown)
    assert full_big["size_bytes"] > full_small["size_bytes"] > 0
    assert inc_big["size_bytes"] > 0 and inc_small["size_bytes"] == 0
    # The end times are usable in AS OF SYSTEM TIME.
    assert rows(conn, f"SELECT count(*) FROM d.big AS OF SYSTEM TIME "
                      f"'{full_big['end_time']}'") == [(37,)]


def test_show_backup_of_a_cluster_backup_and_of_an_empty_collection(conn, ext):
    conn.execute("CREATE TABLE kv (id INT PRIMARY KEY)")
    conn.execute("INSERT INTO kv VALUES (1), (2)")
    (ext / "empty").mkdir(parents=True)
    assert full_backups(conn, "nodelocal://self/empty") == []
    error_of(conn, "SHOW BACKUP FROM LATEST IN 'nodelocal://self/empty'", "no LATEST")
    backup(conn, f"BACKUP INTO '{COLL}'")
    shown = show_backup(conn)
    assert [(r["database_name"], r["table_name"], r["rows"], r["is_full_cluster"])
            for r in shown] == [("defaultdb", "kv", 2, True)]


def test_show_backup_lists_layers_of_databases_without_tables(conn, tmp_path):
    """Every layer shows, with its times, even when its databases have no tables."""
    conn.execute("CREATE DATABASE empty")
    backup(conn, f"BACKUP DATABASE empty INTO '{COLL}'")
    backup(conn, f"BACKUP DATABASE empty INTO LATEST IN '{COLL}'")
    shown = show_backup(conn)
    assert [(r["database_name"], r["table_name"], r["backup_type"], r["rows"])
            for r in shown] == [("empty", None, "full", 0), ("empty", None, "incremental", 0)]
    assert shown[1]["start_time"] == shown[0]["end_time"]
    conn.execute("CREATE TABLE empty.t (id INT PRIMARY KEY)")
    conn.execute("CREATE DATABASE other")
    backup(conn, f"BACKUP DATABASE empty, other INTO '{COLL}'")
    assert [(r["database_name"], r["table_name"]) for r in show_backup(conn)] == [
        ("empty", "t"), ("other", None)]
    with tidemark.connect(tmp_path / "bare") as bare:  # a cluster with no tables at all
        bare.execute(f"BACKUP INTO 'file://{tmp_path}/c'")
        rows = bare.execute(f"SHOW BACKUP FROM LATEST IN 'file://{tmp_path}/c'").rows
        assert [(r[0], r[1], r[4]) for r in rows] == [("defaultdb", None, "full")]


# -- 5. encryption -------------------------------------------------------------------------

MARKER = "PLAINTEXT-MARKER-7f3a91"


def test_encrypted_backup_needs_its_passphrase_and_holds_no_plaintext(conn, ext):
    make_shop(conn)
    conn.execute("INSERT INTO shop.u VALUES (50, $1)", [MARKER])
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}' WITH encryption_passphrase = 'right-pw'")
    restore_sql = f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH new_db_name = 'r'"

    err = error_of(conn, restore_sql + ", encryption_passphrase = 'wrong-pw'")
    assert "wrong passphrase" in err.message
    err = error_of(conn, restore_sql)
    assert "encrypted" in err.message and "encryption_passphrase" in err.message + (
        err.hint or "")
    err = error_of(conn, f"SHOW BACKUP FROM LATEST IN '{COLL}'")
    assert "encryption_passphrase" in err.message + (err.hint or "")
    error_of(conn, f"SHOW BACKUP FROM LATEST IN '{COLL}' WITH encryption_passphrase = 'nope'",
             "wrong passphrase")
    assert [d for (d, _) in rows(conn, "SHOW DATABASES")] == ["defaultdb", "shop"]

    # An incremental must use the full backup's passphrase.
    mutate(conn, 0)
    conn.execute("INSERT INTO shop.u VALUES (51, $1)", [MARKER + "-inc"])
    error_of(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}' "
                   "WITH encryption_passphrase = 'other-pw'", "wrong passphrase")
    err = error_of(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'")
    assert "encrypt" in err.message
    assert len(layer_ends(conn, opts=" WITH encryption_passphrase = 'right-pw'")) == 1
    backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}' "
                 "WITH encryption_passphrase = 'right-pw'")
    ends = layer_ends(conn, opts=" WITH encryption_passphrase = 'right-pw'")
    assert len(ends) == 2
    mutate(conn, 1)

    restore(conn, restore_sql + ", encryption_passphrase = 'right-pw'")
    assert_restored(conn, "shop.t", "r.t", ends[-1], T_INDEXES)
    assert_restored(conn, "shop.u", "r.u", ends[-1], {})
    assert rows(conn, "SELECT label FROM r.u WHERE id >= 50 ORDER BY id") == [
        (MARKER,), (MARKER + "-inc",)]

    files = [p for p in (ext / "coll").rglob("*") if p.is_file()]
    assert len(data_files(ext / "coll")) >= 4
    for path in files:
        data = path.read_bytes()
        assert MARKER.encode() not in data, path
        assert b"right-pw" not in data, path


def test_a_wrong_or_missing_passphrase_names_the_fix(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}' WITH encryption_passphrase = 'right-pw'")
    restore_sql = f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH new_db_name = 'r'"
    for sql in (restore_sql + ", encryption_passphrase = 'wrong-pw'",
                f"SHOW BACKUP FROM LATEST IN '{COLL}' WITH encryption_passphrase = 'wrong-pw'",
                f"BACKUP DATABASE shop INTO LATEST IN '{COLL}' "
                "WITH encryption_passphrase = 'wrong-pw'"):
        err = error_of(conn, sql)
        assert err.code == "28P01", sql
        assert "BACKUP_MANIFEST: wrong passphrase" in err.message, sql
        assert err.hint == ("give the passphrase the backup was taken with (an incremental's "
                            "is its full backup's): WITH encryption_passphrase = '...'"), sql
        assert "right-pw" not in str(err) and "wrong-pw" not in str(err)
    for sql in (restore_sql, f"SHOW BACKUP FROM LATEST IN '{COLL}'",
                f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'"):
        err = error_of(conn, sql)
        assert err.code == "28000", sql
        assert "BACKUP_MANIFEST: file is encrypted, and no encryption passphrase was given" \
            in err.message, sql
        assert "WITH encryption_passphrase = '...'" in (err.hint or ""), sql
    assert [r for r in rows(conn, "SHOW JOBS") if r[1] == "RESTORE"] == []


def test_passphrase_on_an_unencrypted_backup_is_refused(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    err = error_of(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' "
                         "WITH new_db_name = 'r', encryption_passphrase = 'pw'")
    assert "not encrypted" in err.message
    err = error_of(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}' "
                         "WITH encryption_passphrase = 'pw'")
    assert "not encrypted" in err.message


# -- 6. corruption -------------------------------------------------------------------------


@pytest.fixture
def damaged(conn, ext):
    """A database backup of shop (several data files); returns its layer folder on disk."""
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    (subdir,) = full_backups(conn)
    folder = ext / "coll" / subdir.strip("/")
    assert len(data_files(folder)) >= 3  # t_pkey, t_v_idx, t_n_key, u_pkey
    return folder


RESTORE_R = f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH new_db_name = 'r'"
DAMAGED_HINT = ("the backup is damaged: restore from another backup; SHOW BACKUP ... WITH "
                "check_files lists every missing or corrupt file of the chain")


def failed_restore(conn, sql: str = RESTORE_R) -> TidemarkError:
    """The RESTORE fails; nothing of it is left behind, not even its secrets."""
    err = error_of(conn, sql)
    assert [d for (d, _) in rows(conn, "SHOW DATABASES")] == ["defaultdb", "shop"]
    jobs = [r for r in rows(conn, "SHOW JOBS") if r[1] == "RESTORE"]
    for job in jobs:
        assert job[3] == "failed"
        ref = conn.registry.get(job[0]).details["secret_ref"]
        assert conn.node.engine.get_secret(ref) is None
    return err


def test_a_flipped_byte_in_a_data_file_fails_restore_naming_the_file(conn, damaged):
    victim = data_files(damaged)[0]
    good = victim.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    victim.write_bytes(bytes(bad))
    err = failed_restore(conn)
    # Reported as a file that is not the manifest's, not as whatever zstd tripped on first.
    assert err.code == "XX001"
    assert f"{damaged.name}/data/{victim.name}: backup data file is corrupt: it does not " \
        "match its checksum in the manifest" in err.message
    assert "zstd" not in err.message
    assert err.hint == DAMAGED_HINT
    # Repaired, the same restore works (the failed one left its names free).
    victim.write_bytes(good)
    restore(conn, RESTORE_R)
    (end,) = layer_ends(conn)
    assert_restored(conn, "shop.t", "r.t", end, T_INDEXES)


def test_a_flipped_byte_in_an_encrypted_data_file_fails_restore_and_check_files(conn, ext):
    make_shop(conn)
    pw = "WITH encryption_passphrase = 'pw'"
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}' {pw}")
    victim = data_files(ext / "coll")[0]
    bad = bytearray(victim.read_bytes())
    bad[len(bad) // 2] ^= 0x01
    victim.write_bytes(bytes(bad))
    err = failed_restore(conn, f"{RESTORE_R}, encryption_passphrase = 'pw'")
    assert err.code == "XX001"
    assert f"data/{victim.name}: backup data file is corrupt: it does not match its " \
        "checksum in the manifest" in err.message
    assert "authentication" not in err.message
    assert err.hint == DAMAGED_HINT
    err = error_of(conn, f"SHOW BACKUP FROM LATEST IN '{COLL}' {pw}, check_files")
    assert err.code == "XX001"
    assert f"data/{victim.name}: corrupt: its checksum does not match the manifest" \
        in err.message
    assert "restore from another backup" in (err.hint or "")


def test_a_missing_data_file_fails_restore(conn, damaged):
    victim = data_files(damaged)[-1]
    victim.unlink()
    err = failed_restore(conn)
    assert f"data/{victim.name}: backup data file is missing" in err.message
    assert err.code == "XX001" and err.hint == DAMAGED_HINT


def test_a_truncated_data_file_fails_restore(conn, damaged):
    victim = data_files(damaged)[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 20])
    err = failed_restore(conn)
    assert f"data/{victim.name}: backup data file is corrupt" in err.message
    assert err.hint == DAMAGED_HINT


def test_data_files_swapped_between_two_full_backups_fail_the_checksum(conn, ext, damaged):
    mutate(conn, 0)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    first, second = (ext / "coll" / p.strip("/") for p in full_backups(conn))
    assert first == damaged
    a, b = data_files(first)[0], data_files(second)[0]
    assert a.name == b.name and a.read_bytes() != b.read_bytes()
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    paths = full_backups(conn)
    err = failed_restore(conn, f"RESTORE DATABASE shop FROM '{paths[0]}' IN '{COLL}' "
                               "WITH new_db_name = 'r'")
    assert "checksum" in err.message and f"data/{a.name}" in err.message
    err = failed_restore(conn)
    assert "checksum" in err.message
    err = error_of(conn, f"SHOW BACKUP FROM '{paths[1]}' IN '{COLL}' WITH check_files")
    assert f"data/{b.name}" in err.message


def test_a_corrupt_manifest_is_reported_as_such(conn, damaged):
    manifest = damaged / "BACKUP_MANIFEST"
    bad = bytearray(manifest.read_bytes())
    bad[len(bad) // 2] ^= 0xFF
    manifest.write_bytes(bytes(bad))
    for sql in (RESTORE_R, f"SHOW BACKUP FROM LATEST IN '{COLL}'",
                f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'"):
        err = error_of(conn, sql)
        assert "corrupt backup manifest" in err.message, sql


def test_a_missing_manifest_checksum_file_says_the_backup_is_damaged(conn, damaged):
    (damaged / "BACKUP_MANIFEST-CHECKSUM").unlink()
    for sql in (RESTORE_R, f"SHOW BACKUP FROM LATEST IN '{COLL}'",
                f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'"):
        err = error_of(conn, sql)
        assert err.code == "XX001", sql
        assert f"coll/{damaged.relative_to(damaged.parents[2])}: corrupt backup: " \
            "BACKUP_MANIFEST has no checksum file BACKUP_MANIFEST-CHECKSUM" in err.message, sql
        assert err.hint == ("the backup is damaged: restore from another backup, and check "
                            "the collection with `tidemark backup doctor '<collection>'`"), sql
    assert [r for r in rows(conn, "SHOW JOBS") if r[1] == "RESTORE"] == []


def test_show_backup_check_files_lists_every_missing_or_corrupt_file(conn, damaged):
    healthy = show_backup(conn, opts=" WITH check_files")
    assert healthy == show_backup(conn)
    files = data_files(damaged)
    missing, flipped, truncated = files[0], files[1], files[2]
    missing.unlink()
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0x01
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:-5])
    err = error_of(conn, f"SHOW BACKUP FROM LATEST IN '{COLL}' WITH check_files")
    lines = err.message.splitlines()
    assert "3 backup file(s)" in lines[0]
    for path, what in ((missing, "missing"), (flipped, "corrupt"), (truncated, "corrupt")):
        (line,) = [ln for ln in lines if f"data/{path.name}" in ln]
        assert what in line and damaged.name in line
    # Without check_files SHOW BACKUP reads only the manifests.
    assert show_backup(conn) == healthy


# -- 7. statement errors -------------------------------------------------------------------


def test_incremental_into_an_empty_collection_is_refused(conn, ext):
    make_shop(conn)
    err = error_of(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'")
    assert "no full backup" in err.message and "BACKUP ... INTO" in (err.hint or "")
    (ext / "coll").mkdir(parents=True, exist_ok=True)
    error_of(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'", "no full backup")
    assert rows(conn, "SHOW JOBS") == []


def test_incremental_with_other_targets_than_the_full_is_refused(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    for targets in ("TABLE shop.t", "", "DATABASE shop, defaultdb"):
        err = error_of(conn, f"BACKUP {targets} INTO LATEST IN '{COLL}'")
        assert "differ" in err.message, targets
    assert len(layer_ends(conn)) == 1


NOT_A_COLLECTION = ("nodelocal://self/junk: not a backup collection: it has no LATEST and "
                    "holds files a collection does not (notes.txt)")


def test_backup_into_a_folder_with_unrelated_files_is_refused(conn, ext):
    make_shop(conn)
    (ext / "junk").mkdir(parents=True)
    (ext / "junk" / "notes.txt").write_text("not a backup")
    for sql in ("BACKUP DATABASE shop INTO 'nodelocal://self/junk'",
                "SHOW BACKUPS IN 'nodelocal://self/junk'"):
        err = error_of(conn, sql)
        assert err.code == "42P04", sql
        assert err.message == NOT_A_COLLECTION, sql
        assert err.hint == ("name an empty folder or an existing backup collection (a folder "
                            "holding LATEST)"), sql
    assert sorted(p.name for p in (ext / "junk").rglob("*")) == ["notes.txt"]


def test_a_folder_with_latest_is_a_collection_whatever_else_it_holds(conn, ext):
    # BACKUP and SHOW BACKUPS agree: files of its own in a collection are ignored by both
    # (BACKUP never lists a collection that has a LATEST: on S3 a request per 1000 files).
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    (ext / "coll" / "notes.txt").write_text("what these backups are for")
    (ext / "coll" / "old").mkdir()
    (ext / "coll" / "old" / "export.csv").write_text("1,2\n")
    assert len(full_backups(conn)) == 1
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    mutate(conn, 0)
    backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'")
    assert len(full_backups(conn)) == 2
    assert len(layer_ends(conn)) == 2
    restore(conn, RESTORE_R)
    # Without LATEST the same files make it a folder that is not a collection.
    (ext / "coll" / "LATEST").unlink()
    err = error_of(conn, f"SHOW BACKUPS IN '{COLL}'")
    assert err.code == "42P04"
    assert "no LATEST and holds files a collection does not (notes.txt, old/export.csv)" \
        in err.message


def test_a_collection_uri_naming_a_file_is_refused(conn, ext, tmp_path):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    (subdir,) = full_backups(conn)
    plain = tmp_path / "passwd"
    plain.write_text("root:x:0:0::/root:/bin/sh\n")
    for uri, name, folder in ((f"{COLL}/LATEST", "LATEST", COLL),
                              (f"file://{plain}", "passwd", f"file://{tmp_path}")):
        for sql in (f"BACKUP DATABASE shop INTO '{uri}'",
                    f"BACKUP DATABASE shop INTO LATEST IN '{uri}'",
                    f"SHOW BACKUPS IN '{uri}'",
                    f"SHOW BACKUP FROM LATEST IN '{uri}'",
                    f"SHOW BACKUP FROM '{subdir}' IN '{uri}'",
                    f"RESTORE DATABASE shop FROM LATEST IN '{uri}' WITH new_db_name = 'r'"):
            err = error_of(conn, sql)
            assert err.code == "42P04", sql
            assert err.message == f"{uri}: is a file, not a backup collection folder", sql
            assert err.hint == (
                "a backup collection is a folder (holding LATEST and a folder per full "
                f"backup): name the folder, not a file; this file is {name!r} in {folder}"), sql
    assert plain.read_text() == "root:x:0:0::/root:/bin/sh\n"
    assert len(full_backups(conn)) == 1
    assert [r for r in rows(conn, "SHOW JOBS") if r[1] == "RESTORE"] == []


def test_unknown_options_are_refused(conn):
    make_shop(conn)
    err = error_of(conn, f"BACKUP DATABASE shop INTO '{COLL}' WITH bogus_option")
    assert "unknown option" in err.message and "revision_history" in (err.hint or "")
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    error_of(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH revision_history",
             "unknown option")
    error_of(conn, f"SHOW BACKUP FROM LATEST IN '{COLL}' WITH new_db_name = 'x'",
             "unknown option")


def test_option_values_of_the_wrong_kind_name_the_option_and_its_form(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    into = f"BACKUP DATABASE shop INTO '{COLL}' WITH"
    restore_db = f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH"
    restore_t = f"RESTORE TABLE shop.t FROM LATEST IN '{COLL}' WITH"
    for sql, message, hint in [
        (f"{into} encryption_passphrase", "BACKUP: option encryption_passphrase needs a value",
         "WITH encryption_passphrase = '...'"),
        (f"{into} encryption_passphrase = NULL",
         "BACKUP: option encryption_passphrase takes a string, not NULL",
         "WITH encryption_passphrase = '...'"),
        (f"{into} encryption_passphrase = true",
         "BACKUP: option encryption_passphrase takes a string, not true",
         "WITH encryption_passphrase = '...'"),
        (f"{into} encryption_passphrase = 123",
         "BACKUP: option encryption_passphrase takes a string, not 123",
         "WITH encryption_passphrase = '...'"),
        (f"{into} encryption_passphrase = ''",
         "BACKUP: option encryption_passphrase must not be empty",
         "WITH encryption_passphrase = '...'"),
        (f"{restore_db} new_db_name", "RESTORE: option new_db_name needs a value",
         "WITH new_db_name = '...'"),
        (f"{restore_t} into_db = 5", "RESTORE: option into_db takes a string, not 5",
         "WITH into_db = '...'"),
        (f"{restore_db} new_db_name = 'r', encryption_passphrase = ''",
         "RESTORE: option encryption_passphrase must not be empty",
         "WITH encryption_passphrase = '...'"),
        (f"{into} revision_history = 'yes'",
         "BACKUP: option revision_history takes no value or a boolean",
         "WITH revision_history, or WITH revision_history = true / false"),
        (f"SHOW BACKUP FROM LATEST IN '{COLL}' WITH check_files = 1",
         "SHOW BACKUP: option check_files takes no value or a boolean",
         "WITH check_files, or WITH check_files = true / false"),
    ]:
        err = error_of(conn, sql)
        assert (err.code, err.message, err.hint) == ("22023", message, hint), sql
    with pytest.raises(TidemarkError) as exc:
        conn.execute("BACKUP DATABASE shop INTO $1", [None])
    assert exc.value.code == "22023"
    assert exc.value.message == "expected the backup collection URI as a string, not NULL"
    assert len(full_backups(conn)) == 1
    assert [r for r in rows(conn, "SHOW JOBS") if r[1] == "RESTORE"] == []


AOST_FORMS = ("give a decimal timestamp such as cluster_logical_timestamp() gives, an interval "
              "such as '-10s', or a time such as '2026-01-02 03:04:05'")


def test_as_of_system_time_that_is_no_timestamp_is_refused(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    restore_sql = f"RESTORE DATABASE shop FROM LATEST IN '{COLL}'"
    for stmt in (f"BACKUP DATABASE shop INTO '{COLL}'", restore_sql):
        # Before 1970: was a GC-threshold error at a negative time, or an OverflowError
        # traceback (SQLite takes 64 bits); beyond 64 bits of nanoseconds: in the future.
        for when in ("'-1000000h'", "'-9999999999999h'", "'-" + "9" * 400 + "h'"):
            err = error_of(conn, f"{stmt} AS OF SYSTEM TIME {when}")
            assert err.code == "22008", (stmt, when)
            assert err.message == (f"AS OF SYSTEM TIME {when.strip(chr(39))!r} is before "
                                   "1970-01-01 (UTC), the earliest timestamp"), (stmt, when)
            assert err.hint == AOST_FORMS
        for when in ("'99999999999999999999999.0'", "99999999999999999999999",
                     "'" + "9" * 400 + "h'"):
            err = error_of(conn, f"{stmt} AS OF SYSTEM TIME {when}")
            assert err.code == "XXUUU", (stmt, when)
            assert "it is in the future (the time is now" in err.message, (stmt, when)
            assert err.hint == "read at a time at or before now()"
        err = error_of(conn, f"{stmt} AS OF SYSTEM TIME NULL")
        assert (err.code, err.message, err.hint) == (
            "22023", "AS OF SYSTEM TIME needs a timestamp, not NULL", AOST_FORMS)
        err = error_of(conn, f"{stmt} AS OF SYSTEM TIME 'garbage'")
        assert err.code == "22023"
        assert err.message.startswith("AS OF SYSTEM TIME: cannot parse 'garbage' as a "
                                      "timestamp: use a decimal timestamp such as ")
    with pytest.raises(TidemarkError) as exc:
        conn.execute(f"{restore_sql} AS OF SYSTEM TIME $1", [b"\x01"])
    assert exc.value.message == "AS OF SYSTEM TIME needs a timestamp, not bytes"
    assert len(full_backups(conn)) == 1
    assert [r for r in rows(conn, "SHOW JOBS") if r[1] == "RESTORE"] == []


def test_a_table_or_database_named_twice_is_restored_once(conn):
    # As BACKUP backs it up once; RESTORE said the second one "already exists".
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    (end,) = layer_ends(conn)
    conn.execute("CREATE DATABASE e")
    restore(conn, f"RESTORE TABLE shop.t, shop.t FROM LATEST IN '{COLL}' WITH into_db = 'e'")
    assert_restored(conn, "shop.t", "e.t", end, T_INDEXES)
    restore(conn, f"RESTORE DATABASE shop, shop FROM LATEST IN '{COLL}' "
                  "WITH new_db_name = 'r'")
    assert_restored(conn, "shop.u", "r.u", end, {})


def test_latest_in_the_folder_of_one_backup_names_the_collection_above(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    (subdir,) = full_backups(conn)
    layer = f"{COLL}{subdir}"
    for sql in (f"SHOW BACKUP FROM LATEST IN '{layer}'",
                f"RESTORE DATABASE shop FROM LATEST IN '{layer}' WITH new_db_name = 'r'",
                f"BACKUP DATABASE shop INTO LATEST IN '{layer}'"):
        err = error_of(conn, sql)
        assert err.code == "42P04", sql
        assert err.message == (f"{layer}: not a backup collection: it is the folder of one "
                               "backup (it holds BACKUP_MANIFEST)"), sql
        assert err.hint == ("this folder is a single backup, not a collection: name the "
                            "collection above it (the folder holding LATEST); SHOW BACKUPS "
                            "IN it lists its backups"), sql
    # An empty folder still says what it lacks.
    err = error_of(conn, "SHOW BACKUP FROM LATEST IN 'nodelocal://self/nothing'")
    assert err.code == "58P01" and "the collection has no LATEST" in err.message


def test_restore_over_existing_names_hints_at_renaming(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    err = error_of(conn, f"RESTORE TABLE shop.t FROM LATEST IN '{COLL}'")
    assert "already exists" in err.message and "into_db" in (err.hint or "")
    err = error_of(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}'")
    assert "already exists" in err.message and "new_db_name" in (err.hint or "")
    err = error_of(conn, f"RESTORE TABLE shop.t FROM LATEST IN '{COLL}' "
                         "WITH into_db = 'nowhere'")
    assert "does not exist" in err.message
    assert [r for r in rows(conn, "SHOW JOBS") if r[1] == "RESTORE"] == []


def test_bare_restore_of_a_database_backup_is_refused(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    err = error_of(conn, f"RESTORE FROM LATEST IN '{COLL}'")
    assert "not a full-cluster backup" in err.message


def test_cluster_restore_needs_an_empty_cluster_and_brings_everything_back(conn, tmp_path):
    coll = f"file://{tmp_path}/cluster-backup"
    make_shop(conn)
    conn.execute("CREATE TABLE defaultdb.kv (k INT PRIMARY KEY, v STRING)")
    conn.execute("INSERT INTO defaultdb.kv VALUES (1, 'one'), (2, 'two')")
    conn.execute("SET CLUSTER SETTING gc.ttlseconds = 1234")
    backup(conn, f"BACKUP INTO '{coll}'")
    (end,) = layer_ends(conn, coll)
    assert all(r["is_full_cluster"] for r in show_backup(conn, coll))
    mutate(conn, 0)
    conn.execute("SET CLUSTER SETTING gc.ttlseconds = 999")

    err = error_of(conn, f"RESTORE FROM LATEST IN '{coll}'")
    assert "empty cluster" in err.message
    with tidemark.connect(tmp_path / "fresh") as other:
        nonempty = tidemark.connect(tmp_path / "busy")
        try:
            nonempty.execute("CREATE DATABASE x")
            error_of(nonempty, f"RESTORE FROM LATEST IN '{coll}'", "empty cluster")
        finally:
            nonempty.close()
        restore(other, f"RESTORE FROM LATEST IN '{coll}'")
        assert [d for (d, _) in rows(other, "SHOW DATABASES")] == ["defaultdb", "shop"]
        assert sorted(r[1] for r in rows(other, "SHOW TABLES FROM shop")) == ["t", "u"]
        assert rows(other, "SHOW CLUSTER SETTING gc.ttlseconds") == [(1234,)]
        assert rows(other, "SELECT * FROM kv ORDER BY k") == [(1, "one"), (2, "two")]
        for table in ("shop.t", "shop.u", "defaultdb.kv"):
            assert fingerprints(other, table) == fingerprints(conn, table, end), table
            order = "k" if table.endswith("kv") else "id"
            assert rows(other, f"SELECT * FROM {table} ORDER BY {order}") == rows(
                conn, f"SELECT * FROM {table} {aost(end)} ORDER BY {order}")
        assert rows(other, "SELECT id, v FROM shop.t@t_v_idx") == rows(
            conn, f"SELECT id, v FROM shop.t@t_v_idx {aost(end)}")


def test_unknown_scheme_and_missing_table(conn):
    make_shop(conn)
    err = error_of(conn, "BACKUP DATABASE shop INTO 'gs://bucket/backups'")
    assert "unsupported external storage scheme" in err.message
    error_of(conn, "RESTORE DATABASE shop FROM LATEST IN 'gs://bucket/backups'",
             "unsupported external storage scheme")
    error_of(conn, "SHOW BACKUPS IN 'gs://bucket/backups'", "unsupported external storage")
    error_of(conn, f"BACKUP TABLE shop.nope INTO '{COLL}'", "does not exist")
    backup(conn, f"BACKUP TABLE shop.t INTO '{COLL}'")
    err = error_of(conn, f"RESTORE TABLE shop.u FROM LATEST IN '{COLL}' "
                         "WITH into_db = 'defaultdb'")
    assert 'table "shop.u" is not in the backup' in err.message
    error_of(conn, f"RESTORE DATABASE nope FROM LATEST IN '{COLL}'", "not in the backup")
    assert [r for r in rows(conn, "SHOW JOBS") if r[1] == "RESTORE"] == []


def test_a_path_escaping_the_external_folder_is_refused_with_the_fix(conn, ext, tmp_path):
    make_shop(conn)
    outside = tmp_path / "outside"
    outside.mkdir()
    ext.mkdir(parents=True, exist_ok=True)
    (ext / "link").symlink_to(outside)
    nodelocal_hint = ("nodelocal://self/<path> is a path inside the store's external folder: "
                      "name a folder there, or one elsewhere with file:///absolute/path")
    for uri, message, hint in [
        ("nodelocal://self/../x", "nodelocal://self/../x: '.' and '..' are not allowed in "
         "the path", nodelocal_hint),
        ("nodelocal://self/c/%2E%2E/%2E%2E/x", "nodelocal://self/c/../../x: '.' and '..' are "
         "not allowed in the path", nodelocal_hint),
        (f"file://{tmp_path}/a/../b", f"file://{tmp_path}/a/../b: '.' and '..' are not "
         "allowed in the path", "write the absolute path without '.' or '..': "
         "file:///absolute/path"),
        ("nodelocal://self/link/c", "nodelocal://self/link/c resolves outside the store's "
         f"external folder {ext.resolve()} (through a symbolic link)",
         "nodelocal:// stays inside the store's external folder: use a file:// URI for a "
         "folder elsewhere"),
    ]:
        for sql in (f"BACKUP DATABASE shop INTO '{uri}'", f"SHOW BACKUPS IN '{uri}'",
                    f"RESTORE DATABASE shop FROM LATEST IN '{uri}' WITH new_db_name = 'r'"):
            err = error_of(conn, sql)
            assert (err.code, err.message, err.hint) == ("22023", message, hint), sql
    assert list(outside.iterdir()) == []
    assert rows(conn, "SHOW JOBS") == []


# -- 8. secrets ----------------------------------------------------------------------------

SECRET = "hunter2-secret"


def test_the_passphrase_is_in_no_job_record_and_its_secret_is_removed(conn, ext):
    make_shop(conn)
    backup_id = backup(conn, f"BACKUP DATABASE shop INTO '{COLL}' "
                             f"WITH encryption_passphrase = '{SECRET}'")
    mutate(conn, 0)
    inc_id = backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}' "
                          f"WITH encryption_passphrase = '{SECRET}'")
    restore_id = restore(conn, f"RESTORE TABLE shop.t FROM LATEST IN '{COLL}' WITH "
                               f"into_db = 'defaultdb', encryption_passphrase = '{SECRET}'")[0]
    failed = error_of(conn, f"RESTORE TABLE shop.u FROM LATEST IN '{COLL}' WITH "
                            "into_db = 'defaultdb', encryption_passphrase = 'not-it'")
    assert SECRET not in str(failed)

    res = conn.execute("SHOW JOBS")
    ids = [r[0] for r in res.rows]
    assert {backup_id, inc_id, restore_id} <= set(ids)
    for row in res.rows:
        for value in row:
            assert SECRET not in str(value), row
    descriptions = {r[0]: r[2] for r in res.rows}
    assert "encryption_passphrase = 'redacted'" in descriptions[backup_id]
    assert "encryption_passphrase = 'redacted'" in descriptions[restore_id]
    for job_id in (backup_id, inc_id, restore_id):
        job = conn.execute(f"SHOW JOB {job_id}").rows[0]
        assert all(SECRET not in str(v) for v in job)

    for key, _ts, _arrival, value in conn.node.engine.versions(b"", KEY_MAX):
        assert SECRET.encode() not in key
        assert value is None or SECRET.encode() not in value, key

    for job_id in (backup_id, inc_id, restore_id):
        ref = conn.registry.get(job_id).details["secret_ref"]
        assert ref and SECRET not in ref
        assert conn.node.engine.get_secret(ref) is None, job_id

    for path in (p for p in (ext / "coll").rglob("*") if p.is_file()):
        assert SECRET.encode() not in path.read_bytes(), path


def test_a_passphrase_written_with_an_escaped_quote_is_redacted_too(conn):
    """The description must not hold the passphrase however its literal is spelled."""
    make_shop(conn)
    backup_id = backup(conn, f"BACKUP DATABASE shop INTO '{COLL}' "
                             f"WITH encryption_passphrase = '{SECRET}''s'")
    (description,) = [r[2] for r in rows(conn, "SHOW JOBS") if r[0] == backup_id]
    assert SECRET not in description
    assert "encryption_passphrase = 'redacted'" in description
    for key, _ts, _arrival, value in conn.node.engine.versions(b"", KEY_MAX):
        assert value is None or SECRET.encode() not in value, key
    restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH new_db_name = 'r', "
                  f"encryption_passphrase = '{SECRET}''s'")
    assert all(SECRET not in str(v) for r in rows(conn, "SHOW JOBS") for v in r)


# -- 9. detached ---------------------------------------------------------------------------


def test_detached_backup_returns_a_job_id_and_finishes_in_the_background(conn):
    make_shop(conn)
    res = conn.execute(f"BACKUP DATABASE shop INTO '{COLL}' WITH detached")
    assert res.columns == ["job_id"]
    (job_id,), = res.rows
    shown = conn.execute(f"SHOW JOB WHEN COMPLETE {job_id}")
    job = dict(zip(shown.columns, shown.rows[0], strict=True))
    assert (job["job_id"], job["job_type"], job["status"]) == (job_id, "BACKUP", "succeeded")
    assert job["fraction_completed"] == 1.0 and job["error"] == ""
    (end,) = layer_ends(conn)
    mutate(conn, 0)
    res = conn.execute(f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' "
                       "WITH new_db_name = 'r', detached")
    assert res.columns == ["job_id"]
    shown = conn.execute(f"SHOW JOB WHEN COMPLETE {res.rows[0][0]}")
    assert shown.rows[0][3] == "succeeded"
    assert_restored(conn, "shop.t", "r.t", end, T_INDEXES)
    assert_restored(conn, "shop.u", "r.u", end, {})


# -- 10. a table OFFLINE for an IMPORT -----------------------------------------------------


def test_a_table_importing_at_backup_time_is_backed_up_as_before_the_import(conn, ext):
    make_shop(conn, n=20)
    before_rows = rows(conn, "SELECT * FROM shop.t ORDER BY id")
    before_fps = fingerprints(conn, "shop.t")
    (ext / "in.csv").parent.mkdir(parents=True, exist_ok=True)
    (ext / "in.csv").write_text("".join(f"{i},imp{i % 3},{i * 10}\n" for i in range(500, 530)))
    conn.execute("SET CLUSTER SETTING bulkio.import.batch_size = 4")
    conn.execute("SET CLUSTER SETTING jobs.debug.pausepoints = 'import.after_first_chunk'")
    with pytest.raises(JobPausedError, match=r"import\.after_first_chunk") as paused:
        conn.execute("IMPORT INTO shop.t CSV DATA ('nodelocal://self/in.csv')")
    conn.execute("RESET CLUSTER SETTING jobs.debug.pausepoints")
    import_id = paused.value.job_id
    error_of(conn, "SELECT count(*) FROM shop.t", "offline: importing")

    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH new_db_name = 'r1'")
    assert rows(conn, "SELECT * FROM r1.t ORDER BY id") == before_rows
    assert fingerprints(conn, "r1.t") == before_fps
    for index, cols in T_INDEXES.items():
        assert sorted(rows(conn, f"SELECT {cols} FROM r1.t@{index}")) == sorted(
            rows(conn, f"SELECT {cols} FROM r1.t"))
    assert rows(conn, "SELECT count(*) FROM r1.u") == [(5,)]

    # The import finishes; the next incremental brings the table in whole.
    conn.execute(f"RESUME JOB {import_id}")
    assert conn.execute(f"SHOW JOB WHEN COMPLETE {import_id}").rows[0][3] == "succeeded"
    assert rows(conn, "SELECT count(*) FROM shop.t") == [(len(before_rows) + 30,)]
    backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'")
    end = layer_ends(conn)[-1]
    restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH new_db_name = 'r2'")
    assert_restored(conn, "shop.t", "r2.t", end, T_INDEXES)


# -- 11. schema changes between backups ----------------------------------------------------


def test_incremental_after_create_index(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    mutate(conn, 0)
    conn.execute("CREATE INDEX t_vn_idx ON shop.t (v, n)")
    mutate(conn, 1)
    backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'")
    end = layer_ends(conn)[-1]
    mutate(conn, 2)
    restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH new_db_name = 'r'")
    assert_restored(conn, "shop.t", "r.t", end, {**T_INDEXES, "t_vn_idx": "id, v, n"})
    assert rows(conn, "SELECT id FROM r.t@t_vn_idx WHERE v = 's1' ORDER BY id") == [
        (i,) for i in range(2000, 2007)]
    assert [r[0] for r in fingerprints(conn, "r.t")] == \
        ["t_pkey", "t_v_idx", "t_n_key", "t_vn_idx"]


def test_incremental_after_drop_index(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    mutate(conn, 0)
    conn.execute("DROP INDEX shop.t@t_v_idx")
    mutate(conn, 1)
    backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'")
    end = layer_ends(conn)[-1]
    mutate(conn, 2)
    restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH new_db_name = 'r'")
    assert_restored(conn, "shop.t", "r.t", end, {"t_n_key": "id, n"})
    assert [r[0] for r in fingerprints(conn, "r.t")] == ["t_pkey", "t_n_key"]
    assert {r[1] for r in rows(conn, "SHOW INDEXES FROM r.t")} == {"t_pkey", "t_n_key"}
    error_of(conn, "SELECT id FROM r.t@t_v_idx")


def test_incremental_after_drop_table_and_create_table_with_the_same_name(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    conn.execute("DROP TABLE shop.t")
    conn.execute("CREATE TABLE shop.t (id INT PRIMARY KEY, w STRING, INDEX t_w_idx (w))")
    for i in range(0, 40, 3):  # some of the old keys again, with other values
        conn.execute("INSERT INTO shop.t VALUES ($1, $2)", [i, f"new{i % 4}"])
    backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'")
    end = layer_ends(conn)[-1]
    conn.execute("INSERT INTO shop.t VALUES (1000, 'later')")
    restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH new_db_name = 'r'")
    assert_restored(conn, "shop.t", "r.t", end, {"t_w_idx": "id, w"})
    assert_restored(conn, "shop.u", "r.u", end, {})
    assert sorted(r[1] for r in rows(conn, "SHOW TABLES FROM r")) == ["t", "u"]
    assert [r[0] for r in fingerprints(conn, "r.t")] == ["t_pkey", "t_w_idx"]
    # A second such round trip, then the table dropped for good.
    conn.execute("DROP TABLE shop.t")
    conn.execute("CREATE TABLE shop.t (id INT PRIMARY KEY, z INT)")
    conn.execute("INSERT INTO shop.t VALUES (7, 7)")
    backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'")
    end2 = layer_ends(conn)[-1]
    conn.execute("DROP TABLE shop.t")
    backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'")
    restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' {aost(end2)} "
                  "WITH new_db_name = 'r2'")
    assert_restored(conn, "shop.t", "r2.t", end2, {})
    restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH new_db_name = 'r3'")
    assert sorted(r[1] for r in rows(conn, "SHOW TABLES FROM r3")) == ["u"]


# -- more: what a restore reports, history around schema changes, cluster settings --------


def test_restore_of_a_chain_reports_the_rows_it_restored(conn):
    """The RESTORE result counts restored rows and index entries, not versions read from
    the layers' files (an updated key is in two layers; a deleted one is a tombstone)."""
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}'")
    for step in range(2):
        mutate(conn, step)
        backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}'")
    end = layer_ends(conn)[-1]
    _id, _st, _f, n_rows, n_entries, _b = restore(
        conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' WITH new_db_name = 'r'")
    assert_restored(conn, "shop.t", "r.t", end, T_INDEXES)
    (t_count,), = rows(conn, "SELECT count(*) FROM r.t")
    (u_count,), = rows(conn, "SELECT count(*) FROM r.u")
    assert (n_rows, n_entries) == (t_count + u_count, 2 * t_count)


def test_revision_history_restores_times_around_a_create_index_inside_a_layer(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}' WITH revision_history")
    mutate(conn, 0)
    before = now(conn)
    conn.execute("CREATE INDEX t_vn_idx ON shop.t (v, n)")
    created = now(conn)
    mutate(conn, 1)
    after = now(conn)
    backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}' WITH revision_history")
    mutate(conn, 2)
    for n, ts in enumerate((before, created, after)):
        restore(conn, f"RESTORE TABLE shop.t FROM LATEST IN '{COLL}' {aost(ts)} "
                      f"WITH into_db = 'defaultdb'")
        indexes = dict(T_INDEXES) if n == 0 else {**T_INDEXES, "t_vn_idx": "id, v, n"}
        assert_restored(conn, "shop.t", "defaultdb.t", ts, indexes)
        assert [r[0] for r in fingerprints(conn, "defaultdb.t")] == \
            ["t_pkey", *list(indexes)]
        conn.execute("DROP TABLE defaultdb.t")


def test_revision_history_restores_a_time_before_a_drop_index_inside_an_incremental(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}' WITH revision_history")
    mutate(conn, 0)
    before_drop = now(conn)
    conn.execute("DROP INDEX shop.t@t_v_idx")
    mutate(conn, 1)
    backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}' WITH revision_history")
    restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' {aost(before_drop)} "
                  "WITH new_db_name = 'r'")
    assert_restored(conn, "shop.t", "r.t", before_drop, T_INDEXES)


def test_revision_history_restores_a_time_before_a_drop_table_inside_an_incremental(conn):
    make_shop(conn)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}' WITH revision_history")
    mutate(conn, 0)
    before_drop = now(conn)
    conn.execute("DROP TABLE shop.u")
    mutate(conn, 1)
    backup(conn, f"BACKUP DATABASE shop INTO LATEST IN '{COLL}' WITH revision_history")
    restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' {aost(before_drop)} "
                  "WITH new_db_name = 'r'")
    assert sorted(r[1] for r in rows(conn, "SHOW TABLES FROM r")) == ["t", "u"]
    assert_restored(conn, "shop.t", "r.t", before_drop, T_INDEXES)
    assert_restored(conn, "shop.u", "r.u", before_drop, {})


def test_revision_history_restores_a_table_dropped_before_the_full_backup_ended(conn):
    make_shop(conn)
    conn.execute("CREATE TABLE shop.tmp (id INT PRIMARY KEY, x STRING)")
    conn.execute("INSERT INTO shop.tmp VALUES (1, 'one'), (2, 'two')")
    while_there = now(conn)
    conn.execute("DROP TABLE shop.tmp")
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}' WITH revision_history")
    restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' {aost(while_there)} "
                  "WITH new_db_name = 'r'")
    assert sorted(r[1] for r in rows(conn, "SHOW TABLES FROM r")) == ["t", "tmp", "u"]
    assert rows(conn, "SELECT * FROM r.tmp ORDER BY id") == [(1, "one"), (2, "two")]
    assert_restored(conn, "shop.t", "r.t", while_there, T_INDEXES)


def test_cluster_restore_as_of_a_time_brings_back_the_settings_of_that_time(conn, tmp_path):
    coll = f"file://{tmp_path}/cluster-backup"
    conn.execute("CREATE TABLE kv (k INT PRIMARY KEY)")
    conn.execute("SET CLUSTER SETTING gc.ttlseconds = 1111")
    backup(conn, f"BACKUP INTO '{coll}' WITH revision_history")
    conn.execute("SET CLUSTER SETTING gc.ttlseconds = 2222")
    conn.execute("SET CLUSTER SETTING bulkio.import.batch_size = 77")
    then = now(conn)
    conn.execute("INSERT INTO kv VALUES (1)")
    conn.execute("SET CLUSTER SETTING gc.ttlseconds = 3333")
    conn.execute("RESET CLUSTER SETTING bulkio.import.batch_size")
    backup(conn, f"BACKUP INTO LATEST IN '{coll}' WITH revision_history")
    with tidemark.connect(tmp_path / "fresh") as other:
        restore(other, f"RESTORE FROM LATEST IN '{coll}' {aost(then)}")
        assert rows(other, "SELECT * FROM kv") == []
        assert rows(other, "SHOW CLUSTER SETTING gc.ttlseconds") == [(2222,)]
        assert rows(other, "SHOW CLUSTER SETTING bulkio.import.batch_size") == [(77,)]


def test_a_table_backup_with_revision_history_holds_no_other_table_of_its_database(conn):
    make_shop(conn)
    conn.execute("CREATE TABLE shop.secret (id INT PRIMARY KEY, v STRING)")
    conn.execute("INSERT INTO shop.secret VALUES (1, 'not a target')")
    mid = now(conn)
    mutate(conn, 0)
    backup(conn, f"BACKUP TABLE shop.t INTO '{COLL}' WITH revision_history")
    conn.execute("CREATE TABLE shop.later (id INT PRIMARY KEY)")
    mutate(conn, 1)
    backup(conn, f"BACKUP TABLE shop.t INTO LATEST IN '{COLL}' WITH revision_history")
    conn.execute("CREATE DATABASE r")
    for table in ("secret", "u", "later"):
        e = error_of(conn, f"RESTORE TABLE shop.{table} FROM LATEST IN '{COLL}' {aost(mid)} "
                           "WITH into_db = 'r'", "is not in the backup at")
        assert e.code == "42P01" and "did not exist then, or was not a target" in e.hint
    files = [f for layer in _manifests(conn) for f in layer.files]
    assert {_table_of(f.span.start) for f in files} == {_table_id(conn, "shop", "t")}
    restore(conn, f"RESTORE TABLE shop.t FROM LATEST IN '{COLL}' {aost(mid)} "
                  "WITH into_db = 'r'")
    assert_restored(conn, "shop.t", "r.t", mid, T_INDEXES)


def test_cluster_revision_history_restores_around_a_drop_database(conn, tmp_path):
    """A database dropped inside a layer's window: restored at a time before the drop (in
    the full, and in the incremental), and not brought back (empty) at a time after it."""
    coll = f"file://{tmp_path}/cluster"
    conn.execute("CREATE DATABASE a")
    conn.execute("CREATE TABLE a.t (id INT PRIMARY KEY, v STRING)")
    conn.execute("INSERT INTO a.t VALUES (1, 'one'), (2, 'two')")
    conn.execute("CREATE DATABASE gone")
    conn.execute("CREATE TABLE gone.g (id INT PRIMARY KEY)")
    conn.execute("INSERT INTO gone.g VALUES (7)")
    before_first_drop = now(conn)
    conn.execute("DROP DATABASE gone CASCADE")
    backup(conn, f"BACKUP INTO '{coll}' WITH revision_history")
    conn.execute("INSERT INTO a.t VALUES (3, 'three')")
    before_drop = now(conn)
    conn.execute("DROP DATABASE a CASCADE")
    after_drop = now(conn)
    conn.execute("CREATE TABLE defaultdb.k (id INT PRIMARY KEY)")
    backup(conn, f"BACKUP INTO LATEST IN '{coll}' WITH revision_history")

    def databases(store: str, as_of: int) -> tuple[list[str], tidemark.Connection]:
        other = tidemark.connect(tmp_path / store)
        restore(other, f"RESTORE FROM LATEST IN '{coll}' {aost(as_of)}")
        return sorted(r[0] for r in rows(other, "SHOW DATABASES")), other

    names, other = databases("s1", before_first_drop)
    assert names == ["a", "defaultdb", "gone"]
    assert rows(other, "SELECT * FROM gone.g") == [(7,)]
    other.close()
    names, other = databases("s2", before_drop)
    assert names == ["a", "defaultdb"]
    assert rows(other, "SELECT id FROM a.t ORDER BY id") == [(1,), (2,), (3,)]
    other.close()
    names, other = databases("s3", after_drop)
    assert names == ["defaultdb"]
    other.close()


def _manifests(conn, coll: str = COLL) -> list:
    from tidemark.backup import destination, manifest
    from tidemark.cloud import StorageContext, open_storage
    storage = open_storage(coll, StorageContext(
        external_dir=Path(conn.node.engine.root) / "external"))
    try:
        latest = destination.read_latest(storage)
        return [manifest.read_manifest(storage, d, None)
                for d in destination.chain(storage, latest)]
    finally:
        storage.close()


def _table_of(key: bytes) -> int:
    from tidemark.kv.keys import decode_index_prefix
    return decode_index_prefix(key)[0]


def _table_id(conn, db: str, table: str) -> int:
    from tidemark.catalog import catalog

    def read(txn):
        return catalog.table_by_name(txn, catalog.database_by_name(txn, db).id, table).id
    return conn.node.db.run(read)


def test_revision_history_refuses_a_time_before_what_gc_had_left(conn):
    """A full backup WITH revision_history holds history from the store's GC threshold on
    (its revision_start): a restore to an earlier time is refused, naming that start."""
    make_shop(conn)
    early = now(conn)
    mutate(conn, 0)
    time.sleep(1.1)
    conn.execute("SET CLUSTER SETTING gc.ttlseconds = 1")
    threshold = conn.node.run_gc().threshold
    assert threshold > early
    conn.execute("SET CLUSTER SETTING gc.ttlseconds = 14400")
    mutate(conn, 1)
    backup(conn, f"BACKUP DATABASE shop INTO '{COLL}' WITH revision_history")
    e = error_of(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' {aost(early)} "
                       "WITH new_db_name = 'r'", "before the history")
    assert e.code == "22023" and format_ts(threshold) in str(e)
    restore(conn, f"RESTORE DATABASE shop FROM LATEST IN '{COLL}' {aost(threshold)} "
                  "WITH new_db_name = 'r'")
    assert_restored(conn, "shop.t", "r.t", threshold, T_INDEXES)
