"""The state tree's work per block: each changed bucket's new blob and leaf, and the nodes above them,
in native code where it was built (the tree itself is defined in node/chain/state_tree.py).

A tree of depth D is a list of D + 1 bytearrays, level l holding 2^l hashes of 32 bytes (level D the
leaves, level 0 the root). A node is SHA-256(left || right), or EMPTY when both children are EMPTY.
A level's changed nodes are packed as 36-byte entries (4-byte little-endian index, then the hash), in
index order. node/chain/_merkle.c does the same as the functions here, several times faster (each
node or record hashed there costs its SHA-256 only); these are what runs where the extension was not
built (no C compiler or OpenSSL headers at install), and tests/node/test_tree_levels.py holds the two
together.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Callable, Mapping

EMPTY = bytes(32)
RECORD_BYTES = 64
_sha256 = hashlib.sha256
Levels = list[bytearray]
BucketReader = Callable[[int], bytes | None]


def _pack(nodes: list[tuple[int, bytes]]) -> bytes:
    return b"".join(index.to_bytes(4, "little") + node for index, node in nodes)


def node_hash(left: bytes | bytearray, right: bytes | bytearray) -> bytes:
    """A node over its children: SHA-256(left || right), or EMPTY when both are."""
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
            made.append((index >> 1, node_hash(left, right)))
            j += 1
        fresh = made
    out[0] = _pack(fresh)
    return out


def py_update(levels: Levels, writes: Mapping[bytes, bytes | None],
              read_bucket: BucketReader) -> tuple[dict[int, bytes], list[bytes]]:
    """The changed buckets' blobs (b"" when emptied) and `above` of their leaves after `writes` (state
    key -> value, None deletes), over the levels and the committed blobs `read_bucket` gives."""
    depth = len(levels) - 1
    changes: dict[int, list[bytes]] = {}
    for key, value in writes.items():
        kh = _sha256(key).digest()
        change = kh if value is None else kh + _sha256(value).digest()
        changes.setdefault(int.from_bytes(kh[:4], "big") >> (32 - depth), []).append(change)
    leaves, blobs = levels[depth], {}
    for bucket, bucket_changes in changes.items():
        empty = leaves[32 * bucket:32 * bucket + 32] == EMPTY
        old = b"" if empty else read_bucket(bucket) or b""
        if len(old) % RECORD_BYTES:
            raise ValueError(f"bucket {bucket} is not 64-byte records")
        blobs[bucket] = changed(old, bucket_changes)
    return blobs, py_above(levels, {bucket: leaf_hash(blob) for bucket, blob in blobs.items()})


def leaf_hash(blob: bytes) -> bytes:
    """A bucket's leaf: SHA-256(0x00 || blob), or EMPTY for a bucket with no record."""
    return _sha256(b"\x00" + blob).digest() if blob else EMPTY


def changed(blob: bytes, changes: list[bytes]) -> bytes:
    """The blob (records kh || vh in kh order) with each change applied in order: a 64-byte record
    sets its kh, a 32-byte kh deletes it."""
    if len(changes) == 1:
        return _changed_once(blob, changes[0])
    entries = [blob[i:i + RECORD_BYTES] for i in range(0, len(blob), RECORD_BYTES)]
    for change in changes:
        kh = change[:32]
        i = bisect_left(entries, kh)
        present = i < len(entries) and entries[i][:32] == kh
        if len(change) == RECORD_BYTES:
            if present:
                entries[i] = change
            else:
                entries.insert(i, change)
        elif present:
            del entries[i]
    return b"".join(entries)


def _changed_once(blob: bytes, change: bytes) -> bytes:
    """`changed` of one change, without splitting the blob: most buckets a block writes get one."""
    kh, record = change[:32], change if len(change) == RECORD_BYTES else b""
    for at in range(0, len(blob), RECORD_BYTES):
        here = blob[at:at + 32]
        if here >= kh:
            return blob[:at] + record + blob[at + RECORD_BYTES if here == kh else at:]
    return blob + record


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
        levels[level][:] = b"".join(node_hash(child[at:at + 32], child[at + 32:at + 64])
                                    for at in range(0, len(child), 64))


try:
    from node.chain._merkle import above, build, put, update  # type: ignore[import-not-found]
    NATIVE = True
except ImportError:  # the extension is optional (setup.py): the same functions in Python
    above, build, put, update = py_above, py_build, py_put, py_update
    NATIVE = False
