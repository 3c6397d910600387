"""The online index backfill job (DESIGN.md, "Bulk operations"): the pause point, WRITE_ONLY
maintenance while paused, PAUSE / CANCEL while it runs, concurrent writers, UNIQUE failures.

"Correct" always means: every scan through an ``@index`` hint equals the primary index, and
SHOW FINGERPRINTS equals that of the same indexes built after the fact on a copy of the table.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

import tidemark
from tidemark.errors import JobPausedError, RetryableError, SQLError, TidemarkError
from tidemark.kv.keys import index_span
from tidemark.schemachange.index import PAUSE_AFTER_FIRST_CHUNK
from tidemark.sql.ast import TableName

COLUMNS = ["job_id", "job_type", "description", "status", "running_status", "created",
           "started", "finished", "fraction_completed", "error", "coordinator_id"]
SCHEMA = "(id INT PRIMARY KEY, v STRING, n INT, u INT)"
WAIT_S = 20.0


@pytest.fixture
def store(tmp_path):
    return tmp_path / "s"


def make_conn(store, rows: int, batch: int):
    c = tidemark.connect(store)
    c.execute(f"CREATE TABLE t {SCHEMA}")
    for start in range(0, rows, 1000):
        c.execute("INSERT INTO t VALUES " + ", ".join(
            f"({i}, 'v{i % 13}', {i % 101}, {i})" for i in range(start, min(rows, start + 1000))))
    c.execute(f"SET CLUSTER SETTING bulkio.index_backfill.batch_size = {batch}")
    return c


@pytest.fixture
def conn(store):
    c = make_conn(store, rows=300, batch=20)
    yield c
    c.close()


def jobs(conn) -> list[dict]:
    return [dict(zip(COLUMNS, r, strict=True)) for r in conn.execute("SHOW JOBS").rows]


def job(conn, job_id: int) -> dict:
    return dict(zip(COLUMNS, conn.execute(f"SHOW JOB {job_id}").rows[0], strict=True))


def job_of(conn, description: str) -> dict:
    [found] = [j for j in jobs(conn) if j["description"] == description]
    return found


def wait_complete(conn, job_id: int) -> dict:
    return dict(zip(COLUMNS, conn.execute(f"SHOW JOB WHEN COMPLETE {job_id}").rows[0],
                    strict=True))


def table_desc(conn, name: str = "t"):
    return conn.node.db.run(lambda txn: conn.session.table(txn, TableName(name)))


def live_entries(conn, table_id: int, index_id: int) -> list:
    return conn.node.engine.scan(*index_span(table_id, index_id), conn.node.engine.frontier())


def job_protections(conn, job_id: int) -> list:
    return [r for r in conn.node.engine.protected_records() if r.owner == f"job {job_id}"]


def index_names(conn, table: str = "t") -> list[str]:
    names = [r[1] for r in conn.execute(f"SHOW INDEXES FROM {table}").rows]
    return list(dict.fromkeys(names))


def assert_indexes_match_primary(conn, table: str = "t") -> list[tuple]:
    primary = sorted(conn.execute(f"SELECT id, v, n, u FROM {table}@{table}_pkey").rows)
    for name in index_names(conn, table):
        via = conn.execute(f"SELECT id, v, n, u FROM {table}@{name}").rows
        assert sorted(via) == primary, name
    return primary


def fingerprints(conn, table: str) -> dict[str, int]:
    return {("primary" if name == f"{table}_pkey" else name): fp
            for name, fp in conn.execute(f"SHOW FINGERPRINTS FROM TABLE {table}").rows}


def assert_fingerprints_match_copy(conn, index_sql: list[str]) -> None:
    """Copy t, build the same indexes on the copy without interruptions, compare."""
    conn.execute("SET CLUSTER SETTING jobs.debug.pausepoints = ''")
    conn.execute("DROP TABLE IF EXISTS t_copy")
    conn.execute(f"CREATE TABLE t_copy {SCHEMA}")
    conn.execute("INSERT INTO t_copy SELECT * FROM t")
    for sql in index_sql:
        conn.execute(sql.replace(" ON t ", " ON t_copy "))
    original = fingerprints(conn, "t")
    assert set(original) == {"primary", *(s.split(" INDEX ")[1].split()[0] for s in index_sql)}
    assert original == fingerprints(conn, "t_copy")


def pause_at_first_chunk(conn, sql: str) -> int:
    conn.execute(f"SET CLUSTER SETTING jobs.debug.pausepoints = '{PAUSE_AFTER_FIRST_CHUNK}'")
    with pytest.raises(TidemarkError) as info:
        conn.execute(sql)
    conn.execute("SET CLUSTER SETTING jobs.debug.pausepoints = ''")
    job_id = job_of(conn, sql)["job_id"]
    assert isinstance(info.value, JobPausedError)
    assert str(job_id) in str(info.value) and PAUSE_AFTER_FIRST_CHUNK in str(info.value)
    return job_id


def wait_until(predicate, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


# -- the pause point -----------------------------------------------------------------------

INDEX_V = "CREATE INDEX iv ON t (v, n DESC) STORING (u)"


def test_paused_index_is_write_only_and_resumes_to_a_correct_index(conn):
    job_id = pause_at_first_chunk(conn, INDEX_V)
    paused = job(conn, job_id)
    assert paused["status"] == "paused"
    assert paused["running_status"] == f"paused at pause point {PAUSE_AFTER_FIRST_CHUNK}"
    assert 0 < paused["fraction_completed"] < 1 and paused["finished"] is None
    assert paused["error"] == ""

    # Not readable, not listed, not fingerprinted; the name is taken.
    with pytest.raises(SQLError) as info:
        conn.execute("SELECT * FROM t@iv")
    assert info.value.code == "42704"
    assert index_names(conn) == ["t_pkey"]
    assert list(fingerprints(conn, "t")) == ["primary"]
    with pytest.raises(SQLError) as info:
        conn.execute(INDEX_V)
    assert info.value.code == "42P07"

    # WRITE_ONLY: writes maintain the index while it is paused.
    table = table_desc(conn)
    index_id = table.index("iv").id
    assert len(live_entries(conn, table.id, index_id)) == 20  # the first chunk
    conn.execute("INSERT INTO t VALUES (1000, 'new', 1, 1000), (1001, 'v3', 2, 1001)")
    assert len(live_entries(conn, table.id, index_id)) == 22
    conn.execute("DELETE FROM t WHERE id IN (1, 2, 3)")  # backfilled already: entries go
    assert len(live_entries(conn, table.id, index_id)) == 19
    conn.execute("UPDATE t SET v = 'upd' WHERE id IN (5, 250, 251)")  # one backfilled, two not
    assert len(live_entries(conn, table.id, index_id)) == 21
    conn.execute("UPDATE t SET n = n + 1000 WHERE id >= 280")  # not backfilled yet
    assert len(live_entries(conn, table.id, index_id)) == 41
    conn.execute("DELETE FROM t WHERE id = 290")  # its entry, written by the update, goes
    conn.execute("UPDATE t SET id = 2000 WHERE id = 10")  # a new primary key
    assert len(live_entries(conn, table.id, index_id)) == 40
    conn.execute("UPDATE t SET u = u + 5000 WHERE id = 11")  # a STORING column

    conn.execute(f"RESUME JOB {job_id}")
    done = wait_complete(conn, job_id)
    assert done["status"] == "succeeded" and done["fraction_completed"] == 1.0
    assert done["running_status"] is None and done["error"] == ""
    assert done["started"] == paused["started"] and done["finished"] >= done["started"]
    assert job_protections(conn, job_id) == []  # the backfill's protected timestamp is gone

    rows = assert_indexes_match_primary(conn)
    assert len(rows) == 300 + 2 - 3 - 1
    assert len(live_entries(conn, table.id, index_id)) == len(rows)
    # (v, n DESC): n is 49, 48 and 5
    assert conn.execute("SELECT id FROM t@iv WHERE v = 'upd'").rows == [(251,), (250,), (5,)]
    assert conn.execute("SELECT u FROM t@iv WHERE id = 11").rows == [(5011,)]
    assert_fingerprints_match_copy(conn, [INDEX_V])


def test_cancel_while_paused_removes_the_index(conn):
    job_id = pause_at_first_chunk(conn, INDEX_V)
    table = table_desc(conn)
    index_id = table.index("iv").id
    assert len(job_protections(conn, job_id)) == 1
    conn.execute("INSERT INTO t VALUES (1000, 'x', 1, 1000)")
    conn.execute("UPDATE t SET v = 'y' WHERE id = 200")
    assert len(live_entries(conn, table.id, index_id)) == 22

    conn.execute(f"CANCEL JOB {job_id}")
    done = wait_complete(conn, job_id)
    assert done["status"] == "canceled" and done["error"] == "" and done["finished"]
    assert table_desc(conn).index("iv") is None
    assert live_entries(conn, table.id, index_id) == []
    assert job_protections(conn, job_id) == []
    with pytest.raises(SQLError):
        conn.execute("SELECT * FROM t@iv")
    assert index_names(conn) == ["t_pkey"]
    assert conn.execute("SELECT count(*) FROM t").rows == [(301,)]
    # The name is free again and a fresh build is correct.
    conn.execute(INDEX_V)
    assert table_desc(conn).index("iv").id != index_id
    assert live_entries(conn, table.id, index_id) == []
    assert_indexes_match_primary(conn)
    assert_fingerprints_match_copy(conn, [INDEX_V])


# -- PAUSE / CANCEL while the job runs ------------------------------------------------------


def start_create_index(store, sql: str) -> tuple[threading.Thread, list]:
    """Run ``sql`` on its own connection in a thread; the outcome lands in the list."""
    outcome: list = []

    def run() -> None:
        c = tidemark.connect(store)
        try:
            c.execute(sql)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)
        finally:
            c.close()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def running_job(conn, sql: str) -> dict:
    def check():
        found = [j for j in jobs(conn) if j["description"] == sql]
        if found and found[0]["status"] == "running" and found[0]["fraction_completed"] > 0:
            assert found[0]["running_status"] == "backfilling"
            assert found[0]["coordinator_id"] is not None
            return found[0]
        assert not found or found[0]["status"] in ("pending", "running"), found
        return None
    return wait_until(check, "the job to make progress")


@pytest.fixture
def big(store):
    c = make_conn(store, rows=4000, batch=4)  # 1000 batches
    yield c
    c.close()


def test_pause_job_while_it_runs(big, store):
    sql = "CREATE INDEX iv ON t (v)"
    thread, outcome = start_create_index(store, sql)
    job_id = running_job(big, sql)["job_id"]
    big.execute(f"PAUSE JOB {job_id}")
    thread.join(WAIT_S)
    assert not thread.is_alive()
    [exc] = outcome
    assert isinstance(exc, JobPausedError) and str(job_id) in str(exc), exc
    paused = job(big, job_id)
    assert paused["status"] == "paused", paused
    assert paused["running_status"] == "paused by PAUSE JOB"
    assert 0 < paused["fraction_completed"] < 1
    with pytest.raises(SQLError):
        big.execute("SELECT * FROM t@iv")

    big.execute("INSERT INTO t VALUES (9000, 'while paused', 0, 9000)")
    big.execute("SET CLUSTER SETTING bulkio.index_backfill.batch_size = 1000")
    big.execute(f"RESUME JOB {job_id}")
    assert wait_complete(big, job_id)["status"] == "succeeded"
    assert len(assert_indexes_match_primary(big)) == 4001
    assert_fingerprints_match_copy(big, [sql])


def test_cancel_job_while_it_runs(big, store):
    sql = "CREATE INDEX iv ON t (v)"
    thread, outcome = start_create_index(store, sql)
    job_id = running_job(big, sql)["job_id"]
    table = table_desc(big)
    index_id = table.index("iv").id
    big.execute(f"CANCEL JOB {job_id}")
    thread.join(WAIT_S)
    assert not thread.is_alive()
    [exc] = outcome
    assert isinstance(exc, SQLError) and exc.code == "57014", exc
    assert f"job {job_id} was canceled" in str(exc)
    done = wait_complete(big, job_id)
    assert done["status"] == "canceled" and done["fraction_completed"] < 1
    assert table_desc(big).index("iv") is None
    assert live_entries(big, table.id, index_id) == []
    assert job_protections(big, job_id) == []


# -- concurrent writers ----------------------------------------------------------------------


class Writer(threading.Thread):
    """Inserts, updates (values, STORING columns, primary keys) and deletes rows on its own
    connection, retrying conflicts, keeping ``u`` unique."""

    def __init__(self, store, first_free: int):
        super().__init__(daemon=True)
        self.store = store
        self.next = first_free
        self.ops = 0
        self.retries = 0
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def fresh(self) -> int:
        self.next += 1
        return self.next

    def run(self) -> None:
        rnd = random.Random(7)
        c = tidemark.connect(self.store)
        try:
            while not self.stop.is_set():
                op = rnd.random()
                k = rnd.randrange(self.next)
                if op < 0.3:
                    f = self.fresh()
                    sql, args = "INSERT INTO t VALUES ($1, $2, $3, $4)", [
                        f, f"w{f % 17}", f % 101, f]
                elif op < 0.55:
                    sql, args = "UPDATE t SET v = $1, n = n + 1 WHERE id = $2", [
                        f"u{rnd.randrange(40)}", k]
                elif op < 0.7:
                    sql, args = "UPDATE t SET u = $1 WHERE id = $2", [self.fresh(), k]
                elif op < 0.85:
                    sql, args = "DELETE FROM t WHERE id = $1", [k]
                else:
                    sql, args = "UPDATE t SET id = $1 WHERE id = $2", [self.fresh(), k]
                for _ in range(100):
                    try:
                        c.execute(sql, args)
                        break
                    except RetryableError:
                        self.retries += 1
                self.ops += 1
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            c.close()


def test_backfill_with_a_concurrent_writer(store):
    conn = make_conn(store, rows=2000, batch=10)
    index_sql = [INDEX_V, "CREATE UNIQUE INDEX iu ON t (u)", "CREATE INDEX inn ON t (n)"]
    writer = Writer(store, first_free=100_000)
    writer.start()
    try:
        wait_until(lambda: writer.ops >= 20 or writer.errors, "the writer to start")
        for sql in index_sql:
            # Paused after its first chunk (index WRITE_ONLY, half backfilled) until the
            # writer has written more, then resumed with the writer still going: every
            # build surely overlaps writes (timing alone left some without one).
            job_id = pause_at_first_chunk(conn, sql)
            before = writer.ops
            wait_until(lambda before=before: writer.ops >= before + 5 or writer.errors,
                       f"writes while {sql} is paused")
            conn.execute(f"RESUME JOB {job_id}")
            assert wait_complete(conn, job_id)["status"] == "succeeded"
        time.sleep(0.05)
    finally:
        writer.stop.set()
        writer.join(WAIT_S)
    assert not writer.errors, writer.errors
    assert all(j["status"] == "succeeded" for j in jobs(conn))
    rows = assert_indexes_match_primary(conn)
    assert len({r[3] for r in rows}) == len(rows)
    assert_fingerprints_match_copy(conn, index_sql)
    conn.close()


# -- UNIQUE --------------------------------------------------------------------------------


def test_unique_index_with_duplicates_fails_cleanly(conn):
    conn.execute("UPDATE t SET u = 7 WHERE id = 250")  # duplicates row 7, 12 batches apart
    sql = "CREATE UNIQUE INDEX iu ON t (u)"
    with pytest.raises(SQLError) as info:
        conn.execute(sql)
    message = str(info.value)
    assert info.value.code == "23505"
    assert "SQLSTATE 23505" in message and "Key (u)=(7)" in message
    failed = job_of(conn, sql)
    assert str(failed["job_id"]) in message
    assert failed["status"] == "failed" and failed["finished"] is not None
    assert "Key (u)=(7)" in failed["error"] and "23505" in failed["error"]
    table = table_desc(conn)
    assert table.index("iu") is None
    assert live_entries(conn, table.id, table.next_index_id - 1) == []
    assert job_protections(conn, failed["job_id"]) == []
    assert index_names(conn) == ["t_pkey"]
    # Fix the data: the same statement now works.
    conn.execute("UPDATE t SET u = 7000 WHERE id = 250")
    conn.execute(sql)
    assert_indexes_match_primary(conn)
    assert_fingerprints_match_copy(conn, [sql])


def test_unique_index_allows_many_nulls(conn):
    conn.execute("UPDATE t SET u = NULL WHERE id % 50 = 0")
    conn.execute("CREATE UNIQUE INDEX iu ON t (u)")
    assert conn.execute("SELECT count(*) FROM t@iu WHERE u IS NULL").rows == [(6,)]
    assert_indexes_match_primary(conn)
    assert_fingerprints_match_copy(conn, ["CREATE UNIQUE INDEX iu ON t (u)"])


def test_unique_index_duplicates_written_while_paused(conn):
    sql = "CREATE UNIQUE INDEX iu ON t (u)"
    job_id = pause_at_first_chunk(conn, sql)
    # A duplicate of a backfilled entry: the WRITE_ONLY unique index refuses it.
    with pytest.raises(SQLError) as info:
        conn.execute("INSERT INTO t VALUES (1000, 'x', 0, 3)")
    assert info.value.code == "23505"
    # A duplicate of a row not backfilled yet: either refused now, or the job fails on it.
    try:
        conn.execute("INSERT INTO t VALUES (1001, 'x', 0, 299)")
    except SQLError as exc:
        assert exc.code == "23505"
        expected = "succeeded"
    else:
        expected = "failed"
    conn.execute(f"RESUME JOB {job_id}")
    done = wait_complete(conn, job_id)
    assert done["status"] == expected, done
    if expected == "failed":
        assert "Key (u)=(299)" in done["error"] and "23505" in done["error"]
        assert table_desc(conn).index("iu") is None
    assert_indexes_match_primary(conn)


def test_unique_build_over_duplicates_deleted_while_paused_fails_with_23505(tmp_path):
    # The backfill reads at R, when b=10 was duplicated; deleting one duplicate while the
    # index is write-only leaves the other without its entry. The build must fail as a
    # duplicate (23505), not as an internal validation error.
    with tidemark.connect(tmp_path / "s") as c:
        c.execute("CREATE TABLE d (a INT PRIMARY KEY, b INT)")
        c.execute("INSERT INTO d VALUES (1, 10), (2, 10), (3, 30)")
        c.execute("SET CLUSTER SETTING bulkio.index_backfill.batch_size = 1")
        sql = "CREATE UNIQUE INDEX d_b ON d (b)"
        job_id = pause_at_first_chunk(c, sql)
        c.execute("DELETE FROM d WHERE a = 1")
        c.execute(f"RESUME JOB {job_id}")
        done = wait_complete(c, job_id)
        assert done["status"] == "failed", done
        assert "23505" in done["error"] and "Key (b)=(10)" in done["error"], done
        assert c.execute("SELECT count(*) FROM d").rows == [(2,)]
