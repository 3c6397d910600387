"""Tests for the SQL lexer and parser: statement forms, precedence, literals, errors, fuzzing."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidemark.errors import SQLSyntaxError
from tidemark.sql.ast import (
    Assignment,
    Backup,
    Begin,
    Between,
    BinaryOp,
    BoolLiteral,
    BytesLiteral,
    CancelJob,
    Case,
    CaseWhen,
    Cast,
    ColumnDef,
    ColumnRef,
    Commit,
    CreateDatabase,
    CreateIndex,
    CreateTable,
    DecimalLiteral,
    DefaultExpr,
    Delete,
    DropDatabase,
    DropIndex,
    DropTable,
    Expr,
    FuncCall,
    Import,
    IndexColumn,
    IndexDef,
    IndexName,
    InList,
    Insert,
    InSubquery,
    IntLiteral,
    IsBool,
    IsNull,
    Like,
    NullLiteral,
    OnConflict,
    Option,
    OrderItem,
    PauseJob,
    Placeholder,
    PrimaryKeyDef,
    ResetClusterSetting,
    Restore,
    ResumeJob,
    Rollback,
    Select,
    SelectItem,
    SetClusterSetting,
    ShowBackup,
    ShowBackups,
    ShowClusterSetting,
    ShowClusterSettings,
    ShowColumns,
    ShowCreateTable,
    ShowDatabases,
    ShowFingerprints,
    ShowIndexes,
    ShowJob,
    ShowJobs,
    ShowTables,
    Star,
    Statement,
    StringLiteral,
    TableName,
    TableRef,
    TypeRef,
    UnaryOp,
    Update,
    Upsert,
    Use,
    Values,
)
from tidemark.sql.lexer import TokenKind, tokenize
from tidemark.sql.parser import parse, parse_one

# Short constructors keep the expected trees readable.
c = ColumnRef
i = IntLiteral
s = StringLiteral
t = TableName
INT8 = TypeRef("INT8")


def b(op: str, left: Expr, right: Expr) -> BinaryOp:
    return BinaryOp(op, left, right)


def sel(*items: Expr | SelectItem, **kw: object) -> Select:
    return Select(tuple(x if isinstance(x, SelectItem) else SelectItem(x) for x in items),
                  **kw)  # type: ignore[arg-type]


def expr(sql: str) -> Expr:
    """The single expression of ``SELECT <sql>``."""
    stmt = parse_one("SELECT " + sql)
    assert isinstance(stmt, Select) and len(stmt.items) == 1
    return stmt.items[0].expr


def icol(name: str, desc: bool = False) -> IndexColumn:
    return IndexColumn(name, desc)


# --------------------------------------------------------------------------------------------
# Every statement form

STATEMENTS: list[tuple[str, Statement]] = [
    # Databases and session
    ("CREATE DATABASE d", CreateDatabase("d")),
    ("create database if not exists D", CreateDatabase("d", if_not_exists=True)),
    ('CREATE DATABASE "MixedCase"', CreateDatabase("MixedCase")),
    ("DROP DATABASE d", DropDatabase("d")),
    ("DROP DATABASE IF EXISTS d CASCADE", DropDatabase("d", if_exists=True, behavior="cascade")),
    ("DROP DATABASE d RESTRICT", DropDatabase("d", behavior="restrict")),
    ("USE d", Use("d")),
    ("SET database = d", Use("d")),
    ("SET DATABASE TO d", Use("d")),
    ("SET database = 'd'", Use("d")),
    # CREATE TABLE
    ("CREATE TABLE t (a INT)", CreateTable(t("t"), (ColumnDef("a", INT8),))),
    ("CREATE TABLE IF NOT EXISTS db.t (id SERIAL PRIMARY KEY, v STRING NOT NULL DEFAULT 'x',"
     " w INT NULL UNIQUE)",
     CreateTable(t("t", "db"), (
         ColumnDef("id", TypeRef("INT8", serial=True), primary_key=True),
         ColumnDef("v", TypeRef("STRING"), nullable=False, default=s("x")),
         ColumnDef("w", INT8, nullable=True, unique=True),
     ), if_not_exists=True)),
    ("CREATE TABLE t (a INT DEFAULT 1 NOT NULL, b DECIMAL(10,2) DEFAULT -1.50,"
     " c TIMESTAMPTZ DEFAULT now(), d INT8 DEFAULT unique_rowid(), e UUID DEFAULT"
     " gen_random_uuid(), f BOOL DEFAULT NULL)",
     CreateTable(t("t"), (
         ColumnDef("a", INT8, nullable=False, default=i(1)),
         ColumnDef("b", TypeRef("DECIMAL", (10, 2)), default=DecimalLiteral("-1.50")),
         ColumnDef("c", TypeRef("TIMESTAMPTZ"), default=FuncCall("now")),
         ColumnDef("d", INT8, default=FuncCall("unique_rowid")),
         ColumnDef("e", TypeRef("UUID"), default=FuncCall("gen_random_uuid")),
         ColumnDef("f", TypeRef("BOOL"), default=NullLiteral()),
     ))),
    ("CREATE TABLE t (a INT, b INT, c STRING, PRIMARY KEY (a, b DESC), UNIQUE (c),"
     " CONSTRAINT uc UNIQUE (b, c), CONSTRAINT pk2 PRIMARY KEY (c ASC),"
     " INDEX ib (b) STORING (c), INDEX (c), UNIQUE INDEX uic (c DESC) STORING (a),"
     " UNIQUE INDEX (b))",
     CreateTable(t("t"), (
         ColumnDef("a", INT8), ColumnDef("b", INT8), ColumnDef("c", TypeRef("STRING")),
         PrimaryKeyDef((icol("a"), icol("b", True))),
         IndexDef((icol("c"),), unique=True),
         IndexDef((icol("b"), icol("c")), "uc", unique=True),
         PrimaryKeyDef((icol("c"),), "pk2"),
         IndexDef((icol("b"),), "ib", storing=("c",)),
         IndexDef((icol("c"),)),
         IndexDef((icol("c", True),), "uic", unique=True, storing=("a",)),
         IndexDef((icol("b"),), unique=True),
     ))),
    ("CREATE TABLE t ()", CreateTable(t("t"), ())),
    ('CREATE TABLE "T" ("Key" INT, key INT, value STRING)',
     CreateTable(t("T"), (ColumnDef("Key", INT8), ColumnDef("key", INT8),
                          ColumnDef("value", TypeRef("STRING"))))),
    ("CREATE TABLE db.public.t (a INT)", CreateTable(t("t", "db"), (ColumnDef("a", INT8),))),
    # DROP TABLE
    ("DROP TABLE t", DropTable((t("t"),))),
    ("DROP TABLE IF EXISTS t, db.u CASCADE",
     DropTable((t("t"), t("u", "db")), if_exists=True, behavior="cascade")),
    # CREATE / DROP INDEX
    ("CREATE INDEX i ON t (a)", CreateIndex(t("t"), (icol("a"),), "i")),
    ("CREATE INDEX ON t (a DESC, b ASC)", CreateIndex(t("t"), (icol("a", True), icol("b")))),
    ("CREATE UNIQUE INDEX IF NOT EXISTS i ON db.t (a) STORING (b, c)",
     CreateIndex(t("t", "db"), (icol("a"),), "i", unique=True, storing=("b", "c"),
                 if_not_exists=True)),
    ("CREATE INDEX i ON t (a) INCLUDE (b)",
     CreateIndex(t("t"), (icol("a"),), "i", storing=("b",))),
    ("CREATE INDEX i ON t (a) COVERING (b)",
     CreateIndex(t("t"), (icol("a"),), "i", storing=("b",))),
    ("DROP INDEX t@i", DropIndex((IndexName("i", t("t")),))),
    ("DROP INDEX db.t@i", DropIndex((IndexName("i", t("t", "db")),))),
    ("DROP INDEX t.i", DropIndex((IndexName("i", t("t")),))),
    ("DROP INDEX i", DropIndex((IndexName("i"),))),
    ("DROP INDEX IF EXISTS t@i, j CASCADE",
     DropIndex((IndexName("i", t("t")), IndexName("j")), if_exists=True, behavior="cascade")),
    # INSERT / UPSERT
    ("INSERT INTO t VALUES (1, 'a')", Insert(t("t"), (), Values(((i(1), s("a")),)))),
    ("INSERT INTO db.t (a, b) VALUES (1, DEFAULT), ($1, $2)",
     Insert(t("t", "db"), ("a", "b"),
            Values(((i(1), DefaultExpr()), (Placeholder(1), Placeholder(2)))))),
    ("INSERT INTO t (a) SELECT x FROM u WHERE x > 1",
     Insert(t("t"), ("a",), sel(c("x"), from_=TableRef(t("u")), where=b(">", c("x"), i(1))))),
    ("INSERT INTO t DEFAULT VALUES", Insert(t("t"), (), None)),
    ("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING",
     Insert(t("t"), (), Values(((i(1),),)), OnConflict((), do_nothing=True))),
    ("INSERT INTO t VALUES (1) ON CONFLICT (a) DO NOTHING",
     Insert(t("t"), (), Values(((i(1),),)), OnConflict(("a",), do_nothing=True))),
    ("INSERT INTO t (a, b) VALUES (1, 2) ON CONFLICT (a) DO UPDATE SET b = excluded.b + t.b,"
     " c = DEFAULT WHERE t.b < 10 RETURNING a, b AS bee",
     Insert(t("t"), ("a", "b"), Values(((i(1), i(2)),)),
            OnConflict(("a",), False, (
                Assignment("b", b("+", c("b", "excluded"), c("b", "t"))),
                Assignment("c", DefaultExpr())), b("<", c("b", "t"), i(10))),
            (SelectItem(c("a")), SelectItem(c("b"), "bee")))),
    ("INSERT INTO t VALUES (1) RETURNING *",
     Insert(t("t"), (), Values(((i(1),),)), returning=(SelectItem(Star()),))),
    ("INSERT INTO t VALUES (1) RETURNING NOTHING", Insert(t("t"), (), Values(((i(1),),)))),
    ("UPSERT INTO t (a, b) VALUES (1, 2), (3, 4)",
     Upsert(t("t"), ("a", "b"), Values(((i(1), i(2)), (i(3), i(4)))))),
    ("UPSERT INTO t SELECT * FROM u RETURNING a",
     Upsert(t("t"), (), sel(Star(), from_=TableRef(t("u"))), returning=(SelectItem(c("a")),))),
    # UPDATE / DELETE
    ("UPDATE t SET a = 1", Update(t("t"), (Assignment("a", i(1)),))),
    ("UPDATE db.t SET a = a + 1, b = DEFAULT WHERE id = $1 RETURNING id, a",
     Update(t("t", "db"), (Assignment("a", b("+", c("a"), i(1))), Assignment("b", DefaultExpr())),
            b("=", c("id"), Placeholder(1)), (SelectItem(c("id")), SelectItem(c("a"))))),
    ("DELETE FROM t", Delete(t("t"))),
    ("DELETE FROM t WHERE a IS NULL RETURNING *",
     Delete(t("t"), IsNull(c("a")), (SelectItem(Star()),))),
    # SELECT
    ("SELECT 1", sel(i(1))),
    ("SELECT * FROM t", sel(Star(), from_=TableRef(t("t")))),
    ("SELECT t.*, a AS x, b y, \"Z\" FROM db.t",
     sel(Star("t"), SelectItem(c("a"), "x"), SelectItem(c("b"), "y"), c("Z"),
         from_=TableRef(t("t", "db")))),
    ("SELECT DISTINCT a FROM t", sel(c("a"), distinct=True, from_=TableRef(t("t")))),
    ("SELECT ALL a FROM t", sel(c("a"), from_=TableRef(t("t")))),
    ("SELECT a FROM t@idx", sel(c("a"), from_=TableRef(t("t"), index="idx"))),
    ("SELECT a FROM t@primary AS x", sel(c("a"), from_=TableRef(t("t"), "x", "primary"))),
    ("SELECT a FROM t@{FORCE_INDEX=idx} x", sel(c("a"), from_=TableRef(t("t"), "x", "idx"))),
    ("SELECT a, count(*) FROM t WHERE a > 0 GROUP BY a HAVING count(*) > 1"
     " ORDER BY a DESC NULLS LAST, 2 LIMIT 10 OFFSET 5",
     sel(c("a"), FuncCall("count", star=True), from_=TableRef(t("t")),
         where=b(">", c("a"), i(0)), group_by=(c("a"),),
         having=b(">", FuncCall("count", star=True), i(1)),
         order_by=(OrderItem(c("a"), True, False), OrderItem(i(2))),
         limit=i(10), offset=i(5))),
    ("SELECT a FROM t ORDER BY a ASC NULLS FIRST, b",
     sel(c("a"), from_=TableRef(t("t")),
         order_by=(OrderItem(c("a"), False, True), OrderItem(c("b"))))),
    ("SELECT a FROM t OFFSET $2 LIMIT $1",
     sel(c("a"), from_=TableRef(t("t")), limit=Placeholder(1), offset=Placeholder(2))),
    ("SELECT a FROM t LIMIT ALL", sel(c("a"), from_=TableRef(t("t")))),
    ("SELECT a FROM t AS OF SYSTEM TIME '-10s'",
     sel(c("a"), from_=TableRef(t("t")), as_of=s("-10s"))),
    ("SELECT a FROM t AS x AS OF SYSTEM TIME '-10s' WHERE a = 1",
     sel(c("a"), from_=TableRef(t("t"), "x"), as_of=s("-10s"), where=b("=", c("a"), i(1)))),
    ("SELECT a FROM t WHERE a = 1 LIMIT 1 AS OF SYSTEM TIME 1700000000000000000.0000000001",
     sel(c("a"), from_=TableRef(t("t")), where=b("=", c("a"), i(1)), limit=i(1),
         as_of=DecimalLiteral("1700000000000000000.0000000001"))),
    ("SELECT a FROM t AS OF SYSTEM TIME follower_read_timestamp()",
     sel(c("a"), from_=TableRef(t("t")), as_of=FuncCall("follower_read_timestamp"))),
    ("SELECT now(), cluster_logical_timestamp()",
     sel(FuncCall("now"), FuncCall("cluster_logical_timestamp"))),
    # Transactions
    ("BEGIN", Begin()),
    ("BEGIN TRANSACTION", Begin()),
    ("BEGIN AS OF SYSTEM TIME '-5s'", Begin(s("-5s"))),
    ("BEGIN TRANSACTION AS OF SYSTEM TIME $1", Begin(Placeholder(1))),
    ("START TRANSACTION", Begin()),
    ("COMMIT", Commit()),
    ("COMMIT TRANSACTION", Commit()),
    ("END", Commit()),
    ("ROLLBACK", Rollback()),
    ("ROLLBACK TRANSACTION", Rollback()),
    # SHOW
    ("SHOW DATABASES", ShowDatabases()),
    ("SHOW TABLES", ShowTables()),
    ("SHOW TABLES FROM d", ShowTables("d")),
    ("SHOW INDEXES FROM t", ShowIndexes(t("t"))),
    ("SHOW INDEX FROM db.t", ShowIndexes(t("t", "db"))),
    ("SHOW COLUMNS FROM t", ShowColumns(t("t"))),
    ("SHOW CREATE TABLE t", ShowCreateTable(t("t"))),
    ("SHOW CREATE db.t", ShowCreateTable(t("t", "db"))),
    # Cluster settings
    ("SET CLUSTER SETTING gc.ttlseconds = 600", SetClusterSetting("gc.ttlseconds", i(600))),
    ("SET CLUSTER SETTING version = '23.1'", SetClusterSetting("version", s("23.1"))),
    ("SET CLUSTER SETTING kv.rangefeed.enabled TO true",
     SetClusterSetting("kv.rangefeed.enabled", BoolLiteral(True))),
    ("SET CLUSTER SETTING gc.ttlseconds = DEFAULT",
     SetClusterSetting("gc.ttlseconds", DefaultExpr())),
    ("RESET CLUSTER SETTING gc.ttlseconds", ResetClusterSetting("gc.ttlseconds")),
    ("SHOW CLUSTER SETTING gc.ttlseconds", ShowClusterSetting("gc.ttlseconds")),
    ("SHOW CLUSTER SETTINGS", ShowClusterSettings(all=False)),
    ("SHOW PUBLIC CLUSTER SETTINGS", ShowClusterSettings(all=False)),
    ("SHOW ALL CLUSTER SETTINGS", ShowClusterSettings(all=True)),
    # Fingerprints
    ("SHOW FINGERPRINTS FROM TABLE t", ShowFingerprints(t("t"))),
    ("SHOW EXPERIMENTAL_FINGERPRINTS FROM TABLE db.t AS OF SYSTEM TIME '-1s'",
     ShowFingerprints(t("t", "db"), s("-1s"), experimental=True)),
    # Jobs
    ("SHOW JOBS", ShowJobs()),
    ("SHOW JOB 12345", ShowJob(i(12345))),
    ("SHOW JOB $1", ShowJob(Placeholder(1))),
    ("SHOW JOB WHEN COMPLETE 12345", ShowJob(i(12345), when_complete=True)),
    ("PAUSE JOB 1", PauseJob(i(1))),
    ("RESUME JOB ?", ResumeJob(Placeholder(1))),
    ("CANCEL JOB 3", CancelJob(i(3))),
    # IMPORT
    ("IMPORT INTO t CSV DATA ('nodelocal://1/a.csv')",
     Import(t("t"), (), (s("nodelocal://1/a.csv"),))),
    ("IMPORT INTO db.t (a, b) CSV DATA ('s3://b/1.csv', $1) WITH delimiter = '|',"
     " skip = '1', nullif = '', detached",
     Import(t("t", "db"), ("a", "b"), (s("s3://b/1.csv"), Placeholder(1)), "csv", (
         Option("delimiter", s("|")), Option("skip", s("1")), Option("nullif", s("")),
         Option("detached")))),
    # BACKUP
    ("BACKUP INTO 's3://bucket/coll'", Backup(s("s3://bucket/coll"))),
    ("BACKUP TABLE t, db.u INTO 'c'", Backup(s("c"), tables=(t("t"), t("u", "db")))),
    ("BACKUP t INTO 'c'", Backup(s("c"), tables=(t("t"),))),
    ("BACKUP DATABASE d1, d2 INTO LATEST IN 'c'",
     Backup(s("c"), databases=("d1", "d2"), latest=True)),
    ("BACKUP INTO '2024/01/01-120000.00' IN 'c' AS OF SYSTEM TIME '-10s'"
     " WITH revision_history, encryption_passphrase = 'pw', detached",
     Backup(s("c"), subdir=s("2024/01/01-120000.00"), as_of=s("-10s"), options=(
         Option("revision_history"), Option("encryption_passphrase", s("pw")),
         Option("detached")))),
    ("BACKUP INTO $1 WITH OPTIONS (revision_history = true)",
     Backup(Placeholder(1), options=(Option("revision_history", BoolLiteral(True)),))),
    # RESTORE
    ("RESTORE FROM LATEST IN 'c'", Restore(s("c"), latest=True)),
    ("RESTORE TABLE db.t FROM '2024/01' IN 'c' AS OF SYSTEM TIME '2024-01-01 00:00:00'"
     " WITH into_db = 'other'",
     Restore(s("c"), tables=(t("t", "db"),), subdir=s("2024/01"),
             as_of=s("2024-01-01 00:00:00"), options=(Option("into_db", s("other")),))),
    ("RESTORE DATABASE d FROM LATEST IN $1 WITH new_db_name = 'd2',"
     " encryption_passphrase = 'pw', detached",
     Restore(Placeholder(1), databases=("d",), latest=True, options=(
         Option("new_db_name", s("d2")), Option("encryption_passphrase", s("pw")),
         Option("detached")))),
    # SHOW BACKUP(S)
    ("SHOW BACKUPS IN 'c'", ShowBackups(s("c"))),
    ("SHOW BACKUP LATEST IN 'c'", ShowBackup(s("c"), latest=True)),
    ("SHOW BACKUP FROM '2024/01' IN 'c' WITH check_files, encryption_passphrase = 'pw'",
     ShowBackup(s("c"), s("2024/01"), options=(
         Option("check_files"), Option("encryption_passphrase", s("pw"))))),
]


@pytest.mark.parametrize(("sql", "expected"), STATEMENTS, ids=[sql for sql, _ in STATEMENTS])
def test_statement(sql: str, expected: Statement) -> None:
    stmt = parse_one(sql)
    assert stmt == expected
    assert type(stmt) is type(expected)
    assert stmt.text == sql
    assert stmt.pos == (1, 1)


def test_upsert_is_an_insert() -> None:
    stmt = parse_one("UPSERT INTO t VALUES (1)")
    assert isinstance(stmt, Insert) and isinstance(stmt, Upsert)
    assert stmt != Insert(t("t"), (), Values(((i(1),),)))


def test_create_table_helpers() -> None:
    stmt = parse_one("CREATE TABLE t (a INT, PRIMARY KEY (a), b INT)")
    assert isinstance(stmt, CreateTable)
    assert [col.name for col in stmt.columns] == ["a", "b"]
    assert stmt.constraints == (PrimaryKeyDef((icol("a"),)),)


def test_subquery_in() -> None:
    stmt = parse_one("SELECT a FROM t WHERE b NOT IN (SELECT c FROM u WHERE d = $1)")
    assert isinstance(stmt, Select)
    assert stmt.where == InSubquery(
        c("b"), sel(c("c"), from_=TableRef(t("u")), where=b("=", c("d"), Placeholder(1))),
        negated=True)
    assert isinstance(stmt.where, InSubquery)
    assert stmt.where.query.text == "SELECT c FROM u WHERE d = $1"


def test_nodes_are_hashable_and_frozen() -> None:
    e = expr("a + 1")
    assert hash(e) == hash(b("+", c("a"), i(1)))
    with pytest.raises(AttributeError):
        e.op = "-"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Scripts, source text and positions


def test_script_splits_and_skips_empty_statements() -> None:
    stmts = parse(";; SELECT 1;\n\n  INSERT INTO t VALUES (1) ; ;\nCOMMIT;")
    assert stmts == [sel(i(1)), Insert(t("t"), (), Values(((i(1),),))), Commit()]
    assert [st_.text for st_ in stmts] == ["SELECT 1", "INSERT INTO t VALUES (1)", "COMMIT"]
    assert [st_.pos for st_ in stmts] == [(1, 4), (3, 3), (4, 1)]


def test_empty_script() -> None:
    assert parse("") == []
    assert parse("  ; -- nothing\n /* here */ ;") == []


def test_text_keeps_comments_inside_statement() -> None:
    sql = "BACKUP INTO 'c' /* nightly */ WITH detached"
    assert parse_one(sql + " -- trailing").text == sql


def test_parse_one_rejects_zero_or_several_statements() -> None:
    with pytest.raises(SQLSyntaxError) as err:
        parse_one("  ")
    assert err.value.token == "EOF"
    with pytest.raises(SQLSyntaxError) as err:
        parse_one("SELECT 1;\n  SELECT 2")
    assert (err.value.line, err.value.column, err.value.token) == (2, 3, "SELECT")
    assert parse_one("SELECT 1;") == sel(i(1))


def test_question_mark_placeholders_are_numbered_across_the_script() -> None:
    stmts = parse("SELECT ?, ?; UPDATE t SET a = ? WHERE b = ?")
    assert stmts[0] == sel(Placeholder(1), Placeholder(2))
    assert stmts[1] == Update(t("t"), (Assignment("a", Placeholder(3)),),
                              b("=", c("b"), Placeholder(4)))


def test_dollar_placeholders_keep_their_numbers() -> None:
    assert parse_one("SELECT $2, $1, $2") == sel(Placeholder(2), Placeholder(1), Placeholder(2))


# --------------------------------------------------------------------------------------------
# Expressions and precedence

EXPRESSIONS: list[tuple[str, Expr]] = [
    ("a OR b AND c", b("OR", c("a"), b("AND", c("b"), c("c")))),
    ("a AND b OR c", b("OR", b("AND", c("a"), c("b")), c("c"))),
    ("NOT a AND b", b("AND", UnaryOp("NOT", c("a")), c("b"))),
    ("NOT a = b", UnaryOp("NOT", b("=", c("a"), c("b")))),
    ("NOT NOT a", UnaryOp("NOT", UnaryOp("NOT", c("a")))),
    ("a = b OR c <> d", b("OR", b("=", c("a"), c("b")), b("<>", c("c"), c("d")))),
    ("a != b", b("<>", c("a"), c("b"))),
    ("a < b AND a <= b AND a > b AND a >= b",
     b("AND", b("AND", b("AND", b("<", c("a"), c("b")), b("<=", c("a"), c("b"))),
                b(">", c("a"), c("b"))), b(">=", c("a"), c("b")))),
    ("1 + 2 * 3", b("+", i(1), b("*", i(2), i(3)))),
    ("(1 + 2) * 3", b("*", b("+", i(1), i(2)), i(3))),
    ("1 - 2 - 3", b("-", b("-", i(1), i(2)), i(3))),
    ("8 / 4 % 3", b("%", b("/", i(8), i(4)), i(3))),
    ("a || b + 1", b("||", c("a"), b("+", c("b"), i(1)))),
    ("a || b = c", b("=", b("||", c("a"), c("b")), c("c"))),
    ("a + 1 = b * 2", b("=", b("+", c("a"), i(1)), b("*", c("b"), i(2)))),
    ("-a * b", b("*", UnaryOp("-", c("a")), c("b"))),
    ("-a::INT", UnaryOp("-", Cast(c("a"), INT8))),
    ("- 5", i(-5)),
    ("-(5)", i(-5)),
    ("- - 5", i(5)),
    ("+5", i(5)),
    ("-1.5", DecimalLiteral("-1.5")),
    ("-9223372036854775808", i(-9223372036854775808)),
    ("a::STRING || 'x'", b("||", Cast(c("a"), TypeRef("STRING")), s("x"))),
    ("a::DECIMAL(10, 2)::STRING",
     Cast(Cast(c("a"), TypeRef("DECIMAL", (10, 2))), TypeRef("STRING"))),
    ("CAST(a + 1 AS FLOAT)", Cast(b("+", c("a"), i(1)), TypeRef("FLOAT8"))),
    ("a IS NULL", IsNull(c("a"))),
    ("a IS NOT NULL", IsNull(c("a"), negated=True)),
    ("a IS TRUE", IsBool(c("a"), True)),
    ("a IS NOT FALSE", IsBool(c("a"), False, negated=True)),
    ("a = 1 IS TRUE", IsBool(b("=", c("a"), i(1)), True)),
    ("a + 1 IS NULL AND b", b("AND", IsNull(b("+", c("a"), i(1))), c("b"))),
    ("a IN (1, 2, 3)", InList(c("a"), (i(1), i(2), i(3)))),
    ("a NOT IN ('x')", InList(c("a"), (s("x"),), negated=True)),
    ("NOT a IN (1)", UnaryOp("NOT", InList(c("a"), (i(1),)))),
    ("a BETWEEN 1 AND 2", Between(c("a"), i(1), i(2))),
    ("a NOT BETWEEN b + 1 AND c * 2 AND d",
     b("AND", Between(c("a"), b("+", c("b"), i(1)), b("*", c("c"), i(2)), negated=True),
       c("d"))),
    ("a LIKE 'x%'", Like(c("a"), s("x%"))),
    ("a NOT LIKE 'x%' OR b", b("OR", Like(c("a"), s("x%"), negated=True), c("b"))),
    ("a ILIKE 'X%'", Like(c("a"), s("X%"), case_insensitive=True)),
    ("a NOT ILIKE 'X%'", Like(c("a"), s("X%"), negated=True, case_insensitive=True)),
    ("a || 'b' LIKE 'ab'", Like(b("||", c("a"), s("b")), s("ab"))),
    ("CASE WHEN a > 1 THEN 'big' WHEN a IS NULL THEN NULL ELSE 'small' END",
     Case(None, (CaseWhen(b(">", c("a"), i(1)), s("big")),
                 CaseWhen(IsNull(c("a")), NullLiteral())), s("small"))),
    ("CASE a WHEN 1 THEN 2 END", Case(c("a"), (CaseWhen(i(1), i(2)),))),
    ("count(*)", FuncCall("count", star=True)),
    ("count(DISTINCT a)", FuncCall("count", (c("a"),), distinct=True)),
    ("sum(a) + min(a) + max(a) + avg(a)",
     b("+", b("+", b("+", FuncCall("sum", (c("a"),)), FuncCall("min", (c("a"),))),
                 FuncCall("max", (c("a"),))), FuncCall("avg", (c("a"),)))),
    ("COALESCE(a, b, 0)", FuncCall("coalesce", (c("a"), c("b"), i(0)))),
    ("My_Func(1, 'a')", FuncCall("my_func", (i(1), s("a")))),
    ("pg_catalog.now()", FuncCall("pg_catalog.now")),
    ("left('abc', 1)", FuncCall("left", (s("abc"), i(1)))),
    ("current_timestamp", FuncCall("current_timestamp")),
    ("current_date()", FuncCall("current_date")),
    ("t.c", c("c", "t")),
    ("db.t.c", c("c", "t", "db")),
    ('"Weird Name"', c("Weird Name")),
    ('"T"."C"', c("C", "T")),
    ("EXCLUDED.a", c("a", "excluded")),
    ("TIMESTAMP '2024-01-01 00:00:00'",
     Cast(s("2024-01-01 00:00:00"), TypeRef("TIMESTAMP"))),
    ("DATE '2024-01-01'", Cast(s("2024-01-01"), TypeRef("DATE"))),
    ("INTERVAL '1h'", Cast(s("1h"), TypeRef("INTERVAL"))),
    ("now() - INTERVAL '1h'",
     b("-", FuncCall("now"), Cast(s("1h"), TypeRef("INTERVAL")))),
    ("((((a))))", c("a")),
]


@pytest.mark.parametrize(("sql", "expected"), EXPRESSIONS, ids=[sql for sql, _ in EXPRESSIONS])
def test_expression(sql: str, expected: Expr) -> None:
    assert expr(sql) == expected


def test_keyword_case_insensitivity() -> None:
    assert parse_one("sElEcT A fRoM T wHeRe A iS nOt NuLl") == sel(
        c("a"), from_=TableRef(t("t")), where=IsNull(c("a"), negated=True))


# --------------------------------------------------------------------------------------------
# Literals

LITERALS: list[tuple[str, Expr]] = [
    ("0", i(0)),
    ("42", i(42)),
    ("9223372036854775807", i(9223372036854775807)),
    ("123456789012345678901234567890", i(123456789012345678901234567890)),
    ("0x1F", i(31)),
    ("0XfF", i(255)),
    ("1.5", DecimalLiteral("1.5")),
    ("1.", DecimalLiteral("1.")),
    (".5", DecimalLiteral(".5")),
    ("1e10", DecimalLiteral("1e10")),
    ("1.5E-3", DecimalLiteral("1.5E-3")),
    ("0.1000000000000000000000000001", DecimalLiteral("0.1000000000000000000000000001")),
    ("'hello'", s("hello")),
    ("''", s("")),
    ("'it''s'", s("it's")),
    ("'line1\nline2'", s("line1\nline2")),
    ("'back\\slash'", s("back\\slash")),
    ("'ünïcødé ✓'", s("ünïcødé ✓")),
    ("e'a\\nb\\tc'", s("a\nb\tc")),
    ("E'\\\\ \\' '' \\x41 \\101 \\u00e9 \\U0001F600 \\q'", s("\\ ' ' A A é 😀 q")),
    ("e'\\xc3\\xa9'", s("é")),
    ("b'abc'", BytesLiteral(b"abc")),
    ("B'\\x00\\xff'", BytesLiteral(b"\x00\xff")),
    ("b'é'", BytesLiteral("é".encode())),
    ("x'DEADbeef'", BytesLiteral(b"\xde\xad\xbe\xef")),
    ("X''", BytesLiteral(b"")),
    ("TRUE", BoolLiteral(True)),
    ("false", BoolLiteral(False)),
    ("NULL", NullLiteral()),
    ("$1", Placeholder(1)),
    ("$65535", Placeholder(65535)),
    ("?", Placeholder(1)),
]


@pytest.mark.parametrize(("sql", "expected"), LITERALS, ids=[sql for sql, _ in LITERALS])
def test_literal(sql: str, expected: Expr) -> None:
    assert expr(sql) == expected


def test_decimal_literal_is_exact() -> None:
    lit = expr("0.1000000000000000000000000001")
    assert isinstance(lit, DecimalLiteral)
    assert lit.value == Decimal("0.1000000000000000000000000001")


def test_comments() -> None:
    sql = "SELECT /* a /* nested */ comment */ 1 -- to end of line\n + 2 -- last"
    assert parse_one(sql) == sel(b("+", i(1), i(2)))
    assert parse_one("SELECT 1 --") == sel(i(1))
    assert parse_one("SELECT 1 - -1") == sel(b("-", i(1), i(-1)))


def test_identifiers_fold_unless_quoted() -> None:
    assert expr('FooBar + "FooBar" + "a""b"') == b("+", b("+", c("foobar"), c("FooBar")),
                                                    c('a"b'))
    assert expr("x$1_y") == c("x$1_y")
    assert expr('"select"') == c("select")


def test_lexer_tokens() -> None:
    toks = tokenize("a::INT8 <> b != c <= d || e @ f")
    assert [tok.value for tok in toks if tok.kind is TokenKind.OP] == [
        "::", "<>", "<>", "<=", "||", "@"]
    assert toks[-1].kind is TokenKind.EOF and toks[-1].text == "EOF"
    first = tokenize("\n  foo")[0]
    assert (first.line, first.column, first.start, first.end) == (2, 3, 3, 6)


# --------------------------------------------------------------------------------------------
# Types

TYPES: list[tuple[str, TypeRef]] = [
    ("INT", INT8), ("INTEGER", INT8), ("INT8", INT8), ("BIGINT", INT8), ("INT64", INT8),
    ("INT4", TypeRef("INT4")), ("INT2", TypeRef("INT2")), ("SMALLINT", TypeRef("INT2")),
    ("SERIAL", TypeRef("INT8", serial=True)), ("BIGSERIAL", TypeRef("INT8", serial=True)),
    ("FLOAT", TypeRef("FLOAT8")), ("FLOAT8", TypeRef("FLOAT8")), ("REAL", TypeRef("FLOAT4")),
    ("FLOAT4", TypeRef("FLOAT4")), ("DOUBLE PRECISION", TypeRef("FLOAT8")),
    ("FLOAT(24)", TypeRef("FLOAT4")), ("FLOAT(25)", TypeRef("FLOAT8")),
    ("DECIMAL", TypeRef("DECIMAL")), ("DECIMAL(10)", TypeRef("DECIMAL", (10,))),
    ("DECIMAL(10,2)", TypeRef("DECIMAL", (10, 2))), ("NUMERIC(5, 5)", TypeRef("DECIMAL", (5, 5))),
    ("STRING", TypeRef("STRING")), ("TEXT", TypeRef("STRING")),
    ("STRING(10)", TypeRef("STRING", (10,))), ("VARCHAR(10)", TypeRef("STRING", (10,))),
    ("VARCHAR", TypeRef("STRING")), ("CHARACTER VARYING(3)", TypeRef("STRING", (3,))),
    ("CHAR(3)", TypeRef("CHAR", (3,))), ("CHAR", TypeRef("CHAR", (1,))),
    ("CHARACTER", TypeRef("CHAR", (1,))),
    ("BYTES", TypeRef("BYTES")), ("BYTEA", TypeRef("BYTES")),
    ("BOOL", TypeRef("BOOL")), ("BOOLEAN", TypeRef("BOOL")),
    ("TIMESTAMP", TypeRef("TIMESTAMP")), ("TIMESTAMP(3)", TypeRef("TIMESTAMP", (3,))),
    ("TIMESTAMPTZ", TypeRef("TIMESTAMPTZ")),
    ("TIMESTAMP WITH TIME ZONE", TypeRef("TIMESTAMPTZ")),
    ("TIMESTAMP WITHOUT TIME ZONE", TypeRef("TIMESTAMP")),
    ("DATE", TypeRef("DATE")), ("UUID", TypeRef("UUID")),
    ("JSONB", TypeRef("JSONB")), ("JSON", TypeRef("JSONB")), ("INTERVAL", TypeRef("INTERVAL")),
]


@pytest.mark.parametrize(("sql", "expected"), TYPES, ids=[sql for sql, _ in TYPES])
def test_type(sql: str, expected: TypeRef) -> None:
    assert expr(f"CAST(x AS {sql})") == Cast(c("x"), expected)
    stmt = parse_one(f"CREATE TABLE t (x {sql} NOT NULL)")
    assert stmt == CreateTable(t("t"), (ColumnDef("x", expected, nullable=False),))


# --------------------------------------------------------------------------------------------
# Errors: position, token and message

ERRORS: list[tuple[str, int, int, str, str]] = [
    # (sql, line, column, token, message fragment)
    ("SELECT a,\n       b\nFROM t WHERE (a = 1", 3, 20, "EOF", 'expected ")"'),
    ("SELECT a\nFROM t\nWHERE a = = 1", 3, 11, "=", "expected an expression"),
    ("SELECT 'abc", 1, 8, "'abc", "unterminated string literal"),
    ("SELECT 1,\n  'abc\ndef", 2, 3, "'abc", "unterminated string literal"),
    ("SELECT e'abc\\'", 1, 8, "e'abc\\'", "unterminated string literal"),
    ("SELECT /* open", 1, 8, "/*", "unterminated comment"),
    ("SELECT /* a /* b */", 1, 8, "/*", "unterminated comment"),
    ('SELECT "abc', 1, 8, '"abc', "unterminated quoted identifier"),
    ('SELECT ""', 1, 8, '""', "zero-length delimited identifier"),
    ("SELECT #", 1, 8, "#", "unexpected character"),
    ("SELECT 1 ! 2", 1, 10, "!", "unexpected character"),
    ("SELECT 123abc", 1, 8, "123abc", "trailing junk after numeric literal"),
    ("SELECT 1e", 1, 8, "1e", "trailing junk"),
    ("SELECT 0x", 1, 8, "0x", "invalid hexadecimal number"),
    ("SELECT x'abc'", 1, 8, "x'abc'", "invalid hexadecimal bytes literal"),
    ("SELECT e'\\xZZ'", 1, 8, "e'\\xZZ'", "invalid \\x escape"),
    ("SELECT e'\\uD800'", 1, 8, "e'\\uD800'", "invalid Unicode escape"),
    ("SELECT e'\\777'", 1, 8, "e'\\777'", "invalid octal escape"),
    ("SELECT e'\\xff'", 1, 8, "e'\\xff'", "invalid UTF-8"),
    ("SELECT $0", 1, 8, "$0", "placeholder index out of range"),
    ("SELECT $", 1, 8, "$", "expected a placeholder number"),
    ("SELECT $1, ?", 1, 12, "?", "cannot mix"),
    ("SELECT 1 2", 1, 10, "2", 'expected ";" or end of input'),
    ("SELEKT 1", 1, 1, "SELEKT", "expected a statement"),
    ("SELECT", 1, 7, "EOF", "expected an expression"),
    ("SELECT a FROM", 1, 14, "EOF", "expected a table name"),
    ("SELECT a FROM select", 1, 15, "select", "reserved keyword SELECT"),
    ("SELECT * FROM a, b", 1, 16, ",", "joins are not supported"),
    ("SELECT * FROM a JOIN b ON a.x = b.x", 1, 17, "JOIN", "joins are not supported"),
    ("SELECT * FROM a LEFT JOIN b", 1, 17, "LEFT", "joins are not supported"),
    ("SELECT 1 UNION SELECT 2", 1, 10, "UNION", "UNION is not supported"),
    ("SELECT (SELECT 1)", 1, 9, "SELECT", "subqueries"),
    ("SELECT * FROM (SELECT 1)", 1, 15, "(", "subqueries in FROM"),
    ("SELECT a FROM t LIMIT 1 LIMIT 2", 1, 25, "LIMIT", "multiple LIMIT"),
    ("SELECT a FROM t AS OF SYSTEM TIME '-1s' AS OF SYSTEM TIME '-2s'", 1, 41, "AS",
     "AS OF SYSTEM TIME specified more than once"),
    ("SELECT a IN ()", 1, 14, ")", "IN requires at least one value"),
    ("SELECT a IS 5", 1, 13, "5", "expected NULL, TRUE or FALSE"),
    ("SELECT a BETWEEN 1 OR 2", 1, 20, "OR", "expected AND"),
    ("SELECT CASE END", 1, 13, "END", "expected WHEN"),
    ("SELECT CAST(a AS widget)", 1, 18, "widget", 'unknown type "widget"'),
    ("SELECT a::", 1, 11, "EOF", "expected a type name"),
    ("SELECT a.b.c.d", 1, 8, "a", "too many dots"),
    ("SELECT (1, 2)", 1, 10, ",", "row expressions"),
    ("CREATE TABLE t (a INT,\n  b INT NOT NULL NULL)", 2, 18, "NULL",
     "conflicting NULL/NOT NULL"),
    ("CREATE TABLE t (a INT DEFAULT 1 DEFAULT 2)", 1, 33, "DEFAULT", "multiple default values"),
    ("CREATE TABLE t (a INT CHECK (a > 0))", 1, 23, "CHECK", "not supported"),
    ("CREATE TABLE t (a INT, CHECK (a > 0))", 1, 24, "CHECK", "not supported"),
    ("CREATE TABLE t (a DECIMAL(2, 3))", 1, 26, "(", "scale for type DECIMAL"),
    ("CREATE TABLE t (a VARCHAR(0))", 1, 26, "(", "length for type STRING"),
    ("CREATE TABLE t (a INT(4))", 1, 22, "(", "does not take arguments"),
    ("CREATE TABLE t (a FLOAT(54))", 1, 24, "(", "precision for type FLOAT"),
    ("CREATE TABLE t (select INT)", 1, 17, "select", "reserved keyword"),
    ("CREATE TABLE x.y.t (a INT)", 1, 14, "x", "only the public schema"),
    ("CREATE VIEW v AS SELECT 1", 1, 8, "VIEW", "expected DATABASE, TABLE or INDEX"),
    ("INSERT INTO t VALUES (1), (1, 2)", 1, 27, "(", "VALUES lists must all be the same"),
    ("INSERT INTO t VALUES (1) ON CONFLICT DO UPDATE SET a = 1", 1, 41, "UPDATE",
     "requires conflict columns"),
    ("UPSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", 1, 26, "ON", "UPSERT does not take"),
    ("INSERT t VALUES (1)", 1, 8, "t", "expected INTO"),
    ("UPDATE t SET t.a = 1", 1, 15, ".", "qualified column names"),
    ("SET x = 1", 1, 5, "x", "only SET database and SET CLUSTER SETTING"),
    ("SHOW GRANTS", 1, 6, "GRANTS", "unsupported SHOW statement"),
    ("BACKUP INTO", 1, 12, "EOF", "expected a backup collection"),
    ("BACKUP TABLE t TO 'x'", 1, 16, "TO", "BACKUP ... TO is not supported"),
    ("RESTORE FROM 'x'", 1, 17, "EOF", "expected IN"),
    ("BACKUP INTO 'c' WITH detached, detached", 1, 32, "detached", "more than once"),
    ("IMPORT INTO t AVRO DATA ('x')", 1, 15, "AVRO", "expected CSV"),
    ("PAUSE JOBS 1", 1, 7, "JOBS", "expected JOB"),
    ("SELECT 1;\n\nSELECT FROM", 3, 8, "FROM", "expected an expression"),
]


@pytest.mark.parametrize(("sql", "line", "column", "token", "message"), ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_error(sql: str, line: int, column: int, token: str, message: str) -> None:
    with pytest.raises(SQLSyntaxError) as err:
        parse(sql)
    e = err.value
    assert (e.line, e.column, e.token) == (line, column, token), str(e)
    assert message in e.message
    assert "syntax error: " in e.message
    assert e.code == "42601"


def test_error_hint() -> None:
    with pytest.raises(SQLSyntaxError) as err:
        parse("SELECT a FROM select")
    assert err.value.hint is not None and "double-quote" in err.value.hint


def test_error_columns_after_crlf_and_tabs() -> None:
    with pytest.raises(SQLSyntaxError) as err:
        parse("SELECT 1;\r\n\tSELECT #")
    assert (err.value.line, err.value.column, err.value.token) == (2, 9, "#")


def test_deep_nesting_is_a_syntax_error() -> None:
    for sql in ("SELECT " + "(" * 5000 + "1" + ")" * 5000,
                "SELECT " + "NOT " * 5000 + "TRUE",
                "SELECT " + "- " * 5000 + "1",
                "SELECT " + "a IN (SELECT " * 500 + "1" + ")" * 500,
                "SELECT " + "CASE WHEN " * 2000 + "1"):
        with pytest.raises(SQLSyntaxError, match="nested too deeply"):
            parse(sql)
    # Moderate nesting is fine.
    assert expr("(" * 50 + "1" + ")" * 50) == i(1)


def test_long_or_chains_do_not_recurse() -> None:
    sql = "SELECT a FROM t WHERE " + " OR ".join(f"a = {n}" for n in range(5000))
    stmt = parse_one(sql)
    assert isinstance(stmt, Select) and isinstance(stmt.where, BinaryOp)


def test_huge_numbers_are_rejected_cleanly() -> None:
    with pytest.raises(SQLSyntaxError, match="numeric literal too long"):
        parse("SELECT " + "9" * 5000)
    with pytest.raises(SQLSyntaxError, match="placeholder index out of range"):
        parse("SELECT $" + "9" * 5000)


# --------------------------------------------------------------------------------------------
# Fuzzing: any input gives a parse or an SQLSyntaxError, never another exception

SOUP = [
    "SELECT", "FROM", "WHERE", "INSERT", "INTO", "VALUES", "UPSERT", "UPDATE", "SET", "DELETE",
    "CREATE", "DROP", "TABLE", "INDEX", "DATABASE", "IF", "NOT", "EXISTS", "PRIMARY", "KEY",
    "UNIQUE", "DEFAULT", "NULL", "TRUE", "FALSE", "AND", "OR", "IS", "IN", "BETWEEN", "LIKE",
    "ILIKE", "CASE", "WHEN", "THEN", "ELSE", "END", "CAST", "AS", "OF", "SYSTEM", "TIME",
    "ORDER", "BY", "GROUP", "HAVING", "LIMIT", "OFFSET", "ASC", "DESC", "NULLS", "FIRST",
    "DISTINCT", "ON", "CONFLICT", "DO", "NOTHING", "RETURNING", "EXCLUDED", "BEGIN", "COMMIT",
    "ROLLBACK", "SHOW", "JOBS", "JOB", "WHEN", "COMPLETE", "PAUSE", "RESUME", "CANCEL", "BACKUP",
    "RESTORE", "IMPORT", "CSV", "DATA", "WITH", "OPTIONS", "LATEST", "BACKUPS", "CLUSTER",
    "SETTING", "SETTINGS", "RESET", "USE", "STORING", "CASCADE", "INT", "STRING", "DECIMAL",
    "TIMESTAMP", "DOUBLE", "PRECISION", "ZONE", "FORCE_INDEX", "count", "now", "t", "a", "b",
    "db", "(", ")", ",", ";", ".", "*", "@", "{", "}", "=", "<>", "<", ">=", "+", "-", "/", "%",
    "||", "::", "1", "2.5", "-3", "1e3", "'s'", "''", "e'\\n'", "b'x'", "x'00'", "$1", "?",
    '"Q"', "/* c */", "-- c\n", "\n",
]

VALID = [sql for sql, _ in STATEMENTS] + ["SELECT " + sql for sql, _ in EXPRESSIONS]


def _parses_or_syntax_error(sql: str) -> None:
    try:
        result = parse(sql)
    except SQLSyntaxError as e:
        assert e.line >= 1 and e.column >= 1 and e.token
        return
    assert all(isinstance(stmt, Statement) for stmt in result)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_fuzz_random_text(sql: str) -> None:
    _parses_or_syntax_error(sql)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(SOUP), max_size=40))
def test_fuzz_token_soup(tokens: list[str]) -> None:
    _parses_or_syntax_error(" ".join(tokens))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VALID), st.data())
def test_fuzz_mutated_statements(sql: str, data: st.DataObject) -> None:
    # Cut, splice and insert at random points of known-good statements, so the parser is
    # driven deep into every statement form before things go wrong.
    n = len(sql)
    start = data.draw(st.integers(0, n))
    end = data.draw(st.integers(start, n))
    insert = data.draw(st.sampled_from(["", *SOUP]) | st.text(max_size=3))
    _parses_or_syntax_error(sql[:start] + " " + insert + " " + sql[end:])
    _parses_or_syntax_error(sql[:start])
