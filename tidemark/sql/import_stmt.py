"""IMPORT INTO: plan the statement (validate, take the table OFFLINE, create the job), wait.

``run_import`` is what ``Session`` calls for an ``ast.Import``. Before the transaction it
evaluates the file URIs and options and checks every file exists (so a typo fails the
statement, not a job). In one transaction it resolves the table, validates the columns,
fixes S (just above the transaction's read timestamp), sets the table OFFLINE ("importing")
and creates the job; then it waits for the job, or with ``detached`` returns its ID at once.

This is the SQL-facing part of the importer; the job itself (``importer.job``) needs none of
the SQL layer but the DEFAULT expression compiler.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from tidemark.catalog import catalog
from tidemark.catalog.descriptors import DescState
from tidemark.clock import unique_int
from tidemark.cloud import redact_uri
from tidemark.errors import SQLError
from tidemark.importer import plan
from tidemark.importer.encode import compile_defaults
from tidemark.importer.job import storage_context
from tidemark.kv.keys import table_span
from tidemark.kv.txn import Txn
from tidemark.sql import ast
from tidemark.sql.expr import Compiler, Context, Scope
from tidemark.sql.result import Result
from tidemark.storage.engine import Span

if TYPE_CHECKING:
    from tidemark.sql.session import Session

__all__ = ["RESULT_COLUMNS", "expect_string", "run_import"]

# CockroachDB's IMPORT result.
RESULT_COLUMNS = ["job_id", "status", "fraction_completed", "rows", "index_entries", "bytes"]


def _read_whole_span(txn: Txn, span: Span) -> None:
    """Make ``txn`` conflict with any write to ``span`` committed after its read timestamp,
    as a scan of the span would, without reading it (the table may be large).

    ``Txn`` has no public way to do this yet; this appends to its read set directly.
    """
    txn.add_read_span(span)


def run_import(session: Session, stmt: ast.Import, params: Sequence[Any]) -> Result:
    const = Compiler(Scope(), Context(params))
    uris = [expect_string(const.compile(e)([]), "a file URI") for e in stmt.files]
    options = {o.name.lower(): None if o.value is None else const.compile(o.value)([])
               for o in stmt.options}
    csv_options, detached = plan.parse_options(options)
    plan.check_files(uris, storage_context(session.node))
    seed = secrets.token_hex(8)

    def create(txn: Txn) -> int:
        table = session.table(txn, stmt.table)
        targets = plan.target_columns(table, stmt.columns)
        plan.check_table(table, targets)
        ts = txn.read_ts + 1
        _read_whole_span(txn, Span(*table_span(table.id)))
        offline = catalog.write_descriptor(txn, msgspec.structs.replace(
            table, state=DescState.OFFLINE, offline_reason=plan.OFFLINE_REASON, import_ts=ts))
        details = plan.ImportDetails(
            table_id=table.id, table_name=table.name, offline_version=offline.version,
            column_ids=[c.id for c in targets], files=[redact_uri(u) for u in uris],
            csv=csv_options, ts=ts, rowid_base=unique_int(), seed=seed, secret_ref=ref)
        compile_defaults(table, {c.id for c in targets}, details)  # refuse bad ones now
        description = plan.describe(table.name, stmt.columns, uris, options)
        return session.registry.create(txn, plan.IMPORT, description,
                                       msgspec.to_builtins(details))

    ref = plan.keep_uris(session.node.engine, uris)  # once, not per retry of create
    try:
        job_id = session.db.run(create)
    except BaseException:
        session.node.engine.delete_secret(ref)
        raise
    if detached:
        session.registry.start_adopting()  # runs it in the background (any node may)
        return Result(columns=["job_id"], rows=[(job_id,)], tag="IMPORT", rows_affected=1,
                      types=[None])
    record = session.wait_job(job_id)
    cp = record.checkpoint
    row = (job_id, str(record.status), round(record.fraction_completed, 4), cp.get("rows", 0),
           cp.get("index_entries", 0), cp.get("bytes", 0))
    return Result(columns=list(RESULT_COLUMNS), rows=[row], tag="IMPORT", rows_affected=1,
                  types=[None] * len(RESULT_COLUMNS))


def expect_string(value: Any, what: str) -> str:
    """``value`` (a statement argument) when it is a string; a clear error otherwise."""
    if not isinstance(value, str):
        shown = "NULL" if value is None else str(value).lower() if isinstance(value, bool) \
            else repr(value)
        raise SQLError(f"expected {what} as a string, not {shown}", code="22023")
    return value
