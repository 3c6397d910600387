"""Access paths: which index a query reads, which key spans, and reading rows through it.

The WHERE clause is split into conjuncts; those of the form ``col op constant``, ``col IN
(constants)``, ``col BETWEEN a AND b`` and ``col IS NULL`` constrain columns. An index whose
leading columns are fixed by equalities (and the next one bounded by a range) is read over just
those spans; the primary index wins ties, since a secondary one may need a lookup of each row.
The whole WHERE clause is still evaluated on every row read, so spans only need to be a
superset of the answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tidemark.catalog.descriptors import Index, IndexState, TableDescriptor
from tidemark.catalog.entries import covered_columns, entry_key
from tidemark.catalog.rowcodec import decode_row
from tidemark.catalog.types import coerce
from tidemark.errors import SQLError
from tidemark.kv.keys import encode_key, index_prefix, prefix_end
from tidemark.kv.txn import Txn
from tidemark.sql import ast
from tidemark.sql.expr import Context, is_constant, literal_value

MAX_POINT_SPANS = 1000
_SKIP = object()
FIRST_CHUNK = 256
MAX_CHUNK = 65536


@dataclass
class ColumnConstraint:
    eq: list[Any] | None = None  # the column is one of these values
    lo: Any = None
    lo_incl: bool = True
    hi: Any = None
    hi_incl: bool = True
    has_lo: bool = False
    has_hi: bool = False


@dataclass
class AccessPath:
    index: Index
    spans: list[tuple[bytes, bytes]]
    covering: bool
    constrained: int = 0  # how many leading index columns the spans fix or bound
    point: bool = False  # every span is at most one row of a unique index
    needed: set[int] = field(default_factory=set)


def conjuncts(where: ast.Expr | None) -> list[ast.Expr]:
    if where is None:
        return []
    if isinstance(where, ast.BinaryOp) and where.op == "AND":
        return conjuncts(where.left) + conjuncts(where.right)
    return [where]


_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "="}


def column_constraints(table: TableDescriptor, where: ast.Expr | None, ctx: Context,
                       alias: str | None) -> dict[int, ColumnConstraint]:
    out: dict[int, ColumnConstraint] = {}

    def column_of(node: ast.Expr) -> int | None:
        if isinstance(node, ast.ColumnRef) and node.table in (None, alias, table.name):
            col = table.column(node.name)
            return None if col is None else col.id
        return None

    def value(cid: int, node: ast.Expr) -> Any:
        """The constant as a value of the column's type, or _SKIP when it is not one (an
        INT column against 2.5, say): that conjunct then narrows nothing, the filter decides."""
        col = table.column_by_id(cid)
        try:
            return coerce(literal_value(node, ctx), col.type, col.name)
        except SQLError:
            return _SKIP

    for c in conjuncts(where):
        if isinstance(c, ast.BinaryOp) and c.op in _FLIP:
            left, right, op = c.left, c.right, c.op
            if is_constant(left) and not is_constant(right):
                left, right, op = right, left, _FLIP[op]
            cid = column_of(left)
            if cid is None or not is_constant(right):
                continue
            v = value(cid, right)
            if v is None or v is _SKIP:
                continue  # col op NULL is never true; the filter drops every row
            cons = out.setdefault(cid, ColumnConstraint())
            if op == "=":
                cons.eq = [v] if cons.eq is None else [x for x in cons.eq if x == v]
            elif op in (">", ">="):
                if not cons.has_lo or v > cons.lo:
                    cons.lo, cons.lo_incl, cons.has_lo = v, op == ">=", True
            elif not cons.has_hi or v < cons.hi:
                cons.hi, cons.hi_incl, cons.has_hi = v, op == "<=", True
        elif isinstance(c, ast.InList) and not c.negated and all(is_constant(i) for i in c.items):
            cid = column_of(c.expr)
            if cid is None:
                continue
            vals = [v for v in (value(cid, i) for i in c.items) if v is not None]
            if _SKIP in vals:
                continue
            cons = out.setdefault(cid, ColumnConstraint())
            uniq = list(dict.fromkeys(vals)) if all(_hashable(v) for v in vals) else vals
            cons.eq = uniq if cons.eq is None else [x for x in cons.eq if x in uniq]
        elif isinstance(c, ast.Between) and not c.negated and is_constant(c.low) and \
                is_constant(c.high):
            cid = column_of(c.expr)
            if cid is None:
                continue
            lo, hi = value(cid, c.low), value(cid, c.high)
            if lo is None or hi is None or lo is _SKIP or hi is _SKIP:
                continue
            cons = out.setdefault(cid, ColumnConstraint())
            if not cons.has_lo or lo > cons.lo:
                cons.lo, cons.lo_incl, cons.has_lo = lo, True, True
            if not cons.has_hi or hi < cons.hi:
                cons.hi, cons.hi_incl, cons.has_hi = hi, True, True
        elif isinstance(c, ast.IsNull) and not c.negated:
            cid = column_of(c.expr)
            if cid is not None:
                out.setdefault(cid, ColumnConstraint()).eq = [None]
    return out


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def _spans_for(table: TableDescriptor, index: Index,
               cons: dict[int, ColumnConstraint]) -> tuple[list[tuple[bytes, bytes]], int, bool]:
    prefix = index_prefix(table.id, index.id)
    eq_lists: list[list[Any]] = []
    for cid in index.column_ids:
        c = cons.get(cid)
        if c is None or c.eq is None:
            break
        eq_lists.append(c.eq)
    combos = 1
    for e in eq_lists:
        combos *= len(e)
    while combos > MAX_POINT_SPANS and eq_lists:
        combos //= max(len(eq_lists[-1]), 1)
        eq_lists.pop()
    n_eq = len(eq_lists)
    dirs = list(index.descending)
    range_col = index.column_ids[n_eq] if n_eq < len(index.column_ids) else None
    rng = cons.get(range_col) if range_col is not None else None
    if rng is not None and not (rng.has_lo or rng.has_hi):
        rng = None
    spans: list[tuple[bytes, bytes]] = []
    for combo in itertools.product(*eq_lists):
        base = encode_key(prefix, list(combo), dirs)
        if rng is None:
            spans.append((base, prefix_end(base)))
            continue
        desc = dirs[n_eq]
        start, end = base, prefix_end(base)

        def bound(v: Any, combo: tuple[Any, ...] = combo) -> bytes:
            return encode_key(prefix, [*combo, v], dirs)

        # Ascending: low values come first. Descending: high values come first.
        low_key = (None if not rng.has_lo else
                   (bound(rng.lo) if rng.lo_incl else prefix_end(bound(rng.lo))))
        high_key = (None if not rng.has_hi else
                    (prefix_end(bound(rng.hi)) if rng.hi_incl else bound(rng.hi)))
        if desc:
            low_key = (None if not rng.has_hi else
                       (bound(rng.hi) if rng.hi_incl else prefix_end(bound(rng.hi))))
            high_key = (None if not rng.has_lo else
                        (prefix_end(bound(rng.lo)) if rng.lo_incl else bound(rng.lo)))
        if low_key is not None:
            start = max(start, low_key)
        if high_key is not None:
            end = min(end, high_key)
        if start < end:
            spans.append((start, end))
    spans.sort()  # in key order (IN lists come in any order): scans then return index order
    point = index.unique and n_eq == len(index.column_ids) and \
        all(v is not None for combo in itertools.product(*eq_lists) for v in combo)
    if index.id == table.primary_index.id:
        point = n_eq == len(index.column_ids)
    return spans, n_eq + (1 if rng is not None else 0), point


def choose_path(table: TableDescriptor, where: ast.Expr | None, ctx: Context,
                needed: set[int], hint: str | None = None,
                alias: str | None = None) -> AccessPath:
    cons = column_constraints(table, where, ctx, alias)
    if hint is not None:
        index = table.index(hint)
        if index is None or (index.state is not IndexState.PUBLIC):
            raise SQLError(f'index "{hint}" not found on table "{table.name}"', code="42704",
                           hint=f"SHOW INDEXES FROM {table.name} lists its indexes")
        candidates = [index]
    else:
        candidates = table.public_indexes()
    best: AccessPath | None = None
    for index in candidates:
        spans, constrained, point = _spans_for(table, index, cons)
        covering = set(covered_columns(table, index)) >= needed
        path = AccessPath(index, spans, covering, constrained, point, needed)
        if best is None or _better(path, best, table):
            best = path
    assert best is not None
    return best


def _better(a: AccessPath, b: AccessPath, table: TableDescriptor) -> bool:
    def score(p: AccessPath) -> tuple[int, int, int, int]:
        return (int(p.point), p.constrained, int(p.covering),
                int(p.index.id == table.primary_index.id))
    return score(a) > score(b)


def read_rows(txn: Txn, table: TableDescriptor, path: AccessPath,
              reverse: bool = False) -> Iterator[dict[int, Any]]:
    """Rows (column ID -> value) read through ``path``, span by span, in index order."""
    primary = path.index.id == table.primary_index.id
    for start, end in (reversed(path.spans) if reverse else path.spans):
        values: Iterator[bytes] | list[bytes]
        if path.point:  # one key: a point read is cheaper than a scan
            found = txn.get(start)
            values = [] if found is None else [found]
        else:
            values = _scan_values(txn, start, end, reverse)
        for value in values:
            row = decode_row(value)
            if not primary and not path.covering:
                full = txn.get(entry_key(table, table.primary_index, row))
                if full is None:
                    raise SQLError(f"index {path.index.name} of table {table.name} has an "
                                   "entry with no row", code="XX000")
                row = decode_row(full)
            yield row


def _scan_values(txn: Txn, start: bytes, end: bytes, reverse: bool) -> Iterator[bytes]:
    """Values of a span in growing chunks, so a LIMIT stops reading early."""
    chunk = FIRST_CHUNK
    while start < end:
        rows = txn.scan(start, end, limit=chunk, reverse=reverse)
        for _, v in rows:
            yield v
        if len(rows) < chunk:
            return
        if reverse:
            end = rows[-1][0]
        else:
            start = rows[-1][0] + b"\x00"
        chunk = min(chunk * 4, MAX_CHUNK)
