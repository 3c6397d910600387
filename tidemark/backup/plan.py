"""What a backup layer covers: targets, descriptors, spans, and how each span is exported.

DESIGN.md "Backup". Given the targets (tables, databases, or the whole cluster) read at the
layer's end time, and the previous layer's manifest for an incremental:

* every descriptor of the targets (and their databases) is recorded with its state;
* each PUBLIC index of a PUBLIC table is a span, exported as of the end time;
* a table OFFLINE for an IMPORT contributes its PUBLIC index spans *capped* just below the
  import's timestamp S, so the layer holds the table as it was before the import;
* a table OFFLINE for a RESTORE is recorded with no spans (it has no data yet);
* in an incremental, a span is exported from time zero ("introduced") unless the previous
  layer exported it the same way (same table state, same cap): a new index or table, an index
  that was not PUBLIC, a table that was OFFLINE. Otherwise only what *arrived* in
  ``(previous end, end]`` is exported, whatever its MVCC timestamp.

The unsafe mode (``testing.backup.unsafe_mvcc_window_incrementals``) reproduces the classic
broken behaviour for tests of the detection tools: non-PUBLIC indexes and OFFLINE tables are
exported as they are, incrementals select by MVCC timestamp, and spans are introduced only
when new to the chain, never re-introduced.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from tidemark.backup.manifest import DescriptorChange, DescriptorEntry, IntroducedSpan, Manifest
from tidemark.backup.manifest import Span as MSpan
from tidemark.catalog import catalog
from tidemark.catalog.descriptors import (
    DatabaseDescriptor,
    DescState,
    IndexState,
    TableDescriptor,
    decode_descriptor,
    encode_descriptor,
)
from tidemark.cluster.settings import Kind, register
from tidemark.errors import SQLError
from tidemark.importer.plan import OFFLINE_REASON
from tidemark.kv.keys import (
    decode_datums,
    decode_index_prefix,
    index_prefix,
    index_span,
    prefix_end,
)
from tidemark.kv.system import (
    DESCRIPTOR_TABLE_ID,
    FIRST_USER_ID,
    PRIMARY_INDEX_ID,
    SETTINGS_TABLE_ID,
)
from tidemark.kv.txn import Txn
from tidemark.storage.engine import Engine
from tidemark.storage.engine import Span as ESpan

__all__ = [
    "UNSAFE_SETTING",
    "Targets",
    "WorkItem",
    "collect_descriptors",
    "descriptor_changes",
    "plan_work",
    "resolve_targets",
    "span_table_id",
]

IMPORTING = OFFLINE_REASON  # a table OFFLINE for an IMPORT
RESTORING = "restoring"  # a table OFFLINE while a RESTORE creates it

FILE_VERSIONS = register(
    "bulkio.backup.file_versions", Kind.INT, 250_000,
    "versions per backup data file: a span with more is cut into several files, each "
    "exported, written and checkpointed on its own",
    validate=lambda v: None if v >= 1 else "must be at least 1")


def _unsafe_allowed(value: bool) -> str | None:
    if value and os.environ.get("TIDEMARK_TESTING") != "1":
        return ("reproduces incomplete incremental backups and is for tests only: it needs "
                "the environment variable TIDEMARK_TESTING=1")
    return None


UNSAFE_SETTING = register(
    "testing.backup.unsafe_mvcc_window_incrementals", Kind.BOOL, False,
    "TESTING ONLY: back up non-PUBLIC indexes and OFFLINE tables as they are and select "
    "incrementals by MVCC timestamp with no re-introduced spans, the classic behaviour that "
    "loses data; refused unless TIDEMARK_TESTING=1", validate=_unsafe_allowed)

SETTINGS_SPAN = (index_prefix(SETTINGS_TABLE_ID, PRIMARY_INDEX_ID),
                 prefix_end(index_prefix(SETTINGS_TABLE_ID, PRIMARY_INDEX_ID)))
_DESCRIPTORS = index_prefix(DESCRIPTOR_TABLE_ID, PRIMARY_INDEX_ID)


def span_table_id(start: bytes) -> int:
    """The table ID a span key starts with."""
    return decode_index_prefix(start)[0]


@dataclass
class Targets:
    """What a BACKUP statement asked for, by name (as recorded in the manifest)."""

    full_cluster: bool = False
    databases: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # "db.table"

    def describe(self) -> str:
        if self.full_cluster:
            return "the whole cluster"
        parts = [f"DATABASE {d}" for d in self.databases] + [f"TABLE {t}" for t in self.tables]
        return ", ".join(parts)


def resolve_targets(txn: Txn, targets: Targets) -> tuple[list[DatabaseDescriptor],
                                                          list[TableDescriptor]]:
    """The databases and tables ``targets`` name, read in ``txn``; errors name what is missing.

    Tables being dropped are left out; tables OFFLINE (importing, restoring) are included.
    """
    dbs: dict[int, DatabaseDescriptor] = {}
    tables: dict[int, TableDescriptor] = {}

    def database(name: str) -> DatabaseDescriptor:
        db = catalog.database_by_name(txn, name)
        if db is None or db.state is DescState.DROP:
            raise SQLError(f'database "{name}" does not exist', code="3D000",
                           hint="SHOW DATABASES lists them")
        return db

    def add_database(db: DatabaseDescriptor) -> None:
        dbs[db.id] = db
        for _, table_id in catalog.list_names(txn, db.id):
            desc = catalog.get_descriptor(txn, table_id)
            if isinstance(desc, TableDescriptor) and desc.state is not DescState.DROP:
                tables[desc.id] = desc

    if targets.full_cluster:
        for _, db_id in catalog.list_names(txn, 0):
            desc = catalog.get_descriptor(txn, db_id)
            if isinstance(desc, DatabaseDescriptor) and desc.state is DescState.PUBLIC:
                add_database(desc)
    for name in targets.databases:
        add_database(database(name))
    for qualified in targets.tables:
        db_name, _, table_name = qualified.partition(".")
        db = database(db_name)
        desc = catalog.table_by_name(txn, db.id, table_name)
        if desc is None or desc.state is DescState.DROP:
            raise SQLError(f'table "{qualified}" does not exist', code="42P01",
                           hint="SHOW TABLES lists them")
        dbs[db.id] = db
        tables[desc.id] = desc
    return sorted(dbs.values(), key=lambda d: d.id), sorted(tables.values(), key=lambda t: t.id)


def collect_descriptors(dbs: list[DatabaseDescriptor], tables: list[TableDescriptor]
                        ) -> list[DescriptorEntry]:
    out = [DescriptorEntry(id=d.id, name=d.name, parent_id=0, state=d.state.value,
                           descriptor=encode_descriptor(d)) for d in dbs]
    out += [DescriptorEntry(id=t.id, name=t.name, parent_id=t.parent_id, state=t.state.value,
                            descriptor=encode_descriptor(t)) for t in tables]
    return out


def descriptor_changes(engine: Engine, start: int, end: int, *, everything: bool,
                       databases: set[int], ids: set[int]) -> list[DescriptorChange]:
    """Every version in ``(start, end]`` of the descriptors a layer's targets cover (revision
    history): all of them for a full-cluster backup (``everything``: databases and tables
    dropped in the window too); for database targets, each target database and every table
    in it at the time of the version (a table created or dropped in the window, say); and
    the descriptors in ``ids`` (target tables, and the databases holding them) alone.
    """
    out = []
    parent_of: dict[int, int | None] = {}  # each descriptor's parent at its last version
    for key, ts, _arrival, value in engine.versions(_DESCRIPTORS, prefix_end(_DESCRIPTORS)):
        desc_id = decode_datums(key, len(_DESCRIPTORS))[0]
        if value is not None:
            desc = decode_descriptor(value)
            parent_of[desc_id] = desc.parent_id if isinstance(desc, TableDescriptor) else None
        # A deleted descriptor belongs where its last version did.
        parent = parent_of.get(desc_id)
        covered = (everything and desc_id >= FIRST_USER_ID) or desc_id in ids or \
            desc_id in databases or parent in databases
        if start < ts <= end and covered:
            out.append(DescriptorChange(ts=ts, id=desc_id, descriptor=value))
    out.sort(key=lambda c: (c.ts, c.id))
    return out


# -- spans and how to export them --------------------------------------------------------


class WorkItem(msgspec.Struct, frozen=True, array_like=True):
    """One data file to write: a part of a span, selected as the layer's rules say."""

    span: MSpan  # the whole (index) span the part belongs to
    part: MSpan  # the keys of this file
    window: str  # "mvcc" (from start_ts by MVCC timestamp) or "arrival"
    start_ts: int
    ts_cap: int | None  # leave out versions above this (a table offline for an IMPORT)


def _index_span(table_id: int, index_id: int) -> MSpan:
    return MSpan(*index_span(table_id, index_id))


def _mode(table: TableDescriptor) -> tuple[str, int]:
    """How a table's spans are exported: comparable between layers."""
    if table.state is DescState.OFFLINE and table.offline_reason == IMPORTING:
        return (IMPORTING, table.import_ts)
    return (table.state.value, 0)


def _cap(table: TableDescriptor) -> int | None:
    return table.import_ts - 1 if _mode(table)[0] == IMPORTING else None


@dataclass
class LayerSpans:
    spans: list[MSpan]
    introduced: list[IntroducedSpan]
    exports: list[tuple[MSpan, str, int, int | None]]  # span, window, start, cap


def plan_spans(tables: list[TableDescriptor], prev: Manifest | None, *,
               full_cluster: bool, unsafe: bool, reintroduce: frozenset[MSpan] = frozenset(),
               history: Sequence[TableDescriptor] = ()) -> LayerSpans:
    """The layer's spans, introduced spans and per-span export rule.

    ``reintroduce`` (from the doctor's repair) forces those spans to be exported from time
    zero, whatever the previous layer held. ``history`` (with revision history: every
    version of the targets' table descriptors in the layer's window) adds the spans of
    indexes and tables that were PUBLIC at some time in the window but are gone at its end,
    so a restore to a time before a DROP finds their data.
    """
    prev_spans = set(prev.spans) if prev is not None else set()
    prev_tables: dict[int, TableDescriptor] = {}
    if prev is not None:
        for e in prev.descriptors:
            d = decode_descriptor(e.descriptor)
            if isinstance(d, TableDescriptor):
                prev_tables[d.id] = d
    start = 0 if prev is None else prev.end_time
    out = LayerSpans([], [], [])

    def add(span: MSpan, cap: int | None, reason: str | None) -> None:
        out.spans.append(span)
        if prev is None:
            out.exports.append((span, "mvcc", 0, cap))
        elif unsafe and reason is None:
            out.exports.append((span, "mvcc", start, cap))
        elif reason is None:
            out.exports.append((span, "arrival", start, cap))
        else:
            out.introduced.append(IntroducedSpan(span, reason))  # type: ignore[arg-type]
            out.exports.append((span, "mvcc", 0, cap))

    for table in tables:
        if unsafe:
            # The classic mistake: every index as it is, whatever its state.
            if table.state is DescState.DROP:
                continue
            # Spans new to the chain are still exported from time zero (the classic
            # systems did that); spans that were offline or not public are not.
            for index in (table.primary_index, *table.indexes):
                span = _index_span(table.id, index.id)
                add(span, None, None if span in prev_spans else "new")
            continue
        if table.state is DescState.OFFLINE and table.offline_reason != IMPORTING:
            continue  # being restored: recorded, no data yet
        old = prev_tables.get(table.id)
        for index in table.public_indexes():
            span = _index_span(table.id, index.id)
            reason: str | None = None
            if old is None:
                reason = "new"
            elif _mode(old) != _mode(table):
                # Offline before or now: what the previous layer holds was read with another
                # cap (or not at all), so an arrival window cannot complete it.
                reason = "offline"
            elif span not in prev_spans:
                old_index = next((i for i in old.indexes if i.id == index.id), None)
                reason = "new" if old_index is None or old_index.state is IndexState.PUBLIC \
                    else "non_public_index"
            if reason is None and span in reintroduce:
                reason = "repair"
            add(span, _cap(table), reason)
    seen = set(out.spans)
    for desc in history:
        if desc.state is DescState.DROP or (desc.state is DescState.OFFLINE and
                                            desc.offline_reason != IMPORTING):
            continue
        for index in desc.public_indexes():
            span = _index_span(desc.id, index.id)
            if span not in seen:
                seen.add(span)
                old = prev_tables.get(desc.id)
                if old is None or span not in prev_spans:
                    add(span, None, "new")
                else:  # an arrival window completes it only if read uncapped before too
                    add(span, None, None if _mode(old) == ("PUBLIC", 0) else "offline")
    if full_cluster:
        span = MSpan(*SETTINGS_SPAN)
        add(span, None, None if span in prev_spans else "new")
    return out


def plan_work(engine: Engine, layer: LayerSpans, file_versions: int, end_time: int
              ) -> list[WorkItem]:
    """Cut each span into parts of about ``file_versions`` versions: one file each. An
    arrival window is cut by what arrived in it, never by walking the whole span."""
    items = []
    for span, window, start, cap in layer.exports:
        espan = ESpan(span.start, span.end)
        if window == "arrival" and start > 0:
            cuts = engine.arrival_split_points(espan, start, end_time, file_versions)
        else:
            cuts = engine.split_points(espan, file_versions)
        bounds = [span.start, *cuts, span.end]
        for lo, hi in itertools.pairwise(bounds):
            items.append(WorkItem(span, MSpan(lo, hi), window, start, cap))
    return items
