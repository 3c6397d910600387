"""External storage (fsspec): read and write files by URI — IMPORT's CSV files, BACKUP's data.

``open_storage(uri, ctx)`` gives an ``ExternalStorage`` rooted at ``uri``; ``open_file(uri,
ctx)`` the storage of a file's folder and the file's name. Schemes: ``file://``,
``nodelocal://self/`` (the store's ``external/`` folder), ``memory://`` (tests) and ``s3://``
(Amazon S3 or an S3-compatible server, ``tidemark.cloud.s3``). This package imports nothing of
tidemark but its errors.
"""

from __future__ import annotations

from tidemark.cloud import local as _local  # registers file:// and nodelocal://
from tidemark.cloud import memory as _memory  # registers memory://
from tidemark.cloud import s3 as _s3  # registers s3:// (s3fs itself is imported on first use)
from tidemark.cloud.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    CloudError,
    EndpointUnreachableError,
    FileNotFound,
    InvalidURIError,
)
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
    "AccessDeniedError",
    "BucketNotFoundError",
    "CloudError",
    "EndpointUnreachableError",
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

del _local, _memory, _s3
