"""SELECT: read through an access path, filter, group and aggregate, sort, project, limit."""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

from tidemark.catalog.descriptors import TableDescriptor
from tidemark.catalog.types import ColumnType, type_name
from tidemark.errors import SQLError
from tidemark.kv.txn import Txn
from tidemark.sql import ast
from tidemark.sql.expr import (
    Compiler,
    Context,
    Fn,
    Scope,
    ScopeColumn,
    aggregate_calls,
    children,
    contains_aggregate,
    is_constant,
    literal_value,
)
from tidemark.sql.plan import AccessPath, choose_path, read_rows
from tidemark.sql.result import Result


def table_scope(table: TableDescriptor, alias: str | None) -> Scope:
    return Scope([ScopeColumn(c.name, c.type, alias or table.name) for c in table.columns])


def expand_items(items: Sequence[ast.SelectItem], table: TableDescriptor | None,
                 alias: str | None) -> list[ast.SelectItem]:
    out: list[ast.SelectItem] = []
    for item in items:
        if isinstance(item.expr, ast.Star):
            if table is None:
                raise SQLError("SELECT * with no tables specified is not valid", code="42602")
            if item.expr.table not in (None, alias, table.name):
                raise SQLError(f'no data source matches pattern: {item.expr.table}.*',
                               code="42P01")
            out += [ast.SelectItem(ast.ColumnRef(c.name)) for c in table.visible_columns()]
        else:
            out.append(item)
    return out


def column_name(item: ast.SelectItem) -> str:
    if item.alias:
        return item.alias
    e = item.expr
    while isinstance(e, ast.Cast):
        e = e.expr
    if isinstance(e, ast.ColumnRef):
        return e.name
    if isinstance(e, ast.FuncCall):
        return e.name
    return "?column?"


def referenced_columns(nodes: Iterable[ast.Node | None], table: TableDescriptor) -> set[int]:
    """IDs of the table's columns that expressions mention (what a covering index needs)."""
    ids: set[int] = set()
    stack = [n for n in nodes if n is not None]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.ColumnRef):
            col = table.column(n.name)
            if col is not None:
                ids.add(col.id)
        else:
            stack.extend(children(n))
    return ids


def row_values(table: TableDescriptor) -> Any:
    ids = [c.id for c in table.columns]
    return lambda d: [d.get(i) for i in ids]


def int_clause(node: ast.Expr | None, ctx: Context, what: str) -> int | None:
    if node is None:
        return None
    if not is_constant(node):
        raise SQLError(f"{what} must be a constant", code="42601")
    v = literal_value(node, ctx)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise SQLError(f"argument of {what} must be type int, not {type(v).__name__}",
                       code="42804")
    if v < 0:
        raise SQLError(f"negative value for {what}", code="2201W")
    return v


class _GroupedScope(Scope):
    """Column references outside aggregates must be GROUP BY keys."""

    def resolve(self, ref: ast.ColumnRef) -> int:
        super().resolve(ref)  # unknown columns still say so
        raise SQLError(f'column "{ref.name}" must appear in the GROUP BY clause or be used in '
                       "an aggregate function", code="42803")


def _order_rows(rows: list[tuple[list[Any], Any]], desc: list[bool],
                nulls_first: list[bool | None]) -> list[tuple[list[Any], Any]]:
    def cmp(a: tuple[list[Any], Any], b: tuple[list[Any], Any]) -> int:
        for i, (x, y) in enumerate(zip(a[0], b[0], strict=True)):
            if x == y or (x is None and y is None):
                continue
            nf = nulls_first[i]
            if nf is None:
                nf = not desc[i]  # CockroachDB: NULLs first ascending, last descending
            if x is None:
                return -1 if nf else 1
            if y is None:
                return 1 if nf else -1
            try:
                less = x < y
            except TypeError:
                raise SQLError(f"cannot order values of types {type(x).__name__} and "
                               f"{type(y).__name__}", code="42883") from None
            r = -1 if less else 1
            return -r if desc[i] else r
        return 0
    return sorted(rows, key=functools.cmp_to_key(cmp))


class _Agg:
    __slots__ = ("count", "distinct", "kind", "seen", "value")

    def __init__(self, kind: str, distinct: bool):
        self.kind, self.distinct = kind, distinct
        self.count = 0
        self.value: Any = None
        self.seen: set[Any] | None = set() if distinct else None

    def add(self, v: Any) -> None:
        if self.kind == "count*":
            self.count += 1
            return
        if v is None:
            return
        if self.seen is not None:
            key = repr(v) if isinstance(v, (dict, list)) else v
            if key in self.seen:
                return
            self.seen.add(key)
        self.count += 1
        k = self.kind
        if k in ("sum", "avg"):
            if isinstance(v, bool) or not isinstance(v, (int, float, Decimal)):
                raise SQLError(f"unknown signature: {k}({type_name(v)})", code="42883")
            self.value = v if self.value is None else self.value + v
        elif k == "min":
            if self.value is None or v < self.value:
                self.value = v
        elif k == "max" and (self.value is None or v > self.value):
            self.value = v

    def result(self) -> Any:
        if self.kind in ("count", "count*"):
            return self.count
        if self.kind == "sum":
            return Decimal(self.value) if isinstance(self.value, int) else self.value
        if self.kind == "avg":
            if self.count == 0:
                return None
            if isinstance(self.value, float):
                return self.value / self.count
            return Decimal(self.value) / Decimal(self.count)
        return self.value


def run_select(txn: Txn, stmt: ast.Select, ctx: Context,
               table: TableDescriptor | None) -> Result:
    alias = None
    if stmt.from_ is not None and table is not None:
        alias = stmt.from_.alias or table.name
    scope = table_scope(table, alias) if table is not None else Scope()
    comp = Compiler(scope, ctx)
    items = expand_items(stmt.items, table, alias)
    limit = int_clause(stmt.limit, ctx, "LIMIT")
    offset = int_clause(stmt.offset, ctx, "OFFSET") or 0

    where_fn = comp.condition(stmt.where) if stmt.where is not None else None
    if stmt.where is not None and contains_aggregate(stmt.where):
        raise SQLError("aggregate functions are not allowed in WHERE", code="42803")
    aggregate = bool(stmt.group_by) or stmt.having is not None or any(
        contains_aggregate(i.expr) for i in items) or any(
        contains_aggregate(o.expr) for o in stmt.order_by)

    # ORDER BY may name an output column (by alias or position) instead of an expression.
    aliases = {i.alias: i.expr for i in items if i.alias}
    order_exprs: list[ast.Expr] = []
    for o in stmt.order_by:
        e = o.expr
        if isinstance(e, ast.IntLiteral):
            if not 1 <= e.value <= len(items):
                raise SQLError(f"ORDER BY position {e.value} is not in select list",
                               code="42P10")
            e = items[e.value - 1].expr
        elif isinstance(e, ast.ColumnRef) and e.table is None and e.name in aliases:
            e = aliases[e.name]
        order_exprs.append(e)
    if stmt.distinct:
        selected = {i.expr for i in items}
        for e in order_exprs:
            if e not in selected:
                raise SQLError("for SELECT DISTINCT, ORDER BY expressions must appear in "
                               "select list", code="42P10")
    desc = [o.descending for o in stmt.order_by]
    nulls = [o.nulls_first for o in stmt.order_by]

    source: Iterator[list[Any]]
    path: AccessPath | None = None
    in_order = reverse = False
    if table is None:
        source = iter([[]])
    else:
        needed = referenced_columns([*(i.expr for i in items), stmt.where, *stmt.group_by,
                                     stmt.having, *order_exprs], table)
        hint = stmt.from_.index if stmt.from_ is not None else None
        path = choose_path(table, stmt.where, ctx, needed, hint, alias)
        if order_exprs and not aggregate:
            in_order, reverse = _index_order(table, path, order_exprs, desc, nulls)
        to_list = row_values(table)
        source = (to_list(d) for d in read_rows(txn, table, path, reverse))
    if where_fn is not None:
        source = (r for r in source if where_fn(r) is True)

    if aggregate:
        group_exprs = []
        for g in stmt.group_by:
            if isinstance(g, ast.IntLiteral) and 1 <= g.value <= len(items):
                g = items[g.value - 1].expr
            elif isinstance(g, ast.ColumnRef) and g.table is None and g.name in aliases and \
                    (table is None or table.column(g.name) is None):
                g = aliases[g.name]
            if contains_aggregate(g):
                raise SQLError("aggregate functions are not allowed in GROUP BY",
                               code="42803")
            group_exprs.append(g)
        aggs: list[ast.FuncCall] = []
        for node in [*(i.expr for i in items), stmt.having, *order_exprs]:
            if node is not None:
                aggregate_calls(node, aggs)
        group_fns = [comp.compile(g) for g in group_exprs]
        agg_specs = []
        for a in aggs:
            if a.star:
                agg_specs.append(("count*", False, None))
                continue
            if len(a.args) != 1:
                raise SQLError(f"{a.name}() takes exactly one argument", code="42883")
            if contains_aggregate(a.args[0]):
                raise SQLError("aggregate function calls cannot be nested", code="42803")
            agg_specs.append((a.name, a.distinct, comp.compile(a.args[0])))
        groups: dict[Any, tuple[list[Any], list[_Agg]]] = {}
        for r in source:
            key_vals = [g(r) for g in group_fns]
            try:
                key: Any = tuple(key_vals)
                hash(key)
            except TypeError:
                key = repr(key_vals)
            state = groups.get(key)
            if state is None:
                state = groups[key] = (key_vals, [_Agg(k, d) for k, d, _ in agg_specs])
            for agg, (_, _, fn) in zip(state[1], agg_specs, strict=True):
                agg.add(None if fn is None else fn(r))
        if not groups and not group_exprs:
            groups[()] = ([], [_Agg(k, d) for k, d, _ in agg_specs])
        replacements: dict[ast.Expr, int] = {g: i for i, g in enumerate(group_exprs)}
        for j, a in enumerate(aggs):
            replacements[a] = len(group_exprs) + j
        gcomp = Compiler(_GroupedScope(scope.columns), ctx, replacements)
        having_fn = gcomp.condition(stmt.having, "HAVING") if stmt.having is not None else None
        out_fns = [gcomp.compile(i.expr) for i in items]
        order_fns = [gcomp.compile(e) for e in order_exprs]
        grows = ([*k, *(a.result() for a in aggs_)] for k, aggs_ in groups.values())
        if having_fn is not None:
            grows = (g for g in grows if having_fn(g) is True)
        return _finish(grows, out_fns, order_fns, desc, nulls, stmt, items, comp, limit,
                       offset, in_order=False)

    order_fns = [comp.compile(e) for e in order_exprs]
    if table is not None and path is not None and not stmt.distinct and \
            (not order_fns or in_order) and \
            all(isinstance(i.expr, ast.ColumnRef) for i in items):
        # Plain columns, no sort: project straight from the decoded rows (the scan fast path).
        positions = [scope.resolve(i.expr) for i in items]  # type: ignore[arg-type]
        stop = None if limit is None else offset + limit
        out: list[tuple[Any, ...]] = []
        if where_fn is None:
            ids = [table.columns[p].id for p in positions]
            rows = (tuple(map(d.get, ids)) for d in read_rows(txn, table, path, reverse))
        else:
            get = operator.itemgetter(*positions)
            rows = ((get(r),) if len(positions) == 1 else get(r) for r in source)
        for r in rows:
            out.append(r)
            if stop is not None and len(out) >= stop:
                break
        out = out[offset:stop]
        return Result(columns=[column_name(i) for i in items], rows=out, tag="SELECT",
                      rows_affected=len(out), types=[comp.static_type(i.expr) for i in items])
    out_fns = [comp.compile(i.expr) for i in items]
    return _finish(source, out_fns, order_fns, desc, nulls, stmt, items, comp, limit, offset,
                   in_order)


def _index_order(table: TableDescriptor, path: AccessPath, order: list[ast.Expr],
                 desc: list[bool], nulls: list[bool | None]) -> tuple[bool, bool]:
    """Does reading ``path`` forwards (or backwards) already give ORDER BY's order?"""
    if any(n is not None for n in nulls) or len(order) > len(path.index.column_ids):
        return False, False
    flips = set()
    for e, d, cid, idx_desc in zip(order, desc, path.index.column_ids, path.index.descending,
                                   strict=False):
        if not isinstance(e, ast.ColumnRef):
            return False, False
        col = table.column(e.name)
        if col is None or col.id != cid:
            return False, False
        flips.add(d != idx_desc)
    if len(flips) != 1:
        return False, False
    return True, flips.pop()


def _finish(rows: Iterable[list[Any]], out_fns: list[Fn], order_fns: list[Fn],
            desc: list[bool], nulls: list[bool | None], stmt: ast.Select,
            items: list[ast.SelectItem], comp: Compiler, limit: int | None, offset: int,
            in_order: bool) -> Result:
    names = [column_name(i) for i in items]
    types: list[ColumnType | None] = [comp.static_type(i.expr) for i in items]
    stop = None if limit is None else offset + limit
    if order_fns and not in_order:
        keyed = [([f(r) for f in order_fns], r) for r in rows]
        ordered: Iterable[list[Any]] = (r for _, r in _order_rows(keyed, desc, nulls))
    else:
        ordered = rows
    out: list[tuple[Any, ...]] = []
    seen: set[Any] = set()
    for r in ordered:
        projected = tuple(f(r) for f in out_fns)
        if stmt.distinct:
            try:
                key: Any = projected
                if key in seen:
                    continue
            except TypeError:
                key = repr(projected)
                if key in seen:
                    continue
            seen.add(key)
        out.append(projected)
        if stop is not None and len(out) >= stop:
            break
    out = out[offset:stop]
    return Result(columns=names, rows=out, tag="SELECT", rows_affected=len(out), types=types)
