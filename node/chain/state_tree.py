"""The state commitment: a binary Merkle tree of fixed depth over buckets of the state's key hashes.

    kh      = SHA-256(state key)                 vh = SHA-256(state value)
    bucket  = the first DEPTH bits of kh         (2^DEPTH buckets)
    blob    = the records kh || vh of the bucket's keys, sorted by kh (64 bytes each)
    leaf    = SHA-256(0x00 || blob), or EMPTY (32 zero bytes) for a bucket with no key
    node    = SHA-256(left || right), or EMPTY when both children are EMPTY
    root    = the node at level 0; the empty state's root is EMPTY

A proof of a key is its bucket's blob and the DEPTH sibling hashes from the bucket up: it shows the
key's record (presence) or that no record holds its kh (absence). The tree is fixed-depth, so the
verifier knows each hash's level; a leaf's input (1 + 64k bytes) never has a node's length (64).
Chosen by measurement (docs/performance.md): one LevelDB value per bucket and the levels in memory
(a block's work on them in node/chain/tree_levels.py, in native code) cost some 4 us of CPU per
written key at a million keys, LevelDB's reads and writes of the buckets apart; a tree of nodes on
disk costs ten times more.
"""

from __future__ import annotations

import hashlib
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from node.chain import tree_levels
from node.chain.tree_levels import EMPTY, RECORD_BYTES, BucketReader, Levels, leaf_hash, node_hash

DEPTH = 18
BUCKETS = 1 << DEPTH
_sha256 = hashlib.sha256


class BlobInvalid(ValueError):
    """Bytes that are not a bucket's records in order."""


def key_hash(key: bytes) -> bytes:
    return _sha256(key).digest()


def bucket_of(kh: bytes) -> int:
    return int.from_bytes(kh[:4], "big") >> (32 - DEPTH)


def leaf_hashes(stored: Iterable[tuple[int, bytes]]) -> dict[int, bytes]:
    """bucket -> leaf hash of stored (bucket, blob)."""
    return {bucket: leaf_hash(blob) for bucket, blob in stored}


def records(blob: bytes, bucket: int) -> list[bytes]:
    """The blob's records; raises BlobInvalid unless they are 64 bytes each, of `bucket`, strictly in kh order."""
    if len(blob) % RECORD_BYTES:
        raise BlobInvalid(f"a bucket is 64-byte records; this one is {len(blob)} bytes")
    found = [blob[i:i + RECORD_BYTES] for i in range(0, len(blob), RECORD_BYTES)]
    for i, record in enumerate(found):
        if bucket_of(record) != bucket:
            raise BlobInvalid(f"record {i} is not of bucket {bucket}")
        if i and found[i - 1][:32] >= record[:32]:
            raise BlobInvalid(f"record {i} is not after record {i - 1} in key-hash order")
    return found


def value_hash(blob: bytes, kh: bytes) -> bytes | None:
    """The vh recorded for `kh` in a well-formed blob, or None when the blob has no record of it."""
    entries = [blob[i:i + 32] for i in range(0, len(blob), RECORD_BYTES)]
    i = bisect_left(entries, kh)
    if i < len(entries) and entries[i] == kh:
        return blob[i * RECORD_BYTES + 32:(i + 1) * RECORD_BYTES]
    return None


def fold(bucket: int, leaf: bytes, siblings: Sequence[bytes]) -> bytes:
    """The root that `leaf` at `bucket` and its siblings (bucket level first) hash to."""
    if len(siblings) != DEPTH:
        raise ValueError(f"a path has {DEPTH} siblings, not {len(siblings)}")
    node, index = leaf, bucket
    for sibling in siblings:
        node = node_hash(sibling, node) if index & 1 else node_hash(node, sibling)
        index >>= 1
    return node


@dataclass(frozen=True)
class TreeUpdate:
    """What a block's writes do to the tree: the new root, the blobs to store (b"" empties a bucket),
    and the changed nodes of each level, packed (tree_levels; leaves at DEPTH), for `StateTree.apply`."""

    base_root: bytes
    root: bytes
    buckets: dict[int, bytes]
    nodes: list[bytes]


class StateTree:
    """The tree's levels in memory over buckets `read_bucket` gives (the committed ones).

    Thread-safe: blocks are checked and committed, and proofs built, on worker threads. `lock`
    also covers the write that makes an update's blobs durable, so that a proof never pairs a
    blob of one height with siblings of another.
    """

    def __init__(self, read_bucket: BucketReader, leaves: Mapping[int, bytes]) -> None:
        """Over the stored buckets' leaf hashes (`leaf_hashes` of their blobs)."""
        self.read_bucket = read_bucket
        self.lock = threading.RLock()
        # 32 bytes per node of every level in one bytearray each: 16 MiB, hashed by tree_levels.
        self._levels: Levels = [bytearray(32 << level) for level in range(DEPTH + 1)]
        packed = self._levels[DEPTH]
        for bucket, leaf in leaves.items():
            packed[32 * bucket:32 * bucket + 32] = leaf
        tree_levels.build(self._levels)

    @property
    def root(self) -> bytes:
        return bytes(self._levels[0])

    def update(self, writes: dict[bytes, bytes | None]) -> TreeUpdate:
        """The tree after `writes` (state key -> value, None deletes) over the committed state; changes nothing."""
        with self.lock:
            blobs, nodes = tree_levels.update(self._levels, writes, self.read_bucket)
            return TreeUpdate(self.root, nodes[0][4:] if nodes[0] else self.root, blobs, nodes)

    def apply(self, update: TreeUpdate, persist: Callable[[], None]) -> None:
        """Runs `persist` (the synced write of the update's blobs), then puts the update's nodes in force."""
        with self.lock:
            if update.base_root != self.root:
                raise ValueError("the update was computed over another state than the committed one")
            persist()
            tree_levels.put(self._levels, update.nodes)

    def path(self, bucket: int) -> tuple[bytes, list[bytes]]:
        """The bucket's committed blob and its siblings, bucket level first. Call under `lock` to
        pair them with the header they belong to."""
        with self.lock:
            levels = self._levels
            leaf = 32 * bucket
            blob = b"" if levels[DEPTH][leaf:leaf + 32] == EMPTY else (self.read_bucket(bucket) or b"")
            siblings, index = [], bucket
            for level in range(DEPTH, 0, -1):
                sibling = 32 * (index ^ 1)
                siblings.append(bytes(levels[level][sibling:sibling + 32]))
                index >>= 1
            return blob, siblings
