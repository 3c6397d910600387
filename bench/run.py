"""Run every benchmark and print its table: `make bench` (or `python bench/run.py`).

``TIDEMARK_BENCH_SCALE`` (default 1) scales the backup benchmark's store sizes (2M versions for
the time ratios, 1M and 5M for peak RSS), e.g. ``TIDEMARK_BENCH_SCALE=0.1 make bench``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import backfill_bench
import backup_bench
import sql_bench
import storage_bench


def main() -> None:
    print("== storage (2M versions; reference: SQLite VACUUM INTO of the same store) ==")
    for name, value, ratio in storage_bench.run(2_000_000):
        print(f"{name:28} {value:>40}   {ratio}")
    print()
    print("== sql (200k rows, 1000-row INSERTs, 5k point SELECTs; reference: SQLite, WAL) ==")
    for name, value, ratio in sql_bench.run(200_000, 1000, 5000):
        print(f"{name:32} {value:>44}   {ratio}")
    print()
    print("== index backfill (200k rows; reference: SQLite CREATE INDEX) ==")
    for name, value, ratio in backfill_bench.run(200_000):
        print(f"{name:32} {value:>44}   {ratio}")
    scale = float(os.environ.get("TIDEMARK_BENCH_SCALE", "1"))
    backup_bench.report(int(2_000_000 * scale),
                        (int(1_000_000 * scale), int(5_000_000 * scale)))


if __name__ == "__main__":
    main()
    __import__("import_bench").report()  # IMPORT INTO vs SQLite CSV import
