"""The SQL abstract syntax tree: the dataclasses the parser produces and the executor consumes.

Every node is a frozen, slotted dataclass holding tuples rather than lists, so nodes compare by
value and are hashable (an executor can, say, match a SELECT item against a GROUP BY key with
``==`` or use expressions as dict keys).

Conventions:

* Names (tables, columns, databases, indexes, options, settings) are already case-folded:
  unquoted names are lower case, double-quoted names are kept exactly.
* Optional clauses that were absent are ``None`` (or an empty tuple for lists).
* Statements carry ``text`` (their source text, without the ``;``) and ``pos`` (1-based line
  and column of their first token). Both are excluded from ``==`` so tests and caches compare
  structure only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


class Node:
    """Base of every AST node."""

    __slots__ = ()


# --------------------------------------------------------------------------------------------
# Expressions


class Expr(Node):
    """Base of every expression node."""

    __slots__ = ()


@dataclass(slots=True, frozen=True)
class IntLiteral(Expr):
    """An integer constant. Unary minus is folded in, so INT8's minimum is representable;
    the value is not range-checked here."""

    value: int


@dataclass(slots=True, frozen=True)
class DecimalLiteral(Expr):
    """A number with a fraction or exponent (``1.5``, ``1e3``), kept as its source text so a
    DECIMAL stays exact. CockroachDB types such a constant as DECIMAL unless the context
    wants FLOAT."""

    text: str

    @property
    def value(self) -> Decimal:
        return Decimal(self.text)


@dataclass(slots=True, frozen=True)
class StringLiteral(Expr):
    value: str


@dataclass(slots=True, frozen=True)
class BytesLiteral(Expr):
    value: bytes


@dataclass(slots=True, frozen=True)
class BoolLiteral(Expr):
    value: bool


@dataclass(slots=True, frozen=True)
class NullLiteral(Expr):
    pass


@dataclass(slots=True, frozen=True)
class Placeholder(Expr):
    """``$n`` or ``?``: ``index`` is 1-based into the parameters bound at execute time."""

    index: int


@dataclass(slots=True, frozen=True)
class DefaultExpr(Expr):
    """The ``DEFAULT`` keyword where a value may be replaced by the column/setting default:
    a VALUES item, an UPDATE / ON CONFLICT assignment, SET CLUSTER SETTING."""


@dataclass(slots=True, frozen=True)
class ColumnRef(Expr):
    """``c``, ``t.c`` or ``db.t.c``. ``EXCLUDED.c`` in ON CONFLICT is ``table="excluded"``."""

    name: str
    table: str | None = None
    database: str | None = None


@dataclass(slots=True, frozen=True)
class Star(Expr):
    """``*`` or ``t.*``: only ever a select-list or RETURNING item."""

    table: str | None = None


@dataclass(slots=True, frozen=True)
class TypeRef(Node):
    """A type with aliases normalised to CockroachDB's canonical names:

    INT8 (INT, INTEGER, BIGINT, INT64), INT4, INT2 (SMALLINT), FLOAT8 (FLOAT, DOUBLE
    PRECISION, FLOAT(25..53)), FLOAT4 (REAL, FLOAT(1..24)), DECIMAL (NUMERIC, DEC; args
    (precision,) or (precision, scale)), STRING (TEXT, VARCHAR, CHARACTER VARYING; args
    (length,)), CHAR (CHARACTER; args (length,), default (1,)), BYTES (BYTEA, BLOB), BOOL
    (BOOLEAN), TIMESTAMP (... WITHOUT TIME ZONE), TIMESTAMPTZ (TIMESTAMP WITH TIME ZONE;
    both take an optional precision arg), DATE, UUID, JSONB (JSON), INTERVAL.

    ``serial`` is set for SERIAL / SERIAL2/4/8 / SMALLSERIAL / BIGSERIAL, which are INT8 whose
    default is ``unique_rowid()`` (CockroachDB's default serial_normalization).
    """

    name: str
    args: tuple[int, ...] = ()
    serial: bool = False


@dataclass(slots=True, frozen=True)
class Cast(Expr):
    """``CAST(x AS t)``, ``x::t`` and typed literals such as ``TIMESTAMP '2020-01-01'``."""

    expr: Expr
    type: TypeRef


@dataclass(slots=True, frozen=True)
class FuncCall(Expr):
    """A function call; ``name`` is lower case (dotted if qualified). ``count(*)`` has
    ``star=True`` and no args; ``count(DISTINCT x)`` has ``distinct=True``. Bare
    ``current_timestamp`` / ``current_date`` / ``localtimestamp`` are calls with no args.
    COALESCE, NULLIF, IF, ... are ordinary calls too."""

    name: str
    args: tuple[Expr, ...] = ()
    distinct: bool = False
    star: bool = False


@dataclass(slots=True, frozen=True)
class BinaryOp(Expr):
    """``op`` is one of ``= <> < <= > >= + - * / % || AND OR`` (``!=`` arrives as ``<>``)."""

    op: str
    left: Expr
    right: Expr


@dataclass(slots=True, frozen=True)
class UnaryOp(Expr):
    """``op`` is ``-`` or ``NOT``. Unary ``+`` is dropped; ``-`` of a numeric literal is
    folded into the literal."""

    op: str
    operand: Expr


@dataclass(slots=True, frozen=True)
class IsNull(Expr):
    """``x IS NULL`` / ``x IS NOT NULL`` (``negated``)."""

    expr: Expr
    negated: bool = False


@dataclass(slots=True, frozen=True)
class IsBool(Expr):
    """``x IS [NOT] TRUE`` / ``x IS [NOT] FALSE``: never NULL itself."""

    expr: Expr
    value: bool
    negated: bool = False


@dataclass(slots=True, frozen=True)
class InList(Expr):
    """``x [NOT] IN (a, b, ...)``; the list is never empty."""

    expr: Expr
    items: tuple[Expr, ...]
    negated: bool = False


@dataclass(slots=True, frozen=True)
class InSubquery(Expr):
    """``x [NOT] IN (SELECT ...)``."""

    expr: Expr
    query: Select
    negated: bool = False


@dataclass(slots=True, frozen=True)
class Between(Expr):
    """``x [NOT] BETWEEN low AND high``."""

    expr: Expr
    low: Expr
    high: Expr
    negated: bool = False


@dataclass(slots=True, frozen=True)
class Like(Expr):
    """``x [NOT] LIKE p`` / ``x [NOT] ILIKE p`` (``case_insensitive``); no ESCAPE clause."""

    expr: Expr
    pattern: Expr
    negated: bool = False
    case_insensitive: bool = False


@dataclass(slots=True, frozen=True)
class CaseWhen(Node):
    condition: Expr
    result: Expr


@dataclass(slots=True, frozen=True)
class Case(Expr):
    """``CASE [operand] WHEN .. THEN .. [ELSE ..] END``. With an operand, each ``condition``
    is a value compared with ``=`` to the operand; without, a boolean."""

    operand: Expr | None
    whens: tuple[CaseWhen, ...]
    else_: Expr | None = None


# --------------------------------------------------------------------------------------------
# Pieces shared by statements


@dataclass(slots=True, frozen=True)
class TableName(Node):
    """``t`` or ``db.t`` (``db.public.t`` is accepted and arrives as ``db.t``)."""

    name: str
    database: str | None = None


@dataclass(slots=True, frozen=True)
class IndexColumn(Node):
    name: str
    descending: bool = False


@dataclass(slots=True, frozen=True)
class ColumnDef(Node):
    """A column in CREATE TABLE. ``nullable`` is None when neither NULL nor NOT NULL was
    written (so the executor applies the default, and PRIMARY KEY implies NOT NULL)."""

    name: str
    type: TypeRef
    nullable: bool | None = None
    default: Expr | None = None
    primary_key: bool = False
    unique: bool = False


@dataclass(slots=True, frozen=True)
class PrimaryKeyDef(Node):
    """``[CONSTRAINT name] PRIMARY KEY (cols)`` in CREATE TABLE."""

    columns: tuple[IndexColumn, ...]
    name: str | None = None


@dataclass(slots=True, frozen=True)
class IndexDef(Node):
    """A secondary index in CREATE TABLE: ``INDEX [name] (cols) [STORING (..)]``,
    ``UNIQUE INDEX [name] (cols) ..``, or the constraint form ``[CONSTRAINT name] UNIQUE
    (cols)``; ``name`` is None when not given."""

    columns: tuple[IndexColumn, ...]
    name: str | None = None
    unique: bool = False
    storing: tuple[str, ...] = ()


TableElement = ColumnDef | PrimaryKeyDef | IndexDef


@dataclass(slots=True, frozen=True)
class Assignment(Node):
    """``column = value`` in UPDATE SET and ON CONFLICT DO UPDATE SET; value may be
    ``DefaultExpr``."""

    column: str
    value: Expr


@dataclass(slots=True, frozen=True)
class SelectItem(Node):
    """A select-list or RETURNING item; ``expr`` may be a ``Star``."""

    expr: Expr
    alias: str | None = None


@dataclass(slots=True, frozen=True)
class TableRef(Node):
    """``t [@index] [[AS] alias]`` in FROM. ``index`` is set by ``t@idx`` and by
    ``t@{FORCE_INDEX=idx}`` (both force that index; ``primary`` names the primary index)."""

    table: TableName
    alias: str | None = None
    index: str | None = None


@dataclass(slots=True, frozen=True)
class OrderItem(Node):
    """``nulls_first`` is None unless NULLS FIRST/LAST was written (CockroachDB's default:
    NULLs first ascending, last descending)."""

    expr: Expr
    descending: bool = False
    nulls_first: bool | None = None


@dataclass(slots=True, frozen=True)
class Values(Node):
    """``VALUES (..), (..)``: rows all have the same length; items may be ``DefaultExpr``."""

    rows: tuple[tuple[Expr, ...], ...]


@dataclass(slots=True, frozen=True)
class OnConflict(Node):
    """``ON CONFLICT [(cols)] DO NOTHING`` (``do_nothing``) or ``ON CONFLICT (cols) DO UPDATE
    SET .. [WHERE ..]`` (columns are required for DO UPDATE)."""

    columns: tuple[str, ...]
    do_nothing: bool
    assignments: tuple[Assignment, ...] = ()
    where: Expr | None = None


@dataclass(slots=True, frozen=True)
class Option(Node):
    """One ``WITH`` option of IMPORT / BACKUP / RESTORE / SHOW BACKUP: ``name [= value]``;
    ``value`` is None for a bare flag such as ``detached``. Names are unique per list."""

    name: str
    value: Expr | None = None


@dataclass(slots=True, frozen=True)
class IndexName(Node):
    """An index in DROP INDEX: ``t@idx`` / ``db.t@idx`` / ``t.idx`` (``table`` set) or a bare
    ``idx`` (``table`` None: the executor searches the current database)."""

    name: str
    table: TableName | None = None


# --------------------------------------------------------------------------------------------
# Statements


@dataclass(slots=True, frozen=True, kw_only=True)
class Statement(Node):
    """Base of every statement: ``text`` is the statement's source text (used, e.g., as a
    job description) and ``pos`` the (line, column) of its first token."""

    text: str = field(default="", compare=False)
    pos: tuple[int, int] = field(default=(0, 0), compare=False)


@dataclass(slots=True, frozen=True)
class Select(Statement):
    """A SELECT. ``from_`` is None for a SELECT without FROM. ``as_of`` is the ``AS OF SYSTEM
    TIME`` expression, written either right after the table or after the whole select."""

    items: tuple[SelectItem, ...]
    distinct: bool = False
    from_: TableRef | None = None
    where: Expr | None = None
    group_by: tuple[Expr, ...] = ()
    having: Expr | None = None
    order_by: tuple[OrderItem, ...] = ()
    limit: Expr | None = None
    offset: Expr | None = None
    as_of: Expr | None = None


@dataclass(slots=True, frozen=True)
class Insert(Statement):
    """``INSERT INTO t [(cols)] VALUES .. | SELECT .. | DEFAULT VALUES [ON CONFLICT ..]
    [RETURNING ..]``. ``columns`` is empty when no column list was written; ``source`` is
    None for DEFAULT VALUES; ``returning`` is None without RETURNING (and for RETURNING
    NOTHING)."""

    table: TableName
    columns: tuple[str, ...]
    source: Values | Select | None
    on_conflict: OnConflict | None = None
    returning: tuple[SelectItem, ...] | None = None


@dataclass(slots=True, frozen=True)
class Upsert(Insert):
    """``UPSERT INTO ..``: an ``Insert`` (so ``isinstance(x, Insert)`` holds) that replaces
    rows whose primary key exists; ``on_conflict`` is always None."""


@dataclass(slots=True, frozen=True)
class Update(Statement):
    table: TableName
    assignments: tuple[Assignment, ...]
    where: Expr | None = None
    returning: tuple[SelectItem, ...] | None = None


@dataclass(slots=True, frozen=True)
class Delete(Statement):
    table: TableName
    where: Expr | None = None
    returning: tuple[SelectItem, ...] | None = None


@dataclass(slots=True, frozen=True)
class CreateDatabase(Statement):
    name: str
    if_not_exists: bool = False


@dataclass(slots=True, frozen=True)
class DropDatabase(Statement):
    """``behavior`` is ``"cascade"``, ``"restrict"`` or None (not written)."""

    name: str
    if_exists: bool = False
    behavior: str | None = None


@dataclass(slots=True, frozen=True)
class Use(Statement):
    """``USE db`` and ``SET database = db`` / ``SET DATABASE TO db``."""

    database: str


@dataclass(slots=True, frozen=True)
class CreateTable(Statement):
    """``elements`` are the column definitions and table constraints in source order."""

    table: TableName
    elements: tuple[TableElement, ...]
    if_not_exists: bool = False

    @property
    def columns(self) -> tuple[ColumnDef, ...]:
        return tuple(e for e in self.elements if isinstance(e, ColumnDef))

    @property
    def constraints(self) -> tuple[PrimaryKeyDef | IndexDef, ...]:
        return tuple(e for e in self.elements if not isinstance(e, ColumnDef))


@dataclass(slots=True, frozen=True)
class DropTable(Statement):
    """``behavior`` is ``"cascade"``, ``"restrict"`` or None."""

    tables: tuple[TableName, ...]
    if_exists: bool = False
    behavior: str | None = None


@dataclass(slots=True, frozen=True)
class CreateIndex(Statement):
    """``storing`` collects STORING / INCLUDE / COVERING columns."""

    table: TableName
    columns: tuple[IndexColumn, ...]
    name: str | None = None
    unique: bool = False
    storing: tuple[str, ...] = ()
    if_not_exists: bool = False


@dataclass(slots=True, frozen=True)
class DropIndex(Statement):
    indexes: tuple[IndexName, ...]
    if_exists: bool = False
    behavior: str | None = None


@dataclass(slots=True, frozen=True)
class Begin(Statement):
    """``BEGIN [TRANSACTION]`` / ``START TRANSACTION`` ``[AS OF SYSTEM TIME x]``."""

    as_of: Expr | None = None


@dataclass(slots=True, frozen=True)
class Commit(Statement):
    """``COMMIT [TRANSACTION]`` and ``END [TRANSACTION]``."""


@dataclass(slots=True, frozen=True)
class Rollback(Statement):
    """``ROLLBACK [TRANSACTION]``."""


@dataclass(slots=True, frozen=True)
class ShowDatabases(Statement):
    pass


@dataclass(slots=True, frozen=True)
class ShowTables(Statement):
    database: str | None = None


@dataclass(slots=True, frozen=True)
class ShowIndexes(Statement):
    """``SHOW INDEXES FROM t`` / ``SHOW INDEX FROM t`` / ``SHOW KEYS FROM t``."""

    table: TableName


@dataclass(slots=True, frozen=True)
class ShowColumns(Statement):
    table: TableName


@dataclass(slots=True, frozen=True)
class ShowCreateTable(Statement):
    """``SHOW CREATE TABLE t`` / ``SHOW CREATE t``."""

    table: TableName


@dataclass(slots=True, frozen=True)
class SetClusterSetting(Statement):
    """``SET CLUSTER SETTING name = value``; ``name`` is dotted lower case (``gc.ttlseconds``)
    and ``value`` is ``DefaultExpr`` for ``= DEFAULT``."""

    name: str
    value: Expr


@dataclass(slots=True, frozen=True)
class ResetClusterSetting(Statement):
    """``RESET CLUSTER SETTING name``: the same as ``SET CLUSTER SETTING name = DEFAULT``."""

    name: str


@dataclass(slots=True, frozen=True)
class ShowClusterSetting(Statement):
    name: str


@dataclass(slots=True, frozen=True)
class ShowClusterSettings(Statement):
    """``SHOW [PUBLIC] CLUSTER SETTINGS`` (``all=False``) / ``SHOW ALL CLUSTER SETTINGS``."""

    all: bool = False


@dataclass(slots=True, frozen=True)
class ShowFingerprints(Statement):
    """``SHOW [EXPERIMENTAL_]FINGERPRINTS FROM TABLE t [AS OF SYSTEM TIME x]``."""

    table: TableName
    as_of: Expr | None = None
    experimental: bool = False


@dataclass(slots=True, frozen=True)
class ShowJobs(Statement):
    pass


@dataclass(slots=True, frozen=True)
class ShowJob(Statement):
    """``SHOW JOB [WHEN COMPLETE] <expr>``."""

    job_id: Expr
    when_complete: bool = False


@dataclass(slots=True, frozen=True)
class PauseJob(Statement):
    job_id: Expr


@dataclass(slots=True, frozen=True)
class ResumeJob(Statement):
    job_id: Expr


@dataclass(slots=True, frozen=True)
class CancelJob(Statement):
    job_id: Expr


@dataclass(slots=True, frozen=True)
class Import(Statement):
    """``IMPORT INTO t [(cols)] CSV DATA (uri, ...) [WITH ..]``; each uri is a
    ``StringLiteral`` or ``Placeholder``; ``format`` is always ``"csv"`` for now."""

    table: TableName
    columns: tuple[str, ...]
    files: tuple[Expr, ...]
    format: str = "csv"
    options: tuple[Option, ...] = ()


@dataclass(slots=True, frozen=True)
class Backup(Statement):
    """``BACKUP [TABLE t, .. | DATABASE d, ..] INTO [subdir IN | LATEST IN] collection
    [AS OF SYSTEM TIME x] [WITH ..]``.

    No tables and no databases means the whole cluster. ``subdir`` (a ``StringLiteral`` or
    ``Placeholder``) or ``latest`` names an existing full backup to append an incremental to;
    neither means a new full backup. ``collection`` is a ``StringLiteral`` or ``Placeholder``.
    """

    collection: Expr
    tables: tuple[TableName, ...] = ()
    databases: tuple[str, ...] = ()
    subdir: Expr | None = None
    latest: bool = False
    as_of: Expr | None = None
    options: tuple[Option, ...] = ()


@dataclass(slots=True, frozen=True)
class Restore(Statement):
    """``RESTORE [TABLE t, .. | DATABASE d, ..] FROM (LATEST | subdir) IN collection
    [AS OF SYSTEM TIME x] [WITH ..]``; exactly one of ``subdir`` / ``latest`` is set."""

    collection: Expr
    tables: tuple[TableName, ...] = ()
    databases: tuple[str, ...] = ()
    subdir: Expr | None = None
    latest: bool = False
    as_of: Expr | None = None
    options: tuple[Option, ...] = ()


@dataclass(slots=True, frozen=True)
class ShowBackups(Statement):
    """``SHOW BACKUPS IN collection``."""

    collection: Expr


@dataclass(slots=True, frozen=True)
class ShowBackup(Statement):
    """``SHOW BACKUP [FROM] (LATEST | subdir) IN collection [WITH ..]``; exactly one of
    ``subdir`` / ``latest`` is set."""

    collection: Expr
    subdir: Expr | None = None
    latest: bool = False
    options: tuple[Option, ...] = ()
