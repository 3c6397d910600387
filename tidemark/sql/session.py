"""A SQL session: the current database, the explicit transaction, and statement dispatch.

A statement outside ``BEGIN ... COMMIT`` runs in its own transaction, retried automatically on
a serialization conflict; it either fully happens or not at all. Inside an explicit
transaction, a failing statement aborts the transaction (as in CockroachDB and PostgreSQL):
further statements are refused until ROLLBACK.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

from tidemark.catalog import catalog
from tidemark.catalog.descriptors import (
    DatabaseDescriptor,
    DescState,
    IndexState,
    TableDescriptor,
)
from tidemark.clock import format_ts, parse_ts, unique_int, wall_now
from tidemark.cluster.node import Node
from tidemark.cluster.versions import VERSION_SETTING
from tidemark.errors import FutureReadError, SQLError, TidemarkError, TransactionError
from tidemark.jobs.record import JobRecord
from tidemark.jobs.registry import Registry
from tidemark.kv.txn import Txn
from tidemark.schemachange.index import SCHEMA_CHANGE, build_index_in_txn, set_index_state
from tidemark.sql import ast, backup_stmt, ddl, dml, show
from tidemark.sql.expr import Compiler, Context, Scope, is_constant, literal_value
from tidemark.sql.import_stmt import run_import
from tidemark.sql.parser import parse, parse_one
from tidemark.sql.result import Result
from tidemark.sql.select import run_select

MAX_CACHED_NAMES = 1024
_MAX_TS = 2**63 - 1  # the largest timestamp (ns) a store holds


@functools.lru_cache(maxsize=512)
def _parse_cached(sql: str) -> tuple[ast.Statement, ...]:
    return tuple(parse(sql))


@functools.lru_cache(maxsize=1024)
def _default_expr(text: str) -> ast.Expr:
    stmt = parse_one(f"SELECT {text}")
    assert isinstance(stmt, ast.Select)
    return stmt.items[0].expr


class Session:
    """Executes SQL against one node; not thread-safe (use one session per thread)."""

    def __init__(self, node: Node, database: str = catalog.DEFAULT_DATABASE,
                 registry: Registry | None = None):
        self.node = node
        self.db = node.db
        self.registry = registry or Registry(node)
        # Called with the job record while a statement waits on a job (a progress bar).
        self.on_job_progress: Callable[[JobRecord], None] | None = None
        self._txn_jobs: list[int] = []  # jobs created in the explicit transaction
        self.database = database
        self.txn: Txn | None = None
        self.txn_aborted = False
        self.txn_read_only = False  # BEGIN AS OF SYSTEM TIME
        self._names: dict[tuple[int, str, str | None],
                          tuple[DatabaseDescriptor | None, TableDescriptor | None]] = {}
        catalog.bootstrap(self.db)

    # -- entry points --------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run every statement of ``sql``; returns the last one's result."""
        results = self.execute_script(sql, params)
        return results[-1] if results else Result.command("")

    def execute_script(self, sql: str, params: Sequence[Any] = ()) -> list[Result]:
        return [self.execute_statement(stmt, params) for stmt in _parse_cached(sql)]

    def execute_statement(self, stmt: ast.Statement, params: Sequence[Any] = ()) -> Result:
        if isinstance(stmt, ast.Begin):
            return self._begin(stmt, params)
        if isinstance(stmt, ast.Commit):
            return self._commit()
        if isinstance(stmt, ast.Rollback):
            self._end_txn()
            return Result.command("ROLLBACK")
        if self.txn is not None:
            if self.txn_aborted:
                raise SQLError("current transaction is aborted, commands ignored until end "
                               "of transaction block", code="25P02", hint="run ROLLBACK")
            try:
                if isinstance(stmt, ast.Select) and stmt.as_of is not None:
                    raise SQLError("AS OF SYSTEM TIME must be given on BEGIN inside a "
                                   "transaction", code="0A000",
                                   hint="BEGIN AS OF SYSTEM TIME '...'")
                return self._run_in(self.txn, stmt, params, [])
            except TidemarkError:
                self.txn_aborted = True
                raise
        return self._run_implicit(stmt, params)

    # -- transactions --------------------------------------------------------------------

    def _begin(self, stmt: ast.Begin, params: Sequence[Any]) -> Result:
        if self.txn is not None:
            raise SQLError("there is already a transaction in progress", code="25001")
        read_ts = None
        if stmt.as_of is not None:
            read_ts = self._as_of(stmt.as_of, params)
        self.txn = self.db.txn(read_ts)
        self.txn_read_only = read_ts is not None
        self.txn_aborted = False
        return Result.command("BEGIN")

    def _commit(self) -> Result:
        txn = self.txn
        if txn is None:
            return Result.command("COMMIT")
        if self.txn_aborted:
            self._end_txn()
            return Result.command("ROLLBACK")
        jobs, self._txn_jobs = self._txn_jobs, []
        try:
            txn.commit()
        finally:
            self._end_txn()
        for job_id in jobs:  # schema changes of the transaction finish after it commits
            self.wait_job(job_id)
        return Result.command("COMMIT")

    def _end_txn(self) -> None:
        self._txn_jobs = []
        if self.txn is not None:
            self.txn.rollback()
        self.txn = None
        self.txn_aborted = False

    def _as_of(self, expr: ast.Expr, params: Sequence[Any]) -> int:
        if not is_constant(expr):
            raise SQLError("AS OF SYSTEM TIME needs a constant", code="42601")
        value = literal_value(expr, Context(params))
        now = wall_now()
        forms = ("a decimal timestamp such as cluster_logical_timestamp() gives, an interval "
                 "such as '-10s', or a time such as '2026-01-02 03:04:05'")
        if value is None or isinstance(value, bool) or \
                not isinstance(value, str | int | float | Decimal):
            shown = "NULL" if value is None else type(value).__name__
            raise SQLError(f"AS OF SYSTEM TIME needs a timestamp, not {shown}", code="22023",
                           hint=f"give {forms}")
        if isinstance(value, int):
            ts = value
        else:
            try:
                ts = parse_ts(str(value), now)
            except ValueError as exc:
                raise SQLError(f"AS OF SYSTEM TIME: {exc}", code="22023") from None
        # Timestamps are 64-bit nanoseconds since the Unix epoch.
        if ts < 0:
            raise SQLError(
                f"AS OF SYSTEM TIME {str(value)!r} is before 1970-01-01 (UTC), the earliest "
                "timestamp", code="22008", hint=f"give {forms}")
        if ts > _MAX_TS:  # what the store would say, before the number reaches SQLite
            raise FutureReadError(
                f"cannot read at {format_ts(ts)}: it is in the future (the time is now "
                f"{format_ts(now)})", hint="read at a time at or before now()")
        return ts

    def _run_implicit(self, stmt: ast.Statement, params: Sequence[Any]) -> Result:
        if isinstance(stmt, (ast.Select, ast.ShowFingerprints)) and stmt.as_of is not None:
            txn = self.db.txn(self._as_of(stmt.as_of, params))
            result = self._run_in(txn, stmt, params, [])
            txn.commit()
            return result
        if isinstance(stmt, ast.CreateIndex):
            return self._create_index_online(stmt)
        if isinstance(stmt, (ast.PauseJob, ast.ResumeJob, ast.CancelJob)):
            return self._control_job(stmt, params)
        if isinstance(stmt, ast.Import):
            return run_import(self, stmt, params)
        if isinstance(stmt, ast.Backup):
            return backup_stmt.run_backup(self, stmt, params)
        if isinstance(stmt, ast.Restore):
            return backup_stmt.run_restore(self, stmt, params)
        if isinstance(stmt, ast.ShowBackups):
            return backup_stmt.show_backups(self, stmt, params)
        if isinstance(stmt, ast.ShowBackup):
            return backup_stmt.show_backup(self, stmt, params)
        if isinstance(stmt, ast.ShowJob) and stmt.when_complete:
            job_id = self._job_id(stmt.job_id, params)
            try:
                self.wait_job(job_id)
            except TidemarkError:
                pass  # SHOW JOB WHEN COMPLETE reports how it ended; it does not fail
            return self.db.run(lambda txn: show.show_jobs(
                [self.registry.get(job_id, txn)]))
        if isinstance(stmt, ast.SetClusterSetting) and stmt.name == VERSION_SETTING.name:
            value = self._setting_value(stmt, params)
            if value is None:
                raise SQLError("the cluster version cannot be reset", code="22023")
            self.node.version.finalize(str(value))
            return Result.command("SET CLUSTER SETTING")
        if isinstance(stmt, ast.Use):
            self.db.run(lambda txn: self._database(txn, stmt.database))
            self.database = stmt.database
            return Result.command("SET")
        cleanup: list[tuple[bytes, bytes]] = []

        def attempt(txn: Txn) -> Result:
            cleanup.clear()
            self._txn_jobs = []
            return self._run_in(txn, stmt, params, cleanup)

        result = self.db.run(attempt)
        for start, end in cleanup:
            self.db.engine.delete_range(start, end)
        jobs, self._txn_jobs = self._txn_jobs, []
        for job_id in jobs:
            self.wait_job(job_id)
        return result

    # -- statements ----------------------------------------------------------------------

    def _context(self, txn: Txn, params: Sequence[Any]) -> Context:
        now = txn.read_ts if txn.historical else max(wall_now(), txn.read_ts)
        return Context(params=params, read_ts=txn.read_ts, now=now, unique_rowid=unique_int)

    def _resolve(self, txn: Txn, database: str, table: str | None
                 ) -> tuple[DatabaseDescriptor | None, TableDescriptor | None]:
        """Names to descriptors, cached per schema generation (one read instead of four).

        A transaction that changed the schema itself sees a generation that may never commit
        (or commit with other contents): it neither uses nor fills the cache.
        """
        cacheable = not catalog.schema_written(txn)
        key = (catalog.schema_generation(txn), database, table)
        hit = self._names.get(key) if cacheable else None
        if hit is not None:
            return hit
        db = catalog.database_by_name(txn, database)
        if db is not None and db.state is not DescState.PUBLIC:
            db = None
        desc = None
        if db is not None and table is not None:
            desc = catalog.table_by_name(txn, db.id, table)
            if desc is not None and desc.state is DescState.DROP:
                desc = None
        if cacheable:
            if len(self._names) > MAX_CACHED_NAMES:
                self._names.clear()
            self._names[key] = (db, desc)
        return db, desc

    def _database(self, txn: Txn, name: str | None = None) -> DatabaseDescriptor:
        name = name or self.database
        db, _ = self._resolve(txn, name, None)
        if db is None:
            raise SQLError(f'database "{name}" does not exist', code="3D000",
                           hint="SHOW DATABASES lists them; CREATE DATABASE makes one")
        return db

    def _lookup_table(self, txn: Txn, tn: ast.TableName
                      ) -> tuple[DatabaseDescriptor, TableDescriptor | None]:
        name = tn.database or self.database
        db, table = self._resolve(txn, name, tn.name)
        if db is None:
            raise SQLError(f'database "{name}" does not exist', code="3D000",
                           hint="SHOW DATABASES lists them; CREATE DATABASE makes one")
        return db, table

    def table(self, txn: Txn, tn: ast.TableName) -> TableDescriptor:
        _, table = self._lookup_table(txn, tn)
        if table is None:
            raise SQLError(f'relation "{tn.name}" does not exist', code="42P01")
        if table.state is DescState.OFFLINE:
            raise SQLError(f'table "{tn.name}" is offline: {table.offline_reason or "busy"}',
                           code="55000", hint="wait for the job using it to finish")
        return table

    def _defaults(self, table: TableDescriptor, ctx: Context) -> dict[int, Callable[[], Any]]:
        comp = Compiler(Scope(), ctx)
        out: dict[int, Callable[[], Any]] = {}
        for c in table.columns:
            if c.default is not None:
                fn = comp.compile(_default_expr(c.default))
                out[c.id] = functools.partial(fn, [])
        return out

    def _setting_value(self, stmt: ast.SetClusterSetting, params: Sequence[Any]) -> Any:
        if isinstance(stmt.value, ast.DefaultExpr):
            return None
        return Compiler(Scope(), Context(params)).compile(stmt.value)([])

    def _run_in(self, txn: Txn, stmt: ast.Statement, params: Sequence[Any],
                cleanup: list[tuple[bytes, bytes]]) -> Result:
        ctx = self._context(txn, params)
        if isinstance(stmt, ast.Select):
            table = self.table(txn, stmt.from_.table) if stmt.from_ is not None else None
            return run_select(txn, stmt, ctx, table)
        if isinstance(stmt, (ast.Insert, ast.Update, ast.Delete)) and \
                self.txn_read_only and txn is self.txn:
            raise SQLError("cannot execute a write in a read-only transaction (AS OF SYSTEM "
                           "TIME)", code="25006")
        if isinstance(stmt, ast.Insert):
            table = self.table(txn, stmt.table)
            return dml.run_insert(
                txn, stmt, ctx, table, self._defaults(table, ctx),
                lambda sel: self._run_in(txn, sel, params, cleanup))
        if isinstance(stmt, ast.Update):
            return dml.run_update(txn, stmt, ctx, self.table(txn, stmt.table))
        if isinstance(stmt, ast.Delete):
            return dml.run_delete(txn, stmt, ctx, self.table(txn, stmt.table))
        if isinstance(stmt, ast.CreateDatabase):
            return ddl.create_database(txn, stmt)
        if isinstance(stmt, ast.DropDatabase):
            return ddl.drop_database(txn, stmt, cleanup)
        if isinstance(stmt, ast.CreateTable):
            return ddl.create_table(txn, stmt, self._database(txn, stmt.table.database), ctx)
        if isinstance(stmt, ast.DropTable):
            return ddl.drop_table(txn, stmt, self._lookup_table, cleanup)
        if isinstance(stmt, ast.CreateIndex):  # inside an explicit transaction
            added = ddl.add_index(txn, self.table(txn, stmt.table), stmt, IndexState.PUBLIC)
            if added is not None:
                build_index_in_txn(txn, *added)
            return Result.command("CREATE INDEX")
        if isinstance(stmt, ast.DropIndex):
            return self._drop_index(txn, stmt, cleanup)
        if isinstance(stmt, ast.Use):
            self._database(txn, stmt.database)
            self.database = stmt.database
            return Result.command("SET")
        if isinstance(stmt, ast.ShowDatabases):
            return show.show_databases(txn)
        if isinstance(stmt, ast.ShowTables):
            return show.show_tables(txn, self._database(txn, stmt.database))
        if isinstance(stmt, ast.ShowColumns):
            return show.show_columns(self.table(txn, stmt.table))
        if isinstance(stmt, ast.ShowIndexes):
            return show.show_indexes(self.table(txn, stmt.table))
        if isinstance(stmt, ast.ShowCreateTable):
            return show.show_create_table(self.table(txn, stmt.table))
        if isinstance(stmt, ast.ShowClusterSetting):
            return show.show_cluster_setting(self.node, txn, stmt.name)
        if isinstance(stmt, ast.ShowClusterSettings):
            return show.show_cluster_settings(self.node, txn, stmt.all)
        if isinstance(stmt, ast.SetClusterSetting):
            if stmt.name == VERSION_SETTING.name:
                raise TransactionError("SET CLUSTER SETTING version cannot run inside a "
                                       "transaction", code="25001")
            self.node.settings.set(stmt.name, self._setting_value(stmt, params), txn)
            return Result.command("SET CLUSTER SETTING")
        if isinstance(stmt, ast.ResetClusterSetting):
            self.node.settings.set(stmt.name, None, txn)
            return Result.command("SET CLUSTER SETTING")
        if isinstance(stmt, ast.ShowFingerprints):
            return show.show_fingerprints(txn, self.table(txn, stmt.table))
        if isinstance(stmt, ast.ShowJobs):
            return show.show_jobs(self.registry.all(txn))
        if isinstance(stmt, ast.ShowJob):
            if stmt.when_complete:
                raise SQLError("SHOW JOB WHEN COMPLETE cannot run inside a transaction",
                               code="25001")
            return show.show_jobs([self.registry.get(self._job_id(stmt.job_id, params), txn)])
        if isinstance(stmt, (ast.PauseJob, ast.ResumeJob, ast.CancelJob)):
            raise SQLError(f"{type(stmt).__name__.removesuffix('Job').upper()} JOB cannot run "
                           "inside a transaction", code="25001")
        if isinstance(stmt, (ast.Import, ast.Backup, ast.Restore, ast.ShowBackups,
                             ast.ShowBackup)):
            name = stmt.text.split(None, 1)[0].upper() if stmt.text else "this statement"
            raise SQLError(f"{name} cannot run inside a transaction", code="25001")
        raise SQLError(f"{type(stmt).__name__.upper()} is not supported yet", code="0A000")

    def _drop_index(self, txn: Txn, stmt: ast.DropIndex,
                    cleanup: list[tuple[bytes, bytes]]) -> Result:
        for name in stmt.indexes:
            table, index = self._find_index(txn, name)
            if index is None or table is None:
                if stmt.if_exists:
                    continue
                raise SQLError(f'index "{name.name}" does not exist', code="42704")
            if index.id == table.primary_index.id:
                raise SQLError(f'cannot drop the primary index "{index.name}" of table '
                               f'"{table.name}"', code="0A000")
            if index.state is not IndexState.PUBLIC:
                raise SQLError(f'index "{index.name}" is being built or dropped by a job',
                               code="55000", hint="CANCEL JOB on its CREATE INDEX job "
                               "removes an index that is being built (SHOW JOBS)")
            set_index_state(txn, table.id, index.id, IndexState.DROP)
            self._txn_jobs.append(self.registry.create(
                txn, SCHEMA_CHANGE, stmt.text,
                {"op": "drop", "table_id": table.id, "index_id": index.id}, cancelable=False))
        return Result.command("DROP INDEX")

    def _find_index(self, txn: Txn, name: ast.IndexName) -> tuple[Any, Any]:
        if name.table is not None:
            table = self.table(txn, name.table)
            return table, table.index(name.name)
        db = self._database(txn)
        for _, table_id in catalog.list_names(txn, db.id):
            table = catalog.get_descriptor(txn, table_id)
            if isinstance(table, TableDescriptor) and table.index(name.name) is not None:
                return table, table.index(name.name)
        return None, None

    def _create_index_online(self, stmt: ast.CreateIndex) -> Result:
        """Add the index DELETE_ONLY with its backfill job, then wait for the job."""
        def add(txn: Txn) -> int | None:
            added = ddl.add_index(txn, self.table(txn, stmt.table), stmt,
                                  IndexState.DELETE_ONLY)
            if added is None:
                return None  # IF NOT EXISTS, and it exists
            table, index = added
            return self.registry.create(txn, SCHEMA_CHANGE, stmt.text, {
                "op": "create", "table_id": table.id, "index_id": index.id})

        job_id = self.db.run(add)
        if job_id is not None:
            self.wait_job(job_id)
        return Result.command("CREATE INDEX")

    # -- jobs ----------------------------------------------------------------------------

    def wait_job(self, job_id: int) -> JobRecord:
        return self.registry.wait(job_id, self.on_job_progress)

    def _job_id(self, expr: ast.Expr, params: Sequence[Any]) -> int:
        value = Compiler(Scope(), Context(params)).compile(expr)([])
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SQLError(f"a job ID must be an integer, not {value!r}", code="22023")
        return value

    def _control_job(self, stmt: ast.PauseJob | ast.ResumeJob | ast.CancelJob,
                     params: Sequence[Any]) -> Result:
        job_id = self._job_id(stmt.job_id, params)
        if isinstance(stmt, ast.PauseJob):
            self.registry.pause(job_id)
            return Result.command("PAUSE JOB")
        if isinstance(stmt, ast.ResumeJob):
            self.registry.resume(job_id)
            return Result.command("RESUME JOB")
        self.registry.cancel(job_id)
        return Result.command("CANCEL JOB")
