"""``s3://bucket/prefix?AWS_ACCESS_KEY_ID=..&AWS_SECRET_ACCESS_KEY=..``: Amazon S3 and S3-compatible
object stores, through s3fs.

Query parameters are CockroachDB's: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT`` (an S3-compatible server, ``http://127.0.0.1:9000``),
``AWS_REGION`` and ``AUTH``: ``specified`` (the default; the keys must be in the URI) or
``implicit`` (botocore's default credential chain: environment, ``~/.aws``, instance metadata).

Files are handled by ``FilesystemStorage`` like every backend; this module adds what an object
store needs on top of it:

* Failures the user has to fix become ``EndpointUnreachableError``, ``AccessDeniedError`` or
  ``BucketNotFoundError`` with a hint. They are recognised where every s3fs request passes
  (``_call_s3``), so listing or deleting in a missing bucket fails instead of looking empty.
* No directories: ``makedirs`` does nothing (s3fs would create a missing *bucket*).
* A write whose data fails part-way is discarded, never committed as a truncated object.
* Short timeouts and one retry: an unreachable endpoint fails in seconds, not minutes.
* The secret key and the session token never appear in a message or a repr. The access key
  id is not a secret (CockroachDB shows it too) and is named in messages to help.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from tidemark.cloud.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    CloudError,
    EndpointUnreachableError,
    InvalidURIError,
)
from tidemark.cloud.filesystem import FilesystemStorage
from tidemark.cloud.uri import REDACTED, ParsedURI, StorageContext, register_scheme

__all__ = ["AUTH_IMPLICIT", "AUTH_SPECIFIED", "PARAMS", "S3Storage", "open_s3"]

ACCESS_KEY = "AWS_ACCESS_KEY_ID"
SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
SESSION_TOKEN = "AWS_SESSION_TOKEN"
ENDPOINT = "AWS_ENDPOINT"
REGION = "AWS_REGION"
AUTH = "AUTH"
PARAMS = (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, ENDPOINT, REGION, AUTH)
AUTH_SPECIFIED, AUTH_IMPLICIT = "specified", "implicit"

# botocore's defaults (60 s to connect, several attempts) would make a mistyped AWS_ENDPOINT
# hang for minutes. s3fs's own retry loop (throttling, dropped connections) is left as is:
# it does not retry a connection that cannot be made.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
MAX_ATTEMPTS = 2

# Error codes meaning "these credentials may not do this" (s3fs turns most into
# PermissionError; "403" is what a HEAD request gets, having no body to carry a code).
_DENIED = {
    "InvalidAccessKeyId": "the access key id {key} is not known to the endpoint",
    "SignatureDoesNotMatch": "the secret key does not match the access key id {key}",
    "AccessDenied": 'the credentials of {key} may not access bucket "{bucket}"',
    "AllAccessDisabled": 'all access to bucket "{bucket}" is disabled',
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is invalid",
    "TokenRefreshRequired": "the session token must be refreshed",
    "403": "the endpoint answered 403 Forbidden to access key id {key}",
}
# Requests that only fail with 404 when the bucket itself is missing (a missing key in an
# existing bucket gives an empty listing, not a 404).
_BUCKET_REQUESTS = {"list_objects_v2", "list_objects", "head_bucket"}


@dataclass(frozen=True, slots=True)
class _Failures:
    """Turns s3fs/botocore exceptions into the errors a user can act on (without the step and
    URI: ``S3Storage`` adds those)."""

    endpoint: str | None
    bucket: str
    key_id: str | None
    implicit: bool
    has_token: bool
    secrets: tuple[str, ...] = field(repr=False)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "redacted")
        return text

    def translate(self, exc: BaseException, method: str) -> CloudError | None:
        """Our error for ``exc``, or None to let FilesystemStorage handle it (a missing key,
        say)."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        if isinstance(exc, CloudError):
            return None
        # BotoConnectionError: refused, unknown host, connect timeout, TLS, proxy.
        if isinstance(exc, (BotoConnectionError, ReadTimeoutError, ConnectionClosedError)):
            return self._unreachable(exc)
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return _bare(AccessDeniedError(
                "no AWS credentials found: AUTH=implicit looks in the environment, ~/.aws "
                "and the instance metadata", hint=(
                    f"set {ACCESS_KEY} and {SECRET_KEY} in the environment, or give them in "
                    "the URI without AUTH=implicit")))
        if isinstance(exc, BotoCoreError):  # not an OSError: FilesystemStorage would miss it
            return _bare(CloudError(f"s3 request failed: {self.scrub(str(exc))}"))

        client_error = exc if isinstance(exc, ClientError) else exc.__cause__
        if not isinstance(client_error, ClientError):
            return None
        error = client_error.response.get("Error", {})
        code = str(error.get("Code", ""))
        server_says = self.scrub(str(error.get("Message") or code))
        where = f"s3 endpoint {self.endpoint}" if self.endpoint else "AWS S3"
        if code in _DENIED:
            detail = _DENIED[code].format(key=self.key_id or "(default credential chain)",
                                          bucket=self.bucket)
            if self.implicit:
                hint = ("check the credentials the default AWS chain finds (AUTH=implicit) "
                        "and their permissions on the bucket")
            elif code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
                hint = f"check {SESSION_TOKEN}, or get new temporary credentials"
            else:
                hint = (f"check {ACCESS_KEY}/{SECRET_KEY}"
                        f"{'/' + SESSION_TOKEN if self.has_token else ''} "
                        "and that they may read and write the bucket")
            why = "" if code == "403" else f" ({code}: {server_says})"  # a HEAD has no reason
            return _bare(AccessDeniedError(f"access denied by {where}: {detail}{why}", hint=hint))
        if code == "NoSuchBucket" or (code == "404" and method in _BUCKET_REQUESTS):
            also = "" if code == "NoSuchBucket" else (
                " (HTTP 404 without an S3 error code: is this an S3 server?)")
            return _bare(BucketNotFoundError(
                f's3 bucket "{self.bucket}" does not exist at {where}{also}',
                hint="create the bucket first, or check the bucket name (the host of the "
                     f"s3:// URI){' and ' + ENDPOINT if self.endpoint else ''}"))
        return None

    def _unreachable(self, exc: Any) -> CloudError:
        from botocore.exceptions import (
            ConnectionClosedError,
            ConnectTimeoutError,
            ReadTimeoutError,
            SSLError,
        )

        url = (getattr(exc, "kwargs", None) or {}).get("endpoint_url") or self.endpoint or ""
        parts = urlsplit(url)
        endpoint = f"{parts.scheme}://{parts.netloc}" if parts.netloc else (url or "AWS S3")
        if isinstance(exc, ConnectTimeoutError):
            reason = f"no connection within {CONNECT_TIMEOUT}s"
        elif isinstance(exc, ReadTimeoutError):
            reason = f"no response within {READ_TIMEOUT}s"
        elif isinstance(exc, ConnectionClosedError):
            reason = "the connection was closed before a response"
        elif isinstance(exc, SSLError):
            inner = (getattr(exc, "kwargs", None) or {}).get("error")
            reason = f"TLS failed ({inner or exc}); is it http:// rather than https://?"
        else:
            reason = _connection_reason(exc)
        hint = (f"check {ENDPOINT} (scheme, host and port) and that the S3 server is running"
                if self.endpoint else
                f"check the network connection to AWS, or set {ENDPOINT} for an "
                "S3-compatible server")
        return _bare(EndpointUnreachableError(
            f"cannot reach s3 endpoint {self.scrub(endpoint)}: {self.scrub(reason)}", hint=hint))


def _connection_reason(exc: Any) -> str:
    """Why the connection failed, from the OS error under botocore's and aiohttp's."""
    seen: set[int] = set()
    inner = (getattr(exc, "kwargs", None) or {}).get("error")
    todo: list[Any] = [inner, exc.__cause__, exc.__context__]
    while todo:
        err = todo.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, ConnectionRefusedError):
            return "connection refused"
        if isinstance(err, socket.gaierror):
            return "unknown host"
        if isinstance(err, TimeoutError):
            return "connection timed out"
        todo += [getattr(err, "os_error", None), err.__cause__, err.__context__]
    return f"could not connect ({inner})" if inner else "could not connect"  # TLS, say


def _bare(err: CloudError) -> CloudError:
    """Mark an error as still lacking the step and URI (``S3Storage._errors`` adds them)."""
    err._s3_bare = True  # type: ignore[attr-defined]
    return err


@functools.cache
def _filesystem_class() -> type:
    """The s3fs filesystem class with our changes, built on first use: s3fs and botocore
    take a fifth of a second to import, and every CLI command imports ``tidemark.cloud``."""
    import s3fs
    from fsspec.asyn import sync_wrapper
    from s3fs.core import S3File

    class _S3File(S3File):  # type: ignore[misc]
        def __exit__(self, exc_type: Any, *rest: Any) -> None:
            if exc_type is not None and self.mode != "rb" and not self.closed:
                # fsspec commits the buffer on every close: a write whose data failed
                # part-way would become a complete-looking, truncated object.
                with contextlib.suppress(Exception):
                    self.discard()
                self.forced = True  # close() must not flush what is left
            self.close()

    class _S3FileSystem(s3fs.S3FileSystem):  # type: ignore[misc]
        failures: _Failures

        async def _call_s3(self, method: str, *akwarglist: Any, **kwargs: Any) -> Any:
            try:
                return await super()._call_s3(method, *akwarglist, **kwargs)
            except Exception as exc:
                err = self.failures.translate(exc, method)
                if err is None:
                    raise
                raise err from None

        # s3fs binds its sync wrapper (used by S3File) to its own _call_s3: rebind to ours.
        call_s3 = sync_wrapper(_call_s3)

        async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
            """Nothing: keys need no folders, and s3fs would create a missing bucket."""

        makedirs = sync_wrapper(_makedirs)

        def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
            f = super()._open(path, mode, **kwargs)
            if type(f) is S3File:
                f.__class__ = _S3File
            return f

    return _S3FileSystem


class S3Storage(FilesystemStorage):
    """FilesystemStorage over s3fs, adding the step and URI to the errors ``_Failures`` makes."""

    @contextlib.contextmanager
    def _errors(self, step: str, name: str) -> Iterator[None]:
        with super()._errors(step, name):
            try:
                yield
            except CloudError as err:
                if not getattr(err, "_s3_bare", False):
                    raise
                raise type(err)(f"{step} {self.uri_of(name)}: {err.message}",
                                hint=err.hint) from None

    def close(self) -> None:
        """Close the HTTP connections now rather than when the filesystem is collected."""
        from fsspec.asyn import sync

        client, self.fs._s3 = getattr(self.fs, "_s3", None), None
        if client is not None:
            with contextlib.suppress(Exception):
                sync(self.fs.loop, client.close, timeout=5)


def _params(parsed: ParsedURI) -> dict[str, str]:
    names = [k for k, _ in parsed.params]
    unknown = sorted({k for k in names if k not in PARAMS})
    if unknown:
        raise InvalidURIError(
            f"{parsed.redacted}: unknown s3 parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)}; accepted: {', '.join(PARAMS)}",
            hint="parameter names are upper case, as in CockroachDB")
    twice = sorted({k for k in names if names.count(k) > 1})
    if twice:
        raise InvalidURIError(f"{parsed.redacted}: {', '.join(twice)} given more than once")
    return {k: v for k, v in parsed.params if v}


def _endpoint(parsed: ParsedURI, endpoint: str) -> str:
    try:
        parts = urlsplit(endpoint)
        ok = (parts.scheme in ("http", "https") and bool(parts.hostname)
              and not parts.username
              and (parts.port or 0) >= 0)  # .port raises ValueError if not a number
    except ValueError:
        ok = False
    if not ok:
        # The endpoint may carry a password (refused here): show the URI without its value.
        shown = replace(parsed, params=tuple((k, REDACTED if k == ENDPOINT else v)
                                             for k, v in parsed.params)).redacted
        raise InvalidURIError(f"{shown}: {ENDPOINT} must be an http:// or https:// URL "
                              "without credentials",
                              hint=f"for example {ENDPOINT}=http://127.0.0.1:9000")
    return endpoint.rstrip("/")


def open_s3(parsed: ParsedURI, ctx: StorageContext) -> S3Storage:
    params = _params(parsed)
    if parsed.userinfo:
        raise InvalidURIError(
            f"{parsed.redacted}: s3:// URIs take credentials as parameters, not before the "
            "bucket", hint=f"write s3://bucket/path?{ACCESS_KEY}=..&{SECRET_KEY}=..")
    bucket = parsed.host
    if not bucket:
        raise InvalidURIError(f"{parsed.redacted}: no bucket",
                              hint=f"write s3://bucket/path?{ACCESS_KEY}=..&{SECRET_KEY}=..")
    if any(seg in (".", "..") for seg in parsed.path.split("/")):
        raise InvalidURIError(f"{parsed.redacted}: '.' and '..' are not allowed in the path")

    auth = params.get(AUTH, AUTH_SPECIFIED).lower()
    given = [k for k in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN) if k in params]
    if auth == AUTH_IMPLICIT:
        if given:
            raise InvalidURIError(
                f"{parsed.redacted}: AUTH=implicit takes the credentials from the environment, "
                f"but the URI gives {', '.join(given)}",
                hint="remove AUTH=implicit, or the credentials")
    elif auth == AUTH_SPECIFIED:
        missing = [k for k in (ACCESS_KEY, SECRET_KEY) if k not in params]
        if missing:
            raise InvalidURIError(
                f"{parsed.redacted}: missing {' and '.join(missing)} (AUTH=specified)",
                hint=f"add {ACCESS_KEY}=..&{SECRET_KEY}=.. to the URI, or AUTH=implicit to use "
                     "the default AWS credential chain")
    else:
        raise InvalidURIError(f"{parsed.redacted}: unsupported AUTH={params[AUTH]!r}",
                              hint=f"use AUTH={AUTH_SPECIFIED} or AUTH={AUTH_IMPLICIT}")

    endpoint = _endpoint(parsed, params[ENDPOINT]) if ENDPOINT in params else None
    client_kwargs = {k: v for k, v in (("endpoint_url", endpoint),
                                       ("region_name", params.get(REGION))) if v}
    fs = _filesystem_class()(
        key=params.get(ACCESS_KEY), secret=params.get(SECRET_KEY),
        token=params.get(SESSION_TOKEN), client_kwargs=client_kwargs,
        config_kwargs={
            "connect_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT,
            "retries": {"max_attempts": MAX_ATTEMPTS},
            # The URI alone says where to go, not AWS_ENDPOINT_URL in the environment.
            "ignore_configured_endpoint_urls": True,
        },
        use_listings_cache=False, skip_instance_cache=True)
    fs.failures = _Failures(endpoint=endpoint, bucket=bucket, key_id=params.get(ACCESS_KEY),
                            implicit=auth == AUTH_IMPLICIT, has_token=SESSION_TOKEN in params,
                            secrets=tuple(parsed.secrets()))
    root = "/".join(p for p in (bucket, parsed.path.strip("/")) if p)
    return S3Storage(fs, root, parsed, atomic_rename=False)


register_scheme("s3", open_s3)
