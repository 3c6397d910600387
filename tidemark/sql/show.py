"""SHOW statements and cluster settings: catalog listings, settings, fingerprints."""

from __future__ import annotations

from tidemark.catalog import catalog
from tidemark.catalog.descriptors import (
    DatabaseDescriptor,
    DescState,
    IndexState,
    TableDescriptor,
)
from tidemark.catalog.fingerprint import fingerprint, span_fingerprint
from tidemark.catalog.types import STRING
from tidemark.clock import ts_to_datetime
from tidemark.cluster.node import Node
from tidemark.cluster.settings import Kind, lookup
from tidemark.jobs.record import JobRecord
from tidemark.kv.keys import index_prefix, prefix_end
from tidemark.kv.txn import Txn
from tidemark.sql.format import quote_ident
from tidemark.sql.result import Result
from tidemark.storage.engine import Span


def _rows(columns: list[str], rows: list[tuple[object, ...]]) -> Result:
    return Result(columns=columns, rows=rows, tag="SHOW", rows_affected=len(rows),
                  types=[None] * len(columns))


def show_databases(txn: Txn) -> Result:
    names = sorted(name for name, _ in catalog.list_names(txn, 0))
    return _rows(["database_name", "owner"], [(n, "root") for n in names])


def show_tables(txn: Txn, db: DatabaseDescriptor) -> Result:
    rows = []
    for name, table_id in sorted(catalog.list_names(txn, db.id)):
        desc = catalog.get_descriptor(txn, table_id)
        if isinstance(desc, TableDescriptor) and desc.state is not DescState.DROP:
            rows.append(("public", name, "table", "root"))
    return _rows(["schema_name", "table_name", "type", "owner"], rows)


def show_columns(table: TableDescriptor) -> Result:
    rows = []
    for c in table.columns:
        indices = [i.name for i in table.public_indexes()
                   if c.id in i.column_ids or c.id in i.storing_ids
                   or (i.id != table.primary_index.id and c.id in table.primary_index.column_ids)]
        rows.append((c.name, c.type.sql(), c.nullable, c.default, "", "{" + ",".join(indices) + "}",
                     c.hidden))
    return _rows(["column_name", "data_type", "is_nullable", "column_default",
                  "generation_expression", "indices", "is_hidden"], rows)


def show_indexes(table: TableDescriptor) -> Result:
    rows = []
    pk = table.primary_index
    for index in table.public_indexes():
        seq = 0
        for cid, desc in zip(index.column_ids, index.descending, strict=True):
            seq += 1
            rows.append((table.name, index.name, not index.unique, seq,
                         table.column_by_id(cid).name, "DESC" if desc else "ASC", False, False,
                         True))
        if index.id == pk.id:
            for c in table.columns:
                if c.id not in pk.column_ids:
                    seq += 1
                    rows.append((table.name, index.name, False, seq, c.name, "N/A", True,
                                 False, True))
            continue
        for sid in index.storing_ids:
            seq += 1
            rows.append((table.name, index.name, not index.unique, seq,
                         table.column_by_id(sid).name, "N/A", True, False, True))
        for cid, desc in zip(pk.column_ids, pk.descending, strict=True):
            if cid not in index.column_ids:
                seq += 1
                rows.append((table.name, index.name, not index.unique, seq,
                             table.column_by_id(cid).name, "DESC" if desc else "ASC", False,
                             True, True))
    return _rows(["table_name", "index_name", "non_unique", "seq_in_index", "column_name",
                  "direction", "storing", "implicit", "visible"], rows)


def create_statement(table: TableDescriptor) -> str:
    def cols(ids: tuple[int, ...], desc: tuple[bool, ...]) -> str:
        return ", ".join(f"{quote_ident(table.column_by_id(c).name)} "
                         f"{'DESC' if d else 'ASC'}" for c, d in zip(ids, desc, strict=True))

    lines = []
    for c in table.columns:
        line = f"{quote_ident(c.name)} {c.type.sql()} {'NULL' if c.nullable else 'NOT NULL'}"
        if c.default is not None:
            line += f" DEFAULT {c.default}"
        if c.hidden:
            line += " NOT VISIBLE"
        lines.append(line)
    pk = table.primary_index
    lines.append(f"CONSTRAINT {quote_ident(pk.name)} PRIMARY KEY "
                 f"({cols(pk.column_ids, pk.descending)})")
    for i in table.indexes:
        if i.state is not IndexState.PUBLIC:
            continue
        line = (f"{'UNIQUE ' if i.unique else ''}INDEX {quote_ident(i.name)} "
                f"({cols(i.column_ids, i.descending)})")
        if i.storing_ids:
            stored = ", ".join(quote_ident(table.column_by_id(s).name) for s in i.storing_ids)
            line += f" STORING ({stored})"
        lines.append(line)
    body = ",\n".join(f"\t{line}" for line in lines)
    return f"CREATE TABLE public.{quote_ident(table.name)} (\n{body}\n)"


def show_create_table(table: TableDescriptor) -> Result:
    return _rows(["table_name", "create_statement"], [(table.name, create_statement(table))])


def show_cluster_setting(node: Node, txn: Txn, name: str) -> Result:
    setting = lookup(name)
    value = node.settings.get(setting.name, txn)
    if setting.kind is Kind.DURATION:
        value = setting.format(value)
    return Result(columns=[setting.name], rows=[(value,)], tag="SHOW", rows_affected=1,
                  types=[STRING if setting.kind is Kind.VERSION else None])


def show_cluster_settings(node: Node, txn: Txn, show_all: bool) -> Result:
    rows = [(s.name, s.format(v), s.kind.value, s.description)
            for s, v in node.settings.all(txn) if show_all or s.public]
    return _rows(["variable", "value", "setting_type", "description"], rows)


def show_fingerprints(txn: Txn, table: TableDescriptor) -> Result:
    rows = []
    for index in table.public_indexes():
        start = index_prefix(table.id, index.id)
        span = Span(start, prefix_end(start))
        if txn.has_writes_in(span.start, span.end):  # its own writes: merged by txn.scan
            fp = fingerprint(txn.scan(span.start, span.end), len(start))
        else:  # streamed: memory does not grow with the table
            fp = span_fingerprint(txn.engine, span, txn.read_ts, len(start))
            txn.engine.check_read_ts(txn.read_ts, [span])
            txn.add_read_span(span)
        rows.append((index.name, fp))
    return _rows(["index_name", "fingerprint"], rows)


def _time(ts: int) -> object:
    return ts_to_datetime(ts) if ts else None


def show_jobs(records: list[JobRecord]) -> Result:
    """SHOW JOBS / SHOW JOB: CockroachDB's columns, newest first."""
    rows = [(r.id, r.type, r.description, str(r.status), r.running_status or None,
             _time(r.created), _time(r.started), _time(r.finished),
             round(r.fraction_completed, 4), r.error, r.coordinator_id or None)
            for r in sorted(records, key=lambda r: (r.created, r.id), reverse=True)]
    return _rows(["job_id", "job_type", "description", "status", "running_status", "created",
                  "started", "finished", "fraction_completed", "error", "coordinator_id"], rows)
