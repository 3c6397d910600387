"""SQL text of an expression: how DEFAULT expressions are stored and SHOW CREATE prints them."""

from __future__ import annotations

from tidemark.sql import ast

_PREC = {"OR": 1, "AND": 2, "=": 4, "<>": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "||": 5,
         "+": 6, "-": 6, "*": 7, "/": 7, "%": 7}


def quote_ident(name: str) -> str:
    if name.isidentifier() and name == name.lower() and name.isascii():
        return name
    return '"' + name.replace('"', '""') + '"'


def format_type(t: ast.TypeRef) -> str:
    return t.name + (f"({', '.join(str(a) for a in t.args)})" if t.args else "")


def format_expr(node: ast.Expr) -> str:
    if isinstance(node, ast.IntLiteral):
        return str(node.value)
    if isinstance(node, ast.DecimalLiteral):
        return node.text
    if isinstance(node, ast.StringLiteral):
        return "'" + node.value.replace("'", "''") + "'"
    if isinstance(node, ast.BytesLiteral):
        return f"x'{node.value.hex()}'"
    if isinstance(node, ast.BoolLiteral):
        return "true" if node.value else "false"
    if isinstance(node, ast.NullLiteral):
        return "NULL"
    if isinstance(node, ast.Placeholder):
        return f"${node.index}"
    if isinstance(node, ast.ColumnRef):
        return ".".join(quote_ident(p) for p in (node.database, node.table, node.name) if p)
    if isinstance(node, ast.Star):
        return f"{node.table}.*" if node.table else "*"
    if isinstance(node, ast.Cast):
        return f"{_wrap(node.expr, 9)}::{format_type(node.type)}"
    if isinstance(node, ast.FuncCall):
        if node.star:
            return f"{node.name}(*)"
        inner = ", ".join(format_expr(a) for a in node.args)
        return f"{node.name}({'DISTINCT ' if node.distinct else ''}{inner})"
    if isinstance(node, ast.BinaryOp):
        p = _PREC[node.op]
        return f"{_wrap(node.left, p)} {node.op} {_wrap(node.right, p + 1)}"
    if isinstance(node, ast.UnaryOp):
        return f"NOT {_wrap(node.operand, 3)}" if node.op == "NOT" else \
            f"-{_wrap(node.operand, 8)}"
    if isinstance(node, ast.IsNull):
        return f"{_wrap(node.expr, 4)} IS {'NOT ' if node.negated else ''}NULL"
    if isinstance(node, ast.IsBool):
        return (f"{_wrap(node.expr, 4)} IS {'NOT ' if node.negated else ''}"
                f"{'TRUE' if node.value else 'FALSE'}")
    if isinstance(node, ast.InList):
        items = ", ".join(format_expr(i) for i in node.items)
        return f"{_wrap(node.expr, 4)} {'NOT ' if node.negated else ''}IN ({items})"
    if isinstance(node, ast.Between):
        return (f"{_wrap(node.expr, 4)} {'NOT ' if node.negated else ''}BETWEEN "
                f"{_wrap(node.low, 5)} AND {_wrap(node.high, 5)}")
    if isinstance(node, ast.Like):
        op = "ILIKE" if node.case_insensitive else "LIKE"
        return f"{_wrap(node.expr, 4)} {'NOT ' if node.negated else ''}{op} {_wrap(node.pattern, 5)}"
    if isinstance(node, ast.Case):
        parts = ["CASE"] + ([format_expr(node.operand)] if node.operand else [])
        for w in node.whens:
            parts += ["WHEN", format_expr(w.condition), "THEN", format_expr(w.result)]
        if node.else_ is not None:
            parts += ["ELSE", format_expr(node.else_)]
        return " ".join([*parts, "END"])
    raise TypeError(f"cannot format {type(node).__name__}")


def _wrap(node: ast.Expr, min_prec: int) -> str:
    text = format_expr(node)
    if isinstance(node, ast.BinaryOp) and _PREC[node.op] < min_prec:
        return f"({text})"
    if isinstance(node, (ast.IsNull, ast.IsBool, ast.InList, ast.Between, ast.Like,
                         ast.UnaryOp)) and min_prec > 3:
        return f"({text})"
    return text
