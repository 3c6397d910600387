"""FilesystemStorage: ExternalStorage over any fsspec filesystem, below one root path.

The backends (``local``, ``memory``, later ``s3``) differ only in the fsspec filesystem and the
root they hand to it; names, atomic writes, listing and the translation of fsspec/OS errors
into ``FileNotFound``/``CloudError`` live here, once.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from tidemark.cloud.errors import CloudError, FileNotFound, InvalidURIError
from tidemark.cloud.storage import FileInfo
from tidemark.cloud.uri import ParsedURI

__all__ = ["TEMP_MARKER", "FilesystemStorage", "check_name"]

TEMP_MARKER = ".tmp-"  # ``.<name>.tmp-<random>``: a write in progress, never listed


def check_name(name: str, uri: str) -> str:
    """Refuse names that could leave the root or are not plain relative paths."""
    if not name:
        return name
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InvalidURIError(
            f"invalid file name {name!r} under {uri}: names are relative paths without "
            "'.', '..' or empty segments")
    return name


class FilesystemStorage:
    """Files under ``root`` of an fsspec filesystem.

    ``atomic_rename``: the filesystem renames atomically (local disks), so ``write`` goes to
    a temporary name first and renames; otherwise (memory, object stores) a single put is
    already all-or-nothing.
    """

    def __init__(self, fs: Any, root: str, parsed: ParsedURI, *, atomic_rename: bool):
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.parsed = parsed
        self.atomic_rename = atomic_rename
        self._secrets = parsed.secrets()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri})"

    @property
    def uri(self) -> str:
        return self.parsed.redacted

    def uri_of(self, name: str) -> str:
        return self.parsed.child(name).redacted

    # -- paths and errors ----------------------------------------------------------------

    def _path(self, name: str) -> str:
        check_name(name, self.uri)
        if not name:
            return self.root
        return f"{self.root.rstrip('/')}/{name}"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "redacted")
        return text

    @contextlib.contextmanager
    def _errors(self, step: str, name: str) -> Iterator[None]:
        """Translate the filesystem's exceptions into ours, naming the step and the URI."""
        try:
            yield
        except CloudError:
            raise
        except FileNotFoundError:
            raise FileNotFound(self.uri_of(name)) from None
        except IsADirectoryError:
            raise CloudError(f"{step} {self.uri_of(name)}: it is a directory, not a file"
                             ) from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise CloudError(f"{step} {self.uri_of(name)}: {self._scrub(reason)}") from None

    # -- ExternalStorage -----------------------------------------------------------------

    def write(self, name: str, data: bytes | Iterable[bytes]) -> int:
        if not name:
            raise InvalidURIError(f"cannot write {self.uri}: name a file under it")
        path = self._path(name)
        parent, _, base = path.rpartition("/")
        chunks = (data,) if isinstance(data, (bytes, bytearray, memoryview)) else data
        with self._errors("write", name):
            self.fs.makedirs(parent or "/", exist_ok=True)
            target = (f"{parent}/.{base}{TEMP_MARKER}{uuid.uuid4().hex[:12]}"
                      if self.atomic_rename else path)
            size = 0
            try:
                with self.fs.open(target, "wb") as f:
                    for chunk in chunks:
                        f.write(chunk)
                        size += len(chunk)
                if target != path:
                    self.fs.mv(target, path)
            except BaseException:
                if target != path:
                    with contextlib.suppress(OSError):
                        self.fs.rm_file(target)
                raise
        return size

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if offset < 0 or (length is not None and length < 0):
            raise CloudError(f"read {self.uri_of(name)}: negative offset or length")
        with self._errors("read", name):
            info = self.fs.info(self._path(name))
            if info.get("type") == "directory":
                raise IsADirectoryError(name)
            end = None if length is None else offset + length
            return bytes(self.fs.cat_file(self._path(name), start=offset, end=end))

    def open(self, name: str, offset: int = 0) -> BinaryIO:
        with self._errors("open", name):
            path = self._path(name)
            if self.fs.info(path).get("type") == "directory":
                raise IsADirectoryError(name)
            f = self.fs.open(path, "rb")
            try:
                if offset:
                    f.seek(offset)
            except BaseException:
                f.close()
                raise
            return f  # type: ignore[no-any-return]

    def stat(self, name: str) -> FileInfo:
        with self._errors("stat", name):
            info = self.fs.info(self._path(name))
        if info.get("type") == "directory":
            raise CloudError(f"stat {self.uri_of(name)}: it is a directory, not a file")
        return FileInfo(name=name, size=int(info.get("size") or 0))

    def list(self, prefix: str = "") -> list[FileInfo]:
        # Walk only the deepest folder the prefix names: a backup lists a lock or a layer
        # many times, and walking the whole collection each time would cost as much as the
        # collection is big (on S3, a request per thousand files).
        folder = prefix.rpartition("/")[0]
        with self._errors("list", prefix):
            try:
                found = self.fs.find(self._path(folder) if folder else self.root, detail=True)
            except FileNotFoundError:
                return []
        start = len(self.root.rstrip("/")) + 1
        out = []
        for path, info in found.items():
            name = path[start:]
            if info.get("type") == "directory" or not name.startswith(prefix) or \
                    TEMP_MARKER in name.rpartition("/")[2]:
                continue
            out.append(FileInfo(name=name, size=int(info.get("size") or 0)))
        return sorted(out, key=lambda f: f.name)

    def delete(self, name: str) -> None:
        if not name:
            raise InvalidURIError(f"cannot delete {self.uri}: name a file under it")
        with self._errors("delete", name):
            try:
                self.fs.rm_file(self._path(name))
            except FileNotFoundError:
                pass

    def close(self) -> None:
        pass
