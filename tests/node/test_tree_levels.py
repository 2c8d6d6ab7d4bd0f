"""The native state-tree work (node/chain/_merkle.c) against the Python one, and both against the definition."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.chain import tree_levels
from node.chain.tree_levels import EMPTY, changed, py_above, py_build, py_put, py_update

DEPTH = 6
IMPLEMENTATIONS = [pytest.param((py_above, py_build, py_put), id="python")]
UPDATES = [pytest.param(py_update, id="python")]
if tree_levels.NATIVE:
    from node.chain import _merkle  # type: ignore[attr-defined]
    IMPLEMENTATIONS.append(pytest.param((_merkle.above, _merkle.build, _merkle.put), id="native"))
    UPDATES.append(pytest.param(_merkle.update, id="native"))

HASHES = st.sampled_from([EMPTY] + [hashlib.sha256(bytes([i])).digest() for i in range(8)])
LEAVES = st.dictionaries(st.integers(0, (1 << DEPTH) - 1), HASHES, max_size=20)


def _levels(leaves: dict[int, bytes]) -> list[bytearray]:
    levels = [bytearray(32 << level) for level in range(DEPTH + 1)]
    for index, leaf in leaves.items():
        levels[DEPTH][32 * index:32 * index + 32] = leaf
    return levels


def _definition(leaves: dict[int, bytes]) -> bytes:
    level = [leaves.get(i, EMPTY) for i in range(1 << DEPTH)]
    while len(level) > 1:
        level = [EMPTY if level[i] == level[i + 1] == EMPTY else hashlib.sha256(level[i] + level[i + 1]).digest()
                 for i in range(0, len(level), 2)]
    return level[0]


def test_the_native_extension_is_built_here() -> None:
    """`make test` builds it (setup.py): without a compiler the node runs the Python levels, slower."""
    assert tree_levels.NATIVE


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=80, deadline=None)
@given(committed=LEAVES, changed=LEAVES)
def test_above_and_put_give_the_root_of_the_definition(impl, committed: dict[int, bytes],  # type: ignore[no-untyped-def]
                                                       changed: dict[int, bytes]) -> None:
    above, build, put = impl
    levels = _levels(committed)
    build(levels)
    assert bytes(levels[0]) == _definition(committed)
    before = [bytes(level) for level in levels]
    nodes = above(levels, changed)
    assert [bytes(level) for level in levels] == before  # above changes nothing
    assert nodes == py_above(levels, changed)
    put(levels, nodes)
    rebuilt = _levels({**committed, **changed})
    build(rebuilt)
    assert levels == rebuilt and bytes(levels[0]) == _definition({**committed, **changed})


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_bad_arguments_are_refused_and_write_nothing(impl) -> None:  # type: ignore[no-untyped-def]
    above, build, put = impl
    levels = _levels({})
    with pytest.raises(ValueError, match="below 2"):
        above(levels, {1 << DEPTH: EMPTY})
    if impl[0] is not py_above:  # the Python version is only ever given what the tree computed
        with pytest.raises(ValueError):
            above(levels, {0: b"short"})
        with pytest.raises(ValueError, match="level 1 holds"):
            build([bytearray(32), bytearray(32)])
        nodes = above(levels, {3: b"\x01" * 32})
        nodes[1] = (5).to_bytes(4, "little") + bytes(32)  # level 1 has nodes 0 and 1 only
        with pytest.raises(ValueError, match="not of level 1"):
            put(levels, nodes)
        assert levels == _levels({})


STATE = st.dictionaries(st.binary(max_size=3), st.binary(max_size=3), max_size=40)
WRITES = st.dictionaries(st.binary(max_size=3), st.none() | st.binary(max_size=3), max_size=20)


def _bucket(kh: bytes) -> int:
    return int.from_bytes(kh[:4], "big") >> (32 - DEPTH)


def _blobs(state: dict[bytes, bytes]) -> dict[int, bytes]:
    """Each bucket's blob by the definition: its records kh || vh sorted by kh."""
    records: dict[int, list[bytes]] = {}
    for key, value in state.items():
        kh = hashlib.sha256(key).digest()
        records.setdefault(_bucket(kh), []).append(kh + hashlib.sha256(value).digest())
    return {bucket: b"".join(sorted(found)) for bucket, found in records.items()}


def _tree(state: dict[bytes, bytes]) -> list[bytearray]:
    levels = _levels({bucket: hashlib.sha256(b"\x00" + blob).digest() for bucket, blob in _blobs(state).items()})
    py_build(levels)
    return levels


@pytest.mark.parametrize("update", UPDATES)
@settings(max_examples=150, deadline=None)
@given(state=STATE, writes=WRITES)
def test_update_gives_the_blobs_and_root_of_the_definition(update, state: dict[bytes, bytes],  # type: ignore[no-untyped-def]
                                                           writes: dict[bytes, bytes | None]) -> None:
    levels, committed = _tree(state), _blobs(state)
    before = [bytes(level) for level in levels]
    blobs, nodes = update(levels, writes, committed.get)
    assert [bytes(level) for level in levels] == before  # update changes nothing
    assert (blobs, nodes) == py_update(levels, writes, committed.get)
    after = {key: value for key, value in {**state, **writes}.items() if value is not None}
    expected = _blobs(after)
    assert blobs == {bucket: expected.get(bucket, b"") for bucket in blobs}
    assert set(blobs) == {_bucket(hashlib.sha256(key).digest()) for key in writes}
    py_put(levels, nodes)
    assert levels == _tree(after)


@pytest.mark.parametrize("update", UPDATES)
def test_update_passes_on_what_the_bucket_reader_raises_or_refuses_a_bad_blob(update) -> None:  # type: ignore[no-untyped-def]
    state = {b"k": b"v"}
    levels = _tree(state)

    def broken(bucket: int) -> bytes:
        raise OSError(f"bucket {bucket} unreadable")

    with pytest.raises(OSError, match="unreadable"):
        update(levels, {b"k": b"w"}, broken)
    with pytest.raises(ValueError, match="not 64-byte records"):
        update(levels, {b"k": b"w"}, lambda bucket: bytes(63))
    blobs, _ = update(levels, {b"k": None}, lambda bucket: None)  # a missing blob reads as empty
    assert list(blobs.values()) == [b""]
    assert update(_levels({}), {}, broken) == ({}, [b""] * (DEPTH + 1))  # no writes read nothing
    if update is not py_update:
        with pytest.raises(TypeError, match="bytes to bytes or None"):
            update(levels, {"k": b"v"}, broken)
        with pytest.raises(TypeError, match="bytes to bytes or None"):
            update(levels, {b"k": 1}, broken)


RECORDS = st.lists(st.binary(min_size=64, max_size=64), max_size=6, unique_by=lambda r: r[:32])


@settings(max_examples=200, deadline=None)
@given(RECORDS, st.binary(min_size=32, max_size=32), st.booleans(), st.integers(0, 6))
def test_one_change_gives_what_the_general_path_gives(found: list[bytes], kh: bytes, put: bool, reuse: int) -> None:
    records_ = sorted(found)
    if records_ and reuse < len(records_):
        kh = records_[reuse][:32]  # a change of a key the bucket holds
    change = kh + bytes(32) if put else kh
    blob = b"".join(records_)
    assert changed(blob, [change]) == changed(blob, [change, change])  # twice is once, through the list path
    assert changed(b"", [change]) == (change if put else b"")
