"""The catalog in the keyspace: namespace, descriptor table and ID allocation, read in a txn.

Keys (system table IDs from ``kv.system``):

* ``/Table/30/1/<parent id>/<name>`` -> the ID of a database (parent 0) or table (parent: its
  database);
* ``/Table/3/1/<id>`` -> the msgpack descriptor;
* ``/Table/7/1/0`` -> the next free descriptor ID (user objects start at 100);
* ``/Table/7/1/1`` -> the schema generation, bumped by every descriptor or name change.

Descriptors and names must only be written through ``write_descriptor`` and ``set_name``.
"""

from __future__ import annotations

import msgspec

from tidemark.catalog.descriptors import (
    DatabaseDescriptor,
    Descriptor,
    TableDescriptor,
    decode_descriptor,
    encode_descriptor,
)
from tidemark.kv.db import DB
from tidemark.kv.keys import decode_datums, encode_key, index_prefix, prefix_end
from tidemark.kv.system import (
    DESC_ID_GENERATOR_ID,
    DESCRIPTOR_TABLE_ID,
    FIRST_USER_ID,
    NAMESPACE_TABLE_ID,
    PRIMARY_INDEX_ID,
)
from tidemark.kv.txn import Txn

DEFAULT_DATABASE = "defaultdb"
_DESCRIPTORS = index_prefix(DESCRIPTOR_TABLE_ID, PRIMARY_INDEX_ID)
_NAMESPACE = index_prefix(NAMESPACE_TABLE_ID, PRIMARY_INDEX_ID)
_ID_GENERATOR = encode_key(index_prefix(DESC_ID_GENERATOR_ID, PRIMARY_INDEX_ID), [0])
# Bumped by every change to a descriptor or a name, in the same transaction: a cache of
# resolved names is valid exactly while the generation is unchanged, and a statement that reads
# it conflicts with any schema change committed after it began.
_SCHEMA_GENERATION = encode_key(index_prefix(DESC_ID_GENERATOR_ID, PRIMARY_INDEX_ID), [1])


def descriptor_key(desc_id: int) -> bytes:
    return encode_key(_DESCRIPTORS, [desc_id])


def namespace_key(parent_id: int, name: str) -> bytes:
    return encode_key(_NAMESPACE, [parent_id, name])


def schema_generation(txn: Txn) -> int:
    raw = txn.get(_SCHEMA_GENERATION)
    return 0 if raw is None else msgspec.msgpack.decode(raw)


def schema_written(txn: Txn) -> bool:
    """Did this (uncommitted) transaction change a descriptor or a name?"""
    return txn.wrote(_SCHEMA_GENERATION)


def _bump_generation(txn: Txn) -> None:
    txn.put(_SCHEMA_GENERATION, msgspec.msgpack.encode(schema_generation(txn) + 1))


def get_descriptor(txn: Txn, desc_id: int) -> Descriptor | None:
    raw = txn.get(descriptor_key(desc_id))
    return None if raw is None else decode_descriptor(raw)


def write_descriptor(txn: Txn, desc: Descriptor, *, new: bool = False) -> Descriptor:
    """Store a descriptor; a changed one gets the next version. Returns what was stored."""
    if not new:
        desc = msgspec.structs.replace(desc, version=desc.version + 1)
    txn.put(descriptor_key(desc.id), encode_descriptor(desc))
    _bump_generation(txn)
    return desc


def lookup_id(txn: Txn, parent_id: int, name: str) -> int | None:
    raw = txn.get(namespace_key(parent_id, name))
    return None if raw is None else msgspec.msgpack.decode(raw)


def set_name(txn: Txn, parent_id: int, name: str, desc_id: int | None) -> None:
    key = namespace_key(parent_id, name)
    _bump_generation(txn)
    if desc_id is None:
        txn.delete(key)
    else:
        txn.put(key, msgspec.msgpack.encode(desc_id))


def list_names(txn: Txn, parent_id: int) -> list[tuple[str, int]]:
    start = encode_key(_NAMESPACE, [parent_id])
    rows = txn.scan(start, prefix_end(start))
    return [(decode_datums(k, len(start))[0], msgspec.msgpack.decode(v)) for k, v in rows]


def database_by_name(txn: Txn, name: str) -> DatabaseDescriptor | None:
    desc_id = lookup_id(txn, 0, name)
    if desc_id is None:
        return None
    desc = get_descriptor(txn, desc_id)
    return desc if isinstance(desc, DatabaseDescriptor) else None


def table_by_name(txn: Txn, database_id: int, name: str) -> TableDescriptor | None:
    desc_id = lookup_id(txn, database_id, name)
    if desc_id is None:
        return None
    desc = get_descriptor(txn, desc_id)
    return desc if isinstance(desc, TableDescriptor) else None


def allocate_id(txn: Txn) -> int:
    raw = txn.get(_ID_GENERATOR)
    next_id = FIRST_USER_ID if raw is None else msgspec.msgpack.decode(raw)
    txn.put(_ID_GENERATOR, msgspec.msgpack.encode(next_id + 1))
    return next_id


def create_database(txn: Txn, name: str) -> DatabaseDescriptor:
    desc = DatabaseDescriptor(id=allocate_id(txn), name=name)
    write_descriptor(txn, desc, new=True)
    set_name(txn, 0, name, desc.id)
    return desc


def bootstrap(db: DB) -> None:
    """Create ``defaultdb`` in a new store (idempotent, safe from several processes)."""

    def init(txn: Txn) -> None:
        if txn.get(_ID_GENERATOR) is None:
            create_database(txn, DEFAULT_DATABASE)

    db.run(init)
