"""The `tidemark` command: one typer app; each command lives in its own module."""

from __future__ import annotations

import typer

from tidemark.cli import demo, sql, start

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="tidemark: an MVCC database whose backups never silently lose data.")
app.command("demo")(demo.demo)
app.command("sql")(sql.sql)
app.command("start")(start.start)


@app.callback()
def main() -> None:
    """tidemark: an MVCC database whose backups never silently lose data."""


if __name__ == "__main__":
    app()
