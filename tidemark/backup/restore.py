"""The RESTORE job: fetch each span's files, ingest them under new IDs, revalidate, publish.

The statement (``sql.backup_stmt``) planned everything from the chain's manifests (which
files restore which index span, to what time) and created the new databases and tables
OFFLINE ("restoring") with new IDs, reserving their names. The job:

1. (first run) fixes W, the one MVCC timestamp of every restored version;
2. for each index span not yet done: downloads its files through the codec into a scratch
   folder, one after the other while the one before is ingested, checking each file's
   SHA-256 against the manifest (a swapped, truncated or modified file fails here); ingests
   each in C with the table prefix rewritten, as one commit with its own arrival;
   checkpoints (pause point ``restore.after_first_chunk``). When the span's data comes from
   several layers, or must be read as of a time inside a revision-history layer, each key's
   newest version by MVCC timestamp must win: the files of the later layers (usually small)
   are fetched first; for each file of the base layer (the one that exported the span from
   time zero) an *overlay* of the later layers' keys in its key range is built against it,
   on the fetching thread: the versions from later layers that win, and tombstones for the
   base's live keys they deleted. The file is ingested (a version already at W is kept)
   and the overlay written over it, at W, in one commit. The rows restored are counted
   from the files, never from what a replayed ingest wrote;
3. revalidates every index that was not PUBLIC (or whose table was OFFLINE) in some layer it
   came from, against its table's primary index, and rebuilds it with MVCC writes when it
   does not match — the job says which it rebuilt;
4. brings the tables and new databases PUBLIC in one transaction.

Replaying a span after a crash writes the same versions at W again (an overlay's replace
themselves): no read sees a difference, and nothing is counted twice. On failure or
CANCEL JOB the new tables and databases are dropped and their data removed with MVCC
tombstones; nothing half-restored ever becomes PUBLIC.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import itertools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from tidemark.backup.job import encryption_key, load_secrets, scratch_dir, storage_context
from tidemark.backup.manifest import BackupFile, EncryptionInfo
from tidemark.backup.plan import RESTORING, SETTINGS_SPAN
from tidemark.catalog import catalog
from tidemark.catalog.descriptors import (
    DatabaseDescriptor,
    DescState,
    TableDescriptor,
)
from tidemark.catalog.entries import entries_from_primary, index_matches_primary
from tidemark.cloud import FileNotFound, codec, open_storage
from tidemark.cloud.codec import CorruptFileError, DataFileError, EncryptionKey
from tidemark.cloud.storage import ExternalStorage
from tidemark.cluster.versions import VERSION_SETTING
from tidemark.errors import TidemarkError
from tidemark.jobs.record import JobRecord
from tidemark.jobs.registry import JobContext, protection_owner, register_resumer
from tidemark.kv.keys import decode_datums, index_span, prefix_end, table_prefix
from tidemark.kv.system import PRIMARY_INDEX_ID
from tidemark.kv.txn import Txn
from tidemark.storage.engine import Span, scan_batches
from tidemark.storage.sqlite import build_overlay, export_live_count, read_export

__all__ = ["PAUSE_AFTER_FIRST_CHUNK", "PAUSE_MID_SPAN", "RESTORE", "RestoreDetails",
           "RestoreResumer", "RestoreSpan", "RestoreTable"]

RESTORE = "RESTORE"
PAUSE_AFTER_FIRST_CHUNK = "restore.after_first_chunk"
PAUSE_MID_SPAN = "restore.mid_span"
_READ_SIZE = 1 << 20
# Settings a full-cluster restore leaves as they are: switches for tests and debugging.
NOT_RESTORED_PREFIXES = ("testing.", "jobs.debug.")


class SourceFile(msgspec.Struct, frozen=True, array_like=True):
    layer_dir: str
    file: BackupFile


class RestoreSpan(msgspec.Struct, frozen=True, kw_only=True):
    table_id: int  # the new table
    index_id: int
    old_prefix: bytes
    new_prefix: bytes
    files: list[SourceFile]
    merge: bool  # several layers, or a time inside a layer: newest version by timestamp
    as_of: int | None = None


@dataclass(frozen=True)
class _Unit:
    """Files of one span fetched and ingested at once: one file (of a single layer, or of a
    merged span's base layer), or all of a merged span's later layers (kept until the span
    is done: each base file's overlay reads them)."""

    span: int  # index in RestoreDetails.spans
    files: list[SourceFile]
    later: bool = False
    later_unit: int | None = None  # a base file's: the unit of its span's later layers
    # A base file's share of the later layers' keys: [lo, hi), hi None for no end. The
    # shares of a span's base files cover every key, also those between its files.
    lo: bytes = b""
    hi: bytes | None = None


@dataclass(frozen=True)
class _Fetched:
    """A unit's local files and, for a base file, what goes with it: its overlay (None when
    nothing needs writing over it) and the rows (entries) the two restore."""

    files: list[Path]
    overlay: Path | None = None
    rows: int = 0


def _units(spans: list[RestoreSpan], todo: list[int]) -> list[_Unit]:
    """What to fetch and ingest, in order, for the spans ``todo``."""
    units: list[_Unit] = []
    for i in todo:
        span = spans[i]
        if not span.merge or not span.files:
            units.extend([_Unit(i, [f]) for f in span.files] or [_Unit(i, [])])
            continue
        # The base is the first layer listed: the one that (re)introduced the span (or,
        # when that one held no row of it, the next: the overlay is right for any split).
        base = sorted((f for f in span.files if f.layer_dir == span.files[0].layer_dir),
                      key=lambda f: f.file.span.start)
        later = [f for f in span.files if f.layer_dir != span.files[0].layer_dir]
        later_unit = None
        if later:
            later_unit = len(units)
            units.append(_Unit(i, later, later=True))
        for j, f in enumerate(base):
            units.append(_Unit(
                i, [f], later_unit=later_unit, lo=f.file.span.start if j else b"",
                hi=base[j + 1].file.span.start if j + 1 < len(base) else None))
    return units


class RestoreTable(msgspec.Struct, frozen=True, kw_only=True):
    old_id: int
    new_id: int
    name: str
    database: str
    revalidate: list[int]  # index IDs that were not PUBLIC in some layer they came from


class RestoreDetails(msgspec.Struct, kw_only=True):
    collection: str  # redacted
    secret_ref: str
    subdir: str
    target_time: int
    tables: list[RestoreTable]
    spans: list[RestoreSpan]
    new_databases: list[int]
    settings: list[SourceFile] = msgspec.field(default_factory=list)
    encryption: EncryptionInfo | None = None


class _HashingReader:
    def __init__(self, src: BinaryIO, hasher: Any):
        self.src, self.hasher = src, hasher

    def read(self, n: int = -1) -> bytes:
        data = self.src.read(n)
        self.hasher.update(data)
        return data


DAMAGED_HINT = ("the backup is damaged: restore from another backup; SHOW BACKUP ... WITH "
                "check_files lists every missing or corrupt file of the chain")


def fetch(storage: ExternalStorage, source: SourceFile, key: EncryptionKey | None,
          out: Path) -> None:
    """Download and decode one data file to ``out``, verifying its manifest checksum.

    The file is hashed as it is decoded; when decoding fails (zstd's or the trailer's
    checksum, GCM authentication, a header that is not the backup's), the rest of the file is
    still hashed, so a file that is not the one the manifest names is reported as that, with
    the manifest's checksum, rather than as whatever the codec tripped on first.
    """
    name = f"{source.layer_dir.strip('/')}/{source.file.path}"
    shown = f"{storage.uri.rstrip('/')}/{name}"
    hasher = hashlib.sha256()
    try:
        src = storage.open(name)
    except FileNotFound:
        raise CorruptFileError(f"{shown}: backup data file is missing",
                               hint=DAMAGED_HINT) from None
    decode_error: DataFileError | None = None
    try:
        reader = _HashingReader(src, hasher)
        try:
            with open(out, "wb") as f:
                codec.decode_stream(reader, f, key=key, name=shown)  # type: ignore[arg-type]
        except DataFileError as exc:
            decode_error = exc
        while reader.read(_READ_SIZE):  # hash any bytes the decoder did not reach
            pass
    finally:
        src.close()
    if hasher.hexdigest() != source.file.sha256:
        raise CorruptFileError(
            f"{shown}: backup data file is corrupt: it does not match its checksum in the "
            "manifest (it was modified or truncated, or swapped with another backup's file)",
            hint=DAMAGED_HINT)
    if decode_error is not None:
        # The stored bytes are the ones the backup wrote, yet they do not decode.
        decode_error.hint = decode_error.hint or DAMAGED_HINT
        raise decode_error


class RestoreResumer:
    def __init__(self, record: JobRecord):
        self.job_id = record.id
        self.details = msgspec.convert(record.details, RestoreDetails)

    def resume(self, ctx: JobContext) -> None:
        node, d = ctx.node, self.details
        secrets = load_secrets(node, d.secret_ref)
        key = encryption_key(d.encryption, secrets.passphrase)
        cp = dict(ctx.checkpoint)
        if "ts" not in cp:
            ts = node.db.now()
            # Protected so that GC passing W while the job is paused does not refuse its
            # remaining writes at W.
            spans = [Span(table_prefix(t.new_id), prefix_end(table_prefix(t.new_id)))
                     for t in d.tables]
            if spans:  # freed by the registry when the job ends
                node.engine.protect(ts, spans, owner=protection_owner(self.job_id))
            cp = {"ts": ts, "done": [], "rows": 0, "index_entries": 0, "bytes": 0,
                  "rebuilt": []}
            ctx.progress(0.0, checkpoint=cp, running_status="restoring data")
        storage = open_storage(secrets.uri, storage_context(node))
        scratch = scratch_dir(node, self.job_id)
        # The next file downloads and decodes on another thread while this one is ingested
        # (both are C code that releases the GIL); at most two units sit in scratch at once,
        # besides a merged span's later layers.
        prefetch = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="restore-fetch")
        try:
            done = set(cp["done"])
            todo = [i for i in range(len(d.spans)) if i not in done]
            units = _units(d.spans, todo)
            per_span = collections.Counter(u.span for u in units)
            fetched = self._fetched(prefetch, storage, key, scratch, units)
            first = True
            for i in todo:
                span = d.spans[i]
                # Exactly this span's units: asking for one more would wait for its download.
                rows = self._restore_span(ctx, span, itertools.islice(fetched, per_span[i]),
                                          cp["ts"])
                cp["done"] = [*cp["done"], i]
                cp["rows" if span.index_id == PRIMARY_INDEX_ID else "index_entries"] += rows
                cp["bytes"] += sum(f.file.size for f in span.files)
                ctx.progress(len(cp["done"]) / max(1, len(d.spans)) * 0.95, checkpoint=cp)
                if first:
                    first = False
                    ctx.pause_point(PAUSE_AFTER_FIRST_CHUNK)
            if d.settings and not cp.get("settings_done"):
                self._restore_settings(node, storage, key, scratch)
                cp["settings_done"] = True
                ctx.progress(checkpoint=cp)
        finally:
            prefetch.shutdown(wait=True, cancel_futures=True)  # nothing writes to scratch now
            shutil.rmtree(scratch, ignore_errors=True)
            storage.close()
        if not cp.get("validated"):
            ctx.progress(running_status="validating indexes")
            cp["rebuilt"] = self._revalidate(node)
            cp["validated"] = True
            ctx.progress(checkpoint=cp)
        node.db.run(self._publish)  # the registry frees its protection once it has ended

    def _fetched(self, prefetch: concurrent.futures.ThreadPoolExecutor,
                 storage: ExternalStorage, key: EncryptionKey | None, scratch: Path,
                 units: list[_Unit]) -> Iterator[tuple[_Unit, _Fetched]]:
        """Each unit fetched (and prepared), the next one while this one is used."""
        ahead: dict[int, concurrent.futures.Future[_Fetched]] = {}
        laters: dict[int, concurrent.futures.Future[_Fetched]] = {}  # read by base files
        for u, unit in enumerate(units):
            for k in range(u, min(u + 2, len(units))):
                if k not in ahead:
                    # One fetch thread, in order: a base file's later layers are there first.
                    later = None if units[k].later_unit is None else laters[units[k].later_unit]
                    ahead[k] = prefetch.submit(self._fetch_unit, storage, key, scratch, k,
                                               units[k], later)
                    if units[k].later:
                        laters[k] = ahead[k]
            yield unit, ahead.pop(u).result()

    def _fetch_unit(self, storage: ExternalStorage, key: EncryptionKey | None,
                    scratch: Path, k: int, unit: _Unit,
                    later: concurrent.futures.Future[_Fetched] | None) -> _Fetched:
        """Fetch unit ``k``; for a merged span's base file, also count its rows and build
        its overlay here, beside the ingest of the unit before (both in C)."""
        local = self._fetch_files(storage, key, scratch, k, unit.files)
        span = self.details.spans[unit.span]
        if not span.merge or unit.later or not local:
            return _Fetched(local)
        overlay = scratch / f"u{k}-overlay.sqlite"
        try:
            rows = export_live_count(str(local[0]), span.as_of)
            if later is None:
                return _Fetched(local, None, rows)
            stats = build_overlay([str(p) for p in later.result().files], str(local[0]),
                                  str(overlay), lo=unit.lo, hi=unit.hi, as_of=span.as_of)
        except BaseException:
            for p in (*local, overlay):
                p.unlink(missing_ok=True)
            raise
        if not stats.rows:
            overlay.unlink()
        return _Fetched(local, overlay if stats.rows else None,
                        rows + stats.live - stats.shadowed)

    @staticmethod
    def _fetch_files(storage: ExternalStorage, key: EncryptionKey | None, scratch: Path,
                     unit: int, files: list[SourceFile]) -> list[Path]:
        """Download, check and decode ``files`` (fetch unit ``unit``) into ``scratch``."""
        local: list[Path] = []
        try:
            for n, source in enumerate(files):
                out = scratch / f"u{unit}-f{n}.sqlite"
                fetch(storage, source, key, out)
                local.append(out)
        except BaseException:
            for p in local:
                p.unlink(missing_ok=True)
            raise
        return local

    def _restore_span(self, ctx: JobContext, span: RestoreSpan,
                      fetched: Iterator[tuple[_Unit, _Fetched]], ts: int) -> int:
        """Ingest a span's fetched units at ``ts``; returns the rows (entries) it restores.

        A single layer's files hold one live version per key: the manifest counts them.
        A merged span counts, per base file, its live keys, less those its overlay
        replaces or deletes, plus the overlay's live keys. Pause point
        ``restore.mid_span``: after a merged span's first base file (the span is restored
        again on resume)."""
        rewrites = [(span.old_prefix, span.new_prefix)]
        if not span.merge:
            for _unit, got in fetched:
                for path in got.files:
                    try:
                        ctx.import_file(str(path), rewrites=rewrites, ts=ts)
                    finally:
                        path.unlink(missing_ok=True)
            return sum(f.file.rows for f in span.files)
        later: list[Path] = []
        rows = 0
        try:
            for unit, got in fetched:
                if unit.later:
                    later = got.files
                    continue
                try:
                    for base in got.files:  # (one; none for a span without files)
                        # A base with every revision is read as of the restore's time; a
                        # latest-only one holds a version per key already.
                        ctx.import_file(
                            str(base), rewrites=rewrites, ts=ts, as_of=span.as_of,
                            overlay=None if got.overlay is None else str(got.overlay))
                        rows += got.rows
                        ctx.pause_point(PAUSE_MID_SPAN)
                finally:
                    for p in (*got.files, *filter(None, [got.overlay])):
                        p.unlink(missing_ok=True)
        finally:
            for p in later:
                p.unlink(missing_ok=True)
        return rows

    def _restore_settings(self, node: Any, storage: ExternalStorage,
                          key: EncryptionKey | None, scratch: Path) -> None:
        """A full-cluster restore brings the cluster settings back (but never the version)."""
        rows: dict[bytes, bytes | None] = {}
        for n, source in enumerate(self.details.settings):
            out = scratch / f"s{n}.sqlite"
            fetch(storage, source, key, out)
            try:
                for k, ts, v in read_export(str(out)):  # by key and time: newest wins
                    if ts <= self.details.target_time:
                        rows[k] = v
            finally:
                out.unlink(missing_ok=True)
        prefix = SETTINGS_SPAN[0]

        known = {setting.name for setting, _ in node.settings.all()}

        def write(txn: Txn) -> None:
            for k, v in rows.items():
                name = decode_datums(k, len(prefix))[0]
                if v is None or name == VERSION_SETTING.name or name.startswith(
                        NOT_RESTORED_PREFIXES) or name not in known:
                    continue  # the version, testing/debug switches, settings gone since
                txn.put(k, v)
        node.db.run(write)

    def _revalidate(self, node: Any) -> list[str]:
        """Check each flagged index against its table; rebuild it with MVCC writes if it
        does not match. Returns ``table.index`` names rebuilt."""
        rebuilt = []
        for t in self.details.tables:
            if not t.revalidate:
                continue
            table = node.db.run(lambda txn, t=t: catalog.get_descriptor(txn, t.new_id))
            assert isinstance(table, TableDescriptor)
            for index in table.indexes:
                if index.id in t.revalidate and self._rebuild_if_wrong(node, table, index):
                    rebuilt.append(f"{t.database}.{t.name}@{index.name}")
        return rebuilt

    @staticmethod
    def _rebuild_if_wrong(node: Any, table: TableDescriptor, index: Any) -> bool:
        """Rebuild ``index`` from its table when its entries do not match what the rows
        derive (count and fingerprint, streamed): every entry is tombstoned, then written
        again batch by batch. The table is OFFLINE, so no query sees the steps, and a crash
        part-way leaves an index that fails the check again when the job resumes."""
        engine = node.engine
        if index_matches_primary(engine, table, index, engine.frontier()):
            return False
        engine.delete_range(*index_span(table.id, index.id))
        ts = engine.frontier()
        derive = entries_from_primary(table, index)
        for batch in scan_batches(engine, *index_span(table.id, table.primary_index.id), ts):
            engine.ingest(derive(batch))
        return True

    def _publish(self, txn: Txn) -> None:
        for t in self.details.tables:
            desc = catalog.get_descriptor(txn, t.new_id)
            if isinstance(desc, TableDescriptor) and desc.state is DescState.OFFLINE and \
                    desc.offline_reason == RESTORING:
                catalog.write_descriptor(txn, msgspec.structs.replace(
                    desc, state=DescState.PUBLIC, offline_reason=""))
        for db_id in self.details.new_databases:
            desc = catalog.get_descriptor(txn, db_id)
            if isinstance(desc, DatabaseDescriptor) and desc.state is DescState.OFFLINE:
                catalog.write_descriptor(txn, msgspec.structs.replace(
                    desc, state=DescState.PUBLIC))

    # -- failure -------------------------------------------------------------------------

    def on_fail_or_cancel(self, ctx: JobContext, error: TidemarkError | None) -> None:
        node, d = ctx.node, self.details

        def drop(txn: Txn) -> None:
            for t in d.tables:
                desc = catalog.get_descriptor(txn, t.new_id)
                if isinstance(desc, TableDescriptor) and desc.state is DescState.OFFLINE:
                    catalog.write_descriptor(txn, msgspec.structs.replace(
                        desc, state=DescState.DROP))
                    if catalog.lookup_id(txn, desc.parent_id, desc.name) == desc.id:
                        catalog.set_name(txn, desc.parent_id, desc.name, None)
            for db_id in d.new_databases:
                desc = catalog.get_descriptor(txn, db_id)
                if isinstance(desc, DatabaseDescriptor) and desc.state is DescState.OFFLINE:
                    catalog.write_descriptor(txn, msgspec.structs.replace(
                        desc, state=DescState.DROP))
                    if catalog.lookup_id(txn, 0, desc.name) == desc.id:
                        catalog.set_name(txn, 0, desc.name, None)

        node.db.run(drop)
        for t in d.tables:
            p = table_prefix(t.new_id)
            node.engine.delete_range(p, prefix_end(p))


def restored_descriptor(old: TableDescriptor, new_id: int, parent_id: int
                        ) -> TableDescriptor:
    """The descriptor a restore creates: new IDs, OFFLINE, only the PUBLIC indexes."""
    return msgspec.structs.replace(
        old, id=new_id, parent_id=parent_id, state=DescState.OFFLINE,
        offline_reason=RESTORING, import_ts=0, version=1,
        indexes=tuple(i for i in old.indexes if i in old.public_indexes()))


register_resumer(RESTORE, RestoreResumer)
