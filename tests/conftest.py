"""Shared fixtures: real stores in temporary directories."""

from __future__ import annotations

import pytest

from tidemark.cluster.node import Node
from tidemark.kv.db import DB
from tidemark.storage.sqlite import SQLiteEngine


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
