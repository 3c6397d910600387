"""`tidemark sql` through real processes: -e, stdin scripts, output formats, the default store,
errors and exit codes, and the interactive shell on a pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

_SCRIPT = Path(sys.executable).with_name("tidemark")
TIDEMARK = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "tidemark.cli.main"]


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["HOME"] = str(home)  # the shell's history file lives there
    env["COLUMNS"] = "200"
    env["TERM"] = "dumb"
    env.pop("NO_COLOR", None)
    return env


def run(tmp_path: Path, *args: str, stdin: str | None = None, store: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [*TIDEMARK, "sql"]
    if store:
        cmd += ["--store", str(tmp_path / "store")]
    return subprocess.run(cmd + list(args), input=stdin if stdin is not None else "",
                          capture_output=True, text=True, cwd=cwd or tmp_path,
                          env=_env(tmp_path), timeout=60)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


SETUP = (
    "CREATE TABLE items (id INT PRIMARY KEY, name STRING, price DECIMAL(6,2), "
    "added TIMESTAMP, seen TIMESTAMPTZ, doc JSONB, tag UUID, raw BYTES, ratio FLOAT, "
    "ok BOOL); "
    "INSERT INTO items VALUES (1, 'plain', 1.5, '2024-01-02 03:04:05', "
    "'2024-01-02 03:04:05.5+01', '{\"k\": [1, null]}', "
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', b'hi', 0.25, true), "
    "(2, 'a, \"quoted\" name', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
)
SELECT = "SELECT * FROM items ORDER BY id"


@pytest.fixture
def items(tmp_path: Path) -> Path:
    ok(run(tmp_path, "-e", SETUP))
    return tmp_path


def test_execute_several_statements_default_tsv(tmp_path: Path) -> None:
    out = ok(run(tmp_path,
                 "-e", "CREATE TABLE t (a INT PRIMARY KEY, b STRING); "
                       "INSERT INTO t VALUES (1, 'x'), (2, NULL)",
                 "-e", "SELECT a, b FROM t ORDER BY a; SELECT count(*) AS n FROM t",
                 "-e", "UPDATE t SET b = 'y' WHERE a = 2"))
    # Not a terminal: tsv; statements without rows print nothing.
    assert out == "a\tb\n1\tx\n2\tNULL\nn\n2\n"
    assert ok(run(tmp_path, "-e", "SELECT b FROM t ORDER BY a")) == "b\nx\ny\n"


def test_script_on_stdin(tmp_path: Path) -> None:
    script = """
        -- a comment
        CREATE TABLE t (a INT PRIMARY KEY,
                        b STRING NOT NULL DEFAULT 'dflt');
        INSERT INTO t (a) VALUES (1), (2);
        INSERT INTO t VALUES (3, 'three');
        SELECT a, b
          FROM t
         WHERE a >= 2
         ORDER BY a DESC;
    """
    assert ok(run(tmp_path, stdin=script)) == "a\tb\n3\tthree\n2\tdflt\n"
    assert ok(run(tmp_path, "--format", "csv", stdin="SELECT count(*) FROM t;")) == "count\n3\n"


def test_format_tsv(items: Path) -> None:
    assert ok(run(items, "--format", "tsv", "-e", SELECT)) == (
        "id\tname\tprice\tadded\tseen\tdoc\ttag\traw\tratio\tok\n"
        "1\tplain\t1.50\t2024-01-02 03:04:05\t2024-01-02 02:04:05.5+00\t{\"k\": [1, null]}\t"
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\t\\x6869\t0.25\ttrue\n"
        "2\ta, \"quoted\" name\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\n"
    )


def test_format_csv(items: Path) -> None:
    assert ok(run(items, "--format", "csv", "-e", SELECT)) == (
        "id,name,price,added,seen,doc,tag,raw,ratio,ok\n"
        "1,plain,1.50,2024-01-02 03:04:05,2024-01-02 02:04:05.5+00,\"{\"\"k\"\": [1, null]}\","
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,\\x6869,0.25,true\n"
        "2,\"a, \"\"quoted\"\" name\",NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL\n"
    )


def test_format_json(items: Path) -> None:
    out = ok(run(items, "--format", "json",
                 "-e", SELECT,
                 "-e", "UPDATE items SET ratio = 2 WHERE id = 2",
                 "-e", "INSERT INTO items (id, name) VALUES (3, 'c'), (4, 'd') RETURNING id",
                 "-e", "DELETE FROM items WHERE id > 2; CREATE TABLE other (a INT)"))
    lines = out.splitlines()
    assert lines == [
        '{"columns": ["id", "name", "price", "added", "seen", "doc", "tag", "raw", "ratio", '
        '"ok"], "rows": [[1, "plain", "1.50", "2024-01-02 03:04:05", '
        '"2024-01-02 02:04:05.5+00", {"k": [1, null]}, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", '
        '"\\\\x6869", 0.25, true], [2, "a, \\"quoted\\" name", null, null, null, null, null, '
        'null, null, null]]}',
        '{"tag": "UPDATE", "rows_affected": 1}',
        '{"columns": ["id"], "rows": [[3], [4]]}',
        '{"tag": "DELETE", "rows_affected": 2}',
        '{"tag": "CREATE TABLE", "rows_affected": 0}',
    ]
    first = json.loads(lines[0])
    assert first["rows"][0][5] == {"k": [1, None]}  # JSONB stays JSON
    assert first["rows"][0][2] == "1.50"  # DECIMAL is an exact string
    assert json.loads(lines[1]) == {"tag": "UPDATE", "rows_affected": 1}


def test_format_table(items: Path) -> None:
    out = ok(run(items, "--format", "table",
                 "-e", "SELECT id, name FROM items WHERE id = 1",
                 "-e", "SELECT id FROM items ORDER BY id",
                 "-e", "INSERT INTO items (id) VALUES (5), (6)",
                 "-e", "SELECT id FROM items WHERE id > 100",
                 "-e", "CREATE TABLE other (a INT)"))
    lines = [line.strip() for line in out.splitlines()]
    assert any("id" in line and "name" in line for line in lines)
    assert any("plain" in line for line in lines)
    assert lines.count("(1 row)") == 1
    assert lines.count("(2 rows)") == 1
    assert lines.count("(0 rows)") == 1
    assert "INSERT 2" in lines
    assert "CREATE TABLE" in lines


def test_default_store_is_tidemark_data_in_cwd(tmp_path: Path) -> None:
    ok(run(tmp_path, "-e", "CREATE TABLE here (a INT); INSERT INTO here VALUES (7)",
           store=False, cwd=tmp_path))
    assert (tmp_path / "tidemark-data").is_dir()
    assert ok(run(tmp_path, "-e", "SELECT a FROM here", store=False, cwd=tmp_path)) == "a\n7\n"
    # The same store named explicitly, from elsewhere.
    other = tmp_path / "elsewhere"
    other.mkdir()
    out = run(tmp_path, "--store", str(tmp_path / "tidemark-data"), "-e", "SELECT a FROM here",
              store=False, cwd=other)
    assert ok(out) == "a\n7\n"
    assert not (other / "tidemark-data").exists()


def test_first_error_stops_and_exits_nonzero(tmp_path: Path) -> None:
    proc = run(tmp_path,
               "-e", "CREATE TABLE t (a INT PRIMARY KEY); INSERT INTO t VALUES (1)",
               "-e", "SELECT a FROM t; INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)",
               "-e", "INSERT INTO t VALUES (3)")
    assert proc.returncode == 1
    assert proc.stdout == "a\n1\n"  # output up to the error
    assert proc.stderr == (
        'ERROR: duplicate key value violates unique constraint "t_pkey" (SQLSTATE 23505): '
        "Key (a)=(1) already exists.\nSQLSTATE: 23505\n")
    # Neither the rest of that -e nor the next -e ran.
    assert ok(run(tmp_path, "-e", "SELECT a FROM t ORDER BY a")) == "a\n1\n"


def test_error_on_stdin_stops_the_script(tmp_path: Path) -> None:
    proc = run(tmp_path, stdin="CREATE TABLE t (a INT PRIMARY KEY);\n"
                               "INSERT INTO t VALUES (1);\n"
                               "SELECT * FROM missing;\n"
                               "INSERT INTO t VALUES (2);\n")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == ['ERROR: relation "missing" does not exist',
                                        "SQLSTATE: 42P01"]
    assert ok(run(tmp_path, "-e", "SELECT a FROM t")) == "a\n1\n"


def test_error_prints_hint(tmp_path: Path) -> None:
    proc = run(tmp_path, "-e", "SELECT * FROM nodb.t")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        'ERROR: database "nodb" does not exist', "SQLSTATE: 3D000",
        "HINT: SHOW DATABASES lists them; CREATE DATABASE makes one"]


def test_syntax_error_reports_line_and_column_and_runs_nothing(tmp_path: Path) -> None:
    proc = run(tmp_path, stdin="CREATE TABLE t (a INT);\n"
                               "INSERT INTO t VALUES (1);\n"
                               "SELECT a\n"
                               "  FROM t WHERE a = = 1;\n")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        'ERROR: at or near "=" (line 4, column 20): syntax error: expected an expression',
        "SQLSTATE: 42601"]
    # The whole script is parsed first: the CREATE TABLE before the error did not run.
    proc = run(tmp_path, "-e", "SELECT * FROM t")
    assert proc.returncode == 1
    assert 'relation "t" does not exist' in proc.stderr


def test_transactions_across_statements(tmp_path: Path) -> None:
    ok(run(tmp_path, "-e", "CREATE TABLE t (a INT PRIMARY KEY)"))
    # A transaction spans -e arguments; one left open at exit is rolled back.
    ok(run(tmp_path, "-e", "BEGIN", "-e", "INSERT INTO t VALUES (1)", "-e", "COMMIT"))
    ok(run(tmp_path, "-e", "BEGIN; INSERT INTO t VALUES (2)"))
    # An error inside a transaction stops the script: nothing of the transaction is kept.
    proc = run(tmp_path, stdin="BEGIN;\nINSERT INTO t VALUES (3);\nINSERT INTO t VALUES (1);\n"
                               "COMMIT;\n")
    assert proc.returncode == 1
    assert "SQLSTATE: 23505" in proc.stderr
    assert ok(run(tmp_path, "-e", "SELECT a FROM t ORDER BY a")) == "a\n1\n"


def test_format_json_is_strict_json(tmp_path: Path) -> None:
    out = ok(run(tmp_path, "--format", "json", "-e",
                 "SELECT 'NaN'::FLOAT AS n, 'Infinity'::FLOAT AS i, '-Infinity'::FLOAT AS m, "
                 "1.5::FLOAT AS f"))

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    doc = json.loads(out, parse_constant=refuse)
    assert doc["columns"] == ["n", "i", "m", "f"]
    assert doc["rows"][0][3] == 1.5


def test_bad_arguments(tmp_path: Path) -> None:
    proc = run(tmp_path, "--format", "xml", "-e", "SELECT 1")
    assert proc.returncode == 2
    assert "xml" in proc.stderr
    (tmp_path / "afile").write_text("not a store")
    proc = run(tmp_path, "--store", str(tmp_path / "afile"), "-e", "SELECT 1", store=False)
    assert proc.returncode == 1
    assert "not a tidemark store" in proc.stderr
    assert "SQLSTATE: 58030" in proc.stderr


def test_database_option(tmp_path: Path) -> None:
    ok(run(tmp_path, "-e", "CREATE DATABASE shop; CREATE TABLE shop.t (a INT); "
                           "INSERT INTO shop.t VALUES (1)"))
    assert ok(run(tmp_path, "-d", "shop", "-e", "SELECT a FROM t")) == "a\n1\n"
    proc = run(tmp_path, "-e", "SELECT a FROM t")
    assert proc.returncode == 1
    assert "42P01" in proc.stderr


# -- the interactive shell ---------------------------------------------------------------


class Pty:
    """The CLI on a pseudo-terminal, read with a timeout."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]):
        pid, fd = pty.fork()
        if pid == 0:  # the child: become the CLI
            try:
                os.chdir(cwd)
                os.execve(args[0], args, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.buffer = b""

    def read_until(self, token: bytes, timeout: float = 15.0) -> bytes:
        deadline = time.monotonic() + timeout
        while token not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {token!r}; got {self.buffer!r}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                data = b""
            if not data:
                raise AssertionError(f"EOF waiting for {token!r}; got {self.buffer!r}")
            self.buffer += data
        head, _, rest = self.buffer.partition(token)
        self.buffer = rest
        return head + token

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:  # keep draining so the child never blocks on a full terminal
                if select.select([self.fd], [], [], 0.05)[0]:
                    self.buffer += os.read(self.fd, 4096)
            except OSError:
                time.sleep(0.05)
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        raise AssertionError("the shell did not exit")

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def test_interactive_shell(tmp_path: Path) -> None:
    shell = Pty([*TIDEMARK, "sql", "--store", str(tmp_path / "store")], tmp_path,
                _env(tmp_path))
    try:
        shell.read_until(b"statements end with ';'")
        shell.read_until(b"defaultdb> ")
        # A statement over several lines: the prompt changes until the ';'.
        shell.send("CREATE TABLE t (a INT PRIMARY KEY,\n")
        shell.read_until(b"-> ")
        shell.send("  b STRING);\n")
        shell.read_until(b"CREATE TABLE")
        shell.read_until(b"defaultdb> ")
        shell.send("INSERT INTO t VALUES (1, 'one'), (2, 'two');\n")
        shell.read_until(b"INSERT 2")
        shell.read_until(b"defaultdb> ")
        shell.send("SELECT b, a * 10\n")
        shell.read_until(b"-> ")
        shell.send("  AS tens\n")
        shell.read_until(b"-> ")
        shell.send("  FROM t WHERE a = 2;\n")
        result = shell.read_until(b"(1 row)")
        assert b"tens" in result
        assert b"two" in result
        assert b"20" in result
        shell.read_until(b"defaultdb> ")
        # A ';' inside a string literal spanning lines does not end the statement.
        shell.send("SELECT 'semi;\n")
        shell.read_until(b"-> ")
        shell.send("colon' AS s;\n")
        result = shell.read_until(b"(1 row)")
        assert b"semi;" in result
        shell.read_until(b"defaultdb> ")
        # An error is printed and the shell carries on.
        shell.send("SELECT * FROM missing;\n")
        shell.read_until(b'relation "missing" does not exist')
        shell.read_until(b"SQLSTATE: 42P01")
        shell.read_until(b"defaultdb> ")
        shell.send("SELECT count(*) FROM t;\n")
        shell.read_until(b"(1 row)")
        shell.read_until(b"defaultdb> ")
        shell.send("\x04")  # Ctrl-D
        assert shell.wait() == 0
    finally:
        shell.close()
    # History is kept in ~/.tidemark_history (HOME is tmp_path here).
    try:
        import readline  # noqa: F401
    except ImportError:
        pass
    else:
        assert "INSERT INTO t VALUES (1, 'one')" in (tmp_path / ".tidemark_history").read_text()
    # What the shell did is in the store.
    assert ok(run(tmp_path, "-e", "SELECT a, b FROM t ORDER BY a")) == "a\tb\n1\tone\n2\ttwo\n"
