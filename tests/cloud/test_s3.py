"""The s3:// backend against real S3-compatible servers (moto's standalone server, see
``tests/conftest.py``): files land where they should, failures the user must fix are named
clearly and quickly, and secrets never show. The ExternalStorage contract itself runs against
s3 in ``test_storage.py``."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest

from tidemark.cloud import (
    AccessDeniedError,
    BucketNotFoundError,
    CloudError,
    EndpointUnreachableError,
    FileNotFound,
    InvalidURIError,
    open_file,
    open_storage,
)
from tidemark.cloud.s3 import CONNECT_TIMEOUT, PARAMS

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLE-SESSION-TOKEN-c2VjcmV0"


def assert_no_secret(err: BaseException, *secrets: str, storage: object = None) -> None:
    """No secret in the exception's text, hint or repr, nor in the storage's repr/uri."""
    texts = [str(err), repr(err), getattr(err, "hint", None) or "",
             getattr(err, "message", None) or ""]
    if storage is not None:
        texts += [repr(storage), storage.uri]  # type: ignore[attr-defined]
    for secret in secrets or (SECRET, TOKEN):
        for text in texts:
            assert secret not in text, text


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


# -- data in the right place -----------------------------------------------------------------


def test_files_land_under_the_prefix_in_the_bucket(s3_server):
    uri = s3_server.uri("layout")
    prefix = uri.split("?")[0].removeprefix(f"s3://{s3_server.bucket}/")
    st = open_storage(uri)
    st.write("a/b.csv", b"1,2\n")
    st.write("c.csv", [b"x", b"y"])
    objects = s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix=prefix + "/")
    assert sorted((o["Key"], o["Size"]) for o in objects["Contents"]) == [
        (f"{prefix}/a/b.csv", 4), (f"{prefix}/c.csv", 2)]
    st.close()


def test_a_sibling_prefix_is_not_listed(s3_server):
    root = f"s3://{s3_server.bucket}/{uuid.uuid4().hex[:8]}"
    inside = open_storage(f"{root}/data?{s3_server.query()}")
    sibling = open_storage(f"{root}/data2?{s3_server.query()}")
    inside.write("x.csv", b"in")
    sibling.write("y.csv", b"out")
    assert [f.name for f in inside.list()] == ["x.csv"]
    assert [f.name for f in sibling.list()] == ["y.csv"]


def test_open_file_and_the_bucket_root(s3_server):
    name = f"{uuid.uuid4().hex[:8]}.csv"
    whole_bucket = open_storage(f"s3://{s3_server.bucket}?{s3_server.query()}")
    whole_bucket.write(name, b"1\n")
    st, base = open_file(f"s3://{s3_server.bucket}/{name}?{s3_server.query()}")
    assert (base, st.read(base)) == (name, b"1\n")
    assert name in [f.name for f in whole_bucket.list()]
    whole_bucket.delete(name)


def test_a_write_whose_data_fails_leaves_the_old_file(s3_server):
    st = open_storage(s3_server.uri("torn"))
    st.write("m.json", b"old")

    def failing():
        yield b"partial"
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError):
        st.write("m.json", failing())
    with pytest.raises(RuntimeError):
        st.write("new.json", failing())
    assert st.read("m.json") == b"old"
    assert [f.name for f in st.list()] == ["m.json"]


def test_writing_never_creates_a_bucket(s3_server):
    bucket = f"nope-{uuid.uuid4().hex[:8]}"
    with pytest.raises(BucketNotFoundError):
        open_storage(s3_server.uri("x", bucket=bucket)).write("f", b"x")
    names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert bucket not in names


def test_close_releases_connections_and_storage_stays_usable(s3_server):
    st = open_storage(s3_server.uri("close"))
    st.write("f", b"1")
    st.close()
    st.close()
    assert st.read("f") == b"1"  # a new connection on demand
    st.close()


@pytest.fixture
def no_aws_setup(monkeypatch, tmp_path):
    """No AWS credentials anywhere botocore's default chain looks, and no waiting for the
    instance metadata service."""
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


def test_implicit_auth_uses_the_default_credential_chain(s3_server, monkeypatch, no_aws_setup):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    uri = (f"s3://{s3_server.bucket}/{uuid.uuid4().hex[:8]}?AUTH=implicit"
           f"&AWS_ENDPOINT={s3_server.endpoint}&AWS_REGION=us-east-1")
    st = open_storage(uri)
    st.write("f", b"implicit")
    assert st.read("f") == b"implicit"


def test_implicit_auth_without_credentials_says_so(s3_server, no_aws_setup):
    st = open_storage(f"s3://{s3_server.bucket}/x?AUTH=implicit&AWS_ENDPOINT={s3_server.endpoint}")
    with pytest.raises(AccessDeniedError) as err:
        st.list()
    assert "no AWS credentials found" in str(err.value)
    assert "AWS_ACCESS_KEY_ID" in err.value.hint


# -- URIs refused before any request ---------------------------------------------------------


def test_unknown_parameters_are_named_with_the_accepted_ones():
    with pytest.raises(InvalidURIError) as err:
        open_storage(f"s3://b/p?AWS_ACCESS_KEY_ID=k&AWS_SECRET_ACCESS_KEY={SECRET}"
                     "&AWS_REGON=us-east-1&aws_endpoint=http://x")
    msg = str(err.value)
    assert "unknown s3 parameters AWS_REGON, aws_endpoint" in msg
    assert "accepted: " + ", ".join(PARAMS) in msg
    assert_no_secret(err.value)


@pytest.mark.parametrize(("query", "missing"), [
    (f"AWS_SECRET_ACCESS_KEY={SECRET}", "missing AWS_ACCESS_KEY_ID (AUTH=specified)"),
    ("AWS_ACCESS_KEY_ID=AKIA", "missing AWS_SECRET_ACCESS_KEY (AUTH=specified)"),
    ("AWS_ACCESS_KEY_ID=AKIA&AWS_SECRET_ACCESS_KEY=", "missing AWS_SECRET_ACCESS_KEY"),
    ("AWS_REGION=us-east-1", "missing AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    (f"AWS_SESSION_TOKEN={TOKEN}", "missing AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
])
def test_missing_keys_are_named(query, missing):
    with pytest.raises(InvalidURIError) as err:
        open_storage(f"s3://bucket/path?{query}")
    assert missing in str(err.value)
    assert "AUTH=implicit" in err.value.hint
    assert_no_secret(err.value)


@pytest.mark.parametrize(("uri", "says"), [
    (f"s3://AKIA:{SECRET}@bucket/p?AWS_ACCESS_KEY_ID=k&AWS_SECRET_ACCESS_KEY={SECRET}",
     "credentials as parameters"),
    (f"s3:///p?AWS_ACCESS_KEY_ID=k&AWS_SECRET_ACCESS_KEY={SECRET}", "no bucket"),
    (f"s3://b/a/../p?AWS_ACCESS_KEY_ID=k&AWS_SECRET_ACCESS_KEY={SECRET}", "'..'"),
    (f"s3://b/p?AWS_ACCESS_KEY_ID=k&AWS_SECRET_ACCESS_KEY={SECRET}&AWS_ENDPOINT=127.0.0.1:9000",
     "AWS_ENDPOINT must be an http:// or https:// URL"),
    (f"s3://b/p?AWS_ACCESS_KEY_ID=k&AWS_SECRET_ACCESS_KEY={SECRET}"
     f"&AWS_ENDPOINT=http://u:{SECRET}@h:9000", "without credentials"),
    (f"s3://b/p?AWS_ACCESS_KEY_ID=k&AWS_SECRET_ACCESS_KEY={SECRET}&AWS_ACCESS_KEY_ID=k2",
     "AWS_ACCESS_KEY_ID given more than once"),
    (f"s3://b/p?AUTH=implicit&AWS_SECRET_ACCESS_KEY={SECRET}",
     "AUTH=implicit takes the credentials from the environment"),
    (f"s3://b/p?AUTH=magic&AWS_SECRET_ACCESS_KEY={SECRET}", "unsupported AUTH='magic'"),
])
def test_bad_s3_uris_are_refused_without_showing_secrets(uri, says):
    with pytest.raises(InvalidURIError) as err:
        open_storage(uri)
    assert says in str(err.value)
    assert_no_secret(err.value)


# -- failures at the server ------------------------------------------------------------------


def test_unreachable_endpoint_fails_fast_and_clearly():
    endpoint = f"http://127.0.0.1:{closed_port()}"
    st = open_storage(f"s3://bucket/p?AWS_ACCESS_KEY_ID=AKIA&AWS_SECRET_ACCESS_KEY={SECRET}"
                      f"&AWS_SESSION_TOKEN={TOKEN}&AWS_ENDPOINT={endpoint}")
    for step, op in (("list", lambda: st.list()), ("read", lambda: st.read("f.csv")),
                     ("write", lambda: st.write("f.csv", b"x")),
                     ("delete", lambda: st.delete("f.csv"))):
        started = time.monotonic()
        with pytest.raises(EndpointUnreachableError) as err:
            op()
        assert time.monotonic() - started < 2 * CONNECT_TIMEOUT
        msg = str(err.value)
        assert msg.startswith(f"{step} s3://bucket/p")
        assert f"cannot reach s3 endpoint {endpoint}: connection refused" in msg
        assert "AWS_ENDPOINT" in err.value.hint
        assert_no_secret(err.value, storage=st)


def test_unknown_host_is_named():
    st = open_storage(f"s3://bucket/p?AWS_ACCESS_KEY_ID=AKIA&AWS_SECRET_ACCESS_KEY={SECRET}"
                      "&AWS_ENDPOINT=http://no-such-host.invalid:9000")
    with pytest.raises(EndpointUnreachableError) as err:
        st.stat("f")
    assert "cannot reach s3 endpoint http://no-such-host.invalid:9000: unknown host" in \
        str(err.value)


def test_https_to_a_plain_http_server_says_tls_failed(s3_server):
    st = open_storage(s3_server.uri("tls").replace("AWS_ENDPOINT=http:", "AWS_ENDPOINT=https:"))
    with pytest.raises(EndpointUnreachableError) as err:
        st.list()
    assert "TLS failed" in str(err.value) and "http:// rather than https://" in str(err.value)


def test_missing_bucket_is_named_and_is_not_a_missing_file(s3_server):
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:6]}"
    st = open_storage(s3_server.uri("p", bucket=bucket, secret_key=SECRET))
    for op in (lambda: st.list(), lambda: st.read("f"), lambda: st.stat("f"),
               lambda: st.open("f"), lambda: st.write("f", b"x"), lambda: st.delete("f")):
        with pytest.raises(BucketNotFoundError) as err:
            op()
        assert not isinstance(err.value, FileNotFound)  # "no backup yet" it is not
        assert f's3 bucket "{bucket}" does not exist at s3 endpoint {s3_server.endpoint}' in \
            str(err.value)
        assert "create the bucket" in err.value.hint
        assert_no_secret(err.value, storage=st)


def test_a_missing_file_in_an_existing_bucket_is_still_file_not_found(s3_server):
    st = open_storage(s3_server.uri("p"))
    with pytest.raises(FileNotFound):
        st.read("nope")
    assert st.list() == []
    st.delete("nope")


# -- credentials checked (moto with IAM authentication on) ------------------------------------


def test_valid_credentials_work_with_authentication_on(s3_auth_server):
    st = open_storage(s3_auth_server.uri("ok"))
    st.write("f.csv", b"1")
    assert st.read("f.csv") == b"1"
    assert [f.name for f in st.list()] == ["f.csv"]


@pytest.mark.parametrize("case", ["wrong secret", "unknown key", "no permission"])
def test_bad_credentials_are_access_denied(s3_auth_server, case):
    srv = s3_auth_server
    if case == "wrong secret":
        uri, code, key = srv.uri("bad", secret_key=SECRET), "SignatureDoesNotMatch", \
            srv.access_key
    elif case == "unknown key":
        uri, code, key = srv.uri("bad", access_key="AKIAUNKNOWN0000", secret_key=SECRET), \
            "InvalidAccessKeyId", "AKIAUNKNOWN0000"
    else:
        uri, code, key = srv.uri("bad", access_key=srv.denied_key,
                                 secret_key=srv.denied_secret), "AccessDenied", srv.denied_key
    st = open_storage(uri)
    for op in (lambda: st.list(), lambda: st.write("f", b"x"), lambda: st.read("f"),
               lambda: st.delete("f")):
        with pytest.raises(AccessDeniedError) as err:
            op()
        msg = str(err.value)
        assert "access denied by s3 endpoint" in msg
        assert "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY" in err.value.hint
        assert err.value.code == "42501"
        assert_no_secret(err.value, SECRET, srv.secret_key, srv.denied_secret, storage=st)
    # A request with a body names the server's reason (a HEAD gets a bare 403).
    with pytest.raises(AccessDeniedError) as err:
        st.list()
    assert code in str(err.value) and key in str(err.value)


def test_secrets_never_show_in_a_storage_or_its_errors(s3_server):
    uri = s3_server.uri("secret", secret_key=SECRET) + f"&AWS_SESSION_TOKEN={TOKEN}"
    st = open_storage(uri)
    assert SECRET not in repr(st) and TOKEN not in repr(st) and SECRET not in st.uri
    assert "AWS_SECRET_ACCESS_KEY=redacted" in st.uri
    assert "AWS_SESSION_TOKEN=redacted" in st.uri
    for op in (lambda: st.read("missing"), lambda: st.read("a/../b"),
               lambda: st.stat("missing"), lambda: st.write("", b"x")):
        with pytest.raises(CloudError) as err:
            op()
        assert_no_secret(err.value, storage=st)
