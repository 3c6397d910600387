"""Index fingerprints: an order-independent 64-bit digest of an index's live entries.

The fingerprint is the sum modulo 2**64 of a 64-bit hash of each entry's key *after* the
``/Table/<id>/<index>`` prefix together with its value. Leaving the prefix out makes it
independent of table and index IDs, so a restored copy matches its source; being a sum, it can
be updated from the entries that changed (subtract the old entry's hash, add the new one's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from tidemark.storage.engine import Engine, Span, scan_batches

MASK = (1 << 64) - 1


def entry_hash(suffix: bytes, value: bytes) -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update(len(suffix).to_bytes(4, "big"))
    h.update(suffix)
    h.update(value)
    return int.from_bytes(h.digest(), "big")


def fingerprint(entries: Iterable[tuple[bytes, bytes]], prefix_len: int) -> int:
    total = 0
    for key, value in entries:
        total += entry_hash(key[prefix_len:], value)
    return total & MASK


def update(fp: int, prefix_len: int, removed: Iterable[tuple[bytes, bytes]],
           added: Iterable[tuple[bytes, bytes]]) -> int:
    """The fingerprint after replacing entries ``removed`` with ``added``: cost proportional to
    the change, not to the index."""
    for key, value in removed:
        fp -= entry_hash(key[prefix_len:], value)
    for key, value in added:
        fp += entry_hash(key[prefix_len:], value)
    return fp & MASK


def span_fingerprint(engine: Engine, span: Span, ts: int, prefix_len: int) -> int:
    """The fingerprint of what a read of ``span`` at ``ts`` sees: in C when the engine can,
    otherwise read in batches, so memory never grows with the span. Does not check ``ts``
    (see ``Engine.check_read_ts``)."""
    fp = engine.fingerprint(span, ts, prefix_len)
    if fp is not None:
        return fp
    total = 0
    for batch in scan_batches(engine, span.start, span.end, ts):
        total = (total + fingerprint(batch, prefix_len)) & MASK
    return total
