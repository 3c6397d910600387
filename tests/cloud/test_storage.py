"""ExternalStorage conformance: the same cases against every backend, plus URI handling."""

from __future__ import annotations

import uuid

import pytest

from tidemark import cloud
from tidemark.cloud import (
    CloudError,
    ExternalStorage,
    FileNotFound,
    InvalidURIError,
    StorageContext,
    open_file,
    open_storage,
    redact_uri,
)

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


@pytest.fixture(params=["file", "nodelocal", "memory", "s3"])
def storage(request, tmp_path):
    ctx = StorageContext(external_dir=tmp_path / "external")
    if request.param == "file":
        uri = f"file://{tmp_path}/root"
    elif request.param == "nodelocal":
        uri = "nodelocal://self/root"
    elif request.param == "memory":
        uri = f"memory://bucket-{uuid.uuid4().hex[:8]}/root"
    else:  # a real S3 server (moto), started only when an s3 case runs
        s3 = request.getfixturevalue("s3_server")
        uri = f"s3://{s3.bucket}/{uuid.uuid4().hex[:12]}/root?{s3.query()}"
    st = open_storage(uri, ctx)
    yield st
    st.close()


def test_backend_satisfies_the_protocol(storage):
    assert isinstance(storage, ExternalStorage)


def test_write_read_stat_list_delete(storage):
    assert storage.list() == []  # the root does not even exist yet
    assert storage.write("a/one.csv", b"0123456789") == 10
    assert storage.write("a/two.csv", [b"ab", b"cd"]) == 4
    assert storage.write("b.csv", b"") == 0
    assert storage.read("a/one.csv") == b"0123456789"
    assert storage.read("a/one.csv", 3) == b"3456789"
    assert storage.read("a/one.csv", 3, 4) == b"3456"
    assert storage.read("a/two.csv") == b"abcd"
    assert storage.stat("a/one.csv") == cloud.FileInfo("a/one.csv", 10)
    assert [f.name for f in storage.list()] == ["a/one.csv", "a/two.csv", "b.csv"]
    assert [(f.name, f.size) for f in storage.list("a/")] == [("a/one.csv", 10),
                                                              ("a/two.csv", 4)]
    assert storage.list("zzz") == []
    assert [f.name for f in storage.list("a/o")] == ["a/one.csv"]
    assert storage.list("a/zzz/") == [] and storage.list("nope/x") == []
    assert [f.name for f in storage.list("b")] == ["b.csv"]
    with storage.open("a/one.csv", 7) as f:
        assert f.read() == b"789"
    storage.write("a/one.csv", b"new")  # replaced as a whole
    assert storage.read("a/one.csv") == b"new"
    storage.delete("a/one.csv")
    storage.delete("a/one.csv")  # deleting a missing file does nothing
    assert [f.name for f in storage.list()] == ["a/two.csv", "b.csv"]


def test_missing_files_raise_file_not_found_naming_the_uri(storage):
    for op in (lambda: storage.read("nope.csv"), lambda: storage.stat("nope.csv"),
               lambda: storage.open("nope.csv")):
        with pytest.raises(FileNotFound) as err:
            op()
        assert err.value.uri.partition("?")[0].endswith("/root/nope.csv")  # s3 has parameters
        assert "nope.csv" in str(err.value)


@pytest.mark.parametrize("name", ["../x", "/abs", "a//b", "a/./b", "a/.."])
def test_names_cannot_escape_the_root(storage, name):
    with pytest.raises(InvalidURIError):
        storage.write(name, b"x")


def test_open_file_reads_a_file_by_its_uri(tmp_path):
    (tmp_path / "external" / "in").mkdir(parents=True)
    (tmp_path / "external" / "in" / "f.csv").write_bytes(b"1,2\n")
    ctx = StorageContext(external_dir=tmp_path / "external")
    for uri in ("nodelocal://self/in/f.csv", f"file://{tmp_path}/external/in/f.csv"):
        st, name = open_file(uri, ctx)
        assert (name, st.read(name)) == ("f.csv", b"1,2\n")


def test_unknown_scheme_names_it_and_lists_the_supported_ones():
    with pytest.raises(InvalidURIError) as err:
        open_storage(f"gs://bucket/x?CREDENTIALS={SECRET}")
    msg = str(err.value)
    assert 'scheme "gs"' in msg and "file, memory, nodelocal" in msg
    assert SECRET not in msg and "CREDENTIALS=redacted" in msg


@pytest.mark.parametrize("uri", [
    "nodelocal://self/../outside.csv",
    "nodelocal://self/a/../../outside.csv",
    "nodelocal://2/x.csv",
    "file://otherhost/x.csv",
    "file:///tmp/../etc/passwd",
    "no-scheme.csv",
    f"file:///tmp/x.csv?AWS_SECRET_ACCESS_KEY={SECRET}",
    f"memory://b/x.csv?AWS_SESSION_TOKEN={SECRET}",
])
def test_bad_uris_are_refused_without_showing_secrets(tmp_path, uri):
    with pytest.raises(CloudError) as err:
        open_file(uri, StorageContext(external_dir=tmp_path))
    assert SECRET not in str(err.value)


def test_nodelocal_refuses_symlinks_out_of_the_external_folder(tmp_path):
    ext = tmp_path / "external"
    ext.mkdir()
    (ext / "escape").symlink_to(tmp_path)
    with pytest.raises(InvalidURIError, match="outside the store's external folder"):
        open_file("nodelocal://self/escape/x.csv", StorageContext(external_dir=ext))


def test_nodelocal_needs_a_store():
    with pytest.raises(InvalidURIError, match="needs a store"):
        open_file("nodelocal://self/x.csv")


def test_redaction():
    uri = (f"s3://AKIA:{SECRET}@bucket/path?AWS_ACCESS_KEY_ID=AKIA&"
           f"AWS_SECRET_ACCESS_KEY={SECRET}&AWS_REGION=us-east-1&my_token={SECRET}")
    shown = redact_uri(uri)
    assert SECRET not in shown
    assert "AWS_ACCESS_KEY_ID=AKIA" in shown and "AWS_REGION=us-east-1" in shown
    assert "AWS_SECRET_ACCESS_KEY=redacted" in shown and "my_token=redacted" in shown
    assert SECRET not in redact_uri(f"not a uri?AWS_SECRET_ACCESS_KEY={SECRET}")
    assert redact_uri("nodelocal://self/a b.csv") == "nodelocal://self/a%20b.csv"
