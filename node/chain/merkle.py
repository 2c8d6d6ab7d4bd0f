"""Merkle trees over transaction hashes, as RFC 6962 defines them.

leaf = SHA-256(0x00 || tx_hash), node = SHA-256(0x01 || left || right); an
odd node at the end of a level moves up unchanged; the empty tree is SHA-256("").
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _next_level(level: list[bytes]) -> list[bytes]:
    pairs = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
    return pairs + ([level[-1]] if len(level) % 2 else [])


def merkle_root(items: Sequence[bytes]) -> bytes:
    if not items:
        return hashlib.sha256(b"").digest()
    level = [leaf_hash(x) for x in items]
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def merkle_path(items: Sequence[bytes], index: int) -> list[bytes]:
    """The sibling hashes from the leaf at `index` up to the root."""
    level = [leaf_hash(x) for x in items]
    path = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        level = _next_level(level)
        index //= 2
    return path


def verify_path(item: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> bool:
    if not 0 <= index < size:
        return False
    digest, remaining = leaf_hash(item), list(path)
    width = size
    while width > 1:
        sibling = index ^ 1
        if sibling < width:
            if not remaining:
                return False
            other = remaining.pop(0)
            digest = node_hash(other, digest) if index % 2 else node_hash(digest, other)
        index, width = index // 2, (width + 1) // 2
    return not remaining and digest == root
