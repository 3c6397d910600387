"""Storage benchmarks: ingest, export, import, arrival-window export, single-row transactions.

Every number is reported next to a reference measured in the same run on the same machine:
SQLite's own ``VACUUM INTO`` of the same store (a copy done entirely in C), so the ratios say
how close the bulk paths are to what SQLite itself can do.

    python bench/storage_bench.py [--versions 2000000]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time

import apsw

from tidemark.kv.db import DB
from tidemark.storage.engine import Span, Window
from tidemark.storage.sqlite import SQLiteEngine

ALL = Span(b"", b"\xff")
BATCH = 100_000
VALUE = b"v" * 48


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def key(i: int) -> bytes:
    return b"\x89\x89" + i.to_bytes(8, "big")


def run(versions: int) -> list[tuple[str, str, str]]:
    work = tempfile.mkdtemp(prefix="tidemark-bench-")
    rows: list[tuple[str, str, str]] = []
    try:
        eng = SQLiteEngine(os.path.join(work, "store"))
        batches = [[(key(i), VALUE) for i in range(s, min(s + BATCH, versions))]
                   for s in range(0, versions, BATCH)]
        t_ingest, _ = timed(lambda: [eng.ingest(b) for b in batches])
        ingest_rate = versions / t_ingest

        vacuum_path = os.path.join(work, "vacuum.sqlite")
        conn = apsw.Connection(str(eng.db_path))
        t_vacuum, _ = timed(lambda: conn.execute("VACUUM INTO ?", (vacuum_path,)))
        conn.close()
        vacuum_rate = versions / t_vacuum

        end = eng.frontier()
        export_path = os.path.join(work, "full.sqlite")
        t_export, stats = timed(lambda: eng.export(export_path, ALL, 0, end))
        assert stats.rows == versions, stats
        export_rate = versions / t_export

        t_import, _ = timed(lambda: eng.import_file(
            export_path, rewrites=[(b"\x89\x89", b"\x89\x8a")]))
        import_rate = versions / t_import
        assert len(eng.scan(b"\x89\x8a", b"\x89\x8b", eng.frontier(), limit=10)) == 10

        # 1 % of the store changes (at a historical timestamp, like a backfill), then an
        # arrival-window export picks exactly that up. The import above left its WAL to be
        # checkpointed in the background: measured beside that checkpoint, the export took
        # twice as long (58 ms against 28 ms), so wait for it.
        eng.wait_checkpoint()
        before = eng.frontier()
        changed = [(key(i), b"changed") for i in sorted(random.sample(range(versions),
                                                                      versions // 100))]
        eng.ingest(changed, ts=before)
        after = eng.frontier()
        inc_path = os.path.join(work, "inc.sqlite")
        t_inc, inc = timed(lambda: eng.export(inc_path, ALL, before, after,
                                              window=Window.ARRIVAL))
        assert inc.rows == len(changed), inc
        # the full export of the same (now larger) span, for the ratio
        full2 = os.path.join(work, "full2.sqlite")
        t_full2, _ = timed(lambda: eng.export(full2, Span(b"\x89\x89", b"\x89\x8a"), 0, after))

        db = DB(eng)
        n_txn = 5000
        keys = [key(random.randrange(versions)) for _ in range(n_txn)]

        def txns() -> None:
            for k in keys:
                def body(txn, k=k):
                    v = txn.get(k)
                    txn.put(k, (v or b"") [:40] + b"+")
                db.run(body)

        t_txn, _ = timed(txns)
        txn_rate = n_txn / t_txn
        eng.close()

        rows += [
            ("VACUUM INTO (reference)", f"{vacuum_rate:,.0f} versions/s", "1.00"),
            ("bulk ingest", f"{ingest_rate:,.0f} versions/s",
             f"{ingest_rate / vacuum_rate:.2f}  (target >= 500k/s)"),
            ("export whole store", f"{export_rate:,.0f} versions/s",
             f"{export_rate / vacuum_rate:.2f}  (target >= 1.5M/s)"),
            ("import (prefix rewrite)", f"{import_rate:,.0f} versions/s",
             f"{import_rate / vacuum_rate:.2f}  (target >= 1M/s)"),
            ("arrival export of 1 %", f"{t_inc * 1000:,.1f} ms vs full {t_full2 * 1000:,.0f} ms",
             f"{t_inc / t_full2:.3f} of full  (target <= 0.05)"),
            ("single-row txns", f"{txn_rate:,.0f} txns/s", "(target >= 3,000/s)"),
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--versions", type=int, default=2_000_000)
    args = parser.parse_args()
    for name, value, ratio in run(args.versions):
        print(f"{name:28} {value:>40}   {ratio}")


if __name__ == "__main__":
    main()
