"""Streaming CSV reading in chunks, with the byte offset and line number a resume needs.

``read_chunks`` reads a binary stream that starts at a known byte offset and line number and
yields ``Chunk``s of at most ``batch`` records. Each chunk says where the file stands after its
last record (byte offset, lines consumed, data rows so far), which is exactly what a checkpoint
records: a resumed job opens the file at that offset and carries on. Nothing but the current
chunk is held in memory. Parsing is Python's ``csv`` module (in C); the lines are counted on
the way in, so every record knows the line it starts on, for error messages.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tidemark.errors import SQLError
from tidemark.importer.plan import CSVOptions

__all__ = ["Chunk", "FileCursor", "RowError", "read_chunks"]

MAX_FIELD_BYTES = 64 << 20  # csv's default of 128 KiB is too small for real data
_BOM = b"\xef\xbb\xbf"


class RowError(SQLError):
    """A row of a file cannot be imported: the message names the file, line and reason."""

    def __init__(self, uri: str, line: int, reason: str, *, code: str = "22P04",
                 hint: str | None = None):
        super().__init__(f"{uri}: line {line}: {reason}", code=code, hint=hint)
        self.uri = uri
        self.line = line
        self.reason = reason


@dataclass(slots=True)
class FileCursor:
    """Where reading a file stands: the next byte, lines consumed, data rows so far."""

    offset: int = 0
    line: int = 0
    rows: int = 0


@dataclass(slots=True)
class Chunk:
    """Up to ``batch`` records, each with the line it starts on; ``end``: the cursor after
    the last of them."""

    records: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    end: FileCursor = field(default_factory=FileCursor)


def read_chunks(stream: Iterable[bytes], start: FileCursor, options: CSVOptions, batch: int,
                uri: str) -> Iterator[Chunk]:
    """Chunks of the data records of ``stream``, which is positioned at ``start.offset``.

    Blank lines and lines starting with ``options.comment`` are skipped; so are the first
    ``options.skip`` records when reading from the start of the file; reading stops after
    ``options.row_limit`` data rows of the file (when set). Bad bytes or CSV structure raise
    ``RowError`` with the line.
    """
    if csv.field_size_limit() < MAX_FIELD_BYTES:
        csv.field_size_limit(MAX_FIELD_BYTES)
    offset, line = start.offset, start.line
    first_line: int | None = None  # line where the record being parsed began
    comment = options.comment.encode() if options.comment else b""
    at_start = start.offset == 0

    def lines() -> Iterator[str]:
        nonlocal offset, line, first_line, at_start
        for raw in stream:
            offset += len(raw)
            line += 1
            if at_start:
                at_start = False
                if raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
            if comment and first_line is None and raw.startswith(comment):
                continue
            if first_line is None:
                first_line = line
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RowError(uri, line, f"invalid UTF-8 at byte {exc.start} of the line",
                               code="22021") from None

    reader = csv.reader(lines(), delimiter=options.delimiter, strict=False)
    rows, to_skip = start.rows, options.skip if start.offset == 0 else 0
    limit = options.row_limit or -1
    chunk = Chunk()
    while rows != limit:
        try:
            record = next(reader, None)
        except csv.Error as exc:
            raise RowError(uri, first_line or line, f"malformed CSV: {exc}") from None
        if record is None:
            break
        begun, first_line = first_line or line, None
        if not record:
            continue  # a blank line
        if to_skip:
            to_skip -= 1
            continue
        rows += 1
        chunk.records.append(record)
        chunk.lines.append(begun)
        if len(chunk.records) >= batch:
            chunk.end = FileCursor(offset, line, rows)
            yield chunk
            chunk = Chunk()
    if chunk.records:
        chunk.end = FileCursor(offset, line, rows)
        yield chunk
