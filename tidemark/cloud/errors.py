"""Errors of external storage: one for a missing file, one for everything else.

::

    TidemarkError (tidemark.errors)
     └── CloudError                 external storage failed: the message names the step and
          │                         the (redacted) URI
          ├── FileNotFound          the file (or the storage's root) does not exist
          └── InvalidURIError       the URI cannot name external storage (bad scheme, bad
                                    host, a path escaping its root, an unknown parameter)

Backends translate their library's exceptions into these at the boundary
(``tidemark.cloud.filesystem``), so callers only ever catch ``FileNotFound``/``CloudError``.
Messages carry URIs through ``redact_uri`` only: credentials never appear in an error.
"""

from __future__ import annotations

from tidemark.errors import TidemarkError

__all__ = ["CloudError", "FileNotFound", "InvalidURIError"]


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
