"""Backup data-file codec: round trips, wrong/missing keys, tampering, truncation, reordering."""

from __future__ import annotations

import io
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidemark.cloud.codec import (
    DEFAULT_KDF,
    FORMAT_VERSION,
    TAG_SIZE,
    CorruptFileError,
    Decoder,
    Encoder,
    EncryptionKey,
    EncryptionRequiredError,
    KDFParams,
    NotEncryptedError,
    UnsupportedFormatError,
    WrongPassphraseError,
    decode,
    decode_stream,
    derive_key,
    encode,
    encode_stream,
    new_salt,
)
from tidemark.cloud.errors import CloudError

FAST_KDF = KDFParams(log2_n=10, r=8, p=1)  # scrypt is slow by design; tests use small params
FRAME = 1024  # the smallest frame size: many frames from little data
PASS = "correct horse battery staple"


@pytest.fixture(scope="module")
def key() -> EncryptionKey:
    return EncryptionKey.from_passphrase(PASS, kdf=FAST_KDF)


@pytest.fixture(scope="module")
def other_key(key) -> EncryptionKey:
    # Same passphrase and salt, so the same key: files differ only by their per-file id.
    return EncryptionKey.from_passphrase(PASS, salt=key.salt, kdf=FAST_KDF)


def header_len(blob: bytes) -> int:
    return 6 + 8 + (56 if blob[5] & 0x02 else 0)


def frames(blob: bytes) -> tuple[bytes, list[bytes]]:
    h = header_len(blob)
    n = FRAME + TAG_SIZE
    return blob[:h], [blob[i : i + n] for i in range(h, len(blob), n)]


def enc(data: bytes, key=None) -> bytes:
    return encode(data, key=key, frame_size=FRAME)


def flip(blob: bytes, pos: int) -> bytes:
    b = bytearray(blob)
    b[pos] ^= 0x40
    return bytes(b)


DATA = {
    "empty": b"",
    "small": b"hello, tidemark",
    "multi_frame": os.urandom(5 * FRAME + 17),
    "large_random": os.urandom(3 * 1024 * 1024 + 5),
    "large_compressible": b"".join(
        b"row %08d,some value,%d\n" % (i, i % 7) for i in range(200_000)
    ),
}


# -- keys ---------------------------------------------------------------------------------


def test_derive_key_default_params():
    salt = new_salt()
    assert len(salt) == 16 and salt != new_salt()
    k = derive_key(PASS, salt)
    assert len(k) == 32
    assert k == derive_key(PASS, salt, DEFAULT_KDF)
    assert k != derive_key(PASS + "!", salt)
    assert KDFParams(15, 8, 1) == DEFAULT_KDF


def test_key_repr_hides_material(key):
    assert key.key.hex() not in repr(key)


# -- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DATA))
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_round_trip(name, encrypted, key):
    data = DATA[name]
    k = key if encrypted else None
    blob = enc(data, k)
    assert blob[:4] == b"TDMK" and blob[4] == FORMAT_VERSION
    assert decode(blob, key=k) == data
    if encrypted:
        assert decode(blob, key=PASS) == data  # passphrase: derived with the file's salt
        assert len(data) < 16 or data[:16] not in blob  # not stored in the clear
    if name == "large_compressible":
        assert len(blob) < len(data) // 5


def test_frame_boundary_sizes(key):
    # Compressed sizes around multiples of the frame size (random data barely compresses).
    for n in (FRAME - 40, FRAME, 2 * FRAME - 20, 2 * FRAME + 3):
        data = os.urandom(n)
        assert decode(enc(data, key), key=key) == data


def test_streaming_api(key):
    data = DATA["large_random"]
    out = io.BytesIO()
    with Encoder(out, key) as e:
        for i in range(0, len(data), 10_000):
            e.write(data[i : i + 10_000])
    out.seek(0)
    d = Decoder(out, key, name="nodelocal://1/backup/data/1.sst")
    assert d.header.encrypted and d.header.salt == key.salt
    got = bytearray()
    while chunk := d.read(7_000):
        assert len(chunk) <= 7_000
        got += chunk
    assert bytes(got) == data
    assert d.read() == b""

    src, dst = io.BytesIO(data), io.BytesIO()
    encode_stream(src, dst)
    dst.seek(0)
    back = io.BytesIO()
    decode_stream(dst, back)
    assert back.getvalue() == data


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunks=st.lists(st.binary(max_size=3000), max_size=8),
    encrypted=st.booleans(),
)
def test_round_trip_property(chunks, encrypted, key):
    k = key if encrypted else None
    blob = encode(iter(chunks), key=k, frame_size=FRAME)
    assert decode(blob, key=k) == b"".join(chunks)


# -- keys: wrong, missing, unexpected -----------------------------------------------------


def test_wrong_passphrase(key):
    blob = enc(b"secret rows", key)
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        decode(blob, key="not the passphrase")
    wrong = EncryptionKey.from_passphrase("nope", salt=key.salt, kdf=FAST_KDF)
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        decode(blob, key=wrong)
    other_salt = EncryptionKey.from_passphrase(PASS, kdf=FAST_KDF)
    with pytest.raises(WrongPassphraseError, match="different salt"):
        decode(blob, key=other_salt)


def test_missing_key(key):
    with pytest.raises(
        EncryptionRequiredError, match="file is encrypted, and no encryption passphrase"
    ) as err:
        decode(enc(b"x", key))
    assert "encryption_passphrase" in err.value.hint


def test_key_for_unencrypted_file():
    with pytest.raises(NotEncryptedError, match="not encrypted"):
        decode(enc(b"x"), key=PASS)


def test_errors_are_cloud_errors_and_named(key):
    with pytest.raises(CloudError, match=r"^s3://b/1\.sst: "):
        decode(enc(b"x", key), name="s3://b/1.sst")


# -- tampering, truncation, reordering ----------------------------------------------------


@pytest.fixture(scope="module")
def blob(key) -> bytes:
    return enc(DATA["multi_frame"], key)


def test_tamper_header_every_byte(blob, key):
    for pos in range(header_len(blob)):
        with pytest.raises((CorruptFileError, UnsupportedFormatError, WrongPassphraseError)):
            decode(flip(blob, pos), key=key)
    with pytest.raises(CorruptFileError, match="header checksum"):
        decode(flip(blob, 20), key=key)  # the salt
    with pytest.raises(CorruptFileError, match="bad magic"):
        decode(flip(blob, 0), key=key)


def test_tamper_frame_ciphertext_and_tag(blob, key):
    head, fs = frames(blob)
    assert len(fs) == 6
    for i in range(len(fs)):
        start = len(head) + i * (FRAME + TAG_SIZE)
        ciphertext_pos = start + 5
        tag_pos = start + len(fs[i]) - 3
        for pos in (ciphertext_pos, tag_pos):
            with pytest.raises(CorruptFileError, match=rf"corrupt or tampered: .*frame {i} failed"):
                decode(flip(blob, pos), key=key)


def test_truncation(blob, key):
    head, fs = frames(blob)
    h = len(head)
    n = FRAME + TAG_SIZE
    cuts = [0, 3, 5, h - 1, h, h + 1, h + 100, h + n - 1, h + n, h + 2 * n, h + 5 * n,
            len(blob) - 1]  # fmt: skip
    for cut in cuts:
        with pytest.raises(CorruptFileError, match=r"corrupt or tampered|bad magic"):
            decode(blob[:cut], key=key)
    # Dropping whole frames at a boundary: the new last frame was not sealed as final.
    with pytest.raises(CorruptFileError, match="final frame 2 failed authentication"):
        decode(head + b"".join(fs[:3]), key=key)
    # Appending is caught too.
    with pytest.raises(CorruptFileError, match="frame 5 failed authentication"):
        decode(blob + fs[0], key=key)


def test_reorder_frames(blob, key):
    head, fs = frames(blob)
    fs[1], fs[2] = fs[2], fs[1]
    with pytest.raises(CorruptFileError, match="frame 1 failed authentication"):
        decode(head + b"".join(fs), key=key)


def test_swap_frame_between_files(key, other_key):
    data = DATA["multi_frame"]
    a, b = enc(data, key), enc(data, other_key)
    assert decode(b, key=key) == data  # same key: files differ only by their file id
    head_a, fa = frames(a)
    _, fb = frames(b)
    fa[2] = fb[2]
    with pytest.raises(CorruptFileError, match="frame 2 failed authentication"):
        decode(head_a + b"".join(fa), key=key)
    # A whole header from another file does not fit the frames either.
    with pytest.raises(CorruptFileError, match="frame 0 failed authentication"):
        decode(frames(b)[0] + b"".join(frames(a)[1]), key=key)


def test_corrupt_unencrypted_payload():
    data = DATA["multi_frame"]
    plain = enc(data)
    h = header_len(plain)
    rng = random.Random(7)
    for pos in [
        h,
        h + 1,
        len(plain) // 2,
        len(plain) - 33,
        len(plain) - 1,
        *rng.sample(range(h, len(plain)), 20),
    ]:
        with pytest.raises(CorruptFileError, match="corrupt or tampered"):
            decode(flip(plain, pos))
    for cut in (h, h + 10, len(plain) - 40, len(plain) - 32, len(plain) - 1):
        with pytest.raises(CorruptFileError, match="corrupt or tampered"):
            decode(plain[:cut])
    with pytest.raises(CorruptFileError, match="corrupt or tampered"):
        decode(plain + b"x")


def test_newer_format_version():
    plain = bytearray(enc(b"x"))
    plain[4] = FORMAT_VERSION + 1
    with pytest.raises(
        UnsupportedFormatError, match=rf"version {FORMAT_VERSION + 1}.*version {FORMAT_VERSION}"
    ):
        decode(bytes(plain))


def test_not_a_data_file():
    with pytest.raises(CorruptFileError, match="not a tidemark data file"):
        decode(b"SQLite format 3\0" + b"\0" * 100)
