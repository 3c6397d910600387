"""Differential test of the SQL layer: tidemark against SQLite as an oracle.

Hypothesis draws a table (2-6 columns of INT, FLOAT, STRING and BOOL, a one- or two-column
primary key, up to two secondary indexes, some UNIQUE, some with STORING) and then a sequence
of statements, each drawn from the state the previous ones left (which indexes exist, which
values the table holds), and runs every statement on a fresh tidemark store and on an in-memory
SQLite database (``STRICT, WITHOUT ROWID`` tables):

* writes: multi-row INSERT (plain, ON CONFLICT DO NOTHING with and without a target, ON
  CONFLICT (...) DO UPDATE SET ... [WHERE ...]), UPSERT, UPDATE ... WHERE, DELETE ... WHERE,
  some with RETURNING; CREATE [UNIQUE] INDEX on the populated table (online, or inside an
  explicit transaction) and DROP INDEX. Both must succeed, or both fail with the same kind of
  constraint violation (unique, not null); the row counts, RETURNING rows and the whole table
  must match after every statement, and a failed statement must leave the table unchanged.
* queries: WHERE with AND/OR/NOT, comparisons, IN, BETWEEN, LIKE/ILIKE, IS [NOT] NULL, IS
  TRUE, boolean columns; DISTINCT; ORDER BY ... [NULLS FIRST|LAST]; LIMIT/OFFSET;
  count/sum/min/max/avg (also DISTINCT) with GROUP BY and HAVING; ``t@index`` hints.
  Results are compared as multisets, as lists when ORDER BY determines the order, and by the
  sequence of ORDER BY keys when it does not. Numbers compare numerically (tidemark's sum and
  avg are DECIMAL), to 6 decimal places.

Only SQL whose meaning is the same in CockroachDB and SQLite is generated: no integer division
or overflow, no comparison of different types (INT and FLOAT excepted), LIKE made
case-sensitive in SQLite and without escapes, explicit NULL ordering in SQLite, no UPDATE whose
success depends on the order rows are visited (key columns are only ever set to constants), and
no NULL into a NOT NULL column of an upsert (CockroachDB and SQLite disagree on when that is
checked). Where the dialects part, tidemark alone is held to CockroachDB's rules: an UPSERT or
DO UPDATE whose proposed rows share a conflict key must fail (21000; SQLite would apply both)
and change nothing, and a multi-row INSERT with a NULL in a NOT NULL column must report that
(CockroachDB checks NOT NULL on every row before any uniqueness; SQLite goes row by row).

``TIDEMARK_PROPERTY_EXAMPLES`` sets the number of examples (default 400, about 25 s);
``--hypothesis-show-statistics`` prints how many ran. The bugs this test found are pinned by
the regression tests at the end.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

import tidemark
from tidemark.errors import TidemarkError

_ENV_EXAMPLES = os.environ.get("TIDEMARK_PROPERTY_EXAMPLES")
MAX_EXAMPLES = int(_ENV_EXAMPLES) if _ENV_EXAMPLES else 400
MAX_STATEMENTS = 30

TYPES = ("INT", "FLOAT", "STRING", "BOOL")
LITE_TYPES = {"INT": "INTEGER", "FLOAT": "REAL", "STRING": "TEXT", "BOOL": "INTEGER"}
PY_TYPES = {"INT": int, "FLOAT": float, "STRING": str, "BOOL": bool}
NUMERIC = ("INT", "FLOAT")
FLOATS = (-2.5, -1.0, 0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 7.75)  # sums stay exact
BIG_INTS = (-(2**40), 2**40, 1000)
STRING_ALPHABET = "abAB_%' "
PATTERN_ALPHABET = "abA%_'"
TABLE = "t"

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
    name: str
    cols: tuple[tuple[str, bool], ...]  # (column, descending)
    unique: bool
    storing: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.cols)

    def key_sql(self) -> str:
        return ", ".join(f"{c}{' DESC' if d else ''}" for c, d in self.cols)

    def tm_inline(self) -> str:
        s = f"{'UNIQUE ' if self.unique else ''}INDEX {self.name} ({self.key_sql()})"
        return s + (f" STORING ({', '.join(self.storing)})" if self.storing else "")

    def tm_create(self) -> str:
        s = f"CREATE {'UNIQUE ' if self.unique else ''}INDEX {self.name} ON {TABLE} " \
            f"({self.key_sql()})"
        return s + (f" STORING ({', '.join(self.storing)})" if self.storing else "")

    def lite_create(self) -> str:
        return f"CREATE {'UNIQUE ' if self.unique else ''}INDEX {self.name} ON {TABLE} " \
               f"({self.key_sql()})"


@dataclass
class Schema:
    cols: list[Col]
    pk: tuple[tuple[str, bool], ...]
    indexes: list[Idx] = field(default_factory=list)
    next_index: int = 1

    def col(self, name: str) -> Col:
        return next(c for c in self.cols if c.name == name)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cols]

    @property
    def pk_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.pk)

    def key_columns(self) -> set[str]:
        """Columns of the primary key or of a unique index."""
        out = set(self.pk_names)
        for i in self.indexes:
            if i.unique:
                out.update(i.names)
        return out

    def targets(self) -> list[tuple[str, ...]]:
        """Column sets usable as an ON CONFLICT target."""
        return [self.pk_names, *(i.names for i in self.indexes if i.unique)]

    def new_index_name(self) -> str:
        name = f"{TABLE}_i{self.next_index}"
        self.next_index += 1
        return name

    def pk_sql(self) -> str:
        return ", ".join(f"{c}{' DESC' if d else ''}" for c, d in self.pk)

    def tm_create(self) -> str:
        parts = [f"{c.name} {c.type}{' NOT NULL' if c.not_null else ''}" for c in self.cols]
        parts.append(f"PRIMARY KEY ({self.pk_sql()})")
        parts += [i.tm_inline() for i in self.indexes]
        return f"CREATE TABLE {TABLE} ({', '.join(parts)})"

    def lite_create(self) -> list[str]:
        parts = [f"{c.name} {LITE_TYPES[c.type]}{' NOT NULL' if c.not_null else ''}"
                 for c in self.cols]
        parts.append(f"PRIMARY KEY ({self.pk_sql()})")
        return [f"CREATE TABLE {TABLE} ({', '.join(parts)}) STRICT, WITHOUT ROWID",
                *(i.lite_create() for i in self.indexes)]


@st.composite
def index_defs(draw: st.DrawFn, schema: Schema, name: str) -> Idx:
    n = draw(st.integers(1, min(2, len(schema.cols))))
    cols = draw(st.lists(st.sampled_from(schema.names), min_size=n, max_size=n, unique=True))
    key = tuple((c, draw(st.booleans())) for c in cols)
    unique = draw(st.integers(0, 9)) < 4
    rest = [c for c in schema.names if c not in cols and c not in schema.pk_names]
    storing: tuple[str, ...] = ()
    if rest and draw(st.integers(0, 9)) < 3:
        storing = tuple(draw(st.lists(st.sampled_from(rest), min_size=1, max_size=len(rest),
                                      unique=True)))
    return Idx(name, key, unique, storing)


@st.composite
def schemas(draw: st.DrawFn) -> Schema:
    n = draw(st.integers(2, 6))
    types = [draw(st.sampled_from(TYPES)) for _ in range(n)]
    names = [f"c{i}" for i in range(n)]
    pk_cols = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
    pk = tuple((c, draw(st.integers(0, 3)) == 0) for c in pk_cols)
    cols = [Col(name, typ, name in pk_cols or draw(st.integers(0, 3)) == 0)
            for name, typ in zip(names, types, strict=True)]
    schema = Schema(cols, pk)
    for _ in range(draw(st.integers(0, 2))):
        schema.indexes.append(draw(index_defs(schema, schema.new_index_name())))
    return schema


# --- values and literals ----------------------------------------------------------------------


def literal(v: Any, typ: str) -> str:
    if v is None:
        return "NULL"
    if typ == "BOOL":
        return "true" if v else "false"
    if typ == "STRING":
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def value_strategy(typ: str, key: bool) -> st.SearchStrategy[Any]:
    if typ == "INT":
        small = st.integers(0, 6) if key else st.integers(-3, 9)
        return small if key else st.one_of(small, small, small, st.sampled_from(BIG_INTS))
    if typ == "FLOAT":
        return st.sampled_from(FLOATS[1:7] if key else FLOATS)
    if typ == "STRING":
        return st.text(alphabet="ab", max_size=2) if key else \
            st.text(alphabet=STRING_ALPHABET, max_size=3)
    return st.booleans()


def norm(v: Any) -> Any:
    """A comparable form: bools as 0/1, numbers rounded to 6 places, integral ones as ints."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, (float, Decimal)):
        f = round(float(v), 6)
        return int(f) if f.is_integer() else f
    return v


def norm_rows(rows: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    return [tuple(norm(v) for v in r) for r in rows]


def bag(rows: Iterable[Sequence[Any]]) -> Counter[tuple[Any, ...]]:
    return Counter(norm_rows(rows))


# --- running statements on both ---------------------------------------------------------------


@dataclass
class Outcome:
    error: str | None = None  # "unique", "not null", or "other: ..."
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    count: int = 0
    detail: str = ""


def _tm_kind(exc: TidemarkError) -> str:
    return {"23505": "unique", "23502": "not null"}.get(exc.code, f"other: {exc.code}")


def _lite_kind(exc: sqlite3.Error) -> str:
    msg = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        if msg.startswith("UNIQUE constraint failed"):
            return "unique"
        if msg.startswith("NOT NULL constraint failed"):
            return "not null"
    return f"other: {msg}"


class Pair:
    """One tidemark store and one SQLite database holding the same table."""

    def __init__(self, schema: Schema):
        self.schema = schema
        self.dir = tempfile.mkdtemp(prefix="tidemark-diff-")
        self.tm = tidemark.connect(os.path.join(self.dir, "store"))
        self.lite = sqlite3.connect(":memory:", isolation_level=None)
        self.lite.execute("PRAGMA case_sensitive_like = ON")
        self.rows: Counter[tuple[Any, ...]] = Counter()
        self.samples: dict[str, list[Any]] = {c: [] for c in schema.names}
        self.statements = 0
        self.errors = 0
        self.queries = 0
        self.nonempty = 0
        self.in_txn = False
        self.txn_start: Counter[tuple[Any, ...]] = Counter()
        self.txn_indexes: list[Idx] = []

    def close(self) -> None:
        self.tm.close()
        self.lite.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def tm_exec(self, sql: str) -> Outcome:
        note(f"tidemark: {sql}")
        self.statements += 1
        try:
            r = self.tm.execute(sql)
        except TidemarkError as exc:
            return Outcome(error=_tm_kind(exc), detail=f"{exc.code} {exc}")
        return Outcome(rows=list(r.rows), count=r.rows_affected)

    def lite_exec(self, sql: str) -> Outcome:
        try:
            cur = self.lite.execute(sql)
            rows = cur.fetchall()
            return Outcome(rows=rows, count=cur.rowcount)
        except sqlite3.Error as exc:
            return Outcome(error=_lite_kind(exc), detail=str(exc))

    def create(self) -> None:
        self.tm.execute(self.schema.tm_create())
        for sql in self.schema.lite_create():
            self.lite.execute(sql)
        note(f"schema: {self.schema.tm_create()}")

    # -- transactions --

    def begin(self) -> None:
        note("BEGIN")
        self.tm.execute("BEGIN")
        self.lite.execute("BEGIN")
        self.in_txn = True
        self.txn_start = self.rows
        self.txn_indexes = list(self.schema.indexes)

    def end(self, commit: bool) -> None:
        note("COMMIT" if commit else "ROLLBACK")
        self.tm.execute("COMMIT" if commit else "ROLLBACK")
        self.lite.execute("COMMIT" if commit else "ROLLBACK")
        self.in_txn = False
        if not commit:
            self.schema.indexes[:] = self.txn_indexes
        self.compare_table(f"\nafter {'COMMIT' if commit else 'ROLLBACK'}")
        if not commit:
            assert self.rows == self.txn_start, "ROLLBACK kept changes"

    def failed(self, before: Counter[tuple[Any, ...]], context: str) -> None:
        """After a failed statement: inside a transaction, the transaction is aborted (as in
        CockroachDB) and rolled back on both; the table must be as before the statement (or
        the transaction)."""
        self.errors += 1
        if self.in_txn:
            with pytest.raises(TidemarkError) as exc:
                self.tm.execute(f"SELECT * FROM {TABLE}")
            assert exc.value.code == "25P02", "the transaction is not aborted" + context
            self.end(commit=False)
            return
        self.compare_table(context)
        assert self.rows == before, "a failed statement changed the table" + context

    # -- writes --

    def write(self, tm_sql: str, lite_sql: str, returning: bool = False,
              txn: bool = False, counted: bool = True, null_violation: bool = False) -> bool:
        """Run a write on both; True when it succeeded.

        ``null_violation``: an INSERT row puts NULL into a NOT NULL column. CockroachDB (and
        tidemark) check NOT NULL on every row before any uniqueness check (unique violations
        surface when the write batch runs); SQLite checks row by row. So tidemark must report
        the NOT NULL violation, and SQLite may report either.
        """
        if txn:
            self.tm.execute("BEGIN")
            a = self.tm_exec(tm_sql)
            self.tm.execute("ROLLBACK" if a.error else "COMMIT")
        else:
            a = self.tm_exec(tm_sql)
        b = self.lite_exec(lite_sql)
        context = f"\ntidemark: {tm_sql}\nsqlite:   {lite_sql}\n" \
                  f"tidemark: {a.error} {a.detail}\nsqlite:   {b.error} {b.detail}"
        assert not (b.error or "").startswith("other"), "the generator made bad SQL" + context
        if null_violation:
            assert a.error == "not null", "expected a NOT NULL violation" + context
            assert b.error in ("not null", "unique"), "outcomes differ" + context
        else:
            assert a.error == b.error, "outcomes differ" + context
        if a.error is not None:
            self.failed(self.rows, context)
            return False
        if counted:
            assert a.count == b.count, f"row counts {a.count} != {b.count}" + context
        if returning:
            assert bag(a.rows) == bag(b.rows), f"RETURNING differs: {a.rows} != {b.rows}" + context
        self.compare_table(context)
        return True

    def write_refused(self, tm_sql: str) -> None:
        """An UPSERT / DO UPDATE proposing two rows with one conflict key: CockroachDB refuses
        it with 21000 (a constraint violation met first is fine too) and changes nothing. SQLite
        would apply both rows, so it does not run."""
        a = self.tm_exec(tm_sql)
        context = f"\ntidemark: {tm_sql}\ntidemark: {a.error} {a.detail}"
        assert a.error is not None, "a row was touched twice" + context
        assert a.detail.startswith("21000") or a.error in ("unique", "not null"), \
            "wrong error" + context
        self.failed(self.rows, context)

    def compare_table(self, context: str = "") -> None:
        tm_rows = self.tm.execute(f"SELECT * FROM {TABLE}").rows
        lite_rows = self.lite.execute(f"SELECT * FROM {TABLE}").fetchall()
        a, b = bag(tm_rows), bag(lite_rows)
        assert a == b, f"tables differ:\ntidemark {sorted(a, key=repr)}\n" \
                       f"sqlite   {sorted(b, key=repr)}" + context
        self.rows = a
        for i, name in enumerate(self.schema.names):
            self.samples[name] = sorted({r[i] for r in lite_rows if r[i] is not None},
                                        key=repr)

    def check_indexes(self) -> None:
        """Every index, read in full, gives the table."""
        for name in [f"{TABLE}_pkey", *(i.name for i in self.schema.indexes)]:
            got = bag(self.tm.execute(f"SELECT * FROM {TABLE}@{name}").rows)
            assert got == self.rows, f"{TABLE}@{name} differs from the table"

    # -- queries --

    def query(self, q: Query) -> None:
        a = self.tm_exec(q.tm)
        b = self.lite_exec(q.lite)
        context = f"\ntidemark: {q.tm}\nsqlite:   {q.lite}\n"
        assert a.error is None, f"tidemark failed: {a.detail}" + context
        self.queries += 1
        self.nonempty += bool(a.rows)
        assert b.error is None, f"the generator made bad SQL: {b.detail}" + context
        context += f"tidemark: {a.rows}\nsqlite:   {b.rows}"
        for r in a.rows:
            assert len(r) == q.width, "wrong number of columns" + context
            for v, typ in zip(r, q.types, strict=True):
                if typ is not None and v is not None:
                    assert type(v) is PY_TYPES[typ], f"{v!r} is not a {typ}" + context
        if q.mode == "bag":
            assert bag(a.rows) == bag(b.rows), "results differ" + context
        elif q.mode == "list":
            assert norm_rows(a.rows) == norm_rows(b.rows), "results differ" + context
        elif q.mode == "keys":
            keys_a = [tuple(norm(r[i]) for i in q.keys) for r in a.rows]
            keys_b = [tuple(norm(r[i]) for i in q.keys) for r in b.rows]
            assert keys_a == keys_b, "ORDER BY keys differ" + context
            if q.limit is None and q.offset is None:
                assert bag(a.rows) == bag(b.rows), "results differ" + context
        else:  # "subset": LIMIT without ORDER BY, b is the unlimited result
            full = bag(b.rows)
            want = max(0, min(q.limit if q.limit is not None else len(b.rows),
                              len(b.rows) - (q.offset or 0)))
            assert len(a.rows) == want, "wrong number of rows" + context
            assert not bag(a.rows) - full, "rows not in the unlimited result" + context


@dataclass
class Query:
    tm: str
    lite: str
    width: int
    types: list[str | None]
    mode: str = "bag"  # bag | list | keys | subset
    keys: list[int] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None


# --- statement generation ---------------------------------------------------------------------


class Gen:
    """Draws statements for the current state of the table."""

    def __init__(self, data: st.DataObject, pair: Pair):
        self.data = data
        self.pair = pair
        self.schema = pair.schema

    def draw(self, strategy: st.SearchStrategy[Any], label: str | None = None) -> Any:
        return self.data.draw(strategy, label=label)

    def chance(self, tenths: int) -> bool:
        return self.draw(st.integers(0, 9)) < tenths

    def pick(self, options: Sequence[Any]) -> Any:
        return self.draw(st.sampled_from(list(options)))

    def subset(self, options: Sequence[Any], lo: int = 1, hi: int | None = None) -> list[Any]:
        hi = len(options) if hi is None else min(hi, len(options))
        return self.draw(st.lists(st.sampled_from(list(options)), min_size=lo, max_size=hi,
                                  unique=True))

    def value(self, col: Col, nulls: bool = True, key: bool = False) -> Any:
        if nulls and not col.not_null and self.chance(2):
            return None
        samples = self.pair.samples[col.name]
        if samples and self.chance(5):
            return self.pick(samples)
        return self.draw(value_strategy(col.type, key or col.name in self.schema.pk_names))

    def constant(self, col: Col) -> str:
        """A literal to compare ``col`` with."""
        if self.chance(1) and self.draw(st.integers(0, 2)) == 0:
            return "NULL"
        v = self.value(col, nulls=False)
        if col.type == "FLOAT" and float(v).is_integer() and self.chance(3):
            return str(int(v))  # an INT constant against a FLOAT column
        if col.type == "INT" and self.chance(1):
            return f"{v}.5"  # a DECIMAL constant against an INT column
        return literal(v, col.type)

    def expr(self, col: Col) -> str:
        """A scalar expression over ``col`` that means the same in both dialects."""
        c = col.name
        same = [o.name for o in self.schema.cols if o.type == col.type and o.name != c]
        options = {
            "INT": [f"{c} + {self.draw(st.integers(-3, 3))}", f"-{c}", f"abs({c})",
                    f"{c} * 2", f"{c} % 3", f"coalesce({c}, 7)", f"nullif({c}, 1)",
                    *(f"{c} - {o}" for o in same[:1])],
            "FLOAT": [f"{c} + 0.5", f"-{c}", f"abs({c})", f"{c} * 2", f"coalesce({c}, 1.5)",
                      *(f"{c} + {o}" for o in same[:1])],
            "STRING": [f"{c} || 'x'", f"lower({c})", f"upper({c})", f"length({c})",
                       f"substr({c}, 2)", f"trim({c})", f"coalesce({c}, 'z')",
                       f"nullif({c}, 'a')", *(f"{c} || {o}" for o in same[:1])],
            "BOOL": [f"NOT {c}", f"coalesce({c}, false)"],
        }[col.type]
        return self.pick(options)

    # -- predicates --

    def pred(self, depth: int = 0, cols: Sequence[Col] | None = None) -> tuple[str, str]:
        """A boolean expression: (tidemark text, SQLite text)."""
        cols = list(cols or self.schema.cols)
        strings = [c for c in cols if c.type == "STRING"]
        bools = [c for c in cols if c.type == "BOOL"]
        pairs = [(a, b) for a in cols for b in self.schema.cols if a.name != b.name and
                 (a.type == b.type or (a.type in NUMERIC and b.type in NUMERIC))]
        kinds = ["cmp", "cmp", "in", "between", "null"]
        kinds += ["like"] * bool(strings) + ["bool"] * bool(bools) + ["colcmp"] * bool(pairs)
        if depth < 2:
            kinds += ["and", "and", "or", "not"]
        kind = self.pick(kinds)
        if kind in ("and", "or"):
            a, b = self.pred(depth + 1, cols), self.pred(depth + 1, cols)
            op = kind.upper()
            return f"({a[0]} {op} {b[0]})", f"({a[1]} {op} {b[1]})"
        if kind == "not":
            a = self.pred(depth + 1, cols)
            return f"NOT ({a[0]})", f"NOT ({a[1]})"
        if kind == "colcmp":
            a, b = self.pick(pairs)
            s = f"{a.name} {self.pick(['=', '<>', '<', '<=', '>', '>='])} {b.name}"
            return s, s
        if kind == "like":
            c = self.pick(strings)
            pattern = self.draw(st.text(alphabet=PATTERN_ALPHABET, max_size=4))
            if self.chance(5):
                pattern = self.pick(self.pair.samples[c.name] or [""]) + "%"
            p = literal(pattern, "STRING")
            neg = "NOT " if self.chance(3) else ""
            if self.chance(3):
                return f"{c.name} {neg}ILIKE {p}", f"lower({c.name}) {neg}LIKE lower({p})"
            return f"{c.name} {neg}LIKE {p}", f"{c.name} {neg}LIKE {p}"
        if kind == "bool":
            c = self.pick(bools)
            s = self.pick([c.name, f"NOT {c.name}", f"{c.name} IS TRUE",
                           f"{c.name} IS NOT FALSE", f"{c.name} = {self.constant(c)}"])
            return s, s
        c = self.pick(cols)
        if kind == "cmp":
            op = self.pick(["=", "=", "<>", "<", "<=", ">", ">="])
            k = self.constant(c)
            lhs = c.name
            if c.type in ("INT", "FLOAT") and self.chance(2):
                lhs = f"({self.expr(c)})"
            s = f"{k} {op} {lhs}" if self.chance(2) else f"{lhs} {op} {k}"
            return s, s
        if kind == "in":
            n = self.draw(st.integers(1, 4))
            items = [self.constant(c) for _ in range(n)]
            s = f"{c.name} {'NOT ' if self.chance(2) else ''}IN ({', '.join(items)})"
            return s, s
        if kind == "between":
            s = f"{c.name} {'NOT ' if self.chance(2) else ''}BETWEEN {self.constant(c)} AND " \
                f"{self.constant(c)}"
            return s, s
        s = f"{c.name} IS {'NOT ' if self.chance(4) else ''}NULL"
        return s, s

    def where(self, tenths: int = 8) -> tuple[str, str]:
        if not self.chance(tenths):
            return "", ""
        p = self.pred()
        return f" WHERE {p[0]}", f" WHERE {p[1]}"

    def hint(self) -> str:
        if not self.chance(4):
            return ""
        return "@" + self.pick([f"{TABLE}_pkey", *(i.name for i in self.schema.indexes)])

    # -- queries --

    def order_term(self, expr: str) -> tuple[str, str]:
        desc = self.draw(st.booleans())
        nulls = self.pick([None, None, "FIRST", "LAST"])
        d = " DESC" if desc else ""
        tm = f"{expr}{d}" + (f" NULLS {nulls}" if nulls else "")
        lite_nulls = nulls or ("LAST" if desc else "FIRST")  # CockroachDB's default
        return tm, f"{expr}{d} NULLS {lite_nulls}"

    def limits(self, q: Query, tm: str, lite: str) -> tuple[str, str]:
        if self.chance(5):
            q.limit = self.draw(st.integers(0, 6))
        if self.chance(3):
            q.offset = self.draw(st.integers(0, 5))
        if q.limit is not None:
            tm += f" LIMIT {q.limit}"
            lite += f" LIMIT {q.limit}"
        elif q.offset is not None:
            lite += " LIMIT -1"
        if q.offset is not None:
            tm += f" OFFSET {q.offset}"
            lite += f" OFFSET {q.offset}"
        return tm, lite

    def select(self) -> Query:
        schema = self.schema
        star = self.chance(4)
        proj = schema.names if star else self.subset(schema.names)
        order: list[str] = []
        if self.chance(5):
            order = self.subset(schema.names, 1, 3)
            if self.chance(5):
                order += [c for c in schema.pk_names if c not in order]
        total = set(schema.pk_names) <= set(order)
        if not star:
            proj = proj + [c for c in order if c not in proj]
        exprs: list[str] = []
        if not star and self.chance(3):
            exprs = [self.expr(self.schema.col(self.pick(schema.names)))
                     for _ in range(self.draw(st.integers(1, 2)))]
            if self.chance(3):
                p = self.pred(1)
                exprs.append(f"CASE WHEN {p[0]} THEN 1 ELSE 0 END")
                exprs_lite = [*exprs[:-1], f"CASE WHEN {p[1]} THEN 1 ELSE 0 END"]
            else:
                exprs_lite = exprs
        else:
            exprs_lite = []
        where = self.where()
        distinct = "DISTINCT " if self.chance(2) else ""
        cols = "*" if star else ", ".join(proj)
        hint = self.hint()
        tm = f"SELECT {distinct}{', '.join([cols, *exprs])} FROM {TABLE}{hint}{where[0]}"
        lite = f"SELECT {distinct}{', '.join([cols, *exprs_lite])} FROM {TABLE}{where[1]}"
        q = Query(tm, lite, len(proj) + len(exprs),
                  [*(schema.col(c).type for c in proj), *([None] * len(exprs))])
        if order:
            terms = [self.order_term(c) for c in order]
            q.tm += " ORDER BY " + ", ".join(t[0] for t in terms)
            q.lite += " ORDER BY " + ", ".join(t[1] for t in terms)
            q.mode = "list" if total else "keys"
            q.keys = [proj.index(c) for c in order]
            if total or self.chance(3):
                q.tm, q.lite = self.limits(q, q.tm, q.lite)
        elif self.chance(2):
            q.mode = "subset"
            q.tm, _ = self.limits(q, q.tm, q.lite)
            if q.limit is None and q.offset is None:
                q.mode = "bag"
        return q

    def aggregate(self) -> Query:
        schema = self.schema
        group = self.subset(schema.names, 0, 2)
        nums = [c.name for c in schema.cols if c.type in NUMERIC]
        candidates = ["count(*)"]
        for c in schema.names:
            candidates += [f"count({c})", f"min({c})", f"max({c})"]
        for c in nums:
            candidates += [f"sum({c})", f"avg({c})", f"sum({c})"]
        candidates += [f"count(DISTINCT {self.pick(schema.names)})"]
        if nums:
            candidates += [f"sum(DISTINCT {self.pick(nums)})", f"avg(DISTINCT {self.pick(nums)})"]
        aggs = self.subset(candidates, 1, 3)
        items = self.draw(st.permutations(group + aggs))
        where = self.where(6)
        hint = self.hint()
        having = ""
        if self.chance(3):
            c = schema.col(self.pick(schema.names))
            having = " HAVING " + self.pick(
                [f"count(*) > {self.draw(st.integers(0, 2))}", f"min({c.name}) IS NOT NULL",
                 f"max({c.name}) {self.pick(['=', '<', '>='])} {self.constant(c)}",
                 *([f"sum({nums[0]}) > {self.draw(st.integers(-2, 5))}"] if nums else [])])
        group_by = f" GROUP BY {', '.join(group)}" if group else ""
        select = f"SELECT {', '.join(items)} FROM {TABLE}"
        types: list[str | None] = [schema.col(i).type if i in group else None for i in items]
        q = Query(f"{select}{hint}{where[0]}{group_by}{having}",
                  f"{select}{where[1]}{group_by}{having}", len(items), types)
        if self.chance(4):
            order = self.subset(items, 1, len(items))
            if self.chance(5):
                order += [g for g in group if g not in order]
            terms = [self.order_term(e) for e in order]
            q.tm += " ORDER BY " + ", ".join(t[0] for t in terms)
            q.lite += " ORDER BY " + ", ".join(t[1] for t in terms)
            q.keys = [items.index(e) for e in order]
            if set(group) <= set(order):
                q.mode = "list"
                q.tm, q.lite = self.limits(q, q.tm, q.lite)
            else:
                q.mode = "keys"
        return q

    # -- writes --

    def returning(self) -> str:
        if not self.chance(2):
            return ""
        if self.chance(5):
            return " RETURNING *"
        return " RETURNING " + ", ".join(self.subset(self.schema.names))

    def seed(self) -> None:
        """A first batch of rows, so queries have something to find."""
        n = self.draw(st.integers(0, 12), label="seed rows")
        if n:
            self.insert("nothing", n)

    def insert(self, style: str | None = None, n: int | None = None) -> None:
        schema = self.schema
        style = style or self.pick(["plain", "plain", "nothing", "nothing_on", "update",
                                    "upsert"])
        required = [c.name for c in schema.cols if c.not_null]
        if self.chance(5):
            cols = schema.names
            listed = ""
        else:
            cols = self.subset(schema.names)
            if style != "plain" or not self.chance(1):  # else NOT NULL columns may be missing
                cols += [c for c in required if c not in cols]
            listed = f" ({', '.join(cols)})"
        target: tuple[str, ...] = schema.pk_names if style == "upsert" else ()
        if style in ("nothing_on", "update"):
            target = self.pick(schema.targets())

        def cell(name: str) -> Any:
            col = schema.col(name)
            if col.not_null and style == "plain" and self.draw(st.integers(0, 19)) == 0:
                return None  # a NOT NULL violation
            return self.value(col)

        # Sometimes two proposed rows share a conflict key on purpose: CockroachDB refuses to
        # touch a row twice (21000), where SQLite would apply both.
        rows = [[cell(c) for c in cols] for _ in range(n or self.draw(st.integers(1, 4)))]
        twice = False
        if style in ("update", "upsert") and all(c in cols for c in target) and \
                self.chance(1):
            first = [rows[0][cols.index(c)] for c in target]
            if None not in first:
                twice = True
                dup = [cell(c) for c in cols]
                for c, v in zip(target, first, strict=True):
                    dup[cols.index(c)] = v
                rows.insert(self.draw(st.integers(1, len(rows))), dup)
        if style in ("update", "upsert") and not twice:
            # Otherwise no two proposed rows share a (non-NULL) conflict key.
            seen: set[tuple[Any, ...]] = set()
            kept = []
            for row in rows:
                key = tuple(row[cols.index(c)] if c in cols else None for c in target)
                if None not in key:
                    if key in seen:
                        continue
                    seen.add(key)
                kept.append(row)
            rows = kept
        values = ", ".join("(" + ", ".join(literal(v, schema.col(c).type) for v, c in
                                           zip(r, cols, strict=True)) + ")" for r in rows)
        ret = self.returning()
        head = f"INTO {TABLE}{listed} VALUES {values}"
        if style == "upsert":
            sets = [c for c in cols if c not in schema.pk_names] or [schema.pk_names[0]]
            lite = f"INSERT {head} ON CONFLICT ({', '.join(schema.pk_names)}) DO UPDATE SET " + \
                ", ".join(f"{c} = excluded.{c}" for c in sets)
            if twice:
                self.pair.write_refused(f"UPSERT {head}{ret}")
            else:
                self.pair.write(f"UPSERT {head}{ret}", lite + ret, bool(ret))
            return
        clause = ""
        if style == "nothing":
            clause = " ON CONFLICT DO NOTHING"
        elif style == "nothing_on":
            clause = f" ON CONFLICT ({', '.join(target)}) DO NOTHING"
        elif style == "update":
            settable = [c for c in schema.names if c not in target or len(rows) == 1]
            if not settable:
                clause = " ON CONFLICT DO NOTHING"
                twice = False
            else:
                assigns = [f"{c} = {self.conflict_value(schema.col(c))}"
                           for c in self.subset(settable, 1, 2)]
                clause = f" ON CONFLICT ({', '.join(target)}) DO UPDATE SET {', '.join(assigns)}"
                if self.chance(3):
                    c = schema.col(self.pick(schema.names))
                    side = self.pick([TABLE, "excluded"])
                    clause += " WHERE " + self.pick(
                        [f"{side}.{c.name} {self.pick(['=', '<>', '<', '>='])} "
                         f"{self.constant(c)}",
                         f"{side}.{c.name} IS NULL", f"{side}.{c.name} IS NOT NULL"])
        sql = f"INSERT {head}{clause}{ret}"
        null_violation = any(c not in cols for c in required) or any(
            v is None and schema.col(c).not_null
            for r in rows for v, c in zip(r, cols, strict=True))
        if twice:
            self.pair.write_refused(sql)
        else:
            self.pair.write(sql, sql, bool(ret), null_violation=null_violation)

    def conflict_value(self, col: Col) -> str:
        options = [f"excluded.{col.name}", literal(self.value(col), col.type)]
        if col.type == "INT":
            options.append(f"{TABLE}.{col.name} + {self.draw(st.integers(1, 3))}")
        if col.type == "STRING":
            options.append(f"{TABLE}.{col.name} || 'x'")
        if col.type == "BOOL":
            options.append(f"NOT {TABLE}.{col.name}")
        return self.pick(options)

    def update(self) -> None:
        schema = self.schema
        keys = schema.key_columns()
        assigns = []
        for name in self.subset(schema.names, 1, 2):
            c = schema.col(name)
            v = literal(self.value(c, nulls=True), c.type)
            if c.not_null and self.draw(st.integers(0, 19)) == 0:
                v = "NULL"  # a NOT NULL violation
            if name not in keys and self.chance(5):
                # Key columns only get constants: then whether the statement fails does not
                # depend on the order rows are visited.
                others = [o.name for o in schema.cols if o.type == c.type and o.name != name]
                v = self.pick({
                    "INT": [f"{name} + {self.draw(st.integers(-2, 3))}", *others],
                    "FLOAT": [f"{name} + 0.5", f"{name} - 1.25", *others],
                    "STRING": [f"{name} || 'b'", *others],
                    "BOOL": [f"NOT {name}", *others],
                }[c.type])
            assigns.append(f"{name} = {v}")
        where = self.where(9)
        ret = self.returning()
        head = f"UPDATE {TABLE} SET {', '.join(assigns)}"
        self.pair.write(f"{head}{where[0]}{ret}", f"{head}{where[1]}{ret}", bool(ret))

    def delete(self) -> None:
        where = self.where(9)
        ret = self.returning()
        self.pair.write(f"DELETE FROM {TABLE}{where[0]}{ret}",
                        f"DELETE FROM {TABLE}{where[1]}{ret}", bool(ret))

    def create_index(self) -> None:
        idx = self.draw(index_defs(self.schema, self.schema.new_index_name()))
        own_txn = not self.pair.in_txn and self.chance(3)
        if self.pair.write(idx.tm_create(), idx.lite_create(), txn=own_txn, counted=False):
            self.schema.indexes.append(idx)  # undone by a ROLLBACK (Pair.end)

    def drop_index(self) -> None:
        idx = self.pick(self.schema.indexes)
        if self.pair.write(f"DROP INDEX {TABLE}@{idx.name}", f"DROP INDEX {idx.name}",
                           counted=False):
            self.schema.indexes.remove(idx)

    def transaction(self) -> None:
        """BEGIN, a few statements (reading their own writes; sometimes after a schema
        change), COMMIT or ROLLBACK."""
        self.pair.begin()
        if self.chance(2):
            self.run("drop_index" if self.schema.indexes and self.chance(3) else "create_index")
        for _ in range(self.draw(st.integers(1, 5))):
            if not self.pair.in_txn:
                return  # a statement failed and aborted the transaction
            self.run(self.pick(["select", "select", "aggregate", "insert", "insert", "update",
                                "delete"]))
        if self.pair.in_txn:
            self.pair.end(commit=self.chance(6))

    def step(self) -> None:
        ops = ["select"] * 5 + ["aggregate"] * 3 + ["insert"] * 5 + ["update"] * 2 + \
            ["delete", "transaction"] + ["create_index"] * (len(self.schema.indexes) < 3) + \
            ["drop_index"] * bool(self.schema.indexes)
        self.run(self.pick(ops))

    def run(self, op: str) -> None:
        if op == "select":
            self.pair.query(self.select())
        elif op == "aggregate":
            self.pair.query(self.aggregate())
        else:
            getattr(self, op)()


STATS = Counter()


@SETTINGS
@given(data=st.data())
def test_tidemark_matches_sqlite(data: st.DataObject) -> None:
    schema = data.draw(schemas(), label="schema")
    pair = Pair(schema)
    try:
        pair.create()
        gen = Gen(data, pair)
        gen.seed()
        for _ in range(data.draw(st.integers(1, MAX_STATEMENTS), label="statements")):
            gen.step()
        pair.compare_table()
        pair.check_indexes()
    finally:
        pair.close()
    STATS["examples"] += 1
    STATS["statements"] += pair.statements
    STATS["failed statements"] += pair.errors
    STATS["queries"] += pair.queries
    STATS["queries with rows"] += pair.nonempty


@pytest.fixture(scope="module", autouse=True)
def _report_stats():
    yield
    if STATS:
        print(f"\ndifferential: {dict(STATS)}")


# --- bugs found, as regressions -------------------------------------------------------------------


@pytest.fixture
def conn(tmp_path):
    c = tidemark.connect(tmp_path / "store")
    yield c
    c.close()


# Bugs the differential test found (fixed since), pinned as regressions.
def test_order_by_with_in_list_on_index_column(conn) -> None:
    conn.execute("CREATE TABLE t (a INT PRIMARY KEY, b INT)")
    conn.execute("INSERT INTO t VALUES (1, 10), (2, 20), (3, 30)")
    assert conn.execute("SELECT a FROM t WHERE a IN (3, 1) ORDER BY a").rows == [(1,), (3,)]


def test_order_by_desc_with_in_list_on_secondary_index(conn) -> None:
    conn.execute("CREATE TABLE t (a INT PRIMARY KEY, b INT, INDEX t_b (b))")
    conn.execute("INSERT INTO t VALUES (1, 10), (2, 20), (3, 30)")
    rows = conn.execute("SELECT b FROM t WHERE b IN (10, 30) ORDER BY b DESC").rows
    assert rows == [(30,), (10,)]


def test_int_column_against_decimal_constant(conn) -> None:
    conn.execute("CREATE TABLE t (a INT PRIMARY KEY, b INT)")
    conn.execute("INSERT INTO t VALUES (1, 1), (2, 2)")
    # The same predicate outside a span-building conjunct works: `b = 1.5 OR false` -> [].
    assert conn.execute("SELECT a FROM t WHERE b = 1.5 OR false").rows == []
    assert conn.execute("SELECT a FROM t WHERE b > 1.5").rows == [(2,)]


def test_upsert_same_row_twice_is_refused(conn) -> None:
    conn.execute("CREATE TABLE t (a INT PRIMARY KEY, b INT)")
    with pytest.raises(tidemark.SQLError) as exc:
        conn.execute("UPSERT INTO t VALUES (1, 1), (1, 2)")
    assert exc.value.code == "21000"
    assert conn.execute("SELECT * FROM t").rows == []


def test_on_conflict_do_update_same_row_twice_is_refused(conn) -> None:
    conn.execute("CREATE TABLE t (a INT PRIMARY KEY, b INT)")
    with pytest.raises(tidemark.SQLError) as exc:
        conn.execute("INSERT INTO t VALUES (1, 1), (1, 2) ON CONFLICT (a) DO UPDATE "
                     "SET b = excluded.b")
    assert exc.value.code == "21000"


def test_update_primary_key_of_row_with_unique_value(conn) -> None:
    conn.execute("CREATE TABLE t (a INT PRIMARY KEY, b INT UNIQUE)")
    conn.execute("INSERT INTO t VALUES (1, 10)")
    conn.execute("UPDATE t SET a = 2 WHERE a = 1")
    assert conn.execute("SELECT * FROM t").rows == [(2, 10)]


def test_on_conflict_update_primary_key_of_row_with_unique_value(conn) -> None:
    conn.execute("CREATE TABLE t (a INT PRIMARY KEY, b INT UNIQUE)")
    conn.execute("INSERT INTO t VALUES (1, 10)")
    conn.execute("INSERT INTO t VALUES (5, 10) ON CONFLICT (b) DO UPDATE SET a = excluded.a")
    assert conn.execute("SELECT * FROM t").rows == [(5, 10)]


def test_on_conflict_update_changing_primary_key_same_row_twice_is_refused(conn) -> None:
    conn.execute("CREATE TABLE t (a INT PRIMARY KEY, b INT UNIQUE, c INT)")
    conn.execute("INSERT INTO t VALUES (1, 10, 0)")
    with pytest.raises(tidemark.SQLError) as exc:
        conn.execute("INSERT INTO t VALUES (2, 10, 1), (3, 10, 2) ON CONFLICT (b) DO UPDATE "
                     "SET a = excluded.a, c = excluded.c")
    assert exc.value.code == "21000"
    assert conn.execute("SELECT * FROM t").rows == [(1, 10, 0)]
