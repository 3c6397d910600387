"""The backup manifest: what one backup layer holds, its file names, format version and checksum.

Encoding. A manifest is a ``Manifest`` msgspec Struct encoded as **msgpack** (a map keyed by
field name, so a reader can pick ``format_version`` out of any version's bytes before decoding
the rest). msgpack, not JSON, because the manifest carries raw bytes (span keys, opaque
descriptor bytes, the KDF salt) and integer-keyed maps (fingerprints) natively.

In a backup folder (``write_manifest``/``read_manifest``) the msgpack bytes go through
``tidemark.cloud.codec`` like every data file: zstd, then AES-256-GCM when the backup is
encrypted. The SHA-256 of the *stored* bytes is written, as 64 hex digits, to the sidecar
``BACKUP_MANIFEST-CHECKSUM``. Write order: the sidecar first, the manifest **last**: the
manifest is the commit point of a backup, and a folder without one holds no backup.

Versions. ``MANIFEST_FORMAT_VERSION`` is bumped by any change to the encoded form (a field
added, removed, renamed or re-typed). A reader refuses a newer version with an error naming
both versions, and reads every older version it has ever written: each old version gets an
entry in ``_OLDER_READERS`` (version -> function turning its msgpack bytes into a current
``Manifest``). Version 1 is the first, so that table is empty for now.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Literal

import msgspec

from tidemark.cloud import FileNotFound, codec
from tidemark.cloud.codec import CorruptFileError, EncryptionKey, KDFParams
from tidemark.cloud.storage import ExternalStorage
from tidemark.errors import TidemarkError

__all__ = [
    "CHECKPOINT",
    "LATEST",
    "LOCK",
    "MANIFEST",
    "MANIFEST_CHECKSUM",
    "MANIFEST_FORMAT_VERSION",
    "BackupFile",
    "CorruptManifestError",
    "DescriptorChange",
    "DescriptorEntry",
    "EncryptionInfo",
    "IntroducedSpan",
    "Manifest",
    "ManifestError",
    "ManifestVersionError",
    "NotABackupError",
    "Span",
    "checksum_of",
    "decode_manifest",
    "encode_manifest",
    "has_manifest",
    "read_manifest",
    "write_manifest",
]

MANIFEST_FORMAT_VERSION = 1

# -- file names (every name a backup writes; paths are relative to a layer's folder) -------
MANIFEST = "BACKUP_MANIFEST"  # the commit point, written last
MANIFEST_CHECKSUM = MANIFEST + "-CHECKSUM"  # hex SHA-256 of the stored manifest bytes
CHECKPOINT = "BACKUP-CHECKPOINT"  # progress of a running backup, for resume
LOCK = "BACKUP-LOCK"  # prefix: one ``BACKUP-LOCK-<job id>`` per writer (see destination)
# prefix, in a full backup's folder: held by an incremental while it joins that chain
CHAIN_LOCK = "BACKUP-CHAIN-LOCK"
LATEST = "LATEST"  # at the collection root: the subdir of the newest full backup

MvccFilter = Literal["latest", "all"]
BackupType = Literal["full", "incremental"]
# Why an incremental re-exports a span from time zero:
#   "new"              the span was not in the previous backup
#   "offline"          its table was OFFLINE (importing/restoring) in the previous backup
#   "non_public_index" its index was not PUBLIC in the previous backup
#   "repair"           `tidemark backup doctor --repair` asked for it (the chain was invalid)
IntroducedReason = Literal["new", "offline", "non_public_index", "repair"]


# -- errors --------------------------------------------------------------------------------


class ManifestError(TidemarkError):
    """A backup manifest cannot be read or written as asked."""

    code = "XX001"  # data_corrupted


class CorruptManifestError(ManifestError):
    """The manifest's bytes do not match its checksum or do not decode."""


class ManifestVersionError(ManifestError):
    """The manifest was written in a format this binary cannot read."""

    code = "0A000"  # feature_not_supported


class NotABackupError(ManifestError):
    """The folder has no manifest: no (completed) backup is there."""

    code = "58P01"  # undefined_file


# -- the manifest --------------------------------------------------------------------------


class Span(msgspec.Struct, frozen=True):
    """Keys ``start <= k < end``."""

    start: bytes
    end: bytes


class IntroducedSpan(msgspec.Struct, frozen=True):
    """A span an incremental exported from time zero, and why."""

    span: Span
    reason: IntroducedReason


class BackupFile(msgspec.Struct, frozen=True):
    """One data file of the layer: its span, path (relative to the layer), contents, hash."""

    span: Span
    path: str
    rows: int
    size: int  # bytes as stored (after compression and encryption)
    sha256: str  # hex SHA-256 of the stored bytes
    # The MVCC time it was read at: the layer's end, or just below an IMPORT's timestamp
    # for a table importing then. None in manifests written before it was recorded.
    read_at: int | None = None


class DescriptorEntry(msgspec.Struct, frozen=True):
    """A descriptor as of the layer's end time; ``descriptor`` is its opaque msgpack bytes."""

    id: int
    name: str
    parent_id: int
    state: str
    descriptor: bytes


class DescriptorChange(msgspec.Struct, frozen=True, array_like=True):
    """With revision history: descriptor ``id`` became ``descriptor`` at ``ts`` (None: gone)."""

    ts: int
    id: int
    descriptor: bytes | None


class EncryptionInfo(msgspec.Struct, frozen=True):
    """What turns the passphrase into the key: the backup's salt and scrypt parameters."""

    salt: bytes
    log2_n: int
    r: int
    p: int

    @property
    def kdf(self) -> KDFParams:
        return KDFParams(self.log2_n, self.r, self.p)

    @classmethod
    def from_key(cls, key: EncryptionKey) -> EncryptionInfo:
        return cls(key.salt, *key.kdf)


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    """One backup layer (a full backup or one incremental)."""

    format_version: int = MANIFEST_FORMAT_VERSION
    cluster_version: str  # the writer's active cluster version
    backup_type: BackupType
    start_time: int  # ns; 0 for a full backup, the previous layer's end time otherwise
    end_time: int  # ns
    mvcc_filter: MvccFilter = "latest"  # "all" with revision history
    # With revision history, the earliest time a restore may pick in this layer: its start
    # time, or for a full backup the GC threshold it read above (older history was gone).
    revision_start: int = 0
    is_full_cluster: bool = False
    # What was asked for, by name ("db", "db.table"); incrementals must ask for the same.
    target_databases: list[str] = msgspec.field(default_factory=list)
    target_tables: list[str] = msgspec.field(default_factory=list)
    job_id: int = 0
    spans: list[Span] = msgspec.field(default_factory=list)
    introduced_spans: list[IntroducedSpan] = msgspec.field(default_factory=list)
    files: list[BackupFile] = msgspec.field(default_factory=list)
    descriptors: list[DescriptorEntry] = msgspec.field(default_factory=list)
    descriptor_changes: list[DescriptorChange] = msgspec.field(default_factory=list)
    encryption: EncryptionInfo | None = None
    fingerprints: dict[int, dict[int, int]] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.start_time <= self.end_time:
            raise ValueError(
                f"start time {self.start_time} and end time {self.end_time} are not ordered"
            )
        if self.backup_type == "full" and self.start_time != 0:
            raise ValueError(f"a full backup starts at time 0, not {self.start_time}")


# -- encoding ------------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Manifest)


class _VersionProbe(msgspec.Struct):
    format_version: int


_probe = msgspec.msgpack.Decoder(_VersionProbe)

# Readers of older formats: version -> (msgpack bytes -> current Manifest). Add one entry
# each time MANIFEST_FORMAT_VERSION is bumped; never remove one.
_OLDER_READERS: dict[int, Callable[[bytes], Manifest]] = {}


def checksum_of(data: bytes) -> bytes:
    """The sidecar contents for ``data``: its SHA-256 as 64 ASCII hex digits."""
    return hashlib.sha256(data).hexdigest().encode("ascii")


def encode_manifest(m: Manifest) -> bytes:
    """The msgpack bytes of ``m`` (plain: not compressed, not encrypted)."""
    if m.format_version != MANIFEST_FORMAT_VERSION:
        raise ManifestError(
            f"cannot write manifest format version {m.format_version}: this binary writes "
            f"version {MANIFEST_FORMAT_VERSION}"
        )
    return _encoder.encode(m)


def _decode(data: bytes, where: str) -> Manifest:
    try:
        version = _probe.decode(data).format_version
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptManifestError(f"{where}corrupt backup manifest: {exc}") from None
    if version > MANIFEST_FORMAT_VERSION:
        raise ManifestVersionError(
            f"{where}backup manifest format version {version} is newer than this binary "
            f"reads (up to version {MANIFEST_FORMAT_VERSION})",
            hint="read this backup with a binary at least as new as the one that wrote it",
        )
    if version != MANIFEST_FORMAT_VERSION:
        reader = _OLDER_READERS.get(version)
        if reader is None:
            raise ManifestVersionError(
                f"{where}unknown backup manifest format version {version} "
                f"(this binary reads versions 1 to {MANIFEST_FORMAT_VERSION})"
            )
        return reader(data)
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptManifestError(f"{where}corrupt backup manifest: {exc}") from None


def decode_manifest(data: bytes, checksum: bytes) -> Manifest:
    """The manifest in ``data`` (msgpack), after checking ``checksum`` (``checksum_of(data)``).

    Raises ``CorruptManifestError`` on a checksum mismatch or undecodable bytes, and
    ``ManifestVersionError`` for a format newer than ``MANIFEST_FORMAT_VERSION``.
    """
    _verify(data, checksum, "")
    return _decode(data, "")


def _verify(data: bytes, checksum: bytes, where: str) -> None:
    if not hmac.compare_digest(checksum_of(data), checksum.strip()):
        raise CorruptManifestError(
            f"{where}corrupt backup manifest: checksum mismatch with {MANIFEST_CHECKSUM}",
            hint="the manifest or its checksum file was modified or truncated; "
            "restore from another backup",
        )


# -- in a backup folder --------------------------------------------------------------------


def _path(dir: str, name: str) -> str:
    d = dir.strip("/")
    return f"{d}/{name}" if d else name


def _location(storage: ExternalStorage, name: str) -> str:
    name = name.strip("/")
    return f"{storage.uri.rstrip('/')}/{name}" if name else storage.uri


def has_manifest(storage: ExternalStorage, dir: str) -> bool:
    """Whether ``dir`` holds a completed backup (its manifest exists)."""
    try:
        storage.stat(_path(dir, MANIFEST))
    except FileNotFound:
        return False
    return True


def write_manifest(
    storage: ExternalStorage, dir: str, manifest: Manifest, key: EncryptionKey | None = None
) -> None:
    """Write ``manifest`` into ``dir``: the checksum sidecar first, the manifest last.

    The manifest is stored through the codec (zstd; encrypted with ``key`` when given). Once
    this returns, the backup in ``dir`` exists; nothing may be written to ``dir`` after it.
    """
    stored = codec.encode(encode_manifest(manifest), key=key)
    storage.write(_path(dir, MANIFEST_CHECKSUM), checksum_of(stored))
    storage.write(_path(dir, MANIFEST), stored)


def read_manifest(
    storage: ExternalStorage, dir: str, key: EncryptionKey | str | None = None
) -> Manifest:
    """The manifest of the backup in ``dir``; ``key`` is the passphrase or derived key.

    Raises ``NotABackupError`` when ``dir`` has no manifest, ``CorruptManifestError`` when the
    sidecar is missing or does not match, or the bytes do not decode, and the codec's
    ``WrongPassphraseError``/``EncryptionRequiredError`` for key problems.
    """
    where = f"{_location(storage, dir)}: "
    try:
        stored = storage.read(_path(dir, MANIFEST))
    except FileNotFound:
        raise NotABackupError(
            f"{where}not a backup (no manifest {MANIFEST})",
            hint="the backup never completed, or the path does not name a backup",
        ) from None
    try:
        checksum = storage.read(_path(dir, MANIFEST_CHECKSUM))
    except FileNotFound:
        raise CorruptManifestError(
            f"{where}corrupt backup: {MANIFEST} has no checksum file {MANIFEST_CHECKSUM} "
            "(a backup writes it before its manifest: it was deleted or lost since)",
            hint="the backup is damaged: restore from another backup, and check the "
            "collection with `tidemark backup doctor '<collection>'`",
        ) from None
    _verify(stored, checksum, where)
    try:
        plain = codec.decode(stored, key=key, name=_location(storage, _path(dir, MANIFEST)))
    except CorruptFileError as exc:
        raise CorruptManifestError(exc.message, hint=exc.hint) from None
    return _decode(plain, where)
