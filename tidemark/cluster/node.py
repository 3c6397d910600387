"""A node: one process's handle on a store, with its clock, settings and cluster version."""

from __future__ import annotations

import os

from tidemark.clock import NANOS_PER_SECOND, wall_now
from tidemark.cluster.settings import GC_TTL_SECONDS, Settings
from tidemark.cluster.versions import DEFAULT_REGISTRY, ClusterVersion, VersionRegistry
from tidemark.kv.db import DB
from tidemark.storage.engine import GCStats
from tidemark.storage.sqlite import SQLiteEngine


class Node:
    """Opens (or creates) the store at ``path`` and checks the binary may run on it."""

    def __init__(self, path: str | os.PathLike[str], *,
                 registry: VersionRegistry = DEFAULT_REGISTRY, create: bool = True):
        self.path = str(path)
        self.engine = SQLiteEngine(path, create=create)
        try:
            self.db = DB(self.engine)
            self.settings = Settings(self.db)
            self.version = ClusterVersion(self.db, registry)
            self.version.bootstrap_or_check(self.path)
        except BaseException:
            self.engine.close()
            raise

    def run_gc(self, now: int | None = None) -> GCStats:
        """One GC pass at ``now - gc.ttlseconds``, honouring protected timestamps."""
        ttl = self.settings.get(GC_TTL_SECONDS.name)
        return self.engine.gc((wall_now() if now is None else now) - ttl * NANOS_PER_SECOND)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
