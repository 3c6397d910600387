"""Shared fixtures: real stores in temporary directories."""

from __future__ import annotations

import os

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
