"""Runs the sqllogictest-style scenarios in ``tests/sql/scenarios/*.test``: one pytest case per file.

Each file runs, top to bottom, against a fresh store in a temporary directory (one session
named ``default``; see ``connection``). Records are separated by blank lines; a line starting
with ``#`` between records is a comment.

Records
-------

``statement ok``
    followed by SQL (one or more lines, possibly several statements separated by ``;``).
    Every statement must succeed.

``statement count <N>``
    like ``statement ok``, and the last statement's ``rows_affected`` must be ``N``.

``statement error <SQLSTATE> [<regex>]``
    the SQL must fail with a ``TidemarkError`` whose ``.code`` is ``SQLSTATE`` and whose
    message (``.message``) matches ``regex`` (``re.search``, so anchor it if you mean it).

``query <N | col1,col2,...> [nosort | rowsort | contains]``
    followed by SQL, a line ``----``, and the expected rows: one line per row, values separated
    by a single tab and printed exactly as ``tidemark sql --format tsv`` prints them
    (``NULL``, ``true``, ``1.50``, ``\\x00ff``, ``2024-01-02 03:04:05+00`` ...). The header is
    either the number of columns or their exact names, comma-separated (names must not
    contain commas or spaces). ``nosort`` (the default) compares the rows in order;
    ``rowsort`` compares them as sorted lists of lines; ``contains`` only requires every
    expected line to be among the actual ones (for listings others may extend, such as
    ``SHOW ALL CLUSTER SETTINGS``). The expected block ends at a blank line (so an empty
    result is ``----`` followed by a blank line).

``let $name``
    followed by SQL returning rows: ``$name`` becomes the result printed as in a ``query``
    block (for one row and one column, just the value, e.g. a ``cluster_logical_timestamp()``).
    ``$name`` is then replaced in later SQL, error regexes and expected blocks
    (``AS OF SYSTEM TIME $t1``). Placeholders such as ``$1`` are left alone.
    ``$binary_version`` is predefined: this binary's cluster version.

``differ $a $b``
    the two variables must hold different text (e.g. fingerprints before and after a write).

``connection <name>``
    later records run in session ``name``, opened on first use on the same store (sessions
    keep their own transaction and current database).

``gc``
    one GC pass at "now + 2s" (with ``gc.ttlseconds = 1``, all history older than the newest
    version is collected and the GC threshold moves to the present).

``reopen``
    closes every session and the store and opens the store again (durability).

``sleep <seconds>``
    waits (keep it short).

Expected failures
-----------------

A line ``# xfail: <reason>`` directly before a record marks that record as expected to fail
(a known bug). The runner still runs every record; at the end, if every other record passed
and every marked record failed, the case is reported with ``pytest.xfail`` listing the
reasons; a marked record that passes fails the case (strict), so a fixed bug is noticed.

Setting ``TIDEMARK_SLT_REWRITE=1`` rewrites the expected blocks of failing unmarked ``query``
records with the actual output (review the diff before keeping it).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import tidemark
from tidemark.cli.sql import _text
from tidemark.cluster.versions import BINARY_VERSION
from tidemark.errors import TidemarkError

SCENARIOS = Path(__file__).parent / "scenarios"
FILES = sorted(SCENARIOS.glob("*.test"))
VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
HEADER = re.compile(r"^(#|statement (ok|error|count)\b|query \S+|let \$|gc$|reopen$|sleep \d)")
REWRITE = os.environ.get("TIDEMARK_SLT_REWRITE") == "1"


@dataclass
class Record:
    kind: str  # statement, query, let, differ, connection, gc, reopen, sleep
    args: list[str]
    line: int  # 1-based line of the header
    sql: str = ""
    expected: list[str] = field(default_factory=list)
    expected_span: tuple[int, int] | None = None  # 0-based [start, end) lines of the block
    xfail: str | None = None


class ScenarioFailure(AssertionError):
    pass


def parse_file(path: Path) -> list[Record]:
    lines = path.read_text().split("\n")
    records: list[Record] = []
    i = 0
    xfail: str | None = None
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            i += 1
            continue
        if stripped.startswith("#"):
            m = re.match(r"#\s*xfail:\s*(.+)", stripped)
            if m:
                xfail = m.group(1).strip()
            i += 1
            continue
        words = stripped.split()
        kind, args = words[0], words[1:]
        rec = Record(kind=kind, args=args, line=i + 1, xfail=xfail)
        xfail = None
        i += 1
        if kind in ("statement", "query", "let"):
            sql_lines = []
            while i < len(lines) and lines[i].strip() and lines[i].strip() != "----":
                if HEADER.match(lines[i]):
                    raise ScenarioFailure(f"{path.name}:{i + 1}: a record header or # comment "
                                          "inside SQL (missing blank line?)")
                sql_lines.append(lines[i])
                i += 1
            rec.sql = "\n".join(sql_lines)
            if not rec.sql:
                raise ScenarioFailure(f"{path.name}:{rec.line}: {kind} without SQL")
            if kind == "query":
                if i >= len(lines) or lines[i].strip() != "----":
                    raise ScenarioFailure(f"{path.name}:{rec.line}: query without ----")
                i += 1
                start = i
                while i < len(lines) and lines[i] != "":
                    rec.expected.append(lines[i])
                    i += 1
                rec.expected_span = (start, i)
        elif kind not in ("differ", "connection", "gc", "reopen", "sleep"):
            raise ScenarioFailure(f"{path.name}:{rec.line}: unknown record {kind!r}")
        records.append(rec)
    return records


def format_rows(result: tidemark.Result) -> list[str]:
    types = result.types or [None] * len(result.columns)
    text = "\n".join("\t".join(_text(v, t) for v, t in zip(row, types, strict=True))
                     for row in result.rows)
    return text.split("\n") if result.rows else []


class Runner:
    def __init__(self, path: Path, store: Path):
        self.path = path
        self.store = store
        self.conns: dict[str, tidemark.Connection] = {}
        self.current = "default"
        self.vars: dict[str, str] = {"binary_version": str(BINARY_VERSION)}

    @property
    def conn(self) -> tidemark.Connection:
        if self.current not in self.conns:
            self.conns[self.current] = tidemark.connect(self.store)
        return self.conns[self.current]

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()

    def subst(self, text: str) -> str:
        def repl(m: re.Match[str]) -> str:
            if m.group(1) not in self.vars:
                raise ScenarioFailure(f"unknown variable ${m.group(1)}")
            return self.vars[m.group(1)]
        return VAR.sub(repl, text)

    def run(self, rec: Record) -> list[str] | None:
        """Runs one record; raises ScenarioFailure. Returns the actual rows of a query."""
        if rec.kind == "connection":
            self.current = rec.args[0]
        elif rec.kind == "gc":
            node = self.conn.node
            node.run_gc(now=node.db.now() + 2 * 10**9)
        elif rec.kind == "reopen":
            self.close()
        elif rec.kind == "sleep":
            time.sleep(float(rec.args[0]))
        elif rec.kind == "differ":
            a, b = (self.subst(x) for x in rec.args)
            if a == b:
                raise ScenarioFailure(f"{rec.args[0]} and {rec.args[1]} are both {a!r}")
        elif rec.kind == "statement":
            self._statement(rec)
        elif rec.kind == "let":
            if len(rec.args) != 1 or not rec.args[0].startswith("$"):
                raise ScenarioFailure("let needs one $name")
            result = self._execute(rec)
            if not result.returns_rows:
                raise ScenarioFailure("let: the statement returned no rows")
            self.vars[rec.args[0][1:]] = "\n".join(format_rows(result))
        else:
            return self._query(rec)
        return None

    def _execute(self, rec: Record) -> tidemark.Result:
        sql = self.subst(rec.sql)
        try:
            return self.conn.execute(sql)
        except TidemarkError as exc:
            raise ScenarioFailure(
                f"unexpected error: {exc.message} (SQLSTATE {exc.code})\n  in: {sql}") from None

    def _statement(self, rec: Record) -> None:
        mode = rec.args[0] if rec.args else ""
        if mode == "ok":
            self._execute(rec)
        elif mode == "count":
            result = self._execute(rec)
            if result.rows_affected != int(rec.args[1]):
                raise ScenarioFailure(f"expected {rec.args[1]} rows affected, got "
                                      f"{result.rows_affected} ({result.tag})")
        elif mode == "error":
            code = rec.args[1]
            pattern = self.subst(" ".join(rec.args[2:]))
            sql = self.subst(rec.sql)
            try:
                result = self.conn.execute(sql)
            except TidemarkError as exc:
                if exc.code != code:
                    raise ScenarioFailure(f"expected SQLSTATE {code}, got {exc.code}: "
                                          f"{exc.message}") from None
                if pattern and not re.search(pattern, exc.message):
                    raise ScenarioFailure(f"error message {exc.message!r} does not match "
                                          f"{pattern!r}") from None
                return
            raise ScenarioFailure(f"expected error {code}, but it succeeded: {result.tag} "
                                  f"{result.rows[:5] if result.returns_rows else ''}")
        else:
            raise ScenarioFailure(f"unknown statement mode {mode!r}")

    def _query(self, rec: Record) -> list[str]:
        if not rec.args:
            raise ScenarioFailure("query needs a column count or column names")
        spec, sort = rec.args[0], (rec.args[1] if len(rec.args) > 1 else "nosort")
        if sort not in ("nosort", "rowsort", "contains"):
            raise ScenarioFailure(f"unknown sort mode {sort!r}")
        result = self._execute(rec)
        if not result.returns_rows:
            raise ScenarioFailure(f"query returned no rows result ({result.tag})")
        if spec.isdigit():
            if len(result.columns) != int(spec):
                raise ScenarioFailure(f"expected {spec} columns, got {result.columns}")
        elif result.columns != spec.split(","):
            raise ScenarioFailure(f"expected columns {spec.split(',')}, got {result.columns}")
        actual = format_rows(result)
        expected = self.subst("\n".join(rec.expected)).split("\n") if rec.expected else []
        if sort == "rowsort":
            ok = sorted(actual) == sorted(expected)
        elif sort == "contains":
            ok = all(line in actual for line in expected)
        else:
            ok = actual == expected
        if not ok:
            raise ScenarioFailure(
                "wrong result\n--- expected\n" + "\n".join(expected) +
                "\n--- actual\n" + "\n".join(actual))
        return actual


def _rewrite(path: Path, records: list[Record], actuals: dict[int, list[str]]) -> None:
    lines = path.read_text().split("\n")
    for rec in sorted(records, key=lambda r: -r.line):
        if rec.line in actuals and rec.expected_span is not None:
            start, end = rec.expected_span
            lines[start:end] = actuals[rec.line]
    path.write_text("\n".join(lines))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_scenario(path: Path, tmp_path: Path) -> None:
    records = parse_file(path)
    runner = Runner(path, tmp_path / "store")
    failures: list[str] = []
    xfailed: list[str] = []
    xpassed: list[str] = []
    actuals: dict[int, list[str]] = {}
    try:
        for rec in records:
            where = f"{path.name}:{rec.line}"
            try:
                runner.run(rec)
            except ScenarioFailure as exc:
                if REWRITE and rec.kind == "query" and rec.xfail is None \
                        and str(exc).startswith("wrong result"):
                    text = str(exc).split("\n--- actual\n", 1)[1]
                    actuals[rec.line] = text.split("\n") if text else []
                    continue
                if rec.xfail is not None:
                    xfailed.append(f"{where}: {rec.xfail}")
                    continue
                failures.append(f"{where}: {rec.kind} {' '.join(rec.args)}\n{rec.sql}\n{exc}")
                break  # later records depend on this one's effects
            if rec.xfail is not None:
                xpassed.append(f"{where}: {rec.xfail}")
    finally:
        runner.close()
    if REWRITE and actuals:
        _rewrite(path, records, actuals)
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
    if xpassed:
        pytest.fail("XPASS(strict), the bug looks fixed; remove the xfail marker:\n"
                    + "\n".join(xpassed), pytrace=False)
    if xfailed:
        pytest.xfail("; ".join(xfailed))
