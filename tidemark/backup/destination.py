"""The layout of a backup collection: full-backup folders, the incremental chain, LATEST, locks.

A collection (``BACKUP ... INTO '<collection>'``) is laid out as CockroachDB lays it out, with
incrementals in its *parallel tree* (its default since 22.1)::

    LATEST                                         the subdir of the newest full backup
    2026/11/21-093000.00/                          one folder per full backup ("subdir"),
        BACKUP_MANIFEST, BACKUP_MANIFEST-CHECKSUM    named from its end time in UTC
        BACKUP-CHECKPOINT, BACKUP-LOCK-<job id>, data files ...
    incrementals/2026/11/21-093000.00/             the incrementals of that full backup,
        20261121/093500.00/                          one folder each, named from its end time
            BACKUP_MANIFEST, ...

The parallel tree keeps the full-backup folders free of incrementals, so listing full backups
and moving or expiring incrementals separately stay simple. Layer folders are written with a
leading ``/`` (``/2026/11/21-093000.00``), as users see them in ``SHOW BACKUPS``.

Folder names carry the end time to hundredths of a second, so two layers ending within the
same 10 ms would share a name: a writer refuses a folder that already holds a manifest
(``manifest.has_manifest``) and holds the folder's lock while writing.

Ordering contract of a backup writer: lock the layer's folder (``acquire_lock``), write data
files, then the manifest (``manifest.write_manifest``, manifest last), then — for a full
backup only — move the pointer (``write_latest``), then ``release_lock``. LATEST therefore
only ever names a full backup whose manifest is durable; a crash between the manifest and
LATEST leaves LATEST at the previous full backup, an older but complete chain.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from tidemark.backup.manifest import LATEST, LOCK, MANIFEST, NotABackupError, has_manifest
from tidemark.cloud import CloudError, FileNotFound, parse_uri
from tidemark.cloud.storage import ExternalStorage, FileInfo
from tidemark.errors import TidemarkError

__all__ = [
    "INCREMENTALS",
    "BackupLockedError",
    "CollectionError",
    "NotACollectionError",
    "acquire_lock",
    "chain",
    "check_collection",
    "explain_no_latest",
    "in_use",
    "incrementals_dir",
    "list_full_backups",
    "new_full_subdir",
    "new_incremental_dir",
    "read_latest",
    "refuse_file",
    "release_lock",
    "write_latest",
]

INCREMENTALS = "incrementals"  # root of the parallel tree of incremental backups

_FULL_FORMAT = "/%Y/%m/%d-%H%M%S"  # + ".<hundredths>", CockroachDB's "/2006/01/02-150405.00"
_INC_FORMAT = "%Y%m%d/%H%M%S"  # + ".<hundredths>", CockroachDB's "/20060102/150405.00"
_SUBDIR = r"\d{4}/\d{2}/\d{2}-\d{6}\.\d{2}"
_INC = r"\d{8}/\d{6}\.\d{2}"
_SUBDIR_RE = re.compile(rf"/{_SUBDIR}")
_FULL_MANIFEST_RE = re.compile(rf"({_SUBDIR})/{MANIFEST}")
_INC_MANIFEST_RE = re.compile(rf"({_INC})/{MANIFEST}")
# A file belongs to the collection when it is LATEST, under a full-backup folder, or under
# an incremental folder of the parallel tree.
_COLLECTION_FILE_RE = re.compile(rf"{LATEST}|{_SUBDIR}/.+|{INCREMENTALS}/{_SUBDIR}/{_INC}/.+")
_JOB_ID_RE = re.compile(r"[A-Za-z0-9_.-]+")


class CollectionError(TidemarkError):
    """A backup collection cannot be used as asked."""

    code = "58030"  # io_error


class NotACollectionError(CollectionError):
    """The destination holds files that are not a backup collection's."""

    code = "42P04"  # duplicate_database: the target is taken by something else


class BackupLockedError(CollectionError):
    """Another backup job holds the folder's lock."""

    code = "55006"  # object_in_use

    def __init__(self, message: str, *, holders: list[str], hint: str | None = None):
        super().__init__(message, hint=hint)
        self.holders = holders


def _rel(dir: str) -> str:
    return dir.strip("/")


def _join(dir: str, name: str) -> str:
    d = _rel(dir)
    return f"{d}/{name}" if d else name


def _utc(end_time: int) -> tuple[datetime, int]:
    if end_time < 0:
        raise ValueError(f"end time {end_time} is negative")
    return datetime.fromtimestamp(end_time // 10**9, tz=UTC), (end_time // 10**7) % 100


# -- names ---------------------------------------------------------------------------------


def new_full_subdir(end_time: int) -> str:
    """The folder of a full backup ending at ``end_time`` (ns): ``/2026/11/21-093000.00``."""
    dt, hundredths = _utc(end_time)
    return f"{dt.strftime(_FULL_FORMAT)}.{hundredths:02d}"


def incrementals_dir(subdir: str) -> str:
    """The folder holding the incrementals of the full backup ``subdir``."""
    _check_subdir(subdir)
    return f"/{INCREMENTALS}/{_rel(subdir)}"


def new_incremental_dir(subdir: str, end_time: int) -> str:
    """The folder of an incremental of ``subdir`` ending at ``end_time`` (ns)."""
    dt, hundredths = _utc(end_time)
    return f"{incrementals_dir(subdir)}/{dt.strftime(_INC_FORMAT)}.{hundredths:02d}"


def _check_subdir(subdir: str) -> None:
    if not _SUBDIR_RE.fullmatch("/" + _rel(subdir)):
        raise CollectionError(
            f"{subdir!r} is not a full backup folder of a collection",
            hint="full backup folders look like /2026/11/21-093000.00 (see SHOW BACKUPS IN)",
        )


# -- LATEST --------------------------------------------------------------------------------


def read_latest(storage: ExternalStorage) -> str | None:
    """The subdir LATEST points to, or None when the collection has no LATEST yet."""
    try:
        data = storage.read(LATEST)
    except FileNotFound:
        return None
    except CloudError:
        refuse_file(storage)  # reading under a file fails otherwise ("Not a directory")
        raise
    try:
        subdir = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        subdir = repr(data[:40])
    if not _SUBDIR_RE.fullmatch(subdir):
        raise CollectionError(
            f"{storage.uri}: {LATEST} does not name a full backup folder: {subdir[:80]!r}",
            hint="rewrite it with the newest folder listed by SHOW BACKUPS IN",
        )
    return subdir


def write_latest(storage: ExternalStorage, subdir: str) -> None:
    """Point LATEST at ``subdir``. Call only once that full backup's manifest is written."""
    _check_subdir(subdir)
    storage.write(LATEST, ("/" + _rel(subdir)).encode("utf-8"))


# -- listing -------------------------------------------------------------------------------


def list_full_backups(storage: ExternalStorage, listing: list[FileInfo] | None = None
                      ) -> list[str]:
    """The subdirs of the collection's completed full backups (with a manifest), oldest first.

    ``listing``: the collection's files, when the caller has listed them already."""
    found = []
    for info in storage.list() if listing is None else listing:
        m = _FULL_MANIFEST_RE.fullmatch(info.name)
        if m:
            found.append("/" + m.group(1))
    return sorted(found)


def chain(storage: ExternalStorage, subdir: str) -> list[str]:
    """The layer folders to restore the full backup ``subdir`` and its incrementals, in order.

    The full backup first, then its incrementals by end time (their folder names sort so).
    Incremental folders without a manifest (a backup that never completed) are skipped.
    Raises ``NotABackupError`` when ``subdir`` holds no completed full backup.
    """
    _check_subdir(subdir)
    full = "/" + _rel(subdir)
    try:
        found = has_manifest(storage, full)
    except CloudError:
        refuse_file(storage)
        raise
    if not found:
        refuse_file(storage)
        raise NotABackupError(
            f"{storage.uri}{full}: not a backup (no manifest {MANIFEST})",
            hint="list the completed backups with SHOW BACKUPS IN",
        )
    inc_root = incrementals_dir(full)
    layers = []
    for info in storage.list(_rel(inc_root) + "/"):
        m = _INC_MANIFEST_RE.fullmatch(info.name[len(_rel(inc_root)) + 1 :])
        if m:
            layers.append(f"{inc_root}/{m.group(1)}")
    return [full, *sorted(layers)]


def in_use(storage: ExternalStorage, dir: str) -> bool:
    """Whether any file lies under the folder ``dir``: a completed backup, or a job (running,
    paused or failed without cleanup) holding its lock or checkpoint there. A new backup
    must pick a folder nobody uses, or it would be refused the lock halfway through."""
    return bool(storage.list(_rel(dir) + "/"))


# -- locks ---------------------------------------------------------------------------------


def _lock_name(dir: str, job_id: str, name: str = LOCK) -> str:
    return _join(dir, f"{name}-{job_id}")


def _lock_holders(storage: ExternalStorage, dir: str, name: str = LOCK) -> list[str]:
    prefix = _join(dir, f"{name}-")
    return [i.name[len(prefix) :] for i in storage.list(prefix) if "/" not in i.name[len(prefix) :]]


def acquire_lock(storage: ExternalStorage, dir: str, job_id: int | str, *,
                 name: str = LOCK) -> None:
    """Take the writer's lock on the layer folder ``dir`` for ``job_id`` (with ``name``
    ``CHAIN_LOCK``: the lock on appending to the chain of the full backup ``dir``).

    Object stores cannot create a file only if absent, so each writer writes its own
    ``BACKUP-LOCK-<job id>`` (CockroachDB's scheme), then lists the lock files: if another
    job's is there, it removes its own and fails. Of two racing writers at least one sees the
    other (list-after-write is consistent on every backend), so at most one proceeds.
    Idempotent for the same job (a resumed job takes its lock again).
    """
    job = str(job_id)
    if not _JOB_ID_RE.fullmatch(job):
        raise CollectionError(f"invalid job id for a backup lock: {job!r}")

    def refuse(others: list[str]) -> BackupLockedError:
        return BackupLockedError(
            f"{storage.uri}/{_rel(dir)}: another backup is writing here "
            f"(job {', '.join(others)} holds {name})",
            holders=others,
            hint=f"wait for that job to finish; if it no longer exists, delete "
            f"{_lock_name(dir, others[0], name)} from the collection",
        )

    others = [h for h in _lock_holders(storage, dir, name) if h != job]
    if others:
        raise refuse(others)
    storage.write(_lock_name(dir, job, name), job.encode("ascii"))
    others = [h for h in _lock_holders(storage, dir, name) if h != job]
    if others:
        storage.delete(_lock_name(dir, job, name))
        raise refuse(others)


def release_lock(storage: ExternalStorage, dir: str, job_id: int | str, *,
                 name: str = LOCK) -> None:
    """Drop ``job_id``'s lock on ``dir``; releasing a lock not held does nothing."""
    storage.delete(_lock_name(dir, str(job_id), name))


# -- checks --------------------------------------------------------------------------------


def refuse_file(storage: ExternalStorage) -> None:
    """Refuse a collection URI that names a file: a collection is a folder.

    One ``stat`` of the root: callers use it before listing a folder they do not know is a
    collection, and on the error paths of reads that a file in the way makes fail."""
    try:
        storage.stat("")
    except CloudError:  # nothing there yet (FileNotFound), or a folder
        return
    hint = ("a backup collection is a folder (holding LATEST and a folder per full "
            "backup): name the folder, not a file")
    try:
        parent, name = parse_uri(storage.uri).split()
        hint += f"; this file is {name!r} in {parent.redacted}"
    except TidemarkError:  # pragma: no cover - a storage's URI parses
        pass
    raise NotACollectionError(
        f"{storage.uri}: is a file, not a backup collection folder", hint=hint)


def explain_no_latest(storage: ExternalStorage) -> None:
    """Before saying a collection has no ``LATEST``: refuse a URI naming a file, or the folder
    of one backup, saying so (an error path: a stat or two)."""
    refuse_file(storage)
    if has_manifest(storage, ""):
        raise _single_backup(storage)


def _single_backup(storage: ExternalStorage) -> NotACollectionError:
    return NotACollectionError(
        f"{storage.uri}: not a backup collection: it is the folder of one backup (it holds "
        f"{MANIFEST})",
        hint="this folder is a single backup, not a collection: name the collection above "
        "it (the folder holding LATEST); SHOW BACKUPS IN it lists its backups")


def check_collection(storage: ExternalStorage) -> list[FileInfo]:
    """Refuse a destination that is neither empty nor a backup collection; returns its files.

    A folder holding ``LATEST`` is a collection: files in it that are not the layout's are
    ignored (as CockroachDB ignores them) — they hurt no backup, and a stray file must not
    make a collection unusable. A folder without ``LATEST`` (new, or whose first backup has
    not completed) may hold only the layout's files — ``LATEST``, files under a full-backup
    folder or an incremental folder — otherwise ``NotACollectionError`` names a few of the
    strangers. A URI that names a file is refused too.

    BACKUP reads ``LATEST`` first and calls this only when there is none: listing costs as
    much as the collection is big (on S3 a request per thousand files).
    """
    refuse_file(storage)
    files = storage.list()
    if any(i.name == LATEST for i in files):
        return files
    strangers = [i.name for i in files if not _COLLECTION_FILE_RE.fullmatch(i.name)]
    if not strangers:
        return files
    shown = ", ".join(strangers[:3]) + (
        f" and {len(strangers) - 3} more" if len(strangers) > 3 else ""
    )
    if MANIFEST in strangers:
        raise _single_backup(storage)
    raise NotACollectionError(
        f"{storage.uri}: not a backup collection: it has no {LATEST} and holds files a "
        f"collection does not ({shown})",
        hint=f"name an empty folder or an existing backup collection (a folder holding {LATEST})",
    )
