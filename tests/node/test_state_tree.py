"""The state tree against its definition: roots, updates, paths, and the blob checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.chain.state_tree import (
    DEPTH, EMPTY, BlobInvalid, StateTree, TreeUpdate, bucket_of, fold, key_hash, leaf_hash, leaf_hashes, records,
    value_hash,
)
from tests.node.state_reference import reference_root


class Buckets:
    """A dict standing in for the store's z/ rows."""

    def __init__(self) -> None:
        self.rows: dict[int, bytes] = {}

    def read(self, bucket: int) -> bytes | None:
        return self.rows.get(bucket)

    def persister(self, update: TreeUpdate):  # type: ignore[no-untyped-def]
        def persist() -> None:
            for bucket, blob in update.buckets.items():
                if blob:
                    self.rows[bucket] = blob
                else:
                    self.rows.pop(bucket, None)
        return persist


def _tree() -> tuple[StateTree, Buckets]:
    store = Buckets()
    return StateTree(store.read, {}), store


def _commit(tree: StateTree, store: Buckets, writes: dict[bytes, bytes | None]) -> None:
    update = tree.update(writes)
    tree.apply(update, store.persister(update))


# Few distinct keys so that writes, overwrites and deletes of the same key all occur.
KEYS = st.sampled_from([f"kv/k{i}".encode() for i in range(40)])
BLOCKS = st.lists(st.dictionaries(KEYS, st.none() | st.binary(max_size=8), max_size=12), max_size=8)


@settings(max_examples=60, deadline=None)
@given(BLOCKS)
def test_random_blocks_give_the_reference_root(blocks: list[dict[bytes, bytes | None]]) -> None:
    tree, store = _tree()
    state: dict[bytes, bytes | None] = {}
    for writes in blocks:
        _commit(tree, store, writes)
        state.update(writes)
        assert tree.root == reference_root(state)
    reopened = StateTree(store.read, leaf_hashes(store.rows.items()))
    assert reopened.root == tree.root


def test_the_empty_state_and_a_state_emptied_again_have_the_empty_root() -> None:
    tree, store = _tree()
    assert tree.root == EMPTY == reference_root({})
    _commit(tree, store, {b"kv/a": b"1", b"kv/b": b"2"})
    assert tree.root != EMPTY
    _commit(tree, store, {b"kv/a": None, b"kv/b": None})
    assert tree.root == EMPTY and store.rows == {}


@settings(max_examples=30, deadline=None)
@given(BLOCKS, st.dictionaries(KEYS, st.none() | st.binary(max_size=8), min_size=1, max_size=12))
def test_update_changes_nothing_until_apply(blocks: list[dict[bytes, bytes | None]],
                                            writes: dict[bytes, bytes | None]) -> None:
    tree, store = _tree()
    for block in blocks:
        _commit(tree, store, block)
    before, rows = tree.root, dict(store.rows)
    paths = [tree.path(bucket_of(key_hash(k))) for k in writes]
    update = tree.update(writes)
    assert (tree.root, store.rows) == (before, rows)
    assert [tree.path(bucket_of(key_hash(k))) for k in writes] == paths
    assert tree.update(writes) == update  # pure: the same writes, the same update
    tree.apply(update, store.persister(update))
    assert tree.root == update.root


def test_apply_refuses_an_update_of_another_base() -> None:
    tree, store = _tree()
    stale = tree.update({b"kv/a": b"1"})
    _commit(tree, store, {b"kv/b": b"2"})
    persisted: list[bool] = []
    with pytest.raises(ValueError, match="another state"):
        tree.apply(stale, lambda: persisted.append(True))
    assert not persisted and tree.root == reference_root({b"kv/b": b"2"})


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(KEYS, st.binary(max_size=8), max_size=30), KEYS)
def test_a_path_folds_to_the_root_for_present_and_absent_keys(state: dict[bytes, bytes], key: bytes) -> None:
    tree, store = _tree()
    _commit(tree, store, dict(state))
    kh = key_hash(key)
    bucket = bucket_of(kh)
    blob, siblings = tree.path(bucket)
    assert len(siblings) == DEPTH
    assert fold(bucket, leaf_hash(blob), siblings) == tree.root
    found = value_hash(blob, kh) if blob else None
    assert found == (hashlib.sha256(state[key]).digest() if key in state else None)
    assert all(r[:32] != kh for r in records(blob, bucket)) == (key not in state)


def test_a_bucket_is_the_first_18_bits_of_the_key_hash() -> None:
    assert bucket_of(bytes([0xFF, 0xFF, 0xC0]) + bytes(29)) == (1 << DEPTH) - 1
    assert bucket_of(bytes([0x00, 0x00, 0x40]) + bytes(29)) == 1
    assert bucket_of(bytes([0x00, 0x00, 0x3F]) + bytes(29)) == 0


def test_fold_refuses_a_path_of_another_length() -> None:
    with pytest.raises(ValueError, match="18 siblings"):
        fold(0, EMPTY, [EMPTY] * (DEPTH - 1))


def _record(prefix: bytes, tail: int) -> bytes:
    kh = prefix + bytes(24) + tail.to_bytes(4, "big")
    return kh + hashlib.sha256(kh).digest()


def test_records_refuses_bad_blobs() -> None:
    a, b = _record(bytes(4), 1), _record(bytes(4), 2)
    assert records(a + b, 0) == [a, b] and records(b"", 0) == []
    bad = {
        "64-byte records": a + b[:10],
        "not of bucket 0": a + _record(b"\x80\x00\x00\x00", 1),
        "not after record 0": b + a,
    }
    for reason, blob in bad.items():
        with pytest.raises(BlobInvalid, match=reason):
            records(blob, 0)
    with pytest.raises(BlobInvalid, match="not after record 0"):
        records(a + a, 0)  # a key recorded twice


def test_the_vector_of_encoding_md_is_the_trees() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "encoding.md").read_text()
    value = bytes.fromhex("93c40131c420") + bytes(32) + b"\x01"
    kh, vh = key_hash(b"kv/a"), hashlib.sha256(value).digest()
    tree, store = _tree()
    _commit(tree, store, {b"kv/a": value})
    for text in (f"kh `{kh.hex()}`", f"bucket {bucket_of(kh)}", f"vh `{vh.hex()}`",
                 f"leaf `{leaf_hash(kh + vh).hex()}`", f"root\n`{tree.root.hex()}`"):
        assert text in page


def test_a_ledger_refuses_a_store_whose_state_tree_was_altered() -> None:
    from node.chain.ledger import Ledger
    from storage.kv import StoreCorrupt
    from tests.node import proof_example

    ledger, _ = proof_example.build_ledger()
    store = ledger.store
    assert Ledger(store, proof_example.GENESIS).tree.root == ledger.state_root  # whole, it reopens
    bucket, blob = next(store.iterate_buckets())
    store.kv.put(b"z/" + bucket.to_bytes(4, "big"), blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(StoreCorrupt, match="the state is damaged"):
        Ledger(store, proof_example.GENESIS)

