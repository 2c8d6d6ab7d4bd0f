"""ChainStore: the chain's layout over every store kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.chain import BlockWrite, ChainStore
from storage.kv import KeyValueStore, StorageError, StoreCorrupt, WriteBatch
from storage.leveldb import LevelDBStore
from storage.memory import MemoryStore


def block_write(height: int, **changes: object) -> BlockWrite:
    fields: dict[str, object] = {
        "height": height,
        "block_hash": b"hash-%d" % height,
        "block": b"block-%d" % height,
        "certificate": b"cert-%d" % height,
        "txs": [(b"tx-%d-a" % height, b"entry-a"), (b"tx-%d-b" % height, b"entry-b")],
        "state": {b"acct/%d" % height: b"balance"},
        "buckets": {},
    }
    fields.update(changes)
    return BlockWrite(**fields)  # type: ignore[arg-type]


def test_empty_chain(store: KeyValueStore) -> None:
    chain = ChainStore(store)
    assert chain.kv is store
    assert chain.height() == 0
    assert chain.load_block(1) is None
    assert chain.load_certificate(1) is None
    assert chain.load_safety() is None
    assert chain.height_of(b"hash-1") is None
    assert not chain.has_tx(b"tx-1-a")


def test_write_block_then_load_everything(store: KeyValueStore) -> None:
    chain = ChainStore(store)
    chain.write_block(block_write(1, state={b"acct/x": b"10", b"acct/y": b"20"}))
    assert chain.height() == 1
    assert chain.load_block(1) == b"block-1"
    assert chain.load_certificate(1) == b"cert-1"
    assert chain.height_of(b"hash-1") == 1
    assert chain.load_tx(b"tx-1-a") == b"entry-a"
    assert chain.load_tx(b"tx-1-b") == b"entry-b"
    assert chain.has_tx(b"tx-1-b")
    assert chain.load_state(b"acct/x") == b"10"
    assert chain.load_block(2) is None
    assert chain.load_block(0) is None
    assert chain.load_block(-1) is None
    assert chain.load_tx(b"unknown") is None
    assert not chain.has_tx(b"unknown")


def test_later_block_overwrites_and_deletes_state(store: KeyValueStore) -> None:
    chain = ChainStore(store)
    chain.write_block(block_write(1, state={b"x": b"1", b"y": b"2"}))
    chain.write_block(block_write(2, state={b"x": b"3", b"y": None}))
    assert chain.height() == 2
    assert chain.load_state(b"x") == b"3"
    assert chain.load_state(b"y") is None
    assert chain.height_of(b"hash-1") == 1
    assert chain.height_of(b"hash-2") == 2
    assert chain.load_block(1) == b"block-1"


def test_empty_block_is_stored(store: KeyValueStore) -> None:
    chain = ChainStore(store)
    chain.write_block(block_write(1, txs=[], state={}))
    assert chain.height() == 1
    assert chain.load_block(1) == b"block-1"


@pytest.mark.parametrize("height", [0, 2, -1])
def test_wrong_height_is_refused_and_nothing_written(store: KeyValueStore, height: int) -> None:
    chain = ChainStore(store)
    with pytest.raises(StorageError, match="next height is 1"):
        chain.write_block(block_write(height))
    assert chain.height() == 0
    assert list(store.iterate(b"")) == []


def test_same_height_twice_is_refused(store: KeyValueStore) -> None:
    chain = ChainStore(store)
    chain.write_block(block_write(1))
    before = list(store.iterate(b""))
    with pytest.raises(StorageError):
        chain.write_block(block_write(1, block=b"other"))
    assert list(store.iterate(b"")) == before
    assert chain.load_block(1) == b"block-1"


class FailingBatches(MemoryStore):
    def write_batch(self, batch: WriteBatch, *, sync: bool) -> None:
        raise StorageError("disk full")


def test_failed_write_leaves_height_unchanged() -> None:
    chain = ChainStore(FailingBatches())
    with pytest.raises(StorageError, match="disk full"):
        chain.write_block(block_write(1))
    assert chain.height() == 0


class RecordingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bool]] = []

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self.calls.append(("put", sync))
        super().put(key, value, sync=sync)

    def write_batch(self, batch: WriteBatch, *, sync: bool) -> None:
        self.calls.append(("batch", sync))
        super().write_batch(batch, sync=sync)


def test_each_write_is_one_synced_call() -> None:
    kv = RecordingStore()
    chain = ChainStore(kv)
    chain.write_block(block_write(1))
    chain.save_safety(b"safety")
    chain.save_meta("chain_id", b"c")
    assert kv.calls == [("batch", True), ("put", True), ("put", True)]


def test_height_survives_reopen(tmp_path: Path) -> None:
    kv = LevelDBStore.open(tmp_path)
    chain = ChainStore(kv)
    chain.write_block(block_write(1))
    chain.write_block(block_write(2))
    kv.close()
    chain = ChainStore(LevelDBStore.open(tmp_path))
    assert chain.height() == 2
    assert chain.load_block(2) == b"block-2"
    chain.write_block(block_write(3))
    assert chain.height() == 3
    chain.kv.close()


def test_written_block_survives_crash() -> None:
    kv = MemoryStore()
    chain = ChainStore(kv)
    chain.write_block(block_write(1))
    kv.put(b"s/unsynced", b"lost")  # control: crash() does drop unsynced writes
    kv.crash()
    chain = ChainStore(kv)
    assert chain.height() == 1
    assert chain.load_block(1) == b"block-1"
    assert chain.load_certificate(1) == b"cert-1"
    assert chain.load_tx(b"tx-1-a") == b"entry-a"
    assert chain.load_state(b"acct/1") == b"balance"
    assert chain.load_state(b"unsynced") is None


def test_safety_and_meta_survive_crash() -> None:
    kv = MemoryStore()
    chain = ChainStore(kv)
    chain.save_safety(b"height=7 round=2")
    chain.save_meta("chain_id", b"alliance-test")
    kv.crash()
    chain = ChainStore(kv)
    assert chain.load_safety() == b"height=7 round=2"
    assert chain.load_meta("chain_id") == b"alliance-test"
    assert chain.load_meta("other") is None


def test_meta_cannot_overwrite_the_height_pointer(store: KeyValueStore) -> None:
    chain = ChainStore(store)
    chain.write_block(block_write(1))
    with pytest.raises(ValueError):
        chain.save_meta("height", b"\x00" * 8)
    with pytest.raises(ValueError):
        chain.load_meta("height")
    assert ChainStore(store).height() == 1


def test_iterate_state_strips_prefix(store: KeyValueStore) -> None:
    chain = ChainStore(store)
    state: dict[bytes, bytes | None] = {b"acct/2": b"b", b"acct/1": b"a", b"acct": b"root", b"doc/1": b"d"}
    chain.write_block(block_write(1, state=state))
    assert list(chain.iterate_state(b"acct/")) == [(b"acct/1", b"a"), (b"acct/2", b"b")]
    # Blocks, txs and meta live beside the state but never show up in it.
    assert [k for k, _ in chain.iterate_state(b"")] == [b"acct", b"acct/1", b"acct/2", b"doc/1"]


def test_layout_keys(store: KeyValueStore) -> None:
    chain = ChainStore(store)
    chain.write_block(block_write(1, txs=[(b"T", b"e")], state={b"S": b"v"}))
    chain.save_safety(b"safe")
    chain.save_meta("name", b"n")
    one = (1).to_bytes(8, "big")
    assert dict(store.iterate(b"")) == {
        b"m/height": one,
        b"b/" + one: b"block-1",
        b"c/" + one: b"cert-1",
        b"h/hash-1": one,
        b"t/T": b"e",
        b"s/S": b"v",
        b"x/safety": b"safe",
        b"m/name": b"n",
    }


def test_damaged_height_pointer_is_reported(store: KeyValueStore) -> None:
    store.put(b"m/height", b"\x01")
    with pytest.raises(StoreCorrupt, match="m/height"):
        ChainStore(store)
