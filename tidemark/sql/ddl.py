"""Schema statements: CREATE/DROP DATABASE, TABLE and INDEX (their descriptor changes).

Adding an index here only puts it in the descriptor; outside an explicit transaction its
backfill is a job (``tidemark.schemachange.index``), inside one it is built in the transaction.

Dropped tables and indexes get MVCC tombstones over their spans, so AS OF SYSTEM TIME reads from
before the drop still work until GC.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from tidemark.catalog import catalog
from tidemark.catalog.descriptors import (
    Column,
    DatabaseDescriptor,
    DescState,
    Index,
    IndexState,
    TableDescriptor,
)
from tidemark.catalog.types import INT8, coerce, type_from_ref
from tidemark.errors import SQLError
from tidemark.kv.keys import table_span
from tidemark.kv.txn import Txn
from tidemark.sql import ast
from tidemark.sql.expr import Compiler, Context, Scope
from tidemark.sql.format import format_expr
from tidemark.sql.result import Result


def create_database(txn: Txn, stmt: ast.CreateDatabase) -> Result:
    if catalog.lookup_id(txn, 0, stmt.name) is not None:
        if stmt.if_not_exists:
            return Result.command("CREATE DATABASE")
        raise SQLError(f'database "{stmt.name}" already exists', code="42P04")
    catalog.create_database(txn, stmt.name)
    return Result.command("CREATE DATABASE")


def drop_database(txn: Txn, stmt: ast.DropDatabase,
                  cleanup: list[tuple[bytes, bytes]]) -> Result:
    db = catalog.database_by_name(txn, stmt.name)
    if db is None:
        if stmt.if_exists:
            return Result.command("DROP DATABASE")
        raise SQLError(f'database "{stmt.name}" does not exist', code="3D000")
    tables = catalog.list_names(txn, db.id)
    if tables and stmt.behavior != "cascade":
        raise SQLError(f'database "{stmt.name}" is not empty and RESTRICT was specified'
                       if stmt.behavior == "restrict" else
                       f'database "{stmt.name}" is not empty', code="2BP01",
                       hint=f"DROP DATABASE {stmt.name} CASCADE drops it with its "
                            f"{len(tables)} table(s)")
    for name, table_id in tables:
        _drop_table_desc(txn, db.id, name, table_id, cleanup)
    catalog.write_descriptor(txn, msgspec.structs.replace(db, state=DescState.DROP))
    catalog.set_name(txn, 0, db.name, None)
    return Result.command("DROP DATABASE")


def _drop_table_desc(txn: Txn, db_id: int, name: str, table_id: int,
                     cleanup: list[tuple[bytes, bytes]]) -> None:
    desc = catalog.get_descriptor(txn, table_id)
    if isinstance(desc, TableDescriptor):
        catalog.write_descriptor(txn, msgspec.structs.replace(desc, state=DescState.DROP))
    catalog.set_name(txn, db_id, name, None)
    cleanup.append(table_span(table_id))


def create_table(txn: Txn, stmt: ast.CreateTable, db: DatabaseDescriptor,
                 ctx: Context) -> Result:
    name = stmt.table.name
    if catalog.lookup_id(txn, db.id, name) is not None:
        if stmt.if_not_exists:
            return Result.command("CREATE TABLE")
        raise SQLError(f'relation "{name}" already exists', code="42P07")
    columns: list[Column] = []
    pk_cols: list[ast.IndexColumn] | None = None
    pk_name: str | None = None
    index_defs: list[ast.IndexDef] = []
    checker = Compiler(Scope(), ctx)
    for el in stmt.elements:
        if isinstance(el, ast.ColumnDef):
            if any(c.name == el.name for c in columns):
                raise SQLError(f'column "{el.name}" specified more than once', code="42701")
            typ = type_from_ref(el.type.name, el.type.args)
            default = el.default
            if el.type.serial and default is None:
                default = ast.FuncCall("unique_rowid")
            if default is not None:
                # Column references, unknown functions and wrong types fail now, not at INSERT.
                try:
                    coerce(checker.compile(default)([]), typ, el.name)
                except SQLError as exc:
                    raise SQLError(f"invalid DEFAULT for column {el.name!r}: {exc.message}",
                                   code=exc.code, hint=exc.hint) from None
            columns.append(Column(
                id=len(columns) + 1, name=el.name, type=typ,
                nullable=not (el.nullable is False or el.primary_key),
                default=None if default is None else format_expr(default)))
            if el.primary_key:
                if pk_cols is not None:
                    raise _multiple_pk(name)
                pk_cols = [ast.IndexColumn(el.name)]
            if el.unique:
                index_defs.append(ast.IndexDef((ast.IndexColumn(el.name),), unique=True))
        elif isinstance(el, ast.PrimaryKeyDef):
            if pk_cols is not None:
                raise _multiple_pk(name)
            pk_cols = list(el.columns)
            pk_name = el.name
        else:
            index_defs.append(el)
    if not columns:
        raise SQLError(f'table "{name}" must have at least one column', code="42601")
    if pk_cols is None:
        if any(c.name == "rowid" for c in columns):
            raise SQLError('column name "rowid" is reserved for the implicit primary key',
                           code="42701", hint="declare a PRIMARY KEY")
        columns.append(Column(id=len(columns) + 1, name="rowid", type=INT8, nullable=False,
                              default="unique_rowid()", hidden=True))
        pk_cols = [ast.IndexColumn("rowid")]
    by_name = {c.name: c for c in columns}
    pk_ids = _column_ids(name, by_name, pk_cols)
    columns = [msgspec.structs.replace(c, nullable=False) if c.id in pk_ids else c
               for c in columns]
    by_name = {c.name: c for c in columns}
    primary = Index(id=1, name=pk_name or f"{name}_pkey", column_ids=tuple(pk_ids),
                    descending=tuple(c.descending for c in pk_cols), unique=True)
    table = TableDescriptor(id=catalog.allocate_id(txn), name=name, parent_id=db.id,
                            columns=tuple(columns), primary_index=primary,
                            next_column_id=len(columns) + 1, next_index_id=2)
    for d in index_defs:
        index = _index_from_def(table, d.name, d.columns, d.unique, d.storing,
                                table.next_index_id, IndexState.PUBLIC)
        table = msgspec.structs.replace(table, indexes=(*table.indexes, index),
                                        next_index_id=table.next_index_id + 1)
    _check_key_types(table, primary)
    catalog.write_descriptor(txn, table, new=True)
    catalog.set_name(txn, db.id, name, table.id)
    return Result.command("CREATE TABLE")


def _multiple_pk(table: str) -> SQLError:
    return SQLError(f'multiple primary keys for table "{table}" are not allowed',
                    code="42P16")


def _column_ids(table: str, by_name: dict[str, Column],
                cols: list[ast.IndexColumn] | tuple[ast.IndexColumn, ...]) -> list[int]:
    ids = []
    for c in cols:
        col = by_name.get(c.name)
        if col is None:
            raise SQLError(f'column "{c.name}" does not exist in table "{table}"',
                           code="42703")
        if col.id in ids:
            raise SQLError(f'column "{c.name}" appears twice in an index', code="42701")
        ids.append(col.id)
    return ids


def _check_key_types(table: TableDescriptor, index: Index) -> None:
    for cid in index.column_ids:
        col = table.column_by_id(cid)
        if not col.type.key_encodable:
            raise SQLError(f'column "{col.name}" of type {col.type.sql()} cannot be indexed',
                           code="0A000", hint="JSONB columns cannot be part of an index key")


def _index_from_def(table: TableDescriptor, name: str | None,
                    cols: tuple[ast.IndexColumn, ...], unique: bool,
                    storing: tuple[str, ...], index_id: int, state: IndexState) -> Index:
    by_name = {c.name: c for c in table.columns}
    ids = _column_ids(table.name, by_name, cols)
    if name is None:
        name = f"{table.name}_{'_'.join(c.name for c in cols)}_{'key' if unique else 'idx'}"
    if table.index(name) is not None:
        raise SQLError(f'index "{name}" already exists on table "{table.name}"',
                       code="42P07")
    storing_ids = _column_ids(table.name, by_name, [ast.IndexColumn(s) for s in storing])
    for sid in storing_ids:
        if sid in ids or sid in table.primary_index.column_ids:
            col = table.column_by_id(sid)
            raise SQLError(f'index "{name}" already contains column "{col.name}"',
                           code="42P16", hint="STORING lists columns outside the index key")
    index = Index(id=index_id, name=name, column_ids=tuple(ids),
                  descending=tuple(c.descending for c in cols), unique=unique,
                  storing_ids=tuple(storing_ids), state=state)
    _check_key_types(table, index)
    return index


def drop_table(txn: Txn, stmt: ast.DropTable,
               resolve: Callable[[Txn, ast.TableName], tuple[DatabaseDescriptor,
                                                             TableDescriptor | None]],
               cleanup: list[tuple[bytes, bytes]]) -> Result:
    for tn in stmt.tables:
        db, table = resolve(txn, tn)
        if table is None:
            if stmt.if_exists:
                continue
            raise SQLError(f'relation "{tn.name}" does not exist', code="42P01")
        _drop_table_desc(txn, db.id, table.name, table.id, cleanup)
    return Result.command("DROP TABLE")


def add_index(txn: Txn, table: TableDescriptor, stmt: ast.CreateIndex,
              state: IndexState) -> tuple[TableDescriptor, Index] | None:
    """Add the index to the descriptor (None when IF NOT EXISTS finds it already there)."""
    if stmt.name is not None and table.index(stmt.name) is not None:
        if stmt.if_not_exists:
            return None
        raise SQLError(f'index "{stmt.name}" already exists on table "{table.name}"',
                       code="42P07")
    index = _index_from_def(table, stmt.name, stmt.columns, stmt.unique, stmt.storing,
                            table.next_index_id, state)
    table = msgspec.structs.replace(table, indexes=(*table.indexes, index),
                                    next_index_id=table.next_index_id + 1)
    table = catalog.write_descriptor(txn, table)  # type: ignore[assignment]
    return table, index
