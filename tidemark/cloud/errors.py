"""Errors of external storage: a missing file, the object store's own failures, the rest.

::

    TidemarkError (tidemark.errors)
     └── CloudError                     external storage failed: the message names the step
          │                             and the (redacted) URI
          ├── FileNotFound              the file (or the storage's root) does not exist
          ├── InvalidURIError           the URI cannot name external storage (bad scheme, bad
          │                             host, a path escaping its root, an unknown parameter,
          │                             missing credentials)
          ├── EndpointUnreachableError  the object store's endpoint cannot be reached
          ├── AccessDeniedError         the object store refused the credentials or the access
          └── BucketNotFoundError       the bucket does not exist

``BucketNotFoundError`` is deliberately not a ``FileNotFound``: callers read "file not found"
as "nothing there yet" (a first backup), which a mistyped bucket must never become.

Backends translate their library's exceptions into these at the boundary
(``tidemark.cloud.filesystem``), so callers only ever catch ``FileNotFound``/``CloudError``.
Messages carry URIs through ``redact_uri`` only: credentials never appear in an error.
"""

from __future__ import annotations

from tidemark.errors import TidemarkError

__all__ = [
    "AccessDeniedError",
    "BucketNotFoundError",
    "CloudError",
    "EndpointUnreachableError",
    "FileNotFound",
    "InvalidURIError",
]


class CloudError(TidemarkError):
    """Reading, writing, listing or deleting in external storage failed."""

    code = "58030"  # io_error


class FileNotFound(CloudError):
    """The file does not exist; ``uri`` is the redacted URI of the file asked for."""

    code = "58P01"  # undefined_file

    def __init__(self, uri: str, *, hint: str | None = None):
        super().__init__(f"external storage file not found: {uri}", hint=hint)
        self.uri = uri


class InvalidURIError(CloudError):
    """The URI does not name external storage this binary can use."""

    code = "22023"  # invalid_parameter_value


class EndpointUnreachableError(CloudError):
    """No connection to the object store's endpoint (refused, unknown host, timed out)."""


class AccessDeniedError(CloudError):
    """The object store refused the request: unknown key, wrong secret, or no permission."""

    code = "42501"  # insufficient_privilege


class BucketNotFoundError(CloudError):
    """The bucket named by the URI does not exist at the endpoint."""
