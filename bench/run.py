"""Run every benchmark and print its table: `make bench` (or `python bench/run.py`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import backfill_bench
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


if __name__ == "__main__":
    main()
    __import__("import_bench").report()  # IMPORT INTO vs SQLite CSV import
