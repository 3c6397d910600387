"""The `tidemark` command-line entry point."""
import typer

app = typer.Typer()
