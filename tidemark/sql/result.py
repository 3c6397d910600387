"""The result of one statement: column names and rows, or a tag and a count."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tidemark.catalog.types import ColumnType


@dataclass
class Result:
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    tag: str = ""
    rows_affected: int = 0
    types: list[ColumnType | None] = field(default_factory=list)
    returns_rows: bool = True
    notices: list[str] = field(default_factory=list)  # shown to the user after the result

    @classmethod
    def command(cls, tag: str, rows_affected: int = 0) -> Result:
        return cls(tag=tag, rows_affected=rows_affected, returns_rows=False)

    @property
    def rowcount(self) -> int:
        return self.rows_affected

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self.rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None
