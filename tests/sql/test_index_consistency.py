"""Secondary indexes agree with the primary index, and fingerprints depend on content only.

* After random writes (multi-row INSERT, ON CONFLICT DO NOTHING / DO UPDATE, UPSERT, UPDATE,
  DELETE), interleaved with CREATE [UNIQUE] INDEX on the populated table (online, in small
  backfill batches, or inside an explicit transaction) and DROP INDEX, every index read in full
  (``t@idx``) returns the rows of ``t@t_pkey``; predicates on an index's columns (equality, IN,
  ranges, BETWEEN, IS [NOT] NULL, on one or two columns) return the same rows through every
  index and match the rows filtered in Python; ORDER BY on an index's columns (its own
  directions, reversed, or mixed) comes back sorted, also under LIMIT.
* ``SHOW FINGERPRINTS FROM TABLE t`` equals, index by index (by position), that of a table with
  the same content built differently: shuffled insertion order in random batches, rows first
  inserted with other values then deleted and re-inserted or updated, indexes created before
  (inline or on the empty table) or after the data.
* ``SHOW FINGERPRINTS ... AS OF SYSTEM TIME ts`` and ``SELECT * FROM t@idx AS OF SYSTEM TIME
  ts`` equal what was read at ``ts`` (across later writes, index builds and drops).
* An online index build under concurrent writes from another connection ends consistent.

``TIDEMARK_PROPERTY_EXAMPLES`` sets the number of examples (default 250, about 20 s). The bugs
these properties found are pinned by the regression tests at the end.
"""

from __future__ import annotations

import functools
import os
import random
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

import tidemark
from tidemark.errors import TidemarkError

_ENV_EXAMPLES = os.environ.get("TIDEMARK_PROPERTY_EXAMPLES")
MAX_EXAMPLES = int(_ENV_EXAMPLES) if _ENV_EXAMPLES else 250

TYPES = ("INT", "FLOAT", "STRING", "BOOL")
FLOATS = (-2.5, -1.0, 0.0, 0.25, 0.5, 1.0, 1.5, 7.75)
EXPECTED_ERRORS = {"23505", "23502", "21000"}  # unique, NOT NULL, a row touched twice

SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- schema -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Col:
    name: str
    type: str
    not_null: bool


@dataclass(frozen=True)
class Idx:
    suffix: str  # the index of table t is named t_<suffix>
    cols: tuple[tuple[str, bool], ...]
    unique: bool = False
    storing: tuple[str, ...] = ()

    def name(self, table: str) -> str:
        return f"{table}_{self.suffix}"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.cols)

    def key_sql(self) -> str:
        return ", ".join(f"{c}{' DESC' if d else ''}" for c, d in self.cols)

    def inline(self, table: str) -> str:
        s = f"{'UNIQUE ' if self.unique else ''}INDEX {self.name(table)} ({self.key_sql()})"
        return s + (f" STORING ({', '.join(self.storing)})" if self.storing else "")

    def create(self, table: str) -> str:
        s = f"CREATE {'UNIQUE ' if self.unique else ''}INDEX {self.name(table)} ON {table} " \
            f"({self.key_sql()})"
        return s + (f" STORING ({', '.join(self.storing)})" if self.storing else "")


@dataclass
class Schema:
    cols: list[Col]
    pk: tuple[tuple[str, bool], ...]
    indexes: list[Idx] = field(default_factory=list)
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

    def primary(self) -> Idx:
        return Idx("pkey", self.pk, True)

    def unique_cols(self) -> set[str]:
        return {c for i in self.indexes if i.unique for c in i.names}

    def create(self, table: str, inline: Sequence[Idx] = ()) -> str:
        parts = [f"{c.name} {c.type}{' NOT NULL' if c.not_null else ''}" for c in self.cols]
        parts.append("PRIMARY KEY (" + ", ".join(f"{c}{' DESC' if d else ''}"
                                                 for c, d in self.pk) + ")")
        parts += [i.inline(table) for i in inline]
        return f"CREATE TABLE {table} ({', '.join(parts)})"


@st.composite
def index_defs(draw: st.DrawFn, schema: Schema) -> Idx:
    suffix = f"i{schema.next_index}"
    schema.next_index += 1
    cols = draw(st.lists(st.sampled_from(schema.names), min_size=1, max_size=2, unique=True))
    key = tuple((c, draw(st.booleans())) for c in cols)
    rest = [c for c in schema.names if c not in cols and c not in schema.pk_names]
    storing: tuple[str, ...] = ()
    if rest and draw(st.booleans()):
        storing = tuple(draw(st.lists(st.sampled_from(rest), min_size=1, unique=True)))
    return Idx(suffix, key, draw(st.integers(0, 2)) == 0, storing)


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    n = draw(st.integers(2, 5))
    names = [f"c{i}" for i in range(n)]
    pk_cols = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
    cols = [Col(name, draw(st.sampled_from(TYPES)), name in pk_cols or draw(st.integers(0, 3)) == 0)
            for name in names]
    schema = Schema(cols, tuple((c, draw(st.booleans())) for c in pk_cols))
    for _ in range(draw(st.integers(0, 2))):
        schema.indexes.append(draw(index_defs(schema)))
    return schema


# --- values -----------------------------------------------------------------------------------


def literal(v: Any, typ: str) -> str:
    if v is None:
        return "NULL"
    if typ == "BOOL":
        return "true" if v else "false"
    if typ == "STRING":
        return "'" + v.replace("'", "''") + "'"
    return repr(v) if isinstance(v, float) else str(v)


def random_value(rnd: random.Random, col: Col, key: bool = False, nulls: bool = True) -> Any:
    if nulls and not col.not_null and rnd.random() < 0.2:
        return None
    if col.type == "INT":
        if not key and rnd.random() < 0.1:
            return rnd.choice([-(2**40), 2**40, 1000])
        return rnd.randint(0, 6) if key else rnd.randint(-3, 9)
    if col.type == "FLOAT":
        return rnd.choice(FLOATS)
    if col.type == "STRING":
        alphabet = "ab" if key else "abB'%"
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 2 if key else 3)))
    return rnd.random() < 0.5


def _cmp(a: Any, b: Any, desc: bool) -> int:
    """CockroachDB order of two values: NULLs first ascending, last descending."""
    if a == b or (a is None and b is None):
        return 0
    if a is None:
        return 1 if desc else -1
    if b is None:
        return -1 if desc else 1
    r = -1 if a < b else 1
    return -r if desc else r


# --- a table under test -----------------------------------------------------------------------


class Table:
    def __init__(self, conn: tidemark.Connection, name: str, schema: Schema,
                 log: Callable[[str], None] | None = None):
        self.conn = conn
        self.name = name
        self.schema = schema
        self.statements = 0
        self.log = log or (lambda _: None)

    def run(self, sql: str, params: Sequence[Any] = ()) -> bool:
        """Run a write; True when it succeeded, False on a constraint violation."""
        self.log(f"{sql} {list(params) if params else ''}")
        self.statements += 1
        try:
            self.conn.execute(sql, params)
        except TidemarkError as exc:
            if exc.code not in EXPECTED_ERRORS:
                raise
            return False
        return True

    def rows(self, index: str | None = None, where: str = "", as_of: Any = None,
             order: str = "") -> list[tuple[Any, ...]]:
        src = self.name + (f"@{index}" if index else "")
        aost = f" AS OF SYSTEM TIME {as_of}" if as_of is not None else ""
        where = f" WHERE {where}" if where else ""
        return self.conn.execute(f"SELECT * FROM {src}{aost}{where}{order}").rows

    def index_names(self) -> list[str]:
        return [f"{self.name}_pkey", *(i.name(self.name) for i in self.schema.indexes)]

    def fingerprints(self, as_of: Any = None) -> list[tuple[str, int]]:
        aost = f" AS OF SYSTEM TIME {as_of}" if as_of is not None else ""
        return [tuple(r) for r in
                self.conn.execute(f"SHOW FINGERPRINTS FROM TABLE {self.name}{aost}").rows]

    def insert_rows(self, rows: Sequence[Sequence[Any]], suffix: str = "") -> bool:
        if not rows:
            return True
        n = len(self.schema.cols)
        values = ", ".join("(" + ", ".join(f"${i * n + j + 1}" for j in range(n)) + ")"
                           for i in range(len(rows)))
        params = [v for r in rows for v in r]
        return self.run(f"INSERT INTO {self.name} VALUES {values}{suffix}", params)

    def pk_where(self, row: Sequence[Any]) -> tuple[str, list[Any]]:
        parts, params = [], []
        for c in self.schema.pk_names:
            params.append(row[self.schema.pos(c)])
            parts.append(f"{c} = ${len(params)}")
        return " AND ".join(parts), params

    def create_index(self, idx: Idx, in_txn: bool) -> bool:
        if not in_txn:
            return self.run(idx.create(self.name))
        self.conn.execute("BEGIN")
        ok = self.run(idx.create(self.name))
        self.conn.execute("COMMIT" if ok else "ROLLBACK")
        return ok

    # -- the checks --

    def check(self, rnd: random.Random, predicates: int = 2) -> list[tuple[Any, ...]]:
        """Every index holds the table; predicates and orders agree across indexes."""
        base = self.rows(f"{self.name}_pkey")
        want = Counter(base)
        assert Counter(self.rows()) == want
        shown = {r[1] for r in self.conn.execute(f"SHOW INDEXES FROM {self.name}").rows}
        assert shown == set(self.index_names())
        for name in self.index_names():
            assert Counter(self.rows(name)) == want, f"{self.name}@{name} differs from the table"
        for idx in [self.schema.primary(), *self.schema.indexes]:
            for _ in range(predicates):
                sql, fn = self.predicate(idx, base, rnd)
                expected = Counter(r for r in base if fn(r))
                assert Counter(self.rows(where=sql)) == expected, sql
                for name in self.index_names():
                    got = Counter(self.rows(name, sql))
                    assert got == expected, f"{self.name}@{name} WHERE {sql}: {got} != {expected}"
            self.check_order(idx, want, rnd)
        return base

    def predicate(self, idx: Idx, rows: list[tuple[Any, ...]], rnd: random.Random
                  ) -> tuple[str, Callable[[tuple[Any, ...]], bool]]:
        """A predicate on the index's columns: (SQL, the same test in Python)."""
        parts: list[str] = []
        tests: list[Callable[[tuple[Any, ...]], bool]] = []
        for n, cname in enumerate(idx.names):
            col, pos = self.schema.col(cname), self.schema.pos(cname)
            present = [r[pos] for r in rows if r[pos] is not None]

            def value(col: Col = col, present: list[Any] = present) -> Any:
                if present and rnd.random() < 0.7:
                    return rnd.choice(present)
                return random_value(rnd, col, nulls=False)

            last = n == len(idx.names) - 1
            kind = rnd.choice(["eq", "eq", "in", "range", "between", "null"] if last or
                              rnd.random() < 0.3 else ["eq", "eq", "in"])
            if kind == "eq":
                v = value()
                parts.append(f"{cname} = {literal(v, col.type)}")
                tests.append(lambda r, p=pos, v=v: r[p] is not None and r[p] == v)
            elif kind == "in":
                vs = [value() for _ in range(rnd.randint(1, 3))]
                parts.append(f"{cname} IN ({', '.join(literal(v, col.type) for v in vs)})")
                tests.append(lambda r, p=pos, vs=vs: r[p] is not None and r[p] in vs)
            elif kind == "range":
                op, v = rnd.choice(["<", "<=", ">", ">="]), value()
                parts.append(f"{cname} {op} {literal(v, col.type)}")
                fn = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
                      ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}[op]
                tests.append(lambda r, p=pos, v=v, fn=fn: r[p] is not None and fn(r[p], v))
            elif kind == "between":
                lo, hi = sorted([value(), value()], key=functools.cmp_to_key(
                    lambda a, b: _cmp(a, b, False)))
                if rnd.random() < 0.2:
                    lo, hi = hi, lo  # an empty range
                parts.append(f"{cname} BETWEEN {literal(lo, col.type)} AND "
                             f"{literal(hi, col.type)}")
                tests.append(lambda r, p=pos, lo=lo, hi=hi: r[p] is not None and
                             lo <= r[p] <= hi)
            else:
                neg = rnd.random() < 0.4
                parts.append(f"{cname} IS {'NOT ' if neg else ''}NULL")
                tests.append(lambda r, p=pos, neg=neg: (r[p] is None) != neg)
            if kind in ("range", "between", "null") or rnd.random() < 0.3:
                break  # nothing after a range constrains the index
        return " AND ".join(parts), lambda r: all(t(r) for t in tests)

    def check_order(self, idx: Idx, want: Counter[tuple[Any, ...]], rnd: random.Random) -> None:
        mode = rnd.choice(["same", "reversed", "mixed"])
        dirs = [d if mode == "same" else (not d) if mode == "reversed" else rnd.random() < 0.5
                for _, d in idx.cols]
        order = " ORDER BY " + ", ".join(f"{c}{' DESC' if d else ''}"
                                         for c, d in zip(idx.names, dirs, strict=True))
        positions = [self.schema.pos(c) for c in idx.names]

        def keys(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
            return [tuple(r[p] for p in positions) for r in rows]

        def cmp(a: tuple[Any, ...], b: tuple[Any, ...]) -> int:
            for x, y, d in zip(a, b, dirs, strict=True):
                c = _cmp(x, y, d)
                if c:
                    return c
            return 0

        got = self.rows(idx.name(self.name), order=order)
        assert Counter(got) == want
        expected = sorted(keys(got), key=functools.cmp_to_key(cmp))
        assert keys(got) == expected, f"{self.name}@{idx.name(self.name)}{order} is not sorted"
        limit = rnd.randint(0, 4)
        limited = self.rows(idx.name(self.name), order=f"{order} LIMIT {limit}")
        assert keys(limited) == expected[:limit], f"{order} LIMIT {limit}"


@dataclass
class Snapshot:
    ts: Any
    fingerprints: list[tuple[str, int]]
    rows: Counter[tuple[Any, ...]]
    indexes: list[str]


def snapshot(table: Table) -> Snapshot:
    """Timestamp, fingerprints, rows and index names, all read at one timestamp."""
    conn = table.conn
    conn.execute("BEGIN")
    try:
        ts = conn.execute("SELECT cluster_logical_timestamp()").rows[0][0]
        fps = table.fingerprints()
        rows = Counter(table.rows())
    finally:
        conn.execute("ROLLBACK")
    return Snapshot(ts, fps, rows, table.index_names())


def check_history(table: Table, snapshots: list[Snapshot]) -> None:
    for snap in snapshots:
        assert table.fingerprints(as_of=snap.ts) == snap.fingerprints, \
            f"SHOW FINGERPRINTS AS OF SYSTEM TIME {snap.ts}"
        for name in snap.indexes:
            assert Counter(table.rows(name, as_of=snap.ts)) == snap.rows, \
                f"SELECT * FROM {table.name}@{name} AS OF SYSTEM TIME {snap.ts}"


# --- random writes ----------------------------------------------------------------------------


class Writer:
    def __init__(self, table: Table, rnd: random.Random):
        self.t = table
        self.rnd = rnd
        self.kinds = ["insert", "insert", "nothing", "upsert", "do_update", "update", "update",
                      "delete"]

    @property
    def schema(self) -> Schema:
        return self.t.schema

    def row(self) -> list[Any]:
        return [random_value(self.rnd, c, key=c.name in self.schema.pk_names)
                for c in self.schema.cols]

    def existing(self, col: Col) -> Any:
        pos = self.schema.pos(col.name)
        present = [r[pos] for r in self.t.rows()]
        if present and self.rnd.random() < 0.6:
            return self.rnd.choice(present)
        return random_value(self.rnd, col)

    def where(self) -> str:
        col = self.rnd.choice(self.schema.cols)
        v = literal(self.existing(col), col.type)
        return self.rnd.choice([f"{col.name} = {v}", f"{col.name} <> {v}", f"{col.name} < {v}",
                                f"{col.name} IS NULL", f"{col.name} >= {v}"])

    def step(self) -> bool:
        """One random write; False when it failed on a constraint."""
        rnd, t, schema = self.rnd, self.t, self.schema
        kind = rnd.choice(self.kinds)
        if kind in ("insert", "nothing"):
            rows = [self.row() for _ in range(rnd.randint(1, 5))]
            return t.insert_rows(rows, " ON CONFLICT DO NOTHING" if kind == "nothing" else "")
        elif kind == "upsert":
            cols = [c for c in schema.names if c in schema.pk_names or rnd.random() < 0.6]
            rows = [self.row() for _ in range(rnd.randint(1, 4))]
            values = ", ".join("(" + ", ".join(literal(r[schema.pos(c)], schema.col(c).type)
                                               for c in cols) + ")" for r in rows)
            return t.run(f"UPSERT INTO {t.name} ({', '.join(cols)}) VALUES {values}")
        elif kind == "do_update":
            targets = [schema.pk_names, *(i.names for i in schema.indexes if i.unique)]
            target = rnd.choice(targets)
            col = rnd.choice(schema.cols)
            value = rnd.choice([f"excluded.{col.name}",
                                literal(random_value(rnd, col), col.type)])
            rows = [self.row() for _ in range(rnd.randint(1, 3))]
            return t.insert_rows(rows, f" ON CONFLICT ({', '.join(target)}) DO UPDATE SET "
                                       f"{col.name} = {value}")
        elif kind == "update":
            sets = []
            for col in rnd.sample(schema.cols, rnd.randint(1, min(2, len(schema.cols)))):
                v = literal(random_value(rnd, col), col.type)
                if col.type == "INT" and rnd.random() < 0.4:
                    v = f"{col.name} + 1"
                elif col.type == "STRING" and rnd.random() < 0.4:
                    v = f"{col.name} || 'a'"
                elif col.type == "BOOL" and rnd.random() < 0.4:
                    v = f"NOT {col.name}"
                sets.append(f"{col.name} = {v}")
            where = f" WHERE {self.where()}" if rnd.random() < 0.8 else ""
            return t.run(f"UPDATE {t.name} SET {', '.join(sets)}{where}")
        return t.run(f"DELETE FROM {t.name} WHERE {self.where()}")


# --- the properties ---------------------------------------------------------------------------


STATS: Counter[str] = Counter()


@SETTINGS
@given(data=st.data())
def test_indexes_fingerprints_and_history(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory(prefix="tidemark-idx-") as tmp:
        run_history(data, os.path.join(tmp, "store"))


def run_history(data: st.DataObject, path: str) -> None:
    schema = data.draw(schemas(), label="schema")
    rnd = random.Random(data.draw(st.integers(0, 2**32), label="seed"))
    with tidemark.connect(path) as conn:
        _run_history(data, conn, schema, rnd)


def _run_history(data: st.DataObject, conn: tidemark.Connection, schema: Schema,
                 rnd: random.Random) -> None:
    batch = data.draw(st.integers(1, 5), label="backfill batch size")
    conn.execute(f"SET CLUSTER SETTING bulkio.index_backfill.batch_size = {batch}")
    t = Table(conn, "t", schema, note)
    conn.execute(schema.create("t", schema.indexes))
    note(schema.create("t", schema.indexes))
    writer = Writer(t, rnd)
    t.insert_rows([writer.row() for _ in range(data.draw(st.integers(0, 20)))],
                  " ON CONFLICT DO NOTHING")
    snapshots = [snapshot(t)]
    for _ in range(data.draw(st.integers(0, 25), label="steps")):
        op = data.draw(st.sampled_from(["write"] * 6 + ["create", "drop", "check",
                                                        "snapshot"]))
        if op == "write":
            writer.step()
        elif op == "create" and len(schema.indexes) < 4:
            idx = data.draw(index_defs(schema))
            how = data.draw(st.sampled_from(["online", "online", "txn", "txn+writes"]))
            if how == "txn+writes":
                # Built inside a transaction whose later writes must maintain it.
                t.log("BEGIN")
                conn.execute("BEGIN")
                ok = t.run(idx.create(t.name))
                for _ in range(rnd.randint(1, 3)):
                    ok = ok and writer.step()
                commit = ok and rnd.random() < 0.8
                t.log("COMMIT" if commit else "ROLLBACK")
                conn.execute("COMMIT" if commit else "ROLLBACK")
            else:
                commit = t.create_index(idx, in_txn=how == "txn")
            if commit:
                schema.indexes.append(idx)
                STATS["indexes built"] += 1
        elif op == "drop" and schema.indexes:
            idx = data.draw(st.sampled_from(schema.indexes))
            t.run(f"DROP INDEX {t.name}@{idx.name(t.name)}")
            schema.indexes.remove(idx)
        elif op == "check":
            t.check(rnd)
        elif op == "snapshot":
            snapshots.append(snapshot(t))
    base = t.check(rnd, predicates=3)
    snapshots.append(snapshot(t))
    check_history(t, snapshots)

    twin = build_twin(conn, schema, base, data, rnd)
    twin.check(rnd, predicates=1)
    mine = [fp for _, fp in t.fingerprints()]
    theirs = [fp for _, fp in twin.fingerprints()]
    assert len(mine) == len(theirs) == len(t.index_names())
    assert mine == theirs, f"fingerprints differ: {t.fingerprints()} vs {twin.fingerprints()}"
    STATS["examples"] += 1
    STATS["statements"] += t.statements + twin.statements


def build_twin(conn: tidemark.Connection, schema: Schema, rows: list[tuple[Any, ...]],
               data: st.DataObject, rnd: random.Random) -> Table:
    """Table u with the content and indexes of t, built another way."""
    twin = Table(conn, "u", schema, note)
    when = data.draw(st.sampled_from(["inline", "before", "after"]), label="twin indexes")
    conn.execute(schema.create("u", schema.indexes if when == "inline" else ()))
    if when == "before":
        for idx in schema.indexes:
            assert twin.create_index(idx, in_txn=rnd.random() < 0.3)
    order = data.draw(st.permutations(rows), label="twin insertion order")
    churn = data.draw(st.integers(0, len(order)), label="rows inserted with other values")
    unique = schema.unique_cols()

    def decoy(row: tuple[Any, ...]) -> list[Any]:
        # Other values that collide with nothing: unique columns NULL (or as they are).
        out = list(row)
        for i, c in enumerate(schema.cols):
            if c.name in schema.pk_names:
                continue
            if c.name in unique:
                out[i] = None if not c.not_null else row[i]
            else:
                out[i] = random_value(rnd, c)
        return out

    pending = [decoy(r) for r in order[:churn]] + [list(r) for r in order[churn:]]
    rnd.shuffle(pending)
    while pending:
        n = rnd.randint(1, 5)
        assert twin.insert_rows(pending[:n])
        pending = pending[n:]
    for row in order[:churn]:
        where, params = twin.pk_where(row)
        if rnd.random() < 0.5:
            assert twin.run(f"DELETE FROM u WHERE {where}", params)
            assert twin.insert_rows([row])
        else:
            others = [c for c in schema.names if c not in schema.pk_names]
            if others:
                sets = ", ".join(f"{c} = ${len(params) + i + 1}" for i, c in enumerate(others))
                assert twin.run(f"UPDATE u SET {sets} WHERE {where}",
                                params + [row[schema.pos(c)] for c in others])
    for row in rnd.sample(order, min(len(order), rnd.randint(0, 3))):
        where, params = twin.pk_where(row)
        assert twin.run(f"DELETE FROM u WHERE {where}", params)
        assert twin.insert_rows([row])
    if when == "after":
        for idx in schema.indexes:
            assert twin.create_index(idx, in_txn=rnd.random() < 0.3)
    assert Counter(twin.rows()) == Counter(rows)
    return twin


@pytest.fixture(scope="module", autouse=True)
def _report_stats():
    yield
    if STATS:
        print(f"\nindex consistency: {dict(STATS)}")


@pytest.mark.parametrize("seed", range(4))
def test_online_index_build_under_concurrent_writes(tmp_path, seed: int) -> None:
    """Index builds (small backfill batches) while another connection writes."""
    rnd = random.Random(seed)
    path = tmp_path / "store"
    schema = Schema([Col("a", "INT", True), Col("b", "INT", False), Col("c", "STRING", False),
                     Col("d", "INT", False)], (("a", False),))
    with tidemark.connect(path) as conn:
        conn.execute("SET CLUSTER SETTING bulkio.index_backfill.batch_size = 7")
        conn.execute(schema.create("w"))
        t = Table(conn, "w", schema)
        for start in range(0, 300, 100):
            t.insert_rows([(i, i % 11, f"s{i}", i) for i in range(start, start + 100)])
        stop = threading.Event()
        failures: list[BaseException] = []
        writes = [0]

        def write() -> None:
            r = random.Random(seed + 1000)
            try:
                with tidemark.connect(path) as other:
                    while not stop.is_set():
                        a = r.randrange(400)
                        k = r.randrange(4)
                        # d stays equal to a and c to 's<a>' or NULL: the unique builds succeed.
                        if k == 0:
                            other.execute("UPSERT INTO w VALUES ($1, $2, $3, $1)",
                                          [a, r.randrange(-3, 15), f"s{a}"])
                        elif k == 1:
                            other.execute("DELETE FROM w WHERE a = $1", [a])
                        elif k == 2:
                            other.execute("UPDATE w SET b = b + 1, c = NULL WHERE a = $1", [a])
                        else:
                            other.execute("UPDATE w SET b = NULL WHERE b = $1",
                                          [r.randrange(11)])
                        writes[0] += 1
            except BaseException as exc:
                failures.append(exc)

        thread = threading.Thread(target=write)
        thread.start()
        snapshots = []
        try:
            for idx in [Idx("b", (("b", False),), storing=("c",)),
                        Idx("cb", (("c", True), ("b", False))),
                        Idx("d", (("d", rnd.random() < 0.5),), unique=True),
                        Idx("c", (("c", False),), unique=True, storing=("b", "d"))]:
                snapshots.append(snapshot(t))
                assert t.create_index(idx, in_txn=False)
                schema.indexes.append(idx)
                if rnd.random() < 0.3:
                    gone = schema.indexes.pop(0)
                    assert t.run(f"DROP INDEX w@{gone.name('w')}")
        finally:
            stop.set()
            thread.join()
        assert not failures, failures
        assert writes[0] > 0
        t.check(rnd, predicates=4)
        snapshots.append(snapshot(t))
        check_history(t, snapshots)


# --- bugs found (fixed since), as regressions ----------------------------------------------


def test_fingerprint_after_update_of_null_column(tmp_path) -> None:
    with tidemark.connect(tmp_path / "store") as conn:
        conn.execute("CREATE TABLE t (a INT PRIMARY KEY, b INT, c INT)")
        conn.execute("INSERT INTO t VALUES (1, NULL, 5)")
        conn.execute("UPDATE t SET b = 7 WHERE a = 1")
        conn.execute("CREATE TABLE u (a INT PRIMARY KEY, b INT, c INT)")
        conn.execute("INSERT INTO u VALUES (1, 7, 5)")
        assert conn.execute("SELECT * FROM t").rows == conn.execute("SELECT * FROM u").rows
        t_fp = conn.execute("SHOW FINGERPRINTS FROM TABLE t").rows[0][1]
        u_fp = conn.execute("SHOW FINGERPRINTS FROM TABLE u").rows[0][1]
        assert t_fp == u_fp


def test_fingerprint_after_no_op_update_through_covering_index(tmp_path) -> None:
    with tidemark.connect(tmp_path / "store") as conn:
        for name in ("t", "u"):
            conn.execute(f"CREATE TABLE {name} (a INT PRIMARY KEY, b INT NOT NULL, "
                         f"c INT NOT NULL, INDEX {name}_b (b) STORING (c))")
            conn.execute(f"INSERT INTO {name} VALUES (1, 10, 100)")
        before = conn.execute("SHOW FINGERPRINTS FROM TABLE t").rows
        conn.execute("UPDATE t SET c = 100 WHERE b = 10")  # changes nothing
        assert conn.execute("SELECT * FROM t").rows == [(1, 10, 100)]
        assert conn.execute("SHOW FINGERPRINTS FROM TABLE t").rows == before
        t_fps = [fp for _, fp in conn.execute("SHOW FINGERPRINTS FROM TABLE t").rows]
        u_fps = [fp for _, fp in conn.execute("SHOW FINGERPRINTS FROM TABLE u").rows]
        assert t_fps == u_fps


def test_rolled_back_schema_change_does_not_leak_into_later_writes(tmp_path) -> None:
    path = tmp_path / "store"
    with tidemark.connect(path) as conn, tidemark.connect(path) as other:
        conn.execute("CREATE TABLE t (a INT PRIMARY KEY, b INT, INDEX t_b (b))")
        conn.execute("CREATE TABLE s (a INT PRIMARY KEY, c INT, INDEX s_c (c))")
        conn.execute("BEGIN")
        conn.execute("DROP INDEX t@t_b")
        conn.execute("INSERT INTO t VALUES (1, 1)")  # resolves t without t_b, and caches it
        conn.execute("ROLLBACK")
        conn.execute("DROP INDEX s@s_c")  # committed: the same schema generation
        conn.execute("INSERT INTO t VALUES (2, 2)")  # must maintain t_b
        assert other.execute("SELECT * FROM t@t_pkey").rows == [(2, 2)]
        assert other.execute("SELECT * FROM t@t_b").rows == [(2, 2)]
        assert other.execute("SELECT * FROM t WHERE b = 2").rows == [(2, 2)]


def test_rolled_back_create_index_is_not_visible(tmp_path) -> None:
    with tidemark.connect(tmp_path / "store") as conn:
        conn.execute("CREATE TABLE t (a INT PRIMARY KEY, b INT, INDEX t_b (b))")
        conn.execute("BEGIN")
        conn.execute("CREATE INDEX t_b2 ON t (b)")
        conn.execute("INSERT INTO t VALUES (1, 1)")
        conn.execute("ROLLBACK")
        conn.execute("DROP INDEX t@t_b")
        names = {r[1] for r in conn.execute("SHOW INDEXES FROM t").rows}
        assert names == {"t_pkey"}


def test_fingerprints_in_a_transaction_see_its_own_writes_and_conflict_like_reads(tmp_path
                                                                                  ) -> None:
    """SHOW FINGERPRINTS inside a transaction counts its uncommitted writes, and claims the
    table like a read: a concurrent write to it makes the transaction retry (40001)."""
    with tidemark.connect(tmp_path / "store") as conn, \
            tidemark.connect(tmp_path / "store") as other:
        for name in ("t", "u"):
            conn.execute(f"CREATE TABLE {name} (a INT PRIMARY KEY, b INT, INDEX {name}_b (b))")
            conn.execute(f"INSERT INTO {name} VALUES (1, 10), (2, 20)")
        conn.execute("INSERT INTO u VALUES (3, 30)")

        def fps(table: str) -> list[int]:
            return [fp for _, fp in conn.execute(f"SHOW FINGERPRINTS FROM TABLE {table}").rows]

        want = fps("u")
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (3, 30)")
        assert fps("t") == want
        conn.execute("ROLLBACK")
        conn.execute("BEGIN")
        seen = fps("t")
        other.execute("INSERT INTO t VALUES (4, 40)")
        conn.execute("INSERT INTO u VALUES (9, 90)")
        with pytest.raises(tidemark.TidemarkError) as err:
            conn.execute("COMMIT")
        assert err.value.code == "40001"
        assert seen != want
