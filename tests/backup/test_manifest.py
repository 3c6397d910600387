"""The backup manifest: encoding, versions, checksum sidecar, encryption, reads from a folder."""

from __future__ import annotations

import msgspec
import pytest

from tidemark.backup.manifest import (
    CHECKPOINT,
    LATEST,
    LOCK,
    MANIFEST,
    MANIFEST_CHECKSUM,
    MANIFEST_FORMAT_VERSION,
    BackupFile,
    CorruptManifestError,
    DescriptorChange,
    DescriptorEntry,
    EncryptionInfo,
    IntroducedSpan,
    Manifest,
    ManifestError,
    ManifestVersionError,
    NotABackupError,
    Span,
    checksum_of,
    decode_manifest,
    encode_manifest,
    has_manifest,
    read_manifest,
    write_manifest,
)
from tidemark.cloud.codec import (
    EncryptionKey,
    EncryptionRequiredError,
    KDFParams,
    WrongPassphraseError,
)

FAST_KDF = KDFParams(log2_n=8, r=8, p=1)  # tests only: cheap scrypt


def sample(**kw) -> Manifest:
    fields = dict(
        cluster_version="1.2",
        backup_type="incremental",
        start_time=1_763_700_000_000_000_000,
        end_time=1_763_700_060_123_456_789,
        mvcc_filter="all",
        is_full_cluster=True,
        spans=[Span(b"/Table/104/1", b"/Table/104/2")],
        introduced_spans=[
            IntroducedSpan(Span(b"/Table/105/1", b"/Table/105/2"), "new"),
            IntroducedSpan(Span(b"/Table/106/1", b"/Table/106/2"), "offline"),
            IntroducedSpan(Span(b"/Table/107/2", b"/Table/107/3"), "non_public_index"),
        ],
        files=[
            BackupFile(Span(b"/Table/104/1", b"/Table/104/2"), "data/1.sst", 10, 512, "ab" * 32)
        ],
        descriptors=[DescriptorEntry(104, "t", 100, "PUBLIC", b"\x81\xa1a\x01")],
        descriptor_changes=[DescriptorChange(5, 104, b"\x80"), DescriptorChange(9, 105, None)],
        encryption=EncryptionInfo(b"s" * 16, 8, 8, 1),
        fingerprints={104: {1: 123456789, 2: 42}},
    )
    fields.update(kw)
    return Manifest(**fields)


def test_file_names_are_cockroachdb_s():
    assert (MANIFEST, MANIFEST_CHECKSUM) == ("BACKUP_MANIFEST", "BACKUP_MANIFEST-CHECKSUM")
    assert (CHECKPOINT, LOCK, LATEST) == ("BACKUP-CHECKPOINT", "BACKUP-LOCK", "LATEST")


def test_encode_decode_round_trip():
    m = sample()
    data = encode_manifest(m)
    assert decode_manifest(data, checksum_of(data)) == m
    assert m.format_version == MANIFEST_FORMAT_VERSION == 1
    assert m.encryption.kdf == KDFParams(8, 8, 1)


def test_defaults_of_a_minimal_full_backup():
    m = Manifest(cluster_version="1.0", backup_type="full", start_time=0, end_time=10)
    data = encode_manifest(m)
    got = decode_manifest(data, checksum_of(data))
    assert got.mvcc_filter == "latest" and got.encryption is None and got.files == []
    assert not got.is_full_cluster


def test_invalid_times_are_refused():
    with pytest.raises(ValueError, match="not ordered"):
        sample(start_time=10, end_time=5)
    with pytest.raises(ValueError, match="full backup starts at time 0"):
        sample(backup_type="full", start_time=5)


def test_wrong_checksum_is_refused():
    data = encode_manifest(sample())
    with pytest.raises(CorruptManifestError, match="checksum mismatch"):
        decode_manifest(data, checksum_of(data + b"x"))


def test_corrupt_bytes_are_refused_even_with_a_matching_checksum():
    for bad in (b"\xc1garbage", encode_manifest(sample())[:-5], msgspec.msgpack.encode([1])):
        with pytest.raises(CorruptManifestError, match="corrupt backup manifest"):
            decode_manifest(bad, checksum_of(bad))
    # well-formed msgpack, wrong types
    bad = msgspec.msgpack.encode({"format_version": 1, "cluster_version": 3})
    with pytest.raises(CorruptManifestError):
        decode_manifest(bad, checksum_of(bad))


def test_newer_format_version_names_both_versions():
    raw = msgspec.msgpack.decode(encode_manifest(sample()))
    raw["format_version"] = MANIFEST_FORMAT_VERSION + 1
    data = msgspec.msgpack.encode(raw)
    with pytest.raises(ManifestVersionError) as err:
        decode_manifest(data, checksum_of(data))
    msg = str(err.value)
    assert f"version {MANIFEST_FORMAT_VERSION + 1}" in msg
    assert f"up to version {MANIFEST_FORMAT_VERSION}" in msg
    assert err.value.hint


def test_unknown_older_version_is_refused():
    data = msgspec.msgpack.encode({"format_version": 0})
    with pytest.raises(ManifestVersionError, match="unknown backup manifest format version 0"):
        decode_manifest(data, checksum_of(data))


def test_writing_another_format_version_is_refused():
    with pytest.raises(ManifestError, match="this binary writes version 1"):
        encode_manifest(sample(format_version=2))


def test_write_then_read(storage):
    d = "/2026/11/21-093000.00"
    assert not has_manifest(storage, d)
    write_manifest(storage, d, sample())
    assert has_manifest(storage, d)
    names = [i.name for i in storage.list()]
    assert names == [
        f"2026/11/21-093000.00/{MANIFEST}",
        f"2026/11/21-093000.00/{MANIFEST_CHECKSUM}",
    ]
    assert read_manifest(storage, d) == sample()
    assert read_manifest(storage, d.lstrip("/")) == sample()
    stored = storage.read(f"2026/11/21-093000.00/{MANIFEST}")
    assert storage.read(f"2026/11/21-093000.00/{MANIFEST_CHECKSUM}") == checksum_of(stored)
    assert stored.startswith(b"TDMK")  # through the codec


def test_manifest_is_written_last(storage):
    class Recording:
        def __init__(self, inner):
            self.inner, self.order = inner, []

        def write(self, name, data):
            self.order.append(name)
            return self.inner.write(name, data)

    rec = Recording(storage)
    write_manifest(rec, "d", sample())
    assert rec.order == [f"d/{MANIFEST_CHECKSUM}", f"d/{MANIFEST}"]


def test_missing_manifest_is_not_a_backup(storage):
    storage.write("d/data/1.sst", b"x")
    with pytest.raises(NotABackupError, match=r"not a backup \(no manifest"):
        read_manifest(storage, "d")


def test_missing_or_wrong_sidecar(storage):
    write_manifest(storage, "d", sample())
    storage.write(f"d/{MANIFEST_CHECKSUM}", checksum_of(b"other"))
    with pytest.raises(CorruptManifestError, match="checksum mismatch"):
        read_manifest(storage, "d")
    storage.delete(f"d/{MANIFEST_CHECKSUM}")
    with pytest.raises(CorruptManifestError, match="no checksum file"):
        read_manifest(storage, "d")


def test_corrupt_stored_manifest(storage):
    write_manifest(storage, "d", sample())
    stored = bytearray(storage.read(f"d/{MANIFEST}"))
    stored[-40] ^= 0xFF
    storage.write(f"d/{MANIFEST}", bytes(stored))
    with pytest.raises(CorruptManifestError, match="checksum mismatch"):
        read_manifest(storage, "d")
    # even with a sidecar rewritten to match, the codec's own checks catch it
    storage.write(f"d/{MANIFEST_CHECKSUM}", checksum_of(bytes(stored)))
    with pytest.raises(CorruptManifestError, match="corrupt or tampered"):
        read_manifest(storage, "d")


def test_newer_version_in_a_folder(storage):
    raw = msgspec.msgpack.decode(encode_manifest(sample()))
    raw["format_version"] = 7
    from tidemark.cloud import codec

    stored = codec.encode(msgspec.msgpack.encode(raw))
    storage.write(f"d/{MANIFEST_CHECKSUM}", checksum_of(stored))
    storage.write(f"d/{MANIFEST}", stored)
    with pytest.raises(ManifestVersionError, match="version 7 is newer"):
        read_manifest(storage, "d")


def test_encrypted_manifest(storage):
    key = EncryptionKey.from_passphrase("hunter2", kdf=FAST_KDF)
    m = sample(encryption=EncryptionInfo.from_key(key))
    write_manifest(storage, "d", m, key=key)
    assert read_manifest(storage, "d", key="hunter2") == m
    assert read_manifest(storage, "d", key=key) == m
    assert m.encryption.salt == key.salt and m.encryption.kdf == FAST_KDF
    assert b"cluster_version" not in storage.read(f"d/{MANIFEST}")
    with pytest.raises(WrongPassphraseError):
        read_manifest(storage, "d", key="wrong")
    with pytest.raises(EncryptionRequiredError):
        read_manifest(storage, "d")
