"""Backup test fixtures: every case runs on memory:// and on a file:// directory."""

from __future__ import annotations

import uuid

import pytest

from tidemark.cloud import StorageContext, open_storage


@pytest.fixture(params=["memory", "file"])
def storage(request, tmp_path):
    if request.param == "file":
        uri = f"file://{tmp_path}/collection"
    else:
        uri = f"memory://bucket-{uuid.uuid4().hex[:8]}/collection"
    st = open_storage(uri, StorageContext())
    yield st
    st.close()
