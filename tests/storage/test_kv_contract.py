"""One contract, run against every KeyValueStore implementation."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.kv import KeyValueStore, StorageError, WriteBatch
from storage.leveldb import LevelDBStore
from storage.memory import MemoryStore


def contents(kv: KeyValueStore) -> list[tuple[bytes, bytes]]:
    return list(kv.iterate(b""))


def test_put_get_delete(store: KeyValueStore) -> None:
    store.put(b"k", b"v")
    assert store.get(b"k") == b"v"
    store.delete(b"k")
    assert store.get(b"k") is None
    assert contents(store) == []


def test_overwrite_keeps_last_value(store: KeyValueStore) -> None:
    store.put(b"k", b"first")
    store.put(b"k", b"second", sync=True)
    assert store.get(b"k") == b"second"
    assert contents(store) == [(b"k", b"second")]


def test_missing_key_reads_none_and_deletes_quietly(store: KeyValueStore) -> None:
    assert store.get(b"absent") is None
    store.delete(b"absent")
    store.delete(b"absent", sync=True)
    assert contents(store) == []


def test_iterate_prefix_excludes_neighbours(store: KeyValueStore) -> None:
    for key in [b"b", b"ab", b"`", b"a\x00", b"a", b"a\xff"]:
        store.put(key, b"v:" + key)
    got = list(store.iterate(b"a"))
    assert got == [(b"a", b"v:a"), (b"a\x00", b"v:a\x00"), (b"ab", b"v:ab"), (b"a\xff", b"v:a\xff")]


def test_iterate_prefix_ending_in_ff(store: KeyValueStore) -> None:
    # A prefix's upper bound cannot be formed by incrementing a trailing 0xff.
    for key in [b"a\xff", b"a\xff\x00", b"a\xff\xff", b"b", b"a\xfe\xff"]:
        store.put(key, b"")
    assert [k for k, _ in store.iterate(b"a\xff")] == [b"a\xff", b"a\xff\x00", b"a\xff\xff"]


@pytest.mark.parametrize("kind", ["memory", "leveldb"])
@settings(max_examples=60, deadline=None)
@given(keys=st.sets(st.binary(max_size=3), max_size=12), prefix=st.binary(max_size=2), start=st.binary(max_size=3))
def test_iterate_from_a_start_key_within_a_prefix(kind: str, keys: set[bytes], prefix: bytes, start: bytes) -> None:
    expected = sorted(k for k in keys if k.startswith(prefix) and k >= start)
    with tempfile.TemporaryDirectory() as tmp:
        kv = _fresh_store(kind, Path(tmp) / "db")
        for key in keys:
            kv.put(key, key)
        assert [k for k, _ in kv.iterate(prefix, start)] == expected
        view = kv.snapshot()
        assert [k for k, _ in view.iterate(prefix, start)] == expected
        view.close()
        kv.close()


def test_empty_prefix_iterates_everything_in_order(store: KeyValueStore) -> None:
    keys = [b"\xff", b"b", b"", b"\x00", b"a", b"ab"]
    for key in keys:
        store.put(key, key)
    assert contents(store) == [(k, k) for k in sorted(keys)]


def test_iterate_reads_contents_as_of_the_call(store: KeyValueStore) -> None:
    store.put(b"a1", b"old")
    pairs = store.iterate(b"a")
    store.put(b"a1", b"new")
    store.put(b"a2", b"new")
    assert list(pairs) == [(b"a1", b"old")]


def test_batch_applies_puts_and_deletes(store: KeyValueStore) -> None:
    store.put(b"gone", b"x")
    store.put(b"kept", b"x")
    batch = WriteBatch()
    batch.put(b"new", b"1")
    batch.delete(b"gone")
    batch.put(b"kept", b"2")
    batch.delete(b"never-there")
    assert len(batch) == 4
    store.write_batch(batch, sync=True)
    assert contents(store) == [(b"kept", b"2"), (b"new", b"1")]


def test_batch_put_then_delete_same_key_deletes(store: KeyValueStore) -> None:
    batch = WriteBatch()
    batch.put(b"k", b"v")
    batch.delete(b"k")
    store.write_batch(batch, sync=False)
    assert store.get(b"k") is None


def test_failing_batch_writes_nothing(store: KeyValueStore) -> None:
    store.put(b"before", b"0")
    batch = WriteBatch()
    batch.put(b"first", b"1")
    batch.delete(b"before")
    batch.writes["not bytes"] = b"2"  # type: ignore[index]
    with pytest.raises(TypeError):
        store.write_batch(batch, sync=True)
    assert contents(store) == [(b"before", b"0")]


def test_empty_batch_is_a_no_op(store: KeyValueStore) -> None:
    store.put(b"k", b"v")
    store.write_batch(WriteBatch(), sync=True)
    assert contents(store) == [(b"k", b"v")]


def test_binary_keys_and_empty_values(store: KeyValueStore) -> None:
    key = bytes(range(256))
    store.put(key, b"")
    store.put(b"\x00", b"\x00\xff\x00")
    store.put(b"", b"empty key")
    assert store.get(key) == b""
    assert store.get(b"\x00") == b"\x00\xff\x00"
    assert store.get(b"") == b"empty key"
    assert contents(store) == [(b"", b"empty key"), (b"\x00", b"\x00\xff\x00"), (key, b"")]


def test_use_after_close_raises_storage_error(store: KeyValueStore) -> None:
    store.put(b"k", b"v")
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError):
        store.get(b"k")
    with pytest.raises(StorageError):
        store.put(b"k", b"v")
    with pytest.raises(StorageError):
        store.delete(b"k")
    with pytest.raises(StorageError):
        store.iterate(b"")
    with pytest.raises(StorageError):
        store.write_batch(WriteBatch({b"k": b"v"}), sync=True)


def test_close_during_iteration_raises_storage_error(store: KeyValueStore) -> None:
    store.put(b"a", b"1")
    store.put(b"b", b"2")
    pairs = store.iterate(b"")
    assert next(pairs) == (b"a", b"1")
    store.close()
    with pytest.raises(StorageError):
        next(pairs)


# A handful of keys, so that operations collide on the same keys often.
_keys = st.sampled_from([b"", b"a", b"a\x00", b"ab", b"b", b"\xff"])
_values = st.binary(max_size=4)
_syncs = st.booleans()
_operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _keys, _values, _syncs),
        st.tuples(st.just("delete"), _keys, st.none(), _syncs),
        st.tuples(st.just("batch"), st.dictionaries(_keys, st.none() | _values), st.none(), _syncs),
    ),
    max_size=30,
)


def _apply(kv: KeyValueStore, model: dict[bytes, bytes], op: tuple[object, ...]) -> None:
    name, arg, value, sync = op
    assert isinstance(sync, bool)
    if name == "put":
        assert isinstance(arg, bytes) and isinstance(value, bytes)
        kv.put(arg, value, sync=sync)
        model[arg] = value
    elif name == "delete":
        assert isinstance(arg, bytes)
        kv.delete(arg, sync=sync)
        model.pop(arg, None)
    else:
        assert isinstance(arg, dict)
        kv.write_batch(WriteBatch(dict(arg)), sync=sync)
        for key, new in arg.items():
            if new is None:
                model.pop(key, None)
            else:
                model[key] = new


def _fresh_store(kind: str, path: Path) -> KeyValueStore:
    return MemoryStore() if kind == "memory" else LevelDBStore.open(path)


@pytest.mark.parametrize("kind", ["memory", "leveldb"])
@settings(max_examples=60, deadline=None)
@given(operations=_operations)
def test_operations_match_a_dict_model(kind: str, operations: list[tuple[object, ...]]) -> None:
    # A fresh store per example: Hypothesis runs the body many times per test.
    with tempfile.TemporaryDirectory() as tmp:
        kv = _fresh_store(kind, Path(tmp) / "db")
        model: dict[bytes, bytes] = {}
        for op in operations:
            _apply(kv, model, op)
        assert contents(kv) == sorted(model.items())
        assert all(kv.get(key) == value for key, value in model.items())
        kv.close()
