"""Cluster settings: a typed registry, and values stored in the system settings table.

Each setting has a name, a type, a default, a validation and a description. Values that
differ from the default are rows of the settings table (``/Table/6/1/<name>``) in the MVCC
keyspace, so they are transactional, visible to every process sharing the store, and backed up.
Layers register the settings they use at import time with ``register``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from tidemark.clock import NANOS_PER_SECOND, parse_interval
from tidemark.errors import SettingError
from tidemark.kv.db import DB
from tidemark.kv.keys import encode_key, index_prefix, prefix_end
from tidemark.kv.system import PRIMARY_INDEX_ID, SETTINGS_TABLE_ID
from tidemark.kv.txn import Txn

SETTINGS_PREFIX = index_prefix(SETTINGS_TABLE_ID, PRIMARY_INDEX_ID)


class Kind(enum.Enum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STRING = "string"
    DURATION = "duration"  # stored as nanoseconds, written like '25h' or '90s'
    VERSION = "version"  # the active cluster version: changed only by finalizing an upgrade


@dataclass(frozen=True)
class Setting:
    name: str
    kind: Kind
    default: Any
    description: str
    validate: Callable[[Any], str | None] | None = None  # returns a complaint, or None
    public: bool = True  # shown by SHOW CLUSTER SETTINGS (SHOW ALL shows every one)

    def coerce(self, raw: Any) -> Any:
        """Turn a SQL value into this setting's type, or raise SettingError saying why."""
        value = _coerce(self, raw)
        if self.validate is not None:
            complaint = self.validate(value)
            if complaint:
                raise SettingError(f"invalid value for {self.name}: {complaint}")
        return value

    def format(self, value: Any) -> str:
        if self.kind is Kind.BOOL:
            return "true" if value else "false"
        if self.kind is Kind.DURATION:
            return format_duration(value)
        return str(value)

    def key(self) -> bytes:
        return setting_key(self.name)


def setting_key(name: str) -> bytes:
    return encode_key(SETTINGS_PREFIX, [name])


def format_duration(nanos: int) -> str:
    if nanos % NANOS_PER_SECOND == 0:
        secs = nanos // NANOS_PER_SECOND
        h, rem = divmod(secs, 3600)
        m, s = divmod(rem, 60)
        parts = [f"{h}h" if h else "", f"{m}m" if m else "", f"{s}s" if s or not (h or m) else ""]
        return "".join(parts)
    return f"{nanos}ns"


def _type_error(setting: Setting, raw: Any, expected: str) -> SettingError:
    return SettingError(
        f"invalid value for {setting.name}: {raw!r} is not {expected}",
        hint=f"{setting.name} is a setting of type {setting.kind.value}; for example "
             f"SET CLUSTER SETTING {setting.name} = {setting.format(setting.default)!s}")


def _coerce(setting: Setting, raw: Any) -> Any:
    kind = setting.kind
    if kind is Kind.INT:
        if isinstance(raw, bool):
            raise _type_error(setting, raw, "an integer")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                pass
        raise _type_error(setting, raw, "an integer")
    if kind is Kind.FLOAT:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        try:
            return float(str(raw))
        except ValueError:
            raise _type_error(setting, raw, "a number") from None
    if kind is Kind.BOOL:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false", "on", "off"):
            return raw.strip().lower() in ("true", "on")
        raise _type_error(setting, raw, "a boolean")
    if kind is Kind.STRING:
        if isinstance(raw, str):
            return raw
        raise _type_error(setting, raw, "a string")
    if kind is Kind.DURATION:
        if isinstance(raw, str):
            text = raw.strip()
            nanos = parse_interval(text)
            if nanos is not None and not text.startswith("-"):
                return nanos
        raise _type_error(setting, raw, "a duration such as '90s' or '25h'")
    raise SettingError(
        f"{setting.name} cannot be set like other settings",
        hint="finalize an upgrade with SET CLUSTER SETTING version = '<version>'")


REGISTRY: dict[str, Setting] = {}


def register(name: str, kind: Kind, default: Any, description: str, *,
             validate: Callable[[Any], str | None] | None = None,
             public: bool = True) -> Setting:
    """Declare a setting; done once, at import time, by the layer that uses it."""
    if name in REGISTRY:
        raise ValueError(f"setting {name} is registered twice")
    setting = Setting(name, kind, default, description, validate, public)
    REGISTRY[name] = setting
    return setting


def lookup(name: str) -> Setting:
    setting = REGISTRY.get(name.lower())
    if setting is None:
        raise SettingError(f"unknown cluster setting {name!r}",
                           hint="SHOW ALL CLUSTER SETTINGS lists them", code="42704")
    return setting


class Settings:
    """Reads and writes setting values in the keyspace."""

    def __init__(self, db: DB):
        self.db = db

    def get(self, name: str, txn: Txn | None = None) -> Any:
        setting = lookup(name)
        raw = txn.get(setting.key()) if txn is not None else self.db.get(setting.key())
        return setting.default if raw is None else msgspec.msgpack.decode(raw)

    def set(self, name: str, raw: Any, txn: Txn | None = None) -> Any:
        """Validate and store a value; ``None`` resets to the default. Returns the value."""
        setting = lookup(name)
        if setting.kind is Kind.VERSION:
            _coerce(setting, raw)  # raises with the hint to finalize instead
        value = None if raw is None else setting.coerce(raw)

        def write(t: Txn) -> None:
            if value is None:
                t.delete(setting.key())
            else:
                t.put(setting.key(), msgspec.msgpack.encode(value))

        if txn is not None:
            write(txn)
        else:
            self.db.run(write)
        return setting.default if value is None else value

    def all(self, txn: Txn | None = None) -> list[tuple[Setting, Any]]:
        """Every registered setting with its current value, sorted by name."""
        end = prefix_end(SETTINGS_PREFIX)
        rows = (txn.scan(SETTINGS_PREFIX, end) if txn is not None
                else self.db.scan(SETTINGS_PREFIX, end))
        stored = dict(rows)
        return [(s, msgspec.msgpack.decode(stored[s.key()]) if s.key() in stored else s.default)
                for _, s in sorted(REGISTRY.items())]


GC_TTL_SECONDS = register(
    "gc.ttlseconds", Kind.INT, 14400,
    "how long, in seconds, overwritten and deleted versions stay readable before GC removes "
    "them (AS OF SYSTEM TIME and incremental backups need this history)",
    validate=lambda v: None if v >= 1 else "must be at least 1 second")
GC_INTERVAL = register(
    "gc.interval", Kind.DURATION, 300 * 10**9,
    "how often a running node (tidemark start, or any process with a connection open) runs "
    "GC: each pass removes what is older than gc.ttlseconds and not protected",
    validate=lambda v: None if v >= 10**9 else "must be at least 1s")
