"""The job registry: create jobs, run them under a lease, adopt orphans, pause/resume/cancel.

Every process with the store open has a registry. A job runs in the process holding its lease
(owner and expiry in the job record, extended by a heartbeat while it runs). When a process
dies its leases expire, and another process's adoption loop (or a statement waiting for the
job) claims the job and resumes it from its checkpoint. Claiming is a serializable
transaction on the record, so two processes never run one job at once.

A job's code is a ``Resumer`` registered per job type by the layer that owns it
(``schemachange``, ``importer``, ``backup``): ``resume`` does the work, checkpointing through
the ``JobContext``; ``on_fail_or_cancel`` undoes it after a failure or CANCEL JOB.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from tidemark.clock import NANOS_PER_SECOND, unique_int, wall_now
from tidemark.cluster.node import Node
from tidemark.cluster.settings import Kind, register
from tidemark.errors import (
    JobPausedError,
    PreconditionFailedError,
    ProtectionError,
    SQLError,
    TidemarkError,
)
from tidemark.jobs import record as rec_mod
from tidemark.jobs.record import JobRecord, Status
from tidemark.kv.txn import Txn

log = logging.getLogger(__name__)

PAUSE_POINTS = register(
    "jobs.debug.pausepoints", Kind.STRING, "",
    "comma-separated names of pause points at which jobs pause themselves (for testing)")
LEASE_DURATION = register(
    "jobs.registry.lease_duration", Kind.DURATION, 30 * NANOS_PER_SECOND,
    "how long a job stays with a node that stopped heartbeating before another node adopts it",
    validate=lambda v: None if v >= NANOS_PER_SECOND // 10 else "must be at least 100ms")
ADOPT_INTERVAL_S = 0.5
WAIT_POLL_S = 0.05


T = TypeVar("T")


class JobContext:
    """What a running job uses to report progress, checkpoint, and stop when asked."""

    def __init__(self, registry: Registry, record: JobRecord):
        self.registry = registry
        self.node = registry.node
        self.job_id = record.id
        self.details = record.details
        self.checkpoint = dict(record.checkpoint)
        self.lost = threading.Event()

    def progress(self, fraction: float | None = None, *, checkpoint: dict[str, Any] | None = None,
                 running_status: str | None = None) -> None:
        """Persist progress (and a checkpoint); stop here if the job was paused or canceled."""
        if checkpoint is not None:
            self.checkpoint = dict(checkpoint)

        def update(rec: JobRecord) -> None:
            if fraction is not None:
                rec.fraction_completed = max(0.0, min(1.0, fraction))
            if checkpoint is not None:
                rec.checkpoint = dict(checkpoint)
            if running_status is not None:
                rec.running_status = running_status

        self.registry._update_owned(self, update)

    def check(self) -> None:
        """Stop here if the job was paused or canceled (cheap enough per chunk)."""
        self.registry._update_owned(self, None)

    def ingest(self, rows: list[tuple[bytes, bytes | None]], ts: int | None = None
               ) -> tuple[int, int]:
        """``engine.ingest_counted`` fenced by this job's lease: a process that lost the job
        (it stalled past its lease and another node adopted it) writes nothing."""
        return self._fenced(lambda guard: self.node.engine.ingest_counted(rows, ts,
                                                                          guard=guard))

    def import_file(self, path: str, **kwargs: Any) -> int:
        """``engine.import_file`` fenced by this job's lease, like ``ingest``."""
        return self._fenced(lambda guard: self.node.engine.import_file(path, guard=guard,
                                                                       **kwargs))

    def _fenced(self, write: Callable[[Any], T]) -> T:
        me = self.registry.instance_id

        def still_ours(raw: bytes | None) -> bool:
            return raw is not None and rec_mod.decode(raw).lease_owner == me

        try:
            return write((rec_mod.job_key(self.job_id), still_ours))
        except PreconditionFailedError:
            self.lost.set()
            raise _LeaseLost() from None

    def pauses_at(self, name: str) -> bool:
        """Whether ``pause_point(name)`` would pause: a job with work in flight settles it
        first, so that what it finished is in the checkpoint it pauses with."""
        points = {p.strip() for p in str(self.node.settings.get(PAUSE_POINTS.name)).split(",")}
        return name in points

    def pause_point(self, name: str, *, checked: bool = False) -> None:
        """Pause the job here if ``jobs.debug.pausepoints`` names this point. ``checked``:
        the caller already asked ``pauses_at`` and settled its work for it, so pause even if
        the setting changed since (going on would find that work stopped)."""
        if checked or self.pauses_at(name):
            self.registry._pause_at(self, name)
            raise _Paused(name)


class Resumer(Protocol):
    def resume(self, ctx: JobContext) -> None: ...

    def on_fail_or_cancel(self, ctx: JobContext, error: TidemarkError | None) -> None: ...


ResumerFactory = Callable[[JobRecord], Resumer]
_RESUMERS: dict[str, ResumerFactory] = {}


def protection_owner(job_id: int) -> str:
    """The owner every protected timestamp of job ``job_id`` is made with."""
    return f"job {job_id}"


def register_resumer(job_type: str, factory: ResumerFactory) -> None:
    _RESUMERS[job_type] = factory


class _Paused(Exception):  # control flow inside the registry, never shown to users
    pass


class _Canceled(Exception):
    pass


class _LeaseLost(Exception):
    pass


class Registry:
    """This process's view of the jobs: creates, runs and adopts them."""

    def __init__(self, node: Node):
        self.node = node
        self.db = node.db
        self.instance_id = uuid.uuid4().hex[:12]
        self._stop = threading.Event()  # shutting down: hand running jobs over
        self._stop_adopting = threading.Event()
        self._adopter: threading.Thread | None = None
        self._running: set[int] = set()
        self._running_lock = threading.Lock()
        self._listeners: dict[int, Callable[[JobRecord], None]] = {}  # progress, by job

    # -- creating and reading ------------------------------------------------------------

    def create(self, txn: Txn, job_type: str, description: str, details: dict[str, Any],
               *, cancelable: bool = True) -> int:
        """Add a pending job in ``txn``; it runs once the transaction commits."""
        if job_type not in _RESUMERS:
            raise SQLError(f"no resumer for jobs of type {job_type}", code="XX000")
        job_id = unique_int()
        rec_mod.write(txn, JobRecord(id=job_id, type=job_type, description=description,
                                     created=wall_now(), details=details,
                                     cancelable=cancelable))
        return job_id

    def get(self, job_id: int, txn: Txn | None = None) -> JobRecord:
        rec = rec_mod.read(txn, job_id) if txn is not None else self.db.run(
            lambda t: rec_mod.read(t, job_id))
        if rec is None:
            raise SQLError(f"job with ID {job_id} does not exist", code="42704",
                           hint="SHOW JOBS lists the jobs")
        return rec

    def all(self, txn: Txn) -> list[JobRecord]:
        return rec_mod.read_all(txn)

    # -- control statements --------------------------------------------------------------

    def pause(self, job_id: int) -> None:
        def f(txn: Txn) -> None:
            rec = self.get(job_id, txn)
            if rec.status in (Status.PAUSED, Status.PAUSE_REQUESTED):
                return
            if rec.status is Status.PENDING:
                rec.status = Status.PAUSED
            elif rec.status is Status.RUNNING:
                rec.status = Status.PAUSE_REQUESTED
            else:
                raise SQLError(f"job {job_id} is {rec.status}: it cannot be paused",
                               code="55000")
            rec_mod.write(txn, rec)
        self.db.run(f)

    def resume(self, job_id: int) -> None:
        def f(txn: Txn) -> None:
            rec = self.get(job_id, txn)
            if rec.status is Status.PAUSE_REQUESTED:
                rec.status = Status.RUNNING  # the pause never happened
            elif rec.status is Status.PAUSED:
                rec.status = Status.RUNNING
                rec.lease_owner, rec.lease_expiry = "", 0  # any node may pick it up
                rec.running_status = ""
            elif rec.status in (Status.RUNNING, Status.PENDING):
                return
            else:
                raise SQLError(f"job {job_id} is {rec.status}: only a paused job can be "
                               "resumed", code="55000")
            rec_mod.write(txn, rec)
        self.db.run(f)

    def cancel(self, job_id: int) -> None:
        def f(txn: Txn) -> None:
            rec = self.get(job_id, txn)
            if rec.status in (Status.CANCEL_REQUESTED, Status.REVERTING):
                return
            if rec.status.terminal:
                raise SQLError(f"job {job_id} is already {rec.status}: it cannot be canceled",
                               code="55000")
            if not rec.cancelable:
                raise SQLError(f"job {job_id} is not cancelable: {rec.description}",
                               code="55000", hint="it finishes on its own")
            if rec.status is Status.PAUSED:
                rec.lease_owner, rec.lease_expiry = "", 0
            rec.status = Status.CANCEL_REQUESTED
            rec_mod.write(txn, rec)
        self.db.run(f)

    # -- running -------------------------------------------------------------------------

    def _lease_ns(self) -> int:
        return int(self.node.settings.get(LEASE_DURATION.name))

    def _claim(self, job_id: int) -> JobRecord | None:
        def f(txn: Txn) -> JobRecord | None:
            rec = rec_mod.read(txn, job_id)
            if rec is None or not rec.status.runnable:
                return None
            now = wall_now()
            if rec.lease_owner and rec.lease_owner != self.instance_id and \
                    rec.lease_expiry > now:
                return None
            rec.lease_owner = rec.coordinator_id = self.instance_id
            rec.lease_expiry = now + self._lease_ns()
            if rec.status is Status.PENDING:
                rec.status = Status.RUNNING
            if not rec.started:
                rec.started = now
            rec_mod.write(txn, rec)
            return rec
        return self.db.run(f)

    def _update_owned(self, ctx: JobContext,
                      update: Callable[[JobRecord], None] | None) -> None:
        """Change our job's record, unless we lost it, or it was paused or canceled."""
        if ctx.lost.is_set():
            raise _LeaseLost()
        if self._stop.is_set():  # this process is shutting down: hand the job over
            self._finish(ctx.job_id, _release)
            ctx.lost.set()
            raise _LeaseLost()

        def f(txn: Txn) -> str:
            rec = rec_mod.read(txn, ctx.job_id)
            if rec is None or rec.lease_owner != self.instance_id:
                return "lost"
            if rec.status is Status.PAUSE_REQUESTED:
                rec.status, rec.lease_owner, rec.lease_expiry = Status.PAUSED, "", 0
                rec.running_status = "paused by PAUSE JOB"
                rec_mod.write(txn, rec)
                return "paused"
            if rec.status is Status.CANCEL_REQUESTED:
                return "canceled"
            if update is None:
                return "ok"
            update(rec)
            rec.lease_expiry = wall_now() + self._lease_ns()
            rec_mod.write(txn, rec)
            updated.append(rec)
            return "ok"

        updated: list[JobRecord] = []
        outcome = self.db.run(f)
        listener = self._listeners.get(ctx.job_id)
        if updated and listener is not None:
            listener(updated[-1])
        if outcome == "lost":
            ctx.lost.set()
            raise _LeaseLost()
        if outcome == "paused":
            raise _Paused("PAUSE JOB")
        if outcome == "canceled":
            raise _Canceled()

    def _pause_at(self, ctx: JobContext, point: str) -> None:
        def f(rec: JobRecord) -> None:
            rec.status, rec.lease_owner, rec.lease_expiry = Status.PAUSED, "", 0
            rec.running_status = f"paused at pause point {point}"
        self._finish(ctx.job_id, f)

    def _finish(self, job_id: int, change: Callable[[JobRecord], None]) -> bool:
        """Apply ``change`` to the job's record if this instance still holds its lease;
        whether it did."""
        def f(txn: Txn) -> bool:
            rec = rec_mod.read(txn, job_id)
            if rec is None or rec.lease_owner != self.instance_id:
                return False
            change(rec)
            rec_mod.write(txn, rec)
            return True
        return self.db.run(f)

    def _ended(self, record: JobRecord) -> None:
        """The job is over for good, and says so: every protected timestamp it holds goes,
        also one it made and never recorded before a crash (a leak would hold GC back
        forever), and so do its credentials (``details["secret_ref"]``: the job-secrets
        row of a BACKUP, RESTORE or IMPORT). Not before: a job that did its work but died
        before it was marked done runs again, and needs them."""
        owner = protection_owner(record.id)
        for protection in self.db.engine.protected_records():
            if protection.owner == owner:
                with contextlib.suppress(ProtectionError):
                    self.db.engine.release(protection.id)
        ref = record.details.get("secret_ref") if isinstance(record.details, dict) else None
        if ref:
            self.db.engine.delete_secret(ref)

    def _sweep(self, records: list[JobRecord]) -> None:
        held = {p.owner for p in self.db.engine.protected_records()}
        secrets = set(self.db.engine.secret_owners())
        for rec in records:
            ref = rec.details.get("secret_ref") if isinstance(rec.details, dict) else None
            if rec.status.terminal and (protection_owner(rec.id) in held or ref in secrets):
                self._ended(rec)

    def _heartbeat(self, ctx: JobContext, done: threading.Event) -> None:
        try:
            self._beat(ctx, done)
        finally:
            self.db.engine.release_thread()

    def _beat(self, ctx: JobContext, done: threading.Event) -> None:
        interval = max(self._lease_ns() / NANOS_PER_SECOND / 3, 0.05)
        while not done.wait(interval):
            def f(txn: Txn) -> bool:
                rec = rec_mod.read(txn, ctx.job_id)
                if rec is None or rec.lease_owner != self.instance_id:
                    return False
                rec.lease_expiry = wall_now() + self._lease_ns()
                rec_mod.write(txn, rec)
                return True
            try:
                if not self.db.run(f):
                    ctx.lost.set()
                    return
            except TidemarkError:
                continue  # a busy store: try again at the next beat

    def run_job(self, job_id: int) -> bool:
        """Claim and run a job in this thread until it finishes, pauses or is lost.

        Returns False when the job could not be claimed (someone else holds it).
        """
        with self._running_lock:
            if job_id in self._running:
                return False
            self._running.add(job_id)
        try:
            record = self._claim(job_id)
            if record is None:
                return False
            self._execute(record)
            return True
        finally:
            with self._running_lock:
                self._running.discard(job_id)

    def _execute(self, record: JobRecord) -> None:
        ctx = JobContext(self, record)
        factory = _RESUMERS.get(record.type)
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(ctx, done), daemon=True,
                                name=f"job-{record.id}-heartbeat")
        beat.start()
        try:
            if factory is None:
                raise SQLError(f"this binary cannot run jobs of type {record.type}",
                               code="XX000")
            resumer = factory(record)
            if record.status is Status.PAUSE_REQUESTED:
                self._update_owned(ctx, None)  # becomes paused
            if record.status is Status.REVERTING:  # adopted half-way through a revert
                error = TidemarkError(record.error, code=record.checkpoint.get("error_code"))
                self._revert(ctx, record, error if record.error else None,
                             Status.FAILED if record.error else Status.CANCELED)
                return
            if record.status is Status.CANCEL_REQUESTED:
                raise _Canceled()
            resumer.resume(ctx)
            if self._finish(record.id, _succeeded):
                self._ended(record)
        except (_Paused, _LeaseLost):
            pass
        except _Canceled:
            self._revert(ctx, record, None, Status.CANCELED)
        except TidemarkError as exc:
            self._revert(ctx, record, exc, Status.FAILED)
        except Exception as exc:  # a bug: keep the traceback in the job's error
            log.exception("job %s failed", record.id)
            err = TidemarkError(f"internal error: {exc!r}\n{traceback.format_exc()}")
            self._revert(ctx, record, err, Status.FAILED)
        finally:
            done.set()
            beat.join()

    def _revert(self, ctx: JobContext, record: JobRecord, error: TidemarkError | None,
                final: Status) -> None:
        def reverting(rec: JobRecord) -> None:
            rec.status = Status.REVERTING
            if error is not None:
                rec.error, rec.checkpoint["error_code"] = error.message, error.code
                if error.hint:
                    rec.checkpoint["error_hint"] = error.hint
        self._finish(record.id, reverting)
        factory = _RESUMERS.get(record.type)
        try:
            if factory is not None:
                factory(record).on_fail_or_cancel(ctx, error)
        except Exception as exc:  # the revert failed: say so in the job
            log.exception("reverting job %s failed", record.id)
            message = f"{error.message if error else 'canceled'}; reverting failed: {exc}"

            def revert_failed(rec: JobRecord) -> None:
                rec.status, rec.error, rec.finished = Status.FAILED, message, wall_now()
                rec.lease_owner = ""
            if self._finish(record.id, revert_failed):
                self._ended(record)
            return

        def ended(rec: JobRecord) -> None:
            rec.status, rec.finished, rec.lease_owner = final, wall_now(), ""
        if self._finish(record.id, ended):
            self._ended(record)

    # -- waiting and adoption ------------------------------------------------------------

    def wait(self, job_id: int, on_progress: Callable[[JobRecord], None] | None = None
             ) -> JobRecord:
        """Wait for a job to end, running it here when nobody else does.

        Raises ``JobPausedError`` when the job pauses, and SQLError when it fails or is
        canceled, so a statement waiting on a job fails like the job did.
        """
        if on_progress is not None:
            self._listeners[job_id] = on_progress  # also told while it runs in this thread
        try:
            return self._wait(job_id, on_progress)
        finally:
            self._listeners.pop(job_id, None)

    def _wait(self, job_id: int, on_progress: Callable[[JobRecord], None] | None
              ) -> JobRecord:
        while True:
            rec = self.get(job_id)
            if on_progress is not None:
                on_progress(rec)
            if rec.status is Status.SUCCEEDED:
                return rec
            if rec.status is Status.FAILED:
                raise SQLError(f"job {job_id} failed: {rec.error}",
                               code=rec.checkpoint.get("error_code") or "XXUUU",
                               hint=rec.checkpoint.get("error_hint"))
            if rec.status is Status.CANCELED:
                raise SQLError(f"job {job_id} was canceled", code="57014")
            if rec.status is Status.PAUSED:
                raise JobPausedError(job_id, rec.running_status)
            if self._stop.is_set():
                raise SQLError(f"job {job_id} was left running: this node is shutting down",
                               code="57P01", hint="another node adopts it")
            if rec.type not in _RESUMERS:
                raise SQLError(f"this process cannot run job {job_id} of type {rec.type}",
                               code="0A000", hint="run it from a tidemark node that can")
            if not self.run_job(job_id):
                time.sleep(WAIT_POLL_S)

    def start_adopting(self) -> None:
        """Run the adoption loop in a daemon thread until ``close``."""
        if self._adopter is None:
            self._adopter = threading.Thread(target=self._adopt_loop, daemon=True,
                                             name="jobs-adopter")
            self._adopter.start()

    def adopt_once(self) -> int:
        """Claim and run every job whose lease is free; returns how many ran. Also frees
        what an ended job still holds (``_ended``: a process died between recording the end
        and freeing it)."""
        now = wall_now()
        records = self.db.run(self.all)
        self._sweep(records)
        ran = 0
        for rec in records:
            if self._stop_adopting.is_set():
                break
            if rec.type in _RESUMERS and rec.status.runnable and \
                    (not rec.lease_owner or rec.lease_expiry <= now):
                with contextlib.suppress(TidemarkError):
                    ran += self.run_job(rec.id)
        return ran

    def _adopt_loop(self) -> None:
        while not self._stop_adopting.wait(ADOPT_INTERVAL_S):
            try:
                self.adopt_once()
            except Exception:  # keep adopting; a closed store ends the loop below
                if self._stop_adopting.is_set():
                    return
                log.exception("job adoption failed")

    def stop_adopting(self) -> None:
        """Stop the adoption loop; jobs this process runs in other threads go on."""
        self._stop_adopting.set()
        if self._adopter is not None:
            self._adopter.join()
            self._adopter = None

    def close(self) -> None:
        """Shut down: running jobs hand their lease over at their next checkpoint (another
        node adopts them at once), and the adoption loop ends."""
        self._stop.set()
        self.stop_adopting()


def _release(rec: JobRecord) -> None:
    rec.lease_owner, rec.lease_expiry = "", 0  # any node may adopt it now


def _succeeded(rec: JobRecord) -> None:
    rec.status, rec.fraction_completed, rec.finished = Status.SUCCEEDED, 1.0, wall_now()
    rec.lease_owner, rec.running_status = "", ""
