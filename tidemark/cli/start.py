"""`tidemark start`: a long-lived node that adopts and runs jobs (a network server comes later)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer
from rich.console import Console

import tidemark.backup.job
import tidemark.backup.restore
import tidemark.importer.job
import tidemark.schemachange.index  # noqa: F401
from tidemark.cli.sql import DEFAULT_STORE, print_error
from tidemark.cluster.node import Node
from tidemark.errors import TidemarkError
from tidemark.jobs.registry import Registry


def start(store: Path = typer.Option(DEFAULT_STORE, "--store", "-s", help="store directory")
          ) -> None:
    """Run a node on the store: it adopts and runs jobs until stopped (Ctrl-C or SIGTERM)."""
    console = Console(stderr=True)
    try:
        node = Node(store)
    except TidemarkError as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    registry = Registry(node)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    registry.start_adopting()
    node.start_gc()
    console.print(f"tidemark node {registry.instance_id} running on {store}; adopting jobs "
                  "and running GC")
    try:
        while not stop.wait(1.0):  # a timeout keeps signals deliverable
            pass
    finally:
        registry.close()
        node.close()
    console.print("node stopped")
