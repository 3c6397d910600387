"""The BACKUP job: export each planned part to a data file, then the manifest, then LATEST.

The statement (``sql.backup_stmt``) fixed the end time, the layer's folder, the encryption
salt, and kept the credentials (storage URI, passphrase) in the store's job-secrets table,
never in the job record. The job:

1. (first run) reads the targets' descriptors at the end time, plans spans and parts
   (``backup.plan``), protects what it will read from GC, and checkpoints the plan;
2. takes the layer folder's lock, then for each part not yet done: exports it in C to a
   local file, streams it through the codec (zstd, AES-256-GCM with a passphrase) into the
   collection while hashing what is stored, and checkpoints the file's entry — in the job
   record and in ``BACKUP-CHECKPOINT`` (pause point ``backup.after_first_chunk`` after the
   first); a resumed job never exports a finished part again;
3. writes the manifest — the commit point — then, for a full backup, moves LATEST; then
   releases the lock.

A job that fails or is canceled removes what it wrote to its folder (there is no manifest,
so none of it was a backup) and releases the lock. Either way, the jobs registry releases
the job's protected timestamps once it has ended.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from tidemark import native
from tidemark.backup import destination, manifest
from tidemark.backup.destination import BackupLockedError
from tidemark.backup.manifest import BackupFile, DescriptorChange, EncryptionInfo, Manifest
from tidemark.backup.manifest import Span as MSpan
from tidemark.backup.parallel import Parts
from tidemark.backup.plan import (
    FILE_VERSIONS,
    SETTINGS_SPAN,
    LayerSpans,
    Targets,
    WorkItem,
    collect_descriptors,
    descriptor_changes,
    plan_spans,
    plan_work,
    resolve_targets,
    span_table_id,
)
from tidemark.catalog import fingerprint
from tidemark.catalog.descriptors import (
    DatabaseDescriptor,
    TableDescriptor,
    decode_descriptor,
)
from tidemark.cloud import StorageContext, codec, open_storage
from tidemark.cloud.codec import EncryptionKey, KDFParams
from tidemark.cloud.storage import ExternalStorage
from tidemark.cluster.node import Node
from tidemark.errors import ProtectionError, SQLError, TidemarkError
from tidemark.jobs.record import JobRecord
from tidemark.jobs.registry import JobContext, protection_owner, register_resumer
from tidemark.kv.keys import decode_index_prefix, prefix_end, table_prefix, table_span
from tidemark.kv.system import (
    DESCRIPTOR_TABLE_ID,
    FIRST_USER_ID,
    NAMESPACE_TABLE_ID,
    PRIMARY_INDEX_ID,
)
from tidemark.storage.engine import Span, Window
from tidemark.storage.sqlite import (
    EXTERNAL_DIR,
    export_entries,
    export_fingerprint,
    export_keys,
)

__all__ = ["BACKUP", "PAUSE_AFTER_FIRST_CHUNK", "BackupDetails", "BackupResumer",
           "Secrets", "load_secrets", "scratch_dir", "storage_context"]

BACKUP = "BACKUP"
PAUSE_AFTER_FIRST_CHUNK = "backup.after_first_chunk"
DATA_DIR = "data"
_READ_SIZE = 1 << 20
# Parts exported at once: each is C code that releases the GIL (see parallel.py); two keep
# two cores busy, and each holds one export file and one store connection.
EXPORT_WORKERS = 2


class BackupDetails(msgspec.Struct, kw_only=True):
    """What the statement decided; fixed for the life of the job. No secrets in here."""

    collection: str  # redacted
    secret_ref: str  # the owner of the credentials in the store's job-secrets table
    full_subdir: str
    layer_dir: str
    backup_type: str  # "full" or "incremental"
    start_time: int
    end_time: int
    revision_history: bool
    full_cluster: bool
    databases: list[str]
    tables: list[str]
    prev_layer: str | None = None
    encryption: EncryptionInfo | None = None
    unsafe: bool = False
    # Spans to export from time zero whatever the previous layer held (the doctor's repair).
    reintroduce: list[MSpan] = msgspec.field(default_factory=list)


class Secrets(msgspec.Struct):
    uri: str
    passphrase: str | None = None


def storage_context(node: Node) -> StorageContext:
    return StorageContext(external_dir=Path(node.engine.root) / EXTERNAL_DIR)


def load_secrets(node: Node, ref: str) -> Secrets:
    raw = node.engine.get_secret(ref)
    if raw is None:
        raise SQLError(f"the credentials of {ref} are gone from this store", code="58030",
                       hint="the job cannot reach its storage; start it again")
    return msgspec.msgpack.decode(raw, type=Secrets)


def scratch_dir(node: Node, job_id: int) -> Path:
    """The job's private temporary folder inside the store (same disk: no cross-device
    copies). Emptied first: what a killed run of the same job left there goes."""
    path = Path(node.engine.root) / "tmp" / f"job-{job_id}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def encryption_key(info: EncryptionInfo | None, passphrase: str | None) -> EncryptionKey | None:
    if info is None:
        return None
    assert passphrase is not None
    return EncryptionKey.from_passphrase(passphrase, salt=info.salt, kdf=KDFParams(*info.kdf))


class _Sink:
    """Collects what the encoder writes, handed on by ``drain`` while hashing it."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self, hasher: Any) -> Iterator[bytes]:
        parts, self.parts = self.parts, []
        for p in parts:
            hasher.update(p)
            yield p


def encoded_chunks(path: Path, key: EncryptionKey | None, hasher: Any) -> Iterator[bytes]:
    """The stored bytes of the local file ``path``, through the codec, hashed on the way."""
    sink = _Sink()
    enc = codec.Encoder(sink, key)  # type: ignore[arg-type]
    with open(path, "rb") as f:
        while chunk := f.read(_READ_SIZE):
            enc.write(chunk)
            yield from sink.drain(hasher)
    enc.close()
    yield from sink.drain(hasher)


def protected_spans(tables: list[int]) -> list[Span]:
    spans = [Span(table_prefix(t), prefix_end(table_prefix(t))) for t in tables]
    for system in (DESCRIPTOR_TABLE_ID, NAMESPACE_TABLE_ID):
        spans.append(Span(table_prefix(system), prefix_end(table_prefix(system))))
    spans.append(Span(*SETTINGS_SPAN))
    return spans


class BackupResumer:
    def __init__(self, record: JobRecord):
        self.job_id = record.id
        self.details = msgspec.convert(record.details, BackupDetails)
        self.owner = protection_owner(record.id)

    # -- running -------------------------------------------------------------------------

    def resume(self, ctx: JobContext) -> None:
        node, d = ctx.node, self.details
        secrets = load_secrets(node, d.secret_ref)
        key = encryption_key(d.encryption, secrets.passphrase)
        storage = open_storage(secrets.uri, storage_context(node))
        try:
            destination.acquire_lock(storage, d.layer_dir, self.job_id)
            if "work" not in ctx.checkpoint:
                self._start(ctx, storage, key)
            self._export(ctx, storage, key)
            ctx.progress(running_status="writing the manifest")
            self._finish(ctx, storage, key)
        finally:
            storage.close()

    def _read_targets(self, node: Node) -> tuple[list, list]:
        d = self.details
        txn = node.db.txn(d.end_time)
        try:
            return resolve_targets(txn, Targets(d.full_cluster, d.databases, d.tables))
        finally:
            txn.rollback()

    def _layer_spans(self, node: Node, storage: ExternalStorage, key: EncryptionKey | None
                     ) -> tuple[LayerSpans, list, list, Manifest | None,
                                list[DescriptorChange]]:
        """The layer's plan, its targets, the previous manifest and (with revision history)
        the descriptor changes in its window."""
        d = self.details
        dbs, tables = self._read_targets(node)
        prev = None if d.prev_layer is None else \
            manifest.read_manifest(storage, d.prev_layer, key)
        history: list[TableDescriptor] = []
        changes: list[DescriptorChange] = []
        if d.revision_history:
            # The targets at the window's start (the previous layer's) and at its end: a
            # target dropped (or replaced under its name) in the window leaves its drop in
            # the changes, and what was PUBLIC at the start or became so in the window is
            # history whose spans a restore to a time before a DROP needs.
            before = [] if prev is None else [decode_descriptor(e.descriptor)
                                              for e in prev.descriptors]
            targets = [*before, *dbs, *tables]
            changes = descriptor_changes(
                node.engine, d.start_time, d.end_time, everything=d.full_cluster,
                databases={db.id for db in targets if isinstance(db, DatabaseDescriptor)
                           and db.name in d.databases},
                ids={desc.id for desc in targets})
            history += [desc for desc in before if isinstance(desc, TableDescriptor)]
            history += [desc for c in changes if c.descriptor is not None and
                        isinstance(desc := decode_descriptor(c.descriptor), TableDescriptor)]
        layer = plan_spans(tables, prev, full_cluster=d.full_cluster, unsafe=d.unsafe,
                           reintroduce=frozenset(d.reintroduce), history=history)
        return layer, dbs, tables, prev, changes

    def _start(self, ctx: JobContext, storage: ExternalStorage, key: EncryptionKey | None
               ) -> None:
        node, d = ctx.node, self.details
        ctx.progress(0.0, running_status="planning")
        # Protect first: planning reads history at the end time (and the start time).
        if d.backup_type == "incremental":
            protect_at = d.start_time
        elif d.revision_history:  # every revision still there: keep it until exported
            protect_at = max(node.engine.gc_threshold(), 1)
        else:
            protect_at = d.end_time
        _dbs, tables = self._read_targets(node)
        self._protect(node, protect_at, protected_spans([t.id for t in tables]))
        layer, _dbs, tables, _prev, _changes = self._layer_spans(node, storage, key)
        # With revision history the layer also exports tables that are no target at its
        # end (dropped in its window): their history must stay until it is exported too.
        # Protecting fails if GC already passed protect_at there: never a silent gap.
        history = sorted({span_table_id(s.start) for s in layer.spans} -
                         {t.id for t in tables} - {span_table_id(SETTINGS_SPAN[0])})
        if history:
            self._protect(node, protect_at, [Span(*table_span(t)) for t in history])
        work = plan_work(node.engine, layer, int(node.settings.get(FILE_VERSIONS.name)),
                         d.end_time)
        cp = {"work": msgspec.msgpack.encode(work), "done": [],
              "revision_start": d.start_time or protect_at,
              "rows": 0, "index_entries": 0, "bytes": 0}
        ctx.progress(0.0, checkpoint=cp, running_status="exporting")

    def _export(self, ctx: JobContext, storage: ExternalStorage, key: EncryptionKey | None
                ) -> None:
        node = ctx.node
        cp = dict(ctx.checkpoint)
        work = msgspec.msgpack.decode(cp["work"], type=list[WorkItem])
        done: list[list[Any]] = list(cp["done"])  # [work index, BackupFile as builtins|None]
        finished = {e[0] for e in done}
        scratch = scratch_dir(node, self.job_id)
        first = True
        todo = [(i, item) for i, item in enumerate(work) if i not in finished]

        def export_one(i: int, item: WorkItem) -> tuple[BackupFile | None, int]:
            return self._export_one(node, storage, key, scratch, i, item)

        try:
            with Parts(node.engine, export_one, todo, EXPORT_WORKERS) as parts:
                for i, (entry, fp) in parts.results():
                    self._record_part(ctx, storage, key, cp, work, done, i, entry, fp)
                    if first:
                        first = False
                        if ctx.pauses_at(PAUSE_AFTER_FIRST_CHUNK):
                            # Keep what the other workers finish: a resumed job skips it.
                            for j, (e, f) in parts.settle():
                                self._record_part(ctx, storage, key, cp, work, done, j, e, f)
                            ctx.pause_point(PAUSE_AFTER_FIRST_CHUNK, checked=True)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _record_part(self, ctx: JobContext, storage: ExternalStorage,
                     key: EncryptionKey | None, cp: dict[str, Any], work: list[WorkItem],
                     done: list[list[Any]], i: int, entry: BackupFile | None, fp: int
                     ) -> None:
        """Checkpoint a finished part (job record and BACKUP-CHECKPOINT) and report progress."""
        done.append([i, None if entry is None else msgspec.to_builtins(entry), fp])
        if entry is not None:
            table_id, index_id, _ = decode_index_prefix(work[i].span.start)
            if table_id >= FIRST_USER_ID:  # not the cluster settings
                cp["rows" if index_id == PRIMARY_INDEX_ID else "index_entries"] += entry.rows
            cp["bytes"] += entry.size
        cp["done"] = done
        self._write_checkpoint(storage, done, key)
        ctx.progress(len(done) / max(1, len(work)), checkpoint=cp)

    def _export_one(self, node: Node, storage: ExternalStorage, key: EncryptionKey | None,
                    scratch: Path, i: int, item: WorkItem) -> tuple[BackupFile | None, int]:
        """Export, encode and store one part; returns its file entry (None when it holds
        nothing) and its contribution to its index's fingerprint (``_fingerprints``)."""
        d = self.details
        local = scratch / f"{i}.sqlite"
        span = Span(item.part.start, item.part.end)
        change = None
        if item.window == "arrival" and item.start_ts > 0 and native.available():
            # An incremental's fingerprint change reads the same keys (from the arrival
            # index) as the export: run both at once, on two cores.
            change = node.engine.beside().submit(
                node.engine.fingerprint_change, span, item.start_ts, d.end_time,
                item.ts_cap or d.end_time, item.start_ts, len(item.span.start))
        try:
            stats = node.engine.export(
                str(local), span, item.start_ts, d.end_time,
                window=Window.ARRIVAL if item.window == "arrival" else Window.MVCC,
                all_revisions=d.revision_history, ts_cap=item.ts_cap)
            if stats.rows == 0:
                return None, 0
            if change is None:
                fp = self._fingerprint_part(node, item, local)
            name = f"{DATA_DIR}/{i:06d}.tdf"
            hasher = hashlib.sha256()
            size = storage.write(_join(d.layer_dir, name), encoded_chunks(local, key, hasher))
            if change is not None:
                fp = change.result()  # computed while the file was exported and stored
            return BackupFile(span=item.part, path=name, rows=stats.rows, size=size,
                              sha256=hasher.hexdigest(),
                              read_at=self._read_at(item.ts_cap)), fp
        finally:
            if change is not None:
                concurrent.futures.wait([change])  # nothing left running on failure
            local.unlink(missing_ok=True)

    def _read_at(self, ts_cap: int | None) -> int:
        """The MVCC time a part is read at: the layer's end, or its cap (just below an
        IMPORT's timestamp) when lower."""
        end = self.details.end_time
        return end if ts_cap is None else min(ts_cap, end)

    def _fingerprint_part(self, node: Node, item: WorkItem, local: Path) -> int:
        """What this part adds to its index's fingerprint as of the layer's read time.

        Fingerprints are sums over entries, so parts add up. A part exported from time zero
        contributes its live entries; an arrival-window part the change of each key it holds
        between the previous layer's time and this one's, read from the store (cost
        proportional to the change, not to the index). With the C extension, arrival-window
        parts are fingerprinted beside their export instead (``_export_one``).
        """
        plen = len(item.span.start)
        read_at = self._read_at(item.ts_cap)
        if item.start_ts == 0:
            fp = export_fingerprint(str(local), plen, read_at)  # in C, when built
            if fp is None:
                fp = fingerprint.fingerprint(export_entries(str(local), read_at), plen)
            return fp
        if item.window != "arrival":
            return 0  # the unsafe mode: fingerprinted from the store at the end
        keys = export_keys(str(local))
        before = node.engine.get_many_checked(keys, item.start_ts)
        after = node.engine.get_many_checked(keys, read_at)
        return fingerprint.update(
            0, plen, [(k, v) for k, v in before.items() if v is not None],
            [(k, v) for k, v in after.items() if v is not None])

    def _write_checkpoint(self, storage: ExternalStorage, done: list, key: EncryptionKey | None
                          ) -> None:
        files = [e[1] for e in done if e[1] is not None]
        storage.write(_join(self.details.layer_dir, manifest.CHECKPOINT),
                      codec.encode(msgspec.msgpack.encode(files), key=key))

    def _finish(self, ctx: JobContext, storage: ExternalStorage, key: EncryptionKey | None
                ) -> None:
        node, d = ctx.node, self.details
        cp = ctx.checkpoint
        if manifest.has_manifest(storage, d.layer_dir):
            # Written before a crash: the backup exists; finish the bookkeeping only.
            self._move_latest(storage)
            self._cleanup(node, storage, cp, keep_files=True)
            return
        if d.backup_type == "incremental":
            self._lock_chain(storage)
            self._check_chain_unchanged(storage)
        layer, dbs, tables, prev, changes = self._layer_spans(node, storage, key)
        done = sorted(cp["done"], key=lambda e: e[0])
        files = [msgspec.convert(e[1], BackupFile) for e in done if e[1]]
        work = msgspec.msgpack.decode(cp["work"], type=list[WorkItem])
        m = Manifest(
            cluster_version=str(node.version.active()),
            backup_type=d.backup_type,  # type: ignore[arg-type]
            start_time=d.start_time, end_time=d.end_time,
            mvcc_filter="all" if d.revision_history else "latest",
            revision_start=cp["revision_start"] if d.revision_history else 0,
            is_full_cluster=d.full_cluster,
            target_databases=list(d.databases), target_tables=list(d.tables),
            job_id=self.job_id,
            spans=layer.spans, introduced_spans=layer.introduced, files=files,
            descriptors=collect_descriptors(dbs, tables), descriptor_changes=changes,
            encryption=d.encryption,
            fingerprints=self._fingerprints(node, layer, tables, work, done, prev))
        manifest.write_manifest(storage, d.layer_dir, m, key)
        self._move_latest(storage)
        self._cleanup(node, storage, cp, keep_files=True)

    def _lock_chain(self, storage: ExternalStorage) -> None:
        """Hold the chain's lock from the check below until the manifest is written (the
        cleanup releases it): two incrementals finishing at once could otherwise both find
        the chain unchanged and both join it, forking it."""
        d = self.details
        try:
            destination.acquire_lock(storage, d.full_subdir, self.job_id,
                                     name=manifest.CHAIN_LOCK)
        except BackupLockedError as e:
            raise SQLError(
                f"{storage.uri}{d.layer_dir}: another incremental backup (job "
                f"{', '.join(e.holders)}) is joining the chain of {d.full_subdir} right now",
                code="40001", hint="run BACKUP ... INTO LATEST again; it will start where "
                f"that backup ended (if that job no longer exists, first delete "
                f"{d.full_subdir.rstrip('/')}/{manifest.CHAIN_LOCK}-{e.holders[0]} from the "
                "collection)") from None

    def _check_chain_unchanged(self, storage: ExternalStorage) -> None:
        """Refuse to append to a chain another incremental extended while this one ran: both
        would start where the same layer ends, and the chain would fork (``load_chain``
        refuses it). The loser fails and removes its files; the chain stays valid."""
        d = self.details
        last = destination.chain(storage, d.full_subdir)[-1]
        if last != d.prev_layer:
            raise SQLError(
                f"{storage.uri}{d.layer_dir}: another incremental backup ({last}) was "
                f"appended to the chain of {d.full_subdir} while this one ran",
                code="40001", hint="run BACKUP ... INTO LATEST again; it will start where "
                "that backup ended")

    def _fingerprints(self, node: Node, layer: LayerSpans, tables: list[TableDescriptor],
                      work: list[WorkItem], done: list[list[Any]], prev: Manifest | None
                      ) -> dict[int, dict[int, int]]:
        """Every exported index's fingerprint as of the layer's read time (see
        ``_fingerprint_part``): the parts' sums, plus the previous layer's value for spans
        exported by arrival window."""
        sums: dict[bytes, int] = {}
        for e in done:
            span = work[e[0]].span
            sums[span.start] = sums.get(span.start, 0) + e[2]
        caps = {t.id: t for t in tables}
        out: dict[int, dict[int, int]] = {}
        for span, window, start, cap in layer.exports:
            table_id, index_id, _ = decode_index_prefix(span.start)
            if table_id not in caps or index_id not in {
                    i.id for i in caps[table_id].public_indexes()}:
                continue  # the settings span, or an index dropped in the window
            value = sums.get(span.start, 0)
            old = None if prev is None else prev.fingerprints.get(table_id, {}).get(index_id)
            if (window == "mvcc" and start > 0) or (window == "arrival" and old is None):
                # Unsafe mode, or no earlier value: read the index at the layer's time.
                read_at = self._read_at(cap)
                value = fingerprint.span_fingerprint(
                    node.engine, Span(span.start, span.end), read_at, len(span.start))
            elif window == "arrival":
                value += old  # type: ignore[operator]
            out.setdefault(table_id, {})[index_id] = value & fingerprint.MASK
        return out

    def _move_latest(self, storage: ExternalStorage) -> None:
        """Point LATEST at the newest completed full backup: this one, unless a newer one
        exists (an older backup that finished late must not move it back).

        Object stores have no compare-and-swap, so two full backups finishing together
        could each read LATEST before the other wrote it, and the slower one write an older
        name last. Each writer therefore checks again after writing, against the listing,
        which then shows the other's manifest (written before its LATEST): the last writer
        always leaves the newest name."""
        if self.details.backup_type != "full":
            return
        for _ in range(5):
            newest = destination.list_full_backups(storage)[-1]  # names sort by end time
            current = destination.read_latest(storage)
            if current is not None and current >= newest:
                return
            destination.write_latest(storage, newest)

    def _holds_lock(self, storage: ExternalStorage) -> bool:
        """Did this job take the folder's lock? One refused the lock must touch nothing:
        the folder belongs to the job holding it."""
        try:
            storage.stat(_join(self.details.layer_dir, f"{manifest.LOCK}-{self.job_id}"))
        except TidemarkError:
            return False
        return True

    def _cleanup(self, node: Node, storage: ExternalStorage, cp: dict[str, Any], *,
                 keep_files: bool) -> None:
        d = self.details
        ours = self._holds_lock(storage)
        if ours:
            with contextlib.suppress(TidemarkError):
                storage.delete(_join(d.layer_dir, manifest.CHECKPOINT))
        if not keep_files and ours and not manifest.has_manifest(storage, d.layer_dir):
            prefix = d.layer_dir.strip("/") + "/"
            for info in storage.list(prefix):
                if "/" not in info.name[len(prefix):] or info.name[len(prefix):].startswith(
                        DATA_DIR + "/"):
                    with contextlib.suppress(TidemarkError):
                        storage.delete(info.name)
        if ours:
            if d.backup_type == "incremental":
                with contextlib.suppress(TidemarkError):
                    destination.release_lock(storage, d.full_subdir, self.job_id,
                                             name=manifest.CHAIN_LOCK)
            destination.release_lock(storage, d.layer_dir, self.job_id)

    # -- failure -------------------------------------------------------------------------

    def on_fail_or_cancel(self, ctx: JobContext, error: TidemarkError | None) -> None:
        node, d = ctx.node, self.details
        secrets_raw = node.engine.get_secret(d.secret_ref)
        if secrets_raw is None:
            return
        secrets = msgspec.msgpack.decode(secrets_raw, type=Secrets)
        try:
            storage = open_storage(secrets.uri, storage_context(node))
        except TidemarkError:
            return
        try:
            self._cleanup(node, storage, ctx.checkpoint, keep_files=False)
        finally:
            storage.close()

    def _protect(self, node: Node, ts: int, spans: list[Span]) -> None:
        d = self.details
        try:
            node.engine.protect(ts, spans, owner=self.owner)
        except ProtectionError:
            raise SQLError(
                f"cannot back up {d.collection}: the history since "
                f"{'the previous backup' if d.backup_type == 'incremental' else 'the end time'}"
                " was already removed by GC", code="XXC01",
                hint="take a new full backup (BACKUP ... INTO the collection), or raise "
                "gc.ttlseconds above the time between backups") from None


def _join(dir: str, name: str) -> str:
    d = dir.strip("/")
    return f"{d}/{name}" if d else name


register_resumer(BACKUP, BackupResumer)
