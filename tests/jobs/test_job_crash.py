"""Jobs survive the death of the process running them (DESIGN.md, "Jobs"): real subprocesses
killed with SIGKILL, and ``tidemark start`` nodes adopting jobs."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import tidemark
from tidemark.errors import JobPausedError
from tidemark.kv.keys import index_span
from tidemark.schemachange.index import PAUSE_AFTER_FIRST_CHUNK
from tidemark.sql.ast import TableName

COLUMNS = ["job_id", "job_type", "description", "status", "running_status", "created",
           "started", "finished", "fraction_completed", "error", "coordinator_id"]
SCHEMA = "(id INT PRIMARY KEY, v STRING, n INT)"
WAIT_S = 20.0
TIDEMARK = str(Path(sys.executable).with_name("tidemark"))

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def fill(conn, table: str, rows: int) -> None:
    conn.execute(f"CREATE TABLE {table} {SCHEMA}")
    for start in range(0, rows, 2000):
        conn.execute(f"INSERT INTO {table} VALUES " + ", ".join(
            f"({i}, 'v{i % 37}', {i % 1000})" for i in range(start, min(rows, start + 2000))))


def job(conn, job_id: int) -> dict:
    return dict(zip(COLUMNS, conn.execute(f"SHOW JOB {job_id}").rows[0], strict=True))


def find_job(conn, description: str) -> dict | None:
    for row in conn.execute("SHOW JOBS").rows:
        if row[2] == description:
            return dict(zip(COLUMNS, row, strict=True))
    return None


def wait_until(predicate, what: str, timeout: float = WAIT_S, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}")
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def no_adoption(conn):
    """Stop this connection's adoption loop: only statements run jobs here."""
    conn.registry.stop_adopting()
    return conn


def check_index(conn, index: str, sql: str) -> None:
    """``t@index`` equals the primary index; its fingerprint equals an uninterrupted build of
    the same index on a copy; the backfill left one version per entry, all at one timestamp."""
    primary = sorted(conn.execute("SELECT id, v, n FROM t@t_pkey").rows)
    assert sorted(conn.execute(f"SELECT id, v, n FROM t@{index}").rows) == primary
    table = conn.node.db.run(lambda txn: conn.session.table(txn, TableName("t")))
    versions = conn.node.engine.versions(*index_span(table.id, table.index(index).id))
    assert len(versions) == len(primary) == len({key for key, *_ in versions})
    assert len({ts for _, ts, _, _ in versions}) == 1  # the read timestamp of the checkpoint
    conn.execute(f"CREATE TABLE t_copy {SCHEMA}")
    conn.execute("INSERT INTO t_copy SELECT * FROM t")
    conn.execute(sql.replace(" ON t ", " ON t_copy "))
    fp = dict(conn.execute("SHOW FINGERPRINTS FROM TABLE t").rows)
    fp_copy = dict(conn.execute("SHOW FINGERPRINTS FROM TABLE t_copy").rows)
    assert fp[index] == fp_copy[index] and fp["t_pkey"] == fp_copy["t_copy_pkey"]
    assert conn.node.engine.protected_records() == []


# -- SIGKILL during a backfill ---------------------------------------------------------------


def test_backfill_survives_sigkill_of_its_process(tmp_path):
    store = tmp_path / "s"
    sql = "CREATE INDEX iv ON t (v)"
    conn = no_adoption(tidemark.connect(store))
    try:
        fill(conn, "t", 20_000)
        conn.execute("SET CLUSTER SETTING bulkio.index_backfill.batch_size = 10")
        conn.execute("SET CLUSTER SETTING jobs.registry.lease_duration = '1s'")
        code = f"import tidemark; tidemark.connect({str(store)!r}).execute({sql!r})"
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            def progressing():
                found = find_job(conn, sql)
                return found if found and found["fraction_completed"] > 0 else None
            running = wait_until(progressing, "the backfill to make progress", proc=proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(WAIT_S)
        assert proc.returncode == -signal.SIGKILL
        job_id = running["job_id"]
        dead = job(conn, job_id)
        assert dead["status"] == "running", dead
        assert 0 < dead["fraction_completed"] < 1
        assert dead["coordinator_id"] not in (None, conn.registry.instance_id)
        with pytest.raises(tidemark.SQLError):
            conn.execute("SELECT * FROM t@iv")

        conn.execute("SET CLUSTER SETTING bulkio.index_backfill.batch_size = 2000")
        done = dict(zip(COLUMNS, conn.execute(f"SHOW JOB WHEN COMPLETE {job_id}").rows[0],
                        strict=True))
        assert done["status"] == "succeeded", done
        assert done["coordinator_id"] == conn.registry.instance_id  # adopted here
        assert done["started"] == dead["started"] and done["error"] == ""
        check_index(conn, "iv", sql)
    finally:
        conn.close()


# -- `tidemark start` ------------------------------------------------------------------------


class NodeProcess:
    """``tidemark start --store PATH`` in a subprocess, its stderr read by a thread."""

    def __init__(self, store: Path):
        env = {**os.environ, "COLUMNS": "500", "NO_COLOR": "1"}
        self.proc = subprocess.Popen([TIDEMARK, "start", "--store", str(store)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        first = self.lines.get(timeout=WAIT_S)
        match = re.search(r"tidemark node ([0-9a-f]+) running", first)
        assert match, first
        self.instance_id = match.group(1)

    def _read(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.output.append(line)
            self.lines.put(line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT_S)


def paused_backfill(store: Path, rows: int, batch: int, sql: str) -> int:
    with tidemark.connect(store) as conn:
        fill(conn, "t", rows)
        conn.execute(f"SET CLUSTER SETTING bulkio.index_backfill.batch_size = {batch}")
        conn.execute(f"SET CLUSTER SETTING jobs.debug.pausepoints = '{PAUSE_AFTER_FIRST_CHUNK}'")
        with pytest.raises(JobPausedError):
            conn.execute(sql)
        conn.execute("SET CLUSTER SETTING jobs.debug.pausepoints = ''")
        return find_job(conn, sql)["job_id"]


def resume_quickly(store: Path, job_id: int) -> None:
    """RESUME JOB on a connection closed before its own adoption loop could claim the job."""
    conn = tidemark.connect(store)
    try:
        conn.execute(f"RESUME JOB {job_id}")
    finally:
        conn.close()


def test_tidemark_start_adopts_a_resumed_job(tmp_path):
    store = tmp_path / "s"
    sql = "CREATE INDEX iv ON t (v)"
    job_id = paused_backfill(store, rows=3000, batch=50, sql=sql)
    node = NodeProcess(store)
    try:
        resume_quickly(store, job_id)
        conn = no_adoption(tidemark.connect(store))
        try:
            done = wait_until(lambda: (j := job(conn, job_id))["status"] == "succeeded" and j,
                              "the node to finish the job", proc=node.proc)
            assert done["coordinator_id"] == node.instance_id
            assert done["fraction_completed"] == 1.0 and done["error"] == ""
            node.proc.send_signal(signal.SIGTERM)
            assert node.proc.wait(WAIT_S) == 0, "".join(node.output)
            assert "node stopped" in "".join(node.output)
            check_index(conn, "iv", sql)
        finally:
            conn.close()
    finally:
        node.kill()


def test_sigterm_stops_a_node_that_runs_a_job(tmp_path):
    store = tmp_path / "s"
    sql = "CREATE INDEX iv ON t (v)"
    job_id = paused_backfill(store, rows=20_000, batch=1, sql=sql)  # seconds of work
    node = NodeProcess(store)
    try:
        resume_quickly(store, job_id)
        conn = no_adoption(tidemark.connect(store))
        try:
            def node_runs_it():
                j = job(conn, job_id)
                return (j["status"] == "running" and j["coordinator_id"] == node.instance_id
                        and j["fraction_completed"] > 0.01)
            wait_until(node_runs_it, "the node to run the job", proc=node.proc)
            node.proc.send_signal(signal.SIGTERM)
            try:
                rc = node.proc.wait(2.5)
            except subprocess.TimeoutExpired:
                rc = None
            assert rc == 0, "".join(node.output)
            left = job(conn, job_id)
            assert left["status"] == "running" and left["fraction_completed"] < 1
        finally:
            conn.close()
    finally:
        node.kill()


# -- a stalled owner that lost its job --------------------------------------------------------


def test_stalled_owner_writes_nothing_after_losing_its_job(tmp_path):
    """A process that stops (SIGSTOP, a long GC pause) between reading a batch and ingesting
    it loses its lease; another node adopts the job and CANCELs it (removing the index). When
    the stalled process wakes up it must not write into the removed index.

    The stall is simulated deterministically on the first connection's engine: every write of
    that process (the batch ingest and the lease heartbeat) blocks until released.
    """
    store = tmp_path / "s"
    owner = no_adoption(tidemark.connect(store))
    other = no_adoption(tidemark.connect(store))
    stalled, release = threading.Event(), threading.Event()
    engine = owner.node.engine
    real_ingest, real_commit = engine.ingest_counted, engine.commit
    ingests = []

    def ingest(rows, ts=None, guard=None):
        ingests.append(ts)
        if len(ingests) == 2:  # the second batch: stop the whole process here
            stalled.set()
        if stalled.is_set():
            release.wait(WAIT_S)
        return real_ingest(rows, ts, guard)

    def commit(*args, **kwargs):
        if stalled.is_set():
            release.wait(WAIT_S)
        return real_commit(*args, **kwargs)

    outcome: list = []
    try:
        fill(owner, "t", 300)
        owner.execute("SET CLUSTER SETTING bulkio.index_backfill.batch_size = 20")
        owner.execute("SET CLUSTER SETTING jobs.registry.lease_duration = '500ms'")
        engine.ingest_counted, engine.commit = ingest, commit

        def run():
            try:
                owner.execute("CREATE INDEX iv ON t (v)")
            except BaseException as exc:
                outcome.append(exc)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert stalled.wait(WAIT_S)
        job_id = find_job(other, "CREATE INDEX iv ON t (v)")["job_id"]
        table = other.node.db.run(lambda txn: other.session.table(txn, TableName("t")))
        index_id = table.index("iv").id
        other.execute(f"CANCEL JOB {job_id}")
        assert other.execute(f"SHOW JOB WHEN COMPLETE {job_id}").rows[0][3] == "canceled"
        assert other.node.engine.scan(*index_span(table.id, index_id),
                                      other.node.engine.frontier()) == []
        release.set()  # the stalled process wakes up
        thread.join(WAIT_S)
        assert not thread.is_alive()
        assert job(other, job_id)["status"] == "canceled"
        left = other.node.engine.scan(*index_span(table.id, index_id),
                                      other.node.engine.frontier())
        assert left == [], f"{len(left)} live entries of a removed index"
    finally:
        release.set()
        engine.ingest_counted, engine.commit = real_ingest, real_commit
        other.close()
        owner.close()


# -- closing a connection whose adoption loop runs a job ---------------------------------------


def test_close_returns_promptly_while_the_adoption_loop_runs_a_job(tmp_path):
    store = tmp_path / "s"
    sql = "CREATE INDEX iv ON t (v)"
    job_id = paused_backfill(store, rows=20_000, batch=1, sql=sql)  # seconds of work
    conn = tidemark.connect(store)
    other = no_adoption(tidemark.connect(store))
    closer = None
    outcome: list = []
    try:
        conn.execute(f"RESUME JOB {job_id}")

        def adopted_here():
            j = job(other, job_id)
            return (j["status"] == "running" and j["fraction_completed"] > 0.01
                    and j["coordinator_id"] == conn.registry.instance_id)
        wait_until(adopted_here, "the connection's adoption loop to run the job")

        def close():
            try:
                conn.close()
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)
        closer = threading.Thread(target=close, daemon=True)
        closer.start()
        closer.join(2.5)
        assert not closer.is_alive(), "close() still blocked after 2.5 s"
        assert outcome == [None]
        assert job(other, job_id)["status"] == "running"  # left for another node to adopt
    finally:
        if closer is not None and closer.is_alive():
            other.execute(f"PAUSE JOB {job_id}")  # stops the job, which lets close() end
            closer.join(WAIT_S)
        other.close()
