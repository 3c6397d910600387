"""The IMPORT job: read the files chunk by chunk, ingest every index entry at S, publish.

DESIGN.md "Bulk operations". The statement (``sql.import_stmt``) has already set the table
OFFLINE and fixed S, the one MVCC timestamp of every imported version, just above the
statement's read timestamp (the statement's transaction conflicts with any write to the table
after that read, so reads at ``S - 1`` see exactly the table's pre-import contents, and its
descriptor still PUBLIC). The job:

1. (first run only) protects ``S - 1`` over the table from GC — a revert needs the version of
   each key just below S — and records what the table held before (for validation);
2. reads each file from its checkpointed byte offset, a chunk of ``bulkio.import.batch_size``
   rows at a time; encodes and validates each row (``importer.encode``); refuses a primary
   key that the table already held at ``S - 1``; ingests the chunk's entries of every index
   at S as one commit (its own arrival); checkpoints (file, byte offset, line, row counts,
   the chunk's arrival) — pause point ``import.after_first_chunk`` after the first chunk;
3. validates: the primary index holds the old rows plus the imported ones, and every
   secondary index one entry per row (a UNIQUE index with fewer has a duplicate: named);
4. brings the table back PUBLIC (the jobs registry frees the protection once it ends).

Duplicates among imported rows show up at ingest: a key already stored at S is not written
again (``ingest_counted``), and ``arrivals_at`` then tells a duplicate (stored by an earlier,
checkpointed chunk, or by this run) from a replay (stored by the chunk a crash interrupted
before its checkpoint, which is re-read on resume and must be a no-op).

On failure or CANCEL JOB, ``on_fail_or_cancel`` reverts with MVCC writes at the current time
(``engine.revert_range``): every key with a version at S that arrived during the job gets back
its value from just below S, or a tombstone. Keys the import never touched are left alone, so
pre-existing data is never destroyed, and the table comes back PUBLIC with its old contents.

The table is this job's exactly while its descriptor is OFFLINE at the version the statement
wrote (``ImportDetails.offline_version``). Only then does the job ingest or revert: a job
adopted after it published the table (a crash before it was marked succeeded) just finishes,
and a revert that already brought the table back never runs again on a table users may have
changed since.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from tidemark.catalog import catalog
from tidemark.catalog.descriptors import DescState, TableDescriptor
from tidemark.catalog.entries import entry_key
from tidemark.catalog.rowcodec import decode_row
from tidemark.cloud import StorageContext, open_file, redact_uri
from tidemark.cluster.node import Node
from tidemark.cluster.settings import Kind, register
from tidemark.errors import SQLError, TidemarkError
from tidemark.importer.csvread import Chunk, FileCursor, RowError, read_chunks
from tidemark.importer.encode import RowEncoder, duplicate_reason
from tidemark.importer.plan import IMPORT, OFFLINE_REASON, ImportDetails, file_uris
from tidemark.jobs.record import JobRecord
from tidemark.jobs.registry import JobContext, protection_owner, register_resumer
from tidemark.kv.keys import index_prefix, index_span, table_span
from tidemark.kv.txn import Txn
from tidemark.storage.engine import Span
from tidemark.storage.sqlite import EXTERNAL_DIR

__all__ = ["BATCH_SIZE", "PAUSE_AFTER_FIRST_CHUNK", "ImportResumer", "storage_context"]

PAUSE_AFTER_FIRST_CHUNK = "import.after_first_chunk"
DEFAULT_BATCH_SIZE = 10_000
BATCH_SIZE = register(
    "bulkio.import.batch_size", Kind.INT, DEFAULT_BATCH_SIZE,
    "rows per chunk of an IMPORT: each chunk's index entries are ingested as one commit, "
    "and the job checkpoints after each",
    validate=lambda v: None if v >= 1 else "must be at least 1")


def storage_context(node: Node) -> StorageContext:
    """External storage as this node sees it (``nodelocal://self`` is its external/)."""
    return StorageContext(external_dir=Path(node.engine.root) / EXTERNAL_DIR)




def _ours(table: object, details: ImportDetails) -> bool:
    """Is the table still offline for this import (the version its statement wrote)?"""
    return isinstance(table, TableDescriptor) and table.state is DescState.OFFLINE and \
        table.offline_reason == OFFLINE_REASON and table.version == details.offline_version


def _publish(txn: Txn, details: ImportDetails) -> None:
    """Bring the table back PUBLIC, if it is still offline for this import (idempotent)."""
    table = catalog.get_descriptor(txn, details.table_id)
    if _ours(table, details):
        assert isinstance(table, TableDescriptor)
        catalog.write_descriptor(txn, msgspec.structs.replace(
            table, state=DescState.PUBLIC, offline_reason="", import_ts=0))


class _Replay:
    """Tells an entry an earlier row imported from one a replayed chunk wrote, by arrival."""

    def __init__(self, checkpointed: int):
        self.checkpointed = checkpointed  # the arrival of the last checkpointed chunk
        self.ours: set[int] = set()  # arrivals of the chunks this run ingested

    def earlier_row(self, arrival: int) -> bool:
        return arrival <= self.checkpointed or arrival in self.ours


class ImportResumer:
    """Runs one IMPORT job (see the module docstring)."""

    def __init__(self, record: JobRecord):
        self.details = msgspec.convert(record.details, ImportDetails)
        self.owner = protection_owner(record.id)

    # -- running -------------------------------------------------------------------------

    def resume(self, ctx: JobContext) -> None:
        node, d = ctx.node, self.details
        cp = ctx.checkpoint if "total_bytes" in ctx.checkpoint else self._start(ctx)
        table = node.db.run(lambda txn: catalog.get_descriptor(txn, d.table_id))
        if not _ours(table, d):
            if cp["file"] >= len(d.files) and isinstance(table, TableDescriptor) and \
                    table.state is DescState.PUBLIC:
                return  # published just before a crash: done
            raise SQLError(f'table "{d.table_name}" was dropped or changed during IMPORT',
                           code="42P01")
        assert isinstance(table, TableDescriptor)
        encoder = RowEncoder(table, d)
        batch = int(node.settings.get(BATCH_SIZE.name))
        # Entries at S that arrived after the last checkpoint, and not from this run, were
        # written by a chunk whose checkpoint never happened (its process died, or lost the
        # job): that chunk is re-read now, and its entries are no duplicates.
        replay = _Replay(checkpointed=int(cp["arrival"]))
        first = True
        sctx = storage_context(node)
        uris = file_uris(node.engine, d)
        while cp["file"] < len(uris):
            uri = uris[cp["file"]]
            storage, name = open_file(uri, sctx)
            cursor = FileCursor(cp["offset"], cp["line"], cp["file_rows"])
            shown = redact_uri(uri)
            try:
                with storage.open(name, cursor.offset) as stream:
                    for chunk in read_chunks(stream, cursor, d.csv, batch, shown):
                        cp = self._chunk(ctx, encoder, chunk, cp, replay, shown)
                        if first:
                            first = False
                            ctx.pause_point(PAUSE_AFTER_FIRST_CHUNK)
            finally:
                storage.close()
            cp = {**cp, "file": cp["file"] + 1, "offset": 0, "line": 0, "file_rows": 0,
                  "done_bytes": cp["done_bytes"] + cp["sizes"][cp["file"]]}
            ctx.progress(self._fraction(cp), checkpoint=cp)
        ctx.progress(running_status="validating")
        self._validate(node, table, cp)
        # The registry frees the protection once the job has ended.
        node.db.run(lambda txn: _publish(txn, d))

    def _start(self, ctx: JobContext) -> dict[str, Any]:
        """First run: protect the history below S, measure the files and the table."""
        node, d = ctx.node, self.details
        if self._protection(node) is None:  # a run that died here made one already
            node.engine.protect(d.ts - 1, [Span(*table_span(d.table_id))], owner=self.owner)
        sctx = storage_context(node)
        sizes = []
        for uri in file_uris(node.engine, d):
            storage, name = open_file(uri, sctx)
            try:
                sizes.append(storage.stat(name).size)
            finally:
                storage.close()
        table = node.db.run(lambda txn: catalog.get_descriptor(txn, d.table_id))
        if not _ours(table, d):
            raise SQLError(f'table "{d.table_name}" was dropped or changed during IMPORT',
                           code="42P01")
        assert isinstance(table, TableDescriptor)
        pre_rows = node.engine.count_live(*index_span(d.table_id, table.primary_index.id),
                                          d.ts - 1)
        cp: dict[str, Any] = {
            "file": 0, "offset": 0, "line": 0, "file_rows": 0, "done_bytes": 0,
            "sizes": sizes, "total_bytes": sum(sizes), "rows": 0, "index_entries": 0,
            "bytes": 0, "arrival": d.ts, "pre_rows": pre_rows,
        }
        ctx.progress(0.0, checkpoint=cp, running_status="importing")
        return cp

    def _chunk(self, ctx: JobContext, encoder: RowEncoder, chunk: Chunk, cp: dict[str, Any],
               replay: _Replay, shown: str) -> dict[str, Any]:
        """Encode, check and ingest one chunk; checkpoint after it. Returns the checkpoint."""
        engine, d = ctx.node.engine, self.details
        rows = encoder.rows(chunk, cp["rows"], shown)
        if cp["pre_rows"]:
            self._check_existing(engine, encoder, rows, chunk.lines, shown)
        entries = encoder.entries(rows, shown, chunk.lines)
        arrival, written = ctx.ingest(entries, d.ts)  # fenced by the job's lease
        if written != len(entries):
            self._diagnose(engine, encoder, rows, chunk.lines, shown, arrival, replay)
        replay.ours.add(arrival)
        nbytes = sum(map(len, (k for k, _ in entries))) + sum(map(len, (v for _, v in entries)))
        cp = {**cp, "offset": chunk.end.offset, "line": chunk.end.line,
              "file_rows": chunk.end.rows, "rows": cp["rows"] + len(rows),
              "index_entries": cp["index_entries"] + len(rows) * encoder.secondary,
              "bytes": cp["bytes"] + nbytes, "arrival": arrival}
        ctx.progress(self._fraction(cp), checkpoint=cp)
        return cp

    @staticmethod
    def _fraction(cp: dict[str, Any]) -> float:
        total = cp["total_bytes"]
        if not total:
            return 0.99 if cp["file"] >= len(cp["sizes"]) else 0.0
        done = cp["done_bytes"] + (cp["offset"] if cp["file"] < len(cp["sizes"]) else 0)
        return min(done / total, 0.99)  # 1.0 once validated and public

    def _check_existing(self, engine: Any, encoder: RowEncoder, rows: list[dict[int, Any]],
                        lines: list[int], uri: str) -> None:
        """A primary key the table held before the import is a duplicate."""
        keys = encoder.primary_keys(rows)
        found = engine.get_many_checked(keys, self.details.ts - 1)
        for i, key in enumerate(keys):
            if found.get(key) is not None:
                raise RowError(uri, lines[i], duplicate_reason(
                    encoder.table, encoder.primary, rows[i]) + " already exists in the table",
                    code="23505")

    def _diagnose(self, engine: Any, encoder: RowEncoder, rows: list[dict[int, Any]],
                  lines: list[int], uri: str, arrival: int, replay: _Replay) -> None:
        """Some entries of the chunk were not written: name the duplicate, unless they were
        all written by an interrupted chunk being replayed."""
        table = encoder.table
        unique = [i for i in encoder.indexes if i.unique or i.id == table.primary_index.id]
        seen: dict[bytes, int] = {}
        for n, row in enumerate(rows):
            for index in unique:
                key = entry_key(table, index, row)
                if key in seen:
                    raise RowError(uri, lines[n], duplicate_reason(table, index, row) +
                                   f" already imported from line {lines[seen[key]]}",
                                   code="23505")
                seen[key] = n
        arrivals = engine.arrivals_at(list(seen), self.details.ts)
        for key, n in seen.items():
            at = arrivals.get(key)
            if at is None or at == arrival or not replay.earlier_row(at):
                continue  # written now, or by the interrupted chunk being replayed
            index = next(i for i in unique if key.startswith(index_prefix(table.id, i.id)))
            raise RowError(uri, lines[n], duplicate_reason(table, index, rows[n]) +
                           " already imported by an earlier row", code="23505")

    def _validate(self, node: Node, table: TableDescriptor, cp: dict[str, Any]) -> None:
        """Every index holds one entry per row; a UNIQUE one with fewer has a duplicate."""
        engine, now = node.engine, node.db.now()
        rows = engine.count_live(*index_span(table.id, table.primary_index.id), now)
        if rows != cp["pre_rows"] + cp["rows"]:
            raise SQLError(f"IMPORT validation failed: {rows} rows in {table.name}, expected "
                           f"{cp['pre_rows']} + {cp['rows']} imported", code="XX000")
        for index in table.indexes:
            n = engine.count_live(*index_span(table.id, index.id), now)
            if n == rows:
                continue
            if index.unique:
                raise self._find_duplicate(node, table, index, now)
            raise SQLError(f"IMPORT validation of index {index.name} failed: {n} entries "
                           f"for {rows} rows", code="XX000")

    @staticmethod
    def _find_duplicate(node: Node, table: TableDescriptor, index: Any, ts: int) -> SQLError:
        seen: set[bytes] = set()
        start, end = index_span(table.id, table.primary_index.id)
        while start < end:
            batch = node.engine.scan(start, end, ts, limit=DEFAULT_BATCH_SIZE)
            for _, value in batch:
                row = decode_row(value)
                key = entry_key(table, index, row)
                if key in seen:
                    return SQLError(f"IMPORT failed: {duplicate_reason(table, index, row)} "
                                    "is duplicated", code="23505")
                seen.add(key)
            start = batch[-1][0] + b"\x00" if len(batch) == DEFAULT_BATCH_SIZE else end
        return SQLError(f"IMPORT validation of unique index {index.name} failed", code="XX000")

    # -- undoing -------------------------------------------------------------------------

    def on_fail_or_cancel(self, ctx: JobContext, error: TidemarkError | None) -> None:
        """Restore every key the import wrote (MVCC writes now), then bring the table back.

        Only while the table is still offline for this import: once it is public again (the
        import was published, or this revert already finished) users may have changed it,
        and a dropped table's data goes with the drop. Running it twice is harmless.
        """
        node, d = ctx.node, self.details
        table = node.db.run(lambda txn: catalog.get_descriptor(txn, d.table_id))
        if _ours(table, d):
            node.engine.revert_range(*table_span(d.table_id), d.ts, d.ts)
            node.db.run(lambda txn: _publish(txn, d))

    # -- protection ----------------------------------------------------------------------

    def _protection(self, node: Node) -> str | None:
        for record in node.engine.protected_records():
            if record.owner == self.owner:
                return record.id
        return None


register_resumer(IMPORT, ImportResumer)
