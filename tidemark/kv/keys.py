"""Order-preserving key codec: ``/Table/<tableID>/<indexID>/<datums...>``.

A key is a byte string whose memcmp order equals the order of the values it encodes. The
layout follows CockroachDB: the table and index IDs are ordered unsigned varints, then each
key column is one *datum*. Datums are self-delimiting (a key can be split without a schema)
and self-describing (the first byte names the type), so :func:`decode_datums` and
:func:`pretty_key` need no descriptor.

Datum format (``~x`` = ``x`` with every byte inverted; ``P`` = a type's ascending payload)::

    type       ascending                             descending
    NULL       00                                    FF
    int        80..FD  CockroachDB varint            7F ~varint
    float      02 NaN  03 ~bits (<0)  04 zero        09 NaN  08 bits (<0)  07 zero
               05 bits (>0)                          06 ~bits (>0)
    bool       0A false  0B true                     0D false  0C true
    str        10 escaped(utf-8) 00 01               11 ~P
    bytes      12 escaped(bytes) 00 01               13 ~P
    timestamp  14 varint(microseconds since epoch)   15 ~P
    date       16 varint(days since epoch)           17 ~P
    decimal    18 NaN  19 -Inf  1A ~D (<0)  1B zero  23 NaN  22 -Inf  21 D (<0)  20 zero
               1C D (>0)  1D +Inf                    1F ~D (>0)  1E +Inf
    uuid       24 16 bytes                           25 ~P
    reserved   01 (prefix + 01 starts a column's non-NULL values), FE, and FF as the first
               byte of a key (see KEY_MAX)

* ``escaped`` is CockroachDB's: ``00`` -> ``00 FF``, terminated by ``00 01``; inverting it gives
  CockroachDB's descending bytes encoding (``FF`` -> ``FF 00``, terminator ``FF FE``).
* ``varint`` is CockroachDB's ``EncodeVarintAscending``: ``88+n`` for ``0 <= n <= 109``,
  ``F5+len`` then big-endian for larger, ``88-len`` then two's complement for negatives. Its
  first byte encodes the length, which is what makes it usable as a type marker for ints.
* A descending datum is its own marker followed by the *inverted* ascending bytes after the
  ascending marker (for ints, the whole ascending varint, since its marker carries the length).
  Every encoding is prefix-free, so inverting the bytes reverses the order.
* ``D`` encodes a decimal ``0.d1d2...dn x 10^E`` (no trailing zeros, so 1.0 and 1.00 encode
  identically) as ``varint(E) d1..dn 00`` with ASCII digits: ordered by ``E``, then digits.
* Naive datetimes are taken as UTC; decoding yields aware UTC datetimes. Decimals decode in
  normalised form (equal in value, exponent not kept). ``-0.0`` encodes like ``0.0``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import struct
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

__all__ = [
    "KEY_MAX",
    "decode_datums",
    "decode_index_prefix",
    "encode_datum",
    "encode_key",
    "encode_uvarint_ordered",
    "index_prefix",
    "prefix_end",
    "pretty_key",
    "pretty_span",
    "table_prefix",
]

# Keys whose first byte is 0xFF are reserved (table prefixes start at 0x88..0xFD), so KEY_MAX
# sorts after every key that can be stored; prefix_end returns it for an empty prefix.
KEY_MAX = b"\xff"

# --- markers -----------------------------------------------------------------------------------

NULL = 0x00
NOT_NULL = 0x01  # never written: prefix + b"\x01" starts the non-NULL part of a column
FLOAT_NAN, FLOAT_NEG, FLOAT_ZERO, FLOAT_POS = 0x02, 0x03, 0x04, 0x05
FLOAT_POS_DESC, FLOAT_ZERO_DESC, FLOAT_NEG_DESC, FLOAT_NAN_DESC = 0x06, 0x07, 0x08, 0x09
FALSE, TRUE, TRUE_DESC, FALSE_DESC = 0x0A, 0x0B, 0x0C, 0x0D
STRING, STRING_DESC = 0x10, 0x11
BYTES, BYTES_DESC = 0x12, 0x13
TIMESTAMP, TIMESTAMP_DESC = 0x14, 0x15
DATE, DATE_DESC = 0x16, 0x17
DEC_NAN, DEC_NEG_INF, DEC_NEG, DEC_ZERO, DEC_POS, DEC_INF = 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D
DEC_INF_DESC, DEC_POS_DESC, DEC_ZERO_DESC = 0x1E, 0x1F, 0x20
DEC_NEG_DESC, DEC_NEG_INF_DESC, DEC_NAN_DESC = 0x21, 0x22, 0x23
UUID_MARKER, UUID_DESC = 0x24, 0x25
INT_DESC = 0x7F
INT_MIN = 0x80  # first varint marker (8-byte negative)
INT_ZERO = 0x88  # varint marker of 0; table/index IDs use 0x88..0xFD
INT_SMALL = 109  # largest value stored in the marker byte alone
INT_MAX = 0xFD  # last varint marker (8-byte positive)
NULL_DESC = 0xFF

# Ascending marker -> descending marker. Reversing the order of a type's markers plus
# inverting the payload reverses the type's order.
_ASC_TO_DESC = {
    NULL: NULL_DESC,
    FLOAT_NAN: FLOAT_NAN_DESC, FLOAT_NEG: FLOAT_NEG_DESC,
    FLOAT_ZERO: FLOAT_ZERO_DESC, FLOAT_POS: FLOAT_POS_DESC,
    FALSE: FALSE_DESC, TRUE: TRUE_DESC,
    STRING: STRING_DESC, BYTES: BYTES_DESC,
    TIMESTAMP: TIMESTAMP_DESC, DATE: DATE_DESC,
    DEC_NAN: DEC_NAN_DESC, DEC_NEG_INF: DEC_NEG_INF_DESC, DEC_NEG: DEC_NEG_DESC,
    DEC_ZERO: DEC_ZERO_DESC, DEC_POS: DEC_POS_DESC, DEC_INF: DEC_INF_DESC,
    UUID_MARKER: UUID_DESC,
}
_DESC_TO_ASC = {d: a for a, d in _ASC_TO_DESC.items()}
_DESC_MARKER_BYTES = [b""] * 256
for _a, _d in _ASC_TO_DESC.items():
    _DESC_MARKER_BYTES[_a] = bytes((_d,))
_INT_DESC_BYTES = bytes((INT_DESC,))

_INVERT = bytes(range(255, -1, -1))  # translate table: b -> 0xFF - b (== ~b)
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1
_U64_MAX = (1 << 64) - 1

_NULL_B = b"\x00"
_NULL_DESC_B = b"\xff"
_FALSE_B, _TRUE_B = bytes((FALSE,)), bytes((TRUE,))
_FLOAT_NAN_B, _FLOAT_ZERO_B = bytes((FLOAT_NAN,)), bytes((FLOAT_ZERO,))
_FLOAT_POS_B, _FLOAT_NEG_B = bytes((FLOAT_POS,)), bytes((FLOAT_NEG,))
_STRING_B, _BYTES_B = bytes((STRING,)), bytes((BYTES,))
_TIMESTAMP_B, _DATE_B, _UUID_B = bytes((TIMESTAMP,)), bytes((DATE,)), bytes((UUID_MARKER,))
_DEC_NAN_B, _DEC_ZERO_B = bytes((DEC_NAN,)), bytes((DEC_ZERO,))
_DEC_INF_B, _DEC_NEG_INF_B = bytes((DEC_INF,)), bytes((DEC_NEG_INF,))
_DEC_POS_B, _DEC_NEG_B = bytes((DEC_POS,)), bytes((DEC_NEG,))
_TERM = b"\x00\x01"

_pack_double = struct.Struct(">d").pack
_unpack_double = struct.Struct(">d").unpack

_UTC = _dt.UTC
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_UTC)
_EPOCH_NAIVE = _dt.datetime(1970, 1, 1)
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_MIN_MICROS = (_dt.datetime.min - _EPOCH_NAIVE) // _dt.timedelta(microseconds=1)
_MAX_MICROS = (_dt.datetime.max - _EPOCH_NAIVE) // _dt.timedelta(microseconds=1)
_ONE_MICRO = _dt.timedelta(microseconds=1)
_DIGITS_TO_ASCII = bytes((48 + i) % 256 for i in range(256))  # digit 0..9 -> b"0".."9"

# --- varints -----------------------------------------------------------------------------------

_SMALL_INTS = [bytes((INT_ZERO + i,)) for i in range(INT_SMALL + 1)]


def _varint(v: int) -> bytes:
    """CockroachDB's EncodeVarintAscending for any int64 (and uint64 for v >= 0)."""
    if v >= 0:
        if v <= INT_SMALL:
            return _SMALL_INTS[v]
        n = (v.bit_length() + 7) >> 3
        if n > 8:
            raise ValueError(f"integer {v} is out of range for a key (max 2**64-1)")
        return bytes((INT_MAX - 8 + n,)) + v.to_bytes(n, "big")
    n = ((-v).bit_length() + 7) >> 3
    if n > 8 or v < _I64_MIN:
        raise ValueError(f"integer {v} is out of range for a key (min -2**63)")
    # Two's complement truncated to n bytes: -1 -> FF, -255 -> 01; fewer bytes = closer to 0.
    return bytes((INT_ZERO - n,)) + (v + (1 << (n << 3))).to_bytes(n, "big")


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode the varint whose marker is at ``pos``; returns (value, end)."""
    m = buf[pos]
    if INT_ZERO <= m <= INT_ZERO + INT_SMALL:
        return m - INT_ZERO, pos + 1
    if INT_ZERO + INT_SMALL < m <= INT_MAX:
        end = pos + 1 + m - (INT_MAX - 8)
        if end > len(buf):
            raise ValueError("truncated integer in key")
        return int.from_bytes(buf[pos + 1 : end], "big"), end
    if INT_MIN <= m < INT_ZERO:
        n = INT_ZERO - m
        end = pos + 1 + n
        if end > len(buf):
            raise ValueError("truncated integer in key")
        return int.from_bytes(buf[pos + 1 : end], "big") - (1 << (n << 3)), end
    raise ValueError(f"byte 0x{m:02x} at offset {pos} is not an integer marker")


def encode_uvarint_ordered(n: int) -> bytes:
    """Encode ``0 <= n < 2**64`` so byte order is numeric order; 0..109 take one byte."""
    if n < 0:
        raise ValueError(f"encode_uvarint_ordered needs a non-negative integer, got {n}")
    if n > _U64_MAX:
        raise ValueError(f"encode_uvarint_ordered: {n} does not fit in 64 bits")
    return _varint(n)


def _read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf) or not INT_ZERO <= buf[pos] <= INT_MAX:
        raise ValueError("expected an unsigned integer")
    return _read_varint(buf, pos)


# --- table / index prefixes --------------------------------------------------------------------


def table_prefix(table_id: int) -> bytes:
    """``/Table/<table_id>``."""
    return encode_uvarint_ordered(table_id)


@functools.lru_cache(maxsize=4096)
def index_prefix(table_id: int, index_id: int) -> bytes:
    """``/Table/<table_id>/<index_id>`` (cached: it starts every key a write encodes)."""
    return encode_uvarint_ordered(table_id) + encode_uvarint_ordered(index_id)


def index_span(table_id: int, index_id: int) -> tuple[bytes, bytes]:
    """``[start, end)`` of every key of the index."""
    p = index_prefix(table_id, index_id)
    return p, prefix_end(p)


def table_span(table_id: int) -> tuple[bytes, bytes]:
    """``[start, end)`` of every key of the table (all its indexes)."""
    p = table_prefix(table_id)
    return p, prefix_end(p)


def decode_index_prefix(key: bytes) -> tuple[int, int, int]:
    """Return ``(table_id, index_id, offset of the first datum)`` of an index key."""
    try:
        table_id, pos = _read_uvarint(key, 0)
        index_id, pos = _read_uvarint(key, pos)
    except ValueError:
        raise ValueError(
            f"key {key[:24].hex()} does not start with a /Table/<id>/<index> prefix"
        ) from None
    return table_id, index_id, pos


# --- datum encoders (ascending; descending is derived) -----------------------------------------


def _enc_null(_: object) -> bytes:
    return _NULL_B


def _enc_bool(v: bool) -> bytes:
    return _TRUE_B if v else _FALSE_B


def _enc_int(v: int) -> bytes:
    if 0 <= v <= INT_SMALL:
        return _SMALL_INTS[v]
    if not _I64_MIN <= v <= _I64_MAX:
        raise ValueError(f"integer {v} is out of the int64 range and cannot be a key")
    return _varint(v)


def _enc_float(v: float) -> bytes:
    if v != v:
        return _FLOAT_NAN_B
    if v == 0:  # -0.0 == 0.0: one encoding, as in CockroachDB
        return _FLOAT_ZERO_B
    if v > 0:
        return _FLOAT_POS_B + _pack_double(v)
    # IEEE bits of negatives grow with magnitude: invert so more negative sorts first.
    return _FLOAT_NEG_B + _pack_double(v).translate(_INVERT)


def _enc_str(v: str) -> bytes:
    # UTF-8 byte order is code point order; surrogatepass keeps lone surrogates encodable.
    return _STRING_B + v.encode("utf-8", "surrogatepass").replace(b"\x00", b"\x00\xff") + _TERM


def _enc_bytes(v: bytes) -> bytes:
    return _BYTES_B + bytes(v).replace(b"\x00", b"\x00\xff") + _TERM


def _enc_datetime(v: _dt.datetime) -> bytes:
    delta = v - (_EPOCH_NAIVE if v.utcoffset() is None else _EPOCH)
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        raise ValueError(f"timestamp {v!r} is outside the representable UTC range")
    return _TIMESTAMP_B + _varint(micros)


def _enc_date(v: _dt.date) -> bytes:
    return _DATE_B + _varint(v.toordinal() - _EPOCH_ORDINAL)


def _enc_uuid(v: uuid.UUID) -> bytes:
    return _UUID_B + v.bytes


def _enc_decimal(v: Decimal) -> bytes:
    if v.is_finite():
        if not v:
            return _DEC_ZERO_B
        sign, digits, exp = v.as_tuple()
        assert isinstance(exp, int)
        # Value is 0.<digits> * 10**e; dropping trailing zeros makes equal values (1.0, 1.00)
        # identical without Decimal.normalize(), which would round to the context precision.
        e = exp + len(digits)
        payload = _varint(e) + bytes(digits).translate(_DIGITS_TO_ASCII).rstrip(b"0") + b"\x00"
        if sign:
            return _DEC_NEG_B + payload.translate(_INVERT)
        return _DEC_POS_B + payload
    if v.is_nan():  # NaN, -NaN and sNaN are all "NaN"; it sorts first, as in CockroachDB
        return _DEC_NAN_B
    return _DEC_NEG_INF_B if v.is_signed() else _DEC_INF_B


_ASC_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    type(None): _enc_null,
    bool: _enc_bool,
    int: _enc_int,
    float: _enc_float,
    str: _enc_str,
    bytes: _enc_bytes,
    Decimal: _enc_decimal,
    _dt.datetime: _enc_datetime,
    _dt.date: _enc_date,
    uuid.UUID: _enc_uuid,
}


def _enc_slow(value: object) -> bytes:
    """Subclasses and unsupported types; order of checks matters (bool < int, datetime < date)."""
    if isinstance(value, bool):
        return _enc_bool(value)
    if isinstance(value, int):
        return _enc_int(int(value))
    if isinstance(value, float):
        return _enc_float(float(value))
    if isinstance(value, str):
        return _enc_str(str(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return _enc_bytes(bytes(value))
    if isinstance(value, Decimal):
        return _enc_decimal(value)
    if isinstance(value, _dt.datetime):
        return _enc_datetime(value)
    if isinstance(value, _dt.date):
        return _enc_date(value)
    if isinstance(value, uuid.UUID):
        return _enc_uuid(value)
    # dict/list are JSON documents; ``is_jsonb`` marks wrappers such as rowcodec.JSONValue.
    if isinstance(value, dict | list) or getattr(type(value), "is_jsonb", False):
        raise ValueError(
            "JSONB values cannot be used in an index key (they have no total order); "
            "index a computed scalar column instead"
        )
    raise ValueError(f"values of type {type(value).__name__} cannot be encoded in a key")


def _encode_asc(value: object) -> bytes:
    enc = _ASC_ENCODERS.get(type(value))
    return enc(value) if enc is not None else _enc_slow(value)


def _to_desc(asc: bytes) -> bytes:
    m = asc[0]
    if m >= INT_MIN:  # int varint: its marker carries the length, so invert all of it
        return _INT_DESC_BYTES + asc.translate(_INVERT)
    return _DESC_MARKER_BYTES[m] + asc[1:].translate(_INVERT)


def _encode_desc(value: object) -> bytes:
    if value is None:
        return _NULL_DESC_B
    return _to_desc(_encode_asc(value))


def datum_bytes(value: object, descending: bool = False) -> bytes:
    """The encoding of one datum (what ``encode_key`` appends per value)."""
    return _encode_desc(value) if descending else _encode_asc(value)


def encode_datum(buf: bytearray, value: object, descending: bool = False) -> None:
    """Append the encoding of one datum to ``buf``."""
    buf += _encode_desc(value) if descending else _encode_asc(value)


def encode_key(
    prefix: bytes, values: Sequence[object], directions: Sequence[bool] | None = None
) -> bytes:
    """``prefix`` followed by each value; ``directions[i]`` True means descending.

    ``directions`` may be longer than ``values`` (a key prefix of an index, for spans).
    """
    if directions is not None and len(directions) < len(values):
        raise ValueError(f"{len(values)} key values but only {len(directions)} directions")
    if directions is None or not any(directions):  # all ascending: the common, fast case
        parts = [prefix]
        for v in values:
            enc = _ASC_ENCODERS.get(type(v))
            parts.append(enc(v) if enc is not None else _enc_slow(v))
        return b"".join(parts)
    parts = [prefix]
    for v, desc in zip(values, directions, strict=False):
        parts.append(_encode_desc(v) if desc else _encode_asc(v))
    return b"".join(parts)


# --- decoding ----------------------------------------------------------------------------------
# Decoders take (buf, start, marker) with ``start`` just after the ascending marker and return
# (value, end). Descending datums are decoded by the same functions on the inverted key.


def _unescape(buf: bytes, start: int) -> tuple[bytes, int]:
    i = buf.find(b"\x00", start)
    escaped = False
    while i >= 0 and i + 1 < len(buf) and buf[i + 1] == 0xFF:
        escaped = True
        i = buf.find(b"\x00", i + 2)
    if i < 0 or i + 1 >= len(buf):
        raise ValueError("unterminated string or bytes in key")
    if buf[i + 1] != 0x01:
        raise ValueError(f"invalid escape 00 {buf[i + 1]:02x} in key")
    raw = buf[start:i]
    return (raw.replace(b"\x00\xff", b"\x00") if escaped else raw), i + 2


def _dec_null(buf: bytes, start: int, m: int) -> tuple[object, int]:
    return None, start


def _dec_const(value: object) -> Callable[[bytes, int, int], tuple[object, int]]:
    def dec(buf: bytes, start: int, m: int) -> tuple[object, int]:
        return value, start

    return dec


def _dec_int(buf: bytes, start: int, m: int) -> tuple[object, int]:
    if INT_ZERO <= m <= INT_ZERO + INT_SMALL:  # one-byte ints, inlined for scans
        return m - INT_ZERO, start
    return _read_varint(buf, start - 1)


def _dec_float(buf: bytes, start: int, m: int) -> tuple[object, int]:
    end = start + 8
    if end > len(buf):
        raise ValueError("truncated float in key")
    raw = buf[start:end]
    if m == FLOAT_NEG:
        raw = raw.translate(_INVERT)
    return _unpack_double(raw)[0], end


def _dec_str(buf: bytes, start: int, m: int) -> tuple[object, int]:
    raw, end = _unescape(buf, start)
    return raw.decode("utf-8", "surrogatepass"), end


def _dec_bytes(buf: bytes, start: int, m: int) -> tuple[object, int]:
    raw, end = _unescape(buf, start)
    return bytes(raw), end


def _dec_timestamp(buf: bytes, start: int, m: int) -> tuple[object, int]:
    micros, end = _read_varint(buf, start)
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        raise ValueError("timestamp in key is out of range")
    return _EPOCH + micros * _ONE_MICRO, end


def _dec_date(buf: bytes, start: int, m: int) -> tuple[object, int]:
    days, end = _read_varint(buf, start)
    return _dt.date.fromordinal(days + _EPOCH_ORDINAL), end


def _dec_uuid(buf: bytes, start: int, m: int) -> tuple[object, int]:
    end = start + 16
    if end > len(buf):
        raise ValueError("truncated UUID in key")
    return uuid.UUID(bytes=bytes(buf[start:end])), end


def _dec_positive_decimal(buf: bytes, start: int) -> tuple[Decimal, int]:
    e, pos = _read_varint(buf, start)
    end = buf.find(b"\x00", pos)
    if end < 0:
        raise ValueError("unterminated decimal in key")
    digits = bytes(buf[pos:end])
    if not digits.isdigit() or digits[0] == 48 or digits[-1] == 48:
        raise ValueError("malformed decimal digits in key")
    return Decimal(f"{digits.decode('ascii')}E{e - len(digits)}"), end + 1


def _dec_decimal(buf: bytes, start: int, m: int) -> tuple[object, int]:
    if m == DEC_POS:
        return _dec_positive_decimal(buf, start)
    # Negative: the payload is inverted; decimals are rare, so invert the rest locally.
    value, used = _dec_positive_decimal(bytes(buf[start:]).translate(_INVERT), 0)
    # copy_negate, not unary minus: the latter rounds to the context precision.
    return value.copy_negate(), start + used


_ASC_DECODERS: list[Callable[[bytes, int, int], tuple[object, int]] | None] = [None] * 256
_ASC_DECODERS[NULL] = _dec_null
for _m in (FLOAT_NEG, FLOAT_POS):
    _ASC_DECODERS[_m] = _dec_float
_ASC_DECODERS[FLOAT_NAN] = _dec_const(float("nan"))
_ASC_DECODERS[FLOAT_ZERO] = _dec_const(0.0)
_ASC_DECODERS[FALSE] = _dec_const(False)
_ASC_DECODERS[TRUE] = _dec_const(True)
_ASC_DECODERS[STRING] = _dec_str
_ASC_DECODERS[BYTES] = _dec_bytes
_ASC_DECODERS[TIMESTAMP] = _dec_timestamp
_ASC_DECODERS[DATE] = _dec_date
_ASC_DECODERS[DEC_NAN] = _dec_const(Decimal("NaN"))
_ASC_DECODERS[DEC_NEG_INF] = _dec_const(Decimal("-Infinity"))
_ASC_DECODERS[DEC_ZERO] = _dec_const(Decimal(0))
_ASC_DECODERS[DEC_INF] = _dec_const(Decimal("Infinity"))
_ASC_DECODERS[DEC_NEG] = _dec_decimal
_ASC_DECODERS[DEC_POS] = _dec_decimal
_ASC_DECODERS[UUID_MARKER] = _dec_uuid
for _m in range(INT_MIN, INT_MAX + 1):
    _ASC_DECODERS[_m] = _dec_int


def _decode_one(key: bytes, pos: int, inv: bytes | None) -> tuple[object, int, bytes | None]:
    """Decode the datum at ``pos``; ``inv`` is the inverted key, computed on first need."""
    m = key[pos]
    dec = _ASC_DECODERS[m]
    if dec is not None:
        value, end = dec(key, pos + 1, m)
        return value, end, inv
    if m == NULL_DESC:
        return None, pos + 1, inv
    if inv is None:
        inv = key.translate(_INVERT)
    if m == INT_DESC:
        if pos + 1 >= len(inv) or not INT_MIN <= inv[pos + 1] <= INT_MAX:
            raise ValueError(f"malformed descending integer at offset {pos}")
        value, end = _read_varint(inv, pos + 1)
        return value, end, inv
    a = _DESC_TO_ASC.get(m)
    if a is None:
        raise ValueError(f"byte 0x{m:02x} at offset {pos} is not a datum marker")
    dec = _ASC_DECODERS[a]
    assert dec is not None  # every descending marker maps to a decodable ascending one
    value, end = dec(inv, pos + 1, a)
    return value, end, inv


def decode_datums(key: bytes, offset: int = 0) -> list[object]:
    """Decode every datum from ``offset`` to the end of ``key``."""
    if not isinstance(key, bytes):
        key = bytes(key)
    out: list[object] = []
    n = len(key)
    pos = offset
    inv: bytes | None = None
    decoders = _ASC_DECODERS
    try:
        while pos < n:
            m = key[pos]
            dec = decoders[m]
            if dec is not None:  # ascending: the common case, decoded without _decode_one
                value, pos = dec(key, pos + 1, m)
            else:
                value, pos, inv = _decode_one(key, pos, inv)
            out.append(value)
    except (IndexError, OverflowError) as e:
        raise ValueError(f"truncated or malformed key at offset {pos}: {key.hex()}") from e
    return out


# --- spans and printing ------------------------------------------------------------------------


def prefix_end(prefix: bytes) -> bytes:
    """Smallest key greater than every key that starts with ``prefix``.

    The last byte that is not 0xFF is incremented and what follows it dropped. For ``b""`` or an
    all-0xFF prefix no such key exists; ``b"\\xff" * (len(prefix) + 1)`` is returned instead
    (``KEY_MAX`` for ``b""``): it is above every storable key, since keys starting with 0xFF
    are reserved.
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\xff" * (len(prefix) + 1)
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def _pretty_datum(v: object) -> str:
    if v is None:
        return "NULL"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "+Inf" if v > 0 else "-Inf"
        return repr(v)
    if isinstance(v, Decimal):
        return f"{v:f}" if v.is_finite() and -20 <= v.adjusted() <= 20 else str(v)
    if isinstance(v, _dt.datetime | _dt.date):
        return v.isoformat()
    return str(v) if not isinstance(v, bytes) else repr(v)


def _pretty_datums(key: bytes, pos: int) -> tuple[list[str], int]:
    """Pretty-print datums from ``pos`` until the end or the first undecodable byte."""
    parts: list[str] = []
    inv: bytes | None = None
    while pos < len(key):
        try:
            value, end, inv = _decode_one(key, pos, inv)
        except (ValueError, IndexError, OverflowError):
            break
        parts.append(_pretty_datum(value))
        pos = end
    return parts, pos


def pretty_key(key: bytes) -> str:
    """Human-readable key, e.g. ``/Table/100/1/5/"abc"/NULL``.

    Keys outside the table keyspace print as ``/Min`` (empty), ``/Max`` (all 0xFF) or
    ``/0x<hex>``. An undecodable tail prints as ``/0x<hex>``, or as ``/PrefixEnd`` when it is
    the :func:`prefix_end` of a decodable key.
    """
    key = bytes(key)
    if not key:
        return "/Min"
    if not key.strip(b"\xff"):
        return "/Max"
    if not INT_ZERO <= key[0] <= INT_MAX:
        return f"/0x{key.hex()}"
    try:
        table_id, pos = _read_uvarint(key, 0)
    except ValueError:
        return f"/0x{key.hex()}"
    out = [f"/Table/{table_id}"]
    if pos < len(key) and INT_ZERO <= key[pos] <= INT_MAX:
        try:
            index_id, pos = _read_uvarint(key, pos)
            out.append(f"/{index_id}")
        except ValueError:
            pass
    parts, end = _pretty_datums(key, pos)
    out.extend(f"/{p}" for p in parts)
    if end < len(key):
        rest = key[end:]
        # prefix_end(k) increments the last byte of k after dropping trailing 0xFFs.
        suffix = "/0x" + rest.hex()
        if rest[-1] > 0:
            base = rest[:-1] + bytes((rest[-1] - 1,))
            for pad in (b"", b"\xff", b"\xff\xff"):
                cand, cend = _pretty_datums(base + pad, 0)
                if cend == len(base) + len(pad):
                    suffix = "".join(f"/{p}" for p in cand) + "/PrefixEnd"
                    break
        out.append(suffix)
    return "".join(out)


def pretty_span(start: bytes, end: bytes | None) -> str:
    """``[start, end)`` pretty-printed; a point span (no end) prints as its key."""
    if not end:
        return pretty_key(start)
    return f"[{pretty_key(start)}, {pretty_key(end)})"
