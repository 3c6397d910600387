"""SQL benchmarks: multi-row INSERT, point SELECT by primary key, full-table SELECT.

Every tidemark number is reported next to SQLite doing the same work in the same run on the
same machine: apsw on a file in a temp dir, WAL, ``synchronous=NORMAL`` (what tidemark's own
store uses), one implicit transaction per statement, same schema and same SQL text. SQLite's
``INTEGER PRIMARY KEY`` / ``TEXT`` stand for tidemark's ``INT PRIMARY KEY`` / ``STRING``: the
table is clustered on the key as tidemark's primary index is, and ``TEXT`` keeps SQLite from
giving the strings NUMERIC affinity (which is what the type name ``STRING`` would get). The ratio
is tidemark / SQLite, so it reads as "fraction of SQLite's speed".

    python bench/sql_bench.py [--rows 200000] [--batch 1000] [--points 5000]
    python bench/sql_bench.py --profile [--profile-rows 50000] [--top 25]

``--profile`` runs each tidemark case again under cProfile (smaller by default: profiling
roughly doubles the cost of pure-Python code) and prints the hotspots by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apsw

import tidemark

TIDEMARK_SCHEMA = "(id INT PRIMARY KEY, name STRING, balance INT, note STRING)"
SQLITE_SCHEMA = "(id INTEGER PRIMARY KEY, name TEXT, balance INTEGER, note TEXT)"
SCANS = 3  # the full-table SELECT is short: best of a few passes, for both engines


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def best_of(n: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    return min((timed(fn) for _ in range(n)), key=lambda tr: tr[0])


def bank_row(i: int) -> tuple[int, str, int, str]:
    return (i, f"customer-{i:08d}", (i * 7919) % 1_000_000, "opened at branch 17, no flags")


@dataclass
class Workload:
    """The statements both engines run, built before any timing starts."""

    rows: int
    batch: int
    points: int

    def __post_init__(self) -> None:
        data = [bank_row(i) for i in range(self.rows)]
        self.batches = [data[s:s + self.batch] for s in range(0, self.rows, self.batch)]
        self.params = [[v for row in b for v in row] for b in self.batches]
        rng = random.Random(42)
        self.point_ids = [rng.randrange(self.rows) for _ in range(self.points)]
        self.literal_sql = [
            "INSERT INTO bank_lit VALUES "
            + ", ".join(f"({i}, '{name}', {bal}, '{note}')" for i, name, bal, note in b)
            for b in self.batches]
        self.dollar_sql = [self._placeholder_sql(len(b), dollar=True) for b in self.batches]
        self.qmark_sql = [self._placeholder_sql(len(b), dollar=False) for b in self.batches]

    @staticmethod
    def _placeholder_sql(n_rows: int, dollar: bool) -> str:
        if dollar:
            groups = (f"(${4 * r + 1}, ${4 * r + 2}, ${4 * r + 3}, ${4 * r + 4})"
                      for r in range(n_rows))
        else:
            groups = ("(?, ?, ?, ?)" for _ in range(n_rows))
        return "INSERT INTO bank VALUES " + ", ".join(groups)


# -- the cases, one function per engine, each returning the amount of work done ---------------


class TidemarkCases:
    def __init__(self, path: str, w: Workload):
        self.w = w
        self.conn = tidemark.connect(path)
        self.conn.execute(f"CREATE TABLE bank {TIDEMARK_SCHEMA}")
        self.conn.execute(f"CREATE TABLE bank_lit {TIDEMARK_SCHEMA}")

    def insert_placeholders(self) -> int:
        n = 0
        for sql, params in zip(self.w.dollar_sql, self.w.params, strict=True):
            n += self.conn.execute(sql, params).rowcount
        return n

    def insert_literals(self) -> int:
        return sum(self.conn.execute(sql).rowcount for sql in self.w.literal_sql)

    def point_selects(self) -> int:
        execute = self.conn.execute
        found = 0
        for i in self.w.point_ids:
            found += len(execute("SELECT * FROM bank WHERE id = $1", (i,)).rows)
        return found

    def full_scan(self) -> int:
        return len(self.conn.execute("SELECT * FROM bank").rows)

    def close(self) -> None:
        self.conn.close()


class SQLiteCases:
    def __init__(self, path: str, w: Workload):
        self.w = w
        self.conn = apsw.Connection(path)
        self.conn.execute("PRAGMA journal_mode=WAL").fetchall()  # returns a row: run alone
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(f"CREATE TABLE bank {SQLITE_SCHEMA}")
        self.conn.execute(f"CREATE TABLE bank_lit {SQLITE_SCHEMA}")

    def insert_placeholders(self) -> int:
        n = 0
        for sql, params in zip(self.w.qmark_sql, self.w.params, strict=True):
            self.conn.execute(sql, params)
            n += self.conn.changes()
        return n

    def insert_literals(self) -> int:
        n = 0
        for sql in self.w.literal_sql:
            self.conn.execute(sql)
            n += self.conn.changes()
        return n

    def point_selects(self) -> int:
        execute = self.conn.execute
        found = 0
        for i in self.w.point_ids:
            found += len(execute("SELECT * FROM bank WHERE id = ?", (i,)).fetchall())
        return found

    def full_scan(self) -> int:
        return len(self.conn.execute("SELECT * FROM bank").fetchall())

    def close(self) -> None:
        self.conn.close()


def _check(name: str, got: int, want: int) -> None:
    if got != want:
        raise AssertionError(f"{name}: expected {want:,}, got {got:,}")


def run(rows: int = 200_000, batch: int = 1000, points: int = 5000) -> list[tuple[str, str, str]]:
    w = Workload(rows, batch, points)
    work = tempfile.mkdtemp(prefix="tidemark-sqlbench-")
    try:
        tm = TidemarkCases(os.path.join(work, "tidemark"), w)
        sq = SQLiteCases(os.path.join(work, "reference.sqlite"), w)
        rates: dict[str, tuple[float, float]] = {}
        for case, unit_count, repeat in (("insert_placeholders", rows, 1),
                                         ("insert_literals", rows, 1),
                                         ("point_selects", points, 1),
                                         ("full_scan", rows, SCANS)):
            pair = []
            for engine in (tm, sq):
                t, got = best_of(repeat, getattr(engine, case))
                _check(f"{type(engine).__name__}.{case}", got, unit_count)
                pair.append(unit_count / t)
            rates[case] = (pair[0], pair[1])
        tm.close()
        sq.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def line(label: str, case: str, unit: str, target: str) -> tuple[str, str, str]:
        ours, ref = rates[case]
        return (label, f"{ours:,.0f} {unit} vs SQLite {ref:,.0f}",
                f"{ours / ref:.3f}  (target >= {target} {unit})")

    return [
        line(f"INSERT {batch}-row, $n params", "insert_placeholders", "rows/s", "50k"),
        line(f"INSERT {batch}-row, literals", "insert_literals", "rows/s", "50k"),
        line("point SELECT by PK", "point_selects", "stmts/s", "5k"),
        line(f"full-table SELECT ({rows // 1000}k)", "full_scan", "rows/s", "300k"),
    ]


# -- profiling --------------------------------------------------------------------------------


def _hotspots(prof: cProfile.Profile) -> list[tuple[str, float, float, int]]:
    """(function, cumulative %, self %, calls), as percentages of the whole case."""
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = max((ct for (_, _, _, ct, _) in stats.values()), default=0.0) or 1.0
    out = []
    for (file, lineno, func), (_cc, nc, tt, ct, _callers) in stats.items():
        if func.startswith("<") and func not in ("<listcomp>", "<genexpr>", "<lambda>"):
            continue
        where = file.split("/site-packages/")[-1].split("/work/main/")[-1]
        name = f"{where}:{lineno}({func})" if lineno else func
        out.append((name, 100 * ct / total, 100 * tt / total, nc))
    return out


def profile(rows: int, batch: int, points: int, top: int) -> None:
    w = Workload(rows, batch, points)
    work = tempfile.mkdtemp(prefix="tidemark-sqlprof-")
    try:
        tm = TidemarkCases(os.path.join(work, "tidemark"), w)
        for case in ("insert_placeholders", "insert_literals", "point_selects", "full_scan"):
            prof = cProfile.Profile()
            t, _ = timed(lambda case=case, prof=prof: prof.runcall(getattr(tm, case)))
            size = f"{points:,} statements" if case == "point_selects" else f"{rows:,} rows"
            print(f"\n== cProfile: tidemark {case} ({size}; {t:.2f} s under the profiler) ==")
            spots = _hotspots(prof)
            for title, key, n in (("by cumulative time", 1, top), ("by self time", 2, top // 2)):
                print(f"-- {title}\n{'cum %':>6} {'self %':>6} {'calls':>10}  function")
                for name, cum, own, calls in sorted(spots, key=lambda r, k=key: -r[k])[:n]:
                    print(f"{cum:6.1f} {own:6.1f} {calls:10,}  {name}")
        tm.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000, help="rows per INSERT statement")
    parser.add_argument("--points", type=int, default=5000, help="point SELECTs to run")
    parser.add_argument("--profile", action="store_true",
                        help="profile each tidemark case with cProfile instead of timing it")
    parser.add_argument("--profile-rows", type=int, default=50_000)
    parser.add_argument("--top", type=int, default=25, help="hotspots to print per case")
    args = parser.parse_args()
    if args.profile:
        profile(args.profile_rows, args.batch, args.points, args.top)
        return
    for name, value, ratio in run(args.rows, args.batch, args.points):
        print(f"{name:32} {value:>44}   {ratio}")


if __name__ == "__main__":
    main()
