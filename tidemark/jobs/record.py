"""Job records: what a long operation is, how far it got, and who runs it.

Records live in the system jobs table (``/Table/15/1/<job id>``) of the MVCC keyspace, so every
process sharing the store sees them and changes to them are transactional. A record's state
changes only through the registry (``jobs.registry``), the record's single writer.

Statuses (CockroachDB's names)::

    pending ──► running ──► succeeded
                  │  ▲
   pause-requested│  │resume
                  ▼  │
                paused
    running/paused/pending ──cancel──► cancel-requested ──► reverting ──► canceled
    running ──error──► reverting ──► failed
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from tidemark.kv.keys import encode_key, index_prefix, prefix_end
from tidemark.kv.system import JOBS_TABLE_ID, PRIMARY_INDEX_ID
from tidemark.kv.txn import Txn

JOBS_PREFIX = index_prefix(JOBS_TABLE_ID, PRIMARY_INDEX_ID)


class Status(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSE_REQUESTED = "pause-requested"
    PAUSED = "paused"
    CANCEL_REQUESTED = "cancel-requested"
    REVERTING = "reverting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)

    @property
    def runnable(self) -> bool:
        """A node may adopt a job in this status (when nobody holds its lease)."""
        return self in (Status.PENDING, Status.RUNNING, Status.PAUSE_REQUESTED,
                        Status.CANCEL_REQUESTED, Status.REVERTING)


class JobRecord(msgspec.Struct, kw_only=True):
    id: int
    type: str  # "CREATE INDEX", "DROP INDEX", "IMPORT", "BACKUP", "RESTORE"
    description: str  # the statement, secrets redacted
    status: Status = Status.PENDING
    running_status: str = ""
    created: int = 0
    started: int = 0
    finished: int = 0
    fraction_completed: float = 0.0
    details: dict[str, Any] = msgspec.field(default_factory=dict)  # what to do; fixed
    checkpoint: dict[str, Any] = msgspec.field(default_factory=dict)  # how far it got
    error: str = ""
    lease_owner: str = ""  # the node instance running it
    lease_expiry: int = 0
    coordinator_id: str = ""
    cancelable: bool = True  # a drop, once committed, must finish: it cannot be canceled


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(JobRecord)


def job_key(job_id: int) -> bytes:
    return encode_key(JOBS_PREFIX, [job_id])


def decode(raw: bytes) -> JobRecord:
    return _decoder.decode(raw)


def read(txn: Txn, job_id: int) -> JobRecord | None:
    raw = txn.get(job_key(job_id))
    return None if raw is None else _decoder.decode(raw)


def write(txn: Txn, record: JobRecord) -> None:
    txn.put(job_key(record.id), _encoder.encode(record))


def read_all(txn: Txn) -> list[JobRecord]:
    return [_decoder.decode(v) for _, v in txn.scan(JOBS_PREFIX, prefix_end(JOBS_PREFIX))]
