"""Collection layout: folder names, LATEST, listing, the incremental chain, locks, checks."""

from __future__ import annotations

import pytest

from tidemark.backup.destination import (
    BackupLockedError,
    CollectionError,
    NotACollectionError,
    acquire_lock,
    chain,
    check_collection,
    incrementals_dir,
    list_full_backups,
    new_full_subdir,
    new_incremental_dir,
    read_latest,
    release_lock,
    write_latest,
)
from tidemark.backup.manifest import (
    LATEST,
    MANIFEST,
    Manifest,
    NotABackupError,
    write_manifest,
)
from tidemark.cloud import StorageContext, open_storage, parse_uri

T0 = 1_795_253_400_000_000_000  # 2026-11-21 09:30:00 UTC
SEC = 10**9


def full(storage, end_time: int) -> str:
    subdir = new_full_subdir(end_time)
    write_manifest(
        storage,
        subdir,
        Manifest(cluster_version="1", backup_type="full", start_time=0, end_time=end_time),
    )
    return subdir


def incremental(storage, subdir: str, start: int, end: int, *, complete=True) -> str:
    d = new_incremental_dir(subdir, end)
    storage.write(d.lstrip("/") + "/data/1.sst", b"x")
    if complete:
        write_manifest(
            storage,
            d,
            Manifest(
                cluster_version="1", backup_type="incremental", start_time=start, end_time=end
            ),
        )
    return d


def test_folder_names():
    assert new_full_subdir(T0) == "/2026/11/21-093000.00"
    assert new_full_subdir(T0 + 1_239_999_999) == "/2026/11/21-093001.23"
    assert new_full_subdir(0) == "/1970/01/01-000000.00"
    assert incrementals_dir("/2026/11/21-093000.00") == "/incrementals/2026/11/21-093000.00"
    assert (
        new_incremental_dir("/2026/11/21-093000.00", T0 + 86_400 * SEC + 5 * 10**7)
        == "/incrementals/2026/11/21-093000.00/20261122/093000.05"
    )
    with pytest.raises(ValueError):
        new_full_subdir(-1)
    with pytest.raises(CollectionError, match="not a full backup folder"):
        incrementals_dir("/2026/11/21")


def test_latest_moves(storage):
    assert read_latest(storage) is None
    a = full(storage, T0)
    write_latest(storage, a)
    assert read_latest(storage) == a
    b = full(storage, T0 + 3600 * SEC)
    write_latest(storage, b.lstrip("/"))
    assert read_latest(storage) == b == "/2026/11/21-103000.00"
    with pytest.raises(CollectionError):
        write_latest(storage, "/elsewhere")


def test_corrupt_latest(storage):
    storage.write(LATEST, b"\xff\xfe../../etc")
    with pytest.raises(CollectionError, match="does not name a full backup folder"):
        read_latest(storage)


def test_list_full_backups_only_with_manifest(storage):
    assert list_full_backups(storage) == []
    b = full(storage, T0 + 60 * SEC)
    a = full(storage, T0)
    storage.write(new_full_subdir(T0 + 120 * SEC).lstrip("/") + "/data/1.sst", b"unfinished")
    incremental(storage, a, T0, T0 + 30 * SEC)
    assert list_full_backups(storage) == [a, b]


def test_chain_orders_incrementals_and_skips_unfinished(storage):
    a = full(storage, T0)
    other = full(storage, T0 + 10 * 86_400 * SEC)
    i3 = incremental(storage, a, T0 + 20 * SEC, T0 + 86_400 * SEC)  # next day: sorts last
    i1 = incremental(storage, a, T0, T0 + 10 * SEC)
    incremental(storage, a, T0 + 10 * SEC, T0 + 15 * SEC, complete=False)  # no manifest
    i2 = incremental(storage, a, T0 + 10 * SEC, T0 + 20 * SEC)
    incremental(storage, other, T0 + 10 * 86_400 * SEC, T0 + 11 * 86_400 * SEC)
    assert chain(storage, a) == [a, i1, i2, i3]
    assert len(chain(storage, other)) == 2
    assert chain(storage, full(storage, T0 + 99 * SEC)) == [new_full_subdir(T0 + 99 * SEC)]


def test_chain_of_a_missing_backup(storage):
    with pytest.raises(NotABackupError, match="not a backup"):
        chain(storage, new_full_subdir(T0))
    with pytest.raises(CollectionError):
        chain(storage, "/not/a/subdir")


def test_lock_contention(storage):
    d = new_full_subdir(T0)
    acquire_lock(storage, d, 101)
    acquire_lock(storage, d, 101)  # idempotent for the holder
    with pytest.raises(BackupLockedError, match="job 101") as err:
        acquire_lock(storage, d, "102")
    assert err.value.holders == ["101"]
    assert "BACKUP-LOCK-101" in err.value.hint
    acquire_lock(storage, new_full_subdir(T0 + SEC), 102)  # another folder is free
    release_lock(storage, d, 101)
    release_lock(storage, d, 101)  # releasing twice does nothing
    acquire_lock(storage, d, 102)
    assert [i.name for i in storage.list(d.lstrip("/"))] == ["2026/11/21-093000.00/BACKUP-LOCK-102"]


def test_lock_race_leaves_at_most_one_holder(storage):
    d = new_full_subdir(T0)
    # job 7 wrote its lock file but has not listed yet: job 8 must back off, and clean up
    storage.write(d.lstrip("/") + "/BACKUP-LOCK-7", b"7")
    with pytest.raises(BackupLockedError):
        acquire_lock(storage, d, 8)
    assert [i.name.rsplit("/", 1)[1] for i in storage.list(d.lstrip("/"))] == ["BACKUP-LOCK-7"]


def test_lock_race_after_own_write(storage):
    d = "/" + new_full_subdir(T0).lstrip("/")

    class Racing:
        """Another job's lock appears between this job's write and its check."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def write(self, name, data):
            n = self.inner.write(name, data)
            self.inner.write(d.lstrip("/") + "/BACKUP-LOCK-9", b"9")
            return n

    with pytest.raises(BackupLockedError, match="job 9"):
        acquire_lock(Racing(storage), d, 8)
    assert [i.name.rsplit("/", 1)[1] for i in storage.list(d.lstrip("/"))] == ["BACKUP-LOCK-9"]


def test_invalid_job_id(storage):
    with pytest.raises(CollectionError, match="invalid job id"):
        acquire_lock(storage, "d", "a/b")


def test_check_collection(storage):
    check_collection(storage)  # empty
    a = full(storage, T0)
    write_latest(storage, a)
    incremental(storage, a, T0, T0 + SEC)
    acquire_lock(storage, a, 1)
    check_collection(storage)
    storage.write("notes.txt", b"hello")
    # A folder with LATEST is a collection: a file of its own there is ignored.
    assert "notes.txt" in [i.name for i in check_collection(storage)]
    storage.delete(LATEST)
    with pytest.raises(NotACollectionError, match=r"not a backup collection.*notes\.txt"):
        check_collection(storage)


def test_check_collection_of_a_file(storage):
    storage.write("LATEST", b"/2026/11/21-093000.00")
    inner = open_storage(parse_uri(storage.uri).child("LATEST"), StorageContext())
    try:
        with pytest.raises(NotACollectionError, match="is a file, not a backup collection"):
            check_collection(inner)
        with pytest.raises(NotACollectionError, match="is a file"):
            chain(inner, "/2026/11/21-093000.00")
    finally:
        inner.close()


def test_check_collection_many_strangers(storage):
    for i in range(5):
        storage.write(f"x/{i}.csv", b"")
    with pytest.raises(NotACollectionError, match="and 2 more"):
        check_collection(storage)


def test_check_collection_on_a_single_backup(storage):
    write_manifest(
        storage, "", Manifest(cluster_version="1", backup_type="full", start_time=0, end_time=1)
    )
    with pytest.raises(NotACollectionError) as err:
        check_collection(storage)
    assert "single backup" in err.value.hint
    assert MANIFEST in str(err.value)
