"""Planning IMPORT INTO: options, target columns and table checks → the job's ``ImportDetails``.

Everything here is decided once, by the statement, and stored in the job record; the job
(``importer.job``) only executes it. Nothing in the details is a secret: the file URIs (an
``s3://`` URI carries its keys) are kept in the store's job-secrets table, outside the
keyspace; the details and the description show them redacted.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from tidemark.catalog.descriptors import (
    Column,
    DescState,
    IndexState,
    TableDescriptor,
)
from tidemark.cloud import StorageContext, open_file, redact_uri
from tidemark.errors import SQLError
from tidemark.storage.engine import Engine

IMPORT = "IMPORT"  # the job type
OFFLINE_REASON = "importing"

# name -> takes a value; CockroachDB's IMPORT CSV option names.
SUPPORTED_OPTIONS = {
    "delimiter": True,
    "comment": True,
    "nullif": True,
    "skip": True,
    "row_limit": True,
    "allow_quoted_null": False,
    "detached": False,
}
UNSUPPORTED_OPTIONS = ("decompress", "strict_quotes", "fields_enclosed_by",
                       "fields_escaped_by", "data_as_binary_records", "data_as_json_records")


class CSVOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How the CSV files are read (``WITH`` options)."""

    delimiter: str = ","
    comment: str = ""  # lines starting with it are skipped; "" = none
    nullif: str | None = None  # a field equal to it is NULL; None = no field is NULL
    skip: int = 0  # leading rows of each file to skip (headers)
    row_limit: int = 0  # rows of each file to import at most; 0 = all


class ImportDetails(msgspec.Struct, kw_only=True):
    """What an IMPORT job does; fixed when the statement creates it."""

    table_id: int
    table_name: str
    offline_version: int  # the descriptor version the statement set OFFLINE: ours while equal
    column_ids: list[int]  # the CSV's fields, in order
    files: list[str]  # URIs, redacted, in the order they are read
    csv: CSVOptions
    ts: int  # S: the MVCC timestamp of every imported row and index entry
    rowid_base: int  # unique_rowid() of the n-th imported row: rowid_base + n * stride
    seed: str  # makes gen_random_uuid() defaults reproducible when a chunk is replayed
    # The owner of the files' URIs in the store's job-secrets table; "" in jobs created
    # before secrets were kept apart (their ``files`` are the URIs themselves).
    secret_ref: str = ""


def keep_uris(engine: Engine, uris: Sequence[str]) -> str:
    """Keep ``uris`` (with any credentials in them) in the job-secrets table; their key."""
    ref = f"import-{secrets.token_hex(8)}"
    engine.put_secret(ref, msgspec.msgpack.encode(list(uris)))
    return ref


def file_uris(engine: Engine, details: ImportDetails) -> list[str]:
    """The URIs the job reads: from the job-secrets table."""
    if not details.secret_ref:
        return list(details.files)
    raw = engine.get_secret(details.secret_ref)
    if raw is None:
        raise SQLError(f'IMPORT INTO "{details.table_name}": the file URIs (and their '
                       "credentials) are gone from this store", code="58030",
                       hint="cancel the job and run the IMPORT again")
    return msgspec.msgpack.decode(raw, type=list[str])


def parse_options(options: Mapping[str, Any]) -> tuple[CSVOptions, bool]:
    """``WITH`` options (name → evaluated value, None for a bare flag) → (CSV options,
    detached). Values may be strings, as CockroachDB writes them (``skip = '1'``)."""
    values: dict[str, Any] = {}
    for name, value in options.items():
        if name in UNSUPPORTED_OPTIONS:
            raise SQLError(f'IMPORT option "{name}" is not supported', code="0A000")
        if name not in SUPPORTED_OPTIONS:
            raise SQLError(f'invalid IMPORT option "{name}"', code="42601",
                           hint="supported: " + ", ".join(sorted(SUPPORTED_OPTIONS)))
        if SUPPORTED_OPTIONS[name] and value is None:
            raise SQLError(f'IMPORT option "{name}" needs a value', code="42601",
                           hint=f"write {name} = '...'")
        if not SUPPORTED_OPTIONS[name] and value is not None:
            raise SQLError(f'IMPORT option "{name}" takes no value', code="42601",
                           hint=f"write WITH {name}")
        values[name] = value
    csv = CSVOptions(
        delimiter=_char(values, "delimiter", ",", allow_empty=False),
        comment=_char(values, "comment", "", allow_empty=True),
        nullif=None if values.get("nullif") is None else _text(values, "nullif"),
        skip=_count(values, "skip"),
        row_limit=_count(values, "row_limit"),
    )
    if csv.comment and csv.comment == csv.delimiter:
        raise SQLError("IMPORT options delimiter and comment must differ", code="22023")
    return csv, "detached" in values


def _text(values: Mapping[str, Any], name: str) -> str:
    value = values[name]
    if not isinstance(value, str):
        raise SQLError(f'IMPORT option "{name}" must be a string, not {value!r}',
                       code="22023")
    return value


def _char(values: Mapping[str, Any], name: str, default: str, *, allow_empty: bool) -> str:
    if values.get(name) is None:
        return default
    text = _text(values, name)
    if len(text) != 1 and not (allow_empty and text == ""):
        raise SQLError(f'IMPORT option "{name}" must be a single character, not {text!r}',
                       code="22023")
    if text in ('"', "\r", "\n"):
        raise SQLError(f'IMPORT option "{name}" cannot be {text!r}', code="22023")
    return text


def _count(values: Mapping[str, Any], name: str) -> int:
    value = values.get(name)
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SQLError(f'IMPORT option "{name}" must be a non-negative integer, not {value!r}',
                       code="22023")
    return value


def check_files(uris: Sequence[str], ctx: StorageContext) -> list[int]:
    """Open and stat every file before the table goes offline: a bad scheme or a missing
    file fails the statement, naming the (redacted) URI. Returns the sizes."""
    if not uris:
        raise SQLError("IMPORT needs at least one file", code="42601")
    sizes = []
    for uri in uris:
        storage, name = open_file(uri, ctx)
        try:
            sizes.append(storage.stat(name).size)
        finally:
            storage.close()
    return sizes


def target_columns(table: TableDescriptor, names: Sequence[str]) -> list[Column]:
    """The columns the CSV fields go to: the named ones, or every visible column."""
    if not names:
        return table.visible_columns()
    out: list[Column] = []
    for name in names:
        col = table.column(name)
        if col is None:
            raise SQLError(f'column "{name}" does not exist', code="42703")
        if col in out:
            raise SQLError(f'multiple assignments to the same column "{name}"', code="42601")
        out.append(col)
    return out


def check_table(table: TableDescriptor, targets: Sequence[Column]) -> None:
    """Refuse what IMPORT cannot do to this table, before it goes offline."""
    if table.state is not DescState.PUBLIC:
        raise SQLError(f'table "{table.name}" is {table.state.value}', code="55000")
    for index in table.indexes:
        if index.state is not IndexState.PUBLIC:
            raise SQLError(
                f'cannot IMPORT INTO "{table.name}": index "{index.name}" is being '
                f"{'dropped' if index.state is IndexState.DROP else 'built'}",
                code="55000", hint="wait for the schema change job to finish (SHOW JOBS)")
    given = {c.id for c in targets}
    for c in table.columns:
        if c.id not in given and not c.nullable and c.default is None:
            raise SQLError(
                f'column "{c.name}" is NOT NULL without a DEFAULT, so IMPORT must be given '
                "it", code="23502", hint=f"add {c.name} to the column list and to the files")


def describe(table_name: str, columns: Sequence[str], uris: Sequence[str],
             options: Mapping[str, Any]) -> str:
    """The job's description: the statement, with every URI redacted."""
    cols = f"({', '.join(columns)})" if columns else ""
    files = ", ".join(_quote(redact_uri(u)) for u in uris)
    opts = ", ".join(name if value is None else f"{name} = {_quote(str(value))}"
                     for name, value in options.items())
    return (f"IMPORT INTO {table_name}{cols} CSV DATA ({files})"
            + (f" WITH OPTIONS ({opts})" if opts else ""))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


__all__ = [
    "IMPORT",
    "OFFLINE_REASON",
    "CSVOptions",
    "ImportDetails",
    "check_files",
    "check_table",
    "describe",
    "parse_options",
    "target_columns",
]
