"""Jobs through SQL: SHOW JOBS / SHOW JOB [WHEN COMPLETE], PAUSE / RESUME / CANCEL JOB in every
status, and DROP INDEX as a job (DESIGN.md, "Jobs")."""

from __future__ import annotations

import datetime as dt
import time

import pytest

import tidemark
from tidemark.catalog.descriptors import IndexState
from tidemark.errors import JobPausedError, SQLError, TidemarkError
from tidemark.kv.keys import index_span
from tidemark.schemachange.index import (
    PAUSE_AFTER_FIRST_CHUNK,
    SCHEMA_CHANGE,
    set_index_state,
)
from tidemark.sql.ast import TableName

COLUMNS = ["job_id", "job_type", "description", "status", "running_status", "created",
           "started", "finished", "fraction_completed", "error", "coordinator_id"]
ROWS = 60
BATCH = 10


@pytest.fixture
def conn(tmp_path):
    c = tidemark.connect(tmp_path / "s")
    c.execute("CREATE TABLE t (id INT PRIMARY KEY, v STRING, n INT)")
    c.execute("INSERT INTO t VALUES " + ", ".join(
        f"({i}, 'v{i % 7}', {i})" for i in range(ROWS)))
    c.execute(f"SET CLUSTER SETTING bulkio.index_backfill.batch_size = {BATCH}")
    yield c
    c.close()


def show_job(conn, job_id: int) -> dict:
    result = conn.execute(f"SHOW JOB {job_id}")
    assert result.columns == COLUMNS
    assert len(result.rows) == 1
    return dict(zip(COLUMNS, result.rows[0], strict=True))


def show_jobs(conn) -> list[dict]:
    result = conn.execute("SHOW JOBS")
    assert result.columns == COLUMNS
    return [dict(zip(COLUMNS, r, strict=True)) for r in result.rows]


def job_of(conn, description: str) -> dict:
    matching = [j for j in show_jobs(conn) if j["description"] == description]
    assert len(matching) == 1, matching
    return matching[0]


def fails(conn, sql: str, code: str, *fragments: str) -> SQLError:
    with pytest.raises(SQLError) as info:
        conn.execute(sql)
    assert info.value.code == code, (sql, info.value)
    for fragment in fragments:
        assert fragment in str(info.value), (sql, str(info.value))
    return info.value


def paused_create_index(conn, sql: str) -> int:
    """Run ``sql`` (a CREATE INDEX) until the backfill pauses after its first chunk."""
    conn.execute(f"SET CLUSTER SETTING jobs.debug.pausepoints = '{PAUSE_AFTER_FIRST_CHUNK}'")
    with pytest.raises(JobPausedError):
        conn.execute(sql)
    conn.execute("SET CLUSTER SETTING jobs.debug.pausepoints = ''")
    job = job_of(conn, sql)
    assert job["status"] == "paused"
    return job["job_id"]


def failed_unique_index(conn) -> int:
    conn.execute("INSERT INTO t VALUES (1000, 'dup', 1), (1001, 'dup', 2)")
    sql = "CREATE UNIQUE INDEX u ON t (v)"
    fails(conn, sql, "23505")
    conn.execute("DELETE FROM t WHERE id >= 1000")
    return job_of(conn, sql)["job_id"]


def table_desc(conn, name: str = "t"):
    return conn.node.db.run(lambda txn: conn.session.table(txn, TableName(name)))


def live_entries(conn, table_id: int, index_id: int) -> list:
    return conn.node.engine.scan(*index_span(table_id, index_id), conn.node.engine.frontier())


def pending_drop_job(conn, index_name: str) -> int:
    """A DROP INDEX job committed but not yet run (what DROP INDEX commits before it waits).

    The caller stops its connection's adoption loop first, so the job stays pending.
    """
    table = table_desc(conn)
    index = table.index(index_name)

    def create(txn):
        set_index_state(txn, table.id, index.id, IndexState.DROP)
        return conn.registry.create(txn, SCHEMA_CHANGE, f"DROP INDEX t@{index_name}", {
            "op": "drop", "table_id": table.id, "index_id": index.id})
    return conn.node.db.run(create)


# -- SHOW JOBS / SHOW JOB ------------------------------------------------------------------


def test_create_index_job_record_and_show_jobs_columns(conn):
    assert show_jobs(conn) == []
    sql = "CREATE INDEX t_v_idx ON t (v)"
    conn.execute(sql)
    [job] = show_jobs(conn)
    assert job["job_type"] == "SCHEMA CHANGE"
    assert job["description"] == sql
    assert job["status"] == "succeeded"
    assert job["running_status"] is None
    assert job["error"] == ""
    assert job["fraction_completed"] == 1.0
    assert job["coordinator_id"] == conn.registry.instance_id
    assert isinstance(job["job_id"], int) and job["job_id"] > 0
    for col in ("created", "started", "finished"):
        assert isinstance(job[col], dt.datetime) and job[col].tzinfo is not None, col
    assert job["created"] <= job["started"] <= job["finished"]
    # SHOW JOB and SHOW JOB WHEN COMPLETE (already complete) give the same row.
    assert show_job(conn, job["job_id"]) == job
    done = conn.execute(f"SHOW JOB WHEN COMPLETE {job['job_id']}")
    assert done.columns == COLUMNS and dict(zip(COLUMNS, done.rows[0], strict=True)) == job
    # A job ID as a placeholder, or a string of digits.
    assert conn.execute("SHOW JOB $1", [job["job_id"]]).rows == done.rows
    assert conn.execute(f"SHOW JOB '{job['job_id']}'").rows == done.rows
    # Newest first.
    conn.execute("CREATE INDEX t_n_idx ON t (n)")
    assert [j["description"] for j in show_jobs(conn)] == ["CREATE INDEX t_n_idx ON t (n)", sql]


def test_unknown_job_ids_are_errors(conn):
    for sql in ("SHOW JOB 12345", "SHOW JOB WHEN COMPLETE 12345", "PAUSE JOB 12345",
                "RESUME JOB 12345", "CANCEL JOB 12345"):
        fails(conn, sql, "42704", "job with ID 12345 does not exist")
    fails(conn, "SHOW JOB 'abc'", "22023", "job ID")
    fails(conn, "PAUSE JOB 1.5", "22023", "job ID")


def test_job_control_refused_inside_a_transaction(conn):
    conn.execute("CREATE INDEX t_v_idx ON t (v)")
    job_id = show_jobs(conn)[0]["job_id"]
    for sql, name in ((f"PAUSE JOB {job_id}", "PAUSE JOB"),
                      (f"RESUME JOB {job_id}", "RESUME JOB"),
                      (f"CANCEL JOB {job_id}", "CANCEL JOB"),
                      (f"SHOW JOB WHEN COMPLETE {job_id}", "SHOW JOB WHEN COMPLETE")):
        conn.execute("BEGIN")
        fails(conn, sql, "25001", name, "inside a transaction")
        fails(conn, "SELECT 1", "25P02")  # the transaction is aborted
        conn.execute("ROLLBACK")
    # Reading jobs inside a transaction is fine.
    conn.execute("BEGIN")
    assert conn.execute("SHOW JOBS").rows[0][0] == job_id
    assert conn.execute(f"SHOW JOB {job_id}").rows[0][3] == "succeeded"
    conn.execute("COMMIT")
    assert show_job(conn, job_id)["status"] == "succeeded"


# -- control statements in every status ----------------------------------------------------


def test_control_of_a_succeeded_job(conn):
    conn.execute("CREATE INDEX t_v_idx ON t (v)")
    job_id = show_jobs(conn)[0]["job_id"]
    before = show_job(conn, job_id)
    fails(conn, f"PAUSE JOB {job_id}", "55000", "succeeded", "cannot be paused")
    fails(conn, f"RESUME JOB {job_id}", "55000", "succeeded", "only a paused job")
    fails(conn, f"CANCEL JOB {job_id}", "55000", "already succeeded")
    assert show_job(conn, job_id) == before
    assert len(conn.execute("SELECT * FROM t@t_v_idx").rows) == ROWS


def test_control_of_a_failed_job(conn):
    job_id = failed_unique_index(conn)
    job = show_job(conn, job_id)
    assert job["status"] == "failed" and "23505" in job["error"]
    assert job["finished"] is not None
    fails(conn, f"PAUSE JOB {job_id}", "55000", "failed", "cannot be paused")
    fails(conn, f"RESUME JOB {job_id}", "55000", "failed", "only a paused job")
    fails(conn, f"CANCEL JOB {job_id}", "55000", "already failed")
    assert show_job(conn, job_id) == job
    when_complete = conn.execute(f"SHOW JOB WHEN COMPLETE {job_id}").rows[0]
    assert when_complete[3] == "failed"  # reports how it ended, does not fail


def test_control_of_a_paused_job_then_resume(conn):
    conn.registry.stop_adopting()  # no adoption loop: the statuses in between are deterministic
    job_id = paused_create_index(conn, "CREATE INDEX t_v_idx ON t (v)")
    job = show_job(conn, job_id)
    assert job["running_status"] == f"paused at pause point {PAUSE_AFTER_FIRST_CHUNK}"
    assert job["finished"] is None
    conn.execute(f"PAUSE JOB {job_id}")  # already paused: no-op
    assert show_job(conn, job_id)["status"] == "paused"
    conn.execute(f"RESUME JOB {job_id}")
    job = show_job(conn, job_id)
    assert job["status"] == "running" and job["running_status"] is None
    conn.execute(f"RESUME JOB {job_id}")  # running: no-op
    conn.execute(f"PAUSE JOB {job_id}")  # nobody runs it: pause-requested
    assert show_job(conn, job_id)["status"] == "pause-requested"
    conn.execute(f"RESUME JOB {job_id}")  # the pause never happened
    assert show_job(conn, job_id)["status"] == "running"
    job = dict(zip(COLUMNS, conn.execute(f"SHOW JOB WHEN COMPLETE {job_id}").rows[0],
                   strict=True))
    assert job["status"] == "succeeded" and job["fraction_completed"] == 1.0
    assert job["running_status"] is None and job["finished"] is not None
    fails(conn, f"RESUME JOB {job_id}", "55000", "succeeded")
    assert sorted(conn.execute("SELECT id FROM t@t_v_idx").rows) == [(i,) for i in range(ROWS)]


def test_control_of_a_canceled_job(conn):
    conn.registry.stop_adopting()  # no adoption loop: the statuses in between are deterministic
    job_id = paused_create_index(conn, "CREATE INDEX t_v_idx ON t (v)")
    conn.execute(f"CANCEL JOB {job_id}")
    assert show_job(conn, job_id)["status"] == "cancel-requested"
    conn.execute(f"CANCEL JOB {job_id}")  # still being canceled: no-op
    fails(conn, f"PAUSE JOB {job_id}", "55000", "cancel-requested", "cannot be paused")
    fails(conn, f"RESUME JOB {job_id}", "55000", "cancel-requested", "only a paused job")
    job = dict(zip(COLUMNS, conn.execute(f"SHOW JOB WHEN COMPLETE {job_id}").rows[0],
                   strict=True))
    assert job["status"] == "canceled" and job["error"] == "" and job["finished"] is not None
    fails(conn, f"CANCEL JOB {job_id}", "55000", "already canceled")
    fails(conn, f"PAUSE JOB {job_id}", "55000", "canceled", "cannot be paused")
    fails(conn, f"RESUME JOB {job_id}", "55000", "canceled", "only a paused job")
    assert table_desc(conn).index("t_v_idx") is None


def test_control_of_pending_jobs(conn):
    conn.execute("CREATE INDEX a ON t (v)")
    conn.execute("CREATE INDEX b ON t (n)")
    conn.registry.stop_adopting()  # no adoption loop here: a committed job stays pending
    table = table_desc(conn)
    a_id, b_id = table.index("a").id, table.index("b").id

    paused = pending_drop_job(conn, "a")
    job = show_job(conn, paused)
    assert job["status"] == "pending"
    assert job["started"] is None and job["coordinator_id"] is None
    conn.execute(f"RESUME JOB {paused}")  # pending: nothing to resume
    assert show_job(conn, paused)["status"] == "pending"
    conn.execute(f"PAUSE JOB {paused}")
    assert show_job(conn, paused)["status"] == "paused"
    fails(conn, "SELECT * FROM t@a", "42704")  # DROP: no longer readable
    conn.execute(f"RESUME JOB {paused}")
    assert show_job(conn, paused)["status"] == "running"
    assert conn.execute(f"SHOW JOB WHEN COMPLETE {paused}").rows[0][3] == "succeeded"
    assert live_entries(conn, table.id, a_id) == []

    canceled = pending_drop_job(conn, "b")
    conn.execute(f"CANCEL JOB {canceled}")
    assert show_job(conn, canceled)["status"] == "cancel-requested"
    assert conn.execute(f"SHOW JOB WHEN COMPLETE {canceled}").rows[0][3] == "canceled"
    # A drop cannot be undone (the index stopped being maintained when it committed; real
    # DROP INDEX jobs refuse CANCEL): canceling one that was made cancelable finishes it.
    assert live_entries(conn, table.id, b_id) == []
    assert table_desc(conn).index("b") is None


def test_started_is_set_for_a_job_paused_while_pending(conn):
    conn.execute("CREATE INDEX a ON t (v)")
    conn.registry.stop_adopting()
    job_id = pending_drop_job(conn, "a")
    conn.execute(f"PAUSE JOB {job_id}")
    conn.execute(f"RESUME JOB {job_id}")
    job = dict(zip(COLUMNS, conn.execute(f"SHOW JOB WHEN COMPLETE {job_id}").rows[0],
                   strict=True))
    assert job["status"] == "succeeded" and job["finished"] is not None
    assert job["started"] is not None


# -- DROP INDEX ----------------------------------------------------------------------------


def test_drop_index_is_a_job_and_tombstones_its_entries(conn):
    conn.execute("CREATE INDEX t_v_idx ON t (v) STORING (n)")
    table = table_desc(conn)
    index_id = table.index("t_v_idx").id
    before_fp = dict(conn.execute("SHOW FINGERPRINTS FROM TABLE t").rows)
    before = conn.execute("SELECT cluster_logical_timestamp()").rows[0][0]
    via_index = sorted(conn.execute("SELECT id, v, n FROM t@t_v_idx").rows)
    assert len(live_entries(conn, table.id, index_id)) == ROWS

    conn.execute("DROP INDEX t@t_v_idx")
    job = show_jobs(conn)[0]
    assert job["job_type"] == "SCHEMA CHANGE"
    assert job["description"] == "DROP INDEX t@t_v_idx"
    assert job["status"] == "succeeded" and job["finished"] is not None
    assert table_desc(conn).index("t_v_idx") is None
    fails(conn, "SELECT * FROM t@t_v_idx", "42704")
    assert live_entries(conn, table.id, index_id) == []
    versions = conn.node.engine.versions(*index_span(table.id, index_id))
    newest: dict[bytes, bytes | None] = {}
    for key, _ts, _arrival, value in versions:  # ordered by key, ts
        newest[key] = value
    assert len(newest) == ROWS and all(v is None for v in newest.values())  # MVCC tombstones
    assert list(dict(conn.execute("SHOW FINGERPRINTS FROM TABLE t").rows)) == ["t_pkey"]

    # History before the drop still reads through the index (its descriptor was PUBLIC then).
    old = sorted(conn.execute(
        f"SELECT id, v, n FROM t@t_v_idx AS OF SYSTEM TIME '{before}'").rows)
    assert old == via_index
    old_fp = conn.execute(f"SHOW FINGERPRINTS FROM TABLE t AS OF SYSTEM TIME '{before}'").rows
    assert dict(old_fp) == before_fp
    conn.execute(f"BEGIN AS OF SYSTEM TIME '{before}'")
    assert conn.execute("SELECT count(*) FROM t@t_v_idx WHERE v = 'v3'").rows == [
        (sum(1 for i in range(ROWS) if i % 7 == 3),)]
    conn.execute("COMMIT")

    fails(conn, "DROP INDEX t@t_v_idx", "42704")
    conn.execute("DROP INDEX IF EXISTS t@t_v_idx")
    fails(conn, "DROP INDEX t@t_pkey", "0A000")


def test_drop_index_in_an_explicit_transaction_runs_its_job_at_commit(conn):
    conn.execute("CREATE INDEX t_v_idx ON t (v)")
    table = table_desc(conn)
    index_id = table.index("t_v_idx").id
    conn.execute("BEGIN")
    conn.execute("DROP INDEX t@t_v_idx")
    conn.execute("COMMIT")
    job = show_jobs(conn)[0]
    assert (job["description"], job["status"]) == ("DROP INDEX t@t_v_idx", "succeeded")
    assert live_entries(conn, table.id, index_id) == []

    conn.execute("CREATE INDEX t_v_idx ON t (v)")
    conn.execute("BEGIN")
    conn.execute("DROP INDEX t@t_v_idx")
    conn.execute("ROLLBACK")
    assert show_jobs(conn)[0]["description"] == "CREATE INDEX t_v_idx ON t (v)"  # no new job
    assert len(conn.execute("SELECT * FROM t@t_v_idx").rows) == ROWS


def test_drop_index_while_its_backfill_is_paused(conn):
    job_id = paused_create_index(conn, "CREATE INDEX t_v_idx ON t (v)")
    try:
        conn.execute("DROP INDEX t@t_v_idx")
    except SQLError:
        return  # refusing the drop while the index is being added is fine
    conn.execute(f"RESUME JOB {job_id}")
    job = dict(zip(COLUMNS, conn.execute(f"SHOW JOB WHEN COMPLETE {job_id}").rows[0],
                   strict=True))
    assert job["status"] in ("failed", "canceled")
    assert "internal error" not in job["error"] and "Traceback" not in job["error"]


# -- settings, adoption, and schema changes racing a paused job -----------------------------


def test_job_settings(conn):
    conn.execute("SET CLUSTER SETTING jobs.registry.lease_duration = '1s'")
    assert conn.execute("SHOW CLUSTER SETTING jobs.registry.lease_duration").rows
    with pytest.raises(TidemarkError, match="at least 100ms"):
        conn.execute("SET CLUSTER SETTING jobs.registry.lease_duration = '10ms'")
    # A comma-separated list, spaces allowed.
    conn.execute("SET CLUSTER SETTING jobs.debug.pausepoints = "
                 f"'some.other.point , {PAUSE_AFTER_FIRST_CHUNK}'")
    with pytest.raises(JobPausedError):
        conn.execute("CREATE INDEX t_v_idx ON t (v)")
    conn.execute("SET CLUSTER SETTING jobs.debug.pausepoints = 'some.other.point'")
    conn.execute("CREATE INDEX t_n_idx ON t (n)")  # not paused by another point's name


def test_resumed_job_is_adopted_by_the_connections_adoption_loop(conn):
    job_id = paused_create_index(conn, "CREATE INDEX t_v_idx ON t (v)")
    conn.execute(f"RESUME JOB {job_id}")
    deadline = time.monotonic() + 10
    while show_job(conn, job_id)["status"] != "succeeded":  # no statement waits on it
        assert time.monotonic() < deadline, show_job(conn, job_id)
        time.sleep(0.02)
    assert show_job(conn, job_id)["coordinator_id"] == conn.registry.instance_id
    assert sorted(conn.execute("SELECT id FROM t@t_v_idx").rows) == [(i,) for i in range(ROWS)]


def test_drop_table_while_its_index_backfill_is_paused(conn):
    job_id = paused_create_index(conn, "CREATE INDEX t_v_idx ON t (v)")
    table = table_desc(conn)
    try:
        conn.execute("DROP TABLE t")
    except SQLError:
        return  # refusing the drop while an index is being added is fine
    conn.execute(f"RESUME JOB {job_id}")
    job = dict(zip(COLUMNS, conn.execute(f"SHOW JOB WHEN COMPLETE {job_id}").rows[0],
                   strict=True))
    assert job["status"] in ("failed", "canceled")
    assert conn.node.engine.scan(*index_span(table.id, 1), conn.node.engine.frontier()) == []
    assert "validation" not in job["error"] and "dropped" in job["error"]


def test_cancel_of_a_pending_drop_index_job(conn):
    conn.execute("CREATE INDEX b ON t (n)")
    conn.registry.stop_adopting()
    # DROP INDEX committed, and its process died before running the job.
    job_id = pending_drop_job(conn, "b")
    try:
        conn.execute(f"CANCEL JOB {job_id}")
    except SQLError:
        return  # refusing to cancel a DROP INDEX (CockroachDB: not cancelable) is fine
    assert conn.execute(f"SHOW JOB WHEN COMPLETE {job_id}").rows[0][3] == "canceled"
    # Canceled means the drop did not happen: the index is usable again, or at least gone
    # with its name free.
    if table_desc(conn).index("b") is not None:
        assert len(conn.execute("SELECT * FROM t@b").rows) == ROWS
    else:
        conn.execute("CREATE INDEX b ON t (n)")


class _Protecting:
    """A test job: protects the store's whole keyspace, then does what its details say,
    never releasing the protection itself."""

    def __init__(self, record):
        self.record = record

    def resume(self, ctx):
        from tidemark.jobs.registry import protection_owner
        from tidemark.storage.engine import KEY_MAX, Span
        ctx.node.engine.protect(ctx.node.db.now(), [Span(b"", KEY_MAX)],
                                owner=protection_owner(ctx.job_id))
        then = self.record.details["then"]
        if then == "fail":
            raise SQLError("failing on purpose", code="XX000")
        if then == "pause":
            ctx.pause_point("test.protecting", checked=True)

    def on_fail_or_cancel(self, ctx, error):
        pass


@pytest.mark.parametrize("then", ["succeed", "fail", "pause"])
def test_the_registry_releases_what_a_job_protected_once_it_has_ended(conn, then):
    from tidemark.jobs.registry import register_resumer
    register_resumer("TEST PROTECTING", _Protecting)
    job_id = conn.node.db.run(lambda txn: conn.registry.create(
        txn, "TEST PROTECTING", "protects and forgets", {"then": then}))
    try:
        conn.registry.wait(job_id)
    except TidemarkError:
        pass
    records = [r.owner for r in conn.node.engine.protected_records()]
    if then == "pause":  # a paused job keeps what it protects
        assert records == [f"job {job_id}"]
        conn.execute(f"CANCEL JOB {job_id}")
        res = conn.execute(f"SHOW JOB WHEN COMPLETE {job_id}")
        assert dict(zip(res.columns, res.rows[0], strict=True))["status"] == "canceled"
    assert conn.node.engine.protected_records() == []


def test_adoption_frees_what_an_ended_job_still_holds(conn):
    """A process that died between recording a job's end and freeing its protection and
    credentials left them behind: the next adoption pass frees them."""
    from tidemark.jobs.registry import protection_owner, register_resumer
    from tidemark.storage.engine import KEY_MAX, Span
    register_resumer("TEST PROTECTING", _Protecting)
    job_id = conn.node.db.run(lambda txn: conn.registry.create(
        txn, "TEST PROTECTING", "ends", {"then": "succeed", "secret_ref": "secret-test"}))
    conn.registry.wait(job_id)
    engine = conn.node.engine
    assert engine.protected_records() == [] and engine.get_secret("secret-test") is None
    # What a crash right after the job was recorded as succeeded would have left:
    engine.protect(engine.frontier(), [Span(b"", KEY_MAX)], owner=protection_owner(job_id))
    engine.put_secret("secret-test", b"credentials")
    engine.protect(engine.frontier(), [Span(b"", KEY_MAX)], owner="job 12345")  # no such job
    conn.registry.adopt_once()
    assert [r.owner for r in engine.protected_records()] == ["job 12345"]
    assert engine.get_secret("secret-test") is None
