"""BACKUP and RESTORE as jobs: pause and resume, CANCEL JOB, SIGKILL of the running process,
protected timestamps and GC while a backup is paused.

Everything runs on real stores and a ``file://`` collection (so the tests can look at the
files themselves). The crash tests follow tests/jobs/test_job_crash.py: a child Python process
runs the statement, this process polls the job until it has checkpointed progress, SIGKILLs
the child, then runs ``SHOW JOB WHEN COMPLETE`` so the job is adopted here (the lease was
lowered to 1s) and finished from its checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tidemark
from tidemark.catalog import catalog
from tidemark.catalog.descriptors import DescState
from tidemark.clock import NANOS_PER_SECOND, format_ts, wall_now
from tidemark.errors import GCThresholdError, JobPausedError, SQLError
from tidemark.kv.keys import prefix_end, table_prefix
from tidemark.sql.ast import TableName
from tidemark.storage.engine import Span

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

REPO = Path(__file__).resolve().parents[2]
JOB_COLUMNS = ["job_id", "job_type", "description", "status", "running_status", "created",
               "started", "finished", "fraction_completed", "error", "coordinator_id"]
SCHEMA = ("(id INT PRIMARY KEY, v STRING, n INT, w STRING, "
          "INDEX {t}_v (v), INDEX {t}_n (n), INDEX {t}_w (w))")
BACKUP_PAUSE = "backup.after_first_chunk"
RESTORE_PAUSE = "restore.after_first_chunk"
WAIT_S = 30.0

CHILD = r"""
import sys
import tidemark
conn = tidemark.connect(sys.argv[1])
conn.registry.stop_adopting()
print("running", flush=True)
conn.execute(sys.argv[2])
print("done", flush=True)
"""


# -- helpers ----------------------------------------------------------------------------------


def connect(store: Path):
    """A connection without an adoption loop: only its statements run jobs."""
    conn = tidemark.connect(store)
    conn.registry.stop_adopting()
    return conn


def fill(conn, table: str, rows: int) -> None:
    conn.execute(f"CREATE TABLE {table} {SCHEMA.format(t=table.rpartition('.')[2])}")
    for lo in range(0, rows, 2000):
        hi = min(rows, lo + 2000)
        conn.execute(f"INSERT INTO {table} VALUES " + ", ".join(
            f"({i}, 'v{i % 37}', {i % 1000}, 'w{i}')" for i in range(lo, hi)))


def paused(conn, sql: str, point: str) -> int:
    """Run ``sql`` with the pause point set; it must pause there. Returns the job ID."""
    conn.execute(f"SET CLUSTER SETTING jobs.debug.pausepoints = '{point}'")
    try:
        with pytest.raises(JobPausedError, match=point.replace(".", r"\.")) as err:
            conn.execute(sql)
    finally:
        conn.execute("RESET CLUSTER SETTING jobs.debug.pausepoints")
    return err.value.job_id


def job(conn, job_id: int) -> dict:
    return dict(zip(JOB_COLUMNS, conn.execute(f"SHOW JOB {job_id}").rows[0], strict=True))


def when_complete(conn, job_id: int) -> dict:
    res = conn.execute(f"SHOW JOB WHEN COMPLETE {job_id}")
    return dict(zip(res.columns, res.rows[0], strict=True))


def fingerprints(conn, table: str, as_of: str | None = None) -> list[int]:
    aost = f" AS OF SYSTEM TIME '{as_of}'" if as_of is not None else ""
    return [fp for _, fp in conn.execute(f"SHOW FINGERPRINTS FROM TABLE {table}{aost}").rows]


def show_backups(conn, uri: str) -> list[str]:
    return [p for (p,) in conn.execute(f"SHOW BACKUPS IN '{uri}'").rows]


def end_time(conn, uri: str, subdir: str = "LATEST") -> str:
    where = "LATEST" if subdir == "LATEST" else f"'{subdir}'"
    res = conn.execute(f"SHOW BACKUP {where} IN '{uri}'")
    times = {dict(zip(res.columns, row, strict=True))["end_time"] for row in res.rows}
    assert len(times) == 1, times
    return times.pop()


def latest(coll: Path) -> str | None:
    f = coll / "LATEST"
    return f.read_text().strip() if f.exists() else None


def files_under(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file below ``folder`` (relative name) -> (inode, mtime_ns, sha256)."""
    out = {}
    for root, _dirs, names in os.walk(folder):
        for name in names:
            p = Path(root) / name
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_ino, st.st_mtime_ns,
                                               hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def lock_files(coll: Path) -> list[str]:
    return sorted(str(p.relative_to(coll)) for p in coll.rglob("BACKUP-LOCK-*"))


def descriptor_state(conn, desc_id: int) -> DescState | None:
    desc = conn.node.db.run(lambda txn: catalog.get_descriptor(txn, desc_id))
    return None if desc is None else desc.state


def live_keys(conn, table_id: int) -> list:
    engine = conn.node.engine
    p = table_prefix(table_id)
    return engine.scan(p, prefix_end(p), engine.frontier())


def start_child(store: Path, sql: str, log: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-c", CHILD, str(store), sql], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def wait_for_progress(conn, child: subprocess.Popen, job_type: str, log: Path) -> dict:
    """Poll SHOW JOBS until the child's job has checkpointed some progress."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for row in conn.execute("SHOW JOBS").rows:
            j = dict(zip(JOB_COLUMNS, row, strict=True))
            if j["job_type"] == job_type and j["status"] == "running" and \
                    j["fraction_completed"] > 0:
                return j
        if child.poll() is not None:
            raise AssertionError(f"the child exited ({child.returncode}) before making "
                                 f"progress:\n{log.read_text(errors='replace')}")
        time.sleep(0.005)
    raise AssertionError(f"the {job_type} job never made progress")


def kill(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGKILL)
    child.wait(WAIT_S)


def kill_mid_job(conn, store: Path, sql: str, job_type: str, log: Path) -> dict:
    """Run ``sql`` in a child process, SIGKILL it once its job has checkpointed progress,
    and return that job's SHOW JOBS row (the job is left running, with nobody's lease)."""
    child = start_child(store, sql, log)
    try:
        running = wait_for_progress(conn, child, job_type, log)
    finally:
        kill(child)
    assert child.returncode == -signal.SIGKILL
    return running


# -- 1. pause and resume a BACKUP -------------------------------------------------------------


def test_paused_backup_resumes_without_rewriting_its_files_and_restores(tmp_path):
    coll = tmp_path / "coll"
    uri = f"file://{coll}"
    conn = connect(tmp_path / "s")
    try:
        fill(conn, "t", 3000)
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 200")
        job_id = paused(conn, f"BACKUP TABLE t INTO '{uri}'", BACKUP_PAUSE)
        details = conn.registry.get(job_id).details
        layer = coll / details["layer_dir"].strip("/")

        held = job(conn, job_id)
        assert held["status"] == "paused"
        assert 0 < held["fraction_completed"] < 1
        # Not a backup yet: not listed, LATEST not written, no manifest.
        assert show_backups(conn, uri) == []
        assert latest(coll) is None
        assert not (layer / "BACKUP_MANIFEST").exists()
        with pytest.raises(tidemark.TidemarkError, match="not a backup"):
            conn.execute(f"SHOW BACKUP '{details['full_subdir']}' IN '{uri}'")
        with pytest.raises(tidemark.TidemarkError, match="no LATEST"):
            conn.execute(f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'defaultdb'")
        before = {n: f for n, f in files_under(layer).items() if n.startswith("data/")}
        assert before, "no data file was written before the pause point"
        assert len(before) < 60  # 3000 rows x 4 indexes / 200: far from all of them

        conn.execute(f"RESUME JOB {job_id}")
        done = when_complete(conn, job_id)
        assert done["status"] == "succeeded", done["error"]
        assert done["fraction_completed"] == 1.0

        assert show_backups(conn, uri) == [details["full_subdir"]]
        assert latest(coll) == details["full_subdir"]
        after = files_under(layer)
        assert (layer / "BACKUP_MANIFEST").exists()
        # The files written before the pause were kept as they were: same inode (no
        # rename of a rewritten file over them), same mtime, same bytes.
        for name, stat in before.items():
            assert after.get(name) == stat, f"{name} was rewritten on resume"
        data = [n for n in after if n.startswith("data/")]
        assert len(data) >= 3000 * 4 // 200
        # The job's bookkeeping is gone: no lock, no checkpoint, no credentials, no protection.
        assert lock_files(coll) == []
        assert not (layer / "BACKUP-CHECKPOINT").exists()
        assert conn.node.engine.get_secret(details["secret_ref"]) is None
        assert conn.node.engine.protected_records() == []

        end = end_time(conn, uri)
        conn.execute("CREATE DATABASE r")
        conn.execute(f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'r'")
        assert fingerprints(conn, "r.t") == fingerprints(conn, "defaultdb.t", end)
        assert conn.execute("SELECT count(*), sum(id) FROM r.t").rows == [
            (3000, 3000 * 2999 // 2)]
    finally:
        conn.close()


def test_an_older_backup_resumed_after_a_newer_one_does_not_move_latest_back(tmp_path):
    """LATEST names the newest full backup (manifest.LATEST, destination's layout): a paused
    backup resumed after a later full backup completed must not point LATEST at itself."""
    coll = tmp_path / "coll"
    uri = f"file://{coll}"
    conn = connect(tmp_path / "s")
    try:
        fill(conn, "t", 1000)
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 200")
        older = paused(conn, f"BACKUP TABLE t INTO '{uri}'", BACKUP_PAUSE)
        older_dir = conn.registry.get(older).details["full_subdir"]
        conn.execute("INSERT INTO t VALUES (5000, 'new', 1, 'new')")
        conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        newer_dir = latest(coll)
        assert newer_dir is not None and newer_dir > older_dir

        conn.execute(f"RESUME JOB {older}")
        assert when_complete(conn, older)["status"] == "succeeded"
        assert show_backups(conn, uri) == [older_dir, newer_dir]
        assert latest(coll) == newer_dir, \
            "LATEST moved back to an older full backup when it finished after a newer one"
        conn.execute("CREATE DATABASE r")
        conn.execute(f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'r'")
        assert conn.execute("SELECT count(*) FROM r.t WHERE id = 5000").rows == [(1,)]
    finally:
        conn.close()


def test_a_late_backup_repairs_latest_left_stale_by_a_lost_race(tmp_path):
    """Two full backups finishing together can both read LATEST before either writes it,
    and the older one write last (object stores have no compare-and-swap). Here LATEST is
    left naming an old backup after a newer one completed; the paused backup that finishes
    next must point it at the newest completed backup, not at itself."""
    coll = tmp_path / "coll"
    uri = f"file://{coll}"
    conn = connect(tmp_path / "s")
    try:
        fill(conn, "t", 600)
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 200")
        conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        oldest = latest(coll)
        late = paused(conn, f"BACKUP TABLE t INTO '{uri}'", BACKUP_PAUSE)
        conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        newest = latest(coll)
        (coll / "LATEST").write_text(oldest)  # the race's outcome

        conn.execute(f"RESUME JOB {late}")
        assert when_complete(conn, late)["status"] == "succeeded"
        assert latest(coll) == newest == show_backups(conn, uri)[-1]
    finally:
        conn.close()


def test_a_backup_started_in_the_same_hundredth_as_a_paused_one_gets_its_own_folder(tmp_path):
    """Folder names have hundredths of a second (CockroachDB's layout). A BACKUP whose name
    would be a folder already in use (here: locks planted for the next 0.3 s) waits for a
    free name instead of failing halfway on the other job's lock; AS OF SYSTEM TIME at a
    time whose folder is used fails up front with 42710, naming the folder."""
    from tidemark.backup import destination
    coll = tmp_path / "coll"
    uri = f"file://{coll}"
    conn = connect(tmp_path / "s")
    try:
        fill(conn, "t", 100)
        past = wall_now()
        now = wall_now()
        planted = {destination.new_full_subdir(now + i * 10**7) for i in range(30)}
        for sub in planted:
            (coll / sub.lstrip("/")).mkdir(parents=True, exist_ok=True)
            (coll / sub.lstrip("/") / "BACKUP-LOCK-1").write_text("1")
        conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        made = show_backups(conn, uri)
        assert len(made) == 1 and made[0] not in planted and made[0] > max(planted)

        used = destination.new_full_subdir(past)  # planted too, if in the same hundredth
        (coll / used.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (coll / used.lstrip("/") / "BACKUP-LOCK-1").write_text("1")
        with pytest.raises(SQLError) as err:
            conn.execute(f"BACKUP TABLE t INTO '{uri}' AS OF SYSTEM TIME '{format_ts(past)}'")
        assert err.value.code == "42710" and used in str(err.value)
        assert show_backups(conn, uri) == made
    finally:
        conn.close()


def test_an_incremental_resumed_after_another_one_was_appended_fails_and_leaves_no_fork(
        tmp_path):
    """Two incrementals planned on the same previous layer would both start at its end: if
    both were kept the chain would fork and no longer load. The one finishing second fails
    (40001, retryable), removes its files, and the chain restores everything."""
    coll = tmp_path / "coll"
    uri = f"file://{coll}"
    conn = connect(tmp_path / "s")
    try:
        fill(conn, "t", 1000)
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 200")
        conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        conn.execute("UPDATE t SET v = 'x' WHERE id < 600")
        slow = paused(conn, f"BACKUP TABLE t INTO LATEST IN '{uri}'", BACKUP_PAUSE)
        slow_dir = conn.registry.get(slow).details["layer_dir"]
        conn.execute("INSERT INTO t VALUES (5000, 'new', 1, 'new')")
        conn.execute(f"BACKUP TABLE t INTO LATEST IN '{uri}'")

        conn.execute(f"RESUME JOB {slow}")
        done = when_complete(conn, slow)
        assert done["status"] == "failed"
        assert "another incremental backup" in done["error"]
        assert not (coll / slow_dir.lstrip("/")).exists() or not any(
            p.is_file() for p in (coll / slow_dir.lstrip("/")).rglob("*")), \
            "the failed incremental left files in its folder"

        conn.execute(f"BACKUP TABLE t INTO LATEST IN '{uri}'")  # the chain still extends
        want = fingerprints(conn, "t")
        conn.execute("CREATE DATABASE r")
        conn.execute(f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'r'")
        assert fingerprints(conn, "r.t") == want
    finally:
        conn.close()


def test_an_incremental_finishing_while_another_joins_the_chain_fails_and_leaves_no_fork(
        tmp_path):
    """Two incrementals finishing at the same moment could both find the chain unchanged;
    each takes the chain's lock (in the full backup's folder) from that check until its
    manifest is written. One meeting another's lock fails (40001) and removes its files;
    a finished incremental leaves no lock behind."""
    coll = tmp_path / "coll"
    uri = f"file://{coll}"
    conn = connect(tmp_path / "s")
    try:
        fill(conn, "t", 300)
        conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        (full,) = [p.parent for p in coll.rglob("BACKUP_MANIFEST")]
        conn.execute("UPDATE t SET v = 'x' WHERE id < 100")
        conn.execute(f"BACKUP TABLE t INTO LATEST IN '{uri}'")
        assert not list(coll.rglob("BACKUP-CHAIN-LOCK-*"))
        other = full / "BACKUP-CHAIN-LOCK-4242"  # another job between its check and manifest
        other.write_bytes(b"4242")
        conn.execute("UPDATE t SET v = 'y' WHERE id < 50")
        files_before = sorted(str(p) for p in coll.rglob("*") if p.is_file())
        with pytest.raises(SQLError, match="joining the chain") as err:
            conn.execute(f"BACKUP TABLE t INTO LATEST IN '{uri}'")
        assert err.value.code == "40001" and "job 4242" in str(err.value)
        assert f"delete /{full.relative_to(coll)}/BACKUP-CHAIN-LOCK-4242" in err.value.hint
        # Nothing of the failed layer is left, and the other job's lock is untouched.
        assert sorted(str(p) for p in coll.rglob("*") if p.is_file()) == files_before
        other.unlink()
        conn.execute(f"BACKUP TABLE t INTO LATEST IN '{uri}'")
        want = fingerprints(conn, "t")
        conn.execute("CREATE DATABASE r")
        conn.execute(f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'r'")
        assert fingerprints(conn, "r.t") == want
    finally:
        conn.close()


@pytest.mark.parametrize("statement", ["BACKUP", "RESTORE"])
def test_a_job_that_died_after_its_work_but_before_it_was_marked_done_finishes(
        tmp_path, monkeypatch, statement):
    """A process can die after a job did all its work (the manifest written, the tables
    published) but before the job is recorded as succeeded: the job then runs again and
    must find what it needs, its credentials above all, and succeed."""
    from tidemark.jobs import registry as registry_mod
    uri = f"file://{tmp_path / 'coll'}"
    conn = connect(tmp_path / "s")
    try:
        fill(conn, "t", 300)
        conn.execute("CREATE DATABASE r")
        if statement == "RESTORE":
            conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        sql = (f"BACKUP TABLE t INTO '{uri}'" if statement == "BACKUP" else
               f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'r'")
        real_finish = registry_mod.Registry._finish
        died = []

        def finish(self, job_id, change):
            if change is registry_mod._succeeded and not died:
                died.append(job_id)  # the process "dies" here: nothing more is recorded
                raise registry_mod._LeaseLost()
            return real_finish(self, job_id, change)

        monkeypatch.setattr(registry_mod.Registry, "_finish", finish)
        conn.execute(sql)  # waits for the job, which runs again
        (job_id,) = died
        assert when_complete(conn, job_id)["status"] == "succeeded"
        assert conn.node.engine.get_secret(
            conn.registry.get(job_id).details["secret_ref"]) is None
        assert conn.node.engine.protected_records() == []
        if statement == "RESTORE":
            assert fingerprints(conn, "r.t") == fingerprints(conn, "defaultdb.t")
        else:
            assert len(show_backups(conn, uri)) == 1
    finally:
        conn.close()


# -- 2. pause and resume a RESTORE ------------------------------------------------------------


def test_a_part_failing_on_one_worker_fails_the_backup_cleanly(tmp_path, monkeypatch):
    """Parts export on two threads (backup/parallel.py). When one part fails, the job fails
    with that part's error, waits for the part in flight on the other thread, and leaves
    no data file, lock, checkpoint, LATEST, protection or worker thread behind; the next
    BACKUP succeeds."""
    import threading

    from tidemark.storage.sqlite import SQLiteEngine
    coll = tmp_path / "coll"
    uri = f"file://{coll}"
    conn = connect(tmp_path / "s")
    try:
        fill(conn, "t", 2000)
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 150")
        real = SQLiteEngine.export
        calls = []

        def export(self, path, *args, **kwargs):
            calls.append(threading.current_thread().name)
            if len(calls) == 5:
                raise OSError("disk full (injected)")
            return real(self, path, *args, **kwargs)

        monkeypatch.setattr(SQLiteEngine, "export", export)
        with pytest.raises(SQLError, match="disk full"):
            conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        assert len({n for n in calls if n.startswith("part-worker")}) == 2, calls
        assert not [t for t in threading.enumerate() if t.name.startswith("part-worker")]
        assert latest(coll) is None and show_backups(conn, uri) == []
        leftover = [p for p in coll.rglob("*") if p.is_file()] if coll.exists() else []
        assert leftover == [], leftover
        assert conn.node.engine.protected_records() == []

        monkeypatch.setattr(SQLiteEngine, "export", real)
        conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        want = fingerprints(conn, "t")
        conn.execute("CREATE DATABASE r")
        conn.execute(f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'r'")
        assert fingerprints(conn, "r.t") == want
    finally:
        conn.close()


def test_paused_restore_is_offline_then_complete_after_resume(tmp_path):
    coll = tmp_path / "coll"
    uri = f"file://{coll}"
    conn = connect(tmp_path / "s")
    try:
        fill(conn, "t", 3000)
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 500")
        conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        end = end_time(conn, uri)
        conn.execute("CREATE DATABASE r")
        job_id = paused(conn, f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'r'",
                        RESTORE_PAUSE)
        held = job(conn, job_id)
        assert held["status"] == "paused" and 0 < held["fraction_completed"] < 1
        new_id = conn.registry.get(job_id).details["tables"][0]["new_id"]
        assert descriptor_state(conn, new_id) is DescState.OFFLINE
        assert live_keys(conn, new_id), "the first span was not ingested before the pause"
        for sql in ("SELECT count(*) FROM r.t", "SELECT * FROM r.t@t_v",
                    "SHOW FINGERPRINTS FROM TABLE r.t", "INSERT INTO r.t VALUES (-1, 'a', 1, 'b')"):
            with pytest.raises(tidemark.SQLError, match=r"offline|does not exist"):
                conn.execute(sql)

        conn.execute(f"RESUME JOB {job_id}")
        done = when_complete(conn, job_id)
        assert done["status"] == "succeeded", done["error"]
        assert descriptor_state(conn, new_id) is DescState.PUBLIC
        assert fingerprints(conn, "r.t") == fingerprints(conn, "defaultdb.t", end)
        assert conn.execute("SELECT count(*) FROM r.t@t_w").rows == [(3000,)]
    finally:
        conn.close()


# -- 3. CANCEL JOB of a paused BACKUP ---------------------------------------------------------


def test_canceled_paused_backup_leaves_nothing_behind(tmp_path):
    coll = tmp_path / "coll"
    uri = f"file://{coll}"
    conn = connect(tmp_path / "s")
    try:
        fill(conn, "t", 3000)
        conn.execute(f"BACKUP TABLE t INTO '{uri}'")  # a first, complete backup
        first = latest(coll)
        assert show_backups(conn, uri) == [first]
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 200")
        job_id = paused(conn, f"BACKUP TABLE t INTO '{uri}'", BACKUP_PAUSE)
        details = conn.registry.get(job_id).details
        layer = coll / details["layer_dir"].strip("/")
        assert any(n.startswith("data/") for n in files_under(layer))
        assert lock_files(coll) == [f"{layer.relative_to(coll)}/BACKUP-LOCK-{job_id}"]
        assert [r.owner for r in conn.node.engine.protected_records()] == [f"job {job_id}"]

        conn.execute(f"CANCEL JOB {job_id}")
        done = when_complete(conn, job_id)
        assert done["status"] == "canceled", done

        assert files_under(layer) == {}, "the canceled backup left files in its folder"
        assert lock_files(coll) == []
        assert show_backups(conn, uri) == [first]
        assert latest(coll) == first
        assert conn.node.engine.protected_records() == []
        assert conn.node.engine.get_secret(details["secret_ref"]) is None

        conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        assert len(show_backups(conn, uri)) == 2 and latest(coll) != first
        conn.execute("CREATE DATABASE r")
        conn.execute(f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'r'")
        assert fingerprints(conn, "r.t") == fingerprints(conn, "defaultdb.t")
    finally:
        conn.close()


# -- 4. CANCEL JOB of a paused RESTORE --------------------------------------------------------


def test_canceled_paused_restore_frees_its_names_and_publishes_nothing(tmp_path):
    coll = tmp_path / "coll"
    uri = f"file://{coll}"
    conn = connect(tmp_path / "s")
    try:
        conn.execute("CREATE DATABASE src")
        fill(conn, "src.t", 2000)
        conn.execute(f"BACKUP DATABASE src INTO '{uri}'")
        expected = fingerprints(conn, "src.t")
        conn.execute("CREATE DATABASE r")

        restores = [
            ("r.t", f"RESTORE TABLE src.t FROM LATEST IN '{uri}' WITH into_db = 'r'"),
            ("dst.t", f"RESTORE DATABASE src FROM LATEST IN '{uri}' WITH new_db_name = 'dst'"),
        ]
        for table, sql in restores:
            job_id = paused(conn, sql, RESTORE_PAUSE)
            details = conn.registry.get(job_id).details
            new_id = details["tables"][0]["new_id"]
            assert live_keys(conn, new_id)
            with pytest.raises(tidemark.SQLError, match=r"offline|does not exist"):
                conn.execute(f"SELECT count(*) FROM {table}")

            conn.execute(f"CANCEL JOB {job_id}")
            assert when_complete(conn, job_id)["status"] == "canceled"

            # Nothing half-restored became PUBLIC, and its data is gone.
            assert descriptor_state(conn, new_id) is not DescState.PUBLIC
            for db_id in details["new_databases"]:
                assert descriptor_state(conn, db_id) is not DescState.PUBLIC
            assert live_keys(conn, new_id) == []
            with pytest.raises(tidemark.SQLError, match="does not exist"):
                conn.execute(f"SELECT count(*) FROM {table}")
            assert conn.node.engine.get_secret(details["secret_ref"]) is None

            # The names are free again: the same restore works.
            conn.execute(sql)
            assert fingerprints(conn, table) == expected
            assert conn.execute(f"SELECT count(*) FROM {table}").rows == [(2000,)]
        assert sorted(n for n, _ in conn.execute("SHOW DATABASES").rows) == [
            "defaultdb", "dst", "r", "src"]
    finally:
        conn.close()


# -- 5. SIGKILL during a BACKUP ---------------------------------------------------------------


def test_incremental_killed_mid_way_is_adopted_without_exporting_finished_parts_again(
        tmp_path):
    """SIGKILL during an incremental (many parts): LATEST, SHOW BACKUPS and the chain are
    unchanged until the adopted job finishes; the parts its record had checkpointed are not
    exported again (same files, untouched); the chain then restores the source."""
    store, coll = tmp_path / "s", tmp_path / "coll"
    uri = f"file://{coll}"
    log = tmp_path / "child.log"
    conn = connect(store)
    try:
        fill(conn, "t", 4000)
        conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        full = latest(coll)
        conn.execute("UPDATE t SET n = n + 1, w = 'changed' WHERE id % 2 = 0")
        conn.execute("DELETE FROM t WHERE id % 7 = 0")
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 100")
        conn.execute("SET CLUSTER SETTING jobs.registry.lease_duration = '1s'")
        running = kill_mid_job(conn, store, f"BACKUP TABLE t INTO LATEST IN '{uri}'", "BACKUP", log)
        job_id = running["job_id"]
        record = conn.registry.get(job_id)
        assert record.details["backup_type"] == "incremental"
        layer = coll / record.details["layer_dir"].strip("/")
        checkpointed = {e[1]["path"] for e in record.checkpoint["done"] if e[1]}
        assert checkpointed, "the job was killed before it checkpointed a part"
        before = files_under(layer)
        assert not (layer / "BACKUP_MANIFEST").exists()
        assert latest(coll) == full and show_backups(conn, uri) == [full]
        assert len(conn.execute(f"SHOW BACKUP FROM LATEST IN '{uri}'").rows) == 1

        done = when_complete(conn, job_id)
        assert done["status"] == "succeeded", done["error"]
        after = files_under(layer)
        for path in checkpointed:  # same inode, mtime and bytes: not exported again
            assert after[path] == before[path], path
        assert len([p for p in after if p.startswith("data/")]) > len(checkpointed)
        assert lock_files(coll) == [] and not list(coll.rglob("BACKUP-CHAIN-LOCK-*"))
        rows = conn.execute(f"SHOW BACKUP FROM LATEST IN '{uri}'").rows
        assert [r[4] for r in rows] == ["full", "incremental"]
        conn.execute("CREATE DATABASE r")
        conn.execute(f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'r'")
        assert fingerprints(conn, "r.t") == fingerprints(conn, "defaultdb.t", rows[-1][3])
    finally:
        conn.close()


def test_backup_killed_mid_way_is_adopted_and_finishes(tmp_path):
    store, coll = tmp_path / "s", tmp_path / "coll"
    uri = f"file://{coll}"
    log = tmp_path / "child.log"
    conn = connect(store)
    try:
        fill(conn, "t", 4000)
        conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        first = latest(coll)
        assert first is not None
        conn.execute("UPDATE t SET n = n + 1 WHERE id % 3 = 0")
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 100")
        conn.execute("SET CLUSTER SETTING jobs.registry.lease_duration = '1s'")

        running = kill_mid_job(conn, store, f"BACKUP TABLE t INTO '{uri}'", "BACKUP", log)
        job_id = running["job_id"]
        dead = job(conn, job_id)
        assert dead["status"] == "running", dead
        assert 0 < dead["fraction_completed"] < 1, "the backup ended before it was killed"
        assert dead["coordinator_id"] != conn.registry.instance_id
        details = conn.registry.get(job_id).details
        layer = coll / details["layer_dir"].strip("/")

        # Right after the kill nothing says the second backup exists.
        assert latest(coll) == first
        assert show_backups(conn, uri) == [first]
        assert not (layer / "BACKUP_MANIFEST").exists()
        assert any(n.startswith("data/") for n in files_under(layer))

        done = when_complete(conn, job_id)
        assert done["status"] == "succeeded", done["error"]
        assert done["coordinator_id"] == conn.registry.instance_id  # adopted here
        assert done["started"] == dead["started"]
        second = details["full_subdir"]
        assert show_backups(conn, uri) == [first, second]
        assert latest(coll) == second
        assert lock_files(coll) == []
        assert not (layer / "BACKUP-CHECKPOINT").exists()
        assert conn.node.engine.protected_records() == []
        assert conn.node.engine.get_secret(details["secret_ref"]) is None

        end = end_time(conn, uri, second)
        conn.execute("CREATE DATABASE r")
        conn.execute(f"RESTORE TABLE t FROM '{second}' IN '{uri}' WITH into_db = 'r'")
        assert fingerprints(conn, "r.t") == fingerprints(conn, "defaultdb.t", end)
        assert conn.execute("SELECT count(*) FROM r.t").rows == [(4000,)]

        # A fresh backup into the collection works and becomes LATEST.
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 100000")
        conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        assert len(show_backups(conn, uri)) == 3 and latest(coll) not in (first, second)
    finally:
        conn.close()


def test_fresh_backup_right_after_a_killed_one_succeeds(tmp_path):
    """The orphaned job's folder, lock and lease do not get in the way of a new BACKUP."""
    store, coll = tmp_path / "s", tmp_path / "coll"
    uri = f"file://{coll}"
    log = tmp_path / "child.log"
    conn = connect(store)
    try:
        fill(conn, "t", 3000)
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 100")
        conn.execute("SET CLUSTER SETTING jobs.registry.lease_duration = '1s'")
        running = kill_mid_job(conn, store, f"BACKUP TABLE t INTO '{uri}'", "BACKUP", log)
        orphan = job(conn, running["job_id"])
        assert orphan["status"] == "running" and orphan["fraction_completed"] < 1
        assert latest(coll) is None and show_backups(conn, uri) == []

        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 100000")
        res = conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        assert res.rows[0][1] == "succeeded"
        fresh = latest(coll)
        assert show_backups(conn, uri) == [fresh]
        conn.execute("CREATE DATABASE r")
        conn.execute(f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'r'")
        assert fingerprints(conn, "r.t") == fingerprints(conn, "defaultdb.t")
        # The orphan is still there to be adopted and finished.
        assert when_complete(conn, running["job_id"])["status"] == "succeeded"
        assert len(show_backups(conn, uri)) == 2
        assert lock_files(coll) == []
        assert conn.node.engine.protected_records() == []
    finally:
        conn.close()


# -- 6. SIGKILL during a RESTORE --------------------------------------------------------------


def test_restore_killed_mid_way_is_offline_then_adopted_and_complete(tmp_path):
    store, coll = tmp_path / "s", tmp_path / "coll"
    uri = f"file://{coll}"
    log = tmp_path / "child.log"
    conn = connect(store)
    try:
        fill(conn, "t", 12_000)
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 250")
        conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        end = end_time(conn, uri)
        expected = fingerprints(conn, "defaultdb.t", end)
        conn.execute("CREATE DATABASE r")
        conn.execute("SET CLUSTER SETTING jobs.registry.lease_duration = '1s'")

        running = kill_mid_job(conn, store, f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'r'", "RESTORE", log)
        job_id = running["job_id"]
        dead = job(conn, job_id)
        assert dead["status"] == "running", dead
        assert 0 < dead["fraction_completed"] < 1
        new_id = conn.registry.get(job_id).details["tables"][0]["new_id"]
        assert descriptor_state(conn, new_id) is DescState.OFFLINE
        with pytest.raises(tidemark.SQLError, match="offline"):
            conn.execute("SELECT count(*) FROM r.t")

        done = when_complete(conn, job_id)
        assert done["status"] == "succeeded", done["error"]
        assert done["coordinator_id"] == conn.registry.instance_id  # adopted here
        assert descriptor_state(conn, new_id) is DescState.PUBLIC
        assert fingerprints(conn, "r.t") == expected
        assert conn.execute("SELECT count(*), sum(id) FROM r.t").rows == [
            (12_000, 12_000 * 11_999 // 2)]
        # A replayed span rewrote the same versions: one version per key, all at one time.
        versions = conn.node.engine.versions(table_prefix(new_id),
                                             prefix_end(table_prefix(new_id)))
        assert len(versions) == len({k for k, *_ in versions}) == 4 * 12_000
        assert len({ts for _, ts, _, _ in versions}) == 1
    finally:
        conn.close()


# -- 7. protected timestamps and GC while a BACKUP is paused ----------------------------------


def test_paused_backup_protects_its_data_from_gc(tmp_path):
    coll = tmp_path / "coll"
    uri = f"file://{coll}"
    conn = connect(tmp_path / "s")
    try:
        fill(conn, "t", 3000)
        fill(conn, "u", 200)  # not backed up: GC is free to collect it
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 200")
        job_id = paused(conn, f"BACKUP TABLE t INTO '{uri}'", BACKUP_PAUSE)
        end = conn.registry.get(job_id).details["end_time"]
        records = conn.node.engine.protected_records()
        assert [(r.owner, r.ts) for r in records] == [(f"job {job_id}", end)]
        t_prefix = table_prefix(conn.node.db.run(
            lambda txn: conn.session.table(txn, TableName("t"))).id)
        assert any(s.start <= t_prefix and prefix_end(t_prefix) <= s.end
                   for s in records[0].spans)
        expected = fingerprints(conn, "t")  # nothing was written since the end time

        # While paused: change and delete most of t (and u), then GC well past the end time.
        conn.execute("SET CLUSTER SETTING gc.ttlseconds = 1")
        conn.execute("UPDATE t SET v = 'changed', n = -n WHERE id % 2 = 0")
        conn.execute("DELETE FROM t WHERE id % 3 = 0")
        conn.execute("UPDATE u SET v = 'changed'")
        u_before = conn.execute("SELECT cluster_logical_timestamp()").rows[0][0]
        conn.execute("DELETE FROM u WHERE id < 100")
        time.sleep(1.1)
        conn.execute("INSERT INTO u VALUES (100000, 'x', 1, 'y')")  # moves the frontier on
        stats = conn.node.run_gc(wall_now() + 5 * NANOS_PER_SECOND)
        assert stats.threshold > end and stats.removed > 0
        with pytest.raises(tidemark.TidemarkError, match="GC threshold"):
            conn.execute(f"SELECT count(*) FROM u AS OF SYSTEM TIME '{u_before}'")
        # t's span is protected at the end time: still readable there.
        conn.node.engine.check_read_ts(end, [Span(t_prefix, prefix_end(t_prefix))])

        conn.execute(f"RESUME JOB {job_id}")
        done = when_complete(conn, job_id)
        assert done["status"] == "succeeded", done["error"]
        assert conn.node.engine.protected_records() == []

        conn.execute("CREATE DATABASE r")
        conn.execute(f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'r'")
        assert fingerprints(conn, "r.t") == expected
        assert conn.execute("SELECT count(*) FROM r.t").rows == [(3000,)]
        assert conn.execute("SELECT count(*) FROM r.t WHERE v = 'changed'").rows == [(0,)]
        # Once released, the next GC pass may collect what the backup kept.
        conn.node.run_gc(wall_now() + 5 * NANOS_PER_SECOND)
        with pytest.raises(GCThresholdError):
            conn.node.engine.check_read_ts(end, [Span(t_prefix, prefix_end(t_prefix))])
    finally:
        conn.close()



def test_a_revision_history_incremental_protects_a_table_dropped_in_its_window(tmp_path):
    """A table dropped inside an incremental's window is exported for restores to a time
    before the drop: GC while the backup is paused must not take its history either. A
    protection the job made but never checkpointed (a run that died) goes with the job."""
    coll = tmp_path / "coll"
    uri = f"file://{coll}"
    conn = connect(tmp_path / "s")
    try:
        fill(conn, "t", 600)
        fill(conn, "gone", 300)
        conn.execute(f"BACKUP DATABASE defaultdb INTO '{uri}' WITH revision_history")
        gone = conn.node.db.run(lambda txn: conn.session.table(txn, TableName("gone"))).id
        conn.execute("UPDATE gone SET v = 'before the drop' WHERE id < 100")
        before_drop = conn.execute("SELECT cluster_logical_timestamp()").rows[0][0]
        expected = fingerprints(conn, "gone", str(before_drop))
        conn.execute("DROP TABLE gone")
        conn.execute("UPDATE t SET v = 'later'")
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 100")
        job_id = paused(conn, f"BACKUP DATABASE defaultdb INTO LATEST IN '{uri}' "
                              "WITH revision_history", BACKUP_PAUSE)
        start = conn.registry.get(job_id).details["start_time"]
        gone_span = Span(table_prefix(gone), prefix_end(table_prefix(gone)))
        protected = [r for r in conn.node.engine.protected_records()
                     if any(sp.start <= gone_span.start and gone_span.end <= sp.end
                            for sp in r.spans)]
        assert [(r.owner, r.ts) for r in protected] == [(f"job {job_id}", start)]
        conn.node.engine.protect(start, [gone_span], owner=f"job {job_id}")  # never saved

        conn.execute("SET CLUSTER SETTING gc.ttlseconds = 1")
        time.sleep(1.1)
        conn.execute("INSERT INTO t VALUES (100000, 'x', 1, 'y')")  # moves the frontier on
        assert conn.node.run_gc(wall_now() + 5 * NANOS_PER_SECOND).threshold > start
        conn.node.engine.check_read_ts(start, [gone_span])  # still readable there

        conn.execute(f"RESUME JOB {job_id}")
        done = when_complete(conn, job_id)
        assert done["status"] == "succeeded", done["error"]
        assert conn.node.engine.protected_records() == []
        conn.execute(f"RESTORE DATABASE defaultdb FROM LATEST IN '{uri}' "
                     f"AS OF SYSTEM TIME {before_drop} WITH new_db_name = 'r'")
        assert fingerprints(conn, "r.gone") == expected
        assert conn.execute("SELECT count(*) FROM r.gone WHERE v = 'before the drop'"
                            ).rows == [(100,)]
    finally:
        conn.close()


def test_paused_revision_history_backup_keeps_its_history_through_gc(tmp_path):
    """A full backup WITH revision_history exports every revision GC has not removed when it
    starts: GC while it is paused must not take the revisions it has yet to export."""
    coll = tmp_path / "coll"
    uri = f"file://{coll}"
    conn = connect(tmp_path / "s")
    try:
        fill(conn, "t", 1500)
        conn.execute("UPDATE t SET v = 'first' WHERE id % 2 = 0")
        mid = conn.execute("SELECT cluster_logical_timestamp()").rows[0][0]
        expected_mid = fingerprints(conn, "t", mid)
        conn.execute("UPDATE t SET v = 'second' WHERE id % 2 = 0")
        conn.execute("DELETE FROM t WHERE id % 5 = 0")
        expected_end = fingerprints(conn, "t")
        conn.execute("SET CLUSTER SETTING bulkio.backup.file_versions = 300")
        job_id = paused(conn, f"BACKUP TABLE t INTO '{uri}' WITH revision_history",
                        BACKUP_PAUSE)
        assert [r.owner for r in conn.node.engine.protected_records()] == [f"job {job_id}"]

        conn.execute("SET CLUSTER SETTING gc.ttlseconds = 1")
        conn.execute("UPDATE t SET v = 'third'")
        time.sleep(1.1)
        conn.execute("CREATE TABLE bump (id INT PRIMARY KEY)")  # moves the frontier on
        stats = conn.node.run_gc(wall_now() + 5 * NANOS_PER_SECOND)
        assert stats.threshold > conn.registry.get(job_id).details["end_time"]

        conn.execute(f"RESUME JOB {job_id}")
        assert when_complete(conn, job_id)["status"] == "succeeded"
        assert conn.node.engine.protected_records() == []
        conn.execute("CREATE DATABASE r_end")
        conn.execute(f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'r_end'")
        assert fingerprints(conn, "r_end.t") == expected_end
        conn.execute("CREATE DATABASE r_mid")
        conn.execute(f"RESTORE TABLE t FROM LATEST IN '{uri}' AS OF SYSTEM TIME '{mid}' "
                     "WITH into_db = 'r_mid'")
        assert fingerprints(conn, "r_mid.t") == expected_mid
        assert conn.execute("SELECT count(*) FROM r_mid.t WHERE v = 'first'").rows == [(750,)]
    finally:
        conn.close()
