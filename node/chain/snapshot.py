"""Certified snapshots of the state: the manifest and chunks a node state-syncs from (docs/peer-protocol.md).

The state tree (node/chain/state_tree.py) is cut at level CHUNK_LEVEL into CHUNKS subtrees of
BUCKETS_PER_CHUNK buckets each. Chunk i holds the state pairs [key, value] of the buckets of subtree i,
in key-hash order, as canonical MessagePack; an empty subtree gives an empty chunk. The manifest names
the height, carries its header and certificate, the CHUNKS subtree roots, and the validator changes
from the genesis up to the height (as a proof does), so that a node holding only the genesis can check
it: the changes walk it to the validators of the height, who certify the header, whose state_root the
subtree roots fold to. Each chunk is then checked against its subtree root.

Pure code, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from node.chain import tree_levels
from node.chain.block import BlockError, Header, decode_certificate, header_from_wire
from node.chain.canonical import CodecError, pack_flat, unpack
from node.chain.proof import Certified, Change, ProofInvalid, verify_certified
from node.chain.state_tree import DEPTH, EMPTY, bucket_of, leaf_hashes, node_hash

MANIFEST_VERSION = 1
CHUNK_LEVEL = 8
CHUNKS = 1 << CHUNK_LEVEL
BUCKETS_PER_CHUNK = 1 << (DEPTH - CHUNK_LEVEL)
CHUNK_BYTES_MAX = 8 * 1024 * 1024  # below a p2p frame's 16 MiB
VALIDATOR_CHANGES_MAX = 10_000
VALIDATORS_MAX = 1_000
MANIFEST_BYTES_MAX = 4 * 1024 * 1024
_sha256 = hashlib.sha256
_BUCKET_SHIFT = 32 - DEPTH  # kh's first 4 bytes shifted by it: its bucket (state_tree.bucket_of)


class SnapshotInvalid(ValueError):
    """A manifest or chunk that does not hold; the message names the failing check."""


@dataclass(frozen=True)
class ValidatorChange:
    """The last block of a validator set (header and certificate, encoded) and the set after it."""

    header: bytes
    certificate: bytes
    validators: tuple[bytes, ...]


@dataclass(frozen=True)
class Manifest:
    chain_id: str
    height: int
    header: bytes  # the encoded header of `height`
    certificate: bytes  # its encoded commit certificate
    roots: tuple[bytes, ...]  # the CHUNKS subtree roots at CHUNK_LEVEL
    changes: tuple[ValidatorChange, ...]

    def encode(self) -> bytes:
        changes = [[c.header, c.certificate, list(c.validators)] for c in self.changes]
        return pack_flat([MANIFEST_VERSION, self.chain_id, self.height, self.header, self.certificate,
                          list(self.roots), changes])


def decode_manifest(data: bytes) -> Manifest:
    """The manifest in `data`, its shape checked (not yet its certificate: see verify_manifest)."""
    if len(data) > MANIFEST_BYTES_MAX:
        raise SnapshotInvalid(f"the manifest is {len(data)} bytes, above {MANIFEST_BYTES_MAX}")
    try:
        obj = unpack(data)
    except CodecError as exc:
        raise SnapshotInvalid(f"the manifest does not decode: {exc}") from None
    if not (isinstance(obj, list) and len(obj) == 7 and obj[0] == MANIFEST_VERSION):
        raise SnapshotInvalid(f"a manifest is [{MANIFEST_VERSION}, chain_id, height, header, certificate, "
                              "roots, validator_changes]")
    _, chain_id, height, header, certificate, roots, changes = obj
    ok = (isinstance(chain_id, str) and type(height) is int and height >= 1 and isinstance(header, bytes)
          and isinstance(certificate, bytes) and isinstance(roots, list) and len(roots) == CHUNKS
          and all(isinstance(r, bytes) and len(r) == 32 for r in roots)
          and isinstance(changes, list) and len(changes) <= VALIDATOR_CHANGES_MAX)
    if not ok:
        raise SnapshotInvalid("the manifest's fields have the wrong types or counts")
    return Manifest(chain_id, height, header, certificate, tuple(roots), tuple(_change(c) for c in changes))


def _change(obj: Any) -> ValidatorChange:
    if not (isinstance(obj, list) and len(obj) == 3 and isinstance(obj[0], bytes) and isinstance(obj[1], bytes)
            and isinstance(obj[2], list) and 0 < len(obj[2]) <= VALIDATORS_MAX
            and all(isinstance(k, bytes) and len(k) == 32 for k in obj[2])):
        raise SnapshotInvalid("a validator change is [header, certificate, [validator key, ...]]")
    return ValidatorChange(obj[0], obj[1], tuple(obj[2]))


def _certified(header_bytes: bytes, certificate_bytes: bytes, what: str) -> Certified:
    """A header of the manifest with its certificate, decoded (checked by proof.verify_certified)."""
    try:
        header = header_from_wire(unpack(header_bytes))
        seals = decode_certificate(certificate_bytes)
    except (BlockError, CodecError) as exc:
        raise SnapshotInvalid(f"{what}: {exc}") from None
    return Certified(header, header.height, header.hash(), list(seals))


def verify_manifest(manifest: Manifest, chain_id: str, genesis_validators: tuple[bytes, ...]) -> Header:
    """The certified header of the snapshot's height; SnapshotInvalid unless the validator changes lead
    from the genesis validators to a quorum certifying it (as in a proof: docs/proofs.md, steps 2 to 6)
    and the roots fold to its state_root."""
    if manifest.chain_id != chain_id:
        raise SnapshotInvalid(f"the manifest is of chain {manifest.chain_id!r}, not {chain_id!r}")
    changes = [Change(_certified(c.header, c.certificate, f"validator change {i}"), list(c.validators))
               for i, c in enumerate(manifest.changes)]
    block = _certified(manifest.header, manifest.certificate, f"the header of {manifest.height}")
    try:
        verify_certified(block, changes, chain_id, genesis_validators)
    except ProofInvalid as exc:
        raise SnapshotInvalid(f"the header of {manifest.height}: {exc}") from None
    if block.header.height != manifest.height:
        raise SnapshotInvalid(f"the header is of block {block.header.height}, not {manifest.height}")
    if fold_roots(manifest.roots) != block.header.state_root:
        raise SnapshotInvalid("the subtree roots do not fold to the header's state_root")
    return block.header


def fold_roots(nodes: Sequence[bytes]) -> bytes:
    """The root over a full level of nodes (a power of two of them)."""
    level = list(nodes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def _sorted_records(pairs: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes, bytes]]:
    """(kh, key, value) in key-hash order."""
    return sorted((_sha256(key).digest(), key, value) for key, value in pairs)


def chunk_buckets(index: int, records: Iterable[tuple[bytes, bytes]]) -> dict[int, bytes]:
    """The bucket blobs (bucket -> z/ value) of chunk `index` given its records (kh, value) in kh order;
    SnapshotInvalid when a record is of another chunk's buckets or out of order."""
    first, last = index * BUCKETS_PER_CHUNK, (index + 1) * BUCKETS_PER_CHUNK
    blobs: dict[int, bytes] = {}
    parts: list[bytes] = []
    bucket, previous = -1, b""
    for i, (kh, value) in enumerate(records):
        if kh <= previous:
            raise SnapshotInvalid(f"chunk {index}: pair {i} is not after pair {i - 1} in key-hash order")
        previous, at = kh, int.from_bytes(kh[:4], "big") >> _BUCKET_SHIFT
        if at != bucket:  # in kh order, a bucket's records come together
            if not first <= at < last:
                raise SnapshotInvalid(f"chunk {index}: pair {i} is of bucket {at}, not of this chunk")
            if parts:
                blobs[bucket] = b"".join(parts)
            bucket, parts = at, []
        parts.append(kh + _sha256(value).digest())
    if parts:
        blobs[bucket] = b"".join(parts)
    return blobs


def subtree_root(index: int, leaves: dict[int, bytes]) -> bytes:
    """The root of subtree `index` at CHUNK_LEVEL over the leaf hashes of its buckets: the top of what
    its leaves change in an empty tree of the subtree's depth (tree_levels, native where built)."""
    empty = [bytearray(32 << level) for level in range(DEPTH - CHUNK_LEVEL + 1)]
    first = index * BUCKETS_PER_CHUNK
    top = tree_levels.above(empty, {bucket - first: leaf for bucket, leaf in leaves.items()})[0]
    return bytes(top[4:]) if top else EMPTY


def chunk_of(key: bytes) -> int:
    """The chunk whose buckets hold `key`."""
    return bucket_of(_sha256(key).digest()) // BUCKETS_PER_CHUNK


def encode_chunk(index: int, pairs: Iterable[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    """Chunk `index` of the state pairs of its buckets (any order), and its subtree root. Raises
    SnapshotInvalid when it would exceed CHUNK_BYTES_MAX."""
    records = _sorted_records(pairs)
    chunk = pack_flat([[key, value] for _, key, value in records]) if records else b""
    if len(chunk) > CHUNK_BYTES_MAX:
        raise SnapshotInvalid(f"chunk {index} would be {len(chunk)} bytes, above {CHUNK_BYTES_MAX}")
    buckets = chunk_buckets(index, ((kh, value) for kh, _, value in records))
    return chunk, subtree_root(index, leaf_hashes(buckets.items()))


def build_chunks(pairs: Iterable[tuple[bytes, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """The CHUNKS chunks of a state (all its (key, value) pairs) and their subtree roots, built in memory."""
    grouped: list[list[tuple[bytes, bytes]]] = [[] for _ in range(CHUNKS)]
    for key, value in pairs:
        grouped[chunk_of(key)].append((key, value))
    built = [encode_chunk(index, group) for index, group in enumerate(grouped)]
    return [chunk for chunk, _ in built], [root for _, root in built]


@dataclass(frozen=True)
class VerifiedChunk:
    """A chunk's state pairs and its buckets' blobs, as `ChainStore.restore_state` writes them, and
    the buckets' leaf hashes (the state tree of a restore is built from them)."""

    pairs: list[tuple[bytes, bytes]]
    buckets: dict[int, bytes]
    leaves: dict[int, bytes]


def verify_chunk(index: int, chunk: bytes, root: bytes) -> VerifiedChunk:
    """The state of chunk `index`; SnapshotInvalid unless its pairs are of its buckets, in key-hash
    order, within CHUNK_BYTES_MAX, and hash to `root`."""
    if len(chunk) > CHUNK_BYTES_MAX:
        raise SnapshotInvalid(f"chunk {index} is {len(chunk)} bytes, above {CHUNK_BYTES_MAX}")
    if not chunk:
        if root != EMPTY:
            raise SnapshotInvalid(f"chunk {index} is empty, its subtree is not")
        return VerifiedChunk([], {}, {})
    try:
        obj = unpack(chunk)
    except CodecError as exc:
        raise SnapshotInvalid(f"chunk {index} does not decode: {exc}") from None
    if not (isinstance(obj, list) and obj and all(
            type(p) is list and len(p) == 2 and type(p[0]) is bytes and type(p[1]) is bytes for p in obj)):
        raise SnapshotInvalid(f"chunk {index} is not a non-empty list of [key, value]")
    buckets = chunk_buckets(index, ((_sha256(key).digest(), value) for key, value in obj))
    leaves = leaf_hashes(buckets.items())
    if subtree_root(index, leaves) != root:
        raise SnapshotInvalid(f"chunk {index} does not hash to its subtree root in the manifest")
    return VerifiedChunk([(key, value) for key, value in obj], buckets, leaves)
