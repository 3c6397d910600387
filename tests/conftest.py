"""Shared fixtures: real stores in temporary directories, and real S3 servers (moto's
standalone server, one process per pytest worker)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tidemark.cluster.node import Node
from tidemark.kv.db import DB
from tidemark.storage.sqlite import SQLiteEngine

# Property tests run on small, busy CI machines: slow input generation is not a failure.
settings.register_profile("tidemark", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "tidemark"))


@pytest.fixture
def engine(tmp_path):
    eng = SQLiteEngine(tmp_path / "store")
    yield eng
    eng.close()


@pytest.fixture
def db(engine):
    return DB(engine)


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "node")
    yield n
    n.close()


# -- S3 -------------------------------------------------------------------------------------

S3_BUCKET = "tidemark-test"
S3_REGION = "us-east-1"
MOTO_START_TIMEOUT = 20.0  # seconds; it takes well under one on an idle machine


@dataclass
class S3Server:
    """A moto server on 127.0.0.1 holding ``bucket``; ``uri()`` gives fresh, unique roots."""

    endpoint: str
    process: subprocess.Popen[bytes] = field(repr=False)
    log: Path = field(repr=False)
    bucket: str = S3_BUCKET
    access_key: str = "testing"
    secret_key: str = "testingsecret"
    # s3_auth_server only: a user the server knows but who may do nothing.
    denied_key: str = ""
    denied_secret: str = field(default="", repr=False)

    def uri(self, bucket_prefix: str = "t", *, access_key: str | None = None,
            secret_key: str | None = None, bucket: str | None = None) -> str:
        """``s3://bucket/<bucket_prefix>-<random>?...``: a root no other test has used."""
        prefix = f"{bucket_prefix.strip('/')}-{uuid.uuid4().hex[:12]}"
        return f"s3://{bucket or self.bucket}/{prefix}?{self.query(access_key, secret_key)}"

    def query(self, access_key: str | None = None, secret_key: str | None = None) -> str:
        """The URI parameters reaching this server: credentials, endpoint, region."""
        # Quoted: real secret keys hold '+' and '/', and a bare '+' in a query is a space.
        return urllib.parse.urlencode({
            "AWS_ACCESS_KEY_ID": access_key or self.access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key or self.secret_key,
            "AWS_ENDPOINT": self.endpoint, "AWS_REGION": S3_REGION}, safe=":/")

    def client(self, service: str = "s3") -> Any:
        """A boto3 client with this server's credentials (for setting up, not under test)."""
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=S3_REGION,
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key)

    def post(self, path: str, body: bytes) -> None:
        # text/plain: moto reads the raw body, which a form content type would consume.
        req = urllib.request.Request(f"{self.endpoint}{path}", data=body, method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=5):
            pass

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


# moto's server, exiting by itself once its parent is gone: a pytest worker that crashes or
# is killed runs no fixture teardown, and must not leave servers behind.
_MOTO_MAIN = """
import os, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
from moto.server import main
main(sys.argv[1:])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=0.5):
            return True
    except urllib.error.HTTPError:
        return True  # an HTTP error is still an answer
    except OSError:
        return False


def start_moto(log_dir: Path) -> S3Server:
    """Start moto's server on a free loopback port and wait until it answers.

    The port is picked before the server binds it, so another process may take it first; the
    server then exits, and we try again on another port.
    """
    # Credentials or endpoints of the developer's own AWS set-up must not reach the server.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "MOTO_", "INITIAL_NO_AUTH"))}
    failures = []
    for _ in range(3):
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        log = log_dir / f"moto-{port}.log"
        with log.open("wb") as out:  # a file, not a pipe: a full pipe would block the server
            proc = subprocess.Popen(
                [sys.executable, "-c", _MOTO_MAIN, "-H", "127.0.0.1", "-p", str(port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        server = S3Server(endpoint=endpoint, process=proc, log=log)
        deadline = time.monotonic() + MOTO_START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(endpoint):
                return server
            time.sleep(0.05)
        exited = proc.poll()
        server.stop()
        what = (f"exited with status {exited}" if exited is not None
                else f"did not answer within {MOTO_START_TIMEOUT:.0f}s")
        failures.append(f"port {port}: {what}; output:\n"
                        f"{log.read_text(errors='replace')[-2000:]}")
    pytest.fail("moto server did not start:\n" + "\n".join(failures), pytrace=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (moto) with bucket ``tidemark-test``, for this worker's
    whole session. Any credentials are accepted; ``s3_server.uri("name")`` gives a fresh root.
    """
    server = start_moto(tmp_path_factory.mktemp("moto"))
    try:
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_auth_server(tmp_path_factory):
    """A moto server that checks credentials like S3: only the IAM user it was set up with
    (``access_key``/``secret_key``, allowed ``s3:*``) gets in. ``denied_key``/``denied_secret``
    belong to a user without any permission.

    moto checks nothing until told to: the set-up runs unauthenticated, then
    ``/moto-api/reset-auth`` with 0 makes every later request pass IAM authentication.
    """
    server = start_moto(tmp_path_factory.mktemp("moto-auth"))
    try:
        iam = server.client("iam")
        iam.create_user(UserName="tidemark")
        key = iam.create_access_key(UserName="tidemark")["AccessKey"]
        iam.put_user_policy(UserName="tidemark", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        iam.create_user(UserName="nobody")
        denied = iam.create_access_key(UserName="nobody")["AccessKey"]
        server.client().create_bucket(Bucket=server.bucket)
        server.post("/moto-api/reset-auth", b"0")
        server.access_key, server.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        server.denied_key, server.denied_secret = denied["AccessKeyId"], denied["SecretAccessKey"]
        yield server
    finally:
        server.stop()
