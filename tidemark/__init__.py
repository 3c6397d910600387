"""tidemark: a transactional MVCC database whose backups never silently lose data.

``tidemark.connect(path)`` opens (or creates) the store at ``path`` and returns a connection::

    conn = tidemark.connect("./tidemark-data")
    conn.execute("CREATE TABLE t (id INT PRIMARY KEY, v STRING)")
    conn.execute("INSERT INTO t VALUES ($1, $2)", [1, "one"])
    result = conn.execute("SELECT * FROM t")
    result.columns, result.rows
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tidemark.cluster.node import Node
from tidemark.errors import SQLError, TidemarkError
from tidemark.jobs.registry import Registry
from tidemark.sql.result import Result
from tidemark.sql.session import Session

__all__ = ["Connection", "Result", "SQLError", "TidemarkError", "connect"]


class Connection:
    """A SQL session on a store, owning the node it opened."""

    def __init__(self, path: str | os.PathLike[str], database: str = "defaultdb"):
        self.node = Node(path)
        try:
            self.registry = Registry(self.node)
            self.session = Session(self.node, database, self.registry)
        except BaseException:
            self.node.close()
            raise
        self.registry.start_adopting()  # this process runs orphaned jobs too
        self.node.start_gc()  # and GC, every gc.interval

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        return self.session.execute(sql, params)

    def close(self) -> None:
        self.registry.close()
        self.node.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(path: str | os.PathLike[str], database: str = "defaultdb") -> Connection:
    return Connection(path, database)
