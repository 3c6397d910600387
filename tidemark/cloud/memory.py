"""``memory://bucket/path``: fsspec's in-process memory filesystem, for tests.

Files live as long as the process and are shared by every storage opened in it, like a bucket.
"""

from __future__ import annotations

import fsspec

from tidemark.cloud.errors import InvalidURIError
from tidemark.cloud.filesystem import FilesystemStorage
from tidemark.cloud.uri import ParsedURI, StorageContext, register_scheme

__all__ = ["open_memory"]


def open_memory(parsed: ParsedURI, ctx: StorageContext) -> FilesystemStorage:
    if parsed.params or parsed.userinfo:
        raise InvalidURIError(f"{parsed.redacted}: memory:// URIs take no parameters")
    if any(seg in (".", "..") for seg in parsed.path.split("/")):
        raise InvalidURIError(f"{parsed.redacted}: '.' and '..' are not allowed in the path")
    root = "/" + "/".join(p for p in (parsed.host, parsed.path.strip("/")) if p)
    # Written under a temporary name and moved: a failed write must not leave a partial file.
    return FilesystemStorage(fsspec.filesystem("memory"), root, parsed, atomic_rename=True)


register_scheme("memory", open_memory)
