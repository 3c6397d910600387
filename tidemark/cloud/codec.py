"""The codec of backup data files: zstd, then optional authenticated encryption.

A data file is a small header followed by a body::

    header  magic  b"TDMK"                      4
            format version (1)                  u8
            flags  (bit 0 compressed, bit 1 encrypted; other bits must be 0)  u8
            -- only when encrypted --
            KDF id (1 = scrypt)                 u8
            scrypt log2(n), r, p                u8, u8, u8
            KDF salt                            16
            file id (random per file)           16
            plaintext bytes per frame           u32
            key check value                     16   HMAC-SHA256(key, label + salt)[:16]
            --
            header check                        8    SHA-256 of the bytes above, first 8
    body    unencrypted: the zstd stream (with zstd's content checksum), then a trailing
                         SHA-256 of header + zstd stream (32 bytes)
            encrypted:   the zstd stream cut into frames of ``frame size`` plaintext bytes
                         (the last frame is shorter or equal, and the only one that may be),
                         each sealed with AES-256-GCM (ciphertext + 16-byte tag)

Encryption: the key comes from the passphrase through scrypt (parameters in the header, so
they can change later). Each file seals its frames under its own subkey,
HKDF-SHA256(key, salt=file id), so nonces never repeat across files that share a key; the
nonce is ``4 zero bytes + 8-byte frame counter``. The associated data of frame ``i`` is
``header bytes + i (u64) + final flag (u8)``; so reordering frames, dropping the tail
(no frame authenticates as final), appending, moving a frame to another file and tampering
all fail authentication. The key check value tells a wrong passphrase apart from a corrupt file.

Everything streams: memory is bounded by a couple of frames and zstd's window, whatever the
file size. Plaintext is released only after its frame authenticated, but a truncated or
tampered *later* part is only found when it is reached: read a file to its end (``read()``
returns ``b""`` only after the whole file verified) before trusting what it held.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tidemark.cloud.errors import CloudError

__all__ = [
    "DEFAULT_KDF",
    "FORMAT_VERSION",
    "FRAME_SIZE",
    "MAGIC",
    "PASSPHRASE_HINT",
    "SCRYPT_LOG2_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "CorruptFileError",
    "DataFileError",
    "Decoder",
    "Encoder",
    "EncryptionKey",
    "EncryptionRequiredError",
    "FileHeader",
    "KDFParams",
    "NotEncryptedError",
    "UnsupportedFormatError",
    "WrongPassphraseError",
    "decode",
    "decode_stream",
    "derive_key",
    "encode",
    "encode_stream",
    "new_salt",
]

MAGIC = b"TDMK"
FORMAT_VERSION = 1

SCRYPT_LOG2_N = 15  # n = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
KEY_SIZE = 32
SALT_SIZE = 16
FILE_ID_SIZE = 16
KCV_SIZE = 16
TAG_SIZE = 16
HEADER_CHECK_SIZE = 8
TRAILER_SIZE = 32  # SHA-256 of unencrypted files
FRAME_SIZE = 64 * 1024
MIN_FRAME_SIZE = 1024
MAX_FRAME_SIZE = 16 * 1024 * 1024
ZSTD_LEVEL = 2  # measured on export files: 27% less CPU than level 3, 5% bigger (1: 40%, 24%)
READ_SIZE = 64 * 1024

FLAG_COMPRESSED = 0x01
FLAG_ENCRYPTED = 0x02
KNOWN_FLAGS = FLAG_COMPRESSED | FLAG_ENCRYPTED
KDF_SCRYPT = 1

_PREFIX = struct.Struct(">4sBB")  # magic, version, flags
_ENC = struct.Struct(f">BBBB{SALT_SIZE}s{FILE_ID_SIZE}sI{KCV_SIZE}s")
_FRAME_AD = struct.Struct(">QB")
_KCV_LABEL = b"tidemark data file key check v1"
_SUBKEY_INFO = b"tidemark data file frames v1"

# Bounds on header-supplied KDF parameters, so a hostile header cannot exhaust memory or time.
_MAX_LOG2_N = 22
_MAX_R = 32
_MAX_P = 16


# -- errors -------------------------------------------------------------------------------

# The fix for a missing or wrong passphrase, in the SQL options' words (the doctor CLI, which
# takes --passphrase, gives its own hint).
PASSPHRASE_HINT = ("give the passphrase the backup was taken with (an incremental's is its "
                   "full backup's): WITH encryption_passphrase = '...'")


class DataFileError(CloudError):
    """A backup data file cannot be decoded (or encoded) as asked."""


class CorruptFileError(DataFileError):
    """The file is truncated, corrupt or tampered with; the message names what failed."""

    code = "XX001"  # data_corrupted


class WrongPassphraseError(DataFileError):
    """The key (passphrase) is not the one the file was encrypted with."""

    code = "28P01"  # invalid_password


class EncryptionRequiredError(DataFileError):
    """The file is encrypted and no key was given."""

    code = "28000"  # invalid_authorization_specification


class NotEncryptedError(DataFileError):
    """A key was given for a file that is not encrypted."""

    code = "22023"  # invalid_parameter_value


class UnsupportedFormatError(DataFileError):
    """The file was written in a format version this binary cannot read."""

    code = "0A000"  # feature_not_supported


# -- keys ---------------------------------------------------------------------------------


class KDFParams(NamedTuple):
    """scrypt parameters: n = 2**log2_n."""

    log2_n: int = SCRYPT_LOG2_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P


DEFAULT_KDF = KDFParams()


def new_salt() -> bytes:
    """16 random bytes: one salt per backup (files of one backup share the derived key)."""
    return os.urandom(SALT_SIZE)


def derive_key(passphrase: str, salt: bytes, kdf: KDFParams = DEFAULT_KDF) -> bytes:
    """The 32-byte key of ``passphrase`` with scrypt (memory-hard)."""
    if not isinstance(passphrase, str) or not passphrase:
        raise DataFileError("encryption passphrase must be a non-empty string")
    if len(salt) != SALT_SIZE:
        raise DataFileError(f"KDF salt must be {SALT_SIZE} bytes, got {len(salt)}")
    return Scrypt(salt=salt, length=KEY_SIZE, n=2**kdf.log2_n, r=kdf.r, p=kdf.p).derive(
        passphrase.encode("utf-8")
    )


@functools.lru_cache(maxsize=8)
def _derive_cached(passphrase: str, salt: bytes, kdf: KDFParams) -> bytes:
    # The files of one backup share one salt: derive once, not once per file.
    return derive_key(passphrase, salt, kdf)


def _key_check(key: bytes, salt: bytes) -> bytes:
    return hmac.new(key, _KCV_LABEL + salt, hashlib.sha256).digest()[:KCV_SIZE]


@dataclass(frozen=True, repr=False)
class EncryptionKey:
    """A derived key with the salt and KDF parameters it came from (recorded in headers)."""

    key: bytes
    salt: bytes
    kdf: KDFParams = DEFAULT_KDF

    def __post_init__(self):
        if len(self.key) != KEY_SIZE:
            raise DataFileError(f"encryption key must be {KEY_SIZE} bytes, got {len(self.key)}")
        if len(self.salt) != SALT_SIZE:
            raise DataFileError(f"KDF salt must be {SALT_SIZE} bytes, got {len(self.salt)}")

    def __repr__(self) -> str:  # never print key material
        return f"EncryptionKey(salt={self.salt.hex()}, kdf={tuple(self.kdf)})"

    @classmethod
    def from_passphrase(
        cls, passphrase: str, *, salt: bytes | None = None, kdf: KDFParams = DEFAULT_KDF
    ) -> EncryptionKey:
        salt = new_salt() if salt is None else salt
        return cls(derive_key(passphrase, salt, kdf), salt, KDFParams(*kdf))


# -- header -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileHeader:
    version: int
    flags: int
    kdf: KDFParams | None = None
    salt: bytes | None = None
    file_id: bytes | None = None
    frame_size: int = 0
    key_check: bytes | None = None
    raw: bytes = b""  # the header's bytes, header check included

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & FLAG_ENCRYPTED)


def _build_header(key: EncryptionKey | None, frame_size: int) -> FileHeader:
    flags = FLAG_COMPRESSED
    body = b""
    file_id = None
    if key is not None:
        flags |= FLAG_ENCRYPTED
        file_id = os.urandom(FILE_ID_SIZE)
        body = _ENC.pack(
            KDF_SCRYPT, *key.kdf, key.salt, file_id, frame_size, _key_check(key.key, key.salt)
        )
    head = _PREFIX.pack(MAGIC, FORMAT_VERSION, flags) + body
    raw = head + hashlib.sha256(head).digest()[:HEADER_CHECK_SIZE]
    if key is None:
        return FileHeader(FORMAT_VERSION, flags, raw=raw)
    return FileHeader(
        FORMAT_VERSION, flags, key.kdf, key.salt, file_id, frame_size,
        _key_check(key.key, key.salt), raw,
    )  # fmt: skip


def _read_exact(src: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes; fewer only at end of file."""
    parts = []
    while n > 0:
        b = src.read(n)
        if not b:
            break
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def _read_header(src: BinaryIO, where: str) -> FileHeader:
    prefix = _read_exact(src, _PREFIX.size)
    if len(prefix) < _PREFIX.size or prefix[:4] != MAGIC:
        if MAGIC.startswith(prefix[:4]) and len(prefix) < _PREFIX.size:
            raise CorruptFileError(f"{where}corrupt or tampered: header truncated")
        raise CorruptFileError(f"{where}not a tidemark data file (bad magic)")
    _, version, flags = _PREFIX.unpack(prefix)
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{where}data file format version {version} is not supported by this binary "
            f"(it reads version {FORMAT_VERSION})",
            hint="restore with a binary at least as new as the one that wrote the backup"
            if version > FORMAT_VERSION else None,
        )  # fmt: skip
    encrypted = bool(flags & FLAG_ENCRYPTED)
    rest_len = (_ENC.size if encrypted else 0) + HEADER_CHECK_SIZE
    rest = _read_exact(src, rest_len)
    if len(rest) < rest_len:
        raise CorruptFileError(f"{where}corrupt or tampered: header truncated")
    raw = prefix + rest
    if (
        hashlib.sha256(raw[:-HEADER_CHECK_SIZE]).digest()[:HEADER_CHECK_SIZE]
        != raw[-HEADER_CHECK_SIZE:]
    ):
        raise CorruptFileError(f"{where}corrupt or tampered: header checksum mismatch")
    if flags & ~KNOWN_FLAGS or not flags & FLAG_COMPRESSED:
        raise CorruptFileError(f"{where}corrupt or tampered: unknown header flags {flags:#04x}")
    if not encrypted:
        return FileHeader(version, flags, raw=raw)
    kdf_id, log2_n, r, p, salt, file_id, frame_size, kcv = _ENC.unpack(rest[: _ENC.size])
    if kdf_id != KDF_SCRYPT:
        raise UnsupportedFormatError(f"{where}unknown key derivation function id {kdf_id}")
    if not (1 <= log2_n <= _MAX_LOG2_N and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P):
        raise CorruptFileError(
            f"{where}corrupt or tampered: scrypt parameters out of range "
            f"(log2 n={log2_n}, r={r}, p={p})"
        )
    if not MIN_FRAME_SIZE <= frame_size <= MAX_FRAME_SIZE:
        raise CorruptFileError(f"{where}corrupt or tampered: frame size {frame_size} out of range")
    return FileHeader(version, flags, KDFParams(log2_n, r, p), salt, file_id, frame_size, kcv, raw)


def _subkey(key: bytes, file_id: bytes) -> AESGCM:
    sub = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=file_id, info=_SUBKEY_INFO)
    return AESGCM(sub.derive(key))


def _nonce(index: int) -> bytes:
    return b"\0\0\0\0" + index.to_bytes(8, "big")


# -- encoding -----------------------------------------------------------------------------


class Encoder:
    """Streams an encoded data file into ``out``: ``write()`` plaintext, then ``close()``.

    ``close()`` writes the last frame (or the checksum trailer); it does not close ``out``.
    """

    def __init__(
        self,
        out: BinaryIO,
        key: EncryptionKey | None = None,
        *,
        level: int = ZSTD_LEVEL,
        frame_size: int = FRAME_SIZE,
    ):
        if key is not None and not isinstance(key, EncryptionKey):
            raise DataFileError("key must be an EncryptionKey (see EncryptionKey.from_passphrase)")
        if not MIN_FRAME_SIZE <= frame_size <= MAX_FRAME_SIZE:
            raise DataFileError(f"frame size {frame_size} out of range")
        self._out = out
        self._header = _build_header(key, frame_size)
        self._frame_size = frame_size
        self._zc = zstandard.ZstdCompressor(level=level, write_checksum=True).compressobj()
        self._aead = _subkey(key.key, self._header.file_id) if key is not None else None
        self._sha = hashlib.sha256(self._header.raw) if key is None else None
        self._buf = bytearray()
        self._index = 0
        self._closed = False
        out.write(self._header.raw)

    @property
    def header(self) -> FileHeader:
        return self._header

    def write(self, data: bytes) -> int:
        if self._closed:
            raise ValueError("write to a closed Encoder")
        if data:
            self._emit(self._zc.compress(bytes(data)))
        return len(data)

    def _emit(self, compressed: bytes) -> None:
        if not compressed:
            return
        if self._aead is None:
            self._sha.update(compressed)
            self._out.write(compressed)
            return
        self._buf += compressed
        # Keep at least one byte back: only close() knows which frame is the final one.
        while len(self._buf) > self._frame_size:
            self._seal(bytes(self._buf[: self._frame_size]), final=False)
            del self._buf[: self._frame_size]

    def _seal(self, plaintext: bytes, *, final: bool) -> None:
        ad = self._header.raw + _FRAME_AD.pack(self._index, int(final))
        self._out.write(self._aead.encrypt(_nonce(self._index), plaintext, ad))
        self._index += 1

    def close(self) -> None:
        if self._closed:
            return
        self._emit(self._zc.flush())
        if self._aead is None:
            self._out.write(self._sha.digest())
        else:
            self._seal(bytes(self._buf), final=True)
            self._buf.clear()
        self._closed = True

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


# -- decoding -----------------------------------------------------------------------------


class _FrameReader:
    """Authenticated compressed bytes of an encrypted body; raises at the first bad frame."""

    def __init__(self, src: BinaryIO, header: FileHeader, aead: AESGCM, where: str):
        self._src = src
        self._header = header
        self._aead = aead
        self._where = where
        self._frame_len = header.frame_size + TAG_SIZE
        self._index = 0
        self._next = _read_exact(src, self._frame_len)
        if not self._next:
            raise CorruptFileError(f"{where}corrupt or tampered: truncated (no frames)")
        self._buf = b""
        self._pos = 0
        self.done = False

    def _advance(self) -> None:
        cur = self._next
        self._next = _read_exact(self._src, self._frame_len)
        final = not self._next
        i = self._index
        if len(cur) < TAG_SIZE:
            raise CorruptFileError(f"{self._where}corrupt or tampered: frame {i} truncated")
        ad = self._header.raw + _FRAME_AD.pack(i, int(final))
        try:
            self._buf = self._aead.decrypt(_nonce(i), cur, ad)
        except InvalidTag:
            what = "final " if final else ""
            raise CorruptFileError(
                f"{self._where}corrupt or tampered: {what}frame {i} failed authentication"
                + (" (file truncated, or frames reordered or replaced?)" if final else "")
            ) from None
        self._pos = 0
        self._index += 1
        self.done = final

    def read(self, n: int = -1) -> bytes:
        while self._pos >= len(self._buf):
            if self.done:
                return b""
            self._advance()
        if n is None or n < 0:
            n = len(self._buf) - self._pos
        out = self._buf[self._pos : self._pos + n]
        self._pos += len(out)
        return out


class _ChecksumReader:
    """The compressed bytes of an unencrypted body; checks the SHA-256 trailer at its end."""

    def __init__(self, src: BinaryIO, header: FileHeader, where: str):
        self._src = src
        self._where = where
        self._sha = hashlib.sha256(header.raw)
        self._held = b""  # the last TRAILER_SIZE bytes seen: maybe the trailer
        self.done = False

    def read(self, n: int = -1) -> bytes:
        if self.done:
            return b""
        if n is None or n < 0:
            n = READ_SIZE
        while True:
            chunk = self._src.read(max(n, 1))
            if not chunk:
                self._finish()
                return b""
            data = self._held + chunk
            self._held = data[-TRAILER_SIZE:]
            out = data[:-TRAILER_SIZE]
            if out:
                self._sha.update(out)
                return out

    def _finish(self) -> None:
        if len(self._held) < TRAILER_SIZE:
            raise CorruptFileError(f"{self._where}corrupt or tampered: truncated (no checksum)")
        if not hmac.compare_digest(self._sha.digest(), self._held):
            raise CorruptFileError(
                f"{self._where}corrupt or tampered: checksum mismatch (file truncated or corrupt)"
            )
        self.done = True


class Decoder:
    """Reads the plaintext of an encoded data file from ``src``, verifying as it goes.

    ``key`` is an ``EncryptionKey`` (its salt and KDF parameters must be the file's) or a
    passphrase (derived with the file's salt and parameters). ``name`` (e.g. a redacted URI)
    prefixes error messages. ``read()`` returns ``b""`` only once the whole file verified.
    """

    def __init__(
        self, src: BinaryIO, key: EncryptionKey | str | None = None, *, name: str | None = None
    ):
        self._where = f"{name}: " if name else ""
        where = self._where
        self.header = _read_header(src, where)
        if not self.header.encrypted:
            if key is not None:
                raise NotEncryptedError(
                    f"{where}file is not encrypted, but an encryption key was given",
                    hint="omit encryption_passphrase for an unencrypted backup",
                )
            self._raw = _ChecksumReader(src, self.header, where)
        else:
            if key is None:
                raise EncryptionRequiredError(
                    f"{where}file is encrypted, and no encryption passphrase was given",
                    hint=PASSPHRASE_HINT,
                )
            key_bytes = self._key_for(key)
            self._raw = _FrameReader(
                src, self.header, _subkey(key_bytes, self.header.file_id), where
            )
        self._zr = zstandard.ZstdDecompressor().stream_reader(
            self._raw, read_size=READ_SIZE, read_across_frames=False
        )
        self._eof = False

    def _key_for(self, key: EncryptionKey | str) -> bytes:
        h, where = self.header, self._where
        if isinstance(key, str):
            key_bytes = _derive_cached(key, h.salt, h.kdf)
        elif isinstance(key, EncryptionKey):
            if key.salt != h.salt or tuple(key.kdf) != tuple(h.kdf):
                raise WrongPassphraseError(
                    f"{where}wrong passphrase: the key was derived with a different salt or "
                    "KDF parameters than the file's",
                    hint="pass the passphrase itself so the file's salt is used",
                )
            key_bytes = key.key
        else:
            raise DataFileError("key must be a passphrase or an EncryptionKey")
        if not hmac.compare_digest(_key_check(key_bytes, h.salt), h.key_check):
            raise WrongPassphraseError(f"{where}wrong passphrase: cannot decrypt the file",
                                       hint=PASSPHRASE_HINT)
        return key_bytes

    def read(self, n: int = -1) -> bytes:
        if self._eof:
            return b""
        if n is None or n < 0:
            parts = []
            while chunk := self.read(READ_SIZE):
                parts.append(chunk)
            return b"".join(parts)
        if n == 0:
            return b""
        try:
            out = self._zr.read(n)
        except zstandard.ZstdError as e:
            raise CorruptFileError(
                f"{self._where}corrupt or tampered: compressed payload: {e}"
            ) from None
        if not out:
            self._finish()
        return out

    def _finish(self) -> None:
        # zstd stopped: the body must end here, fully verified.
        if self._raw.read(1):
            raise CorruptFileError(
                f"{self._where}corrupt or tampered: data after the end of the compressed payload"
            )
        if not self._raw.done:  # pragma: no cover - read(1) == b"" implies done
            raise CorruptFileError(f"{self._where}corrupt or tampered: truncated")
        self._eof = True

    def __iter__(self):
        while chunk := self.read(READ_SIZE):
            yield chunk

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc) -> None:
        pass


# -- one-shot helpers ---------------------------------------------------------------------


def encode_stream(
    src: BinaryIO | Iterable[bytes], out: BinaryIO, *, key: EncryptionKey | None = None, **kw
) -> None:
    """Encode everything ``src`` (a readable or an iterable of chunks) yields into ``out``."""
    enc = Encoder(out, key, **kw)
    if hasattr(src, "read"):
        while chunk := src.read(READ_SIZE):
            enc.write(chunk)
    else:
        for chunk in src:
            enc.write(chunk)
    enc.close()


def decode_stream(
    src: BinaryIO, out: BinaryIO, *, key: EncryptionKey | str | None = None, name=None
) -> None:
    """Decode ``src`` into ``out``. On error ``out`` holds a partial result: discard it."""
    for chunk in Decoder(src, key, name=name):
        out.write(chunk)


def encode(
    data: bytes | BinaryIO | Iterable[bytes], *, key: EncryptionKey | None = None, **kw
) -> bytes:
    out = io.BytesIO()
    if isinstance(data, bytes | bytearray | memoryview):
        data = [bytes(data)]
    encode_stream(data, out, key=key, **kw)
    return out.getvalue()


def decode(
    data: bytes, *, key: EncryptionKey | str | None = None, name: str | None = None
) -> bytes:
    return Decoder(io.BytesIO(data), key, name=name).read()
