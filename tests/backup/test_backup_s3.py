"""BACKUP and RESTORE through s3:// against a real S3-compatible server (moto, on loopback).

The credentials in the URI must never reach the job record, SHOW JOBS or error messages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import tidemark
from tidemark.errors import TidemarkError
from tidemark.storage.engine import KEY_MAX


def test_backup_incremental_restore_over_s3(tmp_path: Path, s3_server) -> None:
    uri = s3_server.uri("coll")
    secret = uri.split("AWS_SECRET_ACCESS_KEY=")[1].split("&")[0]
    with tidemark.connect(tmp_path / "s") as conn:
        x = conn.execute
        x("CREATE TABLE t (id INT PRIMARY KEY, v STRING)")
        x("CREATE INDEX t_v ON t (v)")
        x("INSERT INTO t VALUES " + ", ".join(f"({i}, 'v{i % 9}')" for i in range(300)))
        x(f"BACKUP TABLE t INTO '{uri}' WITH encryption_passphrase = 'pw'")
        x("UPDATE t SET v = 'changed' WHERE id < 20")
        x(f"BACKUP TABLE t INTO LATEST IN '{uri}' WITH encryption_passphrase = 'pw'")
        assert len(x(f"SHOW BACKUPS IN '{uri}'").rows) == 1
        layers = x(f"SHOW BACKUP FROM LATEST IN '{uri}' WITH check_files, "
                   "encryption_passphrase = 'pw'").rows
        assert [r[4] for r in layers] == ["full", "incremental"]
        x("CREATE DATABASE r")
        x(f"RESTORE TABLE t FROM LATEST IN '{uri}' WITH into_db = 'r', "
          "encryption_passphrase = 'pw'")
        assert x("SHOW FINGERPRINTS FROM TABLE r.t").rows == \
            x("SHOW FINGERPRINTS FROM TABLE t").rows
        jobs = repr(x("SHOW JOBS").rows)
        assert secret not in jobs and "redacted" in jobs
        stored = repr(conn.node.engine.versions(b"", KEY_MAX))
        assert secret not in stored


def test_bad_credentials_fail_clearly_and_secretly(tmp_path: Path, s3_auth_server) -> None:
    uri = s3_auth_server.uri("coll", access_key="AKIAUNKNOWN", secret_key="not-the-secret-9f")
    with tidemark.connect(tmp_path / "s") as conn:
        conn.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        with pytest.raises(TidemarkError) as err:
            conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        text = f"{err.value.message} {err.value.hint}"
        assert "access denied" in text.lower()
        assert "not-the-secret-9f" not in text


def test_a_collection_uri_naming_an_object_is_refused(tmp_path: Path, s3_server) -> None:
    # On S3 an object and a "folder" of the same name can coexist: refused all the same.
    uri = s3_server.uri("coll")
    root, _, query = uri.partition("?")
    inner = f"{root}/LATEST?{query}"
    with tidemark.connect(tmp_path / "s") as conn:
        conn.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        conn.execute(f"BACKUP TABLE t INTO '{uri}'")
        for sql in (f"BACKUP TABLE t INTO '{inner}'", f"SHOW BACKUPS IN '{inner}'",
                    f"RESTORE TABLE t FROM LATEST IN '{inner}' WITH into_db = 'defaultdb'"):
            with pytest.raises(TidemarkError) as err:
                conn.execute(sql)
            assert err.value.code == "42P04", sql
            assert "LATEST?" in err.value.message and \
                "is a file, not a backup collection folder" in err.value.message, sql
            assert "name the folder, not a file; this file is 'LATEST' in s3://" in \
                (err.value.hint or ""), sql
            assert "testingsecret" not in str(err.value)
        assert len(conn.execute(f"SHOW BACKUPS IN '{uri}'").rows) == 1


def test_import_from_s3_keeps_its_credentials_out_of_the_keyspace(tmp_path: Path,
                                                                  s3_server) -> None:
    """IMPORT INTO from s3:// with keys in the URI: the job record, SHOW JOBS and the
    keyspace (which backups copy) hold the URI redacted; the job-secrets row is gone once
    the job ends."""
    s3_server.client().put_object(Bucket=s3_server.bucket, Key="imp/rows.csv",
                                  Body=b"1,one\n2,two\n3,three\n")
    query = s3_server.query()
    secret = s3_server.secret_key
    uri = f"s3://{s3_server.bucket}/imp/rows.csv?{query}"
    with tidemark.connect(tmp_path / "s") as conn:
        conn.execute("CREATE TABLE t (id INT PRIMARY KEY, v STRING)")
        (job_id, status, *_), = conn.execute(f"IMPORT INTO t CSV DATA ('{uri}')").rows
        assert status == "succeeded"
        assert conn.execute("SELECT * FROM t ORDER BY id").rows == [
            (1, "one"), (2, "two"), (3, "three")]
        record = conn.registry.get(job_id)
        assert secret not in repr(record) and "redacted" in repr(record.details["files"])
        assert secret not in repr(conn.execute("SHOW JOBS").rows)
        assert secret not in repr(conn.node.engine.versions(b"", KEY_MAX))
        assert conn.node.engine.get_secret(record.details["secret_ref"]) is None
