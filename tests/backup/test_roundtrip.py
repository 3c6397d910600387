"""BACKUP/RESTORE round trip: a restore equals its source at the time it was restored to.

Each hypothesis example opens a fresh store (a temporary directory, removed afterwards) with a
database ``d`` of 1-3 tables (2-5 columns of INT, FLOAT, STRING, BOOL, BYTES and TIMESTAMP, a
one- or two-column primary key, secondary indexes some DESC, some STORING, some UNIQUE: a
unique index holds every primary-key column or a "wide" column whose values practically never
repeat, so it stays unique; a statement that collides anyway fails and changes nothing). The
first table exists from the start, the others are created by a step. Then a sequence of steps:

* writes (at most 200 rows per table): INSERT ... ON CONFLICT DO NOTHING, UPSERT, UPDATE
  (of a primary key too), DELETE, and explicit transactions of several writes over tables,
  committed or rolled back;
* CREATE [UNIQUE] INDEX (an online job, in small backfill batches, or inside a transaction
  with writes) and DROP INDEX; a few unique builds go over columns that may hold duplicates:
  such a build must fail with 23505, and what it wrote must not come back in any restore;
* GC passes (``gc.ttlseconds`` and ``Node.run_gc(now)``) at a threshold no later than the
  end of the newest backup, so the next incremental still has its history; rarely a pass up
  to now, after which the next incremental must fail with XXC01 (history already removed)
  and a new full backup starts a new chain;
* backups of ``DATABASE d`` into one collection: the first is full, then incrementals
  (``BACKUP ... INTO LATEST IN``), every layer of a chain WITH revision_history or none;
  sometimes a new chain (a new full backup into the same collection). Some backups are
  taken AS OF SYSTEM TIME a past time (often mid schema change: a half-built index); LATEST
  must name the newest full backup by end time, so a full backup of an older time starts a
  chain that later incrementals do not extend.
* CREATE INDEX jobs paused after their first backfill chunk (``jobs.debug.pausepoints``),
  left WRITE_ONLY and half built across later steps and backups, then resumed or canceled.

After every step the test reads ``cluster_logical_timestamp()`` and the source as of it: per
table ``SHOW FINGERPRINTS`` (one per PUBLIC index, independent of table IDs) and the rows in
primary-key order. After every backup it reads its end time (``SHOW BACKUP FROM '<subdir>'
IN``; ``SHOW BACKUP FROM LATEST IN`` must show the newest chain), the source as of that end
time, and, in a revision-history chain, the source as of up to three arbitrary nanoseconds
strictly inside the new layer (often a commit timestamp of a descriptor or of data, or the
nanosecond before one, or a time within a schema change or transaction: mid index backfill,
say). Everything is read when it happens, before a later GC
pass can remove the history. A last backup ends every example.

At the end every chain (its folder from ``SHOW BACKUPS``) is restored, with ``RESTORE
DATABASE d FROM '<subdir>' IN '<collection>' AS OF SYSTEM TIME ... WITH new_db_name``, at each
layer's end time and, for revision-history chains, at 1-3 times strictly inside the chain
(and, when recorded, at a time before the full backup's end but after the GC threshold it
recorded as its revision start). Each restored database must hold exactly the tables the
source had at that time, each with exactly the indexes PUBLIC then (same names, same order)
with equal fingerprints, and the same rows. A chain without revision history must refuse a
time strictly inside it (22023) and create nothing.

Hypothesis draws the schema, the kind of each step and a seed for its details (values, which
rows, which times); the statements run are printed with a failing example.

``TIDEMARK_ROUNDTRIP_EXAMPLES`` sets the number of examples (default 15, well under 40 s);
raise it to hunt for bugs, e.g. ``TIDEMARK_ROUNDTRIP_EXAMPLES=100`` (about a second each;
past a few hundred, lift pytest-timeout's 300 s limit too: ``--timeout=0``).
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
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import tidemark
from tidemark.clock import NANOS_PER_SECOND, format_ts
from tidemark.errors import JobPausedError, TidemarkError
from tidemark.kv.keys import index_prefix, prefix_end
from tidemark.kv.system import DESCRIPTOR_TABLE_ID, PRIMARY_INDEX_ID
from tidemark.storage.engine import KEY_MAX

DESCRIPTORS = index_prefix(DESCRIPTOR_TABLE_ID, PRIMARY_INDEX_ID)

MAX_ROWS = 200  # per table
MAX_INDEXES = 4  # secondary indexes per table
TYPES = ("INT", "FLOAT", "STRING", "BOOL", "BYTES", "TIMESTAMP")
KEY_TYPES = ("INT", "STRING", "BYTES", "TIMESTAMP")  # a first primary-key column: many values
WIDE_TYPES = ("INT", "STRING", "BYTES", "TIMESTAMP")  # can hold practically unique values
FLOATS = (-2.5, -1.0, 0.0, 0.25, 0.5, 1.0, 1.5, 7.75, 1e300)
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
WRITE_ERRORS = {"23505", "23502", "21000"}  # unique, NOT NULL, a row proposed twice
GC_ERROR = "XXC01"  # an incremental whose history GC already removed
FOLDER_NANOS = 10**7  # backup folders are named by their end time, to 10 ms
DB = "d"

STEPS = (["insert"] * 5 + ["update"] * 2 + ["delete", "txn"] + ["create_index"] * 2 +
         ["paused_index", "finish_job", "drop_index", "create_table", "gc", "gc_all"] +
         ["backup"] * 3 + ["new_chain"])
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


@dataclass
class Table:
    name: str
    cols: list[Col]
    pk: tuple[tuple[str, bool], ...]
    indexes: list[Idx] = field(default_factory=list)  # PUBLIC now (once created)
    created: bool = False
    next_index: int = 1

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
        return f"CREATE TABLE {self.name} ({', '.join(parts)})"

    def order_by(self) -> str:
        return " ORDER BY " + ", ".join(self.pk_names)

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


@st.composite
def tables(draw: st.DrawFn, name: str) -> Table:
    n = draw(st.integers(2, 5))
    names = [f"c{i}" for i in range(n)]
    pk_cols = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
    cols = []
    for c in names:
        typ = draw(st.sampled_from(KEY_TYPES if c == pk_cols[0] else TYPES))
        not_null = c in pk_cols or draw(st.integers(0, 3)) == 0
        wide = c not in pk_cols and typ in WIDE_TYPES and draw(st.integers(0, 2)) == 0
        cols.append(Col(c, typ, not_null, wide))
    table = Table(name, cols, tuple((c, draw(st.booleans())) for c in pk_cols))
    rnd = random.Random(draw(st.integers(0, 2**16), label=f"{name} index seed"))
    for _ in range(draw(st.integers(0, 2), label=f"{name} inline indexes")):
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

# table name -> (SHOW FINGERPRINTS rows: (index name, fingerprint) per PUBLIC index, rows)
State = dict[str, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]


@dataclass
class Layer:
    end: int
    state: State


@dataclass
class Chain:
    subdir: str
    revision_history: bool
    gc_threshold: int  # when the full backup was taken: its revision history starts here
    layers: list[Layer] = field(default_factory=list)
    inside: list[tuple[int, State]] = field(default_factory=list)  # within a later layer
    before: list[tuple[int, State]] = field(default_factory=list)  # before the full's end


# --- the history ------------------------------------------------------------------------------


class History:
    def __init__(self, conn: tidemark.Connection, collection: str, all_tables: list[Table]):
        self.conn = conn
        self.collection = collection
        self.tables = all_tables
        self.chains: list[Chain] = []
        self.samples: list[tuple[int, State]] = []  # (time, source then), after each step
        self.windows: list[tuple[int, int]] = []  # (before, after) a schema change or txn
        # After the first CREATE TABLE: SHOW BACKUP lists tables, a layer without is unseen.
        self.start = 0
        self.gc_threshold = 0  # the store's, as the last GC pass left it
        self.restored = 0
        self.stats: dict[str, int] = {}
        self.paused: list[tuple[Table, Idx, int]] = []  # CREATE INDEX jobs paused mid backfill

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    # -- SQL --

    def sql(self, sql: str, params: Sequence[Any] = ()) -> Any:
        note(f"{sql} {list(params) if params else ''}".rstrip())
        return self.conn.execute(sql, params)

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

    def live(self) -> list[Table]:
        return [t for t in self.tables if t.created]

    def rows(self, t: Table) -> list[tuple[Any, ...]]:
        return self.conn.execute(f"SELECT * FROM {t.name}").rows

    def state_at(self, ts: int) -> State:
        """The source at ``ts``: the tables that existed then, their indexes and rows."""
        out: State = {}
        aost = f" AS OF SYSTEM TIME {format_ts(ts)}"
        for t in self.tables:
            try:
                fps = self.conn.execute(f"SHOW FINGERPRINTS FROM TABLE {t.name}{aost}").rows
            except TidemarkError as exc:
                if exc.code != "42P01":  # the table did not exist yet
                    raise
                continue
            rows = self.conn.execute(f"SELECT * FROM {t.name}{aost}{t.order_by()}").rows
            out[t.name] = ([tuple(r) for r in fps], [tuple(r) for r in rows])
        return out

    def check_model(self, state: State) -> None:
        """The source's PUBLIC indexes are those the test thinks it built."""
        assert set(state) == {t.name for t in self.live()}
        for t in self.live():
            assert sorted(name for name, _ in state[t.name][0]) == sorted(t.index_names())

    # -- steps --

    def run(self, kind: str, rnd: random.Random) -> None:
        before = self.now()
        getattr(self, f"step_{kind}")(rnd)
        ts = self.now()
        self.samples.append((ts, self.state_at(ts)))
        if kind in ("txn", "create_index", "paused_index", "finish_job", "drop_index",
                    "create_table"):
            self.windows.append((before, ts))

    def pick_time(self, rnd: random.Random, lo: int, hi: int) -> int | None:
        """A time in ``[lo, hi)``, or None if there is none: often a commit timestamp (or
        the nanosecond before one) of a descriptor (a schema change's steps: an index mid
        backfill, say) or of any data, or a time during a schema change or transaction."""
        if hi <= lo:
            return None
        how = rnd.random()
        if how < 0.6:
            span = (DESCRIPTORS, prefix_end(DESCRIPTORS)) if how < 0.35 else (b"", KEY_MAX)
            commits = sorted({ts - d for _, ts, _, _ in self.conn.node.engine.versions(*span)
                              for d in (0, 1) if lo <= ts - d < hi})
            if commits:
                return rnd.choice(commits)
        windows = [(max(a, lo), min(b, hi)) for a, b in self.windows]
        windows = [(a, b) for a, b in windows if a < b]
        if windows and rnd.random() < 0.7:
            a, b = rnd.choice(windows)
            return rnd.randrange(a, b)
        return rnd.randrange(lo, hi)

    def step_insert(self, rnd: random.Random, t: Table | None = None) -> bool:
        t = t or rnd.choice(self.live())
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
            return self.write(f"INSERT INTO {t.name} VALUES {values} ON CONFLICT DO NOTHING",
                              params)
        return self.write(f"UPSERT INTO {t.name} VALUES {values}", params)

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
        t = t or rnd.choice(self.live())
        present = self.rows(t)
        if present and rnd.random() < 0.2:
            # Move one row: a new primary key (deletes one key, writes another).
            row = rnd.choice(present)
            col = t.col(rnd.choice(t.pk_names))
            where = " AND ".join(f"{c} = ${i + 2}" for i, c in enumerate(t.pk_names))
            return self.write(f"UPDATE {t.name} SET {col.name} = $1 WHERE {where}",
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
        return self.write(f"UPDATE {t.name} SET {', '.join(sets)} WHERE {where}",
                          params + wparams)

    def step_delete(self, rnd: random.Random, t: Table | None = None) -> bool:
        t = t or rnd.choice(self.live())
        if rnd.random() < 0.05:
            return self.write(f"DELETE FROM {t.name}")
        where, params = self.predicate(rnd, t, self.rows(t), 1)
        return self.write(f"DELETE FROM {t.name} WHERE {where}", params)

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
        t = rnd.choice(self.live())
        if len(t.indexes) + sum(p[0] is t for p in self.paused) >= MAX_INDEXES:
            return self.step_drop_index(rnd, t)
        idx = t.new_index(rnd, may_collide=rnd.random() < 0.2)
        create = "CREATE " + idx.sql().replace(" (", f" ON {t.name} (", 1)
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
        WRITE_ONLY and half backfilled across later steps (writes, backups, GC) until a
        finish_job step resumes or cancels it."""
        t = rnd.choice(self.live())
        if len(t.indexes) + sum(p[0] is t for p in self.paused) >= MAX_INDEXES:
            return self.step_drop_index(rnd, t)
        idx = t.new_index(rnd, may_collide=rnd.random() < 0.2)
        self.sql(f"SET CLUSTER SETTING jobs.debug.pausepoints = '{PAUSE_POINT}'")
        try:
            ok = self.write("CREATE " + idx.sql().replace(" (", f" ON {t.name} (", 1))
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
            return self.step_paused_index(rnd)
        t, idx, job_id = self.paused.pop(rnd.randrange(len(self.paused)))
        cancel = rnd.random() < 0.3
        self.sql(f"{'CANCEL' if cancel else 'RESUME'} JOB {job_id}")
        row = self.sql(f"SHOW JOB WHEN COMPLETE {job_id}").rows[0]
        status, error = row[3], row[9]
        note(f"  -> {status} {error or ''}".rstrip())
        if cancel:
            assert status == "canceled", row
        elif status == "failed":
            assert idx.unique and "23505" in error, row  # duplicates under a unique index
        else:
            assert status == "succeeded", row
            t.indexes.append(idx)

    def step_drop_index(self, rnd: random.Random, t: Table | None = None) -> None:
        t = t or rnd.choice(self.live())
        if not t.indexes:
            return
        idx = rnd.choice(t.indexes)
        self.sql(f"DROP INDEX {t.name}@{idx.name}")
        t.indexes.remove(idx)

    def step_create_table(self, rnd: random.Random) -> None:
        waiting = [t for t in self.tables if not t.created]
        if not waiting:
            self.step_insert(rnd)
            return
        t = waiting[0]
        self.sql(t.create_sql())
        t.created = True

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
        sql = f"BACKUP DATABASE {DB} INTO LATEST IN '{self.collection}'"
        if self.gc_threshold > prev:
            try:
                self.sql(sql + opts)
            except TidemarkError as exc:
                assert exc.code == GC_ERROR, exc
                note(f"  -> {exc.code}: a new chain")
                self.count("gc_failures")
                assert len(self.layer_ends(chain.subdir)) == len(chain.layers)
                self.step_new_chain(rnd)
                return
            raise AssertionError(f"an incremental from {format_ts(prev)} succeeded after GC "
                                 f"up to {format_ts(self.gc_threshold)}")
        # The folder of an incremental is named by its end time, to 10 ms.
        as_of = self.past_time(rnd, (prev // FOLDER_NANOS + 1) * FOLDER_NANOS)
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

    def step_new_chain(self, rnd: random.Random) -> None:
        revision_history = rnd.random() < 0.5
        opts = " WITH revision_history" if revision_history else ""
        before = self.subdirs()
        time.sleep(0.011)  # full backup folders are named by end time, to 10 ms
        taken = {c.layers[0].end // FOLDER_NANOS for c in self.chains}
        as_of = self.past_time(rnd, self.start, avoid=taken)
        self.sql(f"BACKUP DATABASE {DB} INTO '{self.collection}'{aost_sql(as_of)}{opts}")
        new = [s for s in self.subdirs() if s not in before]
        assert len(new) == 1, (before, new)
        chain = Chain(new[0], revision_history, self.gc_threshold)
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

    def layer_ends(self, subdir: str = "LATEST") -> list[str]:
        where = subdir if subdir == "LATEST" else f"'{subdir}'"
        rows = self.conn.execute(f"SHOW BACKUP FROM {where} IN '{self.collection}'").rows
        ends: list[str] = []
        for r in rows:
            if not ends or ends[-1] != r[3]:
                ends.append(r[3])
        return ends

    def record_layer(self, chain: Chain, as_of: int | None) -> int:
        ends = self.layer_ends(chain.subdir)
        assert len(ends) == len(chain.layers) + 1, ends
        end = int(ends[-1].split(".")[0])
        assert ends[-1] == format_ts(end)
        if chain.layers:
            assert end > chain.layers[-1].end
        state = self.state_at(end)
        if as_of is None:
            self.check_model(state)
        else:
            assert end == as_of
            self.count("backups in the past")
        chain.layers.append(Layer(end, state))
        note(f"  -> layer {len(chain.layers)} of {chain.subdir} ends at {ends[-1]}")
        latest = self.latest()
        assert latest is not None
        assert self.layer_ends() == [format_ts(layer.end) for layer in latest.layers], \
            f"LATEST does not name {latest.subdir}, the newest full backup"
        return end

    # -- restores --

    def restore(self, chain: Chain, ts: int | None, want: State, *, latest: bool = False
                ) -> None:
        name = f"r{self.restored}"
        self.restored += 1
        src = "LATEST" if latest else f"'{chain.subdir}'"
        aost = f" AS OF SYSTEM TIME {format_ts(ts)}" if ts is not None else ""
        result = self.sql(f"RESTORE DATABASE {DB} FROM {src} IN '{self.collection}'{aost} "
                          f"WITH new_db_name = '{name}'")
        for notice in result.notices:
            note(f"  -> {notice}")
            self.count("indexes rebuilt by RESTORE")
        self.count("restores")
        got = {r[1] for r in self.conn.execute(f"SHOW TABLES FROM {name}").rows}
        where = f"RESTORE of {chain.subdir} at {aost or 'its end'} into {name}"
        assert got == set(want), f"{where}: tables {sorted(got)}, source had {sorted(want)}"
        for tname, (fps, rows) in want.items():
            t = next(t for t in self.tables if t.name == tname)
            got_fps = [tuple(r) for r in self.conn.execute(
                f"SHOW FINGERPRINTS FROM TABLE {name}.{tname}").rows]
            got_rows = [tuple(r) for r in self.conn.execute(
                f"SELECT * FROM {name}.{tname}{t.order_by()}").rows]
            assert [n for n, _ in got_fps] == [n for n, _ in fps], \
                f"{where}: {tname} has indexes {got_fps}, the source had {fps}"
            assert got_rows == rows, f"{where}: rows of {tname} differ from the source's"
            assert got_fps == fps, f"{where}: fingerprints of {tname} {got_fps} != {fps}"

    def refuse(self, chain: Chain, ts: int) -> None:
        name = f"r{self.restored}"
        self.restored += 1
        try:
            self.sql(f"RESTORE DATABASE {DB} FROM '{chain.subdir}' IN '{self.collection}' "
                     f"AS OF SYSTEM TIME {format_ts(ts)} WITH new_db_name = '{name}'")
        except TidemarkError as exc:
            assert exc.code == "22023", exc
        else:
            raise AssertionError(f"restored {chain.subdir} (no revision history) to "
                                 f"{format_ts(ts)}, strictly inside a layer")
        dbs = {r[0] for r in self.conn.execute("SHOW DATABASES").rows}
        assert name not in dbs
        self.count("refused")

    def check_chains(self, rnd: random.Random) -> None:
        for chain in self.chains:
            for k, layer in enumerate(chain.layers):
                if k == len(chain.layers) - 1 and rnd.random() < 0.5:
                    latest = chain is self.latest() and rnd.random() < 0.5
                    self.restore(chain, None, layer.state, latest=latest)
                else:
                    self.restore(chain, layer.end, layer.state)
            first, last_end = chain.layers[0].end, chain.layers[-1].end
            if chain.revision_history:
                # The times picked within layers first (within schema changes, mostly),
                # then those between steps.
                n = rnd.randint(1, 3)
                picks = rnd.sample(chain.inside, min(n, len(chain.inside)))
                between = [(ts, s) for ts, s in self.samples if first < ts < last_end]
                picks += rnd.sample(between, min(n - len(picks), len(between)))
                for ts, state in picks:
                    self.restore(chain, ts, state)
                    self.count("inside")
                # Before the full backup's end: its revision history starts at the GC
                # threshold of the time.
                before = [(ts, s) for ts, s in [*self.samples, *chain.before]
                          if max(chain.gc_threshold, self.start) <= ts < first]
                if before and rnd.random() < 0.5:
                    ts, state = rnd.choice(before)
                    self.restore(chain, ts, state)
                    self.count("before full")
            elif len(chain.layers) > 1:
                k = rnd.randint(1, len(chain.layers) - 1)
                lo, hi = chain.layers[k - 1].end, chain.layers[k].end
                if hi - lo > 1:
                    self.refuse(chain, rnd.randint(lo + 1, hi - 1))


STATS: dict[str, int] = {}


@settings(max_examples=int(os.environ.get("TIDEMARK_ROUNDTRIP_EXAMPLES", "15")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_restore_equals_source_at_every_time(data: st.DataObject) -> None:
    all_tables = [data.draw(tables(f"t{i + 1}"), label=f"t{i + 1}")
                  for i in range(data.draw(st.integers(1, 3), label="tables"))]
    with tempfile.TemporaryDirectory(prefix="tidemark-roundtrip-") as tmp, \
            tidemark.connect(os.path.join(tmp, "store")) as conn:
        h = History(conn, f"file://{tmp}/collection", all_tables)
        h.sql(f"CREATE DATABASE {DB}")
        h.sql(f"SET database = {DB}")
        batch = data.draw(st.sampled_from([2, 7, 50_000]), label="backfill batch size")
        h.sql(f"SET CLUSTER SETTING bulkio.index_backfill.batch_size = {batch}")
        h.step_create_table(random.Random(0))
        h.start = h.now()
        for _ in range(data.draw(st.integers(1, 30), label="steps")):
            kind = data.draw(st.sampled_from(STEPS), label="step")
            seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
            h.count(kind)
            h.run(kind, random.Random(seed))
        # Something to restore, always.
        h.run("backup", random.Random(data.draw(st.integers(0, 2**32 - 1), label="seed")))
        h.check_chains(random.Random(data.draw(st.integers(0, 2**32 - 1), label="seed")))
        h.stats["examples"] = 1
        h.stats["chains"] = len(h.chains)
        h.stats["layers"] = sum(len(c.layers) for c in h.chains)
        h.stats["rows at the end"] = sum(len(s[1]) for s in h.samples[-1][1].values())
        for k, v in h.stats.items():
            STATS[k] = STATS.get(k, 0) + v


@pytest.fixture(scope="module", autouse=True)
def _report_stats():
    yield
    if STATS:
        print(f"\nbackup round trip: {STATS}")
