"""Order-preserving key codec: order, round trips, composite keys, spans, printing, errors."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidemark.kv.keys import (
    KEY_MAX,
    decode_datums,
    decode_index_prefix,
    encode_datum,
    encode_key,
    encode_uvarint_ordered,
    index_prefix,
    prefix_end,
    pretty_key,
    pretty_span,
    table_prefix,
)

UTC = dt.UTC
I64 = st.integers(-(1 << 63), (1 << 63) - 1)


def enc(value, descending=False) -> bytes:
    buf = bytearray()
    encode_datum(buf, value, descending)
    return bytes(buf)


def dec(key: bytes):
    (value,) = decode_datums(key)
    return value


def cmp(a, b) -> int:
    return (a > b) - (a < b)


# Per type: a strategy and a sort key (NULL handled separately); NaNs sort first.
def float_key(f: float):
    return (0, 0.0) if math.isnan(f) else (1, f)


def decimal_key(d: Decimal):
    return (0, Decimal(0)) if d.is_nan() else (1, d)


def as_utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


TYPES = {
    "int": (I64, lambda v: v),
    "float": (st.floats(), float_key),
    "decimal": (st.decimals(), decimal_key),
    "str": (st.text(), lambda v: v),
    "bytes": (st.binary(), lambda v: v),
    "bool": (st.booleans(), lambda v: v),
    "datetime": (
        st.datetimes(timezones=st.none() | st.just(UTC)),
        as_utc,
    ),
    "date": (st.dates(), lambda v: v),
    "uuid": (st.uuids(), lambda v: v),
}


def same(a, b) -> bool:
    """Decoded value equals the original (NaN equals NaN; naive datetimes read back as UTC)."""
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, Decimal) and a.is_nan():
        return isinstance(b, Decimal) and b.is_nan()
    if isinstance(a, dt.datetime):
        return type(b) is dt.datetime and b.tzinfo is UTC and b == as_utc(a)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("name", sorted(TYPES))
@given(data=st.data())
def test_order_and_round_trip(name, data):
    strategy, key = TYPES[name]
    a = data.draw(strategy)
    b = data.draw(strategy)
    expected = cmp(key(a), key(b))
    assert cmp(enc(a), enc(b)) == expected
    assert cmp(enc(a, True), enc(b, True)) == -expected
    for desc in (False, True):
        assert same(a, dec(enc(a, desc)))
        # NULL first ascending, last descending
        assert cmp(enc(None, desc), enc(a, desc)) == (1 if desc else -1)


@given(I64)
def test_int_round_trip_and_int64_bounds(v):
    assert dec(enc(v)) == v
    assert dec(enc(v, True)) == v


def test_int_range_errors():
    for bad in (1 << 63, -(1 << 63) - 1, 1 << 80):
        with pytest.raises(ValueError, match="int64"):
            enc(bad)
        with pytest.raises(ValueError, match="int64"):
            enc(bad, True)


def test_small_ints_are_one_byte():
    assert [len(enc(v)) for v in (0, 1, 109)] == [1, 1, 1]
    assert len(enc(110)) == 2
    assert len(enc(-1)) == 2


def test_float_specials():
    assert enc(-0.0) == enc(0.0)
    assert dec(enc(-0.0)) == 0.0
    ordered = [
        float("nan"), float("-inf"), -1e308, -1.0, -5e-324, 0.0, 5e-324, 1.0, 1e308, float("inf"),
    ]
    keys = [enc(f) for f in ordered]
    assert keys == sorted(keys)
    desc = [enc(f, True) for f in ordered]
    assert desc == sorted(desc, reverse=True)


@given(st.decimals(allow_nan=False), st.integers(0, 5))
def test_equal_decimals_encode_identically(d, extra_zeros):
    sign, digits, exp = d.as_tuple()
    if not d.is_finite():
        return
    padded = Decimal((sign, (*digits, *([0] * extra_zeros)), exp - extra_zeros))
    assert padded == d
    assert enc(padded) == enc(d)
    assert enc(padded, True) == enc(d, True)


def test_decimal_examples():
    assert enc(Decimal("1.0")) == enc(Decimal("1.00")) == enc(Decimal(1))
    assert enc(Decimal("-0")) == enc(Decimal("0.000"))
    assert dec(enc(Decimal("1.50"))) == Decimal("1.5")
    # no rounding to the context precision
    long = Decimal("1." + "1" * 60)
    assert dec(enc(long)) == long
    assert dec(enc(-long, True)) == -long
    big = Decimal("-9.87E+99999")
    assert dec(enc(big)) == big
    ordered = [Decimal("NaN"), Decimal("-Infinity"), Decimal("-1E+10"), Decimal("-1.5"),
               Decimal("-1E-10"), Decimal(0), Decimal("1E-10"), Decimal("0.12"),
               Decimal("0.123"), Decimal("1"), Decimal("10"), Decimal("Infinity")]
    keys = [enc(v) for v in ordered]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_strings_with_zero_bytes():
    assert enc("a\x00b").count(b"\x00\xff") == 1
    for v in ("", "\x00", "a\x00", "\x00\x00\xff", "é€𝄞"):
        assert dec(enc(v)) == v
        assert dec(enc(v, True)) == v
    for v in (b"", b"\x00", b"\xff", b"\x00\xff\x01", b"\xff\x00"):
        assert dec(enc(v)) == v
        assert dec(enc(v, True)) == v
    assert enc(b"a") < enc(b"a\x00") < enc(b"a\x00\x00") < enc(b"a\x01")
    # str and bytes are different types with different markers
    assert dec(enc("ab")) == "ab" and dec(enc(b"ab")) == b"ab"


def test_datetime_and_date_distinguished():
    t = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    d = dt.date(2024, 5, 6)
    assert type(dec(enc(t))) is dt.datetime
    assert type(dec(enc(d))) is dt.date
    assert dec(enc(t)) == t and dec(enc(d)) == d
    # naive is UTC; another zone is converted
    assert enc(t.replace(tzinfo=None)) == enc(t)
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert enc(t.astimezone(plus2)) == enc(t)
    assert dec(enc(t.astimezone(plus2))) == t
    for edge in (dt.datetime.min, dt.datetime.max):
        assert dec(enc(edge)) == edge.replace(tzinfo=UTC)


def test_uuid_and_bool():
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert dec(enc(u)) == u and dec(enc(u, True)) == u
    assert dec(enc(True)) is True and dec(enc(False, True)) is False
    assert dec(enc(1)) == 1 and type(dec(enc(1))) is int


# --- composite keys ----------------------------------------------------------------------------


def column_cmp(a, b, key, descending: bool) -> int:
    if a is None or b is None:
        c = cmp(a is not None, b is not None)
    else:
        c = cmp(key(a), key(b))
    return -c if descending else c


@st.composite
def two_rows(draw):
    names = draw(st.lists(st.sampled_from(sorted(TYPES)), min_size=1, max_size=4))
    dirs = draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names)))
    a = [draw(st.none() | TYPES[n][0]) for n in names]
    # Often reuse a's value so that leading columns tie and later columns decide.
    b = [draw(st.just(x) | st.none() | TYPES[n][0]) for n, x in zip(names, a, strict=True)]
    return names, dirs, a, b


@given(two_rows())
def test_composite_keys_compare_like_tuples(case):
    names, dirs, a, b = case
    expected = 0
    for n, d, x, y in zip(names, dirs, a, b, strict=True):
        expected = column_cmp(x, y, TYPES[n][1], d)
        if expected:
            break
    prefix = index_prefix(104, 2)
    ka, kb = encode_key(prefix, a, dirs), encode_key(prefix, b, dirs)
    assert cmp(ka, kb) == expected
    table_id, index_id, off = decode_index_prefix(ka)
    assert (table_id, index_id, off) == (104, 2, len(prefix))
    decoded = decode_datums(ka, off)
    assert len(decoded) == len(a)
    for x, y in zip(a, decoded, strict=True):
        assert (x is None and y is None) or same(x, y)


@given(st.lists(st.tuples(st.integers(-3, 3), st.sampled_from(["", "a", "a\x00", "b"])),
                min_size=2, max_size=20),
       st.booleans(), st.booleans())
def test_sorting_many_keys(rows, d0, d1):
    keys = sorted(rows, key=lambda r: encode_key(b"", r, [d0, d1]))
    expected = sorted(rows, key=lambda r: (-r[0] if d0 else r[0]))
    # Python's sort is stable; compare only the first column's order, then full keys.
    assert [r[0] for r in keys] == [r[0] for r in expected]
    for r in rows:
        assert decode_datums(encode_key(b"", r, [d0, d1])) == list(r)


def test_encode_key_directions():
    p = table_prefix(7)
    assert encode_key(p, [1, "x"]) == encode_key(p, [1, "x"], [False, False])
    # more directions than values: a key prefix for a span
    assert encode_key(p, [1], [True, False]) == encode_key(p, [1], [True])
    with pytest.raises(ValueError, match="directions"):
        encode_key(p, [1, 2], [True])


# --- prefixes ----------------------------------------------------------------------------------


@given(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 64) - 1))
def test_uvarint_order(a, b):
    assert cmp(encode_uvarint_ordered(a), encode_uvarint_ordered(b)) == cmp(a, b)
    assert decode_index_prefix(encode_uvarint_ordered(a) + encode_uvarint_ordered(b))[:2] == (a, b)


def test_uvarint_sizes_and_errors():
    assert [len(encode_uvarint_ordered(n)) for n in (0, 109, 110, 255, 256)] == [1, 1, 2, 2, 3]
    assert table_prefix(100) == b"\xec"  # CockroachDB's /Table/100
    assert index_prefix(100, 1) == b"\xec\x89"
    for bad in (-1, 1 << 64):
        with pytest.raises(ValueError):
            encode_uvarint_ordered(bad)


def test_decode_index_prefix_errors():
    for bad in (b"", b"\x01\x02", table_prefix(100), b"\xec\x12", b"\xf6", b"\x87\x89"):
        with pytest.raises(ValueError, match="prefix"):
            decode_index_prefix(bad)
    assert decode_index_prefix(index_prefix(3, 1) + b"\x88") == (3, 1, 2)


@given(st.binary(max_size=6), st.binary(max_size=6))
def test_prefix_end(prefix, other):
    end = prefix_end(prefix)
    assert end > prefix
    if prefix.strip(b"\xff"):
        # exactly the keys starting with prefix lie in [prefix, end)
        for k in (other, prefix + other, prefix[:-1] + other):
            assert k.startswith(prefix) == (prefix <= k < end)
    else:
        assert end == b"\xff" * (len(prefix) + 1)


def test_prefix_end_examples():
    assert prefix_end(b"") == KEY_MAX == b"\xff"
    assert prefix_end(b"\x01\xff\xff") == b"\x02"
    assert prefix_end(b"\xff\xff") == b"\xff\xff\xff"
    assert prefix_end(index_prefix(100, 1)) == index_prefix(100, 2)


# --- printing and errors -----------------------------------------------------------------------


def test_pretty_key():
    p = index_prefix(100, 1)
    assert pretty_key(encode_key(p, [5, "abc", None])) == '/Table/100/1/5/"abc"/NULL'
    assert pretty_key(encode_key(p, [5, "abc", None], [True, True, True])) == (
        '/Table/100/1/5/"abc"/NULL'
    )
    assert pretty_key(table_prefix(100)) == "/Table/100"
    assert pretty_key(p) == "/Table/100/1"
    assert pretty_key(encode_key(p, [-3, 1.5, True, b"\x00x", Decimal("-2.50")])) == (
        "/Table/100/1/-3/1.5/true/b'\\x00x'/-2.5"
    )
    assert pretty_key(encode_key(p, [dt.date(2024, 1, 2), uuid.UUID(int=1)])) == (
        "/Table/100/1/2024-01-02/00000000-0000-0000-0000-000000000001"
    )
    assert pretty_key(encode_key(p, [float("nan"), float("-inf")])) == "/Table/100/1/NaN/-Inf"
    assert pretty_key(prefix_end(encode_key(p, ["abc"]))) == '/Table/100/1/"abc"/PrefixEnd'
    assert pretty_key(p + b"\x01\x02") == "/Table/100/1/0x0102"
    assert pretty_key(b"") == "/Min"
    assert pretty_key(KEY_MAX) == "/Max"
    assert pretty_key(b"\x03abc") == "/0x03616263"
    assert pretty_span(p, prefix_end(p)) == "[/Table/100/1, /Table/100/2)"
    assert pretty_span(p, b"") == "/Table/100/1"


def test_json_and_unsupported_values_rejected():
    for bad in ({"a": 1}, [1, 2]):
        with pytest.raises(ValueError, match="JSONB values cannot be used in an index key"):
            enc(bad)
        with pytest.raises(ValueError, match="JSONB"):
            encode_key(b"", [1, bad], [False, True])

    class Wrapped:
        is_jsonb = True

    with pytest.raises(ValueError, match="JSONB"):
        enc(Wrapped())
    with pytest.raises(ValueError, match="object"):
        enc(object())


@given(st.lists(st.one_of(I64, st.text(), st.binary(), st.floats(), st.decimals(), st.none()),
                min_size=1, max_size=4),
       st.data())
def test_truncated_keys_raise_value_error(values, data):
    dirs = data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))
    key = encode_key(b"", values, dirs)
    cut = data.draw(st.integers(1, len(key)))
    truncated = key[: len(key) - cut]
    try:
        decoded = decode_datums(truncated)
    except ValueError:
        return
    # A cut can land on a datum boundary; never an exception other than ValueError.
    assert len(decoded) <= len(values)


def test_malformed_keys():
    for bad in (b"\x01", b"\x7f", b"\x10abc", b"\x10a\x00\x05", b"\x05\x00", b"\x1c\x89\x31",
                b"\xfe", b"\x7f\x01"):
        with pytest.raises(ValueError):
            decode_datums(bad)


def test_subclasses_and_buffers():
    import enum

    class Color(enum.IntEnum):
        RED = 3

    assert enc(Color.RED) == enc(3)
    assert enc(bytearray(b"ab")) == enc(b"ab")
    assert enc(memoryview(b"ab")) == enc(b"ab")
    assert decode_datums(bytearray(enc(5))) == [5]
