"""An IMPORT whose process is SIGKILLed mid-way is adopted and finishes from its checkpoint.

A child process runs IMPORT INTO with small chunks; the test polls SHOW JOBS until the job
has checkpointed some progress, kills the child with SIGKILL, opens the store itself and runs
SHOW JOB WHEN COMPLETE: once the dead process's lease (lowered to 1s) expires, the job is
adopted here, resumes after its last checkpoint, and the table ends up exactly as an
uninterrupted import of the same file leaves it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tidemark
import tidemark.importer  # registers the IMPORT job type in this process
from tidemark.cluster.node import Node
from tidemark.jobs.registry import Registry
from tidemark.sql.session import Session

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

REPO = Path(__file__).resolve().parents[2]
ROWS = 120_000
BATCH = 1_000
WAIT_S = 120.0

CHILD = r"""
import sys
import tidemark
conn = tidemark.connect(sys.argv[1])
print("importing", flush=True)
conn.execute("IMPORT INTO t CSV DATA ('nodelocal://self/big.csv')")
print("done", flush=True)
"""

SCHEMA = "CREATE TABLE {} (id INT PRIMARY KEY, a INT, b STRING, c FLOAT, d STRING, " \
         "INDEX {}_b_idx (b))"


def _write_csv(path: Path) -> None:
    with path.open("w") as f:
        for i in range(ROWS):
            f.write(f"{i},{i * 7 % 1000},name-{i % 5000},{i / 3:.4f},text {i}\n")


def test_sigkill_mid_import_is_adopted_and_finishes_from_the_checkpoint(tmp_path):
    store = tmp_path / "store"
    with tidemark.connect(store) as conn:
        conn.execute(SCHEMA.format("t", "t"))
        conn.execute(f"SET CLUSTER SETTING bulkio.import.batch_size = {BATCH}")
        conn.execute("SET CLUSTER SETTING jobs.registry.lease_duration = '1s'")
        _write_csv(conn.node.engine.root / "external" / "big.csv")

    child = subprocess.Popen([sys.executable, "-c", CHILD, str(store)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node = Node(store)
    registry = Registry(node)  # no adoption loop: the job is adopted by the wait below
    session = Session(node, registry=registry)
    try:
        deadline = time.monotonic() + WAIT_S
        job_id = None
        while time.monotonic() < deadline:
            jobs = session.execute("SHOW JOBS").rows
            if jobs and jobs[0][3] == "running" and jobs[0][8] > 0:
                job_id = jobs[0][0]
                break
            assert child.poll() is None, child.communicate()
            time.sleep(0.01)
        assert job_id is not None, "the child never made progress"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=WAIT_S)
        killed = registry.get(job_id)
        assert killed.status == "running" and 0 < killed.fraction_completed < 1, \
            "the import finished before it could be killed"
        rows_at_kill = killed.checkpoint["rows"]
        assert 0 < rows_at_kill < ROWS

        seen: list[int] = []
        session.on_job_progress = lambda rec: seen.append(rec.checkpoint.get("rows", 0))
        res = session.execute(f"SHOW JOB WHEN COMPLETE {job_id}")
        job = dict(zip(res.columns, res.rows[0], strict=True))
        assert job["status"] == "succeeded", job["error"]
        assert job["coordinator_id"] == registry.instance_id  # adopted here
        # It carried on from its checkpoint: no progress below it was ever reported again.
        assert min(seen) >= rows_at_kill
        assert registry.get(job_id).checkpoint["rows"] == ROWS

        session.execute(SCHEMA.format("u", "u"))
        session.execute("IMPORT INTO u CSV DATA ('nodelocal://self/big.csv')")
        fp_t = session.execute("SHOW FINGERPRINTS FROM TABLE t").rows
        fp_u = session.execute("SHOW FINGERPRINTS FROM TABLE u").rows
        assert [fp for _, fp in fp_t] == [fp for _, fp in fp_u]
        assert session.execute("SELECT count(*), sum(id) FROM t").rows == [
            (ROWS, ROWS * (ROWS - 1) // 2)]
        assert node.engine.protected_records() == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        registry.close()
        node.close()
