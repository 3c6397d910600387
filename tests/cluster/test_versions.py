"""Cluster versions: bootstrap, compatibility on open, gates, and finalizing upgrades."""

from __future__ import annotations

import pytest

from tidemark.cluster.node import Node
from tidemark.cluster.versions import (
    BINARY_VERSION,
    MIN_SUPPORTED_VERSION,
    NamedVersion,
    Version,
    VersionRegistry,
)
from tidemark.errors import SettingError, StoreVersionError

V10 = NamedVersion(Version(1, 0), "v1.0", "base")
MARK = b"migrated-1.1"


def migrate_11(db):
    db.run(lambda txn: txn.put(MARK, b"yes"))


V11 = NamedVersion(Version(1, 1), "v1.1", "adds a system key", migrate_11)
V20 = NamedVersion(Version(2, 0), "v2.0", "next major")

OLD = VersionRegistry([V10], binary=V10.version, min_supported=V10.version)
NEW = VersionRegistry([V10, V11], binary=V11.version, min_supported=V10.version)
NEWEST = VersionRegistry([V10, V11, V20], binary=V20.version, min_supported=V11.version)


def test_version_parse_and_order():
    assert Version.parse("1.0") < Version.parse("1.0-1") < Version.parse("1.1")
    assert str(Version.parse("v2.3-4")) == "2.3-4"
    with pytest.raises(SettingError, match="invalid cluster version"):
        Version.parse("one")
    assert MIN_SUPPORTED_VERSION <= BINARY_VERSION


def test_new_store_starts_at_binary_version(tmp_path):
    with Node(tmp_path / "s", registry=NEW) as node:
        assert node.version.active() == V11.version
        assert node.version.is_active(V11)
        assert node.settings.get("version") == "1.1"


def test_rolling_upgrade_then_finalize(tmp_path):
    path = tmp_path / "s"
    Node(path, registry=OLD).close()
    with Node(path, registry=NEW) as new_node, Node(path, registry=OLD) as old_node:
        # mixed binaries: the new one must not use 1.1 features yet
        assert new_node.version.active() == V10.version
        assert not new_node.version.is_active(V11)
        assert new_node.db.get(MARK) is None
        assert [s.name for s in new_node.version.finalize("1.1")] == ["v1.1"]
        assert new_node.db.get(MARK) == b"yes"
        assert old_node.version.is_active(V11)  # every process sees the active version
    with pytest.raises(StoreVersionError) as err:
        Node(path, registry=OLD)
    assert "1.1" in str(err.value) and "1.0" in str(err.value)  # names both versions


def test_binary_too_new_for_store(tmp_path):
    path = tmp_path / "s"
    Node(path, registry=OLD).close()
    with pytest.raises(StoreVersionError, match=r"1\.0, older than .* minimum supported version 1\.1"):
        Node(path, registry=NEWEST)


def test_finalize_refuses_bad_targets(tmp_path):
    with Node(tmp_path / "s", registry=OLD) as node, pytest.raises(
            SettingError, match="unknown cluster version"):
        node.version.finalize("9.9")
    with Node(tmp_path / "s", registry=NEW) as node:
        node.version.finalize("1.1")
        with pytest.raises(SettingError, match="can never be lowered"):
            node.version.finalize("1.0")
        with pytest.raises(SettingError, match="cannot be set like other settings"):
            node.settings.set("version", "1.0")


def test_failed_migration_leaves_version_and_resumes(tmp_path):
    calls = []

    def flaky(db):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("disk on fire")
        db.run(lambda txn: txn.put(b"flaky", b"done"))

    v11 = NamedVersion(Version(1, 1), "v1.1", "flaky", flaky)
    reg = VersionRegistry([V10, v11], binary=v11.version, min_supported=V10.version)
    Node(tmp_path / "s", registry=OLD).close()
    with Node(tmp_path / "s", registry=reg) as node:
        with pytest.raises(RuntimeError):
            node.version.finalize("1.1")
        assert node.version.active() == V10.version
        node.version.finalize("1.1")
        assert node.version.active() == v11.version
        assert node.db.get(b"flaky") == b"done"
