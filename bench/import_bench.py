"""IMPORT benchmark: IMPORT INTO of a 5-column CSV file, against SQLite importing the same file.

tidemark runs ``IMPORT INTO t CSV DATA ('nodelocal://self/data.csv')`` on a fresh store (a job:
chunks of ``bulkio.import.batch_size`` rows, every entry ingested at one timestamp, checkpoint
per chunk, validation, publication), timed around the statement. The reference is SQLite's own
CSV import of the same file into the same schema (``INTEGER PRIMARY KEY`` / ``TEXT`` /
``REAL`` standing for tidemark's ``INT PRIMARY KEY`` / ``STRING`` / ``FLOAT``), WAL and
``synchronous=NORMAL`` like tidemark's store, measured in the same run:

* the ``sqlite3`` command-line shell's ``.import --csv`` when it is installed (C end to end),
  timed around the process;
* otherwise Python's ``csv`` module + apsw ``executemany`` in one transaction.

The report says which. The ratio is tidemark / SQLite ("fraction of SQLite's speed").

    python bench/import_bench.py [--rows 200000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import apsw

import tidemark
import tidemark.importer  # registers the IMPORT job type and bulkio.import.batch_size

TIDEMARK_SCHEMA = "(id INT PRIMARY KEY, qty INT, name STRING, price FLOAT, note STRING)"
SQLITE_SCHEMA = "(id INTEGER PRIMARY KEY, qty INTEGER, name TEXT, price REAL, note TEXT)"
TARGET_ROWS_S = 100_000


def write_csv(path: Path, rows: int) -> int:
    rng = random.Random(7)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        for i in range(rows):
            w.writerow((i, rng.randrange(1_000_000), f"customer-{i:08d}",
                        round(rng.random() * 1000, 2), f"note {rng.randrange(977)} for {i}"))
    return path.stat().st_size


def tidemark_import(store: Path, data: Path, batch: int) -> tuple[float, int]:
    with tidemark.connect(store) as conn:
        conn.execute(f"CREATE TABLE t {TIDEMARK_SCHEMA}")
        conn.execute(f"SET CLUSTER SETTING bulkio.import.batch_size = {batch}")
        shutil.copy(data, Path(conn.node.engine.root) / "external" / "data.csv")
        start = time.perf_counter()
        conn.execute("IMPORT INTO t CSV DATA ('nodelocal://self/data.csv')")
        elapsed = time.perf_counter() - start
        count = conn.execute("SELECT count(*) FROM t").rows[0][0]
    return elapsed, count


def _sqlite_db(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()  # returns a row: run alone
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"CREATE TABLE t {SQLITE_SCHEMA}")
    return conn


def sqlite_cli_import(db: Path, data: Path, cli: str) -> tuple[float, int]:
    _sqlite_db(db).close()
    script = f"PRAGMA synchronous=NORMAL;\n.import --csv {data} t\n"
    start = time.perf_counter()
    subprocess.run([cli, str(db)], input=script, text=True, check=True,
                   capture_output=True)
    elapsed = time.perf_counter() - start
    conn = apsw.Connection(str(db))
    count = conn.execute("SELECT count(*) FROM t").fetchall()[0][0]
    conn.close()
    return elapsed, count


def sqlite_python_import(db: Path, data: Path) -> tuple[float, int]:
    conn = _sqlite_db(db)
    start = time.perf_counter()
    with data.open(newline="") as f:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?)", csv.reader(f))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    count = conn.execute("SELECT count(*) FROM t").fetchall()[0][0]
    conn.close()
    return elapsed, count


def run(rows: int = 200_000, batch: int = 10_000) -> list[tuple[str, str, str]]:
    work = Path(tempfile.mkdtemp(prefix="tidemark-importbench-"))
    try:
        data = work / "data.csv"
        size = write_csv(data, rows)
        t_ours, n_ours = tidemark_import(work / "store", data, batch)
        cli = shutil.which("sqlite3")
        if cli:
            how = "sqlite3 CLI .import --csv"
            t_ref, n_ref = sqlite_cli_import(work / "ref.sqlite", data, cli)
        else:
            how = "Python csv + apsw executemany"
            t_ref, n_ref = sqlite_python_import(work / "ref.sqlite", data)
        for name, n in (("tidemark", n_ours), ("sqlite", n_ref)):
            if n != rows:
                raise AssertionError(f"{name} imported {n:,} rows, expected {rows:,}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours, ref = rows / t_ours, rows / t_ref
    return [
        (f"IMPORT CSV ({rows // 1000}k rows, {size / 2**20:.1f} MiB)",
         f"{ours:,.0f} rows/s vs SQLite ({how}) {ref:,.0f}",
         f"{ours / ref:.3f}  (target >= {TARGET_ROWS_S // 1000}k rows/s: "
         f"{'met' if ours >= TARGET_ROWS_S else 'MISSED'})"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000,
                        help="bulkio.import.batch_size (rows per chunk)")
    args = parser.parse_args()
    report(args.rows, args.batch)


def report(rows: int = 200_000, batch: int = 10_000) -> None:
    """Print the table (what ``bench/run.py`` shows)."""
    print()
    print(f"== import ({rows // 1000}k-row 5-column CSV; reference: SQLite's own CSV import "
          "of the same file) ==")
    for name, value, ratio in run(rows, batch):
        print(f"{name:32} {value:>58}   {ratio}")


if __name__ == "__main__":
    main()
