"""The bank workload: accounts whose total balance serializable transfers keep constant."""

from __future__ import annotations

import random
from pathlib import Path

import tidemark
from tidemark.errors import RetryableError, SQLError
from tidemark.workload import RunStats, retry, run_workers

DATABASE = "workload"
TABLE = f"{DATABASE}.bank"
INITIAL_BALANCE = 1000


class InvariantError(AssertionError):
    """The total balance changed: a serializability bug."""


def create(conn: tidemark.Connection, rows: int, table: str = TABLE,
           balance: int = INITIAL_BALANCE) -> None:
    db = table.partition(".")[0]
    conn.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    conn.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, balance INT NOT NULL)")
    for start in range(0, rows, 500):
        ids = range(start, min(rows, start + 500))
        conn.execute(f"INSERT INTO {table} VALUES " +
                     ", ".join(f"({i}, {balance})" for i in ids))


def init(store: str | Path, rows: int = 100) -> int:
    """Create and fill the bank table; returns its expected total balance."""
    with tidemark.connect(store) as conn:
        create(conn, rows)
    return rows * INITIAL_BALANCE


def total(conn: tidemark.Connection, table: str = TABLE) -> tuple[int, int]:
    """(number of accounts, total balance)."""
    ((n, s),) = conn.execute(f"SELECT count(*), sum(balance) FROM {table}").rows
    return int(n), int(s or 0)


def transfer(conn: tidemark.Connection, rng: random.Random, accounts: int,
             table: str = TABLE) -> int:
    """Move a random amount between two random accounts in one serializable transaction,
    retrying on 40001. Returns the number of retries."""
    a, b = rng.sample(range(accounts), 2)
    amount = rng.randint(1, 100)
    retries = 0

    def attempt() -> None:
        conn.execute("BEGIN")
        try:
            ((bal_a,),) = conn.execute(f"SELECT balance FROM {table} WHERE id = $1", [a]).rows
            ((bal_b,),) = conn.execute(f"SELECT balance FROM {table} WHERE id = $1", [b]).rows
            conn.execute(f"UPDATE {table} SET balance = $1 WHERE id = $2", [bal_a - amount, a])
            conn.execute(f"UPDATE {table} SET balance = $1 WHERE id = $2", [bal_b + amount, b])
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    def count() -> None:
        nonlocal retries
        retries += 1

    retry(attempt, on_retry=count)
    return retries


def _rollback(conn: tidemark.Connection) -> None:
    try:
        conn.execute("ROLLBACK")
    except SQLError:
        pass


def run(store: str | Path, duration: float, concurrency: int = 1, seed: int | None = None
        ) -> RunStats:
    """Run transfers for ``duration`` seconds on ``concurrency`` connections; raises
    ``InvariantError`` if the total balance changed."""
    with tidemark.connect(store) as conn:
        accounts, before = total(conn)
    if accounts < 2:
        raise SQLError(f"{TABLE} has {accounts} account(s): run `tidemark workload init bank`")
    def op(c: tidemark.Connection, rng: random.Random) -> tuple[int, int]:
        try:
            return 1, transfer(c, rng, accounts)
        except RetryableError:
            return 1, 100

    stats = run_workers(store, duration, concurrency, seed, op)
    with tidemark.connect(store) as conn:
        n, after = total(conn)
    if (n, after) != (accounts, before):
        raise InvariantError(f"bank invariant broken: {accounts} accounts totalling {before} "
                             f"before, {n} totalling {after} after")
    return stats
