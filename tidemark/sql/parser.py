"""The SQL parser: a hand-written recursive-descent parser from tokens to ``tidemark.sql.ast``.

Entry points are ``parse(sql)`` for a script (statements separated by ``;``, empty statements
ignored) and ``parse_one(sql)`` for exactly one statement. Expressions use precedence climbing
(binding powers below) so each level of parenthesis nesting costs only a few Python frames.

Every malformed input raises ``SQLSyntaxError`` carrying the 1-based line and column of the
offending token and its text ("EOF" at the end of input); no other exception escapes.

The token helpers test keywords and operators through the lexer's ``keys`` list (the operator
or folded unquoted word of each token), one list lookup per test. Multi-row VALUES lists of
plain literals, the bulk of a large INSERT, take a fast path that builds the row directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from tidemark.errors import SQLSyntaxError
from tidemark.sql import ast
from tidemark.sql.lexer import Token, TokenKind, tokenize_with_keys

__all__ = ["RESERVED_KEYWORDS", "parse", "parse_one"]

_T = TypeVar("_T")
_S = TypeVar("_S", bound=ast.Statement)

# Words that cannot be used unquoted as a column, table or alias name, because they would make
# the grammar ambiguous (``SELECT a FROM t`` must not read FROM as an alias of ``a``). After
# ``AS``, after a dot, and in option/setting names any word is accepted.
RESERVED_KEYWORDS = frozenset({
    "all", "and", "any", "array", "as", "asc", "between", "both", "case", "cast", "check",
    "collate", "column", "constraint", "create", "cross", "current_date", "current_timestamp",
    "default", "desc", "distinct", "do", "else", "end", "except", "false", "fetch", "for",
    "foreign", "from", "full", "grant", "group", "having", "ilike", "in", "index", "inner",
    "intersect", "into", "is", "join", "leading", "left", "like", "limit", "localtimestamp",
    "natural", "not", "null", "offset", "on", "or", "order", "outer", "primary", "references",
    "returning", "right", "select", "some", "table", "then", "to", "trailing", "true", "union",
    "unique", "using", "when", "where", "window", "with",
})

# Reserved words that may still name a function when followed by "(".
_FUNCTION_KEYWORDS = frozenset({"left", "right"})
# SQL-standard functions that are called without parentheses.
_NILADIC_FUNCTIONS = frozenset({"current_timestamp", "current_date", "localtimestamp"})

# Type aliases -> (canonical name, argument kind, serial). Argument kinds: "none"; "length"
# (one positive int); "decimal" (precision[, scale]); "float" (bits -> FLOAT4/FLOAT8);
# "precision" (fractional-second digits 0..6).
_TYPES: dict[str, tuple[str, str, bool]] = {
    "int": ("INT8", "none", False),
    "integer": ("INT8", "none", False),
    "int8": ("INT8", "none", False),
    "int64": ("INT8", "none", False),
    "bigint": ("INT8", "none", False),
    "int4": ("INT4", "none", False),
    "int2": ("INT2", "none", False),
    "smallint": ("INT2", "none", False),
    # CockroachDB's default serial_normalization makes every SERIAL variant an INT8 column
    # defaulting to unique_rowid().
    "serial": ("INT8", "none", True),
    "serial2": ("INT8", "none", True),
    "serial4": ("INT8", "none", True),
    "serial8": ("INT8", "none", True),
    "smallserial": ("INT8", "none", True),
    "bigserial": ("INT8", "none", True),
    "float": ("FLOAT8", "float", False),
    "float8": ("FLOAT8", "none", False),
    "float4": ("FLOAT4", "none", False),
    "real": ("FLOAT4", "none", False),
    "double": ("FLOAT8", "none", False),  # followed by PRECISION
    "decimal": ("DECIMAL", "decimal", False),
    "numeric": ("DECIMAL", "decimal", False),
    "dec": ("DECIMAL", "decimal", False),
    "string": ("STRING", "length", False),
    "text": ("STRING", "none", False),
    "varchar": ("STRING", "length", False),
    "char": ("CHAR", "length", False),
    "character": ("CHAR", "length", False),  # or CHARACTER VARYING
    "bytes": ("BYTES", "none", False),
    "bytea": ("BYTES", "none", False),
    "blob": ("BYTES", "none", False),
    "bool": ("BOOL", "none", False),
    "boolean": ("BOOL", "none", False),
    "timestamp": ("TIMESTAMP", "precision", False),  # optionally WITH/WITHOUT TIME ZONE
    "timestamptz": ("TIMESTAMPTZ", "precision", False),
    "date": ("DATE", "none", False),
    "uuid": ("UUID", "none", False),
    "jsonb": ("JSONB", "none", False),
    "json": ("JSONB", "none", False),
    "interval": ("INTERVAL", "none", False),
}

# Binding powers, loosest first. An infix operator is taken only while its power is above the
# caller's minimum, which gives left associativity and the precedence order.
_OR, _AND, _NOT, _CMP, _CONCAT, _ADD, _MUL, _UNARY, _CAST = range(1, 10)
_INFIX_OPS = {"=": _CMP, "<>": _CMP, "<": _CMP, "<=": _CMP, ">": _CMP, ">=": _CMP,
              "||": _CONCAT, "+": _ADD, "-": _ADD, "*": _MUL, "/": _MUL, "%": _MUL,
              "::": _CAST}
_INFIX_WORDS = {"or": _OR, "and": _AND, "is": _CMP, "in": _CMP, "between": _CMP,
                "like": _CMP, "ilike": _CMP}
_INFIX_POWERS: dict[str | None, int] = {**_INFIX_OPS, **_INFIX_WORDS}
_NEGATABLE_INFIX = frozenset({"in", "between", "like", "ilike"})
# Token kinds that are a complete literal expression, and the node each makes.
_LITERALS: dict[TokenKind, Callable[[Any], ast.Expr]] = {
    TokenKind.INT: ast.IntLiteral,
    TokenKind.DECIMAL: ast.DecimalLiteral,
    TokenKind.STRING: ast.StringLiteral,
    TokenKind.BYTES: ast.BytesLiteral,
    TokenKind.PLACEHOLDER: ast.Placeholder,
}
_NEGATABLE_LITERALS = frozenset({TokenKind.INT, TokenKind.DECIMAL})
_JOIN_WORDS = frozenset({"join", "inner", "left", "right", "full", "cross", "natural"})

# Deeper nesting than this is refused instead of risking Python's recursion limit.
MAX_NESTING = 100


def parse(sql: str) -> list[ast.Statement]:
    """Parse a script: statements separated by ``;``; empty statements are ignored."""
    return _Parser(sql).parse_script()


def parse_one(sql: str) -> ast.Statement:
    """Parse text that must hold exactly one statement (a trailing ``;`` is fine)."""
    parser = _Parser(sql)
    statements = parser.parse_script()
    if not statements:
        raise parser.error("expected a statement", parser.tokens[-1])
    if len(statements) > 1:
        raise parser.error(f"expected exactly one statement, found {len(statements)}",
                           parser.statement_starts[1])
    return statements[0]


class _Parser:
    def __init__(self, source: str):
        self.source = source
        self.tokens: list[Token]
        # keys[i]: the operator or folded unquoted word of tokens[i], else None. Operators and
        # words cannot collide, so at_op/at_kw are one lookup here.
        self.keys: list[str | None]
        self.tokens, self.keys = tokenize_with_keys(source)
        self.last = len(self.tokens) - 1  # the index of the EOF token
        self.i = 0  # never beyond self.last
        self.depth = 0
        self.statement_starts: list[Token] = []  # first token of each parsed statement

    # ---------------------------------------------------------------------------------------
    # Token helpers. peek() never runs past the EOF token, so no IndexError is possible.

    def peek(self, k: int = 0) -> Token:
        if k:
            return self.tokens[min(self.i + k, self.last)]
        return self.tokens[self.i]

    def advance(self) -> Token:
        i = self.i
        if i < self.last:  # the EOF token is the last one and is never consumed
            self.i = i + 1
        return self.tokens[i]

    def error(self, message: str, tok: Token | None = None,
              hint: str | None = None) -> SQLSyntaxError:
        tok = tok or self.peek()
        return SQLSyntaxError(f"syntax error: {message}", line=tok.line, column=tok.column,
                              token=tok.text, hint=hint)

    def fail(self, message: str, tok: Token | None = None, hint: str | None = None) -> NoReturn:
        raise self.error(message, tok, hint)

    def at_kw(self, *words: str, k: int = 0) -> bool:
        if k:
            return self.keys[min(self.i + k, self.last)] in words
        return self.keys[self.i] in words

    def accept_kw(self, *words: str) -> str | None:
        """Consume the next token if it is one of ``words``; return which, else None."""
        key = self.keys[self.i]
        if key in words:
            self.i += 1
            return key
        return None

    def expect_kw(self, *words: str) -> str:
        key = self.keys[self.i]
        if key in words:
            self.i += 1
            return key
        self.fail("expected " + " or ".join(w.upper() for w in words))

    def at_op(self, *ops: str, k: int = 0) -> bool:
        if k:
            return self.keys[min(self.i + k, self.last)] in ops
        return self.keys[self.i] in ops

    def accept_op(self, op: str) -> bool:
        if self.keys[self.i] == op:
            self.i += 1
            return True
        return False

    def expect_op(self, op: str) -> None:
        if self.keys[self.i] == op:
            self.i += 1
        else:
            self.fail(f'expected "{op}"')

    def at_as_of(self) -> bool:
        return self.at_kw("as") and self.at_kw("of", k=1) and self.at_kw("system", k=2)

    def comma_list(self, item: Callable[[], _T]) -> tuple[_T, ...]:
        items = [item()]
        keys = self.keys
        while keys[self.i] == ",":
            self.i += 1
            items.append(item())
        return tuple(items)

    def parenthesized_list(self, item: Callable[[], _T]) -> tuple[_T, ...]:
        self.expect_op("(")
        items = self.comma_list(item)
        self.expect_op(")")
        return items

    # ---------------------------------------------------------------------------------------
    # Names

    def is_name(self, k: int = 0) -> bool:
        tok = self.tokens[min(self.i + k, self.last)] if k else self.tokens[self.i]
        return tok.kind is TokenKind.QIDENT or (
            tok.kind is TokenKind.IDENT and tok.value not in RESERVED_KEYWORDS)

    def name(self, what: str = "a name") -> str:
        """An identifier that is not a reserved keyword (unless quoted)."""
        if self.is_name():
            return str(self.advance().value)
        tok = self.peek()
        if tok.kind is TokenKind.IDENT:
            self.fail(f"expected {what}, found reserved keyword {tok.text.upper()}",
                      hint=f'to use "{tok.value}" as a name, double-quote it')
        self.fail(f"expected {what}")

    def any_name(self, what: str = "a name") -> str:
        """Any identifier, reserved keywords included (after AS, after a dot, ...)."""
        tok = self.peek()
        if tok.kind in (TokenKind.IDENT, TokenKind.QIDENT):
            return str(self.advance().value)
        self.fail(f"expected {what}")

    def table_name(self) -> ast.TableName:
        first = self.peek()
        parts = [self.name("a table name")]
        while self.accept_op("."):
            parts.append(self.any_name("a table name"))
        if len(parts) == 1:
            return ast.TableName(parts[0])
        if len(parts) == 2:
            return ast.TableName(parts[1], parts[0])
        if len(parts) == 3 and parts[1] == "public":
            return ast.TableName(parts[2], parts[0])
        if len(parts) == 3:
            self.fail("only the public schema is supported", first)
        self.fail("too many dots in table name", first)

    def column_names(self) -> tuple[str, ...]:
        return self.parenthesized_list(lambda: self.name("a column name"))

    def index_columns(self) -> tuple[ast.IndexColumn, ...]:
        def column() -> ast.IndexColumn:
            name = self.name("a column name")
            return ast.IndexColumn(name, self.accept_kw("asc", "desc") == "desc")

        return self.parenthesized_list(column)

    def dotted_name(self, what: str) -> str:
        """A cluster setting name such as ``gc.ttlseconds``; any words are allowed."""
        parts = [self.any_name(what)]
        while self.accept_op("."):
            parts.append(self.any_name(what))
        return ".".join(parts)

    def string_or_placeholder(self, what: str) -> ast.Expr:
        tok = self.peek()
        if tok.kind is TokenKind.STRING:
            self.advance()
            return ast.StringLiteral(str(tok.value))
        if tok.kind is TokenKind.PLACEHOLDER:
            self.advance()
            return ast.Placeholder(int(tok.value))
        self.fail(f"expected {what} (a string or placeholder)")

    # ---------------------------------------------------------------------------------------
    # Scripts and statements

    def parse_script(self) -> list[ast.Statement]:
        statements: list[ast.Statement] = []
        try:
            while True:
                while self.accept_op(";"):
                    pass
                if self.peek().kind is TokenKind.EOF:
                    return statements
                statements.append(self.statement())
                if self.peek().kind is not TokenKind.EOF and not self.accept_op(";"):
                    self.fail('expected ";" or end of input')
        except RecursionError:
            # Belt and braces: MAX_NESTING should keep us well clear of this.
            raise self.error("statement is nested too deeply") from None

    def statement(self) -> ast.Statement:
        tok = self.peek()
        handler = self._STATEMENTS.get(tok.value) if tok.kind is TokenKind.IDENT else None
        if handler is None:
            self.fail("expected a statement such as SELECT, INSERT, CREATE TABLE, ...")
        self.statement_starts.append(tok)
        return self.finish(handler(self), tok)

    def finish(self, node: _S, start: Token) -> _S:
        """Attach the source text and position of the tokens from ``start`` to the last one
        consumed."""
        end = self.tokens[self.i - 1].end if self.i > 0 else start.end
        # ``node`` was just built by the caller and is not shared yet, so setting the two
        # fields in place is as good as (and much cheaper than) dataclasses.replace.
        object.__setattr__(node, "text", self.source[start.start:end])
        object.__setattr__(node, "pos", start.position)
        return node

    # --- SELECT ----------------------------------------------------------------------------

    def select(self) -> ast.Select:
        start = self.peek()
        self.enter()
        try:
            return self.finish(self._select(), start)
        finally:
            self.depth -= 1

    def _select(self) -> ast.Select:
        self.expect_kw("select")
        distinct = self.accept_kw("distinct", "all") == "distinct"
        if distinct and self.at_kw("on"):
            self.fail("DISTINCT ON is not supported")
        items = self.comma_list(self.select_item)
        from_: ast.TableRef | None = None
        as_of: ast.Expr | None = None
        if self.accept_kw("from"):
            from_ = self.table_ref()
            if self.at_as_of():
                as_of = self.as_of()
            if self.at_op(",") or self.at_kw(*_JOIN_WORDS):
                self.fail("joins are not supported")
        where = self.expr() if self.accept_kw("where") else None
        group_by: tuple[ast.Expr, ...] = ()
        if self.accept_kw("group"):
            self.expect_kw("by")
            group_by = self.comma_list(self.expr)
        having = self.expr() if self.accept_kw("having") else None
        order_by: tuple[ast.OrderItem, ...] = ()
        if self.accept_kw("order"):
            self.expect_kw("by")
            order_by = self.comma_list(self.order_item)
        limit = offset = None
        seen: set[str] = set()
        while (word := self.accept_kw("limit", "offset")) is not None:
            if word in seen:
                self.fail(f"multiple {word.upper()} clauses not allowed", self.peek(-1))
            seen.add(word)
            if word == "limit":
                limit = None if self.accept_kw("all") else self.expr()
            else:
                offset = self.expr()
                self.accept_kw("row", "rows")
        if self.at_as_of():
            if as_of is not None:
                self.fail("AS OF SYSTEM TIME specified more than once")
            as_of = self.as_of()
        if self.at_kw("union", "intersect", "except"):
            self.fail(f"{self.peek().text.upper()} is not supported")
        return ast.Select(items, distinct, from_, where, group_by, having, order_by, limit,
                          offset, as_of)

    def select_item(self) -> ast.SelectItem:
        if self.accept_op("*"):
            return ast.SelectItem(ast.Star())
        if self.is_name() and self.at_op(".", k=1) and self.at_op("*", k=2):
            table = str(self.advance().value)
            self.advance()
            self.advance()
            return ast.SelectItem(ast.Star(table))
        expr = self.expr()
        return ast.SelectItem(expr, self.alias())

    def alias(self) -> str | None:
        """``AS name`` or a bare non-reserved name; None if there is no alias."""
        if self.at_kw("as") and not self.at_as_of():
            self.advance()
            return self.any_name("an alias")
        if self.is_name() and not self.at_as_of():
            return str(self.advance().value)
        return None

    def table_ref(self) -> ast.TableRef:
        if self.at_op("("):
            self.fail("subqueries in FROM are not supported")
        table = self.table_name()
        index = None
        if self.accept_op("@"):
            if self.accept_op("{"):
                hint_tok = self.peek()
                if self.any_name("an index hint") != "force_index":
                    self.fail("only the FORCE_INDEX hint is supported", hint_tok)
                self.expect_op("=")
                index = self.any_name("an index name")
                self.expect_op("}")
            else:
                index = self.any_name("an index name")
        alias = None
        if self.at_kw("as") and not self.at_as_of():
            self.advance()
            alias = self.name("an alias")
        elif self.is_name() and not self.at_as_of():
            alias = str(self.advance().value)
        return ast.TableRef(table, alias, index)

    def order_item(self) -> ast.OrderItem:
        expr = self.expr()
        descending = self.accept_kw("asc", "desc") == "desc"
        nulls_first = None
        if self.at_kw("nulls") and self.at_kw("first", "last", k=1):
            self.advance()
            nulls_first = self.advance().value == "first"
        return ast.OrderItem(expr, descending, nulls_first)

    def as_of(self) -> ast.Expr:
        for word in ("as", "of", "system", "time"):
            self.expect_kw(word)
        return self.expr()

    def returning(self) -> tuple[ast.SelectItem, ...] | None:
        if not self.accept_kw("returning"):
            return None
        if self.accept_kw("nothing"):
            return None
        return self.comma_list(self.select_item)

    # --- INSERT / UPSERT / UPDATE / DELETE -------------------------------------------------

    def insert(self) -> ast.Insert:
        upsert = self.expect_kw("insert", "upsert") == "upsert"
        self.expect_kw("into")
        table = self.table_name()
        columns = self.column_names() if self.at_op("(") else ()
        source: ast.Values | ast.Select | None
        if self.at_kw("values"):
            source = self.values()
        elif self.at_kw("select"):
            source = self.select()
        elif self.accept_kw("default"):
            self.expect_kw("values")
            source = None
        else:
            self.fail("expected VALUES, SELECT or DEFAULT VALUES")
        on_conflict = None
        if self.at_kw("on"):
            if upsert:
                self.fail("UPSERT does not take ON CONFLICT")
            on_conflict = self.on_conflict()
        returning = self.returning()
        cls = ast.Upsert if upsert else ast.Insert
        return cls(table, columns, source, on_conflict, returning)

    def values(self) -> ast.Values:
        self.expect_kw("values")
        rows: list[tuple[ast.Expr, ...]] = []
        # The fast path builds at most two levels of nodes (a negated literal).
        fast = self.depth + 2 <= MAX_NESTING
        while True:
            row_tok = self.tokens[self.i]
            row = (fast and self.literal_row()) or self.parenthesized_list(self.expr_or_default)
            if rows and len(row) != len(rows[0]):
                self.fail("VALUES lists must all be the same length", row_tok)
            rows.append(row)
            if not self.accept_op(","):
                return ast.Values(tuple(rows))

    def literal_row(self) -> tuple[ast.Expr, ...] | None:
        """Fast path for a VALUES row of plain literals, ``(1, -2.5, 'a', $1, NULL, DEFAULT)``:
        the row, or None (nothing consumed) if it holds anything else, in which case the
        general path parses it, errors included. Each item is a literal token, optionally
        after "-", and is followed by "," or ")", where the general path would build just
        the same node."""
        tokens, keys, i = self.tokens, self.keys, self.i
        if keys[i] != "(":
            return None
        items: list[ast.Expr] = []
        while True:
            i += 1
            tok = tokens[i]
            literal = _LITERALS.get(tok.kind)
            if literal is not None:
                item = literal(tok.value)
            else:
                key = keys[i]
                if key == "null":
                    item = ast.NullLiteral()
                elif key == "true" or key == "false":
                    item = ast.BoolLiteral(key == "true")
                elif key == "default":
                    item = ast.DefaultExpr()
                elif key == "-" and tokens[i + 1].kind in _NEGATABLE_LITERALS:
                    i += 1
                    item = _negate(_LITERALS[tokens[i].kind](tokens[i].value))
                else:  # not a literal (EOF included: its key is None)
                    return None
            items.append(item)
            i += 1  # i was a literal, not EOF, so this is at most the EOF token
            key = keys[i]
            if key == ")":
                self.i = i + 1
                return tuple(items)
            if key != ",":
                return None

    def expr_or_default(self) -> ast.Expr:
        if self.accept_kw("default"):
            return ast.DefaultExpr()
        return self.expr()

    def on_conflict(self) -> ast.OnConflict:
        self.expect_kw("on")
        self.expect_kw("conflict")
        columns = self.column_names() if self.at_op("(") else ()
        self.expect_kw("do")
        do_tok = self.peek()
        if self.expect_kw("nothing", "update") == "nothing":
            return ast.OnConflict(columns, do_nothing=True)
        if not columns:
            self.fail("ON CONFLICT DO UPDATE requires conflict columns", do_tok,
                      hint="write ON CONFLICT (col, ...) DO UPDATE SET ...")
        self.expect_kw("set")
        assignments = self.comma_list(self.assignment)
        where = self.expr() if self.accept_kw("where") else None
        return ast.OnConflict(columns, False, assignments, where)

    def assignment(self) -> ast.Assignment:
        column = self.name("a column name")
        if self.at_op("."):
            self.fail("qualified column names are not allowed in SET")
        self.expect_op("=")
        return ast.Assignment(column, self.expr_or_default())

    def update(self) -> ast.Update:
        self.expect_kw("update")
        table = self.table_name()
        self.expect_kw("set")
        assignments = self.comma_list(self.assignment)
        where = self.expr() if self.accept_kw("where") else None
        return ast.Update(table, assignments, where, self.returning())

    def delete(self) -> ast.Delete:
        self.expect_kw("delete")
        self.expect_kw("from")
        table = self.table_name()
        where = self.expr() if self.accept_kw("where") else None
        return ast.Delete(table, where, self.returning())

    # --- DDL -------------------------------------------------------------------------------

    def if_not_exists(self) -> bool:
        if self.at_kw("if"):
            self.advance()
            self.expect_kw("not")
            self.expect_kw("exists")
            return True
        return False

    def if_exists(self) -> bool:
        if self.at_kw("if"):
            self.advance()
            self.expect_kw("exists")
            return True
        return False

    def drop_behavior(self) -> str | None:
        return self.accept_kw("cascade", "restrict")

    def create(self) -> ast.Statement:
        self.expect_kw("create")
        if self.accept_kw("database"):
            if_not_exists = self.if_not_exists()
            return ast.CreateDatabase(self.name("a database name"), if_not_exists)
        if self.accept_kw("table"):
            return self.create_table()
        if self.at_kw("unique", "index"):
            return self.create_index()
        self.fail("expected DATABASE, TABLE or INDEX after CREATE")

    def create_table(self) -> ast.CreateTable:
        if_not_exists = self.if_not_exists()
        table = self.table_name()
        if self.at_kw("as"):
            self.fail("CREATE TABLE ... AS is not supported")
        self.expect_op("(")
        elements: list[ast.TableElement] = []
        if not self.at_op(")"):
            elements = list(self.comma_list(self.table_element))
        self.expect_op(")")
        return ast.CreateTable(table, tuple(elements), if_not_exists)

    def table_element(self) -> ast.TableElement:
        name = None
        if self.accept_kw("constraint"):
            name = self.name("a constraint name")
            if not self.at_kw("primary", "unique"):
                self.fail("expected PRIMARY KEY or UNIQUE",
                          hint="only primary key and unique constraints are supported")
        if self.accept_kw("primary"):
            self.expect_kw("key")
            return ast.PrimaryKeyDef(self.index_columns(), name)
        if self.accept_kw("unique"):
            if self.accept_kw("index") and name is None and not self.at_op("("):
                name = self.name("an index name")
            return ast.IndexDef(self.index_columns(), name, True, self.storing())
        if self.accept_kw("index"):
            if not self.at_op("("):
                name = self.name("an index name")
            return ast.IndexDef(self.index_columns(), name, False, self.storing())
        if self.at_kw("check", "foreign"):
            self.fail(f"{self.peek().text.upper()} constraints are not supported")
        return self.column_def()

    def storing(self) -> tuple[str, ...]:
        if self.accept_kw("storing", "include", "covering"):
            return self.column_names()
        return ()

    def column_def(self) -> ast.ColumnDef:
        name = self.name("a column name")
        type_ = self.type_ref()
        nullable: bool | None = None
        default: ast.Expr | None = None
        primary_key = unique = False
        while True:
            tok = self.peek()
            if self.accept_kw("not"):
                self.expect_kw("null")
                if nullable is True:
                    self.fail(f'conflicting NULL/NOT NULL declarations for column "{name}"', tok)
                nullable = False
            elif self.accept_kw("null"):
                if nullable is False:
                    self.fail(f'conflicting NULL/NOT NULL declarations for column "{name}"', tok)
                nullable = True
            elif self.accept_kw("default"):
                if default is not None:
                    self.fail(f'multiple default values specified for column "{name}"', tok)
                default = self.expr()
            elif self.accept_kw("primary"):
                self.expect_kw("key")
                primary_key = True
            elif self.accept_kw("unique"):
                unique = True
            elif self.at_kw("constraint", "check", "references", "collate", "as", "generated"):
                self.fail(f"column constraint {tok.text.upper()} is not supported")
            else:
                return ast.ColumnDef(name, type_, nullable, default, primary_key, unique)

    def create_index(self) -> ast.CreateIndex:
        unique = self.accept_kw("unique") is not None
        self.expect_kw("index")
        if_not_exists = self.if_not_exists()
        name = None if self.at_kw("on") else self.name("an index name")
        self.expect_kw("on")
        table = self.table_name()
        if self.at_kw("using"):
            self.fail("USING is not supported")
        columns = self.index_columns()
        storing = self.storing()
        if self.at_kw("where"):
            self.fail("partial indexes are not supported")
        return ast.CreateIndex(table, columns, name, unique, storing, if_not_exists)

    def drop(self) -> ast.Statement:
        self.expect_kw("drop")
        if self.accept_kw("database"):
            if_exists = self.if_exists()
            name = self.name("a database name")
            return ast.DropDatabase(name, if_exists, self.drop_behavior())
        if self.accept_kw("table"):
            if_exists = self.if_exists()
            tables = self.comma_list(self.table_name)
            return ast.DropTable(tables, if_exists, self.drop_behavior())
        if self.accept_kw("index"):
            if_exists = self.if_exists()
            indexes = self.comma_list(self.index_name)
            return ast.DropIndex(indexes, if_exists, self.drop_behavior())
        self.fail("expected DATABASE, TABLE or INDEX after DROP")

    def index_name(self) -> ast.IndexName:
        """``idx``, ``t@idx``, ``db.t@idx`` or ``t.idx``."""
        first = self.name("an index name")
        if self.accept_op("@"):
            return ast.IndexName(self.any_name("an index name"), ast.TableName(first))
        if self.accept_op("."):
            second = self.any_name("an index name")
            if self.accept_op("@"):
                return ast.IndexName(self.any_name("an index name"),
                                     ast.TableName(second, first))
            return ast.IndexName(second, ast.TableName(first))
        return ast.IndexName(first)

    # --- Session and transactions ------------------------------------------------------------

    def use(self) -> ast.Use:
        self.expect_kw("use")
        return ast.Use(self.name("a database name"))

    def set_(self) -> ast.Statement:
        self.expect_kw("set")
        if self.accept_kw("cluster"):
            self.expect_kw("setting")
            name = self.dotted_name("a setting name")
            if not self.accept_op("="):
                self.expect_kw("to")
            return ast.SetClusterSetting(name, self.expr_or_default())
        if self.accept_kw("database"):
            if not self.accept_op("="):
                self.expect_kw("to")
            tok = self.peek()
            if tok.kind is TokenKind.STRING:
                self.advance()
                if not tok.value:
                    self.fail("database name must not be empty", tok)
                return ast.Use(str(tok.value))
            return ast.Use(self.name("a database name"))
        self.fail("only SET database and SET CLUSTER SETTING are supported")

    def reset(self) -> ast.ResetClusterSetting:
        self.expect_kw("reset")
        self.expect_kw("cluster")
        self.expect_kw("setting")
        return ast.ResetClusterSetting(self.dotted_name("a setting name"))

    def begin(self) -> ast.Begin:
        if self.accept_kw("start"):
            self.expect_kw("transaction")
        else:
            self.expect_kw("begin")
            self.accept_kw("transaction", "work")
        return ast.Begin(self.as_of() if self.at_as_of() else None)

    def commit(self) -> ast.Commit:
        self.expect_kw("commit", "end")
        self.accept_kw("transaction", "work")
        return ast.Commit()

    def rollback(self) -> ast.Rollback:
        self.expect_kw("rollback")
        self.accept_kw("transaction", "work")
        return ast.Rollback()

    # --- SHOW ------------------------------------------------------------------------------

    def show(self) -> ast.Statement:
        self.expect_kw("show")
        tok = self.peek()
        word = self.accept_kw(
            "databases", "tables", "indexes", "index", "keys", "columns", "create", "cluster",
            "all", "public", "fingerprints", "experimental_fingerprints", "jobs", "job",
            "backups", "backup")
        if word == "databases":
            return ast.ShowDatabases()
        if word == "tables":
            return ast.ShowTables(self.name("a database name") if self.accept_kw("from")
                                  else None)
        if word in ("indexes", "index", "keys"):
            self.expect_kw("from")
            return ast.ShowIndexes(self.table_name())
        if word == "columns":
            self.expect_kw("from")
            return ast.ShowColumns(self.table_name())
        if word == "create":
            self.accept_kw("table")
            return ast.ShowCreateTable(self.table_name())
        if word == "cluster":
            if self.accept_kw("settings"):
                return ast.ShowClusterSettings(all=False)
            self.expect_kw("setting")
            return ast.ShowClusterSetting(self.dotted_name("a setting name"))
        if word in ("all", "public"):
            self.expect_kw("cluster")
            self.expect_kw("settings")
            return ast.ShowClusterSettings(all=word == "all")
        if word in ("fingerprints", "experimental_fingerprints"):
            self.expect_kw("from")
            self.expect_kw("table")
            table = self.table_name()
            as_of = self.as_of() if self.at_as_of() else None
            return ast.ShowFingerprints(table, as_of, word == "experimental_fingerprints")
        if word == "jobs":
            return ast.ShowJobs()
        if word == "job":
            when_complete = False
            if self.accept_kw("when"):
                self.expect_kw("complete")
                when_complete = True
            return ast.ShowJob(self.expr(), when_complete)
        if word == "backups":
            self.expect_kw("in")
            return ast.ShowBackups(self.string_or_placeholder("a backup collection"))
        if word == "backup":
            self.accept_kw("from")
            subdir, latest, collection = self.backup_location()
            return ast.ShowBackup(collection, subdir, latest, self.with_options())
        self.fail("unsupported SHOW statement", tok,
                  hint="supported: SHOW DATABASES, TABLES, INDEXES, COLUMNS, CREATE, "
                       "CLUSTER SETTING(S), FINGERPRINTS, JOBS, JOB, BACKUPS, BACKUP")

    # --- Jobs ------------------------------------------------------------------------------

    def control_job(self) -> ast.Statement:
        word = self.expect_kw("pause", "resume", "cancel")
        self.expect_kw("job")
        job_id = self.expr()
        cls = {"pause": ast.PauseJob, "resume": ast.ResumeJob, "cancel": ast.CancelJob}[word]
        return cls(job_id)

    # --- Bulk operations -------------------------------------------------------------------

    def with_options(self) -> tuple[ast.Option, ...]:
        if not self.accept_kw("with"):
            return ()
        wrapped = self.accept_kw("options") is not None
        if wrapped:
            self.expect_op("(")
        seen: set[str] = set()

        def option() -> ast.Option:
            tok = self.peek()
            name = self.any_name("an option name")
            if name in seen:
                self.fail(f'option "{name}" specified more than once', tok)
            seen.add(name)
            return ast.Option(name, self.expr() if self.accept_op("=") else None)

        options = self.comma_list(option)
        if wrapped:
            self.expect_op(")")
        return options

    def import_(self) -> ast.Import:
        self.expect_kw("import")
        if not self.at_kw("into"):
            self.fail("expected INTO", hint="write IMPORT INTO t [(cols)] CSV DATA ('uri')")
        self.advance()
        table = self.table_name()
        columns = self.column_names() if self.at_op("(") else ()
        fmt_tok = self.peek()
        if not self.accept_kw("csv"):
            self.fail("expected CSV", fmt_tok, hint="only CSV imports are supported")
        self.expect_kw("data")
        files = self.parenthesized_list(lambda: self.string_or_placeholder("a file URI"))
        return ast.Import(table, columns, files, "csv", self.with_options())

    def backup_targets(self) -> tuple[tuple[ast.TableName, ...], tuple[str, ...]]:
        if self.accept_kw("database"):
            return (), self.comma_list(lambda: self.name("a database name"))
        if self.accept_kw("table") or self.is_name():
            return self.comma_list(self.table_name), ()
        return (), ()

    def backup_location(self) -> tuple[ast.Expr | None, bool, ast.Expr]:
        """``LATEST IN collection`` or ``subdir IN collection``: (subdir, latest, collection)."""
        if self.accept_kw("latest"):
            subdir, latest = None, True
        else:
            subdir, latest = self.string_or_placeholder("a backup subdirectory"), False
        if not self.at_kw("in"):
            self.fail("expected IN",
                      hint="name the backup as LATEST IN 'collection' or 'subdir' IN "
                           "'collection'")
        self.advance()
        return subdir, latest, self.string_or_placeholder("a backup collection")

    def backup(self) -> ast.Backup:
        self.expect_kw("backup")
        tables, databases = self.backup_targets()
        if self.at_kw("to"):
            self.fail("BACKUP ... TO is not supported",
                      hint="use BACKUP ... INTO 'collection'")
        self.expect_kw("into")
        subdir, latest = None, False
        if self.accept_kw("latest"):
            self.expect_kw("in")
            latest = True
            collection = self.string_or_placeholder("a backup collection")
        else:
            collection = self.string_or_placeholder("a backup collection")
            if self.accept_kw("in"):
                subdir = collection
                collection = self.string_or_placeholder("a backup collection")
        as_of = self.as_of() if self.at_as_of() else None
        return ast.Backup(collection, tables, databases, subdir, latest, as_of,
                          self.with_options())

    def restore(self) -> ast.Restore:
        self.expect_kw("restore")
        tables, databases = self.backup_targets()
        self.expect_kw("from")
        subdir, latest, collection = self.backup_location()
        as_of = self.as_of() if self.at_as_of() else None
        return ast.Restore(collection, tables, databases, subdir, latest, as_of,
                           self.with_options())

    _STATEMENTS: dict[str, Callable[[_Parser], ast.Statement]] = {
        "select": select, "insert": insert, "upsert": insert, "update": update,
        "delete": delete, "create": create, "drop": drop, "use": use, "set": set_,
        "reset": reset, "begin": begin, "start": begin, "commit": commit, "end": commit,
        "rollback": rollback, "show": show, "pause": control_job, "resume": control_job,
        "cancel": control_job, "import": import_, "backup": backup, "restore": restore,
    }

    # ---------------------------------------------------------------------------------------
    # Types

    def type_ref(self) -> ast.TypeRef:
        tok = self.peek()
        if tok.kind is not TokenKind.IDENT or tok.value not in _TYPES:
            if tok.kind in (TokenKind.IDENT, TokenKind.QIDENT):
                self.fail(f'unknown type "{tok.value}"')
            self.fail("expected a type name")
        self.advance()
        word = str(tok.value)
        canonical, arg_kind, serial = _TYPES[word]
        if word == "double":
            self.expect_kw("precision")
        elif word == "character" and self.accept_kw("varying"):
            canonical = "STRING"
        args = self.type_args(canonical, arg_kind)
        if arg_kind == "float" and args:
            canonical, args = ("FLOAT4" if args[0] <= 24 else "FLOAT8"), ()
        if canonical == "CHAR" and not args:
            args = (1,)
        if word == "timestamp" and self.at_kw("with", "without") and self.at_kw("time", k=1):
            with_zone = self.advance().value == "with"
            self.expect_kw("time")
            self.expect_kw("zone")
            canonical = "TIMESTAMPTZ" if with_zone else "TIMESTAMP"
        return ast.TypeRef(canonical, args, serial)

    def type_args(self, canonical: str, kind: str) -> tuple[int, ...]:
        if not self.at_op("("):
            return ()
        open_tok = self.peek()
        if kind == "none":
            self.fail(f"type {canonical} does not take arguments", open_tok)

        def arg() -> int:
            tok = self.peek()
            if tok.kind is not TokenKind.INT:
                self.fail("expected an integer type argument")
            self.advance()
            return int(tok.value)

        args = self.parenthesized_list(arg)
        limits = {"length": 1, "decimal": 2, "float": 1, "precision": 1}
        if len(args) > limits[kind]:
            self.fail(f"too many arguments for type {canonical}", open_tok)
        if kind == "length" and args[0] < 1:
            self.fail(f"length for type {canonical} must be at least 1", open_tok)
        if kind == "decimal":
            if args[0] < 1:
                self.fail("precision for type DECIMAL must be at least 1", open_tok)
            if len(args) == 2 and args[1] > args[0]:
                self.fail("scale for type DECIMAL must be between 0 and precision", open_tok)
        if kind == "float" and not 1 <= args[0] <= 53:
            self.fail("precision for type FLOAT must be between 1 and 53", open_tok)
        if kind == "precision" and args[0] > 6:
            self.fail(f"precision for type {canonical} must be between 0 and 6", open_tok)
        return args

    # ---------------------------------------------------------------------------------------
    # Expressions

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            self.fail(f"expression nested too deeply (more than {MAX_NESTING} levels)")

    def expr(self, min_power: int = 0) -> ast.Expr:
        """Parse an expression whose operators all bind tighter than ``min_power``."""
        self.depth += 1  # enter(), inlined
        if self.depth > MAX_NESTING:
            self.fail(f"expression nested too deeply (more than {MAX_NESTING} levels)")
        try:
            left = self.prefix()
            keys = self.keys
            while True:
                key = keys[self.i]
                power = _INFIX_POWERS.get(key) if key != "not" else self.infix_power()
                if power is None or power <= min_power:
                    return left
                left = self.infix(left, power)
        finally:
            self.depth -= 1

    def infix_power(self) -> int | None:
        key = self.keys[self.i]
        if key == "not":  # NOT IN / NOT BETWEEN / NOT LIKE / NOT ILIKE
            return _CMP if self.at_kw(*_NEGATABLE_INFIX, k=1) else None
        return _INFIX_POWERS.get(key)

    def infix(self, left: ast.Expr, power: int) -> ast.Expr:
        tok = self.advance()
        if tok.kind is TokenKind.OP:
            if tok.value == "::":
                return ast.Cast(left, self.type_ref())
            return ast.BinaryOp(str(tok.value), left, self.expr(power))
        word = str(tok.value)
        if word in ("and", "or"):
            return ast.BinaryOp(word.upper(), left, self.expr(power))
        if word == "is":
            negated = self.accept_kw("not") is not None
            what = self.accept_kw("null", "true", "false")
            if what is None:
                self.fail("expected NULL, TRUE or FALSE after IS")
            if what == "null":
                return ast.IsNull(left, negated)
            return ast.IsBool(left, what == "true", negated)
        negated = word == "not"
        if negated:
            word = str(self.advance().value)
        if word == "in":
            return self.in_rhs(left, negated)
        if word == "between":
            low = self.expr(_CMP)
            self.expect_kw("and")
            return ast.Between(left, low, self.expr(_CMP), negated)
        # LIKE / ILIKE
        pattern = self.expr(_CMP)
        if self.at_kw("escape"):
            self.fail("LIKE ... ESCAPE is not supported")
        return ast.Like(left, pattern, negated, word == "ilike")

    def in_rhs(self, left: ast.Expr, negated: bool) -> ast.Expr:
        if not self.at_op("("):
            self.fail('expected "(" after IN')
        if self.at_kw("select", k=1):
            self.advance()
            query = self.select()
            self.expect_op(")")
            return ast.InSubquery(left, query, negated)
        if self.at_op(")", k=1):
            self.fail("IN requires at least one value", self.peek(1))
        return ast.InList(left, self.parenthesized_list(self.expr), negated)

    def prefix(self) -> ast.Expr:
        key = self.keys[self.i]
        if key == "-":
            self.i += 1
            return _negate(self.expr(_UNARY))
        if key == "+":
            self.i += 1
            return self.expr(_UNARY)
        if key == "not":
            self.i += 1
            return ast.UnaryOp("NOT", self.expr(_NOT))
        return self.primary()

    def primary(self) -> ast.Expr:
        tok = self.tokens[self.i]
        kind = tok.kind
        # A literal is never the EOF token, so consuming it is just self.i += 1.
        literal = _LITERALS.get(kind)
        if literal is not None:
            self.i += 1
            return literal(tok.value)
        if kind is TokenKind.OP and tok.value == "(":
            self.i += 1
            if self.at_kw("select"):
                self.fail("subqueries are only supported as the right side of IN")
            inner = self.expr()
            if self.at_op(","):
                self.fail("row expressions (tuples) are not supported")
            self.expect_op(")")
            return inner
        if kind is TokenKind.IDENT:
            word = str(tok.value)
            if word in ("true", "false"):
                self.advance()
                return ast.BoolLiteral(word == "true")
            if word == "null":
                self.advance()
                return ast.NullLiteral()
            if word == "case":
                return self.case()
            if word == "cast":
                self.advance()
                self.expect_op("(")
                inner = self.expr()
                self.expect_kw("as")
                type_ = self.type_ref()
                self.expect_op(")")
                return ast.Cast(inner, type_)
            if word in _NILADIC_FUNCTIONS:
                self.advance()
                if self.accept_op("("):
                    self.expect_op(")")
                return ast.FuncCall(word)
            if word in _TYPES and self.peek(1).kind is TokenKind.STRING:
                # A typed literal such as TIMESTAMP '2020-01-01 00:00:00'.
                type_ = self.type_ref()
                literal = self.advance()
                return ast.Cast(ast.StringLiteral(str(literal.value)), type_)
            if word in _FUNCTION_KEYWORDS and self.at_op("(", k=1):
                self.advance()
                return self.func_call(word)
        if not self.is_name():
            self.fail("expected an expression")
        return self.name_expr()

    def name_expr(self) -> ast.Expr:
        """A column reference or a function call, both possibly qualified."""
        first = self.peek()
        parts = [str(self.advance().value)]
        while self.at_op(".") and self.peek(1).kind in (TokenKind.IDENT, TokenKind.QIDENT):
            self.advance()
            parts.append(str(self.advance().value))
        if self.at_op("("):
            return self.func_call(".".join(parts))
        if self.at_op(".") and self.at_op("*", k=1):
            self.fail("t.* is only allowed as a select-list item", self.peek(1))
        if len(parts) > 3:
            self.fail("too many dots in column name", first)
        parts.reverse()
        return ast.ColumnRef(*parts)

    def func_call(self, name: str) -> ast.FuncCall:
        self.expect_op("(")
        if self.accept_op(")"):
            return ast.FuncCall(name)
        if self.accept_op("*"):
            self.expect_op(")")
            return ast.FuncCall(name, star=True)
        distinct = self.accept_kw("distinct", "all") == "distinct"
        args = self.comma_list(self.expr)
        if self.at_kw("order"):
            self.fail("ORDER BY inside an aggregate is not supported")
        self.expect_op(")")
        if self.at_kw("over", "filter") and self.at_op("(", k=1):
            self.fail(f"{self.peek().text.upper()} is not supported")
        return ast.FuncCall(name, args, distinct)

    def case(self) -> ast.Case:
        self.expect_kw("case")
        operand = None if self.at_kw("when", "end") else self.expr()
        whens: list[ast.CaseWhen] = []
        while self.accept_kw("when"):
            condition = self.expr()
            self.expect_kw("then")
            whens.append(ast.CaseWhen(condition, self.expr()))
        if not whens:
            self.fail("expected WHEN")
        else_ = self.expr() if self.accept_kw("else") else None
        self.expect_kw("end")
        return ast.Case(operand, tuple(whens), else_)


def _negate(operand: ast.Expr) -> ast.Expr:
    """Unary minus, folded into numeric literals so ``-9223372036854775808`` is one INT8."""
    if isinstance(operand, ast.IntLiteral):
        return ast.IntLiteral(-operand.value)
    if isinstance(operand, ast.DecimalLiteral):
        text = operand.text
        return ast.DecimalLiteral(text[1:] if text.startswith("-") else "-" + text)
    return ast.UnaryOp("-", operand)
