"""BACKUP/RESTORE round trip: a restore equals its source, at the time it was restored to.

Each hypothesis example opens a fresh store (a temporary directory, removed afterwards) and
runs a random history on it, taking backups of random targets along the way, then restores
every backup at many times and compares each restore with the source at that time.

**Schema.** Databases ``d1``-``d3`` (besides ``defaultdb``, which is always there and never
dropped) hold tables ``t1``-``t3`` (at most four tables live at once), each drawn when it is
created: 2-5 columns of INT, FLOAT, STRING, BOOL, BYTES and TIMESTAMP, a one- or two-column
primary key, secondary indexes some DESC, some STORING, some UNIQUE (a unique index holds
every primary-key column or a "wide" column whose values practically never repeat, so it
stays unique; a statement that collides anyway fails and changes nothing). It starts with
one table in ``d1``.

**Steps** (every statement names its table ``db.t``):

* writes (at most 200 rows per table): INSERT ... ON CONFLICT DO NOTHING, UPSERT, UPDATE
  (of a primary key too), DELETE, and explicit transactions of several writes over tables
  of several databases, committed or rolled back;
* CREATE [UNIQUE] INDEX (an online job, in small backfill batches, or inside a transaction
  with writes) and DROP INDEX; a few unique builds go over columns that may hold duplicates:
  such a build must fail with 23505, and what it wrote must not come back in any restore;
  CREATE INDEX jobs paused after their first backfill chunk (``jobs.debug.pausepoints``),
  left WRITE_ONLY and half built across later steps and backups, then resumed or canceled
  (or their table dropped under them);
* CREATE TABLE and DROP TABLE (a dropped name is often created again, with another schema),
  CREATE DATABASE and DROP DATABASE ... CASCADE (a dropped database's name too). The SQL
  has no RENAME (docs/SQL.md), so names only come and go;
* GC passes (``gc.ttlseconds`` and ``Node.run_gc(now)``) at a threshold no later than the
  end of the newest backup, so the next incremental still has its history; rarely a pass up
  to now, after which the next incremental must fail with XXC01 (history already removed)
  and a new full backup starts a new chain;
* backups into one collection. A new chain (a full backup) draws its targets from what
  exists at its end time: the whole cluster (bare ``BACKUP INTO``), ``DATABASE`` one or
  several databases, or ``TABLE`` a subset of the tables; every layer of a chain is WITH
  revision_history or none. Incrementals (``BACKUP ... INTO LATEST IN``) name the chain's
  targets; one whose target no longer exists must fail (3D000 for a database, 42P01 for a
  table) and a new chain starts. Some backups are taken AS OF SYSTEM TIME a past time
  (often mid schema change: a half-built index); LATEST must name the newest full backup by
  end time, so a full backup of an older time starts a chain that later incrementals do not
  extend.

After every step the test reads the source as of ``cluster_logical_timestamp()`` in a
``BEGIN AS OF SYSTEM TIME`` transaction: every database, its tables, per table ``SHOW
FINGERPRINTS`` (one per PUBLIC index, independent of table IDs) and its rows. After every
backup it reads the layer's end time (from the chain's manifests: ``SHOW BACKUP`` lists
tables, and a layer may hold none), checks that ``SHOW BACKUP`` lists exactly the target
tables of that time (and that ``LATEST`` shows the newest chain), reads the source as of the
end time and, in a revision-history chain, as of up to three arbitrary nanoseconds strictly
inside the new layer (often a commit timestamp of a descriptor - a DROP, a CREATE, a step of
an index build - or of data, or the nanosecond before one). Everything is read when it
happens, before a later GC pass can remove the history. A last backup ends every example.

**The check.** Every chain is restored at each layer's end time and, with revision history,
at 1-3 times strictly inside the chain (and, when recorded, at a time before the full
backup's end but after the GC threshold it recorded as its revision start). What must come
back at time ``x`` is exactly what existed at ``x`` and was a target - the targets named as
the backup statement names them: every database for the cluster, the named databases with
every table they had at ``x``, the named tables that existed at ``x``. Nothing else may come
back (a non-target table, or a database or table dropped by ``x`` or not yet created), and
nothing of it may be missing; each restored table must have exactly the source's PUBLIC
indexes of ``x`` (names, order) with equal fingerprints, and the same rows. Restores:

* full cluster: a bare ``RESTORE FROM`` into a fresh empty store (``SHOW DATABASES`` there
  must be exactly the databases of ``x``), or RESTORE DATABASE / RESTORE TABLE of what is in
  it into the source store;
* databases: each ``RESTORE DATABASE d ... WITH new_db_name``, or all of them at once into a
  fresh store under their own names;
* tables: ``RESTORE TABLE d.t, ... WITH into_db`` (a new database per source database).

Then probes: RESTORE DATABASE (3D000) and RESTORE TABLE (42P01) of names that must not come
back - non-targets that existed at ``x``, and names that did not exist at ``x`` (dropped,
not yet created) - must fail and create nothing. A chain without revision history must
refuse a time strictly inside it (22023) and create nothing.

Hypothesis draws the kind of each step and a seed for its details (schemas, values, which
rows, which times); a failing example prints every statement it ran, with the step that ran
it and the time after each step, so a restore time can be placed in the history.

``TIDEMARK_ROUNDTRIP_EXAMPLES`` sets the number of examples (default 60, 20-30 s on two
busy cores); raise it to hunt for bugs, e.g. ``TIDEMARK_ROUNDTRIP_EXAMPLES=300`` (under a
second each; past a few hundred, lift pytest-timeout's 300 s limit too: ``--timeout=0``).
Hypothesis stops at the first failing example and shrinks it, for at most
``TIDEMARK_ROUNDTRIP_SHRINK_SECONDS`` (default 90, so that a failure is reported before
pytest-timeout's limit); its example database replays the failure on the next run.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

import tidemark
from tidemark.backup.chain import load_chain
from tidemark.clock import NANOS_PER_SECOND, format_ts
from tidemark.cloud import open_storage
from tidemark.errors import JobPausedError, TidemarkError
from tidemark.kv.keys import index_prefix, prefix_end, table_prefix
from tidemark.kv.system import DESCRIPTOR_TABLE_ID, FIRST_USER_ID, PRIMARY_INDEX_ID
from tidemark.storage.engine import KEY_MAX

DESCRIPTORS = index_prefix(DESCRIPTOR_TABLE_ID, PRIMARY_INDEX_ID)

MAX_ROWS = 200  # per table
MAX_INDEXES = 4  # secondary indexes per table
MAX_TABLES = 4  # live at once
DEFAULT_DB = "defaultdb"  # always there, never dropped
DATABASES = ("d1", "d2", "d3")  # created and dropped by the history
KNOWN_DBS = (DEFAULT_DB, *DATABASES)
TABLE_NAMES = ("t1", "t2", "t3")  # in each database
TYPES = ("INT", "FLOAT", "STRING", "BOOL", "BYTES", "TIMESTAMP")
KEY_TYPES = ("INT", "STRING", "BYTES", "TIMESTAMP")  # a first primary-key column: many values
WIDE_TYPES = ("INT", "STRING", "BYTES", "TIMESTAMP")  # can hold practically unique values
FLOATS = (-2.5, -1.0, 0.0, 0.25, 0.5, 1.0, 1.5, 7.75, 1e300)
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
WRITE_ERRORS = {"23505", "23502", "21000"}  # unique, NOT NULL, a row proposed twice
GC_ERROR = "XXC01"  # an incremental whose history GC already removed
NO_DATABASE, NO_TABLE = "3D000", "42P01"
FOLDER_NANOS = 10**7  # backup folders are named by their end time, to 10 ms

STEPS = (["insert"] * 5 + ["update"] * 2 + ["delete", "txn"] + ["create_index"] * 2 +
         ["paused_index", "finish_job", "drop_index"] + ["create_table"] * 2 +
         ["drop_table", "create_database", "drop_database", "gc", "gc_all"] +
         ["backup"] * 4 + ["new_chain"] * 2)
SCHEMA_STEPS = {"txn", "create_index", "paused_index", "finish_job", "drop_index",
                "create_table", "drop_table", "create_database", "drop_database"}
PAUSE_POINT = "indexbackfill.after_first_chunk"


# --- schema -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Col:
    name: str
    type: str
    not_null: bool
    wide: bool  # values drawn from a huge domain: practically unique


@dataclass(frozen=True)
class Idx:
    name: str
    cols: tuple[tuple[str, bool], ...]  # (column, descending)
    unique: bool
    storing: tuple[str, ...] = ()

    def sql(self) -> str:
        key = ", ".join(f"{c}{' DESC' if d else ''}" for c, d in self.cols)
        s = f"{'UNIQUE ' if self.unique else ''}INDEX {self.name} ({key})"
        return s + (f" STORING ({', '.join(self.storing)})" if self.storing else "")


@dataclass(eq=False)  # compared by identity: a name created again is another table
class Table:
    db: str
    name: str
    cols: list[Col]
    pk: tuple[tuple[str, bool], ...]
    indexes: list[Idx] = field(default_factory=list)  # PUBLIC now
    next_index: int = 1

    @property
    def qname(self) -> str:
        return f"{self.db}.{self.name}"

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cols]

    @property
    def pk_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.pk)

    def col(self, name: str) -> Col:
        return next(c for c in self.cols if c.name == name)

    def pos(self, name: str) -> int:
        return self.names.index(name)

    def index_names(self) -> list[str]:
        return [f"{self.name}_pkey", *(i.name for i in self.indexes)]

    def create_sql(self) -> str:
        parts = [f"{c.name} {c.type}{' NOT NULL' if c.not_null else ''}" for c in self.cols]
        parts.append("PRIMARY KEY (" + ", ".join(f"{c}{' DESC' if d else ''}"
                                                 for c, d in self.pk) + ")")
        parts += [i.sql() for i in self.indexes]
        return f"CREATE TABLE {self.qname} ({', '.join(parts)})"

    def new_index(self, rnd: random.Random, may_collide: bool = False) -> Idx:
        """A new index; UNIQUE only where the values stay unique (every primary-key column
        or a wide column in the key), unless ``may_collide``: a build that may meet
        duplicates, and then fails."""
        name = f"{self.name}_i{self.next_index}"
        self.next_index += 1
        cols = rnd.sample(self.names, rnd.randint(1, min(2, len(self.names))))
        key = tuple((c, rnd.random() < 0.4) for c in cols)
        stays_unique = set(self.pk_names) <= set(cols) or any(self.col(c).wide for c in cols)
        unique = (stays_unique or may_collide) and rnd.random() < 0.5
        rest = [c for c in self.names if c not in cols and c not in self.pk_names]
        storing: tuple[str, ...] = ()
        if rest and rnd.random() < 0.4:
            storing = tuple(rnd.sample(rest, rnd.randint(1, len(rest))))
        return Idx(name, key, unique, storing)


def random_table(rnd: random.Random, db: str, name: str) -> Table:
    n = rnd.randint(2, 5)
    names = [f"c{i}" for i in range(n)]
    pk_cols = rnd.sample(names, rnd.randint(1, 2))
    cols = []
    for c in names:
        typ = rnd.choice(KEY_TYPES if c == pk_cols[0] else TYPES)
        not_null = c in pk_cols or rnd.randint(0, 3) == 0
        wide = c not in pk_cols and typ in WIDE_TYPES and rnd.randint(0, 2) == 0
        cols.append(Col(c, typ, not_null, wide))
    table = Table(db, name, cols, tuple((c, rnd.random() < 0.5) for c in pk_cols))
    for _ in range(rnd.randint(0, 2)):
        table.indexes.append(table.new_index(rnd))
    return table


# --- values -----------------------------------------------------------------------------------


def random_value(rnd: random.Random, col: Col, key: bool = False) -> Any:
    if not col.not_null and rnd.random() < 0.2:
        return None
    typ = col.type
    if typ == "INT":
        if col.wide:
            return rnd.randint(-(2**62), 2**62)
        if key:
            return rnd.randint(0, 300)
        return rnd.choice([-(2**40), 2**40]) if rnd.random() < 0.1 else rnd.randint(-3, 9)
    if typ == "FLOAT":
        return rnd.choice(FLOATS)
    if typ == "BOOL":
        return rnd.random() < 0.5
    if typ == "STRING":
        if col.wide:
            return "".join(rnd.choice("abcdefghijklmnop") for _ in range(12))
        alphabet, n = ("abcd", 4) if key else ("ab'%é", 3)
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, n)))
    if typ == "BYTES":
        if col.wide:
            return rnd.randbytes(10)
        alphabet, n = (b"\x00\x01a\xff", 4) if key else (b"\x00a\xff", 3)
        return bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, n)))
    assert typ == "TIMESTAMP"
    if col.wide:
        return EPOCH + dt.timedelta(seconds=rnd.randint(0, 10**9), microseconds=rnd.randint(
            0, 999_999))
    return EPOCH + dt.timedelta(minutes=rnd.randint(0, 300 if key else 5))


def random_row(rnd: random.Random, t: Table) -> list[Any]:
    return [random_value(rnd, c, key=c.name in t.pk_names) for c in t.cols]


def aost_sql(ts: int | None) -> str:
    return "" if ts is None else f" AS OF SYSTEM TIME {format_ts(ts)}"


# --- what the source held at a time -----------------------------------------------------------

# A table then: (SHOW FINGERPRINTS rows: (index name, fingerprint) per PUBLIC index, its rows
# sorted); the source then: database name -> table name -> table.
TableState = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]
State = dict[str, dict[str, TableState]]
Ids = dict[str, tuple[int, dict[str, int]]]  # database -> (its ID, table -> ID)


def sort_key(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple((v is not None, v if v is not None else 0) for v in row)


def sorted_rows(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in rows), key=sort_key)


def describe(state: State) -> str:
    """``{db: [table(rows), ...]}``, for messages."""
    return "{" + ", ".join(
        f"{db}: [" + ", ".join(f"{t}({len(s[1])} rows)" for t, s in sorted(tables.items()))
        + "]" for db, tables in sorted(state.items())) + "}"


@dataclass(frozen=True)
class Targets:
    """What a chain backs up, as its BACKUP statement names it."""

    kind: str  # "cluster", "databases" or "tables"
    names: tuple[str, ...] = ()  # database names, or "db.table"

    def sql(self) -> str:
        if self.kind == "cluster":
            return ""
        return f"{'DATABASE' if self.kind == 'databases' else 'TABLE'} {', '.join(self.names)} "

    def describe(self) -> str:
        return self.sql().strip() or "the cluster"

    def of(self, state: State, ids: Ids | None = None,
           covered: frozenset[int] | None = None) -> State:
        """What of ``state`` these targets hold: what a restore to that time gives. A name
        is resolved when each layer ends: with ``ids`` (the descriptor IDs then) only the
        objects ``covered`` count (what the names meant at the end of the layer restored,
        and of the layer before it), not another object that had the name at some time."""
        def ok(db: str, t: str | None = None) -> bool:
            if covered is None or ids is None:
                return True
            return (ids[db][0] if t is None else ids[db][1][t]) in covered

        if self.kind == "cluster":
            return {db: dict(tables) for db, tables in state.items()}
        if self.kind == "databases":
            return {db: dict(state[db]) for db in self.names if db in state and ok(db)}
        out: State = {}
        for q in self.names:
            db, t = q.split(".")
            if t in state.get(db, {}) and ok(db, t):
                out.setdefault(db, {})[t] = state[db][t]
        return out

    def ids_of(self, ids: Ids) -> frozenset[int]:
        """The IDs of the objects these names resolve to (a layer ending then covers)."""
        if self.kind == "cluster":
            return frozenset(i for db, (db_id, tables) in ids.items()
                             for i in (db_id, *tables.values()))
        if self.kind == "databases":
            return frozenset(ids[db][0] for db in self.names if db in ids)
        return frozenset(ids[db][1][t] for db, _, t in (q.partition(".") for q in self.names)
                         if t in ids.get(db, (0, {}))[1])

    def missing(self, state: State) -> str | None:
        """The SQLSTATE a backup of these targets fails with at ``state`` (a target gone)."""
        if self.kind == "databases":
            return NO_DATABASE if any(db not in state for db in self.names) else None
        for q in self.names if self.kind == "tables" else ():
            db, t = q.split(".")
            if db not in state:
                return NO_DATABASE
            if t not in state[db]:
                return NO_TABLE
        return None


@dataclass
class Layer:
    end: int
    state: State
    covered: frozenset[int]  # the IDs the targets resolved to at its end


@dataclass
class Chain:
    subdir: str
    targets: Targets
    revision_history: bool
    gc_threshold: int  # when the full backup was taken: its revision history starts here
    layers: list[Layer] = field(default_factory=list)
    inside: list[tuple[int, State]] = field(default_factory=list)  # within a later layer
    before: list[tuple[int, State]] = field(default_factory=list)  # before the full's end


# --- the history ------------------------------------------------------------------------------


class History:
    def __init__(self, conn: tidemark.Connection, tmp: str):
        self.conn = conn
        self.tmp = tmp
        self.collection = f"file://{tmp}/collection"
        self.dbs: set[str] = set()  # user databases now (defaultdb is always there)
        self.tables: list[Table] = []  # tables now
        self.chains: list[Chain] = []
        self.samples: list[tuple[int, State]] = []  # (time, source then), after each step
        self.windows: list[tuple[int, int]] = []  # (before, after) a schema change or txn
        self.start = 0  # after the setup: restore times are picked from here on
        self.gc_threshold = 0  # the store's, as the last GC pass left it
        self.restored = 0
        self.step_no = 0
        self.stats: dict[str, int] = {}
        self.paused: list[tuple[Table, Idx, int]] = []  # CREATE INDEX jobs paused mid backfill
        self.ids: dict[int, Ids] = {}  # the descriptor IDs at each time a state was read

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    # -- SQL --

    def sql(self, sql: str, params: Sequence[Any] = (), conn: Any = None) -> Any:
        where = "" if conn is None else "[fresh store] "
        note(f"{where}{sql} {list(params) if params else ''}".rstrip())
        return (self.conn if conn is None else conn).execute(sql, params)

    def write(self, sql: str, params: Sequence[Any] = ()) -> bool:
        """A write; False when it failed on a constraint (it then changed nothing)."""
        try:
            self.sql(sql, params)
        except TidemarkError as exc:
            if exc.code not in WRITE_ERRORS:
                raise
            note(f"  -> {exc.code}")
            return False
        return True

    def now(self) -> int:
        value = self.conn.execute("SELECT cluster_logical_timestamp()").rows[0][0]
        return int(value)  # Decimal('<nanos>.0000000000')

    def rows(self, t: Table) -> list[tuple[Any, ...]]:
        return self.conn.execute(f"SELECT * FROM {t.qname}").rows

    def state_at(self, ts: int) -> State:
        """The source at ``ts``: its databases, their tables, indexes and rows (and, in
        ``self.ids``, their descriptor IDs then)."""
        state = read_state(self.conn, f"BEGIN AS OF SYSTEM TIME {format_ts(ts)}", KNOWN_DBS)
        self.ids[ts] = read_ids(self.conn, ts, state)
        return state

    def check_model(self, state: State) -> None:
        """The source holds what the test thinks it made (databases, tables, PUBLIC
        indexes)."""
        assert set(state) == {DEFAULT_DB, *self.dbs}, (describe(state), self.dbs)
        for db, tables in state.items():
            assert set(tables) == {t.name for t in self.tables if t.db == db}, describe(state)
        for t in self.tables:
            assert sorted(n for n, _ in state[t.db][t.name][0]) == sorted(t.index_names())

    # -- steps --

    def run(self, kind: str, rnd: random.Random) -> None:
        if not self.tables and kind in ("insert", "update", "delete", "txn", "create_index",
                                        "paused_index", "drop_index"):
            kind = "create_table"  # nothing to write to
        self.step_no += 1
        note(f"-- step {self.step_no}: {kind}")
        self.count(kind)
        before = self.now()
        getattr(self, f"step_{kind}")(rnd)
        ts = self.now()
        self.samples.append((ts, self.state_at(ts)))
        note(f"-- after step {self.step_no}: {format_ts(ts)} {describe(self.samples[-1][1])}")
        if kind in SCHEMA_STEPS:
            self.windows.append((before, ts))

    def commits(self, lo: int, hi: int, descriptors_only: bool = False) -> list[int]:
        """The MVCC timestamps in ``[lo, hi)`` of descriptor versions and (unless
        ``descriptors_only``) of user data: the times at which what a restore gives can
        change. Job records and settings are left out: how many of those a job writes
        depends on timing, and hypothesis replays an example best when its picks do not."""
        engine = self.conn.node.engine
        spans = [(DESCRIPTORS, prefix_end(DESCRIPTORS))]
        if not descriptors_only:
            spans.append((table_prefix(FIRST_USER_ID), KEY_MAX))
        return sorted({ts for span in spans for _, ts, _, _ in engine.versions(*span)
                       if lo <= ts < hi})

    def pick_time(self, rnd: random.Random, lo: int, hi: int) -> int | None:
        """A time in ``[lo, hi)``, or None if there is none: often a commit timestamp (or
        the nanosecond before one) of a descriptor (a schema change's steps: a DROP, an
        index mid backfill, say) or of any data, or a time during a schema change or
        transaction. Times are picked among commits (any time between two commits reads
        what the earlier one left), so a replayed example picks the same moments."""
        if hi <= lo:
            return None
        how = rnd.random()
        if how < 0.6:
            commits = sorted({ts - d for ts in self.commits(lo, hi + 1, how < 0.35)
                              for d in (0, 1) if lo <= ts - d < hi})
            if commits:
                return rnd.choice(commits)
        windows = [(max(a, lo), min(b, hi)) for a, b in self.windows]
        windows = [(a, b) for a, b in windows if a < b]
        if windows and rnd.random() < 0.7:
            lo, hi = rnd.choice(windows)
        return rnd.choice([lo, *self.commits(lo, hi)])

    def step_insert(self, rnd: random.Random, t: Table | None = None) -> bool:
        t = t or rnd.choice(self.tables)
        room = MAX_ROWS - len(self.rows(t))
        if room <= 0:
            return self.step_delete(rnd, t)
        batch: dict[tuple[Any, ...], list[Any]] = {}
        for _ in range(min(room, rnd.randint(1, 25))):
            row = random_row(rnd, t)
            batch[tuple(row[t.pos(c)] for c in t.pk_names)] = row
        rows = list(batch.values())
        n = len(t.cols)
        values = ", ".join("(" + ", ".join(f"${i * n + j + 1}" for j in range(n)) + ")"
                           for i in range(len(rows)))
        params = [v for r in rows for v in r]
        if rnd.random() < 0.6:
            return self.write(f"INSERT INTO {t.qname} VALUES {values} ON CONFLICT DO NOTHING",
                              params)
        return self.write(f"UPSERT INTO {t.qname} VALUES {values}", params)

    def predicate(self, rnd: random.Random, t: Table, present: list[tuple[Any, ...]],
                  first: int) -> tuple[str, list[Any]]:
        """A WHERE clause on the table, its parameters numbered from ``first``."""
        if present and rnd.random() < 0.4:
            picked = rnd.sample(present, min(len(present), rnd.randint(1, 3)))
            parts, params = [], []
            for row in picked:
                conj = []
                for c in t.pk_names:
                    params.append(row[t.pos(c)])
                    conj.append(f"{c} = ${first + len(params) - 1}")
                parts.append("(" + " AND ".join(conj) + ")")
            return " OR ".join(parts), params
        col = rnd.choice(t.cols)
        values = [r[t.pos(col.name)] for r in present if r[t.pos(col.name)] is not None]
        v = rnd.choice(values) if values and rnd.random() < 0.7 else random_value(rnd, col)
        if v is None or rnd.random() < 0.1:
            return f"{col.name} IS {'NOT ' if rnd.random() < 0.3 else ''}NULL", []
        op = "=" if col.type == "BOOL" else rnd.choice(["=", "<", ">=", "<>"])
        return f"{col.name} {op} ${first}", [v]

    def step_update(self, rnd: random.Random, t: Table | None = None) -> bool:
        t = t or rnd.choice(self.tables)
        present = self.rows(t)
        if present and rnd.random() < 0.2:
            # A primary-key column: the row moves to another key.
            row = rnd.choice(present)
            col = t.col(rnd.choice(t.pk_names))
            where = " AND ".join(f"{c} = ${i + 2}" for i, c in enumerate(t.pk_names))
            return self.write(f"UPDATE {t.qname} SET {col.name} = $1 WHERE {where}",
                              [random_value(rnd, col, key=True),
                               *(row[t.pos(c)] for c in t.pk_names)])
        others = [c for c in t.cols if c.name not in t.pk_names] or t.cols
        sets, params = [], []
        for col in rnd.sample(others, rnd.randint(1, min(2, len(others)))):
            if col.type == "INT" and not col.wide and rnd.random() < 0.3:
                sets.append(f"{col.name} = {col.name} + 1")
            elif col.type == "BOOL" and rnd.random() < 0.3:
                sets.append(f"{col.name} = NOT {col.name}")
            else:
                params.append(random_value(rnd, col, key=col.name in t.pk_names))
                sets.append(f"{col.name} = ${len(params)}")
        where, wparams = self.predicate(rnd, t, present, len(params) + 1)
        return self.write(f"UPDATE {t.qname} SET {', '.join(sets)} WHERE {where}",
                          params + wparams)

    def step_delete(self, rnd: random.Random, t: Table | None = None) -> bool:
        t = t or rnd.choice(self.tables)
        if rnd.random() < 0.05:
            return self.write(f"DELETE FROM {t.qname}")
        where, params = self.predicate(rnd, t, self.rows(t), 1)
        return self.write(f"DELETE FROM {t.qname} WHERE {where}", params)

    def step_txn(self, rnd: random.Random) -> None:
        self.sql("BEGIN")
        ok = True
        for _ in range(rnd.randint(2, 4)):
            write = rnd.choice([self.step_insert, self.step_insert, self.step_update,
                                self.step_delete])
            ok = write(rnd)
            if not ok:
                break
        self.sql("COMMIT" if ok and rnd.random() < 0.8 else "ROLLBACK")

    def step_create_index(self, rnd: random.Random) -> None:
        t = rnd.choice(self.tables)
        if len(t.indexes) + sum(p[0] is t for p in self.paused) >= MAX_INDEXES:
            return self.step_drop_index(rnd, t)
        idx = t.new_index(rnd, may_collide=rnd.random() < 0.2)
        create = "CREATE " + idx.sql().replace(" (", f" ON {t.qname} (", 1)
        if rnd.random() < 0.25:
            self.sql("BEGIN")
            ok = self.write(create)
            for _ in range(rnd.randint(0, 2)):  # writes the new index must hold
                write = rnd.choice([self.step_insert, self.step_update, self.step_delete])
                ok = ok and write(rnd, t)
            if ok:
                ok = self.write("COMMIT")
            else:
                self.sql("ROLLBACK")
        else:
            ok = self.write(create)
        if ok:
            t.indexes.append(idx)

    def step_paused_index(self, rnd: random.Random) -> None:
        """CREATE INDEX whose backfill pauses after its first chunk: the index stays
        WRITE_ONLY and half backfilled across later steps (writes, backups, GC, maybe the
        drop of its table) until a finish_job step resumes or cancels it."""
        t = rnd.choice(self.tables)
        if len(t.indexes) + sum(p[0] is t for p in self.paused) >= MAX_INDEXES:
            return self.step_drop_index(rnd, t)
        idx = t.new_index(rnd, may_collide=rnd.random() < 0.2)
        self.sql(f"SET CLUSTER SETTING jobs.debug.pausepoints = '{PAUSE_POINT}'")
        try:
            ok = self.write("CREATE " + idx.sql().replace(" (", f" ON {t.qname} (", 1))
        except JobPausedError as exc:
            note(f"  -> job {exc.job_id} paused")
            self.paused.append((t, idx, exc.job_id))
            ok = False
        finally:
            self.sql("SET CLUSTER SETTING jobs.debug.pausepoints = ''")
        if ok:
            t.indexes.append(idx)

    def step_finish_job(self, rnd: random.Random) -> None:
        if not self.paused:
            return self.step_paused_index(rnd) if self.tables else None
        t, idx, job_id = self.paused.pop(rnd.randrange(len(self.paused)))
        cancel = rnd.random() < 0.3
        self.sql(f"{'CANCEL' if cancel else 'RESUME'} JOB {job_id}")
        row = self.sql(f"SHOW JOB WHEN COMPLETE {job_id}").rows[0]
        status, error = row[3], row[9]
        note(f"  -> {status} {error or ''}".rstrip())
        if t not in self.tables:  # its table was dropped meanwhile: any end will do
            assert status in ("succeeded", "failed", "canceled"), row
        elif cancel:
            assert status == "canceled", row
        elif status == "failed":
            assert idx.unique and "23505" in error, row  # duplicates under a unique index
        else:
            assert status == "succeeded", row
            t.indexes.append(idx)

    def step_drop_index(self, rnd: random.Random, t: Table | None = None) -> None:
        t = t or rnd.choice(self.tables)
        if not t.indexes:
            return
        idx = rnd.choice(t.indexes)
        self.sql(f"DROP INDEX {t.qname}@{idx.name}")
        t.indexes.remove(idx)

    def step_create_table(self, rnd: random.Random, db: str | None = None) -> None:
        """A new table, often under a name dropped before (with another schema)."""
        if len(self.tables) >= MAX_TABLES:
            return self.step_drop_table(rnd)
        db = db or rnd.choice([DEFAULT_DB, *sorted(self.dbs), *sorted(self.dbs)])
        free = [n for n in TABLE_NAMES if not any(t.db == db and t.name == n
                                                  for t in self.tables)]
        if not free:
            return
        t = random_table(rnd, db, rnd.choice(free))
        self.sql(t.create_sql())
        self.tables.append(t)
        if rnd.random() < 0.7:
            self.step_insert(rnd, t)

    def step_drop_table(self, rnd: random.Random) -> None:
        if not self.tables:
            return self.step_create_table(rnd)
        t = rnd.choice(self.tables)
        self.sql(f"DROP TABLE {t.qname}")
        self.tables.remove(t)

    def step_create_database(self, rnd: random.Random) -> None:
        free = [db for db in DATABASES if db not in self.dbs]
        if not free:
            return self.step_drop_database(rnd)
        db = rnd.choice(free)
        self.sql(f"CREATE DATABASE {db}")
        self.dbs.add(db)
        if rnd.random() < 0.7:
            self.step_create_table(rnd, db)

    def step_drop_database(self, rnd: random.Random) -> None:
        if not self.dbs:
            return self.step_create_database(rnd)
        db = rnd.choice(sorted(self.dbs))
        self.sql(f"DROP DATABASE {db} CASCADE")
        self.dbs.remove(db)
        self.tables = [t for t in self.tables if t.db != db]

    def gc(self, threshold: int, rnd: random.Random) -> None:
        ttl = rnd.randint(1, 3600)
        self.sql(f"SET CLUSTER SETTING gc.ttlseconds = {ttl}")
        stats = self.conn.node.run_gc(threshold + ttl * NANOS_PER_SECOND)
        note(f"GC at {format_ts(threshold)}: threshold {format_ts(stats.threshold)}, "
             f"{stats.removed} versions removed")
        assert self.gc_threshold <= stats.threshold <= max(threshold, self.gc_threshold)
        self.gc_threshold = stats.threshold

    def step_gc(self, rnd: random.Random) -> None:
        """GC no later than the newest backup: its next incremental keeps its history."""
        chain = self.latest()
        limit = chain.layers[-1].end if chain else self.now()
        earlier = [ts for ts, _ in self.samples if self.gc_threshold <= ts <= limit]
        self.gc(limit if not earlier or rnd.random() < 0.5 else rnd.choice(earlier), rnd)

    def step_gc_all(self, rnd: random.Random) -> None:
        """GC up to now: the next incremental may find its history gone (XXC01)."""
        self.gc(self.now(), rnd)

    def step_backup(self, rnd: random.Random) -> None:
        if not self.chains:
            self.step_new_chain(rnd)
            return
        chain = self.latest()
        assert chain is not None
        prev = chain.layers[-1].end
        opts = " WITH revision_history" if chain.revision_history else ""
        time.sleep(0.011)  # layer folders are named by end time, to 10 ms
        sql = f"BACKUP {chain.targets.sql()}INTO LATEST IN '{self.collection}'"
        # The folder of an incremental is named by its end time, to 10 ms.
        as_of = None if self.gc_threshold > prev else \
            self.past_time(rnd, (prev // FOLDER_NANOS + 1) * FOLDER_NANOS)
        # A target gone by the end time fails the statement, before GC is looked at.
        expect = chain.targets.missing(self.state_at(self.now() if as_of is None else as_of))
        if expect is None and self.gc_threshold > prev:
            expect = GC_ERROR
        if expect is not None:
            try:
                self.sql(sql + aost_sql(as_of) + opts)
            except TidemarkError as exc:
                assert exc.code == expect, exc
                note(f"  -> {exc.code}: a new chain")
                self.count("gc_failures" if expect == GC_ERROR else "targets gone")
                assert len(self.chain_ends(chain.subdir)) == len(chain.layers)
                self.step_new_chain(rnd)
                return
            raise AssertionError(f"an incremental of {chain.targets.describe()} from "
                                 f"{format_ts(prev)} succeeded; it should have failed with "
                                 f"{expect}")
        self.sql(sql + aost_sql(as_of) + opts)
        end = self.record_layer(chain, as_of)
        if chain.revision_history:
            for _ in range(rnd.randint(0, 3)):
                ts = self.pick_time(rnd, prev + 1, end)
                if ts is not None:
                    chain.inside.append((ts, self.state_at(ts)))

    def past_time(self, rnd: random.Random, lo: int, avoid: set[int] = frozenset()
                  ) -> int | None:
        """Sometimes a past time for BACKUP ... AS OF SYSTEM TIME: from ``lo`` on (and the
        GC threshold), often mid schema change (a half-built index), whose 10 ms folder name
        is not in ``avoid``; otherwise None (now)."""
        if rnd.random() < 0.7:
            return None
        ts = self.pick_time(rnd, max(lo, self.gc_threshold), self.now())
        return None if ts is None or ts // FOLDER_NANOS in avoid else ts

    @staticmethod
    def pick_targets(rnd: random.Random, state: State) -> Targets:
        """The whole cluster, some databases (mostly with tables) or some of the tables
        (mostly not all: the others must not come back)."""
        tables = [f"{db}.{t}" for db in sorted(state) for t in sorted(state[db])]
        how = rnd.random()
        if how < 0.3:
            return Targets("cluster")
        if how < 0.6 or not tables:
            full = [db for db in sorted(state) if state[db]]
            pool = full if full and rnd.random() < 0.8 else sorted(state)
            k = rnd.randint(1, min(2, len(pool)))
            return Targets("databases", tuple(sorted(rnd.sample(pool, k))))
        k = rnd.randint(1, max(1, len(tables) - 1)) if rnd.random() < 0.8 else len(tables)
        return Targets("tables", tuple(sorted(rnd.sample(tables, k))))

    def step_new_chain(self, rnd: random.Random) -> None:
        revision_history = rnd.random() < 0.6
        opts = " WITH revision_history" if revision_history else ""
        before = self.subdirs()
        time.sleep(0.011)  # full backup folders are named by end time, to 10 ms
        taken = {c.layers[0].end // FOLDER_NANOS for c in self.chains}
        as_of = self.past_time(rnd, self.start, avoid=taken)
        targets = self.pick_targets(rnd, self.state_at(self.now() if as_of is None else as_of))
        self.sql(f"BACKUP {targets.sql()}INTO '{self.collection}'{aost_sql(as_of)}{opts}")
        new = [s for s in self.subdirs() if s not in before]
        assert len(new) == 1, (before, new)
        chain = Chain(new[0], targets, revision_history, self.gc_threshold)
        self.chains.append(chain)
        end = self.record_layer(chain, as_of)
        if revision_history and rnd.random() < 0.5:
            # Its revision history starts at the GC threshold.
            ts = self.pick_time(rnd, max(self.gc_threshold, self.start), end)
            if ts is not None:
                chain.before.append((ts, self.state_at(ts)))

    # -- backups --

    def subdirs(self) -> list[str]:
        try:
            rows = self.conn.execute(f"SHOW BACKUPS IN '{self.collection}'").rows
        except TidemarkError:
            if not self.chains:
                return []  # no collection yet
            raise
        return [r[0] for r in rows]

    def latest(self) -> Chain | None:
        """The chain LATEST names, which incrementals extend: the newest full backup by end
        time (a full backup AS OF an older time leaves LATEST where it is)."""
        return max(self.chains, key=lambda c: c.subdir, default=None)  # names sort by time

    def chain_ends(self, subdir: str) -> list[int]:
        """The end time of each layer, from the manifests (SHOW BACKUP has a row per table
        per layer, so a layer holding no table does not show there)."""
        storage = open_storage(self.collection)
        try:
            return [layer.manifest.end_time for layer in load_chain(storage, subdir,
                                                                    None).layers]
        finally:
            storage.close()

    def record_layer(self, chain: Chain, as_of: int | None) -> int:
        ends = self.chain_ends(chain.subdir)
        assert len(ends) == len(chain.layers) + 1, ends
        end = ends[-1]
        if chain.layers:
            assert end > chain.layers[-1].end
        state = self.state_at(end)
        if as_of is None:
            self.check_model(state)
        else:
            assert end == as_of
            self.count("backups in the past")
        chain.layers.append(Layer(end, state, chain.targets.ids_of(self.ids[end])))
        note(f"  -> layer {len(chain.layers)} of {chain.subdir} ({chain.targets.describe()})"
             f" ends at {format_ts(end)}")
        shown = self.conn.execute(f"SHOW BACKUP FROM '{chain.subdir}' IN "
                                  f"'{self.collection}'").rows
        listed = sorted(((r[0], r[1]) for r in shown if r[3] == format_ts(end)),
                        key=repr)
        # A database without tables shows once, with no table name (and a cluster with no
        # database at all as one row of NULLs): every layer is listed.
        want = sorted(((db, t) for db, tables in chain.targets.of(state).items()
                       for t in (tables or [None])), key=repr) or [(None, None)]
        assert listed == want, \
            f"SHOW BACKUP lists {listed} in the layer ending at {format_ts(end)}, the " \
            f"targets ({chain.targets.describe()}) had {want} then"
        latest = self.latest()
        assert latest is not None
        assert self.conn.execute(f"SHOW BACKUP FROM LATEST IN '{self.collection}'").rows == \
            self.conn.execute(f"SHOW BACKUP FROM '{latest.subdir}' IN "
                              f"'{self.collection}'").rows, \
            f"LATEST does not name {latest.subdir}, the newest full backup"
        return end

    # -- restores --

    def new_name(self, prefix: str = "r") -> str:
        self.restored += 1
        return f"{prefix}{self.restored}"

    def check_db(self, conn: Any, db: str, want: dict[str, TableState], where: str) -> None:
        """Database ``db`` (in the store of ``conn``) holds exactly the tables ``want``,
        each equal to the source's."""
        got = {r[1] for r in conn.execute(f"SHOW TABLES FROM {db}").rows}
        extra, missing = sorted(got - set(want)), sorted(set(want) - got)
        assert not extra, f"{where}: {db} has tables {extra}; the targets held none of those " \
            "names there then"
        assert not missing, f"{where}: {db} lacks tables {missing} that the source had then"
        for t, (fps, rows) in want.items():
            got_fps = [tuple(r) for r in conn.execute(
                f"SHOW FINGERPRINTS FROM TABLE {db}.{t}").rows]
            got_rows = sorted_rows(conn.execute(f"SELECT * FROM {db}.{t}").rows)
            assert [n for n, _ in got_fps] == [n for n, _ in fps], \
                f"{where}: {db}.{t} has indexes {got_fps}, the source had {fps}"
            assert got_rows == rows, \
                f"{where}: rows of {db}.{t} differ from the source's: {got_rows} != {rows}"
            assert got_fps == fps, f"{where}: fingerprints of {db}.{t} {got_fps} != {fps}"

    def restore(self, chain: Chain, ts: int | None, state: State, rnd: random.Random, *,
                latest: bool = False) -> None:
        """Restore ``chain`` at ``ts`` (None: its end) and check it against ``state``, the
        source then; then probe what must not come back."""
        src = "LATEST" if latest else f"'{chain.subdir}'"
        aost = aost_sql(ts)
        frm = f"FROM {src} IN '{self.collection}'{aost}"
        # The layer restored: its targets, and inside it those of the layer before.
        k = len(chain.layers) - 1 if ts is None else \
            next(i for i, layer in enumerate(chain.layers) if ts <= layer.end)
        covered = chain.layers[k].covered
        if ts is not None and ts < chain.layers[k].end and k > 0:
            covered |= chain.layers[k - 1].covered
        at = chain.layers[k].end if ts is None else ts
        want = chain.targets.of(state, self.ids.get(at), covered)
        where = (f"RESTORE of {chain.subdir} ({chain.targets.describe()}) at "
                 f"{format_ts(ts) if ts is not None else 'its end'} ({when(chain, ts)})")
        note(f"-- {where}: the source had {describe(state)}, of which the targets "
             f"{describe(want)}")
        kind, how = chain.targets.kind, rnd.random()
        if kind == "cluster" and how < 0.5:
            self.restore_fresh(frm, want, set(want), where)
        elif kind == "databases" and how < 0.3 and set(want) - {DEFAULT_DB}:
            # defaultdb is already there in a fresh store: the others, by their names.
            dbs = sorted(set(want) - {DEFAULT_DB})
            self.restore_fresh(frm, {db: want[db] for db in dbs}, {DEFAULT_DB, *dbs}, where,
                               f"DATABASE {', '.join(dbs)} ")
        elif kind == "databases" or (kind == "cluster" and how < 0.75):
            names = chain.targets.names if kind == "databases" else \
                rnd.sample(sorted(want), rnd.randint(1, len(want)))
            for db in names:
                if db in want:
                    name = self.new_name()
                    self.sql(f"RESTORE DATABASE {db} {frm} WITH new_db_name = '{name}'")
                    self.check_db(self.conn, name, want[db], where)
                else:  # a target database that did not exist then
                    self.probe_database(frm, db, where, "did not exist")
        else:
            tables = [(db, t) for db in sorted(want) for t in sorted(want[db])]
            if kind == "cluster":
                tables = rnd.sample(tables, rnd.randint(0, len(tables)))
            for db in sorted({db for db, _ in tables}):
                names = [t for d, t in tables if d == db]
                into = self.new_name()
                self.sql(f"CREATE DATABASE {into}")
                self.sql(f"RESTORE TABLE {', '.join(f'{db}.{t}' for t in names)} {frm} "
                         f"WITH into_db = '{into}'")
                self.check_db(self.conn, into, {t: want[db][t] for t in names}, where)
        self.count("restores")
        self.probes(chain, frm, state, want, where, rnd)

    def restore_fresh(self, frm: str, want: State, want_dbs: set[str], where: str,
                      what: str = "") -> None:
        """RESTORE (the cluster, or ``what``) into a fresh empty store."""
        where += " into a fresh store"
        with tidemark.connect(os.path.join(self.tmp, self.new_name("fresh"))) as fresh:
            self.sql(f"RESTORE {what}{frm}", conn=fresh)
            got = {r[0] for r in fresh.execute("SHOW DATABASES").rows}
            extra, missing = sorted(got - want_dbs), sorted(want_dbs - got)
            assert not extra, f"{where}: databases {extra} came back, the targets had none " \
                "of that name then"
            assert not missing, f"{where}: databases {missing} that the source had then are " \
                "missing"
            for db in sorted(want):
                self.check_db(fresh, db, want[db], where)
        self.count("fresh stores")

    def probes(self, chain: Chain, frm: str, state: State, want: State, where: str,
               rnd: random.Random) -> None:
        """RESTORE what must not come back: a non-target that existed then, a name that did
        not exist then (dropped, or created later); each must fail and create nothing."""
        ever: set[tuple[str, str]] = set()
        for _, s in self.samples:
            ever |= {(db, t) for db, tables in s.items() for t in tables}
        if chain.targets.kind == "tables":
            ever |= {tuple(q.split(".")) for q in chain.targets.names}  # type: ignore[misc]
        tables = sorted((db, t) for db, t in ever if t not in want.get(db, {}))
        other = [(db, t) for db, t in tables if t in state.get(db, {})]  # non-targets then
        gone = [(db, t) for db, t in tables if t not in state.get(db, {})]
        picks = rnd.sample(other, min(2, len(other))) + rnd.sample(gone, min(1, len(gone)))
        for db, t in picks:
            self.probe_table(frm, db, t, where, "was no target" if (db, t) in other else
                             "did not exist")
        if chain.targets.kind != "tables":  # a table backup records its tables' databases
            dbs = sorted({db for _, s in self.samples for db in s} - set(want))
            other_dbs = [db for db in dbs if db in state]
            gone_dbs = [db for db in dbs if db not in state]
            for db in rnd.sample(other_dbs, min(1, len(other_dbs))) + \
                    rnd.sample(gone_dbs, min(1, len(gone_dbs))):
                self.probe_database(frm, db, where, "was no target" if db in state else
                                    "did not exist")

    def probe_table(self, frm: str, db: str, t: str, where: str, why: str) -> None:
        into = self.new_name("p")
        self.sql(f"CREATE DATABASE {into}")
        try:
            self.sql(f"RESTORE TABLE {db}.{t} {frm} WITH into_db = '{into}'")
        except TidemarkError as exc:
            assert exc.code == NO_TABLE, exc
        else:
            got = read_state(self.conn, "BEGIN", [into])
            raise AssertionError(f"{where}: RESTORE TABLE {db}.{t} restored {describe(got)}; "
                                 f"that table {why} then")
        assert not self.conn.execute(f"SHOW TABLES FROM {into}").rows
        self.count("probes")

    def probe_database(self, frm: str, db: str, where: str, why: str) -> None:
        name = self.new_name("p")
        try:
            self.sql(f"RESTORE DATABASE {db} {frm} WITH new_db_name = '{name}'")
        except TidemarkError as exc:
            assert exc.code == NO_DATABASE, exc
        else:
            got = read_state(self.conn, "BEGIN", [name])
            raise AssertionError(f"{where}: RESTORE DATABASE {db} restored {describe(got)}; "
                                 f"that database {why} then")
        assert name not in {r[0] for r in self.conn.execute("SHOW DATABASES").rows}
        self.count("probes")

    def refuse(self, chain: Chain, ts: int) -> None:
        """A time strictly inside a layer without revision history: refused, nothing made."""
        frm = f"FROM '{chain.subdir}' IN '{self.collection}' AS OF SYSTEM TIME {format_ts(ts)}"
        name = self.new_name()
        try:
            if chain.targets.kind == "cluster":
                with tidemark.connect(os.path.join(self.tmp, self.new_name("fresh"))) as fresh:
                    try:
                        self.sql(f"RESTORE {frm}", conn=fresh)
                    finally:
                        dbs = {r[0] for r in fresh.execute("SHOW DATABASES").rows}
                        assert dbs == {DEFAULT_DB}, dbs
            elif chain.targets.kind == "databases":
                self.sql(f"RESTORE DATABASE {chain.targets.names[0]} {frm} "
                         f"WITH new_db_name = '{name}'")
            else:
                self.sql(f"CREATE DATABASE {name}")
                self.sql(f"RESTORE TABLE {chain.targets.names[0]} {frm} "
                         f"WITH into_db = '{name}'")
        except TidemarkError as exc:
            assert exc.code == "22023", exc
        else:
            raise AssertionError(f"restored {chain.subdir} (no revision history) to "
                                 f"{format_ts(ts)}, strictly inside a layer")
        dbs = {r[0] for r in self.conn.execute("SHOW DATABASES").rows}
        assert name not in dbs or not self.conn.execute(f"SHOW TABLES FROM {name}").rows
        self.count("refused")

    def check_chains(self, rnd: random.Random) -> None:
        for chain in self.chains:
            for k, layer in enumerate(chain.layers):
                if k == len(chain.layers) - 1 and rnd.random() < 0.5:
                    latest = chain is self.latest() and rnd.random() < 0.5
                    self.restore(chain, None, layer.state, rnd, latest=latest)
                else:
                    self.restore(chain, layer.end, layer.state, rnd)
            first, last_end = chain.layers[0].end, chain.layers[-1].end
            if chain.revision_history:
                # The times picked within layers first (within schema changes, mostly),
                # then those between steps.
                n = rnd.randint(1, 3)
                picks = rnd.sample(chain.inside, min(n, len(chain.inside)))
                between = [(ts, s) for ts, s in self.samples if first < ts < last_end]
                picks += rnd.sample(between, min(n - len(picks), len(between)))
                for ts, state in picks:
                    self.restore(chain, ts, state, rnd)
                    self.count("inside")
                # Before the full backup's end: its revision history starts at the GC
                # threshold of the time.
                before = [(ts, s) for ts, s in [*self.samples, *chain.before]
                          if max(chain.gc_threshold, self.start) <= ts < first]
                if before and rnd.random() < 0.5:
                    ts, state = rnd.choice(before)
                    self.restore(chain, ts, state, rnd)
                    self.count("before full")
            elif len(chain.layers) > 1:
                k = rnd.randint(1, len(chain.layers) - 1)
                lo, hi = chain.layers[k - 1].end, chain.layers[k].end
                if hi - lo > 1:
                    self.refuse(chain, rnd.randint(lo + 1, hi - 1))


def when(chain: Chain, ts: int | None) -> str:
    """Where ``ts`` falls in the chain, for messages."""
    for k, layer in enumerate(chain.layers):
        if ts is None or ts == layer.end:
            return "the end of the chain" if ts is None else f"the end of layer {k + 1}"
        if ts < layer.end:
            return f"inside layer {k + 1}" if k else "before the full backup's end"
    return "after the chain"


def read_ids(conn: Any, ts: int, state: State) -> Ids:
    """The descriptor IDs of the databases and tables of ``state`` (read at ``ts``)."""
    from tidemark.catalog import catalog

    def read(txn: Any) -> Ids:
        out: Ids = {}
        for db, tables in state.items():
            db_desc = catalog.database_by_name(txn, db)
            out[db] = (db_desc.id, {t: catalog.table_by_name(txn, db_desc.id, t).id
                                    for t in tables})
        return out
    txn = conn.node.db.txn(ts)
    try:
        return read(txn)
    finally:
        txn.rollback()


def read_state(conn: Any, begin: str, dbs: Sequence[str]) -> State:
    """What the databases ``dbs`` hold, read in one transaction started with ``begin``."""
    out: State = {}
    conn.execute(begin)
    try:
        present = {r[0] for r in conn.execute("SHOW DATABASES").rows}
        for db in dbs:
            if db not in present:
                continue
            out[db] = {}
            for r in conn.execute(f"SHOW TABLES FROM {db}").rows:
                t = r[1]
                fps = [tuple(f) for f in conn.execute(
                    f"SHOW FINGERPRINTS FROM TABLE {db}.{t}").rows]
                rows = sorted_rows(conn.execute(f"SELECT * FROM {db}.{t}").rows)
                out[db][t] = (fps, rows)
    finally:
        conn.execute("COMMIT")
    return out


STATS: dict[str, int] = {}
# Hypothesis shrinks a failure for up to five minutes (MAX_SHRINKING_SECONDS), and
# pytest-timeout stops a test at five: a failure would end in a timeout that hides
# hypothesis' report (the failing history). An example takes about half a second.
SHRINK_SECONDS = int(os.environ.get("TIDEMARK_ROUNDTRIP_SHRINK_SECONDS", "90"))


@pytest.fixture(scope="module", autouse=True)
def _bounded_shrinking():
    from hypothesis.internal.conjecture import engine

    old = getattr(engine, "MAX_SHRINKING_SECONDS", None)
    if old is not None:  # an internal constant: if a release drops it, shrink as it likes
        engine.MAX_SHRINKING_SECONDS = SHRINK_SECONDS
    yield
    if old is not None:
        engine.MAX_SHRINKING_SECONDS = old


# No "explain" phase: it traces every line of tidemark and shrinking alone takes minutes.
@settings(max_examples=int(os.environ.get("TIDEMARK_ROUNDTRIP_EXAMPLES", "60")), deadline=None,
          phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_restore_equals_source_at_every_time(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory(prefix="tidemark-roundtrip-") as tmp, \
            tidemark.connect(os.path.join(tmp, "store")) as conn:
        h = History(conn, tmp)
        batch = data.draw(st.sampled_from([2, 7, 50_000]), label="backfill batch size")
        h.sql(f"SET CLUSTER SETTING bulkio.index_backfill.batch_size = {batch}")
        h.sql("CREATE DATABASE d1")
        h.dbs.add("d1")
        h.step_create_table(random.Random(data.draw(st.integers(0, 2**32 - 1),
                                                    label="d1.t1 seed")), "d1")
        h.start = h.now()
        # A list (not a count and then the steps): hypothesis shrinks it by deleting steps.
        steps = data.draw(st.lists(st.tuples(st.sampled_from(STEPS), st.integers(0, 2**32 - 1)),
                                   min_size=5, max_size=30), label="steps (kind, seed)")
        for kind, seed in steps:
            h.run(kind, random.Random(seed))
        # Something to restore, always.
        h.run("backup", random.Random(data.draw(st.integers(0, 2**32 - 1), label="seed")))
        h.check_chains(random.Random(data.draw(st.integers(0, 2**32 - 1), label="seed")))
        h.stats["examples"] = 1
        h.stats["chains"] = len(h.chains)
        h.stats["layers"] = sum(len(c.layers) for c in h.chains)
        for c in h.chains:
            h.count(f"{c.targets.kind} chains")
        h.stats["rows at the end"] = sum(len(s[1]) for tables in h.samples[-1][1].values()
                                         for s in tables.values())
        for k, v in h.stats.items():
            STATS[k] = STATS.get(k, 0) + v


@pytest.fixture(scope="module", autouse=True)
def _report_stats():
    yield
    if STATS:
        print(f"\nbackup round trip: {STATS}")
