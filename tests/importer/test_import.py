"""IMPORT INTO through SQL, on real stores and real files: happy paths, failures, jobs."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

import tidemark
import tidemark.importer  # registers the IMPORT job type in this process
from tidemark.clock import format_ts
from tidemark.cloud import StorageContext, open_storage
from tidemark.errors import JobPausedError, SQLError, TidemarkError
from tidemark.jobs import record as rec_mod
from tidemark.kv.keys import prefix_end, table_prefix

PAUSE = "SET CLUSTER SETTING jobs.debug.pausepoints = 'import.after_first_chunk'"
NO_PAUSE = "RESET CLUSTER SETTING jobs.debug.pausepoints"
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


@pytest.fixture
def conn(tmp_path):
    c = tidemark.connect(tmp_path / "s")
    yield c
    c.close()


@pytest.fixture
def ext(conn):
    """The store's external folder: where nodelocal://self/ points."""
    return conn.node.engine.root / "external"


def fingerprints(conn, table: str, as_of: int | None = None) -> list[int]:
    aost = f" AS OF SYSTEM TIME '{format_ts(as_of)}'" if as_of is not None else ""
    return [fp for _, fp in conn.execute(f"SHOW FINGERPRINTS FROM TABLE {table}{aost}").rows]


def rows(conn, sql: str) -> list[tuple]:
    return conn.execute(sql).rows


def job_details(conn, job_id: int) -> dict:
    return conn.registry.get(job_id).details


def import_paused(conn, sql: str) -> int:
    """Run an IMPORT that pauses at its pause point; returns the job ID."""
    conn.execute(PAUSE)
    with pytest.raises(JobPausedError, match=r"import\.after_first_chunk") as err:
        conn.execute(sql)
    conn.execute(NO_PAUSE)
    return err.value.job_id


def show_job(conn, job_id: int) -> dict:
    res = conn.execute(f"SHOW JOB WHEN COMPLETE {job_id}")
    return dict(zip(res.columns, res.rows[0], strict=True))


# -- happy paths ----------------------------------------------------------------------------


def test_several_files_every_option_and_both_local_schemes(conn, ext, tmp_path):
    conn.execute("""CREATE TABLE t (
        id INT PRIMARY KEY, name STRING NOT NULL, qty INT, price DECIMAL(10,2),
        note STRING DEFAULT 'none', ref UUID DEFAULT gen_random_uuid(),
        UNIQUE INDEX t_name_key (name), INDEX t_qty_idx (qty) STORING (price))""")
    conn.execute("SET CLUSTER SETTING bulkio.import.batch_size = 2")
    (ext / "in").mkdir()
    (ext / "in" / "a.csv").write_text(
        "id|name|qty|price\n"          # skipped header
        "1|apple|10|1.5\n"
        "# a comment line\n"
        "2|pear||2\n"                   # qty NULL (nullif = '')
        "\n"                            # blank lines are skipped
        '3|"fig|jam"|7|0.333\n'         # quoted delimiter; price rounded to 0.33
        "4|kiwi|1|9\n"                  # beyond row_limit = 3: not imported
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.csv").write_text(
        "id|name|qty|price\n"
        '5|"multi\nline"|5|5\n'
        "6|plum|6|\n"
    )
    res = conn.execute(
        "IMPORT INTO t (id, name, qty, price) CSV DATA ('nodelocal://self/in/a.csv', $1) "
        "WITH delimiter = '|', skip = '1', nullif = '', comment = '#', row_limit = 3, "
        "allow_quoted_null", [f"file://{other}/b.csv"])
    assert res.columns == ["job_id", "status", "fraction_completed", "rows",
                           "index_entries", "bytes"]
    job_id, status, fraction, n, entries, nbytes = res.rows[0]
    assert (status, fraction, n, entries) == ("succeeded", 1.0, 5, 10)
    assert nbytes > 0
    got = rows(conn, "SELECT id, name, qty, price, note FROM t ORDER BY id")
    assert got == [(1, "apple", 10, Decimal("1.50"), "none"),
                   (2, "pear", None, Decimal("2.00"), "none"),
                   (3, "fig|jam", 7, Decimal("0.33"), "none"),
                   (5, "multi\nline", 5, Decimal("5.00"), "none"),
                   (6, "plum", 6, None, "none")]
    refs = [r for (r,) in rows(conn, "SELECT ref FROM t")]
    assert len(set(refs)) == 5 and all(isinstance(r, uuid.UUID) and r.version == 4
                                       for r in refs)
    # Every index answers like the primary: the entries were built for all of them.
    assert rows(conn, "SELECT id FROM t@t_name_key WHERE name = 'plum'") == [(6,)]
    assert rows(conn, "SELECT id, price FROM t@t_qty_idx WHERE qty >= 6 ORDER BY qty") == [
        (6, None), (3, Decimal("0.33")), (1, Decimal("1.50"))]
    # The same rows INSERTed give the same fingerprints (byte-identical entries).
    conn.execute("""CREATE TABLE u (
        id INT PRIMARY KEY, name STRING NOT NULL, qty INT, price DECIMAL(10,2),
        note STRING DEFAULT 'none', ref UUID DEFAULT gen_random_uuid(),
        UNIQUE INDEX u_name_key (name), INDEX u_qty_idx (qty) STORING (price))""")
    conn.execute("INSERT INTO u SELECT * FROM t")
    assert fingerprints(conn, "t") == fingerprints(conn, "u")
    job = show_job(conn, job_id)
    assert (job["job_type"], job["status"]) == ("IMPORT", "succeeded")
    assert job["description"].startswith("IMPORT INTO t(id, name, qty, price) CSV DATA "
                                         "('nodelocal://self/in/a.csv', 'file://")
    assert "delimiter = '|'" in job["description"]


def test_into_a_table_with_rows_keeps_them_and_as_of_before_s_shows_the_old_table(
        conn, ext):
    conn.execute("CREATE TABLE t (id INT PRIMARY KEY, v STRING, INDEX t_v_idx (v))")
    conn.execute("INSERT INTO t VALUES (1, 'old1'), (3, 'old3'), (10, 'old10')")
    conn.execute("DELETE FROM t WHERE id = 10")  # a tombstone below S: 10 may be imported
    before = fingerprints(conn, "t")
    old = rows(conn, "SELECT * FROM t ORDER BY id")
    (ext / "new.csv").write_text("2,new2\n4,new4\n10,new10\n")
    job_id = conn.execute("IMPORT INTO t CSV DATA ('nodelocal://self/new.csv')").rows[0][0]
    assert rows(conn, "SELECT * FROM t ORDER BY id") == [
        (1, "old1"), (2, "new2"), (3, "old3"), (4, "new4"), (10, "new10")]
    assert rows(conn, "SELECT id FROM t@t_v_idx WHERE v >= 'old' ORDER BY v") == [(1,), (3,)]
    s = job_details(conn, job_id)["ts"]
    assert rows(conn, f"SELECT * FROM t AS OF SYSTEM TIME '{format_ts(s - 1)}' "
                      "ORDER BY id") == old
    assert fingerprints(conn, "t", as_of=s - 1) == before
    assert fingerprints(conn, "t") != before
    # Every imported version is at S, each chunk with its own (later) arrival.
    p = table_prefix(conn.node.db.run(lambda txn: conn.session.table(
        txn, _name("t"))).id)
    imported = [(k, ts, a) for k, ts, a, v in conn.node.engine.versions(p, prefix_end(p))
                if a > ts]
    assert imported and {ts for _, ts, _ in imported} == {s}


def _name(table: str):
    from tidemark.sql.ast import TableName
    return TableName(table)


def test_table_without_primary_key_and_detached(conn, ext):
    conn.execute("CREATE TABLE n (a INT, b STRING)")
    (ext / "n.csv").write_text("".join(f"{i},x{i}\n" for i in range(50)))
    conn.execute("SET CLUSTER SETTING bulkio.import.batch_size = 7")
    res = conn.execute("IMPORT INTO n CSV DATA ('nodelocal://self/n.csv') WITH detached")
    assert res.columns == ["job_id"]
    job = show_job(conn, res.rows[0][0])
    assert job["status"] == "succeeded"
    assert rows(conn, "SELECT count(*), count(DISTINCT rowid), sum(a) FROM n") == [
        (50, 50, sum(range(50)))]
    conn.execute("INSERT INTO n VALUES (100, 'later')")  # a later unique_rowid() is free
    assert rows(conn, "SELECT count(*) FROM n") == [(51,)]


def test_memory_uri(conn):
    storage = open_storage("memory://imports-test/dir", StorageContext())
    storage.write("m.csv", b"1,one\n2,two\n")
    conn.execute("CREATE TABLE t (id INT PRIMARY KEY, v STRING)")
    conn.execute("IMPORT INTO t CSV DATA ('memory://imports-test/dir/m.csv')")
    assert rows(conn, "SELECT * FROM t ORDER BY id") == [(1, "one"), (2, "two")]


# -- while it runs: offline, pause, resume, cancel ------------------------------------------


def _many(ext, name: str, n: int, start: int = 0) -> None:
    (ext / name).write_text("".join(f"{i},v{i % 7}\n" for i in range(start, start + n)))


def test_table_is_offline_while_paused_then_resumes_from_its_checkpoint(conn, ext):
    conn.execute("CREATE TABLE t (id INT PRIMARY KEY, v STRING, INDEX t_v_idx (v))")
    conn.execute("INSERT INTO t VALUES (-1, 'before')")
    conn.execute("SET CLUSTER SETTING bulkio.import.batch_size = 10")
    _many(ext, "a.csv", 35)
    _many(ext, "b.csv", 25, start=35)
    job_id = import_paused(
        conn, "IMPORT INTO t CSV DATA ('nodelocal://self/a.csv', 'nodelocal://self/b.csv')")
    for sql in ("SELECT * FROM t", "INSERT INTO t VALUES (1000, 'x')",
                "SHOW FINGERPRINTS FROM TABLE t", "CREATE INDEX t_x ON t (v)"):
        with pytest.raises(SQLError, match='table "t" is offline: importing') as err:
            conn.execute(sql)
        assert err.value.code == "55000"
    job = dict(zip(*(lambda r: (r.columns, r.rows[0]))(conn.execute(f"SHOW JOB {job_id}")),
                   strict=True))
    assert job["status"] == "paused" and 0 < job["fraction_completed"] < 1
    cp = conn.registry.get(job_id).checkpoint
    assert (cp["file"], cp["rows"], cp["line"]) == (0, 10, 10)
    conn.execute(f"RESUME JOB {job_id}")
    assert show_job(conn, job_id)["status"] == "succeeded"
    assert rows(conn, "SELECT count(*), min(id), max(id) FROM t") == [(61, -1, 59)]
    assert sorted(rows(conn, "SELECT id FROM t@t_v_idx")) == sorted(
        rows(conn, "SELECT id FROM t@t_pkey"))
    # 6 chunks of a.csv (4) and b.csv (3) minus one: 35 = 10+10+10+5, 25 = 10+10+5.
    tid = conn.node.db.run(lambda txn: conn.session.table(txn, _name("t"))).id
    p = table_prefix(tid)
    arrivals = {a for _, ts, a, _ in conn.node.engine.versions(p, prefix_end(p)) if a > ts}
    assert len(arrivals) == 7


def test_pause_job_statement_and_cancel_while_paused_restores_the_table(conn, ext):
    conn.execute("CREATE TABLE t (id INT PRIMARY KEY, v STRING, UNIQUE INDEX t_v_key (v))")
    conn.execute("INSERT INTO t VALUES (5, 'five'), (100, 'hundred')")
    before = fingerprints(conn, "t")
    conn.execute("SET CLUSTER SETTING bulkio.import.batch_size = 4")
    (ext / "c.csv").write_text("".join(f"{i},n{i}\n" for i in range(10, 30)))
    job_id = import_paused(conn, "IMPORT INTO t CSV DATA ('nodelocal://self/c.csv')")
    conn.execute(f"PAUSE JOB {job_id}")  # already paused: a no-op
    conn.execute(f"CANCEL JOB {job_id}")
    job = show_job(conn, job_id)
    assert job["status"] == "canceled"
    assert fingerprints(conn, "t") == before
    assert rows(conn, "SELECT * FROM t ORDER BY id") == [(5, "five"), (100, "hundred")]
    assert conn.node.engine.protected_records() == []
    conn.execute("INSERT INTO t VALUES (10, 'n10')")  # writable again; the key is free


def test_a_replayed_chunk_is_not_a_duplicate(conn, ext):
    """A crash after a chunk's ingest but before its checkpoint re-reads that chunk."""
    conn.execute("CREATE TABLE n (a INT, b STRING)")  # rowids must come out the same
    conn.execute("SET CLUSTER SETTING bulkio.import.batch_size = 5")
    (ext / "r.csv").write_text("".join(f"{i},r{i}\n" for i in range(12)))
    job_id = import_paused(conn, "IMPORT INTO n CSV DATA ('nodelocal://self/r.csv')")

    def rewind(txn):  # back to the checkpoint before the first chunk
        rec = rec_mod.read(txn, job_id)
        rec.checkpoint = {**rec.checkpoint, "offset": 0, "line": 0, "file_rows": 0,
                          "rows": 0, "index_entries": 0, "bytes": 0,
                          "arrival": rec.details["ts"]}
        rec_mod.write(txn, rec)
    conn.node.db.run(rewind)
    conn.execute("SET CLUSTER SETTING bulkio.import.batch_size = 3")  # other chunking too
    conn.execute(f"RESUME JOB {job_id}")
    assert show_job(conn, job_id)["status"] == "succeeded"
    assert rows(conn, "SELECT count(*), count(DISTINCT rowid) FROM n") == [(12, 12)]


# -- failures -------------------------------------------------------------------------------

BAD_FILES = [
    pytest.param("1,a\n2,b,extra\n", 2, "expected 2 fields, got 3", id="column-count"),
    pytest.param("1,a\nabc,b\n", 2, "could not parse 'abc' as type INT8", id="not-an-int"),
    pytest.param("7,x\n8,y\n5,dup\n", 3,
                 r'"t_pkey": Key \(id\)=\(5\) already exists in the table', id="dup-existing"),
    pytest.param("7,x\n8,y\n7,again\n", 3,
                 r'"t_pkey": Key \(id\)=\(7\) already imported from line 1', id="dup-in-chunk"),
    pytest.param("7,x\n8,y\n9,z\n10,w\n7,again\n", 5,
                 r'"t_pkey": Key \(id\)=\(7\) already imported by an earlier row',
                 id="dup-across-chunks"),
    pytest.param("7,x\n8,\n", 2, r'null value in column "v" violates not-null', id="not-null"),
    pytest.param("7,x\n\xff\xfe,y\n", 2, "invalid UTF-8", id="bad-utf8"),
]


@pytest.mark.parametrize(("content", "line", "reason"), BAD_FILES)
def test_bad_csv_fails_the_job_naming_file_line_and_reason_and_leaves_nothing(
        conn, ext, content, line, reason):
    conn.execute("CREATE TABLE t (id INT PRIMARY KEY, v STRING NOT NULL, INDEX t_v_idx (v))")
    conn.execute("INSERT INTO t VALUES (5, 'five'), (6, 'six')")
    conn.execute("SET CLUSTER SETTING bulkio.import.batch_size = 3")
    before = fingerprints(conn, "t")
    (ext / "good.csv").write_text("20,g20\n21,g21\n22,g22\n23,g23\n")
    (ext / "bad.csv").write_bytes(content.encode("latin-1"))
    with pytest.raises(SQLError, match=rf"failed: nodelocal://self/bad.csv: line {line}: "
                                       rf"(.*){reason}"):
        conn.execute("IMPORT INTO t CSV DATA ('nodelocal://self/good.csv', "
                     "'nodelocal://self/bad.csv') WITH nullif = ''")
    assert fingerprints(conn, "t") == before
    assert rows(conn, "SELECT * FROM t ORDER BY id") == [(5, "five"), (6, "six")]
    assert rows(conn, "SELECT id FROM t@t_v_idx ORDER BY id") == [(5,), (6,)]
    job = conn.execute("SHOW JOBS").rows[0]
    assert (job[1], job[3]) == ("IMPORT", "failed") and "bad.csv: line" in job[9]
    assert conn.node.engine.protected_records() == []


def test_unique_secondary_index_duplicates_fail_naming_the_value(conn, ext):
    conn.execute("CREATE TABLE t (id INT PRIMARY KEY, email STRING, UNIQUE INDEX t_e (email))")
    conn.execute("INSERT INTO t VALUES (1, 'a@x')")
    before = fingerprints(conn, "t")
    (ext / "against-old.csv").write_text("2,b@x\n3,a@x\n")
    with pytest.raises(SQLError, match=r"\(email\)=\(a@x\) is duplicated"):
        conn.execute("IMPORT INTO t CSV DATA ('nodelocal://self/against-old.csv')")
    (ext / "among-new.csv").write_text("2,b@x\n3,b@x\n")
    with pytest.raises(SQLError, match=r"line 2: .*\(email\)=\(b@x\) already imported"):
        conn.execute("IMPORT INTO t CSV DATA ('nodelocal://self/among-new.csv')")
    assert fingerprints(conn, "t") == before
    assert rows(conn, "SELECT * FROM t") == [(1, "a@x")]


def test_statement_errors_leave_the_table_online_and_create_no_job(conn, ext):
    conn.execute("CREATE TABLE t (id INT PRIMARY KEY, v STRING NOT NULL)")
    cases = [
        ("IMPORT INTO t CSV DATA ('gs://bucket/x.csv')",
         r'unsupported external storage scheme "gs".*supported schemes: file, memory, '
         "nodelocal"),
        ("IMPORT INTO t CSV DATA ('nodelocal://self/missing.csv')",
         "external storage file not found: nodelocal://self/missing.csv"),
        ("IMPORT INTO t CSV DATA ('nodelocal://self/../escape.csv')", "not allowed"),
        (f"IMPORT INTO t CSV DATA ('file:///tmp/x.csv?AWS_SECRET_ACCESS_KEY={SECRET}')",
         "AWS_SECRET_ACCESS_KEY=redacted"),
        ("IMPORT INTO nope CSV DATA ('nodelocal://self/x.csv')", "does not exist"),
        ("IMPORT INTO t (id) CSV DATA ('nodelocal://self/x.csv')",
         'column "v" is NOT NULL without a DEFAULT'),
        ("IMPORT INTO t (id, zz) CSV DATA ('nodelocal://self/x.csv')",
         'column "zz" does not exist'),
        ("IMPORT INTO t CSV DATA ('nodelocal://self/x.csv') WITH delimiter = '||'",
         "single character"),
        ("IMPORT INTO t CSV DATA ('nodelocal://self/x.csv') WITH skip = '-1'",
         "non-negative integer"),
        ("IMPORT INTO t CSV DATA ('nodelocal://self/x.csv') WITH bogus = 1",
         'invalid IMPORT option "bogus"'),
        ("IMPORT INTO t CSV DATA ('nodelocal://self/x.csv') WITH detached = 'yes'",
         "takes no value"),
    ]
    (ext / "x.csv").write_text("1,a\n")
    for sql, message in cases:
        with pytest.raises(TidemarkError, match=message) as err:
            conn.execute(sql)
        assert SECRET not in str(err.value)
    assert conn.execute("SHOW JOBS").rows == []
    assert rows(conn, "SELECT count(*) FROM t") == [(0,)]


def test_a_second_import_while_the_first_is_paused_is_refused(conn, ext):
    conn.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    conn.execute("SET CLUSTER SETTING bulkio.import.batch_size = 1")
    (ext / "x.csv").write_text("1\n2\n")
    job_id = import_paused(conn, "IMPORT INTO t CSV DATA ('nodelocal://self/x.csv')")
    with pytest.raises(SQLError, match="offline: importing"):
        conn.execute("IMPORT INTO t CSV DATA ('nodelocal://self/x.csv')")
    conn.execute(f"RESUME JOB {job_id}")
    assert show_job(conn, job_id)["status"] == "succeeded"
    assert rows(conn, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]


def test_a_job_adopted_after_it_published_the_table_just_finishes(conn, ext):
    """A crash after the table came back PUBLIC, before the job was marked succeeded."""
    conn.execute("CREATE TABLE t (id INT PRIMARY KEY, v STRING)")
    (ext / "p.csv").write_text("1,a\n2,b\n")
    job_id = conn.execute("IMPORT INTO t CSV DATA ('nodelocal://self/p.csv')").rows[0][0]
    conn.execute("UPDATE t SET v = 'changed later' WHERE id = 1")
    after = fingerprints(conn, "t")

    def unfinish(txn):
        rec = rec_mod.read(txn, job_id)
        rec.status, rec.lease_owner, rec.lease_expiry = rec_mod.Status.RUNNING, "", 0
        rec_mod.write(txn, rec)
    conn.node.db.run(unfinish)
    assert show_job(conn, job_id)["status"] == "succeeded"
    # ... and a revert after publication changes nothing either.
    conn.node.db.run(unfinish)
    conn.execute(f"CANCEL JOB {job_id}")
    assert show_job(conn, job_id)["status"] == "canceled"
    assert fingerprints(conn, "t") == after


def test_the_statement_conflicts_with_a_write_to_the_table_after_its_read(conn):
    """S is just above the statement's read: a write in between must make it retry."""
    from tidemark.errors import TxnConflictError
    from tidemark.sql.import_stmt import _read_whole_span
    from tidemark.storage.engine import Span

    conn.execute("CREATE TABLE t (id INT PRIMARY KEY, v STRING)")
    conn.execute("INSERT INTO t VALUES (1, 'a')")
    table = conn.node.db.run(lambda txn: conn.session.table(txn, _name("t")))
    p = table_prefix(table.id)
    txn = conn.node.db.txn()
    _read_whole_span(txn, Span(p, prefix_end(p)))
    txn.put(b"\x01unrelated", b"x")
    conn.execute("INSERT INTO t VALUES (2, 'b')")  # commits after txn's read
    with pytest.raises(TxnConflictError):
        txn.commit()
