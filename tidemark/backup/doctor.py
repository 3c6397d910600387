"""The backup doctor: find what would make a restore from a collection fail or lose data.

``diagnose`` checks every chain (a full backup and its incrementals) of a collection, or one
(``subdir``), and returns a ``Report``; ``repair`` appends to a chain the incremental that
re-exports from time zero what the checks flagged. ``tidemark backup doctor``
(``tidemark.cli.backup``) only formats what these return.

Passes, each a set of named checks (the ``check`` of a ``Problem``):

structural (manifests, plus the data files unless ``files=False``)
    ``structural.manifest``  every layer's manifest is present, matches its checksum sidecar,
                             decrypts with the passphrase and decodes;
    ``structural.format``    its format version is one this binary reads (an older one is a
                             note), and its writer's cluster version is not newer than ours;
    ``structural.chain``     layer 0 is a full backup and the rest incrementals, with the
                             full backup's targets and encryption; folders of the chain that
                             hold files but no manifest;
    ``structural.times``     the full backup starts at 0, each layer starts where the one
                             before it ends (otherwise a layer is missing: a gap);
    ``structural.files``     every data file exists with the size and SHA-256 its manifest
                             records (``verify.check_files``; reads every file);
    ``structural.coverage``  every span of layer k is continuous from time zero:
                             ``chain.base_layer(layers[:k+1], span)`` is not None and the span
                             is in every layer from that base to k (RESTORE refuses otherwise).

semantic (manifests only; DESIGN.md "Backup")
    ``semantic.reintroduce`` for consecutive layers k-1, k: an index of a PUBLIC table that
                             is PUBLIC in k while in k-1 its table was OFFLINE (importing or
                             restoring) or the index was DELETE_ONLY, WRITE_ONLY or absent (the
                             table present), must be in k's ``introduced_spans``; otherwise
                             entries written (MVCC timestamp) before k-1's end that arrived
                             after it (backfill, import, restore ingestion) are in no layer;
    ``semantic.not_public``  (warning) a layer exported the span of an index that was not
                             PUBLIC, or of a table being restored: what the unsafe testing
                             mode does; restores never show such an index, but it is a sign
                             the layers were planned without the schema-state rules;
    ``semantic.import_cap``  every file of a table importing at a layer's end was read just
                             below the import's timestamp (its manifest's ``read_at``), so the
                             layer holds the table as it was before the import; a file read
                             later holds part of the import, and RESTORE refuses that layer
                             (manifests from before ``read_at`` was recorded: a note).

deep (``deep=True``; restores, so costs about one restore of the chain per layer)
    for each layer's end time, RESTORE every database of the chain up to that layer into a
    scratch store, then
    ``deep.restore``         the RESTORE succeeded;
    ``deep.rebuild``         RESTORE had to rebuild an index (its revalidation found it did
                             not match its table): the chain did not hold that index whole;
    ``deep.index``           every secondary index equals what its table's primary index
                             derives (missing, extra and different entries, per index);
    ``deep.fingerprint``     SHOW FINGERPRINTS of each restored table equals the manifest's
                             ``fingerprints`` for that layer (skipped, with a note, where the
                             manifest has none).

A finding of ``structural.coverage`` or ``semantic.reintroduce`` that a later layer of the
chain fixed (it re-exported the span from time zero, as ``repair`` does) is a warning: restores
to times from that layer on are whole; restores to earlier times are not. Deep findings on the
same index inside such a window are warnings too.

Severities: ``error`` (the chain can lose data or cannot be restored), ``warning`` (worth
knowing; the chain is usable). ``Report.healthy``: no error in any chain. Notes (``Note``)
record what was skipped and why; they are never problems.

Collection URIs: ``nodelocal://self/...`` names a store's ``external/`` folder, so reading such
a collection needs that store (``store=``); the deep pass hands its scratch store the same
collection as the equivalent ``file://`` URI. ``memory://`` collections are visible only inside
the process that wrote them. Errors that mean the collection cannot be read at all (a bad URI,
not a collection, no backups, no such subdir, a wrong or missing passphrase, unreachable
storage) raise ``DoctorError``.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from tidemark.backup import destination, manifest
from tidemark.backup.chain import Chain, Layer, base_layer
from tidemark.backup.manifest import (
    LATEST,
    LOCK,
    MANIFEST,
    MANIFEST_FORMAT_VERSION,
    CorruptManifestError,
    Manifest,
    ManifestVersionError,
    NotABackupError,
    Span,
)
from tidemark.backup.plan import IMPORTING, SETTINGS_SPAN
from tidemark.backup.verify import check_files
from tidemark.catalog.descriptors import (
    DatabaseDescriptor,
    DescState,
    Index,
    IndexState,
    TableDescriptor,
    decode_descriptor,
)
from tidemark.clock import format_ts
from tidemark.cloud import CloudError, StorageContext, open_storage, parse_uri, redact_uri
from tidemark.cloud.codec import (
    DataFileError,
    EncryptionRequiredError,
    NotEncryptedError,
    UnsupportedFormatError,
    WrongPassphraseError,
)
from tidemark.cloud.storage import ExternalStorage
from tidemark.cluster.versions import BINARY_VERSION, Version
from tidemark.errors import SettingError, TidemarkError
from tidemark.kv.keys import decode_index_prefix, index_span
from tidemark.storage.engine import scan_batches

__all__ = [
    "CHECKS",
    "JSON_SCHEMA_VERSION",
    "ChainReport",
    "CheckRun",
    "DoctorError",
    "LayerSummary",
    "Note",
    "Problem",
    "RepairResult",
    "Report",
    "diagnose",
    "repair",
    "repairable_spans",
]

Severity = Literal["error", "warning"]

# JSON output: bumped by any incompatible change to ``Report.to_json``'s shape.
JSON_SCHEMA_VERSION = 1

CHECKS = {
    "collection": "the collection: listing, LATEST, folders outside every chain",
    "structural.manifest": "manifest present, checksum valid, decrypts and decodes",
    "structural.format": "manifest format and writer's cluster version readable here",
    "structural.chain": "layer kinds, targets, encryption; folders without a manifest",
    "structural.times": "full starts at 0; each layer starts where the previous ended",
    "structural.files": "data files present with their recorded size and SHA-256",
    "structural.coverage": "each span continuous from time zero up to each layer",
    "semantic.reintroduce": "index/table back to PUBLIC re-exported from time zero",
    "semantic.not_public": "spans exported while their index or table was not PUBLIC",
    "semantic.import_cap": "tables importing at a layer's end read as before the import",
    "deep.restore": "RESTORE up to the layer's end time succeeds",
    "deep.rebuild": "RESTORE did not have to rebuild an index",
    "deep.index": "secondary indexes equal what the primary index derives",
    "deep.fingerprint": "SHOW FINGERPRINTS equals the manifest's fingerprints",
}

# What a repair re-exports: the reason recorded in its ``introduced_spans``.
_REPAIRABLE = ("structural.coverage", "semantic.reintroduce")
# Errors no incremental can fix: a repair refuses a chain that has one.
_UNREPAIRABLE = ("structural.manifest", "structural.format", "structural.chain",
                 "structural.times", "structural.files")

_SUBDIR = r"\d{4}/\d{2}/\d{2}-\d{6}\.\d{2}"  # destination's layout (its module docstring)
_INC = r"\d{8}/\d{6}\.\d{2}"
_FULL_FILE_RE = re.compile(rf"({_SUBDIR})/(.+)")
_INC_FILE_RE = re.compile(rf"{destination.INCREMENTALS}/({_SUBDIR})/({_INC})/(.+)")
_REBUILT_RE = re.compile(r"rebuilt index ([^.]+)\.(.+)@(.+?): ")


class DoctorError(TidemarkError):
    """The collection cannot be read at all (the CLI's exit status 2)."""

    code = "58030"


# -- the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One finding. ``layer`` is the layer's folder (None: the chain or the collection);
    ``table`` is ``database.table``; ``span`` the key span concerned (what a repair
    re-exports) and ``reason`` why it needs re-exporting."""

    severity: Severity
    check: str
    layer: str | None
    message: str
    table: str | None = None
    index: str | None = None
    span: Span | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"severity": self.severity, "check": self.check, "layer": self.layer,
                "table": self.table, "index": self.index, "message": self.message,
                "span": None if self.span is None else
                {"start": self.span.start.hex(), "end": self.span.end.hex()}}


@dataclass(frozen=True)
class Note:
    """Something skipped or worth saying that is not a problem."""

    check: str
    layer: str | None
    message: str
    table: str | None = None
    index: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "layer": self.layer, "table": self.table,
                "index": self.index, "message": self.message}


@dataclass(frozen=True)
class CheckRun:
    """A check that ran on a layer (None: on the chain), and what it covered."""

    layer: str | None
    check: str
    details: str


@dataclass(frozen=True)
class LayerSummary:
    dir: str
    readable: bool
    backup_type: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    mvcc_filter: str | None = None
    format_version: int | None = None
    cluster_version: str | None = None
    files: int = 0
    bytes: int = 0
    spans: int = 0
    introduced_spans: int = 0

    def to_json(self) -> dict[str, Any]:
        def ts(v: int | None) -> str | None:
            return None if v is None else format_ts(v)
        return {"dir": self.dir, "readable": self.readable, "backup_type": self.backup_type,
                "start_time": ts(self.start_time), "end_time": ts(self.end_time),
                "mvcc_filter": self.mvcc_filter, "format_version": self.format_version,
                "cluster_version": self.cluster_version, "files": self.files,
                "bytes": self.bytes, "spans": self.spans,
                "introduced_spans": self.introduced_spans}


@dataclass
class ChainReport:
    subdir: str
    layers: list[LayerSummary] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    checks: list[CheckRun] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {"subdir": self.subdir, "healthy": self.healthy,
                "layers": [layer.to_json() for layer in self.layers],
                "problems": [p.to_json() for p in self.problems],
                "notes": [n.to_json() for n in self.notes],
                "checks": [{"layer": c.layer, "check": c.check, "details": c.details,
                            "status": self.status(c.layer, c.check)} for c in self.checks]}

    def status(self, layer: str | None, check: str) -> str:
        """``error``, ``warning`` or ``ok``: the worst finding of ``check`` on ``layer``."""
        found = {p.severity for p in self.problems if p.layer == layer and p.check == check}
        return "error" if "error" in found else "warning" if found else "ok"


@dataclass
class RepairResult:
    subdir: str
    layer: str | None = None
    spans: list[Problem] = field(default_factory=list)  # the findings it re-exported
    job_id: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"subdir": self.subdir, "layer": self.layer, "job_id": self.job_id,
                "error": self.error,
                "reexported": [{"table": p.table, "index": p.index, "reason": p.reason}
                               for p in self.spans]}


@dataclass
class Report:
    """What ``diagnose`` found. JSON shape (``to_json``, schema version 1)::

        {"schema_version": 1, "collection": "<redacted URI>",
         "options": {"files": bool, "deep": bool, "subdir": str | null},
         "healthy": bool,                     # no problem of severity "error" anywhere
         "chains": [{"subdir": "/2026/11/21-093000.00", "healthy": bool,
                     "layers": [{"dir", "readable", "backup_type", "start_time",
                                 "end_time", "mvcc_filter", "format_version",
                                 "cluster_version", "files", "bytes", "spans",
                                 "introduced_spans"}],
                     "problems": [{"severity": "error" | "warning", "check", "layer",
                                   "table", "index", "message",
                                   "span": {"start": hex, "end": hex} | null}],
                     "notes": [{"check", "layer", "table", "index", "message"}],
                     "checks": [{"layer", "check", "status": "ok" | "warning" | "error",
                                 "details"}]}]}

    Times are strings in ``cluster_logical_timestamp()`` form (exact nanoseconds); ``layer``
    is a layer folder as SHOW BACKUPS shows it, null for the chain itself; ``table`` is
    ``database.table``. New keys may be added; existing ones keep their meaning.
    """

    collection: str
    chains: list[ChainReport] = field(default_factory=list)
    files: bool = True
    deep: bool = False
    subdir: str | None = None

    @property
    def healthy(self) -> bool:
        return all(c.healthy for c in self.chains)

    @property
    def problems(self) -> list[Problem]:
        return [p for c in self.chains for p in c.problems]

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": JSON_SCHEMA_VERSION, "collection": self.collection,
                "options": {"files": self.files, "deep": self.deep, "subdir": self.subdir},
                "healthy": self.healthy, "chains": [c.to_json() for c in self.chains]}


# -- helpers ------------------------------------------------------------------------------


def _when(ts: int) -> str:
    """A timestamp as users type it back (AS OF SYSTEM TIME), with its UTC time."""
    dt = datetime.fromtimestamp(ts // 10**9, tz=UTC)
    return f"{format_ts(ts)} ({dt:%Y-%m-%d %H:%M:%S}.{(ts // 10**6) % 1000:03d} UTC)"


def _index_span(table_id: int, index_id: int) -> Span:
    return Span(*index_span(table_id, index_id))


_SETTINGS = Span(*SETTINGS_SPAN)


class _Names:
    """Descriptors of one layer (as of its end time), decoded once; names for spans."""

    def __init__(self, m: Manifest, cache: dict[bytes, Any] | None = None):
        self.tables: dict[int, TableDescriptor] = {}
        self.dbs: dict[int, str] = {}
        cache = {} if cache is None else cache  # encoded -> decoded: layers share most
        for e in m.descriptors:
            d = cache.get(e.descriptor)
            if d is None:
                d = cache[e.descriptor] = decode_descriptor(e.descriptor)
            if isinstance(d, TableDescriptor):
                self.tables[d.id] = d
            elif isinstance(d, DatabaseDescriptor):
                self.dbs[d.id] = d.name

    def table_name(self, t: TableDescriptor) -> str:
        return f"{self.dbs.get(t.parent_id, '?')}.{t.name}"

    def of(self, span: Span) -> tuple[str | None, str | None, str]:
        """(table, index, how to name it in a sentence) for a span of this layer."""
        if span == _SETTINGS:
            return None, None, "the cluster settings"
        try:
            table_id, index_id = _span_ids(span.start)
        except Exception:  # a span that is not an index span: name its keys
            return None, None, f"the span {span.start.hex()}..{span.end.hex()}"
        t = self.tables.get(table_id)
        if t is None:
            return None, None, f"index {index_id} of table {table_id} (not in this layer)"
        index = _find_index(t, index_id)
        iname = index.name if index is not None else str(index_id)
        return self.table_name(t), iname, f'index "{iname}" of table "{self.table_name(t)}"'


@functools.lru_cache(maxsize=65536)
def _span_ids(start: bytes) -> tuple[int, int]:
    """(table ID, index ID) of an index span's start key (raises on other keys)."""
    table_id, index_id = decode_index_prefix(start)[:2]
    return table_id, index_id


def _files_outside(m: Manifest) -> list[str]:
    """Paths of the layer's files whose keys are not within one of its spans."""
    spans = sorted(m.spans, key=lambda s: s.start)
    starts = [s.start for s in spans]
    out = []
    for f in m.files:
        i = bisect.bisect_right(starts, f.span.start) - 1
        # Spans may nest (never in practice): fall back to a scan when the nearest misses.
        if not (i >= 0 and f.span.end <= spans[i].end) and not any(
                s.start <= f.span.start and f.span.end <= s.end for s in spans):
            out.append(f.path)
    return out


def _find_index(t: TableDescriptor, index_id: int) -> Index | None:
    if t.primary_index.id == index_id:
        return t.primary_index
    return next((i for i in t.indexes if i.id == index_id), None)


def _storage_context(store: str | Path | None) -> StorageContext:
    if store is None:
        return StorageContext()
    from tidemark.storage.sqlite import EXTERNAL_DIR

    return StorageContext(external_dir=Path(store).resolve() / EXTERNAL_DIR)


def _open(uri: str, store: str | Path | None) -> ExternalStorage:
    try:
        parsed = parse_uri(uri)
    except TidemarkError as exc:
        raise DoctorError(exc.message, hint=exc.hint) from None
    if parsed.scheme == "nodelocal" and store is None:
        raise DoctorError(
            f"{parsed.redacted}: a nodelocal:// collection lies in a store's external folder",
            hint="name that store with --store PATH, or give the collection as "
            "file:///<store>/external/<path>")
    try:
        return open_storage(parsed, _storage_context(store))
    except TidemarkError as exc:
        raise DoctorError(exc.message, hint=exc.hint) from None


def _file_uri(uri: str, store: str | Path | None) -> str:
    """The collection as another store reaches it: nodelocal:// becomes its file:// path."""
    parsed = parse_uri(uri)
    if parsed.scheme != "nodelocal":
        return uri
    base = _storage_context(store).external_dir
    assert base is not None
    return f"file://{(base / parsed.path.lstrip('/')).resolve()}"


def _normalize_subdir(storage: ExternalStorage, subdir: str) -> str:
    if subdir.strip().upper() == LATEST:
        latest = destination.read_latest(storage)
        if latest is None:
            raise DoctorError(f"{storage.uri}: the collection has no {LATEST}",
                              hint="name a full backup with --subdir (SHOW BACKUPS IN lists "
                              "them)")
        return latest
    s = "/" + subdir.strip().strip("/")
    if not re.fullmatch("/" + _SUBDIR, s):
        raise DoctorError(f"{subdir!r} is not a full backup folder of a collection",
                          hint="full backup folders look like /2026/11/21-093000.00 (SHOW "
                          "BACKUPS IN lists them), or LATEST")
    return s


@dataclass
class _Folders:
    """The collection's files by layer folder (one listing)."""

    full: dict[str, set[str]] = field(default_factory=dict)  # "/subdir" -> names in it
    inc: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # subdir -> dir -> names

    @classmethod
    def list(cls, storage: ExternalStorage) -> _Folders:
        out = cls()
        for info in storage.list():
            m = _FULL_FILE_RE.fullmatch(info.name)
            if m:
                out.full.setdefault("/" + m.group(1), set()).add(m.group(2))
                continue
            m = _INC_FILE_RE.fullmatch(info.name)
            if m:
                subdir = "/" + m.group(1)
                layer = f"/{destination.INCREMENTALS}{subdir}/{m.group(2)}"
                out.inc.setdefault(subdir, {}).setdefault(layer, set()).add(m.group(3))
        return out


def _in_progress(names: set[str]) -> bool:
    return any(n.startswith(LOCK + "-") and "/" not in n for n in names)


# -- diagnose -----------------------------------------------------------------------------


def diagnose(uri: str, *, passphrase: str | None = None, subdir: str | None = None,
             files: bool = True, deep: bool = False, store: str | Path | None = None
             ) -> Report:
    """Check the collection at ``uri``: every chain, or the one of full backup ``subdir``
    (``LATEST`` allowed). ``files=False`` skips reading data files; ``deep`` restores each
    layer into a scratch store. ``store`` is the store whose ``external/`` folder
    ``nodelocal://self/`` names. Raises ``DoctorError`` when the collection cannot be read."""
    storage = _open(uri, store)
    report = Report(collection=redact_uri(uri), files=files, deep=deep, subdir=subdir)
    try:
        try:
            destination.check_collection(storage)
            folders = _Folders.list(storage)
            wanted = None if subdir is None else _normalize_subdir(storage, subdir)
            latest = destination.read_latest(storage)
        except DoctorError:
            raise
        except TidemarkError as exc:
            raise DoctorError(exc.message, hint=exc.hint) from None
        subdirs = sorted(set(folders.full) | set(folders.inc))
        if wanted is not None:
            if wanted not in subdirs:
                raise DoctorError(f"{storage.uri}{wanted}: no such backup in the collection",
                                  hint="SHOW BACKUPS IN lists the full backups")
            subdirs = [wanted]
        if not subdirs:
            raise DoctorError(f"{storage.uri}: no backups found",
                              hint="is this the collection's URI? BACKUP ... INTO it first")
        key_errors: list[TidemarkError] = []
        for s in subdirs:
            chain = _ChainCheck(storage, s, folders, passphrase, files)
            try:
                chain.run()
                if deep and chain.layers:
                    _deep(chain, uri, store, passphrase)
            except (WrongPassphraseError, EncryptionRequiredError, NotEncryptedError) as exc:
                key_errors.append(exc)
                chain.problem("error", "structural.manifest", s, exc.message)
            except CloudError as exc:
                raise DoctorError(exc.message, hint=exc.hint) from None
            if latest == s:
                chain.report.notes.append(Note("collection", None, f"{LATEST} names this "
                                               "backup"))
            report.chains.append(chain.report)
        if key_errors and len(key_errors) == len(subdirs):
            exc = key_errors[0]
            # The codec's hints name the SQL option: the CLI's is --passphrase.
            raise DoctorError(exc.message, hint=(
                "give the passphrase the backup was taken with: --passphrase" if isinstance(
                    exc, (WrongPassphraseError, EncryptionRequiredError)) else
                "this backup is not encrypted: omit --passphrase"))
        if wanted is None and latest is not None and latest not in folders.full:
            report.chains.insert(0, ChainReport(latest, problems=[Problem(
                "error", "collection", None,
                f"{LATEST} names {latest}, which holds no backup: BACKUP INTO LATEST and "
                "RESTORE FROM LATEST fail")]))
    finally:
        storage.close()
    return report


class _ChainCheck:
    """The structural and semantic passes over one chain."""

    def __init__(self, storage: ExternalStorage, subdir: str, folders: _Folders,
                 passphrase: str | None, files: bool):
        self.storage, self.subdir, self.folders = storage, subdir, folders
        self.passphrase, self.files = passphrase, files
        self.report = ChainReport(subdir)
        self.layers: list[Layer] = []  # the readable ones, in chain order
        self.names: list[_Names] = []
        self.unreadable = False
        # (table id, index id) -> [(first layer, last layer)] of repaired findings.
        self.repaired: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._decoded: dict[bytes, Any] = {}

    def problem(self, severity: Severity, check: str, layer: str | None, message: str,
                **kw: Any) -> None:
        self.report.problems.append(Problem(severity, check, layer, message, **kw))

    def ran(self, layer: str | None, check: str, details: str) -> None:
        self.report.checks.append(CheckRun(layer, check, details))

    def run(self) -> None:
        if not self._read():
            return
        self._times()
        if self.files:
            self._files()
        if self.layers[0].dir != self.subdir:
            self.report.notes.append(Note(
                "structural.coverage", None, "chain, coverage and semantic checks skipped: "
                "they start from the full backup, whose manifest cannot be read"))
            return
        self._chain()
        self._coverage()
        self._semantic()

    # -- structural ----------------------------------------------------------------------

    def _read(self) -> bool:
        full = self.subdir
        incs = self.folders.inc.get(full, {})
        full_files = self.folders.full.get(full)
        if full_files is None or MANIFEST not in full_files:
            if full_files is not None and _in_progress(full_files):
                self.report.notes.append(Note("structural.chain", full, "a full backup is "
                                              "being written here (it holds a lock file)"))
                return False
            what = ("its folder is gone" if full_files is None else
                    "its folder holds files but no manifest")
            done = [d for d, names in incs.items() if MANIFEST in names]
            self.problem("error" if done else "warning", "structural.manifest", full,
                         f"full backup {full}: {what}" + (
                             f", yet {len(done)} incremental(s) were taken on it: none of "
                             "them can be restored" if done else
                             " (an incomplete backup, or one whose manifest was deleted)"))
            return False
        dirs = destination.chain(self.storage, full)
        with_manifest = set(dirs)
        for d in dirs:
            try:
                m = manifest.read_manifest(self.storage, d, self.passphrase)
            except ManifestVersionError as exc:
                self._unreadable(d, "structural.format", exc)
                continue
            except (CorruptManifestError, NotABackupError) as exc:
                self._unreadable(d, "structural.manifest", exc)
                continue
            except (WrongPassphraseError, EncryptionRequiredError, NotEncryptedError) as exc:
                if d == full:
                    raise
                self._unreadable(d, "structural.manifest", exc)
                continue
            except UnsupportedFormatError as exc:  # the codec's own framing is too new
                self._unreadable(d, "structural.format", exc)
                continue
            except DataFileError as exc:
                self._unreadable(d, "structural.manifest", exc)
                continue
            self.layers.append(Layer(d, m))
            self.names.append(_Names(m, self._decoded))
            self.report.layers.append(LayerSummary(
                d, True, m.backup_type, m.start_time, m.end_time, m.mvcc_filter,
                m.format_version, m.cluster_version, len(m.files),
                sum(f.size for f in m.files), len(m.spans), len(m.introduced_spans)))
            self.ran(d, "structural.manifest", "readable, checksum valid")
            self._format(d, m)
        # Incremental folders with files but no manifest: a backup that never completed, or
        # one whose manifest was deleted (then the times check finds the gap it leaves).
        for d, names in sorted(incs.items()):
            if d in with_manifest:
                continue
            if _in_progress(names):
                self.report.notes.append(Note("structural.chain", d, "an incremental backup "
                                              "is being written here (it holds a lock file)"))
                continue
            newer = [x for x in dirs if x > d]
            self.problem("warning", "structural.chain", d,
                         f"{d} holds {len(names)} file(s) but no manifest: an incremental that "
                         "never completed, or whose manifest was deleted" +
                         (f" (the chain continues after it with {len(newer)} layer(s))"
                          if newer else ""))
        return bool(self.layers)

    def _unreadable(self, d: str, check: str, exc: TidemarkError) -> None:
        self.unreadable = True
        self.report.layers.append(LayerSummary(d, False))
        hint = f" ({exc.hint})" if exc.hint else ""
        self.problem("error", check, d, f"{exc.message}{hint}; RESTORE from this chain fails "
                     "while any of its manifests cannot be read")

    def _format(self, d: str, m: Manifest) -> None:
        if m.format_version < MANIFEST_FORMAT_VERSION:
            self.report.notes.append(Note("structural.format", d, f"manifest format version "
                                          f"{m.format_version} (this binary writes "
                                          f"{MANIFEST_FORMAT_VERSION})"))
        try:
            written = Version.parse(m.cluster_version)
        except SettingError:
            self.problem("warning", "structural.format", d,
                         f"unparseable writer cluster version {m.cluster_version!r}")
            return
        if written > BINARY_VERSION:
            self.problem("warning", "structural.format", d,
                         f"written by a cluster at version {written}, newer than this binary "
                         f"({BINARY_VERSION}): restore it with a binary at least that new")
        self.ran(d, "structural.format", f"format {m.format_version}, cluster version "
                 f"{m.cluster_version}")

    def _chain(self) -> None:
        layers = self.layers
        full = layers[0].manifest
        if layers[0].dir != self.subdir:
            return  # the full backup itself was unreadable: reported already
        targets = (full.is_full_cluster, sorted(full.target_databases),
                   sorted(full.target_tables))
        prev_version: Version | None = None
        for k, layer in enumerate(layers):
            m, d = layer.manifest, layer.dir
            found = 0
            expected = "full" if k == 0 else "incremental"
            if m.backup_type != expected:
                found += 1
                self.problem("error", "structural.chain", d,
                             f"{d} is a {m.backup_type} backup where the chain needs {expected}")
            if k and (m.is_full_cluster, sorted(m.target_databases),
                      sorted(m.target_tables)) != targets:
                found += 1
                self.problem("error", "structural.chain", d,
                             f"{d} backs up other targets than its full backup {self.subdir}")
            if k and m.encryption != full.encryption:
                found += 1
                self.problem("error", "structural.chain", d,
                             f"{d} is {'not ' if m.encryption is None else ''}encrypted "
                             "differently from its full backup: RESTORE decrypts every layer "
                             "with the full backup's key")
            spans = set(m.spans)
            stray = [i for i in m.introduced_spans if i.span not in spans]
            if stray:
                found += 1
                self.problem("error", "structural.chain", d,
                             f"{d} lists {len(stray)} introduced span(s) that are not among its "
                             "spans: the manifest is inconsistent")
            outside = _files_outside(m)
            if outside:
                found += 1
                self.problem("error", "structural.chain", d,
                             f"{d}: {len(outside)} file(s) hold keys outside the layer's "
                             f"spans (e.g. {outside[0]}): RESTORE never reads them")
            with contextlib.suppress(SettingError):
                v = Version.parse(m.cluster_version)
                if prev_version is not None and v < prev_version:
                    self.problem("warning", "structural.chain", d,
                                 f"{d} was written at cluster version {v}, older than the "
                                 f"layer before it ({prev_version}): was it written by "
                                 "another cluster?")
                prev_version = v
            if not found:
                self.ran(d, "structural.chain", expected)

    def _times(self) -> None:
        layers = self.layers
        for k, layer in enumerate(layers):
            m, d = layer.manifest, layer.dir
            if k == 0:
                if layer.dir == self.subdir and m.start_time != 0:
                    self.problem("error", "structural.times", d,
                                 f"the full backup starts at {_when(m.start_time)}, not 0")
                else:
                    self.ran(d, "structural.times", f"(0, {format_ts(m.end_time)}]")
                continue
            prev = layers[k - 1]
            pe = prev.manifest.end_time
            if m.start_time == pe:
                self.ran(d, "structural.times",
                         f"({format_ts(m.start_time)}, {format_ts(m.end_time)}]")
            elif m.start_time > pe:
                self.problem("error", "structural.times", d,
                             f"{d} starts at {_when(m.start_time)} but the layer before it, "
                             f"{prev.dir}, ends at {_when(pe)}: nothing in the chain holds "
                             f"what changed in ({format_ts(pe)}, {format_ts(m.start_time)}] — "
                             "a layer is missing (its manifest deleted or unreadable), and "
                             f"restores to {format_ts(m.start_time)} or later lack those "
                             "changes")
            else:
                self.problem("error", "structural.times", d,
                             f"{d} starts at {_when(m.start_time)}, before the layer before "
                             f"it, {prev.dir}, ends ({_when(pe)}): the layers overlap")

    def _files(self) -> None:
        for layer in self.layers:
            found = check_files(self.storage, Chain(self.subdir, [layer]))
            for line in found:
                self.problem("error", "structural.files", layer.dir, line)
            if not found:
                m = layer.manifest
                self.ran(layer.dir, "structural.files",
                         f"{len(m.files)} file(s), {sum(f.size for f in m.files)} bytes")

    def _coverage(self) -> None:
        layers = self.layers
        covered: set[Span] = set()  # spans continuous from time zero up to layer k-1
        broken: set[Span] = set()  # spans reported, not re-exported from time zero since
        for k, layer in enumerate(layers):
            m = layer.manifest
            introduced = {i.span for i in m.introduced_spans}
            now: set[Span] = set()
            bad = 0
            for span in m.spans:
                if (k == 0 and layer.dir == self.subdir) or span in introduced or \
                        span in covered:
                    now.add(span)
                    continue
                bad += 1
                if span not in broken:  # a broken run gets one finding, at its first layer
                    self._coverage_problem(k, span)
            broken = (broken | set(m.spans)) - now
            covered = now
            if not bad:
                self.ran(layer.dir, "structural.coverage", f"{len(m.spans)} span(s)")

    def _coverage_problem(self, k: int, span: Span) -> None:
        layers = self.layers
        layer = layers[k]
        table, index, what = self.names[k].of(span)
        base = base_layer(layers[: k + 1], span)
        if base is None:
            why = f"no layer up to {layer.dir} exports it from time zero"
        else:
            gap = next(j for j in range(base, k) if span not in layers[j].manifest.spans)
            why = (f"it is exported from time zero by {layers[base].dir} but missing from "
                   f"{layers[gap].dir}, so nothing holds its changes in "
                   f"({format_ts(layers[gap].manifest.start_time)}, "
                   f"{format_ts(layers[gap].manifest.end_time)}]")
        fixed, last = self._fixed_by(k, span)
        msg = (f"{what} is in {layer.dir}, but {why}: RESTORE refuses it at times from "
               f"{format_ts(layer.manifest.start_time)} up to "
               f"{format_ts(layers[last].manifest.end_time)}")
        msg += self._fixed_text(fixed)
        self._note_repaired(fixed, k, last, span)
        self.problem("error" if fixed is None else "warning", "structural.coverage",
                     layer.dir, msg, table=table, index=index, span=span, reason="new")

    def _fixed_text(self, fixed: int | None) -> str:
        if fixed is None:
            return " (the end of this chain: no later layer re-exports it from time zero)"
        f = self.layers[fixed]
        return (f"; {f.dir} re-exports it from time zero, so restores at or after "
                f"{format_ts(f.manifest.end_time)} are whole")

    def _fixed_by(self, k: int, span: Span) -> tuple[int | None, int]:
        """The first layer after k that re-exports ``span`` from time zero (None), and the
        last layer whose restores the finding at k affects."""
        layers = self.layers
        for j in range(k + 1, len(layers)):
            if any(i.span == span for i in layers[j].manifest.introduced_spans):
                return j, j - 1
        return None, len(layers) - 1

    def _note_repaired(self, fixed: int | None, first: int, last: int, span: Span) -> None:
        if fixed is None or span == _SETTINGS:
            return
        with contextlib.suppress(Exception):
            table_id, index_id = _span_ids(span.start)
            self.repaired.setdefault((table_id, index_id), []).append((first, last))

    # -- semantic ------------------------------------------------------------------------

    def _semantic(self) -> None:
        layers = self.layers
        for k, layer in enumerate(layers):
            names = self.names[k]
            if not self._not_public(k, names):
                self.ran(layer.dir, "semantic.not_public",
                         f"{len(layer.manifest.spans)} span(s) of PUBLIC indexes")
            self._import_cap(k, names)
            if k == 0:
                continue
            found = 0
            prev = self.names[k - 1]
            introduced = {i.span for i in layer.manifest.introduced_spans}
            transitions = 0
            for t in names.tables.values():
                if t.state is not DescState.PUBLIC:
                    continue  # OFFLINE (importing, restoring) or dropped: not yet readable
                old = prev.tables.get(t.id)
                if old is None:
                    continue  # a new table: its spans are "new"; coverage checks those
                if old is t:
                    continue  # the same descriptor bytes (decoded once): nothing changed
                for index in t.public_indexes():
                    why = _why_reintroduce(old, t, index)
                    if why is None:
                        continue
                    transitions += 1
                    span = _index_span(t.id, index.id)
                    if span not in introduced:
                        found += 1
                        self._reintroduce_problem(k, names.table_name(t), t, index, why,
                                                  span)
            if not found:
                self.ran(layer.dir, "semantic.reintroduce",
                         f"{transitions} index(es) back to PUBLIC, re-exported" if
                         transitions else "no schema-state transitions")

    def _not_public(self, k: int, names: _Names) -> int:
        d = self.layers[k].dir
        found = 0
        for span in self.layers[k].manifest.spans:
            if span == _SETTINGS:
                continue
            try:
                table_id, index_id = _span_ids(span.start)
            except Exception:
                continue
            t = names.tables.get(table_id)
            if t is None:
                continue
            index = _find_index(t, index_id)
            tname = names.table_name(t)
            if t.state is DescState.OFFLINE and t.offline_reason != IMPORTING:
                why = f'its table "{tname}" was being restored (OFFLINE)'
            elif t.state is DescState.DROP:
                why = f'its table "{tname}" was being dropped'
            elif index is None or index.state is not IndexState.PUBLIC:
                why = "the index was " + (index.state.value if index else "not in the table")
            else:
                continue
            found += 1
            iname = index.name if index else str(index_id)
            self.problem("warning", "semantic.not_public", d,
                         f'{d} exported index "{iname}" of table "{tname}" while not PUBLIC '
                         f"({why} at {format_ts(self.layers[k].manifest.end_time)}): the "
                         "backup was planned without the schema-state rules (the unsafe "
                         "testing mode?)", table=tname, index=iname, span=span)
        return found

    def _import_cap(self, k: int, names: _Names) -> None:
        layer = self.layers[k]
        m, importing, checked = layer.manifest, {}, 0
        for t in names.tables.values():
            if t.state is DescState.OFFLINE and t.offline_reason == IMPORTING and t.import_ts:
                importing[t.id] = t
        for f in m.files:
            try:
                t = importing.get(_span_ids(f.span.start)[0])
            except Exception:
                continue
            if t is None:
                continue
            if f.read_at is None:
                self.report.notes.append(Note(
                    "semantic.import_cap", layer.dir, "skipped: the manifest does not record "
                    "when its files were read (written by an older binary)"))
                return
            checked += 1
            if f.read_at >= t.import_ts:
                tname = names.table_name(t)
                self.problem(
                    "error", "semantic.import_cap", layer.dir,
                    f'{layer.dir} holds {f.path} of table "{tname}", importing at its end, '
                    f"read at {format_ts(f.read_at)}, not below the import's timestamp "
                    f"{format_ts(t.import_ts)}: the file holds part of the import, and a "
                    "RESTORE of this layer refuses the table (the unsafe testing mode?)",
                    table=tname, span=f.span)
                return
        self.ran(layer.dir, "semantic.import_cap",
                 f"{checked} file(s) of importing tables read before their import" if checked
                 else "no table importing")

    def _reintroduce_problem(self, k: int, tname: str, t: TableDescriptor, index: Index,
                             why: tuple[str, str], span: Span) -> None:
        layers = self.layers
        layer, prev = layers[k], layers[k - 1]
        pe = prev.manifest.end_time
        fixed, last = self._fixed_by(k, span)
        what = "rows" if index.id == t.primary_index.id else "entries"
        msg = (f'index "{index.name}" of table "{tname}" is PUBLIC in {layer.dir} but '
               f"{why[1]} in the layer before it, {prev.dir}, and {layer.dir} does not "
               f"re-export it from time zero: {what} written before {_when(pe)} that arrived "
               f"after it may be missing from restores to times after {format_ts(pe)} up to "
               f"{format_ts(layers[last].manifest.end_time)}")
        msg += self._fixed_text(fixed)
        self._note_repaired(fixed, k, last, span)
        self.problem("error" if fixed is None else "warning", "semantic.reintroduce",
                     layer.dir, msg, table=tname, index=index.name, span=span, reason=why[0])


def _why_reintroduce(old: TableDescriptor, new: TableDescriptor, index: Index
                     ) -> tuple[str, str] | None:
    """(introduced reason, what it was) when ``index`` of ``new`` (a PUBLIC table) needs
    re-exporting from time zero after ``old`` (the previous layer's descriptor), else None."""
    if old.state is DescState.OFFLINE:
        return "offline", f"its table was OFFLINE ({old.offline_reason or 'offline'})"
    before = _find_index(old, index.id)
    if before is None:
        return "non_public_index", "the index did not exist"
    if before.state is not IndexState.PUBLIC:
        return "non_public_index", f"the index was {before.state.value}"
    return None


# -- deep ---------------------------------------------------------------------------------


def _deep(chain: _ChainCheck, uri: str, store: str | Path | None,
          passphrase: str | None) -> None:
    """Restore each layer's end time into a scratch store and check what came back."""
    import tidemark

    report = chain.report
    if chain.unreadable or chain.layers[0].dir != chain.subdir:
        report.notes.append(Note("deep.restore", None, "skipped: some manifest of the chain "
                                 "cannot be read, so RESTORE refuses the whole chain"))
        return
    source = _file_uri(uri, store)
    with tempfile.TemporaryDirectory(prefix="tidemark-doctor-") as scratch:
        conn = tidemark.connect(Path(scratch) / "store")
        try:
            for k in range(len(chain.layers)):
                _deep_layer(chain, conn, k, source, passphrase)
        finally:
            conn.close()


def _deep_layer(chain: _ChainCheck, conn: Any, k: int, source: str,
                passphrase: str | None) -> None:
    from tidemark.sql.format import quote_ident

    layer, names = chain.layers[k], chain.names[k]
    m, d = layer.manifest, layer.dir
    restored = 0
    for db_id, db_name in sorted(names.dbs.items()):
        tables = [t for t in names.tables.values() if t.parent_id == db_id]
        new_db = f"doctor_{k}_{db_id}"
        sql = (f"RESTORE DATABASE {quote_ident(db_name)} FROM $1 IN $2 AS OF SYSTEM TIME "
               f"{m.end_time} WITH new_db_name = '{new_db}'")
        params: list[Any] = [chain.subdir, source]
        if passphrase is not None:
            sql += ", encryption_passphrase = $3"
            params.append(passphrase)
        try:
            result = conn.execute(sql, params)
        except TidemarkError as exc:
            chain.problem("error", "deep.restore", d,
                          f'RESTORE DATABASE {db_name} to {format_ts(m.end_time)} failed: '
                          f"{exc.message}", table=None)
            continue
        restored += 1
        for notice in result.notices:
            mt = _REBUILT_RE.match(notice)
            tname = index = None
            if mt:
                tname, index = f"{db_name}.{mt.group(2)}", mt.group(3)
                notice = notice.replace(f"{mt.group(1)}.{mt.group(2)}", tname, 1)
            t = next((t for t in tables if t.name == (mt.group(2) if mt else None)), None)
            chain.problem(
                _deep_severity(chain, k, t, index), "deep.rebuild", d,
                f"RESTORE to {format_ts(m.end_time)}: {notice}: the layers up to {d} do not "
                "hold this index whole (RESTORE repaired its copy; the backup is not)",
                table=tname, index=index)
        for t in sorted(tables, key=lambda t: t.id):
            if t.state is DescState.DROP:
                continue
            if t.state is DescState.OFFLINE and t.offline_reason != IMPORTING:
                chain.report.notes.append(Note(
                    "deep.restore", d, "not restored: the table was being restored when the "
                    "backup was taken (it holds no data)", table=names.table_name(t)))
                continue
            _check_restored(chain, conn, k, new_db, t)
    if restored:
        chain.ran(d, "deep.restore", f"{restored} database(s) restored to "
                  f"{format_ts(m.end_time)}")


def _deep_severity(chain: _ChainCheck, k: int, t: TableDescriptor | None,
                   index: str | None) -> Severity:
    """A deep finding inside a window a later layer repaired is a warning."""
    if t is None:
        return "error"
    ids = [i.id for i in t.public_indexes() if index is None or i.name == index]
    for index_id in ids:
        for first, last in chain.repaired.get((t.id, index_id), []):
            if first <= k <= last:
                return "warning"
    return "error"


def _check_restored(chain: _ChainCheck, conn: Any, k: int, new_db: str,
                    old: TableDescriptor) -> None:
    from tidemark.catalog import catalog
    from tidemark.sql.format import quote_ident

    layer, names = chain.layers[k], chain.names[k]
    d, m = layer.dir, layer.manifest
    tname = names.table_name(old)

    def lookup(txn: Any) -> TableDescriptor | None:
        db = catalog.database_by_name(txn, new_db)
        return None if db is None else catalog.table_by_name(txn, db.id, old.name)

    table = conn.node.db.run(lookup)
    if table is None:
        chain.problem("error", "deep.restore", d, f'table "{tname}" is in the backup but '
                      "RESTORE did not bring it back", table=tname)
        return
    engine = conn.node.engine
    ts = engine.frontier()
    bad = 0
    for index in table.indexes:
        if index.state is not IndexState.PUBLIC:
            continue
        missing, extra, different = _compare_index(engine, table, index, ts)
        if missing or extra or different:
            bad += 1
            chain.problem(
                _deep_severity(chain, k, old, index.name), "deep.index", d,
                f'restored to {format_ts(m.end_time)}, index "{index.name}" of table '
                f'"{tname}" does not match its primary index: {missing} entr'
                f"{'y' if missing == 1 else 'ies'} missing, {extra} extra, {different} "
                "with another value", table=tname, index=index.name)
    if not bad:
        chain.ran(d, "deep.index", f'"{tname}": {len(table.indexes)} secondary index(es) '
                  "match the primary")
    # Fingerprints: the restored table against the manifest's, index by index.
    if old.state is not DescState.PUBLIC:
        chain.report.notes.append(Note("deep.fingerprint", d, "skipped: the table was "
                                       "OFFLINE (importing) at the layer's end time",
                                       table=tname))
        return
    expected = m.fingerprints.get(old.id)
    if not expected:
        chain.report.notes.append(Note("deep.fingerprint", d, "skipped: the manifest has no "
                                       "fingerprints for this table", table=tname))
        return
    rows = conn.execute(f"SHOW FINGERPRINTS FROM TABLE {quote_ident(new_db)}."
                        f"{quote_ident(old.name)}").rows
    ids = {i.name: i.id for i in table.public_indexes()}
    compared = 0
    for iname, fp in rows:
        want = expected.get(ids.get(iname, -1))
        if want is None:
            chain.report.notes.append(Note("deep.fingerprint", d, "skipped: the manifest has "
                                           "no fingerprint for this index", table=tname,
                                           index=iname))
            continue
        compared += 1
        if int(fp) != want:
            chain.problem(_deep_severity(chain, k, old, iname), "deep.fingerprint", d,
                          f'restored to {format_ts(m.end_time)}, index "{iname}" of table '
                          f'"{tname}" has fingerprint {fp}, but the source had {want} at that '
                          "time: the restore differs from what was backed up",
                          table=tname, index=iname)
    if compared:
        chain.ran(d, "deep.fingerprint", f'"{tname}": {compared} index fingerprint(s) compared')


def _compare_index(engine: Any, table: TableDescriptor, index: Index, ts: int
                   ) -> tuple[int, int, int]:
    """(missing, extra, different) entries of ``index`` against what the primary derives.

    Counts and fingerprints first, streamed; only an index that does not match is compared
    entry by entry (which holds the derived entries in memory)."""
    from tidemark.catalog.entries import entries_from_primary, index_matches_primary

    if index_matches_primary(engine, table, index, ts):
        return 0, 0, 0
    derive = entries_from_primary(table, index)
    expected: dict[bytes, bytes] = {}
    for batch in scan_batches(engine, *index_span(table.id, table.primary_index.id), ts):
        expected.update(derive(batch))
    extra = different = 0
    for batch in scan_batches(engine, *index_span(table.id, index.id), ts):
        for key, value in batch:
            want = expected.pop(key, None)
            if want is None:
                extra += 1
            elif want != value:
                different += 1
    return len(expected), extra, different


# -- repair -------------------------------------------------------------------------------


def repairable_spans(chain: ChainReport) -> list[Problem]:
    """The unrepaired findings an incremental re-exporting their spans fixes, one per span."""
    seen: set[Span] = set()
    out = []
    for p in chain.problems:
        if p.severity == "error" and p.check in _REPAIRABLE and p.span is not None and \
                p.span not in seen:
            seen.add(p.span)
            out.append(p)
    return out


def _blockers(chain: ChainReport) -> list[Problem]:
    return [p for p in chain.problems if p.severity == "error" and p.check in _UNREPAIRABLE]


def repair(uri: str, report: Report, *, store: str | Path, passphrase: str | None = None
           ) -> list[RepairResult]:
    """For each chain of ``report`` with repairable findings, take (on the source store
    ``store``) an incremental backup that re-exports every flagged span from time zero.

    The backup is ``BACKUP <the full backup's targets> INTO '<subdir>' IN '<collection>'``
    with ``reintroduce`` (``sql.backup_stmt.run_backup``): its planner records those spans as
    introduced (reason ``repair``). Spans whose index no longer exists are left out by the
    planner (nothing of them is left to restore). A chain with errors no incremental can fix
    (unreadable manifests, missing layers, corrupt files) is refused: take a new full backup.
    So is a store running the unsafe testing mode, whose planner ignores ``reintroduce``.
    """
    import tidemark
    from tidemark.backup.plan import UNSAFE_SETTING

    todo = [c for c in report.chains if repairable_spans(c)]
    results: list[RepairResult] = []
    if not todo:
        return results
    try:
        conn = tidemark.connect(store)
    except TidemarkError as exc:
        raise DoctorError(exc.message, hint=exc.hint) from None
    try:
        if conn.node.settings.get(UNSAFE_SETTING.name):
            raise DoctorError(
                f"{store}: {UNSAFE_SETTING.name} is on: its backups ignore the spans to "
                "re-export (and lose data again)",
                hint=f"SET CLUSTER SETTING {UNSAFE_SETTING.name} = false, then repair")
        for c in todo:
            result = RepairResult(c.subdir, spans=repairable_spans(c))
            results.append(result)
            blockers = _blockers(c)
            if blockers:
                result.error = (f"an incremental cannot fix {blockers[0].check} "
                                f"({blockers[0].message}); take a new full backup: BACKUP "
                                f"... INTO '{redact_uri(uri)}'")
                continue
            try:
                _repair_chain(conn, uri, store, passphrase, result)
            except TidemarkError as exc:
                result.error = exc.message + (f" ({exc.hint})" if exc.hint else "")
    finally:
        conn.close()
    return results


def _repair_chain(conn: Any, uri: str, store: str | Path, passphrase: str | None,
                  result: RepairResult) -> None:
    """Take the repairing incremental of one chain through the BACKUP statement's planner."""
    from tidemark.sql.backup_stmt import run_backup
    from tidemark.sql.format import quote_ident
    from tidemark.sql.parser import parse_one

    storage = _open(uri, store)
    try:
        layers = destination.chain(storage, result.subdir)
        full = manifest.read_manifest(storage, layers[0], passphrase)
        last = manifest.read_manifest(storage, layers[-1], passphrase)
    finally:
        storage.close()

    def qualified(name: str) -> str:
        return ".".join(quote_ident(part) for part in name.split(".", 1))

    if full.is_full_cluster:
        targets = ""
    elif full.target_tables:
        targets = "TABLE " + ", ".join(qualified(t) for t in full.target_tables) + " "
    else:
        targets = "DATABASE " + ", ".join(quote_ident(d) for d in full.target_databases) + " "
    params: list[Any] = [result.subdir]
    # The URI inline, so the job's description shows it redacted; a placeholder if quoting
    # it would defeat the redaction.
    if "'" in uri:
        params.append(uri)
        where = "$2"
    else:
        where = f"'{uri}'"
    options = []
    if last.mvcc_filter == "all":
        options.append("revision_history")
    if passphrase is not None:
        params.append(passphrase)
        options.append(f"encryption_passphrase = ${len(params)}")
    sql = f"BACKUP {targets}INTO $1 IN {where}"
    if options:
        sql += " WITH " + ", ".join(options)
    spans = [p.span for p in result.spans if p.span is not None]
    out = run_backup(conn.session, parse_one(sql), params, reintroduce=spans)  # type: ignore[arg-type]
    result.job_id = int(out.rows[0][0])
    storage = _open(uri, store)
    try:
        result.layer = destination.chain(storage, result.subdir)[-1]
    finally:
        storage.close()
