"""Local disk backends: ``file:///absolute/path`` and ``nodelocal://self/<path>``.

``nodelocal://self/<path>`` is CockroachDB's node-local storage: ``<path>`` under the store's
own ``external/`` folder (``StorageContext.external_dir``). It can never leave that folder:
``..`` segments are refused, and so is a path that resolves (through a symlink) outside it.
"""

from __future__ import annotations

from pathlib import Path

import fsspec

from tidemark.cloud.errors import InvalidURIError
from tidemark.cloud.filesystem import FilesystemStorage
from tidemark.cloud.uri import ParsedURI, StorageContext, register_scheme

__all__ = ["NODELOCAL_HOST", "open_file_uri", "open_nodelocal"]

NODELOCAL_HOST = "self"  # this node; CockroachDB's numbered nodes do not exist here


def _no_params(parsed: ParsedURI) -> None:
    if parsed.params or parsed.userinfo:
        names = ", ".join(k for k, _ in parsed.params) or "user information"
        raise InvalidURIError(
            f"{parsed.scheme}:// URIs take no parameters, got {names} in {parsed.redacted}",
            hint="remove the part after '?'")


def _no_dotdot(parsed: ParsedURI) -> None:
    if any(seg in (".", "..") for seg in parsed.path.split("/")):
        hint = ("nodelocal://self/<path> is a path inside the store's external folder: "
                "name a folder there, or one elsewhere with file:///absolute/path"
                if parsed.scheme == "nodelocal" else
                "write the absolute path without '.' or '..': file:///absolute/path")
        raise InvalidURIError(f"{parsed.redacted}: '.' and '..' are not allowed in the path",
                              hint=hint)


def open_file_uri(parsed: ParsedURI, ctx: StorageContext) -> FilesystemStorage:
    _no_params(parsed)
    if parsed.host not in ("", "localhost"):
        raise InvalidURIError(
            f"{parsed.redacted}: file:// URIs name a local absolute path, not host "
            f"{parsed.host!r}", hint="write file:///absolute/path (three slashes)")
    if not parsed.path.startswith("/"):
        raise InvalidURIError(f"{parsed.redacted}: the path must be absolute",
                              hint="write file:///absolute/path (three slashes)")
    _no_dotdot(parsed)
    return FilesystemStorage(fsspec.filesystem("file"), parsed.path, parsed,
                             atomic_rename=True)


def open_nodelocal(parsed: ParsedURI, ctx: StorageContext) -> FilesystemStorage:
    _no_params(parsed)
    if parsed.host != NODELOCAL_HOST:
        raise InvalidURIError(
            f"{parsed.redacted}: nodelocal storage is only available on this node, "
            f"'{NODELOCAL_HOST}'", hint="write nodelocal://self/<path>")
    if ctx.external_dir is None:
        raise InvalidURIError(f"{parsed.redacted}: nodelocal storage needs a store",
                              hint="use a file:// URI outside a store")
    _no_dotdot(parsed)
    base = Path(ctx.external_dir).resolve()
    root = (base / parsed.path.lstrip("/")).resolve()
    if root != base and base not in root.parents:
        raise InvalidURIError(
            f"{parsed.redacted} resolves outside the store's external folder {base} (through "
            "a symbolic link)", hint="nodelocal:// stays inside the store's external folder: "
            "use a file:// URI for a folder elsewhere")
    return FilesystemStorage(fsspec.filesystem("file"), str(root), parsed, atomic_rename=True)


register_scheme("file", open_file_uri)
register_scheme("nodelocal", open_nodelocal)
