"""External storage URIs: parsing, redaction of credentials, and the scheme → backend registry.

A URI names a root (``nodelocal://self/imports``, ``file:///data``, ``memory://bucket/dir``,
``s3://bucket/dir?AWS_ACCESS_KEY_ID=..&AWS_SECRET_ACCESS_KEY=..``). Each backend module
registers a factory for its scheme at import time (``register_scheme``), as litestream's
``replica_url.go`` does; ``open_storage`` picks the factory by scheme.

Credentials travel in query parameters (CockroachDB's convention). ``redact_uri`` replaces the
value of every secret parameter (and a password in the authority) with ``redacted``; every
message, job description and log line shows URIs only in that form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from tidemark.cloud.errors import InvalidURIError
from tidemark.cloud.storage import ExternalStorage

__all__ = [
    "REDACTED",
    "SECRET_PARAMS",
    "ParsedURI",
    "StorageContext",
    "StorageFactory",
    "open_file",
    "open_storage",
    "parse_uri",
    "redact_uri",
    "register_scheme",
    "supported_schemes",
]

REDACTED = "redacted"
# Query parameters whose values are secrets (CockroachDB's names); any parameter whose name
# contains one of SECRET_MARKERS is treated as secret as well.
SECRET_PARAMS = frozenset({
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_ACCOUNT_KEY", "AZURE_CLIENT_SECRET",
    "CREDENTIALS", "BEARER_TOKEN", "ASSUME_ROLE_TOKEN",
})
SECRET_MARKERS = ("SECRET", "TOKEN", "PASSWORD", "PASSPHRASE", "CREDENTIAL", "ACCOUNT_KEY")


def is_secret_param(name: str) -> bool:
    upper = name.upper()
    return upper in SECRET_PARAMS or any(m in upper for m in SECRET_MARKERS)


@dataclass(frozen=True, slots=True)
class StorageContext:
    """What a backend may need from the node opening it.

    ``external_dir`` is the store's own external folder (``<store>/external``), the root of
    ``nodelocal://self/...``; None when there is no store (``nodelocal`` is then refused).
    """

    external_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class ParsedURI:
    """A URI split into its parts; ``path`` is percent-decoded, ``params`` in order."""

    scheme: str
    host: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    userinfo: str = field(default="", repr=False)

    @property
    def redacted(self) -> str:
        """The URI with every secret replaced by ``redacted``: safe to show."""
        auth = ""
        if self.userinfo:
            user, sep, _ = self.userinfo.partition(":")
            auth = f"{user}:{REDACTED}@" if sep else f"{user}@"
        query = urlencode([(k, REDACTED if is_secret_param(k) else v)
                           for k, v in self.params], safe="/:")
        return (f"{self.scheme}://{auth}{self.host}{quote(self.path, safe='/:@+,=')}"
                f"{'?' + query if query else ''}")

    def secrets(self) -> list[str]:
        """Secret values of this URI (to scrub them from library error messages)."""
        out = [v for k, v in self.params if is_secret_param(k) and v]
        if ":" in self.userinfo:
            out.append(self.userinfo.partition(":")[2])
        return out

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None

    def child(self, name: str) -> ParsedURI:
        """The URI of ``name`` under this root (``""``: the root itself)."""
        if not name:
            return self
        return replace(self, path=self.path.rstrip("/") + "/" + name)

    def split(self) -> tuple[ParsedURI, str]:
        """(the URI of the folder holding this file, the file's name)."""
        parent, _, name = self.path.rstrip("/").rpartition("/")
        if name in ("", ".", ".."):
            raise InvalidURIError(f"{self.redacted} names no file",
                                  hint="give the path of a file, e.g. nodelocal://self/data.csv")
        return replace(self, path=parent or "/"), name


def _split_uri(uri: str) -> ParsedURI | None:
    try:
        parts = urlsplit(uri)
        params = tuple(parse_qsl(parts.query, keep_blank_values=True))
    except ValueError:
        return None
    if not parts.scheme or "://" not in uri:
        return None
    userinfo, _, host = parts.netloc.rpartition("@")
    return ParsedURI(scheme=parts.scheme.lower(), host=host, path=unquote(parts.path),
                     params=params, userinfo=userinfo)


def parse_uri(uri: str) -> ParsedURI:
    """Split a URI; raises InvalidURIError (with the URI redacted) if it has no scheme."""
    parsed = _split_uri(uri)
    if parsed is None:
        raise InvalidURIError(
            f"invalid external storage URI {redact_uri(uri)}: expected scheme://...",
            hint=_scheme_hint())
    return parsed


def redact_uri(uri: str) -> str:
    """``uri`` with secrets replaced; never fails (a URI that does not parse loses its query
    and user information altogether)."""
    parsed = _split_uri(uri)
    if parsed is not None:
        return parsed.redacted
    head, query, _ = uri.partition("?")
    scheme, sep, rest = head.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = f"{REDACTED}@" + rest.split("@", 1)[1]
    return scheme + sep + rest + (f"?{REDACTED}" if query else "")


# -- the registry ---------------------------------------------------------------------------

StorageFactory = Callable[[ParsedURI, StorageContext], ExternalStorage]
_FACTORIES: dict[str, StorageFactory] = {}


def register_scheme(scheme: str, factory: StorageFactory) -> None:
    """Make ``scheme://`` URIs open with ``factory`` (called by backend modules at import)."""
    _FACTORIES[scheme.lower()] = factory


def supported_schemes() -> list[str]:
    return sorted(_FACTORIES)


def _scheme_hint() -> str:
    return "supported URIs: " + ", ".join(_EXAMPLES.get(s, f"{s}://...")
                                          for s in supported_schemes())


_EXAMPLES = {
    "file": "file:///absolute/path",
    "nodelocal": "nodelocal://self/path (under the store's external/ folder)",
    "memory": "memory://bucket/path (tests)",
    "s3": "s3://bucket/path?AWS_ACCESS_KEY_ID=..&AWS_SECRET_ACCESS_KEY=..",
}


def open_storage(uri: str | ParsedURI, ctx: StorageContext | None = None) -> ExternalStorage:
    """The external storage rooted at ``uri``."""
    parsed = uri if isinstance(uri, ParsedURI) else parse_uri(uri)
    factory = _FACTORIES.get(parsed.scheme)
    if factory is None:
        raise InvalidURIError(
            f'unsupported external storage scheme "{parsed.scheme}" in {parsed.redacted}; '
            f"supported schemes: {', '.join(supported_schemes())}", hint=_scheme_hint())
    return factory(parsed, ctx or StorageContext())


def open_file(uri: str, ctx: StorageContext | None = None) -> tuple[ExternalStorage, str]:
    """The storage of the folder holding the file ``uri`` names, and the file's name in it.

    ``..`` segments are left for the backend to refuse, never resolved here.
    """
    parsed = parse_uri(uri)
    folder, name = parsed.split()
    open_storage(parsed, ctx)  # refuses a bad URI naming the file, not its folder
    return open_storage(folder, ctx), name
