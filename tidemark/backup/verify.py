"""File checks of a backup chain: every data file present, of its size, with its checksum.

``SHOW BACKUP ... WITH check_files`` and the doctor's structural pass use this. The manifest
holds each file's size and the SHA-256 of its stored bytes, so a file that is missing,
truncated, modified, or swapped with another backup's file is found without decoding it.
"""

from __future__ import annotations

import hashlib

from tidemark.backup.chain import Chain
from tidemark.cloud import FileNotFound
from tidemark.cloud.storage import ExternalStorage
from tidemark.errors import TidemarkError

__all__ = ["check_files"]

_READ_SIZE = 1 << 20


def check_files(storage: ExternalStorage, chain: Chain) -> list[str]:
    """One line per missing or corrupt file (empty when all are sound).

    Checksums cover the stored (encrypted) bytes, so checking them needs no key; reading the
    chain's manifests already needed the passphrase.
    """
    problems = []
    for layer in chain.layers:
        folder = layer.dir.strip("/")
        for f in layer.manifest.files:
            name = f"{folder}/{f.path}"
            try:
                info = storage.stat(name)
            except FileNotFound:
                problems.append(f"{layer.dir}/{f.path}: missing")
                continue
            if info.size != f.size:
                problems.append(f"{layer.dir}/{f.path}: corrupt: {info.size} bytes, the "
                                f"manifest says {f.size}")
                continue
            hasher = hashlib.sha256()
            try:
                with storage.open(name) as src:
                    while chunk := src.read(_READ_SIZE):
                        hasher.update(chunk)
            except TidemarkError as exc:
                problems.append(f"{layer.dir}/{f.path}: unreadable: {exc.message}")
                continue
            if hasher.hexdigest() != f.sha256:
                problems.append(f"{layer.dir}/{f.path}: corrupt: its checksum does not match "
                                "the manifest (modified, or swapped with another file)")
    return problems
