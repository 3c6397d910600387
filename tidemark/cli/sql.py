"""`tidemark sql`: run statements from -e, a script on stdin, or an interactive shell."""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import json
import math
import os
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from tidemark.catalog.rowcodec import JSONValue
from tidemark.catalog.types import ColumnType, Family
from tidemark.errors import SQLSyntaxError, TidemarkError
from tidemark.jobs.record import JobRecord
from tidemark.sql.expr import format_value
from tidemark.sql.lexer import TokenKind, tokenize
from tidemark.sql.result import Result

DEFAULT_STORE = Path("tidemark-data")
HISTORY_FILE = Path.home() / ".tidemark_history"


class Format(enum.StrEnum):
    table = "table"
    tsv = "tsv"
    csv = "csv"
    json = "json"


def _text(value: Any, typ: ColumnType | None) -> str:
    if typ is not None and typ.family is Family.TIMESTAMP and isinstance(value, dt.datetime):
        return format_value(value)[:-3]  # TIMESTAMP has no zone: drop the +00
    return format_value(value)


def _json_value(value: Any, typ: ColumnType | None) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return _text(value, typ)  # JSON has no NaN or Infinity: "NaN", "Infinity"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, JSONValue):
        return value.document
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    return _text(value, typ)


def print_result(result: Result, fmt: Format, console: Console, out: io.TextIOBase) -> None:
    _print_rows(result, fmt, console, out)
    for notice in result.notices:
        print(f"NOTICE: {notice}", file=sys.stderr)


def _print_rows(result: Result, fmt: Format, console: Console, out: io.TextIOBase) -> None:
    types = result.types or [None] * len(result.columns)
    if fmt is Format.json:
        if result.returns_rows:
            doc: dict[str, Any] = {"columns": result.columns, "rows": [
                [_json_value(v, t) for v, t in zip(row, types, strict=True)]
                for row in result.rows]}
        else:
            doc = {"tag": result.tag, "rows_affected": result.rows_affected}
        out.write(json.dumps(doc, allow_nan=False) + "\n")
        return
    if not result.returns_rows:
        if fmt is Format.table:
            count = f" {result.rows_affected}" if result.tag in (
                "INSERT", "UPDATE", "DELETE", "UPSERT") else ""
            out.write(f"{result.tag}{count}\n")
        return
    rows = [[_text(v, t) for v, t in zip(row, types, strict=True)] for row in result.rows]
    if fmt is Format.table:
        table = Table(*result.columns, show_lines=False)
        for r in rows:
            table.add_row(*r)
        console.print(table)
        console.print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    elif fmt is Format.tsv:
        out.write("\t".join(result.columns) + "\n")
        for r in rows:
            out.write("\t".join(r) + "\n")
    else:
        w = csv.writer(out, lineterminator="\n")
        w.writerow(result.columns)
        w.writerows(rows)


class JobProgress:
    """A progress bar for the job a statement waits on (only on a terminal)."""

    def __init__(self, console: Console):
        self.console = console
        self.bar: Progress | None = None
        self.task: TaskID | None = None

    def __call__(self, record: JobRecord) -> None:
        if self.bar is None:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TaskProgressColumn(), TimeElapsedColumn(),
                                console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task(f"job {record.id} {record.type.lower()}", total=1.0)
        assert self.task is not None
        self.bar.update(self.task, completed=record.fraction_completed)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def print_error(exc: TidemarkError) -> None:
    sys.stderr.write(f"ERROR: {exc.message}\nSQLSTATE: {exc.code}\n")
    if exc.hint:
        sys.stderr.write(f"HINT: {exc.hint}\n")


def _complete(buffer: str) -> bool:
    """Does ``buffer`` end a statement (a ``;`` outside strings and comments)?"""
    if not buffer.strip():
        return False
    try:
        tokens = tokenize(buffer)
    except SQLSyntaxError:
        return False  # an unterminated string or comment: keep reading
    significant = [t for t in tokens if t.kind is not TokenKind.EOF]
    return bool(significant) and significant[-1].text == ";"


def sql(
    store: Path = typer.Option(DEFAULT_STORE, "--store", "-s", help="store directory"),
    execute: list[str] = typer.Option(None, "--execute", "-e", help="statement(s) to run"),
    fmt: Format = typer.Option(None, "--format", help="output format (default: table on a "
                               "terminal, tsv otherwise)"),
    database: str = typer.Option("defaultdb", "--database", "-d", help="current database"),
) -> None:
    """Run SQL: -e statements, a script on stdin, or an interactive shell."""
    from tidemark import Connection

    if fmt is None:
        fmt = Format.table if sys.stdout.isatty() else Format.tsv
    console = Console()
    try:
        conn = Connection(store, database)
    except TidemarkError as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    try:
        if execute:
            for text in execute:
                if not _run(conn, text, fmt, console):
                    raise typer.Exit(1)
        elif not sys.stdin.isatty():
            if not _run(conn, sys.stdin.read(), fmt, console):
                raise typer.Exit(1)
        else:
            _shell(conn, fmt, console)
    finally:
        conn.close()


def _run(conn: Any, text: str, fmt: Format, console: Console) -> bool:
    """Run a script statement by statement; False after the first error (printed)."""
    from tidemark.sql.parser import parse

    try:
        statements = parse(text)
    except TidemarkError as exc:
        print_error(exc)
        return False
    progress = JobProgress(console) if sys.stdout.isatty() else None
    conn.session.on_job_progress = progress
    for stmt in statements:
        try:
            result = conn.session.execute_statement(stmt)
        except TidemarkError as exc:
            print_error(exc)
            return False
        finally:
            if progress is not None:
                progress.stop()
        print_result(result, fmt, console, sys.stdout)
        sys.stdout.flush()
    return True


def _shell(conn: Any, fmt: Format, console: Console) -> None:
    try:
        import readline
        if HISTORY_FILE.exists():
            readline.read_history_file(HISTORY_FILE)
    except (ImportError, OSError):
        readline = None  # type: ignore[assignment]
    console.print("# tidemark interactive shell; statements end with ';'. Ctrl-D quits.")
    buffer = ""
    while True:
        prompt = f"{conn.session.database}> " if not buffer else \
            " " * (len(conn.session.database) - 1) + "-> "
        try:
            line = input(prompt)
        except EOFError:
            break
        except KeyboardInterrupt:
            buffer = ""
            console.print()
            continue
        buffer += line + "\n"
        if _complete(buffer):
            _run(conn, buffer, fmt, console)
            buffer = ""
    if readline is not None:
        try:
            readline.write_history_file(HISTORY_FILE)
        except OSError:
            pass
    os.write(1, b"\n")
