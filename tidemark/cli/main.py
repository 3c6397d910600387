"""The `tidemark` command: one typer app; each command lives in its own module."""

from __future__ import annotations

import typer

from tidemark.cli import backup, demo, sql, start, workload

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="tidemark: an MVCC database whose backups never silently lose data.")
app.command("demo")(demo.demo)
app.command("sql")(sql.sql)
app.command("start")(start.start)
app.add_typer(backup.app, name="backup")
app.add_typer(workload.app, name="workload")
app.command("nemesis")(workload.nemesis_cmd)


@app.callback()
def main() -> None:
    """tidemark: an MVCC database whose backups never silently lose data."""


if __name__ == "__main__":
    app()
