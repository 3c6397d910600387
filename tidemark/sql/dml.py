"""INSERT, UPSERT, UPDATE and DELETE: rows in, index entries maintained, constraints enforced.

Every statement runs inside one transaction, so a failure part-way (a unique violation on the
100th row, say) leaves nothing written. Writes maintain each secondary index by its state:
WRITE_ONLY and PUBLIC indexes get entries added and removed, DELETE_ONLY ones only removed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tidemark.catalog.descriptors import Index, TableDescriptor
from tidemark.catalog.entries import (
    deletable_indexes,
    entry_encoder,
    entry_key,
    maintained_indexes,
)
from tidemark.catalog.rowcodec import decode_row, encode_row
from tidemark.catalog.types import coerce
from tidemark.errors import SQLError
from tidemark.kv.txn import Txn
from tidemark.sql import ast
from tidemark.sql.expr import (
    Compiler,
    Context,
    Scope,
    format_value,
    is_constant,
    literal_value,
)
from tidemark.sql.plan import choose_path, read_rows
from tidemark.sql.result import Result
from tidemark.sql.select import (
    column_name,
    expand_items,
    row_values,
    table_scope,
)

Row = dict[int, Any]
DefaultFn = Callable[[], Any]
_DEFAULT = object()  # a VALUES item that was the DEFAULT keyword


def unique_violation(table: TableDescriptor, index: Index, row: Row) -> SQLError:
    name = index.name
    cols = [table.column_by_id(c) for c in index.column_ids]
    values = ", ".join(format_value(row.get(c.id)) for c in cols)
    return SQLError(
        f'duplicate key value violates unique constraint "{name}" (SQLSTATE 23505): '
        f"Key ({', '.join(c.name for c in cols)})=({values}) already exists.",
        code="23505")


class TableWriter:
    """Writes rows of one table in one transaction, keeping every index and constraint."""

    def __init__(self, txn: Txn, table: TableDescriptor):
        self.txn = txn
        self.table = table
        self.primary = table.primary_index
        self.maintained = maintained_indexes(table)
        self.deletable = deletable_indexes(table)
        self.secondary = [i for i in self.maintained if i.id != self.primary.id]
        self.encoders = {i.id: entry_encoder(table, i) for i in self.maintained}
        self.unique = [i for i in self.secondary if i.unique]
        self._prefetched: dict[bytes, bytes | None] = {}

    def pk_key(self, row: Row) -> bytes:
        return entry_key(self.table, self.primary, row)

    def prefetch(self, keys: list[bytes]) -> None:
        """Read many primary rows in one go (a multi-row INSERT's existence check)."""
        self._prefetched = self.txn.get_many(keys)

    def _raw(self, key: bytes) -> bytes | None:
        # A prefetched value is current unless this transaction wrote the key since.
        if key in self._prefetched and not self.txn.wrote(key):
            return self._prefetched[key]
        return self.txn.get(key)

    def get(self, key: bytes) -> Row | None:
        raw = self._raw(key)
        return None if raw is None else decode_row(raw)

    def conflicting_row(self, index: Index, row: Row) -> Row | None:
        """The stored row that ``row`` would collide with on a unique index, if any."""
        if index.id == self.primary.id:
            return self.get(self.pk_key(row))
        if any(row.get(c) is None for c in index.column_ids):
            return None  # NULLs never collide
        raw = self.txn.get(entry_key(self.table, index, row))
        if raw is None:
            return None
        return self.get(self.pk_key(decode_row(raw)))

    def check_unique(self, row: Row, *own_keys: bytes) -> None:
        """Refuse a unique-index collision with any row but this one (``own_keys``: its
        primary key, before and after an update)."""
        for index in self.unique:
            other = self.conflicting_row(index, row)
            if other is not None and self.pk_key(other) not in own_keys:
                raise unique_violation(self.table, index, row)

    def insert(self, row: Row, pk_key: bytes | None = None) -> None:
        pk_key = pk_key or self.pk_key(row)
        if self._raw(pk_key) is not None:
            raise unique_violation(self.table, self.primary, row)
        if self.unique:
            self.check_unique(row, pk_key)
        self.txn.put(pk_key, encode_row(row))
        for index in self.secondary:
            self.txn.put(*self.encoders[index.id](row))

    def update(self, old: Row, new: Row) -> None:
        new_pk, old_pk = self.pk_key(new), self.pk_key(old)
        if old_pk != new_pk and self._raw(new_pk) is not None:
            raise unique_violation(self.table, self.primary, new)
        if self.unique:
            self.check_unique(new, old_pk, new_pk)
        maintained = {i.id for i in self.maintained}
        for index in self.deletable:
            old_key = entry_key(self.table, index, old)
            if index.id in maintained:
                new_key, value = self.encoders[index.id](new)
                if new_key != old_key:
                    self.txn.delete(old_key)
                self.txn.put(new_key, value)
            else:
                self.txn.delete(old_key)

    def delete(self, row: Row) -> None:
        for index in self.deletable:
            self.txn.delete(entry_key(self.table, index, row))


def check_not_null(table: TableDescriptor, row: Row) -> None:
    for c in table.columns:
        if not c.nullable and row.get(c.id) is None:
            raise SQLError(f'null value in column "{c.name}" violates not-null constraint '
                           "(SQLSTATE 23502)", code="23502")


def _returning(items: tuple[ast.SelectItem, ...] | None, table: TableDescriptor, ctx: Context,
               rows: list[Row], tag: str, count: int) -> Result:
    if items is None:
        return Result.command(tag, count)
    expanded = expand_items(items, table, table.name)
    comp = Compiler(table_scope(table, table.name), ctx)
    fns = [comp.compile(i.expr) for i in expanded]
    to_list = row_values(table)
    out = [tuple(f(to_list(r)) for f in fns) for r in rows]
    return Result(columns=[column_name(i) for i in expanded], rows=out, tag=tag,
                  rows_affected=count, types=[comp.static_type(i.expr) for i in expanded])


def _scope_row(table: TableDescriptor, row: Row) -> list[Any]:
    return [row.get(c.id) for c in table.columns]


def run_insert(txn: Txn, stmt: ast.Insert, ctx: Context, table: TableDescriptor,
               defaults: dict[int, DefaultFn],
               select: Callable[[ast.Select], Result]) -> Result:
    upsert = isinstance(stmt, ast.Upsert)
    if stmt.columns:
        targets = []
        for name in stmt.columns:
            col = table.column(name)
            if col is None:
                raise SQLError(f'column "{name}" does not exist', code="42703")
            if col in targets:
                raise SQLError(f'multiple assignments to the same column "{name}"',
                               code="42601")
            targets.append(col)
    else:
        targets = table.visible_columns()
    source_rows: Sequence[Sequence[Any]]
    const = Compiler(Scope(), ctx)
    if stmt.source is None:
        source_rows = [[]]  # DEFAULT VALUES: one row, every column from its default
        targets = []
    elif isinstance(stmt.source, ast.Values):
        params = ctx.params

        def cell(e: ast.Expr) -> Any:
            if type(e) is ast.Placeholder and e.index <= len(params):
                return params[e.index - 1]  # the common case of a bulk insert: no compiling
            if isinstance(e, ast.DefaultExpr):
                return _DEFAULT
            return literal_value(e, ctx) if is_constant(e) else const.compile(e)([])

        source_rows = [[cell(e) for e in vals] for vals in stmt.source.rows]
    else:
        if stmt.source.as_of is not None:
            raise SQLError("AS OF SYSTEM TIME is not allowed in INSERT ... SELECT",
                           code="0A000")
        source_rows = select(stmt.source).rows
    writer = TableWriter(txn, table)
    conflict_index = _conflict_index(table, stmt.on_conflict) if stmt.on_conflict else None
    built: list[tuple[Row, dict[int, Any], bytes]] = []
    for values in source_rows:
        if len(values) != len(targets):
            what = ("more expressions than target columns" if len(values) > len(targets)
                    else "more target columns than expressions")
            raise SQLError(f"INSERT has {what}, {len(values)} expressions for "
                           f"{len(targets)} targets", code="42601")
        given = {c.id: v for c, v in zip(targets, values, strict=True) if v is not _DEFAULT}
        row: Row = {}
        for c in table.columns:
            if c.id in given:
                v = coerce(given[c.id], c.type, c.name)
            elif c.id in defaults:
                v = coerce(defaults[c.id](), c.type, c.name)
            else:
                v = None
            if v is not None:
                row[c.id] = v
        check_not_null(table, row)
        built.append((row, given, writer.pk_key(row)))
    writer.prefetch([key for _, _, key in built])
    written: list[Row] = []
    touched: set[bytes] = set()  # rows an UPSERT / DO UPDATE changed: once each

    def touch(key: bytes) -> None:
        if key in touched:
            raise SQLError(f"{'UPSERT' if upsert else 'INSERT ... ON CONFLICT DO UPDATE'} "
                           "command cannot affect row a second time", code="21000",
                           hint="make sure no two proposed rows have the same conflict key")
        touched.add(key)

    for row, given, pk_key in built:
        if upsert:
            existing = writer.get(pk_key)
            touch(pk_key)
            if existing is None:
                writer.insert(row, pk_key)
                written.append(row)
            else:
                merged = dict(existing)
                for cid in given:
                    merged[cid] = row.get(cid)
                    if merged[cid] is None:
                        del merged[cid]
                writer.update(existing, merged)
                written.append(merged)
            continue
        if stmt.on_conflict is not None:
            indexes = [conflict_index] if conflict_index is not None else \
                [writer.primary, *writer.unique]
            existing = None
            for index in indexes:
                existing = writer.conflicting_row(index, row)
                if existing is not None:
                    break
            if existing is not None:
                if stmt.on_conflict.do_nothing:
                    continue
                touch(writer.pk_key(existing))
                updated = _do_update(table, stmt.on_conflict, ctx, existing, row)
                if updated is not None:
                    check_not_null(table, updated)
                    writer.update(existing, updated)
                    touched.add(writer.pk_key(updated))  # it may have a new primary key
                    written.append(updated)
                continue
        writer.insert(row, pk_key)
        if stmt.on_conflict is not None:
            touched.add(pk_key)  # a later proposed row updating it would affect it twice
        written.append(row)
    return _returning(stmt.returning, table, ctx, written, "INSERT", len(written))


def _conflict_index(table: TableDescriptor, oc: ast.OnConflict) -> Index | None:
    if not oc.columns:
        if not oc.do_nothing:
            raise SQLError("ON CONFLICT DO UPDATE requires a conflict target", code="42601",
                           hint="name the columns: ON CONFLICT (id) DO UPDATE SET ...")
        return None
    ids = []
    for name in oc.columns:
        col = table.column(name)
        if col is None:
            raise SQLError(f'column "{name}" does not exist', code="42703")
        ids.append(col.id)
    for index in [table.primary_index, *(i for i in maintained_indexes(table) if i.unique)]:
        if set(index.column_ids) == set(ids):
            return index
    raise SQLError("there is no unique or exclusion constraint matching the ON CONFLICT "
                   "specification", code="42P10")


def _do_update(table: TableDescriptor, oc: ast.OnConflict, ctx: Context, existing: Row,
               proposed: Row) -> Row | None:
    scope = table_scope(table, table.name)
    excluded = table_scope(table, "excluded")
    comp = Compiler(Scope(scope.columns + excluded.columns), ctx)
    combined = _scope_row(table, existing) + _scope_row(table, proposed)
    if oc.where is not None and comp.condition(oc.where)(combined) is not True:
        return None
    new = dict(existing)
    for a in oc.assignments:
        col = table.column(a.column)
        if col is None:
            raise SQLError(f'column "{a.column}" does not exist', code="42703")
        v = coerce(comp.compile(a.value)(combined), col.type, col.name)
        if v is None:
            new.pop(col.id, None)
        else:
            new[col.id] = v
    return new


def _matching_rows(txn: Txn, table: TableDescriptor, where: ast.Expr | None,
                   ctx: Context) -> list[Row]:
    """Every row WHERE selects, read before any is written (no Halloween problem)."""
    comp = Compiler(table_scope(table, table.name), ctx)
    where_fn = comp.condition(where) if where is not None else None
    needed = {c.id for c in table.columns}
    path = choose_path(table, where, ctx, needed)
    to_list = row_values(table)
    rows = []
    for row in read_rows(txn, table, path):
        if where_fn is None or where_fn(to_list(row)) is True:
            rows.append(row)
    return rows


def run_update(txn: Txn, stmt: ast.Update, ctx: Context, table: TableDescriptor) -> Result:
    comp = Compiler(table_scope(table, table.name), ctx)
    sets = []
    for a in stmt.assignments:
        col = table.column(a.column)
        if col is None:
            raise SQLError(f'column "{a.column}" does not exist', code="42703")
        if isinstance(a.value, ast.DefaultExpr):
            raise SQLError("UPDATE ... SET col = DEFAULT is not supported", code="0A000")
        sets.append((col, comp.compile(a.value)))
    rows = _matching_rows(txn, table, stmt.where, ctx)
    writer = TableWriter(txn, table)
    to_list = row_values(table)
    written = []
    for old in rows:
        values = to_list(old)
        new = dict(old)
        for col, fn in sets:
            v = coerce(fn(values), col.type, col.name)
            if v is None:
                new.pop(col.id, None)
            else:
                new[col.id] = v
        check_not_null(table, new)
        writer.update(old, new)
        written.append(new)
    return _returning(stmt.returning, table, ctx, written, "UPDATE", len(written))


def run_delete(txn: Txn, stmt: ast.Delete, ctx: Context, table: TableDescriptor) -> Result:
    rows = _matching_rows(txn, table, stmt.where, ctx)
    writer = TableWriter(txn, table)
    for row in rows:
        writer.delete(row)
    return _returning(stmt.returning, table, ctx, rows, "DELETE", len(rows))
