"""Timestamps: integers of nanoseconds since the Unix epoch, and their user-facing forms.

The store is the clock authority for writes (see ``storage``); this module only converts.
Users see a timestamp as CockroachDB's ``cluster_logical_timestamp()`` decimal
(``1763700000123456789.0000000000``), and ``AS OF SYSTEM TIME`` accepts that form, a relative
interval (``'-10s'``, ``'-1h30m'``) or a timestamp string (``'2026-11-21 09:00:00'``).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import threading
import time
from decimal import Decimal

NANOS_PER_SECOND = 1_000_000_000
LOGICAL_DIGITS = 10  # CockroachDB prints ten digits of logical clock after the decimal point

_UNIT_NANOS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": NANOS_PER_SECOND,
    "m": 60 * NANOS_PER_SECOND,
    "h": 3600 * NANOS_PER_SECOND,
    "d": 86400 * NANOS_PER_SECOND,
}
_INTERVAL_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d)")
_DECIMAL_TS = re.compile(r"^\d+(\.\d+)?$")


def wall_now() -> int:
    """The machine's wall clock in nanoseconds."""
    return time.time_ns()


def format_ts(ts: int) -> str:
    """``cluster_logical_timestamp()`` form: exact, and accepted back by ``parse_ts``."""
    return f"{ts}.{'0' * LOGICAL_DIGITS}"


def ts_to_datetime(ts: int) -> dt.datetime:
    """A timezone-aware UTC datetime (microsecond precision) for a timestamp."""
    return dt.datetime.fromtimestamp(ts // 1000 / 1_000_000, tz=dt.UTC).replace(
        microsecond=(ts // 1000) % 1_000_000)


def datetime_to_ts(value: dt.datetime) -> int:
    """Nanoseconds for a datetime; naive datetimes are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * NANOS_PER_SECOND + delta.microseconds * 1000


def parse_interval(text: str) -> int | None:
    """``'-10s'``, ``'-1h30m'``, ``'-500ms'`` to signed nanoseconds; None if not an interval."""
    s = text.strip()
    sign = 1
    if s.startswith("-"):
        sign, s = -1, s[1:]
    elif s.startswith("+"):
        s = s[1:]
    if not s:
        return None
    total, pos = 0, 0
    for m in _INTERVAL_PART.finditer(s):
        if m.start() != pos:
            return None
        # Decimal, not float: exact, and no overflow to infinity for absurdly long numbers
        # (the caller refuses a result out of a timestamp's range).
        total += int(Decimal(m.group(1)) * _UNIT_NANOS[m.group(2)])
        pos = m.end()
    if pos != len(s):
        return None
    return sign * total


def parse_ts(text: str, now: int) -> int:
    """Resolve an ``AS OF SYSTEM TIME`` argument to nanoseconds.

    ``now`` anchors relative intervals. Raises ``ValueError`` with a message naming the
    accepted forms.
    """
    s = text.strip()
    if _DECIMAL_TS.match(s):
        whole, _, _logical = s.partition(".")
        return int(whole)
    interval = parse_interval(s)
    if interval is not None:
        return now + interval
    try:
        parsed = dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"cannot parse {text!r} as a timestamp: use a decimal timestamp such as "
            f"{format_ts(now)}, an interval such as '-10s', or a time such as "
            "'2026-01-02 03:04:05'") from None
    return datetime_to_ts(parsed)


_unique_lock = threading.Lock()
_unique_last = 0
_UNIQUE_TAG = random.Random(os.getpid() ^ time.time_ns()).randrange(16)


def unique_int() -> int:
    """Unique positive INT8s, roughly ordered by time (``unique_rowid()``, job IDs).

    Microseconds since the epoch shifted left 12 bits, a per-process tag in the low four bits
    so processes sharing a store do not collide, and a per-process sequence above it.
    """
    global _unique_last
    with _unique_lock:
        candidate = ((time.time_ns() // 1000) << 12) | _UNIQUE_TAG
        if candidate <= _unique_last:
            candidate = _unique_last + 16
        _unique_last = candidate
        return candidate
