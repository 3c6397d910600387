"""Row value codec: a row's non-NULL columns as a msgpack map keyed by column ID.

Column IDs (not names or positions) are the keys, so renames and drops never rewrite rows; a
column absent from the map is NULL. Values round-trip exactly, type included:

* ``None``/``bool``/``int``/``float``/``str``/``bytes``: native msgpack (``float`` is always
  float64, so NaN payloads, infinities and ``-0.0`` survive). These never reach a Python hook,
  which keeps full-table scans fast.
* ``datetime``: msgpack's timestamp extension (-1); decodes as an aware UTC datetime with
  microseconds. Naive datetimes are taken as UTC.
* ``Decimal``: ext ``EXT_DECIMAL`` (1), its ``str()`` in ASCII, so the exponent is kept
  (``Decimal('1.50')`` stays ``'1.50'``; NaN, sNaN, infinities and ``-0`` too).
* ``date``: ext ``EXT_DATE`` (2), the proleptic ordinal as a 4-byte big-endian int.
* ``UUID``: ext ``EXT_UUID`` (3), its 16 bytes.
* JSONB: ext ``EXT_JSON`` (4) holding the msgpack of the document. A JSONB column value must be
  wrapped in :class:`JSONValue`, which is what decoding returns, so the JSON string ``"a"`` and
  the STRING ``"a"`` stay distinct. Bare ``dict``/``list`` values are refused.
"""

from __future__ import annotations

import datetime as _dt
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

import msgspec

__all__ = [
    "EXT_DATE",
    "EXT_DECIMAL",
    "EXT_JSON",
    "EXT_UUID",
    "JSONValue",
    "decode_row",
    "encode_columns",
    "encode_row",
]

EXT_DECIMAL = 1
EXT_DATE = 2
EXT_UUID = 3
EXT_JSON = 4


@dataclass(frozen=True, slots=True)
class JSONValue:
    """A JSONB document: ``dict``/``list``/``str``/``int``/``float``/``bool``/``None``, nested."""

    document: Any
    # Lets tidemark.kv.keys refuse it as an index key without importing this module.
    is_jsonb: ClassVar[bool] = True


_Ext = msgspec.msgpack.Ext
_UTC = _dt.UTC
_pack_i32 = struct.Struct(">i").pack
_unpack_i32 = struct.Struct(">i").unpack

# Types msgspec encodes natively and exactly; everything else goes through _convert first
# (msgspec would otherwise turn Decimal/date/UUID into plain strings).
_NATIVE = frozenset({bool, int, float, str, bytes})
_json_encoder = msgspec.msgpack.Encoder(order="sorted")  # JSONB objects: keys sorted, as CockroachDB
_json_decoder = msgspec.msgpack.Decoder()


def _convert(value: object) -> object:
    """Map a non-native column value to something msgspec encodes losslessly."""
    if isinstance(value, _dt.datetime):
        if value.utcoffset() is None:
            return value.replace(tzinfo=_UTC)
        return value
    if isinstance(value, Decimal):
        return _Ext(EXT_DECIMAL, str(value).encode("ascii"))
    if isinstance(value, _dt.date):
        return _Ext(EXT_DATE, _pack_i32(value.toordinal()))
    if isinstance(value, uuid.UUID):
        return _Ext(EXT_UUID, value.bytes)
    if isinstance(value, JSONValue):
        try:
            return _Ext(EXT_JSON, _json_encoder.encode(value.document))
        except (TypeError, OverflowError) as e:
            raise ValueError(f"not a valid JSON document: {e}") from e
    if isinstance(value, bool | int | float | str | bytes):  # subclasses (IntEnum, ...)
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, dict | list):
        raise TypeError("JSON documents must be wrapped in rowcodec.JSONValue to be stored")
    raise TypeError(f"cannot store a value of type {type(value).__name__} in a row")


def _ext_hook(code: int, data: memoryview) -> object:
    if code == EXT_DECIMAL:
        return Decimal(bytes(data).decode("ascii"))
    if code == EXT_DATE:
        return _dt.date.fromordinal(_unpack_i32(data)[0])
    if code == EXT_UUID:
        return uuid.UUID(bytes=bytes(data))
    if code == EXT_JSON:
        return JSONValue(_json_decoder.decode(data))
    raise ValueError(f"unknown msgpack extension type {code} in row value")


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(dict[int, Any], ext_hook=_ext_hook)
decoder = _decoder.decode  # raw: raises msgspec.DecodeError; bulk loops call it directly


def encode_row(values: Mapping[int, object]) -> bytes:
    """Encode ``{column_id: value}``; ``None`` values are left out (absent means NULL)."""
    return _encoder.encode(
        {
            k: (v if type(v) in _NATIVE else _convert(v))
            # Sorted: a row encodes to the same bytes whatever order its dict was built in
            # (fingerprints and backups compare bytes).
            for k, v in sorted(values.items())
            if v is not None
        }
    )


def encode_columns(row: Mapping[int, object], column_ids: Sequence[int]) -> bytes:
    """Encode the listed columns of a row; ``column_ids`` must be sorted (the hot path of
    index entries, which know their columns in advance)."""
    return _encoder.encode({
        k: (v if type(v) in _NATIVE else _convert(v))
        for k in column_ids
        if (v := row.get(k)) is not None
    })


def decode_row(data: bytes) -> dict[int, object]:
    """Decode a row value into ``{column_id: value}``; absent columns are NULL."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as e:
        raise ValueError(f"corrupt row value: {e}") from e
