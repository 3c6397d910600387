"""`tidemark workload init|run bank|kv` and `tidemark nemesis`.

`tidemark nemesis --seed N --steps M` (or `--seeds A..B`) runs ``tidemark.workload.nemesis``
schedules, each on a new store under `--store-dir` (default: a temporary folder, removed
afterwards), prints the seed first so that a failure can be reproduced, then a summary table
(`--json`: one JSON object per seed, then the totals). Exit status 1 when any restore diverged
from its source, a RESTORE had to rebuild an index, or the schedule hit an error it did not
expect, or left a job unfinished; with `--unsafe` (MVCC-window incrementals, which lose data)
divergences are expected and only reported. `--subprocess` runs some job statements in a child
process that is SIGKILLed mid-job; the job is then adopted and finished here, cancelled, or
left to the adoption loop (see the nemesis module); it combines with `--unsafe`.
"""

from __future__ import annotations

import enum
import json
import tempfile
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tidemark.errors import TidemarkError
from tidemark.workload import bank, kv, nemesis, parse_duration

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Workloads: bank (invariant total balance) and kv.")

DEFAULT_STORE = Path("tidemark-data")


class Workload(enum.StrEnum):
    bank = "bank"
    kv = "kv"


@app.command("init")
def init(
    workload: Workload = typer.Argument(..., help="bank or kv"),
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="the store's folder"),
    rows: int = typer.Option(1000, "--rows", min=2, help="accounts (bank) or keys (kv)"),
) -> None:
    """Create database `workload` and fill table `bank` (id, balance) or `kv` (k, v)."""
    console = Console()
    try:
        if workload is Workload.bank:
            total = bank.init(store, rows)
            console.print(f"created {bank.TABLE}: {rows} accounts, total balance {total}")
        else:
            kv.init(store, rows)
            console.print(f"created {kv.TABLE}: {rows} keys")
    except TidemarkError as e:
        Console(stderr=True).print(f"[red]ERROR:[/red] {e}")
        raise typer.Exit(1) from None


@app.command("run")
def run(
    workload: Workload = typer.Argument(..., help="bank or kv"),
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="the store's folder"),
    duration: str = typer.Option("10s", "--duration", help="e.g. 10s, 500ms, 2m"),
    concurrency: int = typer.Option(1, "--concurrency", min=1),
    seed: int | None = typer.Option(None, "--seed"),
) -> None:
    """Run transfers (bank: serializable, retried on 40001, total balance checked at the
    end) or random point reads and upserts (kv); prints ops/s."""
    console = Console()
    try:
        seconds = parse_duration(duration)
    except ValueError:
        raise typer.BadParameter(f"not a duration: {duration!r}") from None
    try:
        if workload is Workload.bank:
            stats = bank.run(store, seconds, concurrency, seed=seed)
        else:
            stats = kv.run(store, seconds, concurrency, seed=seed)
    except bank.InvariantError as e:
        Console(stderr=True).print(f"[bold red]INVARIANT VIOLATED:[/bold red] {e}")
        raise typer.Exit(2) from None
    except TidemarkError as e:
        Console(stderr=True).print(f"[red]ERROR:[/red] {e}")
        raise typer.Exit(1) from None
    console.print(f"{workload}: {stats.ops} ops in {stats.seconds:.1f}s = "
                  f"{stats.ops_per_second:.1f} ops/s ({stats.retries} retries, "
                  f"concurrency {concurrency})")
    if workload is Workload.bank:
        console.print("bank invariant holds: total balance unchanged")


def _seeds(seed: int, seeds: str | None) -> list[int]:
    if not seeds:
        return [seed]
    a, sep, b = seeds.partition("..")
    try:
        lo, hi = int(a), int(b) if sep else int(a)
    except ValueError:
        raise typer.BadParameter(f"--seeds takes A..B, not {seeds!r}") from None
    if hi < lo:
        raise typer.BadParameter(f"--seeds {seeds}: empty range")
    return list(range(lo, hi + 1))


def _table(summaries: list[nemesis.Summary], elapsed: float) -> Table:
    def total(attr: str) -> int:
        return sum(getattr(s, attr) for s in summaries)

    verdicts = [v for s in summaries for v in s.doctor.values()]
    unsafe = any(s.unsafe for s in summaries)
    kills = any(s.subprocess_kills for s in summaries)
    mode = ", ".join(m for m, on in (("UNSAFE incrementals", unsafe),
                                     ("subprocess kills", kills)) if on)
    t = Table(title=f"nemesis{f' ({mode})' if mode else ''}: "
              f"{len(summaries)} schedule(s) in {elapsed:.1f}s")
    t.add_column("what")
    t.add_column("count", justify="right")
    diverged = total("diverged_restores")
    rows = [
        ("schedules run", len(summaries)),
        ("steps", total("steps")),
        ("chains", total("chains")),
        ("backups: full", total("backups_full")),
        ("backups: incremental", total("backups_incremental")),
        ("backups: revision_history", total("backups_revision")),
        ("backups: encrypted", total("backups_encrypted")),
        ("backups: taken during a paused job", total("backups_during_paused")),
        ("restores verified", total("restores_verified")),
        ("tables compared", total("tables_compared")),
        ("tables skipped (absent or restoring)", total("tables_skipped")),
        ("restores diverged", diverged),
        ("divergences (tables)", sum(len(s.divergences) for s in summaries)),
        ("indexes rebuilt by RESTORE", sum(len(s.rebuilt) for s in summaries)),
        ("unexpected errors", sum(len(s.unexpected) for s in summaries)),
        ("known issue: paused job failed after GC", sum(len(s.known_issues)
                                                         for s in summaries)),
        ("doctor: healthy", verdicts.count("healthy")),
        ("doctor: problems", verdicts.count("problems")),
        ("doctor: not run / error", verdicts.count("not run") + verdicts.count("error")),
        ("doctor missed (chain lost data, said healthy)",
         sum(len(s.doctor_missed) for s in summaries)),
        ("doctor flagged a chain that restored exactly",
         sum(len(s.doctor_flagged_intact) for s in summaries)),
        ("jobs left unfinished at the end", sum(len(s.jobs_left) for s in summaries)),
    ]
    if kills:
        rows[8:8] = [
            ("jobs SIGKILLed mid-job (subprocess)", total("killed")),
            ("  killed: adopted and finished here", total("adopted")),
            ("  killed: cancelled", total("kill_cancelled")),
            ("  killed: left to the adoption loop", total("kill_left")),
            ("  killed: backups", sum(s.ops["kill:backup"] for s in summaries)),
            ("  killed: restores", sum(s.ops["kill:restore"] for s in summaries)),
            ("  killed: imports", sum(s.ops["kill:import"] for s in summaries)),
            ("  killed: index backfills", sum(s.ops["kill:index"] for s in summaries)),
            ("children done before the kill", total("kill_missed")),
        ]
    bad = {"restores diverged", "divergences (tables)", "indexes rebuilt by RESTORE",
           "unexpected errors", "doctor: problems",
           "doctor missed (chain lost data, said healthy)", "jobs left unfinished at the end"}
    for what, n in rows:
        style = "red" if what in bad and n and not unsafe else \
            "yellow" if what in bad and n else None
        t.add_row(what, str(n), style=style)
    return t


def nemesis_cmd(
    seed: int = typer.Option(0, "--seed", help="the schedule's seed"),
    steps: int = typer.Option(40, "--steps", min=1, help="random steps per schedule"),
    seeds: str | None = typer.Option(None, "--seeds", help="a range of seeds: A..B"),
    store_dir: Path | None = typer.Option(None, "--store-dir",
                                          help="keep the stores here (default: temporary)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON summaries"),
    unsafe: bool = typer.Option(False, "--unsafe", help="MVCC-window incrementals (lose data:"
                                " divergences are expected)"),
    force_hazards: bool = typer.Option(False, "--force-hazards",
                                       help="start with a backfill and an IMPORT paused "
                                       "across a full backup"),
    subprocess_kills: bool = typer.Option(False, "--subprocess",
                                          help="run some job statements in a child process "
                                          "and SIGKILL it mid-job; the job is adopted here"),
    force_kill: bool = typer.Option(False, "--force-kill",
                                    help="start with a full backup SIGKILLed mid-job and "
                                    "adopted (implies --subprocess)"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log notable steps"),
) -> None:
    """Random schedules of writes, index builds, imports, restores and GC interleaved with
    backups; every backup is restored and compared with its source."""
    console = Console(stderr=as_json)
    err = Console(stderr=True)
    todo = _seeds(seed, seeds)
    start = time.monotonic()
    summaries: list[nemesis.Summary] = []
    tmp = None
    if store_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="tidemark-nemesis-")
        store_dir = Path(tmp.name)
    try:
        for s in todo:
            flags = "".join(f for f, on in ((" --unsafe", unsafe),
                                            (" --force-hazards", force_hazards),
                                            (" --subprocess", subprocess_kills),
                                            (" --force-kill", force_kill)) if on)
            console.print(f"nemesis seed={s}: reproduce with tidemark nemesis --seed {s} "
                          f"--steps {steps}{flags}", highlight=False, soft_wrap=True)
            log = (lambda m: console.print(f"  {m}", highlight=False, markup=False)) \
                if verbose else None
            summary = nemesis.run(s, steps, store_dir, unsafe=unsafe,
                                  force_hazards=force_hazards, log=log,
                                  subprocess_kills=subprocess_kills, force_kill=force_kill)
            summaries.append(summary)
            if as_json:
                print(json.dumps(summary.to_json()), flush=True)
            for d in summary.divergences:
                err.print(f"[red]DIVERGENCE[/red] seed={s}: {d}", highlight=False)
            for d in summary.rebuilt:
                err.print(f"[red]REBUILT[/red] seed={s}: {d}", highlight=False)
            for d in summary.unexpected:
                err.print(f"[red]UNEXPECTED[/red] seed={s}: {d}", highlight=False)
            for d in summary.jobs_left:
                err.print(f"[red]JOB LEFT[/red] seed={s}: {d}", highlight=False)
            for d in summary.known_issues:
                err.print(f"[yellow]KNOWN ISSUE[/yellow] seed={s}: {d}", highlight=False)
            if verbose:
                for d in summary.doctor_problems:
                    err.print(f"[yellow]DOCTOR[/yellow] seed={s}: {d}", highlight=False)
    finally:
        if tmp is not None:
            tmp.cleanup()
    elapsed = time.monotonic() - start
    if as_json:
        print(json.dumps({"schedules": len(summaries), "seconds": round(elapsed, 2),
                          "ok": all(s.ok for s in summaries),
                          "failed_seeds": [s.seed for s in summaries if not s.ok]}))
    else:
        console.print(_table(summaries, elapsed))
    failed = [s.seed for s in summaries if not s.ok]
    if failed and not unsafe:
        err.print(f"[bold red]nemesis FAILED[/bold red] for seed(s) {failed}")
        raise typer.Exit(1)
    if unsafe:
        console.print(f"unsafe mode: {sum(s.diverged_restores for s in summaries)} restore(s) "
                      f"diverged; doctor flagged "
                      f"{sum(list(s.doctor.values()).count('problems') for s in summaries)} "
                      "chain(s)")
