"""`tidemark backup ...`: tools for backup collections; today `backup doctor`.

`tidemark backup doctor '<collection>'` checks every chain of the collection (or one, with
`--subdir`) and prints what ``tidemark.backup.doctor.diagnose`` found: a table per chain
(layer, check, status, details), or the report's JSON with `--json` (its schema is in
``tidemark.backup.doctor.Report``). `--repair --store PATH` then appends, on the source store
PATH, an incremental that re-exports from time zero every span the checks flagged, and checks
again.

Exit status: 0 healthy (no error; warnings allowed), 1 problems found (or a repair failed), 2
the collection could not be read (bad URI, not a collection, no backups, no such subdir, wrong
or missing passphrase, unreachable storage) or the options are inconsistent.

`nodelocal://self/...` collections live in a store's `external/` folder: name that store with
`--store` (the same option `--repair` uses for the source store). `--deep` restores each layer
into a scratch store in a temporary folder, reaching a nodelocal collection through its
`file://` path.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tidemark.backup import doctor as doc
from tidemark.clock import format_ts
from tidemark.cloud import redact_uri
from tidemark.errors import TidemarkError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Backup collections: check them (doctor).")

EXIT_HEALTHY, EXIT_PROBLEMS, EXIT_UNREADABLE = 0, 1, 2
PASSPHRASE_ENV = "TIDEMARK_BACKUP_PASSPHRASE"

_SHORT = {"structural.manifest": "manifest", "structural.format": "format",
          "structural.chain": "chain", "structural.times": "times",
          "structural.files": "files", "structural.coverage": "coverage",
          "semantic.reintroduce": "reintroduce", "semantic.not_public": "not-public",
          "deep.restore": "restore", "deep.rebuild": "rebuild", "deep.index": "index",
          "deep.fingerprint": "fingerprint"}
_STATUS = {"error": "[bold red]ERROR[/]", "warning": "[yellow]warning[/]", "ok": "[green]ok[/]"}


def _layer_label(chain: doc.ChainReport, layer: str | None) -> str:
    if layer is None:
        return "(chain)"
    if layer == chain.subdir:
        return f"full {layer}"
    prefix = f"/incrementals{chain.subdir}/"
    return "+ " + layer.removeprefix(prefix)


def print_chain(console: Console, chain: doc.ChainReport, verbose: bool) -> None:
    errors = sum(p.severity == "error" for p in chain.problems)
    warnings = len(chain.problems) - errors
    state = "[green]healthy[/]" if chain.healthy else f"[bold red]{errors} error(s)[/]"
    if warnings:
        state += f", [yellow]{warnings} warning(s)[/]"
    span = ""
    readable = [s for s in chain.layers if s.end_time is not None]
    if readable:
        span = f", up to {format_ts(readable[-1].end_time or 0)}"
    table = Table(title=f"chain {escape(chain.subdir)}: {len(chain.layers)} layer(s){span} — "
                  f"{state}", title_justify="left", show_lines=False)
    table.add_column("layer", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("details", overflow="fold", ratio=1)
    dirs: list[str | None] = [None, *(s.dir for s in chain.layers)]
    dirs += [p.layer for p in chain.problems if p.layer not in dirs]
    for d in dirs:
        label = _layer_label(chain, d)
        for p in chain.problems:
            if p.layer == d:
                table.add_row(escape(label), _SHORT.get(p.check, p.check), _STATUS[p.severity],
                              escape(p.message))
        runs = [c for c in chain.checks if c.layer == d and chain.status(d, c.check) == "ok"]
        if not runs:
            continue
        if verbose:
            for c in runs:
                table.add_row(escape(label), _SHORT.get(c.check, c.check), _STATUS["ok"],
                              escape(c.details))
            continue
        order = list(doc.CHECKS)
        checks = sorted({c.check for c in runs}, key=lambda c: order.index(c)
                        if c in order else len(order))
        passed = [_SHORT.get(c, c) for c in checks]
        summary = next((s for s in chain.layers if s.dir == d), None)
        details = ""
        if summary is not None and summary.readable:
            introduced = (f" ({summary.introduced_spans} introduced)"
                          if summary.introduced_spans else "")
            details = (f"{summary.backup_type}, {summary.spans} span(s){introduced}, "
                       f"{summary.files} file(s), {summary.bytes} bytes; ")
        details += "passed: " + ", ".join(passed)
        table.add_row(escape(label), f"{len(passed)} checks", _STATUS["ok"], escape(details))
    console.print(table)
    for n in chain.notes:
        where = " ".join(x for x in (_layer_label(chain, n.layer) if n.layer else "",
                                     n.table or "", f"@{n.index}" if n.index else "") if x)
        console.print(f"  [dim]note ({n.check}{': ' + escape(where) if where else ''}): "
                      f"{escape(n.message)}[/]")


def _print_repairs(console: Console, results: list[doc.RepairResult]) -> None:
    for r in results:
        what = ", ".join(f"{p.table}@{p.index}" for p in r.spans)
        if r.error:
            which = f" of {escape(r.subdir)}" if r.subdir else ""
            console.print(f"[bold red]repair{which} failed:[/] {escape(r.error)}")
        else:
            console.print(f"[green]repaired {escape(r.subdir)}:[/] job {r.job_id} wrote "
                          f"{escape(r.layer or '')}, re-exporting from time zero: "
                          f"{escape(what)}")


def _fail(exc: TidemarkError, as_json: bool, uri: str) -> typer.Exit:
    if as_json:
        print(json.dumps({"schema_version": doc.JSON_SCHEMA_VERSION,
                          "collection": redact_uri(uri), "healthy": False, "chains": [],
                          "error": {"message": exc.message, "hint": exc.hint,
                                    "code": exc.code}}, indent=2))
    else:
        sys.stderr.write(f"ERROR: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"HINT: {exc.hint}\n")
    return typer.Exit(EXIT_UNREADABLE)


@app.command("doctor")
def doctor(
    collection: str = typer.Argument(..., help="the collection URI (as in BACKUP ... INTO)"),
    passphrase: str | None = typer.Option(
        None, "--passphrase", envvar=PASSPHRASE_ENV,
        help="encryption passphrase of the backups"),
    subdir: str | None = typer.Option(
        None, "--subdir", help="check only this full backup's chain (a folder as SHOW "
        "BACKUPS IN lists it, or LATEST); default: every chain"),
    files: bool = typer.Option(
        True, "--files/--no-files", help="read every data file to verify its size and "
        "SHA-256 (--no-files: manifests only)"),
    deep: bool = typer.Option(
        False, "--deep", help="also restore each layer into a scratch store and check "
        "indexes and fingerprints (costs about one restore per layer)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="one row per passed check"),
    repair: bool = typer.Option(
        False, "--repair", help="append an incremental (run on --store) that re-exports "
        "from time zero every span flagged, then check again"),
    store: Path | None = typer.Option(
        None, "--store", "-s", help="the source store: resolves nodelocal:// and runs "
        "--repair's backup"),
) -> None:
    """Check a backup collection: manifests, files, coverage, schema-state rules, restores."""
    console = Console(stderr=as_json)
    if repair and store is None:
        raise _fail(TidemarkError("--repair needs --store PATH, the store the backups were "
                                  "taken from", hint="tidemark backup doctor '<collection>' "
                                  "--repair --store <store>"), as_json, collection)

    def run() -> doc.Report:
        try:
            return doc.diagnose(collection, passphrase=passphrase, subdir=subdir,
                                files=files, deep=deep, store=store)
        except TidemarkError as exc:
            raise _fail(exc, as_json, collection) from None

    def show(report: doc.Report) -> None:
        if not as_json:
            for chain in report.chains:
                print_chain(console, chain, verbose)

    report = run()
    show(report)
    repairs: list[doc.RepairResult] | None = None
    if repair:
        assert store is not None
        try:
            repairs = doc.repair(collection, report, store=store, passphrase=passphrase)
        except TidemarkError as exc:  # could not even start: the report stands
            hint = f" (HINT: {exc.hint})" if exc.hint else ""
            repairs = [doc.RepairResult("", error=exc.message + hint)]
        if not as_json:
            if not repairs:
                console.print("nothing to repair: no span needs re-exporting")
            _print_repairs(console, repairs)
        if any(r.layer for r in repairs):
            report = run()
            if not as_json:
                console.print("[bold]after the repair:[/]")
            show(report)
    failed_repair = any(r.error for r in repairs or [])
    if as_json:
        out: dict[str, Any] = report.to_json()
        if repairs is not None:
            out["repairs"] = [r.to_json() for r in repairs]
        print(json.dumps(out, indent=2))
    else:
        layers = sum(len(c.layers) for c in report.chains)
        errors = sum(p.severity == "error" for p in report.problems)
        warnings = len(report.problems) - errors
        if report.healthy:
            console.print(f"[bold green]healthy[/]: {len(report.chains)} chain(s), {layers} "
                          f"layer(s){f', {warnings} warning(s)' if warnings else ''}")
        else:
            console.print(f"[bold red]PROBLEMS FOUND[/]: {errors} error(s), {warnings} "
                          f"warning(s) in {len(report.chains)} chain(s), {layers} layer(s)")
    raise typer.Exit(EXIT_HEALTHY if report.healthy and not failed_repair else EXIT_PROBLEMS)
