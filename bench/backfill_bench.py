"""Index backfill benchmark: online CREATE INDEX, in index entries per second.

The reference, measured in the same run, is SQLite's own ``CREATE INDEX`` on a table holding
the same rows (apsw, WAL, ``synchronous=NORMAL``): a sort and B-tree build entirely in C.

    python bench/backfill_bench.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import apsw

import tidemark

BATCH = 1000


def run(rows: int) -> list[tuple[str, str, str]]:
    work = tempfile.mkdtemp(prefix="tidemark-bench-backfill-")
    try:
        data = [(i, f"name{i % 5000}", i * 7 % 100_003, f"note {i}") for i in range(rows)]
        conn = tidemark.connect(os.path.join(work, "store"))
        conn.execute("CREATE TABLE bank (id INT PRIMARY KEY, name STRING, balance INT, "
                     "note STRING)")
        sql = "INSERT INTO bank VALUES " + ", ".join(
            f"(${4 * i + 1}, ${4 * i + 2}, ${4 * i + 3}, ${4 * i + 4})" for i in range(BATCH))
        for start in range(0, rows, BATCH):
            chunk = data[start:start + BATCH]
            if len(chunk) < BATCH:
                part = "INSERT INTO bank VALUES " + ", ".join(
                    f"(${4 * i + 1}, ${4 * i + 2}, ${4 * i + 3}, ${4 * i + 4})"
                    for i in range(len(chunk)))
                conn.execute(part, [v for r in chunk for v in r])
            else:
                conn.execute(sql, [v for r in chunk for v in r])
        start_t = time.perf_counter()
        conn.execute("CREATE INDEX bank_name_idx ON bank (name) STORING (balance)")
        t_backfill = time.perf_counter() - start_t
        count = conn.execute("SELECT count(*) FROM bank@bank_name_idx").rows[0][0]
        assert count == rows, count
        conn.close()

        lite = apsw.Connection(os.path.join(work, "sqlite.db"))
        lite.execute("PRAGMA journal_mode=WAL").fetchall()  # returns a row: run alone
        lite.execute("PRAGMA synchronous=NORMAL")
        lite.execute("CREATE TABLE bank (id INTEGER PRIMARY KEY, name TEXT, balance INTEGER, "
                     "note TEXT)")
        with lite:
            lite.executemany("INSERT INTO bank VALUES (?, ?, ?, ?)", data)
        start_t = time.perf_counter()
        lite.execute("CREATE INDEX bank_name_idx ON bank (name, balance)")
        t_sqlite = time.perf_counter() - start_t
        lite.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours, theirs = rows / t_backfill, rows / t_sqlite
    return [("CREATE INDEX backfill", f"{ours:,.0f} entries/s vs SQLite {theirs:,.0f}",
             f"{ours / theirs:.3f}  (target >= 200k entries/s)")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    for name, value, ratio in run(args.rows):
        print(f"{name:28} {value:>44}   {ratio}")


if __name__ == "__main__":
    main()
