"""The native state-tree levels (node/chain/_merkle.c) against the Python ones, and both against the definition."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.chain import tree_levels
from node.chain.tree_levels import EMPTY, py_above, py_build, py_put

DEPTH = 6
IMPLEMENTATIONS = [pytest.param((py_above, py_build, py_put), id="python")]
if tree_levels.NATIVE:
    from node.chain import _merkle  # type: ignore[attr-defined]
    IMPLEMENTATIONS.append(pytest.param((_merkle.above, _merkle.build, _merkle.put), id="native"))

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
