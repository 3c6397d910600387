"""Helpers for the backup scenario tests (``test_scenarios.py``).

A ``Cluster`` wraps one store's connection with what the scenarios repeat: pausing a job at
a pause point and resuming it, taking backups (returning their end times), restoring, and
recording moments to restore to later.

``assert_restored`` is the one verification every scenario uses: a restored table equals its
source as of a time ``T``:

1. ``SHOW FINGERPRINTS FROM TABLE`` of the restored table equals the source's ``AS OF SYSTEM
   TIME T`` (one row per public index, by name: the same indexes, the same entries);
2. every secondary index of the restored table, read through an index hint, returns the same
   rows (primary key columns and the index's columns) as its primary index, and as the
   source at ``T``; the whole table equals the source at ``T``.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import tidemark
import tidemark.importer
from tidemark.clock import format_ts
from tidemark.errors import JobPausedError, SQLError
from tidemark.kv.keys import index_prefix, prefix_end
from tidemark.sql.ast import TableName

PAUSEPOINTS = "jobs.debug.pausepoints"
UNSAFE = "testing.backup.unsafe_mvcc_window_incrementals"
BACKFILL_PAUSE = "indexbackfill.after_first_chunk"
IMPORT_PAUSE = "import.after_first_chunk"
RESTORE_PAUSE = "restore.after_first_chunk"


def aost(ts: int) -> str:
    return f"AS OF SYSTEM TIME '{format_ts(ts)}'"


class Cluster:
    """One store and a connection to it."""

    def __init__(self, path: Path):
        self.conn = tidemark.connect(path)
        self.ext = Path(self.conn.node.engine.root) / "external"
        self.moments: list[int] = []  # times recorded during a scenario, to restore to

    def close(self) -> None:
        self.conn.close()

    # -- SQL -------------------------------------------------------------------------------

    def sql(self, stmt: str, params: Any = ()) -> tidemark.Result:
        return self.conn.execute(stmt, params)

    def rows(self, stmt: str, params: Any = ()) -> list[tuple]:
        return self.conn.execute(stmt, params).rows

    def count(self, stmt: str) -> int:
        ((n,),) = self.rows(stmt)
        return n

    def setting(self, name: str, value: str) -> None:
        self.sql(f"SET CLUSTER SETTING {name} = {value}")

    def now(self) -> int:
        ((value,),) = self.rows("SELECT cluster_logical_timestamp()")
        assert isinstance(value, Decimal)
        return int(value)

    def mark(self) -> int:
        """Record the current time as a moment of the scenario."""
        ts = self.now()
        self.moments.append(ts)
        return ts

    def write_csv(self, name: str, lines: list[str]) -> str:
        self.ext.mkdir(exist_ok=True)
        (self.ext / name).write_text("".join(f"{line}\n" for line in lines))
        return f"nodelocal://self/{name}"

    # -- jobs ------------------------------------------------------------------------------

    def paused(self, stmt: str, point: str) -> int:
        """Run a job's statement with the pause point set; it must pause there. Job ID."""
        self.setting(PAUSEPOINTS, f"'{point}'")
        try:
            with pytest.raises(JobPausedError) as err:
                self.sql(stmt)
        finally:
            self.setting(PAUSEPOINTS, "''")
        assert point in str(err.value)
        assert self.job(err.value.job_id)["status"] == "paused"
        return err.value.job_id

    def job(self, job_id: int) -> dict[str, Any]:
        res = self.sql(f"SHOW JOB {job_id}")
        return dict(zip(res.columns, res.rows[0], strict=True))

    def resume(self, job_id: int) -> dict[str, Any]:
        self.sql(f"RESUME JOB {job_id}")
        res = self.sql(f"SHOW JOB WHEN COMPLETE {job_id}")
        job = dict(zip(res.columns, res.rows[0], strict=True))
        assert job["status"] == "succeeded", job
        return job

    def cancel(self, job_id: int) -> dict[str, Any]:
        self.sql(f"CANCEL JOB {job_id}")
        res = self.sql(f"SHOW JOB WHEN COMPLETE {job_id}")
        job = dict(zip(res.columns, res.rows[0], strict=True))
        assert job["status"] == "canceled", job
        return job

    # -- backup and restore ----------------------------------------------------------------

    def backup(self, stmt: str, coll: str) -> int:
        """Run a BACKUP into ``coll``'s LATEST chain; returns the new layer's end time."""
        res = self.sql(stmt)
        assert res.rows[0][1:3] == ("succeeded", 1.0), res.rows
        time.sleep(0.02)  # layer folders are named to 1/100 s: the next one must differ
        return self.layer_ends(coll)[-1]

    def layer_ends(self, coll: str, subdir: str = "LATEST") -> list[int]:
        where = "LATEST" if subdir == "LATEST" else f"'{subdir}'"
        res = self.sql(f"SHOW BACKUP FROM {where} IN '{coll}'")
        col = res.columns.index("end_time")
        return sorted({int(Decimal(r[col])) for r in res.rows})

    def full_backups(self, coll: str) -> list[str]:
        return [p for (p,) in self.rows(f"SHOW BACKUPS IN '{coll}'")]

    def restore(self, stmt: str) -> tidemark.Result:
        res = self.sql(stmt)
        assert res.rows[0][1:3] == ("succeeded", 1.0), res.rows
        return res

    def tables(self, db: str) -> set[str]:
        return {r[1] for r in self.rows(f"SHOW TABLES FROM {db}")}

    def source_state(self, table: str, at: int) -> str:
        """``public``, ``importing``, ``restoring`` or ``absent``: the table at ``at``.

        A database that a RESTORE was still creating at ``at`` (OFFLINE) is not visible to
        queries: its tables are ``absent`` then.
        """
        try:
            self.rows(f"SELECT count(*) FROM {table} {aost(at)}")
        except SQLError as e:
            if e.code in ("42P01", "3D000"):
                return "absent"
            if e.code == "55000" and "importing" in e.message:
                return "importing"
            if e.code == "55000" and "restoring" in e.message:
                return "restoring"
            raise
        return "public"

    # -- raw reads (to count what a restore brought back before it repaired anything) -----

    def repair_of(self, restore_job: int, table: str, index: str) -> tuple[int, int, int]:
        """What RESTORE's revalidation changed in ``table@index``: (entries as the job
        ingested them from the backup, entries it was missing, entries it had wrong or
        extra). The ingest is at the job's one timestamp; a rebuild writes later."""
        db_name, _, name = table.rpartition(".")
        desc = self.conn.node.db.run(
            lambda txn: self.conn.session.table(txn, TableName(name, db_name or None)))
        idx = next(i for i in (desc.primary_index, *desc.indexes) if i.name == index)
        ingest_ts = self.conn.registry.get(restore_job).checkpoint["ts"]
        engine = self.conn.node.engine
        p = index_prefix(desc.id, idx.id)
        before = set(engine.scan(p, prefix_end(p), ingest_ts))
        after = set(engine.scan(p, prefix_end(p), engine.frontier()))
        return len(before), len(after - before), len(before - after)


# -- verification ---------------------------------------------------------------------------


def index_columns(c: Cluster, table: str) -> dict[str, list[str]]:
    """Each public index of ``table`` (from SHOW INDEXES): its columns, in order."""
    out: dict[str, list[str]] = {}
    for r in c.rows(f"SHOW INDEXES FROM {table}"):
        out.setdefault(r[1], []).append(r[4])
    return out


def primary_key(c: Cluster, table: str) -> list[str]:
    short = table.rpartition(".")[2]
    return [r[4] for r in c.rows(f"SHOW INDEXES FROM {table}")
            if r[1] == f"{short}_pkey" and not r[6]]


def fingerprints(c: Cluster, table: str, at: int | None = None) -> list[tuple]:
    clause = f" {aost(at)}" if at is not None else ""
    return c.rows(f"SHOW FINGERPRINTS FROM TABLE {table}{clause}")


def _diff(got: list[tuple], want: list[tuple]) -> str:
    g, w = set(got), set(want)
    return f"{len(w - g)} missing, {len(g - w)} unexpected (of {len(w)})"


def assert_restored(c: Cluster, src: str, dst: str, at: int) -> None:
    """``dst`` (restored) equals ``src`` as of ``at``; see the module docstring."""
    short = dst.rpartition(".")[2]
    primary = f"{short}_pkey"
    pk = primary_key(c, dst)
    assert pk, f"{dst} has no {primary}"
    order = ", ".join(pk)
    got = c.rows(f"SELECT * FROM {dst} ORDER BY {order}")
    want = c.rows(f"SELECT * FROM {src} {aost(at)} ORDER BY {order}")
    assert got == want, f"{dst} vs {src} at {format_ts(at)}: rows {_diff(got, want)}"
    for name, cols in index_columns(c, dst).items():
        if name == primary:
            continue
        sel = ", ".join(dict.fromkeys(pk + cols))
        via_index = c.rows(f"SELECT {sel} FROM {dst}@{name} ORDER BY {order}")
        via_primary = c.rows(f"SELECT {sel} FROM {dst}@{primary} ORDER BY {order}")
        source = c.rows(f"SELECT {sel} FROM {src} {aost(at)} ORDER BY {order}")
        assert via_index == via_primary, \
            f"{dst}@{name} vs its primary index: entries {_diff(via_index, via_primary)}"
        assert via_index == source, \
            f"{dst}@{name} vs {src} at {format_ts(at)}: entries {_diff(via_index, source)}"
    assert fingerprints(c, dst) == fingerprints(c, src, at), f"{dst} vs {src} fingerprints"


def assert_database_restored(c: Cluster, src_db: str, dst_db: str, at: int,
                             tables: list[str], pre_import: int | None = None) -> None:
    """Each of ``tables`` of ``src_db`` as of ``at`` is in ``dst_db`` as a user expects:

    * PUBLIC at ``at``: restored and equal to the source at ``at``;
    * OFFLINE for an IMPORT at ``at``: restored as it was before the import (the source at
      ``pre_import``, a moment just before the IMPORT statement);
    * OFFLINE for a RESTORE, or not existing, at ``at``: not restored.
    """
    present = c.tables(dst_db)
    for t in tables:
        state = c.source_state(f"{src_db}.{t}", at)
        where = f"{src_db}.{t} at {format_ts(at)} ({state})"
        if state == "public":
            assert t in present, f"{where}: missing from {dst_db}"
            assert_restored(c, f"{src_db}.{t}", f"{dst_db}.{t}", at)
        elif state == "importing":
            assert pre_import is not None, where
            assert t in present, f"{where}: missing from {dst_db}"
            assert_restored(c, f"{src_db}.{t}", f"{dst_db}.{t}", pre_import)
        else:
            assert t not in present, f"{where}: restored into {dst_db}"


def rebuilt_notices(res: tidemark.Result) -> list[str]:
    return [n for n in res.notices if "rebuilt" in n]
