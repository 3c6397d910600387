"""BACKUP / RESTORE benchmark: SQL statements on a big store, against SQLite's ``VACUUM INTO``.

A store holds ``CREATE TABLE bench.kv (k INT PRIMARY KEY, v STRING)`` (``--index``: also a
``g INT`` column with a secondary index on it), loaded through the engine's bulk ingest with
entries encoded by the catalog's own entry encoder, so they are ordinary SQL rows (SELECT,
fingerprints and RESTORE see them). Values are 50-110 bytes of text drawn from a fixed
vocabulary: compressible, but not trivially. Every number is compared with a reference
measured in the same run on the same machine: SQLite's ``VACUUM INTO`` of the same store file
(a copy done entirely in C; the best of its runs, so the ratios are not flattered by noise).
With ``--repeat N`` every timed statement runs N times and its best time counts.

* full backup: ``BACKUP DATABASE bench INTO 'nodelocal://self/backups'`` (zstd on, default
  settings), timed around the statement; target <= 3x VACUUM INTO;
* incremental: 1 % of the rows get a new value (one commit, like an UPDATE), then
  ``BACKUP DATABASE bench INTO LATEST IN ...``; target <= 5 % of the full backup's time;
* restore: ``RESTORE DATABASE bench FROM LATEST IN ... AS OF SYSTEM TIME <full's end> WITH
  new_db_name = ...`` (the full backup alone); target <= 4x VACUUM INTO. The
  restore of the whole chain (full + incremental: the overlay path) is shown too. Both are
  checked against the source with SHOW EXPERIMENTAL_FINGERPRINTS;
* peak RSS: a fresh process runs only the BACKUP (then another only the RESTORE) on stores of
  each ``--rss-versions`` size; peak from /proc/self/status VmHWM, with the anonymous and the
  file-backed (SQLite's mmap of the store) parts sampled while it runs. (Not ``getrusage``'s
  ru_maxrss: Linux carries the parent's peak over ``fork``/``exec`` into it, so a child of a
  big parent reports the parent's peak.) Target: under 300 MB at the largest size, and flat
  with size (at a small ``--scale`` the stores fit in SQLite's cache and mmap window, so
  the RSS rows then say little).

``--profile`` adds where the time of a full backup, an incremental and both restores goes:
wall time of each stage (engine.export, fingerprints, storage.write, zstd, import_file,
build_overlay, ...), measured by wrapping those functions; ``--cprofile`` also runs them under
cProfile and lists the top own times.

    python bench/backup_bench.py [--versions 2000000] [--rss-versions 1000000,5000000]
                                 [--scale 0.1] [--repeat 3] [--index] [--profile]
                                 [--cprofile]

``--scale`` (or ``TIDEMARK_BENCH_SCALE``) multiplies every size, for a quick run.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import inspect
import json
import os
import pstats
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import apsw

import tidemark
from tidemark.catalog import catalog
from tidemark.catalog.entries import entry_encoder
from tidemark.cluster.node import Node
from tidemark.jobs.registry import Registry
from tidemark.sql.session import Session
from tidemark.storage.sqlite import STORE_FILE

DB = "bench"
COLLECTION = "nodelocal://self/backups"
BATCH_ROWS = 100_000
CHANGED = 0.01
MIB = 2**20
TARGET_BACKUP_X = 3.0
TARGET_RESTORE_X = 4.0
TARGET_INC_FRACTION = 0.05
TARGET_RSS_MB = 300
FLAT_RSS_GROWTH = 0.15  # peak at the largest size at most 15 % above the smallest's


# -- data ------------------------------------------------------------------------------------


def _vocabulary() -> list[str]:
    rng = random.Random(42)
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    weights = [26 - i for i in range(26)]
    words = ["".join(rng.choices(letters, weights, k=rng.randint(3, 9))) for _ in range(4096)]
    return [" ".join(rng.choices(words, k=rng.randint(3, 6))) for _ in range(1 << 16)]


_PHRASES = _vocabulary()


def value_of(i: int) -> str:
    """50-110 bytes: two of 65,536 phrases (chosen by a hash of ``i``) and ``i`` itself."""
    a = (i * 2654435761) >> 7 & 0xFFFF
    b = (i * 40503 + 977) >> 3 & 0xFFFF
    return f"{_PHRASES[a]} #{i:x} {_PHRASES[b]}"


def _table(node: Node) -> Any:
    def read(txn: Any) -> Any:
        db = catalog.database_by_name(txn, DB)
        return catalog.table_by_name(txn, db.id, "kv")
    return node.db.run(read)


def build_store(path: Path, versions: int, index: bool) -> tuple[tidemark.Connection, int]:
    """A store holding ``versions`` versions of SQL rows of bench.kv; returns (conn, rows)."""
    conn = tidemark.connect(path)
    conn.execute(f"CREATE DATABASE {DB}")
    if index:
        conn.execute(f"CREATE TABLE {DB}.kv (k INT PRIMARY KEY, g INT, v STRING)")
        conn.execute(f"CREATE INDEX kv_g_idx ON {DB}.kv (g)")
    else:
        conn.execute(f"CREATE TABLE {DB}.kv (k INT PRIMARY KEY, v STRING)")
    table = _table(conn.node)
    encoders = [entry_encoder(table, table.primary_index), *(
        entry_encoder(table, i) for i in table.indexes)]
    cols = {c.name: c.id for c in table.columns}
    k, v, g = cols["k"], cols["v"], cols.get("g")
    rows = versions // len(encoders)
    engine = conn.node.engine
    for start in range(0, rows, BATCH_ROWS):
        batch = []
        for i in range(start, min(start + BATCH_ROWS, rows)):
            row = {k: i, v: value_of(i)} if g is None else {k: i, g: i // 16, v: value_of(i)}
            batch += [enc(row) for enc in encoders]
        if len(encoders) > 1:
            batch.sort()
        engine.ingest(batch)
    checkpoint_wal(path)
    return conn, rows


def checkpoint_wal(store: Path) -> None:
    c = apsw.Connection(str(store / STORE_FILE))
    c.set_busy_timeout(60_000)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def change_rows(node: Node, rows: int, fraction: float, round_: int = 0) -> int:
    """New values for ``fraction`` of the rows, as one commit (what an UPDATE writes); each
    ``round_`` picks other rows and other values."""
    table = _table(node)
    enc = entry_encoder(table, table.primary_index)
    cols = {c.name: c.id for c in table.columns}
    k, v, g = cols["k"], cols["v"], cols.get("g")
    rng = random.Random(7 + round_)
    picked = sorted(rng.sample(range(rows), max(1, int(rows * fraction))))
    shift = rows * (round_ + 1)
    batch = [enc({k: i, v: value_of(i + shift)} if g is None else
                 {k: i, g: i // 16, v: value_of(i + shift)}) for i in picked]
    node.engine.ingest(batch)
    return len(batch)


def vacuum_into(store: Path, out: Path) -> float:
    c = apsw.Connection(str(store / STORE_FILE))
    try:
        start = time.perf_counter()
        c.execute("VACUUM INTO ?", (str(out),))
        return time.perf_counter() - start
    finally:
        c.close()
        out.unlink(missing_ok=True)


def timed(conn: tidemark.Connection, sql: str) -> tuple[float, Any]:
    start = time.perf_counter()
    result = conn.execute(sql)
    return time.perf_counter() - start, result


def fingerprints(conn: tidemark.Connection, table: str, as_of: str | None = None) -> list:
    aost = f" AS OF SYSTEM TIME '{as_of}'" if as_of else ""
    return conn.execute(f"SHOW EXPERIMENTAL_FINGERPRINTS FROM TABLE {table}{aost}").rows


# -- peak RSS in a child process -------------------------------------------------------------


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[name] = int(rest.split()[0]) * 1024
    return out


class _Sampler(threading.Thread):
    """Polls /proc/self/status: the peak of each RSS part while the statement runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            for name, value in _status().items():
                self.peak[name] = max(self.peak.get(name, 0), value)


def child(op: str, store: str) -> None:
    """Run only the BACKUP (or only the RESTORE) on ``store``; print its RSS as JSON."""
    conn = tidemark.connect(store)
    before = _status()
    sampler = _Sampler()
    sampler.start()
    start = time.perf_counter()
    if op == "backup":
        conn.execute(f"BACKUP DATABASE {DB} INTO 'nodelocal://self/rss'")
    else:
        conn.execute(f"RESTORE DATABASE {DB} FROM LATEST IN 'nodelocal://self/rss' "
                     "WITH new_db_name = 'rss_restored'")
    elapsed = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    after = _status()
    conn.close()
    print(json.dumps({
        "seconds": elapsed, "baseline": before["VmRSS"],
        "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "hwm": after["VmHWM"], "anon": sampler.peak.get("RssAnon", after["RssAnon"]),
        "file": sampler.peak.get("RssFile", after["RssFile"]),
        "sqlite_heap": apsw.memory_high_water()}))


def run_child(op: str, store: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", op,
                           str(store)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"{op} child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_rss(work: Path, versions: int, index: bool) -> dict[str, dict[str, Any]]:
    store = work / f"rss-{versions}"
    conn, _rows = build_store(store, versions, index)
    conn.close()
    try:
        return {op: run_child(op, store) for op in ("backup", "restore")}
    finally:
        shutil.rmtree(store, ignore_errors=True)


# -- profile ---------------------------------------------------------------------------------

# Stages timed by wrapping (module, "Class.method" or "function"): wall time, inclusive, with a
# few calls each, so the wrappers cost nothing measurable. Indented stages run inside the one
# above them. A stage whose function does not exist (the code changed) shows as n/a.
_BACKUP_STAGES = [
    ("engine.split_points (planning)", "tidemark.storage.sqlite", "SQLiteEngine.split_points"),
    ("engine.protect", "tidemark.storage.sqlite", "SQLiteEngine.protect"),
    ("engine.export (SQLite, C)", "tidemark.storage.sqlite", "SQLiteEngine.export"),
    ("part fingerprints (C or Python)", "tidemark.backup.job",
     "BackupResumer._fingerprint_part"),
    ("fingerprint_change (C, beside export)", "tidemark.storage.sqlite",
     "SQLiteEngine.fingerprint_change"),
    ("storage.write (all files)", "tidemark.cloud.filesystem", "FilesystemStorage.write"),
    ("  zstd: Encoder.write", "tidemark.cloud.codec", "Encoder.write"),
    ("  zstd: Encoder.close", "tidemark.cloud.codec", "Encoder.close"),
    ("job progress (job record)", "tidemark.jobs.registry", "JobContext.progress"),
    ("finish: manifest, LATEST, cleanup", "tidemark.backup.job", "BackupResumer._finish"),
    ("  manifest fingerprints", "tidemark.backup.job", "BackupResumer._fingerprints"),
]
_RESTORE_STAGES = [
    ("fetch (read, decode, sha256, write)", "tidemark.backup.restore", "fetch"),
    ("  zstd: Decoder.read", "tidemark.cloud.codec", "Decoder.read"),
    ("build_overlay (C, fetch thread)", "tidemark.backup.restore", "build_overlay"),
    ("export_live_count (fetch thread)", "tidemark.backup.restore", "export_live_count"),
    ("engine.import_file (SQLite, C)", "tidemark.storage.sqlite", "SQLiteEngine.import_file"),
    ("revalidate indexes", "tidemark.backup.restore", "RestoreResumer._revalidate"),
    ("job progress (job record)", "tidemark.jobs.registry", "JobContext.progress"),
    ("publish", "tidemark.backup.restore", "RestoreResumer._publish"),
]


class Stages:
    """Wraps the stages' functions while active; ``seconds[label]`` accumulates wall time."""

    def __init__(self, stages: list[tuple[str, str, str]]):
        self.stages = stages
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> Stages:
        for label, module, name in self.stages:
            owner: Any = importlib.import_module(module)
            *path, attr = name.split(".")
            for part in path:
                owner = getattr(owner, part, None)
            if owner is None or not hasattr(owner, attr):
                continue
            raw = inspect.getattr_static(owner, attr)
            fn = raw.__func__ if isinstance(raw, staticmethod) else raw
            wrapped = self._wrap(label, fn)
            setattr(owner, attr, staticmethod(wrapped) if isinstance(raw, staticmethod)
                    else wrapped)
            self._undo.append((owner, attr, raw))
            self.seconds[label] = 0.0
            self.calls[label] = 0
        return self

    def _wrap(self, label: str, fn: Any) -> Any:
        def timed_call(*args: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1
        return timed_call

    def __exit__(self, *exc: object) -> None:
        for owner, attr, raw in reversed(self._undo):
            setattr(owner, attr, raw)

    def lines(self, label: str, wall: float) -> list[str]:
        out = [f"-- {label}: {wall:.2f} s"]
        top = 0.0
        for name, _module, _fn in self.stages:
            if name not in self.seconds:
                out.append(f"   {name:38} {'n/a':>8}")
                continue
            t = self.seconds[name]
            top += 0.0 if name.startswith(" ") else t
            out.append(f"   {name:38} {t:8.3f} s {t / wall:6.1%}  ({self.calls[name]} calls)")
        out.append(f"   {'rest (statement, planning, job, I/O)':38} {wall - top:8.3f} s "
                   f"{(wall - top) / wall:6.1%}")
        return out


def _cprofile_lines(prof: cProfile.Profile, n: int = 10) -> list[str]:
    stats = pstats.Stats(prof)
    top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:n]  # type: ignore[attr-defined]
    lines = ["   cProfile, top own time (per-call overhead inflates Python loops):"]
    for (file, line, func), (_cc, nc, tt, _ct, _callers) in top:
        where = func if file == "~" else f"{Path(file).name}:{line} {func}"
        lines.append(f"     {tt:8.3f} s  {nc:>8} calls  {where[:80]}")
    return lines


def profile(store: Path, rows: int, use_cprofile: bool = False) -> list[str]:
    """Time the stages of a full backup, a 1 % incremental and both restores.

    With ``use_cprofile`` each statement also runs under cProfile, in this thread (a session
    with no job adopter), which slows per-row Python loops down a lot: the stage times are
    then only good for proportions."""
    node = Node(store)
    registry = Registry(node)  # no adopter: every job runs in the calling thread
    coll = "nodelocal://self/profile"
    try:
        session = Session(node, "defaultdb", registry)

        def one(sql: str, stages: list, label: str) -> list[str]:
            prof = cProfile.Profile() if use_cprofile else None
            with Stages(stages) as st:
                start = time.perf_counter()
                if prof:
                    prof.enable()
                session.execute(sql)
                if prof:
                    prof.disable()
                wall = time.perf_counter() - start
            return st.lines(label, wall) + (_cprofile_lines(prof) if prof else [])

        out = one(f"BACKUP DATABASE {DB} INTO '{coll}'", _BACKUP_STAGES, "full backup")
        change_rows(node, rows, CHANGED, 1000)
        out += one(f"BACKUP DATABASE {DB} INTO LATEST IN '{coll}'", _BACKUP_STAGES,
                   f"{CHANGED:.0%} incremental backup")
        end = session.execute(f"SHOW BACKUP LATEST IN '{coll}'").rows[0][3]
        out += one(f"RESTORE DATABASE {DB} FROM LATEST IN '{coll}' AS OF SYSTEM TIME '{end}' "
                   "WITH new_db_name = 'prof_full'", _RESTORE_STAGES, "restore of the full")
        out += one(f"RESTORE DATABASE {DB} FROM LATEST IN '{coll}' WITH new_db_name = "
                   "'prof_chain'", _RESTORE_STAGES, "restore of full + incremental (overlay)")
        return out
    finally:
        registry.close()
        node.close()


# -- the benchmark ---------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _best(times: list[float]) -> str:
    return f"{min(times):.2f} s"


def _all(times: list[float]) -> str:
    return ", ".join(f"{t:.2f}" for t in times) + " s"


def run(versions: int, rss_versions: list[int], index: bool = False, repeat: int = 1,
        do_profile: bool = False, use_cprofile: bool = False
        ) -> tuple[list[tuple[str, ...]], list[str]]:
    """Rows (name, measured, reference, ratio, target, verdict) and notes.

    Each timed statement runs ``repeat`` times and counts its best time (the machine may be
    shared: the best is the least disturbed). VACUUM INTO runs before and after every full
    backup, before any restore has grown the store."""
    work = Path(tempfile.mkdtemp(prefix="tidemark-backupbench-"))
    table: list[tuple[str, ...]] = []
    notes: list[str] = []
    try:
        store = work / "store"
        t0 = time.perf_counter()
        conn, rows = build_store(store, versions, index)
        t_build = time.perf_counter() - t0
        store_bytes = (store / STORE_FILE).stat().st_size
        notes.append(f"store: {versions:,} versions ({rows:,} rows), "
                     f"{store_bytes / MIB:,.0f} MiB, built in {t_build:.1f} s")

        vacuums = [vacuum_into(store, work / "vacuum.sqlite")]
        fulls = []
        for _ in range(repeat):
            t, full = timed(conn, f"BACKUP DATABASE {DB} INTO '{COLLECTION}'")
            fulls.append(t)
            vacuums.append(vacuum_into(store, work / "vacuum.sqlite"))
            assert full.rows[0][3] == rows, full.rows
        t_vac, t_full = min(vacuums), min(fulls)
        backup_bytes = full.rows[0][5]
        notes.append(f"VACUUM INTO: {', '.join(f'{t:.2f}' for t in vacuums)} s (reference: "
                     f"the best); full backup {backup_bytes / MIB:,.1f} MiB stored "
                     f"({store_bytes / max(1, backup_bytes):.1f}x smaller than the store)")
        full_end = conn.execute(f"SHOW BACKUP LATEST IN '{COLLECTION}'").rows[0][3]

        incs = []
        for n in range(repeat):
            changed = change_rows(conn.node, rows, CHANGED, n)
            t, inc = timed(conn, f"BACKUP DATABASE {DB} INTO LATEST IN '{COLLECTION}'")
            incs.append(t)
            assert inc.rows[0][3] == changed, (inc.rows, changed)
        t_inc = min(incs)

        restores = []
        for n in range(repeat):
            t, res = timed(conn, f"RESTORE DATABASE {DB} FROM LATEST IN '{COLLECTION}' "
                           f"AS OF SYSTEM TIME '{full_end}' WITH new_db_name = 'r_full{n}'")
            restores.append(t)
            assert res.rows[0][3] == rows, (res.rows, rows)
        t_restore = min(restores)
        t_chain, _ = timed(conn, f"RESTORE DATABASE {DB} FROM LATEST IN '{COLLECTION}' "
                           "WITH new_db_name = 'r_chain'")
        if fingerprints(conn, f"{DB}.kv", full_end) != fingerprints(conn, "r_full0.kv"):
            raise AssertionError("the restored full backup differs from the source")
        if fingerprints(conn, f"{DB}.kv") != fingerprints(conn, "r_chain.kv"):
            raise AssertionError("the restored chain differs from the source")
        conn.close()
        if repeat > 1:
            notes.append(f"runs (best counts): full {_all(fulls)}; incremental {_all(incs)}; "
                         f"restore {_all(restores)}")

        vac = f"VACUUM {t_vac:.2f} s"
        table += [
            ("VACUUM INTO (reference)", f"{t_vac:.2f} s", "", "1.00", "", ""),
            ("full BACKUP", _best(fulls), vac, f"{t_full / t_vac:.2f}x",
             f"<= {TARGET_BACKUP_X:.0f}x", _verdict(t_full <= TARGET_BACKUP_X * t_vac)),
            ("RESTORE of the full backup", _best(restores), vac,
             f"{t_restore / t_vac:.2f}x", f"<= {TARGET_RESTORE_X:.0f}x",
             _verdict(t_restore <= TARGET_RESTORE_X * t_vac)),
            (f"incremental BACKUP ({CHANGED:.0%} rows)", f"{t_inc:.3f} s",
             f"full {t_full:.2f} s", f"{t_inc / t_full:.1%}",
             f"<= {TARGET_INC_FRACTION:.0%}", _verdict(t_inc <= TARGET_INC_FRACTION * t_full)),
            ("RESTORE full+incr (overlay)", f"{t_chain:.2f} s", vac,
             f"{t_chain / t_vac:.2f}x", "(info)", ""),
        ]

        if do_profile:
            notes += profile(store, rows, use_cprofile)
        shutil.rmtree(store, ignore_errors=True)

        peaks: dict[str, list[tuple[int, dict[str, Any]]]] = {"backup": [], "restore": []}
        for n in rss_versions:
            for op, m in measure_rss(work, n, index).items():
                peaks[op].append((n, m))
        for op, results in peaks.items():
            for n, m in results:
                largest = n == max(rss_versions)
                table.append((
                    f"peak RSS, {op} only, {n / 1e6:g}M",
                    f"{m['hwm'] / MIB:,.0f} MB",
                    f"anon {m['anon'] / MIB:,.0f} (SQLite {m['sqlite_heap'] / MIB:,.0f}) / "
                    f"file {m['file'] / MIB:,.0f}",
                    f"base {m['baseline'] / MIB:,.0f}", f"< {TARGET_RSS_MB} MB" if largest
                    else "", _verdict(m["hwm"] < TARGET_RSS_MB * MIB) if largest else ""))
            if len(results) > 1:
                small, big = results[0][1]["hwm"], results[-1][1]["hwm"]
                table.append((
                    f"peak RSS growth, {op}",
                    f"{(big - small) / MIB:+,.0f} MB",
                    f"{results[0][0] / 1e6:g}M -> {results[-1][0] / 1e6:g}M",
                    f"{big / small:.2f}x", f"<= {1 + FLAT_RSS_GROWTH:.2f}x (flat)",
                    _verdict(big <= (1 + FLAT_RSS_GROWTH) * small)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return table, notes


def report(versions: int = 2_000_000, rss_versions: tuple[int, ...] = (1_000_000, 5_000_000),
           index: bool = False, repeat: int = 1, do_profile: bool = False,
           use_cprofile: bool = False) -> None:
    """Print the table (what ``bench/run.py`` shows)."""
    print()
    sizes = ", ".join(f"{n / 1e6:g}M" for n in rss_versions)
    what = f"{versions / 1e6:g}M versions" + (", secondary index" if index else "") + \
        (f"; peak RSS at {sizes}" if sizes else "") + (f"; best of {repeat}" if repeat > 1 else "")
    print(f"== backup ({what}; reference: SQLite VACUUM INTO of the same store) ==")
    rows, notes = run(versions, list(rss_versions), index, repeat, do_profile, use_cprofile)
    for row in rows:
        name, measured, ref, ratio, target, verdict = row
        print(f"{name:32} {measured:>12}   {ref:>30}   {ratio:>8}   {target:>16}   {verdict}")
    for line in notes:
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=2_000_000)
    parser.add_argument("--rss-versions", default="1000000,5000000",
                        help="comma-separated store sizes for the peak RSS runs ('' for none)")
    parser.add_argument("--scale", type=float,
                        default=float(os.environ.get("TIDEMARK_BENCH_SCALE", "1")),
                        help="multiplies every size (default: $TIDEMARK_BENCH_SCALE or 1)")
    parser.add_argument("--index", action="store_true",
                        help="a secondary index too (half as many rows per version)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each timed statement N times and count the best")
    parser.add_argument("--profile", action="store_true",
                        help="also time the stages of a backup, an incremental and restores")
    parser.add_argument("--cprofile", action="store_true",
                        help="with --profile: also run them under cProfile (top own time)")
    parser.add_argument("--child", nargs=2, metavar=("OP", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    rss = tuple(int(int(n) * args.scale) for n in args.rss_versions.split(",") if n)
    report(int(args.versions * args.scale), rss, args.index, args.repeat,
           args.profile or args.cprofile, args.cprofile)


if __name__ == "__main__":
    main()
