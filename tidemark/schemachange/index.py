"""Online index changes as jobs: the backfill of CREATE INDEX and the cleanup of DROP INDEX.

The backfill follows DESIGN.md's protocol. The statement adds the index DELETE_ONLY and creates
the job. The job moves it to WRITE_ONLY (from then on every write maintains it), picks a read
timestamp ``R`` after that committed, protects ``R`` from GC over the table, and ingests the
entries of the table read at ``R`` *at* ``R``, a batch at a time (each batch its own commit,
so its own arrival), checkpointing the next key after each batch. Newer concurrent writes
shadow the backfilled entries. Validation then counts entries against rows (a duplicate of a
UNIQUE index shows as a missing entry, and is then named), and the index becomes PUBLIC. A failure
or CANCEL JOB removes the index from the descriptor and tombstones every entry it got.

Pause point: ``indexbackfill.after_first_chunk``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tidemark.catalog import catalog
from tidemark.catalog.descriptors import DescState, Index, IndexState, TableDescriptor
from tidemark.catalog.entries import entries_from_primary, entry_encoder
from tidemark.catalog.rowcodec import decode_row
from tidemark.catalog.types import format_value
from tidemark.cluster.settings import Kind, register
from tidemark.errors import SQLError, TidemarkError
from tidemark.jobs.record import JobRecord
from tidemark.jobs.registry import JobContext, protection_owner, register_resumer
from tidemark.kv.db import DB
from tidemark.kv.keys import index_span, table_span
from tidemark.kv.txn import Txn
from tidemark.storage.engine import Span

SCHEMA_CHANGE = "SCHEMA CHANGE"
PAUSE_AFTER_FIRST_CHUNK = "indexbackfill.after_first_chunk"
BACKFILL_BATCH_SIZE = register(
    "bulkio.index_backfill.batch_size", Kind.INT, 50_000,  # CockroachDB's default too
    "rows read, and index entries ingested, per batch of an index backfill",
    validate=lambda v: None if v >= 1 else "must be at least 1")




def set_index_state(txn: Txn, table_id: int, index_id: int,
                    state: IndexState | None) -> TableDescriptor:
    """Move an index to ``state``; None removes it from the descriptor."""
    table = catalog.get_descriptor(txn, table_id)
    if not isinstance(table, TableDescriptor):
        raise SQLError(f"table {table_id} was dropped during the schema change", code="42P01")
    indexes = tuple(i if i.id != index_id else msgspec.structs.replace(i, state=state)
                    for i in table.indexes if state is not None or i.id != index_id)
    return catalog.write_descriptor(  # type: ignore[return-value]
        txn, msgspec.structs.replace(table, indexes=indexes))


def build_entries(table: TableDescriptor, index: Index, rows: list[dict[int, Any]],
                  seen: dict[bytes, dict[int, Any]] | None) -> list[tuple[bytes, bytes]]:
    """Sorted index entries of rows; with ``seen`` (a UNIQUE index) a duplicate raises."""
    out = []
    make = entry_encoder(table, index)
    if seen is None:
        out = [make(row) for row in rows]
        out.sort()
        return out
    for row in rows:
        key, value = make(row)
        if seen is not None:
            if key in seen:
                raise duplicate_error(table, index, row)
            seen[key] = row
        out.append((key, value))
    out.sort()
    return out


def duplicate_error(table: TableDescriptor, index: Index, row: dict[int, Any]) -> SQLError:
    cols = [table.column_by_id(c) for c in index.column_ids]
    values = ", ".join(format_value(row.get(c.id)) for c in cols)
    return SQLError(
        f'failed to create unique index "{index.name}": duplicate key value violates unique '
        f"constraint (SQLSTATE 23505): Key ({', '.join(c.name for c in cols)})=({values}) "
        "is duplicated", code="23505")


def build_index_in_txn(txn: Txn, table: TableDescriptor, index: Index) -> None:
    """Backfill inside an explicit transaction: the transaction sees (and serializes) all."""
    rows = [decode_row(v) for _, v in txn.scan(*index_span(table.id, table.primary_index.id))]
    for key, value in build_entries(table, index, rows, {} if index.unique else None):
        txn.put(key, value)


def validate_index(db: DB, table_id: int, index_id: int, read_ts: int | None = None) -> None:
    """The index must have one entry per row of the table, now (counted in C).

    Two rows with the same UNIQUE key leave one entry between them, so a duplicate shows as
    a short count; only then are the rows read, to name the duplicated value: as they are
    now, and as the backfill read them at ``read_ts`` (a duplicate deleted since, while the
    index was write-only, still cost the surviving row its entry).
    """
    ts = db.now()
    table = db.run(lambda txn: catalog.get_descriptor(txn, table_id))
    assert isinstance(table, TableDescriptor)
    index = next(i for i in table.indexes if i.id == index_id)
    rows = db.engine.count_live(*index_span(table_id, table.primary_index.id), ts)
    entries = db.engine.count_live(*index_span(table_id, index_id), ts)
    if rows == entries:
        return
    if index.unique:
        for at in (ts, read_ts) if read_ts is not None else (ts,):
            seen: dict[bytes, dict[int, Any]] = {}
            for _, v in db.scan(*index_span(table_id, table.primary_index.id), ts=at):
                build_entries(table, index, [decode_row(v)], seen)  # raises on a duplicate
    raise SQLError(f"validation of index {index.name} failed: {entries} entries for {rows} "
                   "rows", code="XX000")


def remove_index(db: DB, table_id: int, index_id: int) -> None:
    """Take the index out of its table and tombstone its entries (idempotent)."""
    try:
        db.run(lambda txn: set_index_state(txn, table_id, index_id, None))
    except TidemarkError:
        pass  # the table itself is gone
    db.engine.delete_range(*index_span(table_id, index_id))


class IndexBackfill(msgspec.Struct):
    op: str  # "create" or "drop"
    table_id: int
    index_id: int


class IndexResumer:
    """Runs the backfill of CREATE INDEX, or the cleanup of DROP INDEX."""

    def __init__(self, record: JobRecord):
        self.details = msgspec.convert(record.details, IndexBackfill)

    def resume(self, ctx: JobContext) -> None:
        db, d = ctx.node.db, self.details
        if d.op == "drop":
            remove_index(db, d.table_id, d.index_id)
            return
        cp = ctx.checkpoint
        if "read_ts" not in cp:
            table = db.run(lambda txn: set_index_state(txn, d.table_id, d.index_id,
                                                       IndexState.WRITE_ONLY))
            read_ts = db.now()  # after WRITE_ONLY committed: later writes maintain the index
            start, end = index_span(d.table_id, table.primary_index.id)
            db.engine.protect(read_ts, [Span(*table_span(d.table_id))],
                              owner=protection_owner(ctx.job_id))  # freed when the job ends
            cp = {"read_ts": read_ts, "resume_key": start, "end_key": end, "done": 0,
                  "total": db.engine.count_versions(start, end)}  # estimate, for progress
            ctx.progress(0.0, checkpoint=cp, running_status="backfilling")
        table, index = self._target(db)
        batch = int(ctx.node.settings.get(BACKFILL_BATCH_SIZE.name))
        make = entries_from_primary(table, index)
        first = True
        start, end, read_ts = cp["resume_key"], cp["end_key"], cp["read_ts"]
        while start < end:
            rows = db.scan(start, end, ts=read_ts, limit=batch)
            if rows:
                ctx.ingest(make(rows), ts=read_ts)
            start = rows[-1][0] + b"\x00" if len(rows) == batch else end
            cp = {**cp, "resume_key": start, "done": cp["done"] + len(rows)}
            ctx.progress(cp["done"] / max(cp["total"], 1), checkpoint=cp)
            if first:
                first = False
                ctx.pause_point(PAUSE_AFTER_FIRST_CHUNK)
        ctx.progress(running_status="validating")
        self._target(db)  # the table or index may have been dropped meanwhile
        validate_index(db, d.table_id, d.index_id, read_ts)
        db.run(lambda txn: set_index_state(txn, d.table_id, d.index_id, IndexState.PUBLIC))

    def _target(self, db: DB) -> tuple[TableDescriptor, Index]:
        d = self.details
        table = db.run(lambda txn: catalog.get_descriptor(txn, d.table_id))
        if not isinstance(table, TableDescriptor) or table.state is DescState.DROP:
            raise SQLError(f"table {d.table_id} was dropped during CREATE INDEX", code="42P01")
        for index in table.indexes:
            if index.id == d.index_id and index.state is not IndexState.DROP:
                return table, index
        raise SQLError(f"index {d.index_id} of table {table.name} was dropped during CREATE "
                       "INDEX", code="42704")

    def on_fail_or_cancel(self, ctx: JobContext, error: TidemarkError | None) -> None:
        # A half-built index goes; a half-dropped one is unusable already: finish the drop.
        remove_index(ctx.node.db, self.details.table_id, self.details.index_id)


register_resumer(SCHEMA_CHANGE, IndexResumer)
