"""Descriptors: databases, tables, columns and indexes, with their states and versions.

Descriptors are msgspec structs stored, msgpack-encoded, in the system descriptor table of the
MVCC keyspace, so they are read inside transactions (a schema change racing a write makes the
write retry), time-travel with ``AS OF SYSTEM TIME``, and are backed up with the data.
Every change increments the descriptor's ``version``.
"""

from __future__ import annotations

import enum

import msgspec

from tidemark.catalog.types import ColumnType


class DescState(enum.Enum):
    PUBLIC = "PUBLIC"
    OFFLINE = "OFFLINE"  # being imported into or restored: invisible to queries
    DROP = "DROP"  # dropped; its data is being removed


class IndexState(enum.Enum):
    DELETE_ONLY = "DELETE_ONLY"  # writes delete entries but add none; not readable
    WRITE_ONLY = "WRITE_ONLY"  # writes maintain entries; being backfilled; not readable
    PUBLIC = "PUBLIC"  # complete and readable
    DROP = "DROP"  # being removed; writes ignore it


class Column(msgspec.Struct, frozen=True):
    id: int
    name: str
    type: ColumnType
    nullable: bool = True
    default: str | None = None  # SQL text of the DEFAULT expression
    hidden: bool = False  # the implicit rowid: not in SELECT *


class Index(msgspec.Struct, frozen=True):
    id: int
    name: str
    column_ids: tuple[int, ...]
    descending: tuple[bool, ...]
    unique: bool = False
    storing_ids: tuple[int, ...] = ()
    state: IndexState = IndexState.PUBLIC


class TableDescriptor(msgspec.Struct, frozen=True, tag="table"):
    id: int
    name: str
    parent_id: int  # the database
    columns: tuple[Column, ...]
    primary_index: Index
    indexes: tuple[Index, ...] = ()  # secondary indexes, in every state
    next_column_id: int = 1
    next_index_id: int = 2
    state: DescState = DescState.PUBLIC
    offline_reason: str = ""
    # While OFFLINE for an IMPORT: the import's one MVCC timestamp S. The table's pre-import
    # contents are what reads at S - 1 see; a backup exports the table as of S - 1.
    import_ts: int = 0
    version: int = 1

    def column(self, name: str) -> Column | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None

    def column_by_id(self, column_id: int) -> Column:
        for c in self.columns:
            if c.id == column_id:
                return c
        raise KeyError(column_id)

    def index(self, name: str) -> Index | None:
        if self.primary_index.name == name:
            return self.primary_index
        for i in self.indexes:
            if i.name == name:
                return i
        return None

    def public_indexes(self) -> list[Index]:
        return [self.primary_index, *(i for i in self.indexes if i.state is IndexState.PUBLIC)]

    def visible_columns(self) -> list[Column]:
        return [c for c in self.columns if not c.hidden]


class DatabaseDescriptor(msgspec.Struct, frozen=True, tag="database"):
    id: int
    name: str
    state: DescState = DescState.PUBLIC
    version: int = 1


Descriptor = TableDescriptor | DatabaseDescriptor

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Descriptor)


def encode_descriptor(desc: Descriptor) -> bytes:
    return _encoder.encode(desc)


def decode_descriptor(data: bytes) -> Descriptor:
    return _decoder.decode(data)
