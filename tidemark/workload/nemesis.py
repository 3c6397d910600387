"""The nemesis: a seeded random schedule of writes, schema changes, imports, restores, GC
passes and backups on one store, then every backup restored and compared with its source.

``run(seed, steps, workdir)`` builds a store in ``workdir`` and drives it with
``random.Random(seed)``: everything is deterministic given the seed except timing (MVCC
timestamps, GC windows, retries). Operations, on database ``nem`` (tables ``t1``, ``t2`` with
secondary indexes and a ``bank`` whose total balance is invariant) and ``side`` (tables
RESTOREd into it mid-schedule):

* writes (inserts, updates of indexed columns, deletes) and bank transfers;
* CREATE INDEX (some paused at ``indexbackfill.after_first_chunk``, resumed or cancelled
  later), a CREATE UNIQUE INDEX that fails on duplicates, DROP INDEX;
* IMPORT INTO from CSVs in the store's ``external/`` folder (some paused at
  ``import.after_first_chunk``, resumed or cancelled later);
* RESTORE TABLE into ``side`` (some paused at ``restore.after_first_chunk``) and RESTORE
  DATABASE into a new database (checked at once against the chain's last layer);
* GC passes with a short window (an incremental whose history GC removed fails with XXC01:
  the nemesis then starts a new chain);
* full and incremental backups of ``nem, side`` into ``nodelocal://self/nemesis-<chain>``,
  per chain with or without ``revision_history`` and encryption; many taken while a job is
  paused at a pause point (the hazard: data ingested at old MVCC timestamps);
* moments: ``cluster_logical_timestamp()`` recorded at random, to restore revision-history
  chains to.

After each backup (and at each moment) the expected state is recorded at once: for every
table in scope, ``SHOW FINGERPRINTS ... AS OF SYSTEM TIME <end>`` if it is PUBLIC then, the
fingerprints from just before the IMPORT if it is OFFLINE importing (a backup holds such a
table as it was before the import), or "absent" when it does not exist or a RESTORE is still
creating it. Recording at once keeps later GC passes from hiding history.

At the end every paused job is resumed or cancelled, one more incremental is taken, and every
layer of every chain (plus 1-2 moments inside each revision-history chain) is restored as new
databases and compared, per index, with what was recorded; the doctor
(``tidemark.backup.doctor.diagnose``) checks each chain. ``unsafe=True`` turns on
``testing.backup.unsafe_mvcc_window_incrementals`` (the classic MVCC-window incrementals):
divergences and doctor problems are then expected. ``force_hazards=True`` starts the schedule
with an index backfill and an IMPORT both paused across a full backup, resumed before an
incremental.

Subprocess mode (``subprocess_kills=True``, CLI ``--subprocess``) also kills processes that run
jobs. Each job statement that is not paused at a pause point (BACKUP, RESTORE TABLE and
DATABASE, IMPORT INTO, CREATE INDEX) runs, with probability ``KILL_P``, in a child Python
process that opens the same store (``CHILD``: ``tidemark.connect``, ``stop_adopting``, the
statement). The parent lowers ``jobs.registry.lease_duration`` to 1s and the chunk sizes of
backups, backfills and imports (so that a job has several checkpoints), polls the job records
until the child's job exists and, depending on the moment drawn, has a checkpoint, has
progress (``fraction_completed > 0``) or has progress plus a random delay, then SIGKILLs the
child. The job, orphaned with its lease, is then (drawn from the seed)

* finished here: ``SHOW JOB WHEN COMPLETE`` adopts it once the lease expires (``adopted``);
* cancelled: ``CANCEL JOB``, and the adopter reverts it (the statement never happened);
* left running (IMPORT, CREATE INDEX, RESTORE TABLE only): the parent's adoption loop picks it
  up in the background while the schedule goes on, and ``op_resolve`` waits for it or cancels
  it later, like a paused job.

A job that finished is then treated exactly like the statement run in-process: a backup's
layer is recorded with the fingerprints at its end time, a RESTORE DATABASE is checked at
once, a failed job raises the error the statement would have raised. A killed IMPORT that
finished is also checked to hold each of its CSV's rows exactly once. A child that finishes
before the kill lands counts as ``kill_missed`` and its statement's result is used as is. The
draws (which statement, which moment, which fate) come from the seed; where the kill lands is
timing and is not reproducible. ``force_kill=True`` (CLI ``--force-kill``) starts the schedule
with a full backup killed after its first checkpoint and adopted, retried until a kill lands.
``--unsafe`` combines with subprocess mode (the child reads the cluster setting like the
parent); divergences are then expected as usual. At the end, no job may be left unfinished
(``jobs_left``), in any mode.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import tidemark
from tidemark.clock import NANOS_PER_SECOND, format_ts, wall_now
from tidemark.errors import JobPausedError, RetryableError, SQLError, TidemarkError
from tidemark.jobs.record import JobRecord, Status
from tidemark.workload import bank

__all__ = ["Summary", "run"]

PAUSEPOINTS = "jobs.debug.pausepoints"
UNSAFE = "testing.backup.unsafe_mvcc_window_incrementals"
BACKFILL_PAUSE = "indexbackfill.after_first_chunk"
IMPORT_PAUSE = "import.after_first_chunk"
RESTORE_PAUSE = "restore.after_first_chunk"
GC_TTL = 3600
ACCOUNTS = 20
TABLES = ("nem.t1", "nem.t2", "nem.bank")
SIDE_SOURCES = ("t1", "t2", "bank")

# -- subprocess mode (see the module doc) --
KILL_P = 0.35  # the chance that a job statement runs in a child that is SIGKILLed
LEASE = "'1s'"  # jobs.registry.lease_duration: an orphan is adoptable 1s after the kill
KILL_FILE_VERSIONS = 60  # bulkio.backup.file_versions: several checkpoints per backup
KILL_WAIT_S = 60.0  # the longest wait for a child's job to reach its kill moment
POLL_S = 0.005
JOB_TYPES = {"index": "SCHEMA CHANGE", "import": "IMPORT", "restore": "RESTORE",
             "backup": "BACKUP"}
# when to kill: once the job exists, once it has a checkpoint, once it made progress, or a
# random 0-80 ms after that
MOMENTS = (("start", 2), ("checkpoint", 2), ("progress", 4), ("later", 3))
# after the kill: adopt and finish it here, cancel it, or leave it to the adoption loop
FATES = (("finish", 75), ("cancel", 10), ("leave", 15))
CHILD = r"""
import json, sys
import tidemark
from tidemark.errors import TidemarkError
conn = tidemark.connect(sys.argv[1])
conn.registry.stop_adopting()
print("running", flush=True)
try:
    res = conn.execute(sys.argv[2])
except TidemarkError as e:
    print(json.dumps({"code": e.code, "error": e.message, "hint": e.hint}), flush=True)
    conn.close()
    sys.exit(3)
print(json.dumps({"notices": list(res.notices)}), flush=True)
conn.close()
"""

# an expected state: {"db.table": sorted fingerprint rows, or None (not restored)}
Expect = dict[str, list[tuple[Any, ...]] | None]


@dataclass
class Summary:
    seed: int
    steps: int
    unsafe: bool = False
    subprocess_kills: bool = False
    ops: Counter[str] = field(default_factory=Counter)
    chains: int = 0
    backups_full: int = 0
    backups_incremental: int = 0
    backups_revision: int = 0
    backups_encrypted: int = 0
    backups_during_paused: int = 0
    restores_verified: int = 0
    tables_compared: int = 0
    tables_skipped: int = 0  # OFFLINE for a RESTORE or absent at the time: not restored
    divergences: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)  # RESTORE had to rebuild an index
    unexpected: list[str] = field(default_factory=list)  # errors the schedule did not expect
    # jobs that failed on RESUME because a GC pass passed their ingest timestamp while they
    # were paused (loud, not a data loss; reported, not failing the run: see op_resolve)
    known_issues: list[str] = field(default_factory=list)
    doctor: dict[str, str] = field(default_factory=dict)  # collection -> verdict
    doctor_problems: list[str] = field(default_factory=list)
    doctor_missed: list[str] = field(default_factory=list)  # lost data, doctor said healthy
    doctor_flagged_intact: list[str] = field(default_factory=list)  # flagged, restored exactly
    # subprocess mode: children SIGKILLed while their job was unfinished; of those, jobs
    # adopted (finished by this process), cancelled, left to the adoption loop; children
    # that finished (or failed) their statement before the kill landed
    killed: int = 0
    adopted: int = 0
    kill_cancelled: int = 0
    kill_left: int = 0
    kill_missed: int = 0
    jobs_left: list[str] = field(default_factory=list)  # jobs not finished at the end
    seconds: float = 0.0

    diverged: set[str] = field(default_factory=set)  # the restores (labels) that diverged

    @property
    def diverged_restores(self) -> int:
        return len(self.diverged)

    @property
    def ok(self) -> bool:
        """No divergence, rebuilt index or unexpected error (the default mode's verdict)."""
        return not (self.divergences or self.rebuilt or self.unexpected or self.doctor_missed
                    or self.jobs_left)

    @property
    def detected(self) -> bool:
        """Something was caught: a divergence, a rebuild or a doctor problem."""
        return bool(self.divergences or self.rebuilt or
                    any(v == "problems" for v in self.doctor.values()))

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "steps": self.steps, "unsafe": self.unsafe,
                "subprocess_kills": self.subprocess_kills,
                "ok": self.ok, "ops": dict(self.ops), "chains": self.chains,
                "backups": {"full": self.backups_full, "incremental": self.backups_incremental,
                            "revision_history": self.backups_revision,
                            "encrypted": self.backups_encrypted,
                            "during_paused_job": self.backups_during_paused},
                "restores_verified": self.restores_verified,
                "tables_compared": self.tables_compared, "tables_skipped": self.tables_skipped,
                "diverged_restores": self.diverged_restores, "divergences": self.divergences,
                "rebuilt": self.rebuilt, "unexpected": self.unexpected,
                "known_issues": self.known_issues,
                "doctor": self.doctor, "doctor_problems": self.doctor_problems,
                "doctor_missed": self.doctor_missed,
                "doctor_flagged_intact": self.doctor_flagged_intact,
                "kills": {"killed": self.killed, "adopted": self.adopted,
                          "cancelled": self.kill_cancelled, "left": self.kill_left,
                          "missed": self.kill_missed},
                "jobs_left": self.jobs_left,
                "seconds": round(self.seconds, 2)}


@dataclass
class Layer:
    end: int
    expect: Expect


@dataclass
class Chain:
    n: int
    coll: str
    revision: bool
    passphrase: str | None
    layers: list[Layer] = field(default_factory=list)
    broken: bool = False  # GC removed the history an incremental needs

    def opts(self) -> str:
        opts = []
        if self.revision:
            opts.append("revision_history")
        if self.passphrase:
            opts.append(f"encryption_passphrase = '{self.passphrase}'")
        return f" WITH {', '.join(opts)}" if opts else ""

    def pp_opt(self, lead: str = " WITH ") -> str:
        return f"{lead}encryption_passphrase = '{self.passphrase}'" if self.passphrase else ""


@dataclass
class PausedJob:
    kind: str  # index, import, restore
    table: str  # db.table it concerns
    stmt: str
    orphan: bool = False  # not paused: its process was killed and it was left running


@dataclass
class JobRun:
    """How a job statement ended (``Nemesis.job_stmt``)."""

    outcome: str  # "done" (it took effect), "canceled" (deliberately), "left" (an orphan)
    job_id: int | None = None
    notices: list[str] = field(default_factory=list)
    killed: bool = False


def _aost(ts: int) -> str:
    return f"AS OF SYSTEM TIME '{format_ts(ts)}'"


@contextlib.contextmanager
def _testing_env() -> Iterator[None]:
    old = os.environ.get("TIDEMARK_TESTING")
    os.environ["TIDEMARK_TESTING"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TIDEMARK_TESTING", None)
        else:
            os.environ["TIDEMARK_TESTING"] = old


class Nemesis:
    def __init__(self, seed: int, steps: int, store: Path, unsafe: bool, force_hazards: bool,
                 log: Callable[[str], None] | None, subprocess_kills: bool = False):
        self.rng = random.Random(seed)
        self.seed, self.steps, self.store = seed, steps, store
        self.unsafe, self.force_hazards = unsafe, force_hazards
        self.subprocess_kills = subprocess_kills
        self.log = log or (lambda _msg: None)
        self.summary = Summary(seed=seed, steps=steps, unsafe=unsafe,
                               subprocess_kills=subprocess_kills)
        self.conn = tidemark.connect(store)
        self.ext = Path(self.conn.node.engine.root) / "external"
        self.next_id = 1_000_000
        self.counter = 0
        self.indexes: dict[str, list[str]] = {t: [] for t in TABLES}
        self.paused: dict[int, PausedJob] = {}
        self.import_pre: dict[str, list[tuple[Any, ...]]] = {}  # table -> fps before IMPORT
        self.side: set[str] = set()  # side tables ever created
        self.chains: list[Chain] = []
        self.moments: list[tuple[int, Expect]] = []
        self.step_no = 0

    # -- SQL helpers ---------------------------------------------------------------------

    def sql(self, stmt: str, params: Any = ()) -> tidemark.Result:
        for n in range(50):
            try:
                return self.conn.execute(stmt, params)
            except RetryableError:
                if n == 49:
                    raise
                time.sleep(0.002)
        raise AssertionError("unreachable")

    def now(self) -> int:
        ((value,),) = self.sql("SELECT cluster_logical_timestamp()").rows
        return int(Decimal(value))

    def setting(self, name: str, value: str) -> None:
        self.sql(f"SET CLUSTER SETTING {name} = {value}")

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def fresh_ids(self, n: int) -> range:
        start = self.next_id
        self.next_id += n
        return range(start, start + n)

    def busy(self, table: str) -> bool:
        return any(j.table == table for j in self.paused.values())

    def importing(self, table: str) -> bool:
        return any(j.table == table and j.kind == "import" for j in self.paused.values())

    def paused_job(self, stmt: str, point: str | None) -> int | None:
        """Run a job's statement, with ``point`` set if given: the job id if it paused."""
        if point is None:
            self.sql(stmt)
            return None
        self.setting(PAUSEPOINTS, f"'{point}'")
        try:
            self.sql(stmt)
        except JobPausedError as exc:
            return exc.job_id
        finally:
            self.setting(PAUSEPOINTS, "''")
        return None  # finished before reaching the pause point

    def fingerprints(self, table: str, ts: int | None = None) -> list[tuple[Any, ...]]:
        clause = f" {_aost(ts)}" if ts is not None else ""
        return sorted(tuple(r) for r in
                      self.sql(f"SHOW FINGERPRINTS FROM TABLE {table}{clause}").rows)

    def state(self, table: str, ts: int) -> str:
        try:
            self.sql(f"SELECT count(*) FROM {table} {_aost(ts)}")
        except SQLError as e:
            if e.code in ("42P01", "3D000"):
                return "absent"
            if e.code == "55000" and "importing" in e.message:
                return "importing"
            if e.code == "55000" and "restoring" in e.message:
                return "restoring"
            raise
        return "public"

    def expect_at(self, ts: int) -> Expect:
        """What a restore of ``nem`` and ``side`` as of ``ts`` must hold (see module doc)."""
        out: Expect = {}
        for table in [*TABLES, *sorted(self.side)]:
            st = self.state(table, ts)
            if st == "public":
                out[table] = self.fingerprints(table, ts)
            elif st == "importing":
                out[table] = self.import_pre[table]
            else:
                out[table] = None
        return out

    # -- subprocess mode: job statements run by a child that is SIGKILLed --------------

    def job_stmt(self, stmt: str, kind: str, *, leave: bool = False,
                 force: str | None = None) -> JobRun:
        """Run a job's statement: in this process, or (subprocess mode, drawn with
        ``KILL_P``, or ``force`` naming the kill moment) in a child that is SIGKILLed
        mid-job. ``leave``: the orphan may be left to the adoption loop. Raises what the
        statement would raise."""
        if force is None and not (self.subprocess_kills and self.rng.random() < KILL_P):
            return JobRun("done", notices=list(self.sql(stmt).notices))
        moment = force or self.rng.choices([m for m, _ in MOMENTS],
                                           [w for _, w in MOMENTS])[0]
        delay = self.rng.uniform(0.0, 0.08) if moment == "later" else 0.0
        fate = "finish" if force else self.rng.choices(
            [f for f, _ in FATES], [w if leave or f != "leave" else 0 for f, w in FATES])[0]
        return self.killed_stmt(stmt, kind, moment, delay, fate)

    def jobs(self) -> list[JobRecord]:
        return self.conn.node.db.run(self.conn.registry.all)

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        root = str(Path(tidemark.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        env.pop("TIDEMARK_TESTING", None)  # the child changes no setting
        return env

    def killed_stmt(self, stmt: str, kind: str, moment: str, delay: float,
                    fate: str) -> JobRun:
        s = self.summary
        # The child reads the store's cluster settings: no pause point may be left set.
        if str(self.conn.node.settings.get(PAUSEPOINTS)):
            self.setting(PAUSEPOINTS, "''")
        job_type = JOB_TYPES[kind]
        before = {r.id for r in self.jobs()}
        with tempfile.TemporaryFile() as out:
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(self.store), stmt], stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.child_env(),
                cwd=Path(tidemark.__file__).resolve().parents[1])
            try:
                job_id = self.wait_to_kill(child, job_type, before, moment, delay)
            finally:
                if child.poll() is None:
                    child.send_signal(signal.SIGKILL)
                child.wait(KILL_WAIT_S)
            out.seek(0)
            text = out.read().decode(errors="replace")
        rec = None if job_id is None else self.conn.registry.get(job_id)
        if child.returncode != -signal.SIGKILL or rec is None or rec.status.terminal:
            # The child finished (or failed) the statement, or its job, before the kill.
            s.kill_missed += 1
            s.ops[f"kill_missed:{kind}"] += 1
            self.log(f"step {self.step_no}: {kind} child exited {child.returncode} before the "
                     f"kill ({moment}; job {job_id}: {rec.status if rec else 'none'})")
            if child.returncode == -signal.SIGKILL:
                if rec is None:
                    raise SQLError(f"no {job_type} job appeared for {stmt} before the child "
                                   f"was killed:\n{text[-2000:]}", code="XXKIL")
                return self.ended(stmt, kind, rec, fate="finish")
            return self.child_result(stmt, child.returncode, text)
        s.killed += 1
        s.ops[f"kill:{kind}"] += 1
        s.ops[f"kill.{moment}"] += 1
        self.log(f"step {self.step_no}: SIGKILL {kind} job {job_id} ({moment}, "
                 f"{rec.status}, {rec.fraction_completed:.2f}): {fate}")
        if fate == "leave":
            s.kill_left += 1
            return JobRun("left", job_id, killed=True)
        if fate == "cancel":
            try:
                self.sql(f"CANCEL JOB {job_id}")
            except SQLError as e:
                if e.code != "55000":  # it ended first (the adoption loop finished it)
                    raise
        self.sql(f"SHOW JOB WHEN COMPLETE {job_id}")
        return self.ended(stmt, kind, self.conn.registry.get(job_id), fate)

    def wait_to_kill(self, child: subprocess.Popen[bytes], job_type: str, before: set[int],
                     moment: str, delay: float) -> int | None:
        """Poll the job records until the child's job reaches ``moment``, then SIGKILL the
        child; returns the job's ID (None: the child exited and no job appeared)."""
        deadline = time.monotonic() + KILL_WAIT_S
        job_id = None
        while time.monotonic() < deadline:
            if child.poll() is not None:
                break
            # once the job is known, read its record only
            recs = self.jobs() if job_id is None else [self.conn.registry.get(job_id)]
            for rec in recs:
                if rec.id in before or rec.type != job_type:
                    continue
                job_id = rec.id
                ready = {"start": True, "checkpoint": bool(rec.checkpoint),
                         "progress": rec.fraction_completed > 0,
                         "later": rec.fraction_completed > 0}[moment]
                if ready or rec.status.terminal:
                    if delay:
                        time.sleep(delay)
                    child.send_signal(signal.SIGKILL)
                    return job_id
            time.sleep(POLL_S)
        else:
            self.summary.unexpected.append(
                f"step {self.step_no}: the child's {job_type} job did not reach {moment} in "
                f"{KILL_WAIT_S:.0f}s: killed anyway")
            child.send_signal(signal.SIGKILL)
            return job_id
        # the child exited: its job, if any, is the last one of that type
        new = [r.id for r in self.jobs() if r.id not in before and r.type == job_type]
        return max(new) if new else job_id

    def child_result(self, stmt: str, returncode: int, text: str) -> JobRun:
        """The result of a statement the child finished: its notices, or its error."""
        msg = None
        for line in reversed(text.splitlines()):  # the child's last JSON line
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    msg = json.loads(line)
                    break
        if returncode == 0 and isinstance(msg, dict) and "notices" in msg:
            return JobRun("done", notices=list(msg["notices"]))
        if returncode == 3 and isinstance(msg, dict) and "code" in msg:
            raise SQLError(msg["error"], code=msg["code"], hint=msg.get("hint"))
        raise SQLError(f"the child running {stmt} exited with {returncode}:\n{text[-3000:]}",
                       code="XXCHD")

    def ended(self, stmt: str, kind: str, rec: JobRecord, fate: str) -> JobRun:
        """A killed job, finished here or cancelled: what the statement would have done."""
        s = self.summary
        if rec.status is Status.SUCCEEDED:
            if rec.coordinator_id == self.conn.registry.instance_id:
                s.adopted += 1
                s.ops[f"kill.adopted:{kind}"] += 1
            notices = [f"rebuilt index {name}: it did not match its table in the backup"
                       for name in rec.checkpoint.get("rebuilt", [])]
            return JobRun("done", rec.id, notices, killed=True)
        if rec.status is Status.CANCELED and fate == "cancel":
            s.kill_cancelled += 1
            s.ops[f"kill.cancelled:{kind}"] += 1
            return JobRun("canceled", rec.id, killed=True)
        if rec.status is Status.FAILED:
            # the statement would have failed the same way (e.g. XXC01: GC passed the chain)
            raise SQLError(f"job {rec.id} failed: {rec.error}",
                           code=rec.checkpoint.get("error_code") or "XXUUU",
                           hint=rec.checkpoint.get("error_hint"))
        raise SQLError(f"killed job {rec.id} ({stmt}) ended {rec.status}, not "
                       f"{'canceled' if fate == 'cancel' else 'succeeded'}", code="XXKIL")

    # -- setup ---------------------------------------------------------------------------

    def setup(self) -> None:
        if self.unsafe:
            with _testing_env():
                self.setting(UNSAFE, "true")
        self.setting("gc.ttlseconds", str(GC_TTL))
        # subprocess mode: smaller chunks, so that a kill lands mid-job more often
        self.setting("bulkio.index_backfill.batch_size", "8" if self.subprocess_kills else "20")
        self.setting("bulkio.import.batch_size", "10" if self.subprocess_kills else "25")
        if self.subprocess_kills:
            self.setting("jobs.registry.lease_duration", LEASE)
            self.setting("bulkio.backup.file_versions", str(KILL_FILE_VERSIONS))
        self.sql("CREATE DATABASE nem")
        self.sql("CREATE DATABASE side")
        self.sql("CREATE TABLE nem.t1 (id INT PRIMARY KEY, v STRING, n INT, u INT, "
                 "INDEX t1_n_idx (n))")
        self.sql("CREATE TABLE nem.t2 (id INT PRIMARY KEY, v STRING, n INT, u INT, "
                 "INDEX t2_v_idx (v) STORING (n))")
        self.indexes["nem.t1"].append("t1_n_idx")
        self.indexes["nem.t2"].append("t2_v_idx")
        bank.create(self.conn, ACCOUNTS, table="nem.bank")
        self.sql("CREATE INDEX bank_balance_idx ON nem.bank (balance)")
        self.indexes["nem.bank"].append("bank_balance_idx")
        for t in ("nem.t1", "nem.t2"):
            self.insert(t, 120)

    def row(self, i: int) -> str:
        return f"({i}, 'v{i % 13}', {self.rng.randrange(100)}, {i})"

    def insert(self, table: str, n: int) -> None:
        self.sql(f"INSERT INTO {table} VALUES " + ", ".join(self.row(i)
                                                             for i in self.fresh_ids(n)))

    # -- operations ----------------------------------------------------------------------

    def op_write(self) -> None:
        tables = [t for t in ("nem.t1", "nem.t2") if not self.importing(t)]
        if not tables:
            return self.op_transfer()
        t = self.rng.choice(tables)
        kind = self.rng.choice(["insert", "update", "delete", "upsert"])
        r = self.rng.randrange(29)
        if kind == "insert":
            self.insert(t, self.rng.randint(1, 15))
        elif kind == "update":
            self.sql(f"UPDATE {t} SET n = n + 1, v = 'w' || v WHERE id % 29 = {r}")
        elif kind == "delete":
            self.sql(f"DELETE FROM {t} WHERE id % 29 = {r} AND n % 3 = 0")
        else:
            ((lo, hi),) = self.sql(f"SELECT min(id), max(id) FROM {t}").rows
            if lo is not None:
                i = self.rng.randint(lo, hi)
                self.sql(f"UPSERT INTO {t} VALUES ({i}, 'x{i % 7}', {self.rng.randrange(9)}, "
                         f"{i})")
        self.summary.ops[f"write.{kind}"] += 1
        return None

    def op_transfer(self) -> None:
        for _ in range(self.rng.randint(1, 5)):
            bank.transfer(self.conn, self.rng, ACCOUNTS, table="nem.bank")
            self.summary.ops["transfer"] += 1

    def op_create_index(self) -> None:
        tables = [t for t in TABLES if not self.busy(t)]
        if not tables:
            return
        t = self.rng.choice(tables)
        short = t.split(".")[1]
        if short == "bank":
            cols, unique = self.rng.choice(["balance DESC", "balance, id"]), False
        else:
            cols, unique = self.rng.choice([("n", False), ("v, n DESC", False), ("u", True),
                                            ("n, v", False), ("v", False)])
        name = self.name(f"{short}_nx")
        storing = " STORING (u)" if short != "bank" and "u" not in cols and \
            self.rng.random() < 0.3 else ""
        stmt = (f"CREATE {'UNIQUE ' if unique else ''}INDEX {name} ON {t} ({cols}){storing}")
        pause = self.rng.random() < 0.5
        if pause:
            job = self.paused_job(stmt, BACKFILL_PAUSE)
        else:
            run = self.job_stmt(stmt, "index", leave=True)
            if run.outcome == "canceled":
                return
            job = run.job_id if run.outcome == "left" else None
        self.indexes[t].append(name)
        if job is not None:
            self.paused[job] = PausedJob("index", t, stmt, orphan=not pause)
            self.summary.ops["create_index.paused" if pause else "create_index.orphan"] += 1
            self.log(f"step {self.step_no}: {stmt} {'paused' if pause else 'orphaned'} "
                     f"(job {job})")
        else:
            self.summary.ops["create_index"] += 1

    def op_unique_fails(self) -> None:
        tables = [t for t in ("nem.t1", "nem.t2") if not self.busy(t)]
        if not tables:
            return
        t = self.rng.choice(tables)
        name = self.name("dup_key")
        try:
            self.sql(f"CREATE UNIQUE INDEX {name} ON {t} (v)")
        except SQLError as e:
            if e.code != "23505":
                raise
            self.summary.ops["create_unique.failed"] += 1
            return
        raise AssertionError(f"CREATE UNIQUE INDEX {name} ON {t} (v) succeeded on duplicates")

    def op_drop_index(self) -> None:
        choices = [(t, i) for t, idxs in self.indexes.items() if not self.busy(t) for i in idxs]
        if not choices:
            return
        t, idx = self.rng.choice(choices)
        self.sql(f"DROP INDEX {t}@{idx}")
        self.indexes[t].remove(idx)
        self.summary.ops["drop_index"] += 1
        self.log(f"step {self.step_no}: DROP INDEX {t}@{idx}")

    def op_import(self) -> None:
        tables = [t for t in ("nem.t1", "nem.t2") if not self.busy(t)]
        if not tables:
            return
        t = self.rng.choice(tables)
        self.ext.mkdir(exist_ok=True)
        name = f"{self.name('imp')}.csv"
        ids = self.fresh_ids(self.rng.randint(60, 120))
        (self.ext / name).write_text("".join(
            f"{i},i{i % 17},{self.rng.randrange(100)},{i}\n" for i in ids))
        pre = self.now()
        pre_fps = self.fingerprints(t, pre)
        stmt = f"IMPORT INTO {t} CSV DATA ('nodelocal://self/{name}')"
        pause = self.rng.random() < 0.5
        run = None
        if pause:
            job = self.paused_job(stmt, IMPORT_PAUSE)
        else:
            run = self.job_stmt(stmt, "import", leave=True)
            if run.outcome == "canceled":
                return
            job = run.job_id if run.outcome == "left" else None
        if job is not None:
            self.import_pre[t] = pre_fps
            self.paused[job] = PausedJob("import", t, stmt, orphan=not pause)
            self.summary.ops["import.paused" if pause else "import.orphan"] += 1
            self.log(f"step {self.step_no}: {stmt} {'paused' if pause else 'orphaned'} "
                     f"(job {job})")
            return
        self.summary.ops["import"] += 1
        if run is not None and run.killed:
            # A killed IMPORT resumed from its checkpoint: each CSV row exactly once.
            ((n, distinct),) = self.sql(f"SELECT count(*), count(DISTINCT id) FROM {t} "
                                        f"WHERE id >= {ids.start} AND id < {ids.stop}").rows
            if (n, distinct) != (len(ids), len(ids)):
                self.summary.divergences.append(
                    f"source: killed {stmt} (job {run.job_id}) left {n} rows ({distinct} "
                    f"distinct) of {len(ids)}")
                self.summary.diverged.add("source")

    def op_resolve(self, job: int | None = None, resume: bool | None = None) -> None:
        if not self.paused:
            return
        if job is None:
            job = self.rng.choice(sorted(self.paused))
        info = self.paused.pop(job)
        if resume is None:
            resume = self.rng.random() < 0.6
        if not info.orphan:
            self.sql(f"{'RESUME' if resume else 'CANCEL'} JOB {job}")
        elif not resume:
            # An orphan is running (adopted in the background) or waiting for its lease to
            # expire; it may also have finished already.
            try:
                self.sql(f"CANCEL JOB {job}")
            except SQLError as e:
                if e.code != "55000":
                    raise
        res = self.sql(f"SHOW JOB WHEN COMPLETE {job}")
        status = dict(zip(res.columns, res.rows[0], strict=True))
        want = {"succeeded"} if resume else {"canceled", "succeeded"} if info.orphan else \
            {"canceled"}
        if str(status["status"]) not in want:
            # KNOWN ISSUE: IMPORT protects S-1 over its table and RESTORE its spans, but the
            # storage engine's write check (_check_write_ts) compares the ingest timestamp with
            # the global GC threshold only, so a paused job that GC overtook fails on RESUME.
            gc_overtook = "below the GC threshold" in str(status.get("error") or "")
            (self.summary.known_issues if gc_overtook else self.summary.unexpected).append(
                f"step {self.step_no}: {info.stmt} (job {job}) {status['status']} after "
                f"{'RESUME' if resume else 'CANCEL'}: {status.get('error')}")
        if info.kind == "index" and str(status["status"]) != "succeeded":
            name = info.stmt.split(" INDEX ", 1)[1].split()[0]
            if name in self.indexes[info.table]:
                self.indexes[info.table].remove(name)
        if info.kind == "restore" and str(status["status"]) != "succeeded":
            pass  # the table is gone again
        what = "orphan." if info.orphan else ""
        self.summary.ops[f"{info.kind}.{what}{'resumed' if resume else 'cancelled'}"] += 1

    def op_restore(self) -> None:
        chains = [c for c in self.chains if c.layers]
        if not chains:
            return
        c = self.rng.choice(chains)
        try:
            self._restore_from(c)
        except TidemarkError as e:
            if not self.unsafe:
                raise
            # An unsafe chain can hold a table read in the middle of its IMPORT: RESTORE
            # refuses it, loudly (the doctor's semantic.import_cap flags such a chain).
            self.summary.divergences.append(f"mid-restore of {c.coll}: refused: {e}")
            self.summary.ops["restore.refused"] += 1

    def _restore_from(self, c: Chain) -> None:
        if self.rng.random() < 0.5:
            # a new database, checked against the chain's newest layer at once
            db = self.name("mid")
            run = self.job_stmt(f"RESTORE DATABASE nem FROM LATEST IN '{c.coll}' WITH "
                                f"new_db_name = '{db}'{c.pp_opt(', ')}", "restore")
            if run.outcome == "canceled":
                return
            self.verify(f"mid-restore of {c.coll} into {db}", "nem", db, c.layers[-1].expect,
                        run.notices)
            self.summary.ops["restore.database"] += 1
            return
        src = self.rng.choice(SIDE_SOURCES)
        t = f"side.{src}"
        if self.busy(t):
            return
        self.sql(f"DROP TABLE IF EXISTS {t}")
        self.side.add(t)
        stmt = (f"RESTORE TABLE nem.{src} FROM LATEST IN '{c.coll}' WITH into_db = 'side'"
                f"{c.pp_opt(', ')}")
        pause = self.rng.random() < 0.4
        if pause:
            job = self.paused_job(stmt, RESTORE_PAUSE)
        else:
            run = self.job_stmt(stmt, "restore", leave=True)
            if run.outcome == "canceled":
                return
            job = run.job_id if run.outcome == "left" else None
        if job is not None:
            self.paused[job] = PausedJob("restore", t, stmt, orphan=not pause)
            self.summary.ops["restore.table.paused" if pause else "restore.table.orphan"] += 1
            self.log(f"step {self.step_no}: {stmt} {'paused' if pause else 'orphaned'} "
                     f"(job {job})")
        else:
            self.summary.ops["restore.table"] += 1

    def op_gc(self) -> None:
        window = self.rng.choice([0.2, 1.0, 5.0, 60.0])
        now = wall_now() + int((GC_TTL - window) * NANOS_PER_SECOND)
        stats = self.conn.node.run_gc(now)
        self.summary.ops["gc"] += 1
        self.log(f"step {self.step_no}: GC below now-{window}s removed {stats.removed}")

    def op_moment(self) -> None:
        ts = self.now()
        self.moments.append((ts, self.expect_at(ts)))
        self.summary.ops["moment"] += 1
        self.log(f"step {self.step_no}: moment {format_ts(ts)}")

    def new_chain(self) -> Chain:
        n = len(self.chains)
        c = Chain(n=n, coll=f"nodelocal://self/nemesis-{n}",
                  revision=self.rng.random() < 0.5,
                  passphrase=f"pass-{self.seed}-{n}" if self.rng.random() < 0.35 else None)
        self.chains.append(c)
        self.summary.chains += 1
        return c

    def op_backup(self, full: bool | None = None, kill: str | None = None) -> bool:
        """One backup (``kill``: in a child, SIGKILLed at that moment); False when it was
        cancelled after a kill."""
        live = [c for c in self.chains if not c.broken]
        if full is None:
            full = not live or self.rng.random() < 0.25
        c = self.new_chain() if full else self.rng.choice(live)
        into = f"LATEST IN '{c.coll}'" if c.layers else f"'{c.coll}'"
        stmt = f"BACKUP DATABASE nem, side INTO {into}{c.opts()}"
        try:
            run = self.job_stmt(stmt, "backup", force=kill)
        except SQLError as e:
            if e.code == "XXC01" and c.layers:
                self.log(f"step {self.step_no}: {c.coll}: {e.message}: new chain")
                c.broken = True
                self.summary.ops["backup.gc_new_chain"] += 1
                return self.op_backup(full=True)
            if e.code == "42710":
                time.sleep(0.02)
                self.sql(stmt)
            else:
                raise
        else:
            if run.outcome == "canceled":
                self.log(f"step {self.step_no}: backup into {c.coll} cancelled after a kill")
                self.summary.ops["backup.cancelled"] += 1
                return False
        rows = self.sql(f"SHOW BACKUP FROM LATEST IN '{c.coll}'{c.pp_opt()}")
        ends = sorted({int(Decimal(r[rows.columns.index("end_time")])) for r in rows.rows})
        end = ends[-1]
        c.layers.append(Layer(end, self.expect_at(end)))
        s = self.summary
        if len(c.layers) == 1:
            s.backups_full += 1
        else:
            s.backups_incremental += 1
        s.backups_revision += c.revision
        s.backups_encrypted += c.passphrase is not None
        self.log(f"step {self.step_no}: backup {c.coll} layer {len(c.layers) - 1} ends "
                 f"{format_ts(end)}")
        if self.paused:
            s.backups_during_paused += 1
            kinds = ",".join(sorted({j.kind for j in self.paused.values()}))
            self.log(f"step {self.step_no}: backup {c.coll} layer {len(c.layers) - 1} while "
                     f"paused: {kinds}")
        time.sleep(0.02)  # layer folders are named to 1/100 s
        return True

    OPS: tuple[tuple[str, int], ...] = (
        ("write", 22), ("transfer", 12), ("create_index", 9), ("unique_fails", 3),
        ("drop_index", 5), ("import", 7), ("resolve", 9), ("restore", 6), ("gc", 4),
        ("backup", 16), ("moment", 5))

    def hazards(self) -> None:
        """A backfill and an IMPORT paused across a full backup, resumed before an
        incremental: the schedule that loses data with MVCC-window incrementals."""
        stmt = "CREATE INDEX t2_hz_idx ON nem.t2 (n, v)"
        job_index = self.paused_job(stmt, BACKFILL_PAUSE)
        assert job_index is not None, "the backfill did not pause"
        self.paused[job_index] = PausedJob("index", "nem.t2", stmt)
        self.indexes["nem.t2"].append("t2_hz_idx")
        self.ext.mkdir(exist_ok=True)
        ids = self.fresh_ids(100)
        (self.ext / "hazard.csv").write_text("".join(f"{i},h{i % 5},{i % 50},{i}\n"
                                                     for i in ids))
        pre = self.now()
        self.import_pre["nem.t1"] = self.fingerprints("nem.t1", pre)
        stmt = "IMPORT INTO nem.t1 CSV DATA ('nodelocal://self/hazard.csv')"
        job_import = self.paused_job(stmt, IMPORT_PAUSE)
        assert job_import is not None, "the import did not pause"
        self.paused[job_import] = PausedJob("import", "nem.t1", stmt)
        self.op_write()
        self.op_backup(full=True)
        self.op_resolve(job_index, resume=True)
        self.op_resolve(job_import, resume=True)
        self.op_write()
        self.op_backup(full=False)

    def forced_kill(self) -> None:
        """A full backup killed after its first checkpoint and adopted here; tried again
        (at the job's start, then) until a kill lands while the job is unfinished."""
        for attempt in range(5):
            killed = self.summary.killed
            self.op_backup(full=True, kill="progress" if attempt < 2 else "start")
            if self.summary.killed > killed:
                return
        self.summary.unexpected.append("force_kill: every child finished its backup before "
                                       "the kill")

    def schedule(self) -> None:
        names = [n for n, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        for step in range(1, self.steps + 1):
            self.step_no = step
            op = self.rng.choices(names, weights)[0]
            try:
                getattr(self, f"op_{op}")()
            except TidemarkError as e:
                self.summary.unexpected.append(f"step {self.step_no} ({op}): {e.code}: {e}")
                with contextlib.suppress(TidemarkError):
                    self.sql("ROLLBACK")
                with contextlib.suppress(TidemarkError):
                    self.setting(PAUSEPOINTS, "''")

    # -- verification --------------------------------------------------------------------

    def verify(self, what: str, src_db: str, dst_db: str, expect: Expect,
               notices: Sequence[str]) -> None:
        s = self.summary
        s.restores_verified += 1
        before = len(s.divergences)
        s.rebuilt += [f"{what}: {n}" for n in notices if "rebuilt" in n]
        present = {r[1] for r in self.sql(f"SHOW TABLES FROM {dst_db}").rows}
        for table, fps in expect.items():
            db, short = table.split(".")
            if db != src_db:
                continue
            if fps is None:
                s.tables_skipped += 1
                if short in present:
                    s.divergences.append(f"{what}: {table} restored, but it was absent or "
                                         "being restored at that time")
                continue
            s.tables_compared += 1
            if short not in present:
                s.divergences.append(f"{what}: {table} missing from {dst_db}")
                continue
            got = self.fingerprints(f"{dst_db}.{short}")
            if got != fps:
                want_d, got_d = dict(fps), dict(got)
                diffs = [f"{i}: want {want_d.get(i)} got {got_d.get(i)}"
                         for i in sorted(set(want_d) | set(got_d))
                         if want_d.get(i) != got_d.get(i)]
                s.divergences.append(f"{what}: {table} fingerprints differ ({'; '.join(diffs)})")
            if short == "bank":
                n, total = bank.total(self.conn, f"{dst_db}.bank")
                if (n, total) != (ACCOUNTS, ACCOUNTS * bank.INITIAL_BALANCE):
                    s.divergences.append(f"{what}: {dst_db}.bank has {n} accounts totalling "
                                         f"{total}")
        if len(s.divergences) > before:
            s.diverged.add(what)

    def restore_and_verify(self, c: Chain, subdir: str, ts: int, expect: Expect,
                           label: str) -> None:
        for src in ("nem", "side"):
            db = self.name(f"v{c.n}_")
            what = f"{c.coll} {label} ({src} at {format_ts(ts)})"
            try:
                res = self.sql(f"RESTORE DATABASE {src} FROM '{subdir}' IN '{c.coll}' "
                               f"{_aost(ts)} WITH new_db_name = '{db}'{c.pp_opt(', ')}")
            except TidemarkError as e:
                self.summary.restores_verified += 1
                self.summary.divergences.append(f"{what}: RESTORE failed: {e.code}: {e}")
                self.summary.diverged.add(what)
                continue
            self.verify(what, src, db, expect, res.notices)

    def finish(self) -> None:
        while self.paused:
            self.op_resolve()
        live = [c for c in self.chains if c.layers and not c.broken]
        if live:
            self.op_backup(full=False)
        _, total = bank.total(self.conn, "nem.bank")
        if total != ACCOUNTS * bank.INITIAL_BALANCE:
            self.summary.divergences.append(f"source: nem.bank totals {total}")
            self.summary.diverged.add("source")
        for c in self.chains:
            if not c.layers:
                continue
            ((subdir,),) = self.sql(f"SHOW BACKUPS IN '{c.coll}'").rows
            for k, layer in enumerate(c.layers):
                self.restore_and_verify(c, subdir, layer.end, layer.expect, f"layer {k}")
            if c.revision and len(c.layers) > 1:
                first, last = c.layers[0].end, c.layers[-1].end
                inside = [m for m in self.moments if first < m[0] < last]
                for k, (ts, expect) in enumerate(
                        self.rng.sample(inside, min(len(inside), self.rng.randint(1, 2)))):
                    self.restore_and_verify(c, subdir, ts, expect, f"moment {k}")
            self.run_doctor(c)
        self.summary.jobs_left += [f"job {r.id} ({r.type}: {r.description}) is {r.status}"
                                   for r in self.jobs() if not r.status.terminal]

    def run_doctor(self, c: Chain) -> None:
        # HOOK: tidemark.backup.doctor (another engineer's module). When it is missing or has
        # no ``diagnose``, the verdict is "not run".
        try:
            from tidemark.backup import doctor
        except ImportError:
            self.summary.doctor[c.coll] = "not run"
            return
        diagnose = getattr(doctor, "diagnose", None)
        if diagnose is None:
            self.summary.doctor[c.coll] = "not run"
            return
        try:
            report = diagnose(c.coll, passphrase=c.passphrase, store=self.store)
        except TidemarkError as e:
            self.summary.doctor[c.coll] = "error"
            self.summary.doctor_problems.append(f"{c.coll}: {e}")
            return
        errors = [p for p in report.problems if p.severity == "error"]
        self.summary.doctor[c.coll] = "healthy" if report.healthy else "problems"
        # The doctor's accuracy: a chain whose restores lost data (or needed an index rebuilt)
        # must be flagged; one that restored exactly is flagged only in the unsafe mode,
        # whose chains are invalid by construction even when this schedule lost nothing.
        lost = any(w.startswith(c.coll + " ") for w in self.summary.diverged) or \
            any(r.startswith(c.coll + " ") for r in self.summary.rebuilt)
        if lost and report.healthy:
            self.summary.doctor_missed.append(c.coll)
        elif not lost and not report.healthy:
            self.summary.doctor_flagged_intact.append(c.coll)
        self.summary.doctor_problems += [f"{c.coll}: {p.check}: {p.message}" for p in errors]

    def close(self) -> None:
        self.conn.close()


def run(seed: int, steps: int, workdir: str | os.PathLike[str], *, unsafe: bool = False,
        force_hazards: bool = False, log: Callable[[str], None] | None = None,
        subprocess_kills: bool = False, force_kill: bool = False) -> Summary:
    """Run one schedule on a new store under ``workdir``; see the module docstring.
    ``force_kill`` implies ``subprocess_kills``."""
    start = time.monotonic()
    store = Path(workdir) / f"nemesis-seed-{seed}"
    if store.exists():
        raise FileExistsError(f"{store} exists: use another --store-dir")
    store.parent.mkdir(parents=True, exist_ok=True)
    n = Nemesis(seed, steps, store, unsafe, force_hazards, log,
                subprocess_kills=subprocess_kills or force_kill)
    try:
        n.setup()
        if force_hazards:
            n.hazards()
        if force_kill:
            n.forced_kill()
        n.schedule()
        n.finish()
    finally:
        n.close()
    n.summary.seconds = time.monotonic() - start
    return n.summary
