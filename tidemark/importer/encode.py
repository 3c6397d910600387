"""CSV records → validated rows → the entries of every index, as INSERT would write them.

A record's fields are cast into their columns with the assignment cast of INSERT
(``catalog.types.coerce``; INT, FLOAT and plain STRING columns take a fast path that gives the
same values and falls back to ``coerce`` for its error), columns missing from the files get
their DEFAULT, and NOT NULL is checked. Entries come from ``catalog.entries``
(``entry_encoder``: ``entry`` with the per-index work done once), so an imported row is byte
for byte what INSERT would have stored (same fingerprints).

Replaying a chunk after a crash must produce the same rows, so the volatile defaults are made
reproducible: ``now()`` is the import's timestamp S, ``unique_rowid()`` of the n-th imported
row is ``rowid_base + n * stride + k`` (dense above a ``unique_int`` taken by the statement,
far below any later ``unique_rowid()``), and a ``gen_random_uuid()`` default is a version-4
UUID hashed from the job's seed, the row number and the column.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from tidemark.catalog.descriptors import Column, Index, TableDescriptor
from tidemark.catalog.entries import entry_encoder, entry_key
from tidemark.catalog.types import Family, coerce, format_value
from tidemark.errors import SQLError
from tidemark.importer.csvread import Chunk, RowError
from tidemark.importer.plan import ImportDetails

__all__ = ["RowEncoder", "compile_defaults", "duplicate_reason"]

Row = dict[int, Any]
_UUID_FUNCS = ("gen_random_uuid", "uuid_generate_v4")


def _converter(col: Column) -> Callable[[str], Any]:
    """``coerce(text, col.type)``, faster for the common types (same results and errors)."""
    typ, name = col.type, col.name

    def slow(text: str) -> Any:
        return coerce(text, typ, name)

    if typ.family is Family.INT:
        bits = typ.width or 64
        lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)

        def to_int(text: str) -> Any:
            try:
                v = int(text)
            except ValueError:
                return slow(text)
            return v if lo <= v < hi else slow(text)
        return to_int
    if typ.family is Family.FLOAT:
        def to_float(text: str) -> Any:
            try:
                return float(text)
            except ValueError:
                return slow(text)
        return to_float
    if typ.family is Family.STRING and not typ.width:
        return str
    return slow


def _column_converter(col: Column) -> Callable[[Sequence[str]], Sequence[Any]] | None:
    """A whole column of texts at once, for the types whose row converter is a builtin;
    raises ValueError where any value would not convert (the caller redoes it row by row)."""
    typ = col.type
    if typ.family is Family.INT:
        bits = typ.width or 64
        lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)

        def ints(texts: Sequence[str]) -> Sequence[Any]:
            values = list(map(int, texts))
            if values and (min(values) < lo or max(values) >= hi):
                raise ValueError("out of range")
            return values
        return ints
    if typ.family is Family.FLOAT:
        return lambda texts: list(map(float, texts))
    if typ.family is Family.STRING and not typ.width:
        return lambda texts: texts
    return None


def _uses(expr: Any, names: tuple[str, ...]) -> bool:
    from tidemark.sql import ast
    from tidemark.sql.expr import children
    if isinstance(expr, ast.FuncCall) and expr.name in names:
        return True
    return any(_uses(c, names) for c in children(expr))


class _Volatile:
    """Reproducible ``unique_rowid()`` values for the row being built."""

    def __init__(self, base: int, stride: int):
        self.base, self.stride, self.next = base, stride, base

    def start_row(self, ordinal: int) -> None:
        self.next = self.base + ordinal * self.stride

    def unique_rowid(self) -> int:
        value, self.next = self.next, self.next + 1
        return value


def compile_defaults(table: TableDescriptor, target_ids: set[int], details: ImportDetails
                     ) -> tuple[list[tuple[Column, Callable[[int], Any]]], _Volatile]:
    """The DEFAULT of every column the files do not give, as ``fn(row ordinal)``.

    The expressions are compiled by the SQL layer's expression compiler (imported here, late,
    as the one place the importer needs the layer above it). Raises SQLError for a default
    IMPORT cannot reproduce on replay.
    """
    from tidemark.sql import ast
    from tidemark.sql.expr import Compiler, Context, Scope
    from tidemark.sql.parser import parse_one

    pending = [c for c in table.columns if c.id not in target_ids and c.default is not None]
    stride = max(1, sum(c.default.count("unique_rowid") for c in pending if c.default))
    volatile = _Volatile(details.rowid_base, stride)
    ctx = Context(params=(), read_ts=details.ts, now=details.ts,
                  unique_rowid=volatile.unique_rowid)
    comp = Compiler(Scope(), ctx)
    out: list[tuple[Column, Callable[[int], Any]]] = []
    for col in pending:
        assert col.default is not None
        stmt = parse_one(f"SELECT {col.default}")
        assert isinstance(stmt, ast.Select)
        expr = stmt.items[0].expr
        if isinstance(expr, ast.FuncCall) and expr.name in _UUID_FUNCS and not expr.args:
            out.append((col, _uuid_default(details.seed, col.id)))
            continue
        if _uses(expr, _UUID_FUNCS):
            raise SQLError(
                f'IMPORT cannot compute the DEFAULT {col.default} of column "{col.name}" '
                "reproducibly", code="0A000",
                hint=f"give {col.name} in the files, or make the default just "
                     "gen_random_uuid()")
        fn = comp.compile(expr)
        out.append((col, lambda _ordinal, fn=fn: fn([])))
    return out, volatile


def _uuid_default(seed: str, column_id: int) -> Callable[[int], Any]:
    prefix = f"{seed}/{column_id}/".encode()

    def make(ordinal: int) -> uuid.UUID:
        digest = hashlib.blake2b(prefix + str(ordinal).encode(), digest_size=16).digest()
        return uuid.UUID(bytes=digest, version=4)
    return make


def duplicate_reason(table: TableDescriptor, index: Index, row: Row) -> str:
    cols = [table.column_by_id(c) for c in index.column_ids]
    values = ", ".join(format_value(row.get(c.id)) for c in cols)
    return (f'duplicate key value violates unique constraint "{index.name}": '
            f"Key ({', '.join(c.name for c in cols)})=({values})")


class RowEncoder:
    """Turns the records of chunks into rows and index entries for one table."""

    def __init__(self, table: TableDescriptor, details: ImportDetails):
        self.table = table
        self.nullif = details.csv.nullif
        cols = {c.id: c for c in table.columns}
        self.targets = [(cid, _converter(cols[cid])) for cid in details.column_ids]
        self._bulk = [_column_converter(cols[cid]) for cid in details.column_ids]
        self._required_ids = {c.id for c in table.columns if not c.nullable}
        self.defaults, self._volatile = compile_defaults(table, set(details.column_ids),
                                                         details)
        self.required = [c for c in table.columns if not c.nullable]
        self.primary = table.primary_index
        self.indexes = [table.primary_index, *table.indexes]
        self._encoders = [entry_encoder(table, i) for i in self.indexes]
        self.secondary = len(table.indexes)

    def rows(self, chunk: Chunk, first_ordinal: int, uri: str) -> list[Row]:
        """The rows of a chunk; ``first_ordinal``: the import-wide number of its first row.

        Columns are converted a whole column at a time (``map`` of ``int``/``float`` runs in
        C); a chunk with anything unusual in it — a wrong field count, a bad value, a NULL in
        a NOT NULL column — is redone row by row, which raises for its first bad row.
        """
        rows = self._columnar(chunk, first_ordinal)
        return rows if rows is not None else self._row_by_row(chunk, first_ordinal, uri)

    def _columnar(self, chunk: Chunk, first_ordinal: int) -> list[Row] | None:
        records, nullif = chunk.records, self.nullif
        if len(set(map(len, records))) != 1 or len(records[0]) != len(self.targets):
            return None
        columns: list[Sequence[Any]] = []
        try:
            for (cid, conv), bulk, texts in zip(self.targets, self._bulk,
                                                zip(*records, strict=True),
                                                strict=True):
                if nullif is not None and nullif in texts:
                    values: Sequence[Any] = [None if t == nullif else conv(t) for t in texts]
                    if cid in self._required_ids and None in values:
                        return None
                elif bulk is not None:
                    values = bulk(texts)
                else:
                    values = [conv(t) for t in texts]
                columns.append(values)
            ids = [cid for cid, _ in self.targets]
            rows = [dict(zip(ids, vals, strict=True)) for vals in zip(*columns, strict=True)]
            if self.defaults:
                for i, row in enumerate(rows):
                    self._apply_defaults(row, first_ordinal + i)
        except (SQLError, ValueError, OverflowError):
            return None
        return rows

    def _apply_defaults(self, row: Row, ordinal: int) -> None:
        self._volatile.start_row(ordinal)
        for col, fn in self.defaults:
            v = coerce(fn(ordinal), col.type, col.name)
            if v is not None:
                row[col.id] = v
            elif not col.nullable:
                raise SQLError(f'null value in column "{col.name}" violates not-null '
                               "constraint", code="23502")

    def _row_by_row(self, chunk: Chunk, first_ordinal: int, uri: str) -> list[Row]:
        targets, nullif = self.targets, self.nullif
        width = len(targets)
        out: list[Row] = []
        for i, record in enumerate(chunk.records):
            if len(record) != width:
                raise RowError(uri, chunk.lines[i],
                               f"expected {width} fields, got {len(record)}", code="22P04")
            try:
                row = {cid: conv(text) for (cid, conv), text in zip(targets, record, strict=True)
                       if text != nullif}
                if self.defaults:
                    self._apply_defaults(row, first_ordinal + i)
                for col in self.required:
                    if row.get(col.id) is None:
                        raise SQLError(f'null value in column "{col.name}" violates not-null '
                                       "constraint", code="23502")
            except SQLError as exc:
                raise RowError(uri, chunk.lines[i], exc.message, code=exc.code,
                               hint=exc.hint) from None
            out.append(row)
        return out

    def entries(self, rows: list[Row], uri: str, lines: list[int]
                ) -> list[tuple[bytes, bytes]]:
        """Every index entry of the rows, sorted by key."""
        out: list[tuple[bytes, bytes]] = []
        try:
            for encode in self._encoders:
                out.extend(map(encode, rows))
        except ValueError as exc:  # a value the key codec refuses
            at = next(i for i, r in enumerate(rows) if _refused(self.table, self.indexes, r))
            raise RowError(uri, lines[at], str(exc), code="22000") from None
        out.sort()
        return out

    def primary_keys(self, rows: list[Row]) -> list[bytes]:
        return [entry_key(self.table, self.primary, row) for row in rows]


def _refused(table: TableDescriptor, indexes: list[Index], row: Row) -> bool:
    try:
        for index in indexes:
            entry_key(table, index, row)
    except ValueError:
        return True
    return False
