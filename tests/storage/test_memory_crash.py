"""MemoryStore.crash(): only what was made durable survives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.kv import StorageError, WriteBatch
from storage.memory import MemoryStore


def contents(kv: MemoryStore) -> dict[bytes, bytes]:
    return dict(kv.iterate(b""))


def test_crash_drops_unsynced_writes() -> None:
    kv = MemoryStore()
    kv.put(b"k", b"v")
    kv.write_batch(WriteBatch({b"b": b"1"}), sync=False)
    assert contents(kv) == {b"k": b"v", b"b": b"1"}  # visible before the crash
    kv.crash()
    assert contents(kv) == {}


def test_crash_keeps_synced_writes() -> None:
    kv = MemoryStore()
    kv.put(b"k", b"v", sync=True)
    kv.write_batch(WriteBatch({b"b": b"1"}), sync=True)
    kv.crash()
    assert contents(kv) == {b"k": b"v", b"b": b"1"}


def test_synced_write_makes_earlier_writes_durable() -> None:
    kv = MemoryStore()
    kv.put(b"early", b"1")
    kv.delete(b"early")
    kv.put(b"kept", b"2")
    kv.put(b"sync", b"3", sync=True)
    kv.put(b"late", b"4")
    kv.crash()
    assert contents(kv) == {b"kept": b"2", b"sync": b"3"}


def test_synced_batch_makes_earlier_writes_durable() -> None:
    kv = MemoryStore()
    kv.put(b"early", b"1")
    kv.write_batch(WriteBatch({b"batch": b"2"}), sync=True)
    kv.crash()
    assert contents(kv) == {b"early": b"1", b"batch": b"2"}


def test_crash_restores_durable_value_under_unsynced_overwrite_and_delete() -> None:
    kv = MemoryStore()
    kv.put(b"a", b"durable", sync=True)
    kv.put(b"b", b"durable", sync=True)
    kv.put(b"a", b"lost")
    kv.delete(b"b")
    kv.crash()
    assert contents(kv) == {b"a": b"durable", b"b": b"durable"}


def test_crash_twice_and_writes_after_crash() -> None:
    kv = MemoryStore()
    kv.put(b"a", b"1", sync=True)
    kv.crash()
    kv.put(b"b", b"2")
    kv.crash()
    assert contents(kv) == {b"a": b"1"}


def test_crash_reopens_a_closed_store() -> None:
    kv = MemoryStore()
    kv.put(b"a", b"1", sync=True)
    kv.close()
    with pytest.raises(StorageError):
        kv.get(b"a")
    kv.crash()
    assert kv.get(b"a") == b"1"


_ops = st.lists(
    st.tuples(st.sampled_from([b"a", b"b", b"c"]), st.none() | st.binary(max_size=2), st.booleans()),
    max_size=25,
)


@settings(max_examples=200)
@given(ops=_ops, crash_at=st.integers(min_value=0, max_value=25))
def test_crash_leaves_contents_as_of_the_last_sync(ops: list[tuple[bytes, bytes | None, bool]], crash_at: int) -> None:
    kv = MemoryStore()
    model: dict[bytes, bytes] = {}
    durable: dict[bytes, bytes] = {}
    for key, value, sync in ops[:crash_at]:
        kv.write_batch(WriteBatch({key: value}), sync=sync)
        if value is None:
            model.pop(key, None)
        else:
            model[key] = value
        if sync:
            durable = dict(model)
    assert contents(kv) == model
    kv.crash()
    assert contents(kv) == durable
