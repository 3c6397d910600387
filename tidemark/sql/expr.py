"""Expression compilation: an AST expression becomes a Python closure over a row.

A row is a list of values; a ``Scope`` says which position holds which column. Compiling once
per statement and calling the closure per row keeps evaluation cheap. SQL's three-valued logic
holds throughout: NULL is ``None``, comparisons with NULL give NULL, and ``WHERE`` keeps a row
only when its condition is ``True``.

``replacements`` maps whole sub-expressions (GROUP BY keys, aggregate calls) to positions, which
is how aggregation reuses this compiler: the "row" is then a group's keys and aggregates.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, DivisionByZero, InvalidOperation
from typing import Any

from tidemark.catalog.rowcodec import JSONValue
from tidemark.catalog.types import (
    ColumnType,
    Family,
    coerce,
    format_value,
    type_from_ref,
    type_name,
)
from tidemark.clock import format_ts, ts_to_datetime
from tidemark.errors import SQLError
from tidemark.sql import ast

Fn = Callable[[Sequence[Any]], Any]

AGGREGATES = frozenset({"count", "sum", "min", "max", "avg"})
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


@dataclass
class ScopeColumn:
    name: str
    type: ColumnType | None
    table: str | None = None


@dataclass
class Scope:
    """Columns visible to an expression, by position in the row."""

    columns: list[ScopeColumn] = field(default_factory=list)

    def resolve(self, ref: ast.ColumnRef) -> int:
        matches = [i for i, c in enumerate(self.columns)
                   if c.name == ref.name and (ref.table is None or ref.table == c.table)]
        if not matches:
            shown = f"{ref.table}.{ref.name}" if ref.table else ref.name
            raise SQLError(f'column "{shown}" does not exist', code="42703")
        if len(matches) > 1:
            raise SQLError(f'column reference "{ref.name}" is ambiguous', code="42702")
        return matches[0]


@dataclass
class Context:
    """What an expression may need besides its row: parameters and the statement's clock."""

    params: Sequence[Any] = ()
    read_ts: int = 0  # what the statement reads at: cluster_logical_timestamp()
    now: int = 0  # the statement's time: now(); read_ts when reading the past
    unique_rowid: Callable[[], int] | None = None


def _err_type(op: str, a: Any, b: Any) -> SQLError:
    return SQLError(f"unsupported binary operator: <{type_name(a)}> {op} <{type_name(b)}>",
                    code="42883")


def _check_int(v: int) -> int:
    if not INT64_MIN <= v <= INT64_MAX:
        raise SQLError("integer out of range", code="22003")
    return v


def _numeric_pair(a: Any, b: Any) -> tuple[Any, Any]:
    """Promote mixed numeric operands: int+decimal -> decimal, anything+float -> float."""
    ta, tb = type(a), type(b)
    if ta is tb:
        return a, b
    if ta is float or tb is float:
        return float(a), float(b)
    if ta is Decimal or tb is Decimal:
        return Decimal(a), Decimal(b)
    return a, b


def _arith(op: str) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float, Decimal)) \
                or not isinstance(b, (int, float, Decimal)):
            if op == "+" and isinstance(a, dt.datetime) and isinstance(b, dt.timedelta):
                return a + b
            raise _err_type(op, a, b)
        a, b = _numeric_pair(a, b)
        try:
            if op == "+":
                r = a + b
            elif op == "-":
                r = a - b
            elif op == "*":
                r = a * b
            elif op == "/":
                if b == 0:
                    raise SQLError("division by zero", code="22012")
                if isinstance(a, int):  # INT / INT is DECIMAL in CockroachDB
                    return Decimal(a) / Decimal(b)
                r = a / b
            else:  # %
                if b == 0:
                    raise SQLError("division by zero", code="22012")
                if isinstance(a, int):
                    r = int(math.fmod(a, b)) if abs(a) < 2**52 else a - b * int(a / b)
                elif isinstance(a, Decimal):
                    r = a % b
                else:
                    r = math.fmod(a, b)
        except (DivisionByZero, InvalidOperation):
            raise SQLError("division by zero", code="22012") from None
        return _check_int(r) if isinstance(r, int) else r
    return apply


_CMP = {"=": operator.eq, "<>": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge}


def compare(op: str, a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    try:
        if isinstance(a, JSONValue) and isinstance(b, JSONValue) and op in ("=", "<>"):
            return _CMP[op](a.document, b.document)
        if (type(a) is not type(b) and not (_is_num(a) and _is_num(b))):
            raise TypeError
        return _CMP[op](a, b)
    except TypeError:
        raise SQLError(f"unsupported comparison operator: <{type_name(a)}> {op} <{type_name(b)}>",
                       code="42883") from None


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)


def like_regex(pattern: str, case_insensitive: bool) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.S | (re.I if case_insensitive else 0))


def literal_value(node: ast.Expr, ctx: Context) -> Any:
    """The value of a constant expression node (literal or placeholder)."""
    if isinstance(node, ast.IntLiteral):
        return node.value
    if isinstance(node, ast.DecimalLiteral):
        return node.value
    if isinstance(node, (ast.StringLiteral, ast.BytesLiteral, ast.BoolLiteral)):
        return node.value
    if isinstance(node, ast.NullLiteral):
        return None
    if isinstance(node, ast.Placeholder):
        if node.index > len(ctx.params):
            raise SQLError(f"no value given for placeholder ${node.index}", code="08P01",
                           hint=f"pass {node.index} parameter(s) to execute()")
        return ctx.params[node.index - 1]
    raise TypeError(node)


def is_constant(node: ast.Expr) -> bool:
    return isinstance(node, (ast.IntLiteral, ast.DecimalLiteral, ast.StringLiteral,
                             ast.BytesLiteral, ast.BoolLiteral, ast.NullLiteral,
                             ast.Placeholder))


def contains_aggregate(node: ast.Node) -> bool:
    if isinstance(node, ast.FuncCall) and node.name in AGGREGATES:
        return True
    return any(contains_aggregate(c) for c in children(node))


def aggregate_calls(node: ast.Node, out: list[ast.FuncCall]) -> None:
    if isinstance(node, ast.FuncCall) and node.name in AGGREGATES:
        if node not in out:
            out.append(node)
        return
    for c in children(node):
        aggregate_calls(c, out)


def children(node: ast.Node) -> list[ast.Node]:
    if isinstance(node, ast.BinaryOp):
        return [node.left, node.right]
    if isinstance(node, ast.UnaryOp):
        return [node.operand]
    if isinstance(node, (ast.IsNull, ast.IsBool, ast.Cast)):
        return [node.expr]
    if isinstance(node, ast.InList):
        return [node.expr, *node.items]
    if isinstance(node, ast.Between):
        return [node.expr, node.low, node.high]
    if isinstance(node, ast.Like):
        return [node.expr, node.pattern]
    if isinstance(node, ast.FuncCall):
        return list(node.args)
    if isinstance(node, ast.Case):
        out: list[ast.Node] = [] if node.operand is None else [node.operand]
        for w in node.whens:
            out += [w.condition, w.result]
        return out + ([] if node.else_ is None else [node.else_])
    return []


class Compiler:
    """Compiles expressions against one scope with one context."""

    def __init__(self, scope: Scope, ctx: Context,
                 replacements: dict[ast.Expr, int] | None = None,
                 allow_aggregates: bool = False):
        self.scope = scope
        self.ctx = ctx
        self.replacements = replacements or {}
        self.allow_aggregates = allow_aggregates

    def condition(self, node: ast.Expr, clause: str = "WHERE") -> Fn:
        """A predicate: its value must be a BOOL (or NULL), else a type error."""
        fn = self.compile(node)

        def check(row: Sequence[Any]) -> Any:
            v = fn(row)
            if v is True or v is False or v is None:
                return v
            raise SQLError(f"argument of {clause} must be type bool, not type {type_name(v)}",
                           code="42804")
        return check

    def static_type(self, node: ast.Expr) -> ColumnType | None:
        if node in self.replacements:
            return None
        if isinstance(node, ast.ColumnRef):
            try:
                return self.scope.columns[self.scope.resolve(node)].type
            except SQLError:
                return None
        if isinstance(node, ast.Cast):
            return type_from_ref(node.type.name, node.type.args)
        return None

    def constant_for(self, const: ast.Expr, other: ast.Expr) -> Any:
        """A constant, cast to the type of what it is compared with (as CockroachDB types
        untyped constants by context): ``'5' = int_col`` compares integers."""
        value = literal_value(const, self.ctx)
        typ = self.static_type(other)
        if typ is None or value is None:
            return value
        if isinstance(value, str) or (typ.family is Family.FLOAT and _is_num(value)) or (
                typ.family is Family.DECIMAL and _is_num(value) and
                not isinstance(value, float)):
            return coerce(value, typ, getattr(other, "name", "?"))
        return value

    def compile(self, node: ast.Expr) -> Fn:
        if node in self.replacements:
            pos = self.replacements[node]
            return lambda row: row[pos]
        if is_constant(node):
            value = literal_value(node, self.ctx)
            return lambda row: value
        if isinstance(node, ast.ColumnRef):
            pos = self.scope.resolve(node)
            return lambda row: row[pos]
        if isinstance(node, ast.BinaryOp):
            return self._binary(node)
        if isinstance(node, ast.UnaryOp):
            inner = self.compile(node.operand)
            if node.op == "NOT":
                def not_(row: Sequence[Any]) -> Any:
                    v = inner(row)
                    return None if v is None else not _truth(v)
                return not_

            def neg(row: Sequence[Any]) -> Any:
                v = inner(row)
                if v is None:
                    return None
                if not _is_num(v):
                    raise SQLError(f"unsupported unary operator: -<{type_name(v)}>", code="42883")
                return _check_int(-v) if isinstance(v, int) else -v
            return neg
        if isinstance(node, ast.IsNull):
            inner, neg_ = self.compile(node.expr), node.negated
            return lambda row: (inner(row) is None) != neg_
        if isinstance(node, ast.IsBool):
            inner, want, neg_ = self.compile(node.expr), node.value, node.negated
            return lambda row: (inner(row) is want) != neg_
        if isinstance(node, ast.InList):
            return self._in_list(node)
        if isinstance(node, ast.Between):
            lo = ast.BinaryOp(">=", node.expr, node.low)
            hi = ast.BinaryOp("<=", node.expr, node.high)
            both: ast.Expr = ast.BinaryOp("AND", lo, hi)
            if node.negated:
                both = ast.UnaryOp("NOT", both)
            return self.compile(both)
        if isinstance(node, ast.Like):
            return self._like(node)
        if isinstance(node, ast.Cast):
            inner = self.compile(node.expr)
            typ = type_from_ref(node.type.name, node.type.args)
            return lambda row: cast(inner(row), typ)
        if isinstance(node, ast.Case):
            return self._case(node)
        if isinstance(node, ast.FuncCall):
            return self._func(node)
        if isinstance(node, ast.Star):
            raise SQLError("* is only allowed in a select list or count(*)", code="42601")
        if isinstance(node, ast.DefaultExpr):
            raise SQLError("DEFAULT is only allowed as a value of INSERT or UPDATE",
                           code="42601")
        if isinstance(node, ast.InSubquery):
            raise SQLError("subqueries are not supported", code="0A000")
        raise SQLError(f"unsupported expression {type(node).__name__}", code="0A000")

    def _binary(self, node: ast.BinaryOp) -> Fn:
        op = node.op
        if op in ("AND", "OR"):
            left, right = self.compile(node.left), self.compile(node.right)
            if op == "AND":
                def and_(row: Sequence[Any]) -> Any:
                    a = left(row)
                    if a is False:
                        return False
                    b = right(row)
                    if b is False:
                        return False
                    if a is None or b is None:
                        return None
                    return _truth(a) and _truth(b)
                return and_

            def or_(row: Sequence[Any]) -> Any:
                a = left(row)
                if a is True:
                    return True
                b = right(row)
                if b is True:
                    return True
                if a is None or b is None:
                    return None
                return _truth(a) or _truth(b)
            return or_
        left_node, right_node = node.left, node.right
        if op in _CMP:
            if is_constant(right_node) and not is_constant(left_node):
                value = self.constant_for(right_node, left_node)
                left = self.compile(left_node)
                fn = _CMP[op]
                if value is None:
                    return lambda row: None

                def cmp_const(row: Sequence[Any]) -> Any:
                    a = left(row)
                    if a is None:
                        return None
                    if type(a) is type(value):
                        return fn(a, value)
                    return compare(op, a, value)
                return cmp_const
            if is_constant(left_node) and not is_constant(right_node):
                value = self.constant_for(left_node, right_node)
                right = self.compile(right_node)
                return lambda row: compare(op, value, right(row))
            left, right = self.compile(left_node), self.compile(right_node)
            return lambda row: compare(op, left(row), right(row))
        left, right = self.compile(left_node), self.compile(right_node)
        if op == "||":
            def concat(row: Sequence[Any]) -> Any:
                a, b = left(row), right(row)
                if a is None or b is None:
                    return None
                if isinstance(a, bytes) and isinstance(b, bytes):
                    return a + b
                return _to_text(a) + _to_text(b)
            return concat
        arith = _arith(op)
        return lambda row: arith(left(row), right(row))

    def _in_list(self, node: ast.InList) -> Fn:
        inner = self.compile(node.expr)
        negated = node.negated
        if all(is_constant(i) for i in node.items):
            values = [self.constant_for(i, node.expr) for i in node.items]
            has_null = any(v is None for v in values)
            non_null = [v for v in values if v is not None]
            try:
                lookup: set[Any] | None = set(non_null)
            except TypeError:
                lookup = None

            def in_const(row: Sequence[Any]) -> Any:
                v = inner(row)
                if v is None:
                    return None
                if lookup is not None and type(v) in (int, str, bytes, bool, uuid.UUID) and \
                        all(type(x) is type(v) for x in non_null):
                    found = v in lookup
                else:
                    found = any(compare("=", v, x) for x in non_null)
                if found:
                    return not negated
                return None if has_null else negated
            return in_const
        items = [self.compile(i) for i in node.items]

        def in_list(row: Sequence[Any]) -> Any:
            v = inner(row)
            if v is None:
                return None
            saw_null = False
            for item in items:
                r = compare("=", v, item(row))
                if r is None:
                    saw_null = True
                elif r:
                    return not negated
            return None if saw_null else negated
        return in_list

    def _like(self, node: ast.Like) -> Fn:
        inner = self.compile(node.expr)
        negated, ci = node.negated, node.case_insensitive
        if is_constant(node.pattern):
            pattern = literal_value(node.pattern, self.ctx)
            if pattern is None:
                return lambda row: None
            rx = like_regex(str(pattern), ci)

            def like_const(row: Sequence[Any]) -> Any:
                v = inner(row)
                if v is None:
                    return None
                if not isinstance(v, str):
                    raise SQLError(f"unsupported comparison operator: <{type_name(v)}> LIKE "
                                   "<string>", code="42883")
                return (rx.fullmatch(v) is not None) != negated
            return like_const
        pat = self.compile(node.pattern)

        def like(row: Sequence[Any]) -> Any:
            v, p = inner(row), pat(row)
            if v is None or p is None:
                return None
            return (like_regex(str(p), ci).fullmatch(str(v)) is not None) != negated
        return like

    def _case(self, node: ast.Case) -> Fn:
        operand = None if node.operand is None else self.compile(node.operand)
        whens = [(self.compile(w.condition), self.compile(w.result)) for w in node.whens]
        else_ = None if node.else_ is None else self.compile(node.else_)

        def case(row: Sequence[Any]) -> Any:
            base = operand(row) if operand is not None else None
            for cond, result in whens:
                c = cond(row)
                if (compare("=", base, c) if operand is not None else c) is True:
                    return result(row)
            return None if else_ is None else else_(row)
        return case

    def _func(self, node: ast.FuncCall) -> Fn:
        name = node.name
        if name in AGGREGATES:
            raise SQLError(f"aggregate function {name}() is not allowed here", code="42803")
        args = [self.compile(a) for a in node.args]
        ctx = self.ctx

        def arity(*counts: int) -> None:
            if len(args) not in counts:
                raise SQLError(f"wrong number of arguments for {name}(): {len(args)}",
                               code="42883")

        if name in ("now", "current_timestamp", "statement_timestamp",
                    "transaction_timestamp", "localtimestamp"):
            arity(0)
            return lambda row: ts_to_datetime(ctx.now)
        if name == "current_date":
            arity(0)
            return lambda row: ts_to_datetime(ctx.now).date()
        if name == "cluster_logical_timestamp":
            arity(0)
            return lambda row: Decimal(format_ts(ctx.read_ts))
        if name == "unique_rowid":
            arity(0)
            if ctx.unique_rowid is None:
                raise SQLError("unique_rowid() is not available here", code="0A000")
            gen = ctx.unique_rowid
            return lambda row: gen()
        if name in ("gen_random_uuid", "uuid_generate_v4"):
            arity(0)
            return lambda row: uuid.uuid4()
        if name == "coalesce":
            def coalesce(row: Sequence[Any]) -> Any:
                for a in args:
                    v = a(row)
                    if v is not None:
                        return v
                return None
            return coalesce
        if name == "nullif":
            arity(2)
            a, b = args
            return lambda row: None if compare("=", a(row), b(row)) else a(row)
        if name in ("lower", "upper", "length", "char_length", "abs", "btrim", "trim"):
            arity(1)
            (a,) = args
            fn: Callable[[Any], Any] = {
                "lower": str.lower, "upper": str.upper, "length": len, "char_length": len,
                "abs": abs, "btrim": str.strip, "trim": str.strip}[name]

            def unary(row: Sequence[Any]) -> Any:
                v = a(row)
                if v is None:
                    return None
                try:
                    return fn(v)
                except TypeError:
                    raise SQLError(f"unknown signature: {name}({type_name(v)})",
                                   code="42883") from None
            return unary
        if name in ("substr", "substring"):
            arity(2, 3)

            def substr(row: Sequence[Any]) -> Any:
                vals = [a(row) for a in args]
                if any(v is None for v in vals):
                    return None
                s, start = vals[0], vals[1]
                begin = max(start - 1, 0)
                if len(vals) == 3:
                    end = start - 1 + vals[2]
                    return s[begin:max(end, 0)]
                return s[begin:]
            return substr
        if name == "concat":
            return lambda row: "".join(_to_text(v) for v in (a(row) for a in args)
                                       if v is not None)
        if name in ("greatest", "least"):
            pick = max if name == "greatest" else min

            def extreme(row: Sequence[Any]) -> Any:
                vals = [v for v in (a(row) for a in args) if v is not None]
                return pick(vals) if vals else None
            return extreme
        raise SQLError(f"unknown function: {name}()", code="42883")


def _truth(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise SQLError(f"argument of a condition must be type bool, not {type_name(v)}",
                   code="42804")


def _to_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    return format_value(v)


def cast(value: Any, typ: ColumnType) -> Any:
    """An explicit CAST: more permissive than assignment (numbers to strings, and so on)."""
    if value is None:
        return None
    f = typ.family
    if f is Family.STRING and not isinstance(value, str):
        return coerce(format_value(value), typ)
    if f is Family.INT and isinstance(value, (float, Decimal)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise SQLError(f"{value} out of range for INT", code="22003")
        return coerce(int(Decimal(value).to_integral_value(rounding="ROUND_HALF_EVEN")), typ)
    if f is Family.INT and isinstance(value, bool):
        return int(value)
    if f is Family.BOOL and isinstance(value, int) and not isinstance(value, bool):
        return value != 0
    try:
        return coerce(value, typ)
    except SQLError as exc:
        raise SQLError(f"cannot cast {format_value(value)} to {typ.sql()}: {exc.message}",
                       code=exc.code) from None
