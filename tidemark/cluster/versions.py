"""Cluster versions: the binary's versions, the active cluster version, gates and upgrades.

Code asks "is version V active?" (``ClusterVersion.is_active``), never "what binary am I?":
while a rolling upgrade is not finalized, nodes with the old binary still run, so formats,
request fields and system tables introduced in V may be used only once V is active.

The active version is a row of the settings table (``version``), so every process sees it
transactionally. Finalizing an upgrade runs the migration of each version between the active
one and the target, in order, and records each step once its migration is done, so an upgrade
that dies half-way resumes where it stopped (migrations must therefore be idempotent).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import msgspec

from tidemark.cluster.settings import Kind, register, setting_key
from tidemark.errors import SettingError, StoreVersionError
from tidemark.kv.db import DB
from tidemark.kv.txn import Txn

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:-(\d+))?$")


@dataclass(frozen=True, order=True)
class Version:
    """``major.minor`` for releases; ``major.minor-internal`` for steps inside a release."""

    major: int
    minor: int
    internal: int = 0

    @classmethod
    def parse(cls, text: str) -> Version:
        m = _VERSION_RE.match(text.strip())
        if not m:
            raise SettingError(f"invalid cluster version {text!r}",
                               hint="versions look like '1.0' or '1.0-2'")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))

    def __str__(self) -> str:
        base = f"{self.major}.{self.minor}"
        return f"{base}-{self.internal}" if self.internal else base


Migration = Callable[[DB], None]


@dataclass(frozen=True)
class NamedVersion:
    """A version in the registry, with what it introduces and the migration that gets there."""

    version: Version
    name: str
    description: str
    migration: Migration | None = None


class VersionRegistry:
    """The versions a binary knows, its own version, and the oldest it can run with."""

    def __init__(self, versions: Sequence[NamedVersion], *, binary: Version,
                 min_supported: Version):
        self.versions = sorted(versions, key=lambda v: v.version)
        self.binary = binary
        self.min_supported = min_supported
        known = {v.version for v in self.versions}
        if binary not in known or min_supported not in known:
            raise ValueError("binary and minimum supported versions must be registered")

    def get(self, version: Version) -> NamedVersion:
        for v in self.versions:
            if v.version == version:
                return v
        raise SettingError(f"unknown cluster version {version}",
                           hint=f"this binary knows {', '.join(str(v.version) for v in self.versions)}")

    def steps(self, after: Version, upto: Version) -> list[NamedVersion]:
        return [v for v in self.versions if after < v.version <= upto]


V1_0 = NamedVersion(
    Version(1, 0), "v1.0",
    "MVCC versions with arrival time, serializable transactions, GC with protected timestamps")

DEFAULT_REGISTRY = VersionRegistry([V1_0], binary=V1_0.version, min_supported=V1_0.version)
BINARY_VERSION = DEFAULT_REGISTRY.binary
MIN_SUPPORTED_VERSION = DEFAULT_REGISTRY.min_supported

VERSION_SETTING = register(
    "version", Kind.VERSION, str(BINARY_VERSION),
    "the active cluster version; SET CLUSTER SETTING version = '<v>' finalizes an upgrade")
VERSION_KEY = setting_key("version")


def read_active(txn: Txn) -> Version | None:
    raw = txn.get(VERSION_KEY)
    return None if raw is None else Version.parse(msgspec.msgpack.decode(raw))


def write_active(txn: Txn, version: Version) -> None:
    txn.put(VERSION_KEY, msgspec.msgpack.encode(str(version)))


class ClusterVersion:
    """The gate: which versions are active in the cluster this node belongs to."""

    def __init__(self, db: DB, registry: VersionRegistry = DEFAULT_REGISTRY):
        self.db = db
        self.registry = registry

    def active(self) -> Version:
        version = self.db.run(read_active)
        if version is None:
            raise StoreVersionError("the store has no cluster version: it was never bootstrapped")
        return version

    def is_active(self, version: Version | NamedVersion) -> bool:
        if isinstance(version, NamedVersion):
            version = version.version
        return self.active() >= version

    def bootstrap_or_check(self, store: str) -> Version:
        """A new store starts at the binary's version; an existing one must be compatible."""

        def init(txn: Txn) -> Version:
            active = read_active(txn)
            if active is None:
                write_active(txn, self.registry.binary)
                return self.registry.binary
            return active

        active = self.db.run(init)
        if active > self.registry.binary:
            raise StoreVersionError(
                f"store {store} is at cluster version {active}, newer than this binary's "
                f"version {self.registry.binary}",
                hint=f"run a tidemark binary at version {active} or newer")
        if active < self.registry.min_supported:
            raise StoreVersionError(
                f"store {store} is at cluster version {active}, older than this binary's "
                f"minimum supported version {self.registry.min_supported}",
                hint=f"first upgrade the store with a binary that supports {active}, "
                     "and finalize that upgrade")
        return active

    def finalize(self, target: Version | str) -> list[NamedVersion]:
        """Run the migrations up to ``target`` and make it active; returns the steps run."""
        if isinstance(target, str):
            target = Version.parse(target)
        self.registry.get(target)
        if target > self.registry.binary:
            raise SettingError(
                f"cannot upgrade to {target}: this binary runs version {self.registry.binary}",
                hint="upgrade every node's binary first")
        active = self.active()
        if target < active:
            raise SettingError(
                f"cannot set the cluster version to {target}: it is already {active}, and an "
                "active version can never be lowered")
        done = []
        for step in self.registry.steps(active, target):
            if step.migration is not None:
                step.migration(self.db)

            def bump(txn: Txn, step: NamedVersion = step) -> None:
                current = read_active(txn)
                if current is None or current < step.version:
                    write_active(txn, step.version)

            self.db.run(bump)
            done.append(step)
        return done
