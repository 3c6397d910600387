"""Row value codec: exact round trips of every column type, NULLs, JSONB and errors."""

from __future__ import annotations

import datetime as dt
import math
import struct
import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidemark.catalog.rowcodec import EXT_JSON, JSONValue, decode_row, encode_row

UTC = dt.UTC

json_docs = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 63) - 1) | st.floats()
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)

column_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 63) - 1),
    st.floats(),
    st.decimals(),
    st.text(),
    st.binary(),
    st.datetimes(timezones=st.just(UTC)),
    st.dates(),
    st.uuids(),
    json_docs.map(JSONValue),
)

rows = st.dictionaries(st.integers(1, 2000), column_values, max_size=12)


def identical(a, b) -> bool:
    """Same type and same value, bit for bit where equality is too lenient."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)  # nan payloads, -0.0
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()  # keeps the exponent, NaN, sign of zero
    if isinstance(a, dt.datetime):
        return a == b and b.tzinfo is UTC
    if isinstance(a, JSONValue):
        return identical(a.document, b.document)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@given(rows)
def test_round_trip(row):
    decoded = decode_row(encode_row(row))
    expected = {k: v for k, v in row.items() if v is not None}
    assert decoded.keys() == expected.keys()
    for k, v in expected.items():
        assert identical(v, decoded[k]), (k, v, decoded[k])


def test_nulls_are_omitted():
    data = encode_row({1: None, 2: 5})
    assert decode_row(data) == {2: 5}
    assert encode_row({}) == encode_row({1: None})
    assert decode_row(encode_row({})) == {}


def test_floats_exact():
    row = {1: float("nan"), 2: float("inf"), 3: float("-inf"), 4: -0.0, 5: 5e-324}
    out = decode_row(encode_row(row))
    assert math.isnan(out[1]) and out[2] == math.inf and out[3] == -math.inf
    assert math.copysign(1.0, out[4]) == -1.0
    assert out[5] == 5e-324


def test_decimal_keeps_exponent():
    values = ["1.50", "1.5", "1E+3", "-0", "0.000", "NaN", "-NaN", "sNaN", "Infinity",
              "-Infinity", "1." + "9" * 60]
    out = decode_row(encode_row({i: Decimal(v) for i, v in enumerate(values, 1)}))
    assert [str(out[i]) for i in range(1, len(values) + 1)] == [str(Decimal(v)) for v in values]


def test_temporal_and_uuid():
    t = dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)
    plus5 = dt.timezone(dt.timedelta(hours=5))
    row = {
        1: t,
        2: t.astimezone(plus5),  # same instant, comes back in UTC
        3: t.replace(tzinfo=None),  # naive is taken as UTC
        4: dt.date(1, 1, 1),
        5: dt.date(9999, 12, 31),
        6: uuid.UUID(int=(1 << 128) - 1),
        7: dt.datetime.min.replace(tzinfo=UTC),
        8: dt.datetime.max.replace(tzinfo=UTC),
    }
    out = decode_row(encode_row(row))
    assert out[1] == out[2] == out[3] == t
    assert all(out[i].tzinfo is UTC for i in (1, 2, 3, 7, 8))
    assert type(out[4]) is dt.date and out[4] == row[4] and out[5] == row[5]
    assert out[6] == row[6]
    assert out[7] == row[7] and out[8] == row[8]


def test_json_distinct_from_string():
    out = decode_row(encode_row({1: "abc", 2: JSONValue("abc"), 3: JSONValue(None),
                                 4: JSONValue({"a": [1, 2.5, None, True, {"b": "c"}]})}))
    assert out[1] == "abc" and type(out[1]) is str
    assert out[2] == JSONValue("abc")
    assert out[3] == JSONValue(None)  # a JSON null is a value, not a SQL NULL
    assert out[4].document == {"a": [1, 2.5, None, True, {"b": "c"}]}


def test_subclasses_and_buffers():
    import enum

    class Level(enum.IntEnum):
        HIGH = 7

    out = decode_row(encode_row({1: Level.HIGH, 2: bytearray(b"x"), 3: memoryview(b"y")}))
    assert out == {1: 7, 2: b"x", 3: b"y"}
    assert type(out[1]) is int


def test_errors():
    with pytest.raises(TypeError, match="JSONValue"):
        encode_row({1: {"a": 1}})
    with pytest.raises(TypeError, match="JSONValue"):
        encode_row({1: [1]})
    with pytest.raises(TypeError, match="set"):
        encode_row({1: {1, 2}})
    with pytest.raises(ValueError, match="JSON"):
        encode_row({1: JSONValue({"a": object()})})
    with pytest.raises(ValueError, match="corrupt"):
        decode_row(b"\xc1")
    with pytest.raises(ValueError, match="corrupt"):
        decode_row(encode_row({1: 1})[:-1] + b"\xc1")
    with pytest.raises(ValueError):
        decode_row(b"\x81\x01\xd4\x63\x00")  # unknown ext code 99
    assert EXT_JSON == 4  # part of the stored format: never renumber
