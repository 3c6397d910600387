"""A node: one process's handle on a store, with its clock, settings and cluster version."""

from __future__ import annotations

import logging
import os
import threading

from tidemark.clock import NANOS_PER_SECOND, wall_now
from tidemark.cluster.settings import GC_INTERVAL, GC_TTL_SECONDS, Settings
from tidemark.cluster.versions import DEFAULT_REGISTRY, ClusterVersion, VersionRegistry
from tidemark.kv.db import DB
from tidemark.storage.engine import GCStats
from tidemark.storage.sqlite import SQLiteEngine

log = logging.getLogger(__name__)


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
        self._stop_gc = threading.Event()
        self._gc_thread: threading.Thread | None = None

    def run_gc(self, now: int | None = None) -> GCStats:
        """One GC pass at ``now - gc.ttlseconds``, honouring protected timestamps."""
        ttl = self.settings.get(GC_TTL_SECONDS.name)
        return self.engine.gc((wall_now() if now is None else now) - ttl * NANOS_PER_SECOND)

    def start_gc(self) -> None:
        """Run GC every ``gc.interval`` in a daemon thread until ``close`` (the first pass
        after one interval). Several processes on one store may each do so: a pass is one
        write transaction, and a second one finds nothing more to remove."""
        if self._gc_thread is None:
            self._gc_thread = threading.Thread(target=self._gc_loop, daemon=True,
                                               name="gc")
            self._gc_thread.start()

    def _gc_loop(self) -> None:
        try:
            while not self._stop_gc.wait(self._gc_interval_s()):
                try:
                    self.run_gc()
                except Exception:  # a busy or closing store: try again next interval
                    if self._stop_gc.is_set():
                        return
                    log.exception("GC pass failed")
        finally:
            self.engine.release_thread()

    def _gc_interval_s(self) -> float:
        try:
            return self.settings.get(GC_INTERVAL.name) / NANOS_PER_SECOND
        except Exception:  # a closing store: the loop ends at its next check
            return GC_INTERVAL.default / NANOS_PER_SECOND

    def close(self) -> None:
        self._stop_gc.set()
        if self._gc_thread is not None:
            self._gc_thread.join()
        self.engine.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
