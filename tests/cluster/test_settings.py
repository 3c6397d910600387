"""Cluster settings: typed values stored in the keyspace, validation, GC TTL."""

from __future__ import annotations

import pytest

from tidemark.clock import NANOS_PER_SECOND
from tidemark.cluster.node import Node
from tidemark.cluster.settings import REGISTRY, Kind, Setting, lookup
from tidemark.errors import GCThresholdError, SettingError


def test_defaults_and_stored_values_shared_between_nodes(tmp_path):
    with Node(tmp_path / "s") as a, Node(tmp_path / "s") as b:
        assert a.settings.get("gc.ttlseconds") == 14400
        a.settings.set("gc.ttlseconds", "600")
        assert b.settings.get("gc.ttlseconds") == 600
        assert dict((s.name, v) for s, v in b.settings.all())["gc.ttlseconds"] == 600
        a.settings.set("gc.ttlseconds", None)  # reset
        assert b.settings.get("gc.ttlseconds") == 14400


def test_settings_are_transactional_and_time_travel(node):
    before = node.db.now()
    node.settings.set("gc.ttlseconds", 90)
    txn = node.db.txn(read_ts=before)
    assert node.settings.get("gc.ttlseconds", txn) == 14400
    assert node.settings.get("gc.ttlseconds") == 90


@pytest.mark.parametrize("raw, message", [
    ("abc", "is not an integer"),
    (True, "is not an integer"),
    (0, "must be at least 1 second"),
    (-5, "must be at least 1 second"),
])
def test_invalid_values_are_refused(node, raw, message):
    with pytest.raises(SettingError, match=message):
        node.settings.set("gc.ttlseconds", raw)
    assert node.settings.get("gc.ttlseconds") == 14400


def test_unknown_setting(node):
    with pytest.raises(SettingError, match=r"unknown cluster setting 'no\.such'"):
        node.settings.get("no.such")


def test_coercion_of_each_kind():
    def s(kind, default):
        return Setting("t." + kind.value, kind, default, "test")

    assert s(Kind.FLOAT, 1.0).coerce("2.5") == 2.5
    assert s(Kind.BOOL, False).coerce("true") is True
    assert s(Kind.STRING, "").coerce("x") == "x"
    assert s(Kind.DURATION, 0).coerce("1h30m") == 5400 * NANOS_PER_SECOND
    assert s(Kind.DURATION, 0).format(5400 * NANOS_PER_SECOND) == "1h30m"
    with pytest.raises(SettingError, match="a duration"):
        s(Kind.DURATION, 0).coerce("-5s")
    with pytest.raises(SettingError, match="a boolean"):
        s(Kind.BOOL, False).coerce("maybe")
    assert lookup("GC.TTLSECONDS") is REGISTRY["gc.ttlseconds"]


def test_gc_pass_uses_ttl_setting(node):
    t1 = node.db.engine.commit([(b"k", b"1")], node.db.now())
    t2 = node.db.engine.commit([(b"k", b"2")], node.db.now())
    node.settings.set("gc.ttlseconds", 3600)
    # an hour after t2 the threshold is t2: the version at t1 goes, t2 stays readable
    stats = node.run_gc(now=t2 + 3600 * NANOS_PER_SECOND)
    assert stats.threshold == t2
    assert node.db.get(b"k", t2) == b"2"
    with pytest.raises(GCThresholdError):
        node.db.get(b"k", t1)


def test_a_connected_node_runs_gc_every_gc_interval(tmp_path):
    """GC runs by itself in a process with a connection open, at gc.ttlseconds."""
    import time

    import tidemark

    setup = tidemark.connect(tmp_path / "s")
    setup.execute("CREATE TABLE t (k INT PRIMARY KEY, v INT)")
    setup.execute("INSERT INTO t VALUES (1, 1)")
    old = int(setup.execute("SELECT cluster_logical_timestamp()").rows[0][0])
    setup.execute("UPDATE t SET v = 2")
    setup.execute("SET CLUSTER SETTING gc.ttlseconds = 1")
    setup.execute("SET CLUSTER SETTING gc.interval = '1s'")
    setup.close()
    with tidemark.connect(tmp_path / "s") as conn:
        deadline = time.monotonic() + 10
        while conn.node.engine.gc_threshold() <= old and time.monotonic() < deadline:
            time.sleep(0.1)
        assert conn.node.engine.gc_threshold() > old
        with pytest.raises(GCThresholdError):
            conn.execute(f"SELECT v FROM t AS OF SYSTEM TIME {old}")
        assert conn.execute("SELECT v FROM t").rows == [(2,)]
