"""External storage (fsspec): read and write files by URI — IMPORT's CSV files, BACKUP's data.

``open_storage(uri, ctx)`` gives an ``ExternalStorage`` rooted at ``uri``; ``open_file(uri,
ctx)`` the storage of a file's folder and the file's name. Schemes: ``file://``,
``nodelocal://self/`` (the store's ``external/`` folder) and ``memory://`` (tests); ``s3://``
comes as one more backend module. This package imports nothing of tidemark but its errors.
"""

from __future__ import annotations

from tidemark.cloud import local as _local  # registers file:// and nodelocal://
from tidemark.cloud import memory as _memory  # registers memory://
from tidemark.cloud.errors import CloudError, FileNotFound, InvalidURIError
from tidemark.cloud.storage import ExternalStorage, FileInfo
from tidemark.cloud.uri import (
    ParsedURI,
    StorageContext,
    open_file,
    open_storage,
    parse_uri,
    redact_uri,
    register_scheme,
    supported_schemes,
)

__all__ = [
    "CloudError",
    "ExternalStorage",
    "FileInfo",
    "FileNotFound",
    "InvalidURIError",
    "ParsedURI",
    "StorageContext",
    "open_file",
    "open_storage",
    "parse_uri",
    "redact_uri",
    "register_scheme",
    "supported_schemes",
]

del _local, _memory
