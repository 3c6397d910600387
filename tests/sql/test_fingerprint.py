"""Fingerprints: order-independent, ID-independent, and updatable from the changed entries."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tidemark.catalog import fingerprint as fpr
from tidemark.kv.keys import index_prefix

entries_st = st.dictionaries(st.binary(max_size=6), st.binary(max_size=6), max_size=30)


@settings(max_examples=200, deadline=None)
@given(entries_st, entries_st, st.integers(0, 2**32))
def test_incremental_update_equals_recomputation(before, after, seed):
    prefix = index_prefix(104, 2)
    old = [(prefix + k, v) for k, v in before.items()]
    new = [(prefix + k, v) for k, v in after.items()]
    removed = [e for e in old if e not in new]
    added = [e for e in new if e not in old]
    random.Random(seed).shuffle(new)
    fp_old = fpr.fingerprint(old, len(prefix))
    assert fpr.update(fp_old, len(prefix), removed, added) == fpr.fingerprint(new, len(prefix))


def test_independent_of_table_and_index_ids():
    rows = [(b"\x89k1", b"v1"), (b"\x8ak2", b"v2")]
    a, b = index_prefix(100, 1), index_prefix(512, 7)
    assert fpr.fingerprint([(a + k, v) for k, v in rows], len(a)) == \
        fpr.fingerprint([(b + k, v) for k, v in reversed(rows)], len(b))
    assert fpr.fingerprint([(a + b"\x89k1", b"v2")], len(a)) != \
        fpr.fingerprint([(a + b"\x89k1", b"v1")], len(a))
