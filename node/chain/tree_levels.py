"""The state tree's levels: hashing the nodes above changed leaves, in native code where it was built.

A tree of depth D is a list of D + 1 bytearrays, level l holding 2^l hashes of 32 bytes (level D the
leaves, level 0 the root). A node is SHA-256(left || right), or EMPTY when both children are EMPTY.
A level's changed nodes are packed as 36-byte entries (4-byte little-endian index, then the hash), in
index order. node/chain/_merkle.c does the same as the functions here, ten times faster (each node
hashed there costs its SHA-256 only); these are what runs where the extension was not built (no C
compiler or OpenSSL headers at install), and tests/node/test_tree_levels.py holds the two together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

EMPTY = bytes(32)
_sha256 = hashlib.sha256
Levels = list[bytearray]


def _pack(nodes: list[tuple[int, bytes]]) -> bytes:
    return b"".join(index.to_bytes(4, "little") + node for index, node in nodes)


def _node(left: bytes | bytearray, right: bytes | bytearray) -> bytes:
    return EMPTY if left == EMPTY and right == EMPTY else _sha256(left + right).digest()


def py_above(levels: Levels, leaves: Mapping[int, bytes]) -> list[bytes]:
    """The changed nodes of each level (index = level), packed, given the changed leaves; changes nothing."""
    depth = len(levels) - 1
    fresh = sorted(leaves.items())
    if fresh and not 0 <= fresh[0][0] <= fresh[-1][0] < 1 << depth:
        raise ValueError(f"a leaf index is an int below 2^{depth}")
    out = [b""] * (depth + 1)
    for level in range(depth, 0, -1):
        out[level] = _pack(fresh)
        child, made, j = levels[level], [], 0
        while j < len(fresh):
            index, node = fresh[j]
            at = 32 * (index & ~1)
            if index & 1:
                left, right = child[at:at + 32], node
            elif j + 1 < len(fresh) and fresh[j + 1][0] == index + 1:
                left, right = node, fresh[j + 1][1]
                j += 1
            else:
                left, right = node, child[at + 32:at + 64]
            made.append((index >> 1, _node(left, right)))
            j += 1
        fresh = made
    out[0] = _pack(fresh)
    return out


def py_put(levels: Levels, nodes: list[bytes]) -> None:
    """Writes what `above` returned into the levels."""
    for level, packed in zip(levels, nodes):
        for at in range(0, len(packed), 36):
            index = int.from_bytes(packed[at:at + 4], "little")
            level[32 * index:32 * index + 32] = packed[at + 4:at + 36]


def py_build(levels: Levels) -> None:
    """Computes every level above the leaves."""
    for level in range(len(levels) - 2, -1, -1):
        child = levels[level + 1]
        levels[level][:] = b"".join(_node(child[at:at + 32], child[at + 32:at + 64])
                                    for at in range(0, len(child), 64))


try:
    from node.chain._merkle import above, build, put  # type: ignore[import-not-found]
    NATIVE = True
except ImportError:  # the extension is optional (setup.py): the same functions in Python
    above, build, put = py_above, py_build, py_put
    NATIVE = False
