"""Reading a backup chain: its manifests, the descriptors at a time, and span coverage.

Used by RESTORE (what to restore from which files), SHOW BACKUP and the doctor. A chain is a
full backup and its incrementals, oldest first; layer ``k`` covers ``(start_k, end_k]`` and
starts where layer ``k-1`` ended.

Restoring to time ``T`` uses the layers up to the first whose end is at or after ``T``. A
``T`` strictly inside a layer (not its end) needs that layer to hold every revision
(``revision_history``), and not before its ``revision_start``. Each index span is restored
from the newest of those layers that exported it from time zero (the full backup, or an
incremental that introduced it) and every layer after that one; a layer in between that does
not hold the span breaks coverage, and the restore is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from tidemark.backup import destination, manifest
from tidemark.backup.manifest import BackupFile, Manifest, Span
from tidemark.catalog.descriptors import (
    DatabaseDescriptor,
    Descriptor,
    TableDescriptor,
    decode_descriptor,
)
from tidemark.clock import format_ts
from tidemark.cloud.codec import EncryptionKey
from tidemark.cloud.storage import ExternalStorage
from tidemark.errors import SQLError

__all__ = ["Chain", "Layer", "files_for", "load_chain"]


@dataclass(frozen=True)
class Layer:
    dir: str
    manifest: Manifest


@dataclass(frozen=True)
class Chain:
    subdir: str
    layers: list[Layer]

    @property
    def full(self) -> Manifest:
        return self.layers[0].manifest

    @property
    def end_time(self) -> int:
        return self.layers[-1].manifest.end_time

    def upto(self, ts: int) -> list[Layer]:
        """The layers a restore to ``ts`` reads; refuses a ``ts`` the chain cannot give."""
        layers = self.layers
        last = layers[-1].manifest
        if ts > last.end_time:
            raise SQLError(
                f"cannot restore to {format_ts(ts)}: it is after the newest backup in "
                f"{self.subdir} (its end time is {format_ts(last.end_time)})", code="22023",
                hint="restore to a time within the chain; SHOW BACKUP lists its layers")
        for k, layer in enumerate(layers):
            m = layer.manifest
            if ts > m.end_time:
                continue
            if ts == m.end_time:
                return layers[: k + 1]
            if m.mvcc_filter != "all":
                where = ("before the full backup's end time" if k == 0 else
                         f"between the backups ending at {format_ts(m.start_time)} and "
                         f"{format_ts(m.end_time)}")
                raise SQLError(
                    f"cannot restore to {format_ts(ts)}: it is {where}, and that backup was "
                    "taken without revision_history, so it holds only its end time",
                    code="22023",
                    hint="restore to a backup's end time (SHOW BACKUP lists them), or take "
                    "backups WITH revision_history to restore to any time")
            if k == 0 and ts < m.revision_start:
                raise SQLError(
                    f"cannot restore to {format_ts(ts)}: it is before the history in "
                    f"{self.subdir} (GC had removed what was older when it was taken: its "
                    f"revision history starts at {format_ts(m.revision_start)})", code="22023",
                    hint="restore to a later time")
            return layers[: k + 1]
        raise AssertionError("unreachable")  # pragma: no cover


def load_chain(storage: ExternalStorage, subdir: str, key: EncryptionKey | str | None
               ) -> Chain:
    """Every layer's manifest of the full backup ``subdir`` (or ``LATEST``)."""
    if subdir.upper() == "LATEST":
        latest = destination.read_latest(storage)
        if latest is None:
            destination.explain_no_latest(storage)
            raise SQLError(f"{storage.uri}: no backup found: the collection has no LATEST",
                           code="58P01", hint="take a full backup with BACKUP ... INTO first")
        subdir = latest
    layers: list[Layer] = []
    for d in destination.chain(storage, subdir):
        m = manifest.read_manifest(storage, d, key)
        if layers and m.start_time != layers[-1].manifest.end_time:
            # A layer without its manifest is skipped by the listing: never restore over it.
            raise SQLError(
                f"{storage.uri}{d}: the backup chain has a gap: this layer starts at "
                f"{format_ts(m.start_time)} but the one before it ({layers[-1].dir}) ends at "
                f"{format_ts(layers[-1].manifest.end_time)}", code="XXC02",
                hint="a layer between them is missing or lost its manifest; restore to a time "
                "before the gap FROM an earlier layer, and run `tidemark backup doctor`")
        layers.append(Layer(d, m))
    return Chain(subdir, layers)


def descriptors_at(layers: list[Layer], ts: int) -> dict[int, Descriptor]:
    """The descriptors of the chain's targets as of ``ts`` (the last layer ends at or after
    it): the layer's own list at its end time, otherwise the previous layer's list with this
    layer's revision-history changes up to ``ts`` applied."""
    last = layers[-1].manifest
    if ts == last.end_time:
        return {e.id: decode_descriptor(e.descriptor) for e in last.descriptors}
    base: dict[int, Descriptor] = {}
    if len(layers) > 1:
        base = {e.id: decode_descriptor(e.descriptor) for e in layers[-2].manifest.descriptors}
    for change in last.descriptor_changes:
        if change.ts > ts:
            break
        if change.descriptor is None:
            base.pop(change.id, None)
        else:
            base[change.id] = decode_descriptor(change.descriptor)
    return base


def databases_and_tables(descs: dict[int, Descriptor]
                         ) -> tuple[dict[int, DatabaseDescriptor], dict[int, TableDescriptor]]:
    dbs = {i: d for i, d in descs.items() if isinstance(d, DatabaseDescriptor)}
    tables = {i: d for i, d in descs.items() if isinstance(d, TableDescriptor)}
    return dbs, tables


def base_layer(layers: list[Layer], span: Span) -> int | None:
    """The index of the newest layer that exported ``span`` from time zero, or None."""
    for k in range(len(layers) - 1, -1, -1):
        m = layers[k].manifest
        if k == 0:
            return 0 if span in m.spans else None
        if any(i.span == span for i in m.introduced_spans):
            return k
    return None


def files_for(layers: list[Layer], span: Span, what: str) -> list[tuple[int, BackupFile]]:
    """The files restoring ``span`` needs, as (layer index, file); refuses a gap in coverage.

    ``what`` names the span in errors (``index "i" of table "t"``).
    """
    base = base_layer(layers, span)
    if base is None:
        raise SQLError(
            f"cannot restore {what}: no backup in the chain holds it from time zero",
            code="XXC02", hint="run `tidemark backup doctor` on the collection; take a new "
            "full backup")
    out = []
    for k in range(base, len(layers)):
        m = layers[k].manifest
        if span not in m.spans:
            raise SQLError(
                f"cannot restore {what}: the backup {layers[k].dir} does not cover it, so the "
                f"chain has a gap in ({format_ts(m.start_time)}, {format_ts(m.end_time)}]",
                code="XXC02", hint="run `tidemark backup doctor` on the collection")
        out.extend((k, f) for f in m.files if span.start <= f.span.start and
                   f.span.end <= span.end)
    return out
