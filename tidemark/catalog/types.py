"""Column types: their names, and the assignment cast of a SQL value into a column.

Values inside tidemark are plain Python objects: INT ``int``, FLOAT ``float``, DECIMAL
``Decimal``, STRING ``str``, BYTES ``bytes``, BOOL ``bool``, TIMESTAMP/TIMESTAMPTZ an aware UTC
``datetime``, DATE ``date``, UUID ``uuid.UUID``, JSONB ``JSONValue``; NULL is ``None``.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from tidemark.catalog.rowcodec import JSONValue
from tidemark.errors import SQLError


class Family(enum.Enum):
    INT = "INT"
    FLOAT = "FLOAT"
    DECIMAL = "DECIMAL"
    STRING = "STRING"
    BYTES = "BYTES"
    BOOL = "BOOL"
    TIMESTAMP = "TIMESTAMP"
    TIMESTAMPTZ = "TIMESTAMPTZ"
    DATE = "DATE"
    UUID = "UUID"
    JSONB = "JSONB"


_INT_BITS = {"INT2": 16, "INT4": 32, "INT8": 64}

# Parser type names (tidemark.sql.ast.TypeRef.name) -> family.
_FAMILY_OF = {
    "INT8": Family.INT, "INT4": Family.INT, "INT2": Family.INT,
    "FLOAT8": Family.FLOAT, "FLOAT4": Family.FLOAT,
    "DECIMAL": Family.DECIMAL, "STRING": Family.STRING, "CHAR": Family.STRING,
    "BYTES": Family.BYTES, "BOOL": Family.BOOL, "TIMESTAMP": Family.TIMESTAMP,
    "TIMESTAMPTZ": Family.TIMESTAMPTZ, "DATE": Family.DATE, "UUID": Family.UUID,
    "JSONB": Family.JSONB,
}


class ColumnType(msgspec.Struct, frozen=True):
    """A column's type: its family and, where the family has them, a width and a scale."""

    family: Family
    name: str  # canonical SQL name: INT8, INT4, FLOAT8, DECIMAL, STRING, CHAR, ...
    width: int = 0  # INT bits; STRING/CHAR max length (0 = none); DECIMAL precision
    scale: int = -1  # DECIMAL scale (-1 = none)

    def sql(self) -> str:
        if self.family is Family.DECIMAL and self.width:
            return (f"DECIMAL({self.width},{self.scale})" if self.scale >= 0
                    else f"DECIMAL({self.width})")
        if self.family is Family.STRING and self.width:
            return f"{'CHAR' if self.name == 'CHAR' else 'STRING'}({self.width})"
        return self.name

    @property
    def key_encodable(self) -> bool:
        return self.family is not Family.JSONB


def type_from_ref(name: str, args: tuple[int, ...] = ()) -> ColumnType:
    """A column type from the parser's normalised type name and arguments."""
    family = _FAMILY_OF.get(name)
    if family is None:
        raise SQLError(f"type {name} is not supported for columns", code="0A000",
                       hint="supported: INT, FLOAT, DECIMAL, STRING, BYTES, BOOL, TIMESTAMP, "
                            "TIMESTAMPTZ, DATE, UUID, JSONB")
    if family is Family.INT:
        return ColumnType(family, name, _INT_BITS[name])
    if family is Family.FLOAT:
        return ColumnType(family, "FLOAT8" if name == "FLOAT8" else "FLOAT4")
    if family is Family.DECIMAL:
        precision = args[0] if args else 0
        scale = args[1] if len(args) > 1 else (0 if args else -1)
        if (args and not 1 <= precision <= 1000) or scale > precision:
            raise SQLError(f"invalid DECIMAL precision/scale {args}", code="22023",
                           hint="DECIMAL(p, s) needs 1 <= p and 0 <= s <= p")
        return ColumnType(family, "DECIMAL", precision, scale)
    if family is Family.STRING:
        return ColumnType(family, name, args[0] if args else (1 if name == "CHAR" else 0))
    if family in (Family.TIMESTAMP, Family.TIMESTAMPTZ):
        return ColumnType(family, family.value)
    return ColumnType(family, family.value)


INT8 = ColumnType(Family.INT, "INT8", 64)
STRING = ColumnType(Family.STRING, "STRING")


def type_name(value: Any) -> str:
    """The SQL name of a value's type, for messages."""
    return {bool: "bool", int: "int", float: "float", Decimal: "decimal", str: "string",
            bytes: "bytes", dt.datetime: "timestamptz", dt.date: "date", uuid.UUID: "uuid",
            JSONValue: "jsonb"}.get(type(value), type(value).__name__)


def _of_column(column: str, word: str) -> str:
    return "" if column == "?" else f" {word} column {column!r}"  # "?": not for a column


def _mismatch(value: Any, typ: ColumnType, column: str) -> SQLError:
    return SQLError(
        f"value type {type_name(value)} doesn't match type {typ.sql()}"
        f"{_of_column(column, 'of')}", code="42804",
        hint=f"use a {typ.sql()} value, or cast it: CAST(... AS {typ.sql()})")


def _parse_error(text: str, typ: ColumnType, column: str, why: str = "") -> SQLError:
    detail = f": {why}" if why else ""
    return SQLError(f"could not parse {text!r} as type {typ.sql()}"
                    f"{_of_column(column, 'for')}{detail}", code="22P02")


def parse_timestamp(text: str) -> dt.datetime:
    s = text.strip().replace("T", " ", 1)
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    value = dt.datetime.fromisoformat(s)
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def coerce(value: Any, typ: ColumnType, column: str = "?") -> Any:
    """The assignment cast of ``value`` into a column of type ``typ``; raises SQLError."""
    if value is None:
        return None
    f = typ.family
    if f is Family.INT:
        if isinstance(value, bool):
            raise _mismatch(value, typ, column)
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise _parse_error(value, typ, column, "invalid syntax") from None
        elif not isinstance(value, int):
            raise _mismatch(value, typ, column)
        bits = typ.width or 64
        if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
            raise SQLError(f"integer {value} out of range for type {typ.sql()} (column "
                           f"{column!r})", code="22003")
        return value
    if f is Family.FLOAT:
        if isinstance(value, bool):
            raise _mismatch(value, typ, column)
        if isinstance(value, (int, float, Decimal)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise _parse_error(value, typ, column) from None
        raise _mismatch(value, typ, column)
    if f is Family.DECIMAL:
        if isinstance(value, bool):
            raise _mismatch(value, typ, column)
        try:
            if isinstance(value, float):
                d = Decimal(repr(value))
            elif isinstance(value, (int, Decimal)):
                d = Decimal(value)
            elif isinstance(value, str):
                d = Decimal(value.strip())
            else:
                raise _mismatch(value, typ, column)
        except InvalidOperation:
            raise _parse_error(str(value), typ, column) from None
        if typ.scale >= 0 and d.is_finite():
            d = d.quantize(Decimal(1).scaleb(-typ.scale), rounding="ROUND_HALF_UP")
            if typ.width and len(d.as_tuple().digits) > typ.width and d != 0:
                raise SQLError(f"value {value} overflows {typ.sql()} (column {column!r})",
                               code="22003")
        return d
    if f is Family.STRING:
        if not isinstance(value, str):
            raise _mismatch(value, typ, column)
        if typ.width and len(value) > typ.width:
            raise SQLError(f"value too long for type {typ.sql()} (column {column!r})",
                           code="22001")
        return value
    if f is Family.BYTES:
        if isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode()
        raise _mismatch(value, typ, column)
    if f is Family.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            s = value.strip().lower()
            if s in ("true", "t", "yes", "on", "1"):
                return True
            if s in ("false", "f", "no", "off", "0"):
                return False
            raise _parse_error(value, typ, column)
        raise _mismatch(value, typ, column)
    if f in (Family.TIMESTAMP, Family.TIMESTAMPTZ):
        if isinstance(value, dt.datetime):
            return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        if isinstance(value, dt.date):
            return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        if isinstance(value, str):
            try:
                return parse_timestamp(value)
            except ValueError:
                raise _parse_error(value, typ, column) from None
        raise _mismatch(value, typ, column)
    if f is Family.DATE:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value.strip())
            except ValueError:
                raise _parse_error(value, typ, column) from None
        raise _mismatch(value, typ, column)
    if f is Family.UUID:
        if isinstance(value, uuid.UUID):
            return value
        try:
            if isinstance(value, str):
                return uuid.UUID(value.strip())
            if isinstance(value, bytes):
                return uuid.UUID(bytes=value)
        except ValueError:
            raise _parse_error(str(value), typ, column) from None
        raise _mismatch(value, typ, column)
    if f is Family.JSONB:
        if isinstance(value, JSONValue):
            return value
        if isinstance(value, str):
            try:
                return JSONValue(json.loads(value))
            except ValueError as exc:
                raise _parse_error(value, typ, column, str(exc)) from None
        if isinstance(value, (dict, list, int, float, bool)):
            return JSONValue(value)
        raise _mismatch(value, typ, column)
    raise AssertionError(f"unhandled family {f}")


def format_value(v: Any) -> str:
    """The text form of a value, as the CLI prints it."""
    if v is None:
        return "NULL"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S") + (f".{v.microsecond:06d}".rstrip("0")
                                                   if v.microsecond else "") + "+00"
    if isinstance(v, bytes):
        return "\\x" + v.hex()
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return repr(v) if v != int(v) or abs(v) >= 1e16 else str(int(v))
    if isinstance(v, JSONValue):
        return json.dumps(v.document, separators=(", ", ": "))
    return str(v)
