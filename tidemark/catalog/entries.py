"""Index entries of a row: the key/value pairs that every index of a table holds for it.

A row is a ``dict`` from column ID to value. Every entry's value is the row codec's map of the
columns the index covers (primary: all; secondary: its key columns, the primary key columns and
its STORING columns), so a scan decodes rows from values alone, never from keys.

* primary: ``/Table/<t>/1/<pk values>``
* non-unique secondary: ``/Table/<t>/<i>/<index values>/<pk values not in the index>``
* unique secondary: ``/Table/<t>/<i>/<index values>``, plus the primary key values when an
  index value is NULL (NULLs never collide).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Mapping

import msgspec

from tidemark.catalog import fingerprint
from tidemark.catalog.descriptors import Index, IndexState, TableDescriptor
from tidemark.catalog.rowcodec import decoder as decode
from tidemark.catalog.rowcodec import encode_columns
from tidemark.kv.keys import datum_bytes, encode_key, index_prefix, index_span
from tidemark.storage.engine import Engine, Span, scan_batches

Row = Mapping[int, object]
_first = operator.itemgetter(0)


def covered_columns(table: TableDescriptor, index: Index) -> list[int]:
    if index.id == table.primary_index.id:
        return [c.id for c in table.columns]
    ids = list(index.column_ids)
    for cid in (*table.primary_index.column_ids, *index.storing_ids):
        if cid not in ids:
            ids.append(cid)
    return ids


def entry_key(table: TableDescriptor, index: Index, row: Row) -> bytes:
    prefix = index_prefix(table.id, index.id)
    values = [row.get(c) for c in index.column_ids]
    directions = list(index.descending)
    primary = table.primary_index
    if index.id != primary.id and (not index.unique or any(v is None for v in values)):
        for cid, desc in zip(primary.column_ids, primary.descending, strict=True):
            if cid not in index.column_ids:
                values.append(row.get(cid))
                directions.append(desc)
    return encode_key(prefix, values, directions)


def entry(table: TableDescriptor, index: Index, row: Row) -> tuple[bytes, bytes]:
    return entry_encoder(table, index)(row)


EntryEncoder = Callable[[Row], tuple[bytes, bytes]]


def entry_encoder(table: TableDescriptor, index: Index) -> EntryEncoder:
    """A function computing one index's entry of a row, with everything that depends only on
    the descriptor worked out once (bulk paths call it per row)."""
    return _entry_encoder(table, index.id)


@functools.lru_cache(maxsize=1024)
def _entry_encoder(table: TableDescriptor, index_id: int) -> EntryEncoder:
    index = table.primary_index if index_id == table.primary_index.id else \
        next(i for i in table.indexes if i.id == index_id)
    prefix = index_prefix(table.id, index.id)
    primary = table.primary_index
    key_cols = list(index.column_ids)
    dirs = list(index.descending)
    suffix = [(c, d) for c, d in zip(primary.column_ids, primary.descending, strict=True)
              if c not in index.column_ids]
    value_cols = sorted(covered_columns(table, index))
    if index.id == primary.id or not suffix:
        def make(row: Row) -> tuple[bytes, bytes]:
            return (encode_key(prefix, [row.get(c) for c in key_cols], dirs),
                    encode_columns(row, value_cols))
        return make
    all_cols = key_cols + [c for c, _ in suffix]
    all_dirs = dirs + [d for _, d in suffix]
    unique = index.unique

    def make_secondary(row: Row) -> tuple[bytes, bytes]:
        values = [row.get(c) for c in key_cols]
        if unique and None not in values:
            key = encode_key(prefix, values, dirs)
        else:  # non-unique, or a NULL in a unique key: the primary key keeps entries apart
            key = encode_key(prefix, [row.get(c) for c in all_cols], all_dirs)
        return key, encode_columns(row, value_cols)
    return make_secondary


def maintained_indexes(table: TableDescriptor) -> list[Index]:
    """Indexes whose entries writes add: the primary, WRITE_ONLY and PUBLIC ones."""
    return [table.primary_index, *(i for i in table.indexes
                                   if i.state in (IndexState.WRITE_ONLY, IndexState.PUBLIC))]


def deletable_indexes(table: TableDescriptor) -> list[Index]:
    """Indexes whose entries writes remove: also DELETE_ONLY ones."""
    return [table.primary_index, *(i for i in table.indexes if i.state is not IndexState.DROP)]


def entry_encoder_from_primary(table: TableDescriptor, index: Index
                               ) -> Callable[[bytes, Row], tuple[bytes, bytes]]:
    """Like ``entry_encoder``, given the row's primary key too (a backfill reads it anyway):
    when the index holds no primary key column, its key ends with exactly the bytes that
    follow the primary prefix, so they are copied instead of encoded again."""
    primary = table.primary_index
    if index.id == primary.id or set(primary.column_ids) & set(index.column_ids):
        make = entry_encoder(table, index)
        return lambda pk_key, row: make(row)
    prefix = index_prefix(table.id, index.id)
    skip = len(index_prefix(table.id, primary.id))
    key_cols, dirs, unique = list(index.column_ids), list(index.descending), index.unique
    value_cols = sorted(covered_columns(table, index))

    if len(key_cols) == 1:  # the common single-column index: no list, no generic loop
        (col,), (desc,) = key_cols, dirs

        def make_one(pk_key: bytes, row: Row) -> tuple[bytes, bytes]:
            v = row.get(col)
            key = prefix + datum_bytes(v, desc)
            if not unique or v is None:
                key += pk_key[skip:]
            return key, encode_columns(row, value_cols)
        return make_one

    def make_from_primary(pk_key: bytes, row: Row) -> tuple[bytes, bytes]:
        values = [row.get(c) for c in key_cols]
        key = encode_key(prefix, values, dirs)
        if not unique or None in values:
            key += pk_key[skip:]
        return key, encode_columns(row, value_cols)
    return make_from_primary


def entries_from_primary(table: TableDescriptor, index: Index
                         ) -> Callable[[list[tuple[bytes, bytes]]], list[tuple[bytes, bytes]]]:
    """The entries of ``index`` for a batch of primary index ``(key, value)`` pairs, sorted by
    key: the inner loop of a backfill, kept free of per-row calls it does not need."""
    make = entry_encoder_from_primary(table, index)

    def batch(primary: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        try:
            out = [make(k, decode(v)) for k, v in primary]
        except msgspec.DecodeError as exc:
            raise ValueError(f"corrupt row value in table {table.name}: {exc}") from exc
        out.sort(key=_first)  # keys are unique: compare them alone
        return out
    return batch



def index_matches_primary(engine: Engine, table: TableDescriptor, index: Index, ts: int
                          ) -> bool:
    """Whether ``index`` holds exactly the entries its table's primary index derives at
    ``ts``: same number, same fingerprint. Both sides are streamed (the primary in batches,
    the index through the engine's fingerprint), so memory does not grow with the table."""
    derive = entries_from_primary(table, index)
    plen = len(index_prefix(table.id, index.id))
    expected = count = 0
    for batch in scan_batches(engine, *index_span(table.id, table.primary_index.id), ts):
        entries = derive(batch)
        expected = (expected + fingerprint.fingerprint(entries, plen)) & fingerprint.MASK
        count += len(entries)
    span = Span(*index_span(table.id, index.id))
    return engine.count_live(span.start, span.end, ts) == count and \
        fingerprint.span_fingerprint(engine, span, ts, plen) == expected
