"""`tidemark demo`: a short, readable tour of what tidemark does today."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from tidemark.backup import doctor
from tidemark.catalog.descriptors import IndexState
from tidemark.catalog.rowcodec import decode_row
from tidemark.cli.backup import print_chain
from tidemark.cli.sql import Format, print_result
from tidemark.clock import format_ts
from tidemark.cluster.node import Node
from tidemark.errors import JobPausedError, TidemarkError
from tidemark.kv.keys import index_prefix, index_span, prefix_end
from tidemark.schemachange import index as index_mod
from tidemark.sql import ddl
from tidemark.sql.ast import TableName
from tidemark.sql.parser import parse_one
from tidemark.sql.session import Session
from tidemark.storage.engine import Span, Window


def _fingerprints(console: Console, left: str, a: list, right: str, b: list) -> None:
    table = Table(title="fingerprints (one per index)", title_justify="left")
    table.add_column("index")
    table.add_column(left, justify="right")
    table.add_column(right, justify="right")
    table.add_column("")
    for (name, fa), (_, fb) in zip(a, b, strict=True):
        table.add_row(name, str(fa), str(fb), "[green]equal" if fa == fb else "[red]DIFFERENT")
    console.print(table)
    if a != b:
        raise SystemExit("demo: the restore does not match its source")


def demo(store: Path | None = typer.Option(
        None, help="store directory to use (default: a new temporary one)")) -> None:
    """Walk through SQL, time travel, serializable transactions, and arrival-time backups."""
    console = Console()
    with tempfile.TemporaryDirectory(prefix="tidemark-demo-") as tmp:
        path = store or Path(tmp) / "store"
        with Node(path) as node:
            _run(console, node, Path(tmp))


def _run(console: Console, node: Node, tmp: Path) -> None:
    sess = Session(node)

    def sql(text: str, show: bool = True) -> list:
        console.print(f"[bold cyan]> {text}")
        result = sess.execute(text)
        if show:
            print_result(result, Format.table, console, console.file)
        return result.rows

    console.rule("[bold]1. A bank, and time travel with AS OF SYSTEM TIME")
    sql("CREATE TABLE bank (id INT PRIMARY KEY, owner STRING NOT NULL, balance DECIMAL(12,2))")
    sql("INSERT INTO bank VALUES (1, 'alice', 100), (2, 'bob', 50), (3, 'carol', 75)")
    (before,), = sql("SELECT cluster_logical_timestamp()")
    sql("BEGIN; UPDATE bank SET balance = balance - 30 WHERE id = 1; "
        "UPDATE bank SET balance = balance + 30 WHERE id = 2; COMMIT")
    sql("SELECT * FROM bank")
    sql(f"SELECT * FROM bank AS OF SYSTEM TIME {before}")

    console.rule("[bold]2. Serializable transactions: a write skew is refused")
    other = Session(node)
    check = "SELECT sum(balance) FROM bank WHERE id IN (1, 2)"
    for s, who in ((sess, 1), (other, 2)):
        s.execute("BEGIN")
        s.execute(check)
        s.execute(f"UPDATE bank SET balance = balance - 100 WHERE id = {who}")
    sess.execute("COMMIT")
    console.print("first transaction (debits alice after checking the total) committed")
    try:
        other.execute("COMMIT")
        console.print("[red]second transaction committed too: that would be a write skew")
    except TidemarkError as exc:
        console.print(f"second transaction refused, retryable ({exc.code}): "
                      f"[dim]{exc.message}")
    sql("UPDATE bank SET balance = 70 WHERE id = 1", show=False)

    console.rule("[bold]3. Why incrementals must select by arrival, not by MVCC time")
    console.print("An online CREATE INDEX reads the table at a time R and writes the index "
                  "entries *at R*. Here a backup runs while it is backfilling:")
    table_id = node.db.run(lambda txn: sess.table(txn, TableName("bank")).id)
    stmt = parse_one("CREATE INDEX bank_owner_idx ON bank (owner) STORING (balance)")
    _, index = node.db.run(lambda txn: ddl.add_index(txn, sess.table(txn, TableName("bank")),
                                                     stmt, IndexState.DELETE_ONLY))
    desc = node.db.run(lambda txn: index_mod.set_index_state(txn, table_id, index.id,
                                                       IndexState.WRITE_ONLY))
    read_ts = node.db.now()
    backup1 = node.db.now()
    console.print(f"  backfill reads at R = {format_ts(read_ts)}")
    console.print(f"  backup 1 ends at      {format_ts(backup1)}  (index not public: skipped)")
    rows = [decode_row(v) for _, v in node.db.scan(
        *index_span(table_id, desc.primary_index.id), ts=read_ts)]
    arrival = node.engine.ingest(index_mod.build_entries(desc, index, rows, None), ts=read_ts)
    node.db.run(lambda txn: index_mod.set_index_state(txn, table_id, index.id, IndexState.PUBLIC))
    backup2 = node.db.now()
    console.print(f"  entries ingested at R, arriving at {format_ts(arrival)}; index public")
    console.print(f"  backup 2 ends at      {format_ts(backup2)}")
    span = Span(index_prefix(table_id, index.id), prefix_end(index_prefix(table_id, index.id)))
    table = Table(title="incremental backup 2 = index entries that changed in "
                        "(backup 1, backup 2]", title_justify="left")
    table.add_column("selected by")
    table.add_column("entries exported", justify="right")
    table.add_column("verdict")
    for window, verdict in ((Window.MVCC, "[red]misses the backfilled index: silent data loss"),
                            (Window.ARRIVAL, "[green]complete by construction")):
        stats = node.engine.export(str(tmp / f"inc-{window.value}.sqlite"), span, backup1,
                                   backup2, window=window, all_revisions=True)
        table.add_row(f"{window.value} time", str(stats.rows), verdict)
    console.print(table)
    sql("SELECT owner, balance FROM bank@bank_owner_idx WHERE owner > 'b'")
    console.print("tidemark backs up by arrival; the index is complete in every restore.")
    sql("SHOW FINGERPRINTS FROM TABLE bank")

    console.rule("[bold]4. GC keeps only what a protected timestamp or the TTL needs")
    sql("SET CLUSTER SETTING gc.ttlseconds = 1", show=False)
    record = node.engine.protect(int(before), [Span(b"", b"\xff")], owner="demo backup")
    stats = node.run_gc(now=node.db.now() + 2 * 10**9)
    console.print(f"GC with a protected timestamp removed {stats.removed} versions")
    sql(f"SELECT * FROM bank AS OF SYSTEM TIME {before}", show=False)
    console.print("the protected past is still readable")
    node.engine.release(record.id)
    stats = node.run_gc(now=node.db.now() + 2 * 10**9)
    console.print(f"after releasing it, GC removed {stats.removed} versions")
    try:
        sess.execute(f"SELECT * FROM bank AS OF SYSTEM TIME {before}")
    except TidemarkError as exc:
        console.print(f"[dim]{exc.message}")
    sql("SHOW CLUSTER SETTING version")

    console.rule("[bold]5. BACKUP, an incremental, and a point-in-time RESTORE")
    coll = "nodelocal://self/backups"
    sql(f"BACKUP INTO '{coll}' WITH revision_history")
    sql("UPDATE bank SET balance = balance + 5 WHERE id = 3", show=False)
    (moment,), = sql("SELECT cluster_logical_timestamp()")
    sql("INSERT INTO bank VALUES (4, 'dave', 10)", show=False)
    sql("DELETE FROM bank WHERE id = 2", show=False)
    sql(f"BACKUP INTO LATEST IN '{coll}' WITH revision_history")
    sql(f"SHOW BACKUP FROM LATEST IN '{coll}'")
    sql(f"RESTORE DATABASE defaultdb FROM LATEST IN '{coll}' AS OF SYSTEM TIME {moment} "
        "WITH new_db_name = 'as_of_then'")
    source = sess.execute(f"SHOW FINGERPRINTS FROM TABLE bank AS OF SYSTEM TIME {moment}").rows
    restored = sess.execute("SHOW FINGERPRINTS FROM TABLE as_of_then.bank").rows
    _fingerprints(console, "bank AS OF SYSTEM TIME then", source, "as_of_then.bank", restored)

    console.rule("[bold]6. A backup while CREATE INDEX is paused mid-backfill")
    sql("CREATE TABLE orders (id INT PRIMARY KEY, customer STRING, total INT)", show=False)
    sql("INSERT INTO orders VALUES " + ", ".join(
        f"({i}, 'c{i % 7}', {i * 3})" for i in range(1, 201)), show=False)
    sql("SET CLUSTER SETTING bulkio.index_backfill.batch_size = 50", show=False)
    sql("SET CLUSTER SETTING jobs.debug.pausepoints = 'indexbackfill.after_first_chunk'",
        show=False)
    try:
        sql("CREATE INDEX orders_customer ON orders (customer)")
    except JobPausedError as exc:
        job = exc.job_id
        console.print(f"[yellow]{exc.message}")
    orders = "nodelocal://self/orders-backups"
    sql(f"BACKUP TABLE orders INTO '{orders}'")
    sql("SET CLUSTER SETTING jobs.debug.pausepoints = ''", show=False)
    sql(f"RESUME JOB {job}", show=False)
    sql(f"SHOW JOB WHEN COMPLETE {job}", show=False)
    sql("INSERT INTO orders VALUES (201, 'c1', 1)", show=False)
    sql(f"BACKUP TABLE orders INTO LATEST IN '{orders}'")
    sql("CREATE DATABASE copy", show=False)
    sql(f"RESTORE TABLE orders FROM LATEST IN '{orders}' WITH into_db = 'copy'")
    sql("SELECT count(*) FROM copy.orders@orders_customer WHERE customer = 'c1'")
    _fingerprints(console, "orders", sess.execute("SHOW FINGERPRINTS FROM TABLE orders").rows,
                  "copy.orders", sess.execute("SHOW FINGERPRINTS FROM TABLE copy.orders").rows)
    console.print("The index was not PUBLIC in the full backup, so the incremental re-exported "
                  "it from time zero: the restore has every entry.")

    console.rule("[bold]7. tidemark backup doctor checks the chain")
    report = doctor.diagnose(orders, store=node.engine.root, deep=True)
    for chain in report.chains:
        print_chain(console, chain, False)
    console.print("[green]healthy" if report.healthy else "[red]problems found")
