"""The ExternalStorage interface: a dumb store of named files under one root URI.

Backends (``local``, ``memory``; ``s3`` later) implement it; everything above (IMPORT reading
CSV files, BACKUP writing its collections) only ever sees this Protocol, so a new backend is
one module that registers its URL scheme (``tidemark.cloud.uri.register_scheme``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

__all__ = ["ExternalStorage", "FileInfo"]


@dataclass(frozen=True, slots=True)
class FileInfo:
    """A file in external storage: its name relative to the storage's root, and its size."""

    name: str
    size: int


@runtime_checkable
class ExternalStorage(Protocol):
    """Files under one root URI, named by ``/``-separated paths relative to it.

    Contract, for every backend:

    * Names are relative, ``/``-separated, without ``.`` or ``..`` segments (refused with
      ``InvalidURIError``). The empty name ``""`` is the root itself, so a storage opened at a
      file's URI reads that file as ``""``.
    * A missing file raises ``FileNotFound`` (from ``read``, ``open`` and ``stat``), carrying
      the redacted URI; any other failure raises ``CloudError`` naming the step. No method
      lets a library exception through, and no message contains a credential.
    * ``write`` replaces the file as a whole: readers see the old file or the new one, never a
      part (atomic on ``file://``/``nodelocal://`` by rename; one put on object stores).
      Writing the same name twice is allowed; the last write wins.
    * ``read`` and ``open`` may be called any number of times for one name (idempotent).
    * ``list`` returns each file under the prefix exactly once, sorted by name; directories
      are not files. A prefix matching nothing gives an empty list, not an error.
    * ``delete`` of a missing file does nothing (cleanup may run more than once).
    """

    @property
    def uri(self) -> str:
        """The root URI, with credentials redacted: safe to show."""
        ...

    def write(self, name: str, data: bytes | Iterable[bytes]) -> int:
        """Store ``data`` (bytes, or an iterable of chunks) as ``name``; returns its size."""
        ...

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """``length`` bytes of ``name`` from ``offset`` (to the end when None)."""
        ...

    def open(self, name: str, offset: int = 0) -> BinaryIO:
        """A binary stream of ``name`` positioned at ``offset``; the caller closes it."""
        ...

    def stat(self, name: str) -> FileInfo: ...

    def list(self, prefix: str = "") -> list[FileInfo]:
        """Every file whose name starts with ``prefix``, sorted by name."""
        ...

    def delete(self, name: str) -> None: ...

    def close(self) -> None: ...
