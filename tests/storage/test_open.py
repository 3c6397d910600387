"""Opening stores: new, existing, and paths that are not tidemark stores (left untouched)."""

from __future__ import annotations

import hashlib

import apsw
import pytest

from tidemark.errors import NotAStoreError, StoreVersionError
from tidemark.storage.sqlite import STORE_FILE, SQLiteEngine


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_store_is_created_and_reopened(tmp_path):
    path = tmp_path / "a" / "b"
    with SQLiteEngine(path) as eng:
        ts = eng.ingest([(b"k", b"v")])
        store_id = eng.store_id()
    with SQLiteEngine(path) as eng:
        assert eng.store_id() == store_id
        assert eng.get(b"k", eng.frontier()) == b"v"
        assert eng.frontier() >= ts


def test_arbitrary_file_is_refused_and_untouched(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_bytes(b"hello, this is not a database\n" * 100)
    before = digest(f)
    with pytest.raises(NotAStoreError, match="is a file, not a tidemark store"):
        SQLiteEngine(f)
    assert digest(f) == before


def test_garbage_store_file_is_refused_and_untouched(tmp_path):
    d = tmp_path / "store"
    d.mkdir()
    f = d / STORE_FILE
    f.write_bytes(b"\x01garbage" * 1000)
    before = digest(f)
    with pytest.raises(NotAStoreError, match="not a SQLite database"):
        SQLiteEngine(d)
    assert digest(f) == before
    assert sorted(p.name for p in d.iterdir()) == [STORE_FILE]


def test_sqlite_file_of_another_application_is_refused_and_untouched(tmp_path):
    d = tmp_path / "store"
    d.mkdir()
    f = d / STORE_FILE
    conn = apsw.Connection(str(f))
    conn.execute("CREATE TABLE contacts(name TEXT, phone TEXT); "
                 "INSERT INTO contacts VALUES ('ada', '123')")
    conn.close()
    before = digest(f)
    with pytest.raises(NotAStoreError, match="another application"):
        SQLiteEngine(d)
    assert digest(f) == before
    assert sorted(p.name for p in d.iterdir()) == [STORE_FILE]  # no -wal, no -shm


def test_non_empty_directory_is_refused(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(NotAStoreError, match="holds other files"):
        SQLiteEngine(tmp_path / "photos")
    assert [p.name for p in (tmp_path / "photos").iterdir()] == ["cat.jpg"]


def test_missing_store_without_create(tmp_path):
    with pytest.raises(NotAStoreError, match="holds no tidemark store"):
        SQLiteEngine(tmp_path / "nothing", create=False)


def test_newer_storage_schema_is_refused(tmp_path):
    path = tmp_path / "s"
    SQLiteEngine(path).close()
    conn = apsw.Connection(str(path / STORE_FILE))
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreVersionError, match="schema version 99"):
        SQLiteEngine(path)


def test_store_settings_are_wal_with_normal_sync(engine):
    conn = engine._conn()
    assert conn.execute("PRAGMA journal_mode").fetchall()[0][0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchall()[0][0] == 1  # NORMAL
    assert conn.execute("PRAGMA cache_size").fetchall()[0][0] < -1000  # KiB, a real cache
