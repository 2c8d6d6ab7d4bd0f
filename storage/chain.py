"""The chain's byte-level layout on top of any `KeyValueStore`.

The node encodes blocks, certificates, transaction entries and state values;
this module only decides where the bytes live. Heights are 8-byte big-endian
so that blocks iterate in height order.

Key layout:

    m/height             -> height of the last stored block (8-byte BE)
    m/base               -> the lowest height whose block is stored, when not 1 (8-byte BE): heights
                            below it were pruned or restored past (a snapshot), their headers in e/
    b/<height>           -> encoded block
    e/<height>           -> encoded header of a block below the base
    c/<height>           -> encoded commit certificate (below the base: only where e/ is kept)
    h/<block hash>       -> height of that block (8-byte BE)
    t/<tx hash>          -> transaction entry
    s/<state key>        -> state value
    z/<bucket>           -> the state tree's bucket records (4-byte BE bucket; node/chain/state_tree.py)
    y/<subject><~height><~index> -> one committed transaction that touched a record (its history):
                            subject is what node/chain/history.py names (a family byte and a 32-byte hash),
                            ~height and ~index the 8- and 4-byte BE complements, so newest come first
    x/safety             -> consensus safety state (older nodes; now in its own file)
    m/restoring          -> present while a snapshot is being restored (into an empty or emptied store)
    m/<name>             -> node metadata (any name but "height")

Pruning (`prune`, node/chain/ledger.py decides what): a pruned block loses b/, h/ and the t/
entries of its transactions; its c/ goes too unless the node keeps its header under e/ (the last
block before each change of the validators, which proofs of later blocks link through). So
what stays of a pruned height is nothing (but its history entries, a few dozen bytes per
transaction), or a header and certificate of a few hundred bytes at
each membership change: with `compact` run every so often, the store holds the retained window,
the state and LevelDB's write buffer, however long the chain.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from storage.kv import KeyValueStore, ReadView, StorageError, StoreCorrupt, WriteBatch

_HEIGHT_KEY = b"m/height"
_BASE_KEY = b"m/base"
_RESTORING_KEY = b"m/restoring"
_CLEAR_BATCH = 10_000
_HEADER_PREFIX = b"e/"
_SAFETY_KEY = b"x/safety"
_BLOCK_PREFIX = b"b/"
_CERTIFICATE_PREFIX = b"c/"
_HASH_PREFIX = b"h/"
_TX_PREFIX = b"t/"
_STATE_PREFIX = b"s/"
_BUCKET_PREFIX = b"z/"
_HISTORY_PREFIX = b"y/"
_META_PREFIX = b"m/"
_HEIGHT_BYTES = 8
# The key ranges pruning deletes from (b/, c/, e/, h/ and t/): what `compact` rewrites, never the state.
_PRUNED_RANGES = ((b"b/", b"i"), (_TX_PREFIX, b"t0"))


@dataclass(frozen=True)
class BlockWrite:
    """Everything one block adds to the store, written as one batch."""

    height: int
    block_hash: bytes
    block: bytes  # encoded block
    certificate: bytes  # encoded commit certificate
    txs: list[tuple[bytes, bytes]]  # (tx_hash, tx entry bytes), in block order
    state: dict[bytes, bytes | None]  # state writes; None deletes
    buckets: dict[int, bytes]  # the state tree's changed buckets; b"" empties one
    history: list[tuple[bytes, int, bytes]] = field(default_factory=list)  # (subject, tx index, entry)


@dataclass(frozen=True)
class PrunedBlock:
    """One block `prune` removes: its hash and transactions' hashes locate its index entries."""

    height: int
    block_hash: bytes
    tx_hashes: list[bytes]
    header: bytes | None  # the encoded header to keep under e/ (with the certificate); None keeps neither


class ChainStore:
    """Blocks, certificates, transaction index, state, safety and metadata."""

    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv
        # Cached: the node asks for the height far more often than it changes.
        stored = _decode_height(kv.get(_HEIGHT_KEY), _HEIGHT_KEY)
        self._height = 0 if stored is None else stored
        base = _decode_height(kv.get(_BASE_KEY), _BASE_KEY)
        self._base = 1 if base is None else base

    def height(self) -> int:
        """Height of the last stored block; 0 when none (blocks start at 1)."""
        return self._height

    def base(self) -> int:
        """The lowest height whose block is stored (1 unless pruned or restored from a snapshot);
        below it only headers (`load_header`) and certificates may be."""
        return self._base

    def load_header(self, height: int) -> bytes | None:
        """The encoded header of a block below the base; None when not stored."""
        return None if height < 1 else self.kv.get(_HEADER_PREFIX + _encode_height(height))

    def write_block(self, w: BlockWrite) -> None:
        """Stores the next block and all it changes in one synced batch."""
        if w.height != self._height + 1:
            raise StorageError(f"cannot write block {w.height}: the next height is {self._height + 1}")
        self.kv.write_batch(_block_batch(w), sync=True)
        self._height = w.height  # only once the batch is durable

    def prune(self, blocks: Sequence[PrunedBlock]) -> None:
        """Removes the bodies of the lowest stored blocks, `blocks` in height order from the base, and
        moves the base above them, in one batch. The tip is never pruned."""
        if not blocks:
            return
        first, last = blocks[0].height, blocks[-1].height
        if first != self._base or [b.height for b in blocks] != list(range(first, last + 1)) or last >= self._height:
            raise StorageError(f"cannot prune blocks {first}..{last}: the base is {self._base}, the tip {self._height}")
        batch = WriteBatch()
        for block in blocks:
            height = _encode_height(block.height)
            batch.delete(_BLOCK_PREFIX + height)
            batch.delete(_HASH_PREFIX + block.block_hash)
            for tx_hash in block.tx_hashes:
                batch.delete(_TX_PREFIX + tx_hash)
            if block.header is None:
                batch.delete(_CERTIFICATE_PREFIX + height)
            else:
                batch.put(_HEADER_PREFIX + height, block.header)
        batch.put(_BASE_KEY, _encode_height(last + 1))
        # The base moves first, so that a reader finding a block gone always finds it below the base. Not
        # synced: a crash loses the whole batch or none of it, and the next block's synced write makes it durable.
        old, self._base = self._base, last + 1
        try:
            self.kv.write_batch(batch, sync=False)
        except BaseException:
            self._base = old
            raise

    def compact(self) -> None:
        """Makes LevelDB rewrite what pruning deleted, so that the disk space is freed: the block, certificate,
        header, hash and transaction key ranges (all bounded by the retained blocks), never the state."""
        for start, stop in _PRUNED_RANGES:
            self.kv.compact_range(start, stop)

    def load_block(self, height: int) -> bytes | None:
        return self._load_at_height(_BLOCK_PREFIX, height)

    def load_certificate(self, height: int) -> bytes | None:
        return self._load_at_height(_CERTIFICATE_PREFIX, height)

    def height_of(self, block_hash: bytes) -> int | None:
        key = _HASH_PREFIX + block_hash
        return _decode_height(self.kv.get(key), key)

    def load_tx(self, tx_hash: bytes) -> bytes | None:
        """The transaction's entry bytes, or None if no block holds it."""
        return self.kv.get(_TX_PREFIX + tx_hash)

    def has_tx(self, tx_hash: bytes) -> bool:
        return self.load_tx(tx_hash) is not None

    def load_state(self, key: bytes) -> bytes | None:
        return self.kv.get(_STATE_PREFIX + key)

    def iterate_state(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """State pairs whose key starts with `prefix`, keys as the node wrote them."""
        strip = len(_STATE_PREFIX)
        return ((key[strip:], value) for key, value in self.kv.iterate(_STATE_PREFIX + prefix))

    def load_bucket(self, bucket: int) -> bytes | None:
        return self.kv.get(_BUCKET_PREFIX + bucket.to_bytes(4, "big"))

    def iterate_buckets(self) -> Iterator[tuple[int, bytes]]:
        """Every non-empty bucket of the state tree, in bucket order."""
        for key, blob in self.kv.iterate(_BUCKET_PREFIX):
            if len(key) != len(_BUCKET_PREFIX) + 4:
                raise StoreCorrupt(f"state tree key {key!r} is not z/ and a 4-byte bucket")
            yield int.from_bytes(key[len(_BUCKET_PREFIX):], "big"), blob

    def history(self, subject: bytes, before_height: int | None = None) -> Iterator[tuple[int, int, bytes]]:
        """(height, tx index, entry) of the transactions that touched `subject`, newest first, below
        `before_height` when given."""
        if before_height is not None and before_height < 2:
            return
        prefix = _HISTORY_PREFIX + subject
        start = prefix + _complement(before_height - 1, _HEIGHT_BYTES) if before_height is not None else b""
        for key, entry in self.kv.iterate(prefix, start):
            rest = key[len(prefix):]
            if len(rest) != _HEIGHT_BYTES + 4:
                raise StoreCorrupt(f"history key {key.hex()} has the wrong length")
            yield (_complement_of(rest[:_HEIGHT_BYTES]), _complement_of(rest[_HEIGHT_BYTES:]), entry)

    def state_view(self) -> StateView:
        """The committed state as it is now, unchanged by later commits (a snapshot is written from it)."""
        return StateView(self.kv.snapshot())

    # ---- restoring a snapshot: into an empty store only ----------------------------------------

    def restoring(self) -> bool:
        """Whether a restore began and did not finish: the store then holds a part of a state."""
        return self.kv.get(_RESTORING_KEY) is not None

    def begin_restore(self, *, replace: bool = False) -> None:
        """Marks the store as being restored into (a start that finds the mark empties it). An empty
        store only, unless `replace`: then the blocks and state it holds are deleted (its metadata stays)."""
        if self._height and not replace:
            raise StorageError(f"a snapshot is restored into an empty store only; this one holds {self._height} blocks")
        self.kv.put(_RESTORING_KEY, b"1", sync=True)
        if self._height:
            self._clear(_HEIGHT_KEY, _BASE_KEY)

    def restore_state(self, pairs: list[tuple[bytes, bytes]], buckets: dict[int, bytes]) -> None:
        """Writes state pairs and their buckets' blobs (made durable by `finish_restore`'s synced batch)."""
        batch = WriteBatch()
        for key, value in pairs:
            batch.put(_STATE_PREFIX + key, value)
        for bucket, blob in buckets.items():
            batch.put(_BUCKET_PREFIX + bucket.to_bytes(4, "big"), blob)
        self.kv.write_batch(batch, sync=False)

    def finish_restore(self, height: int, block_hash: bytes, headers: list[tuple[int, bytes, bytes]]) -> None:
        """Moves the height pointer to the restored `height`, the base above it, in one synced batch
        with `headers` ((height, encoded header, encoded certificate): that of `height` and those the
        snapshot's validator changes name), indexed like blocks below a base."""
        batch = WriteBatch()
        for at, header, certificate in headers:
            batch.put(_HEADER_PREFIX + _encode_height(at), header)
            batch.put(_CERTIFICATE_PREFIX + _encode_height(at), certificate)
        batch.put(_HASH_PREFIX + block_hash, _encode_height(height))
        batch.put(_HEIGHT_KEY, _encode_height(height))
        batch.put(_BASE_KEY, _encode_height(height + 1))
        batch.delete(_RESTORING_KEY)
        self.kv.write_batch(batch, sync=True)
        self._height, self._base = height, height + 1

    def abandon_restore(self) -> None:
        """Deletes what a restore that did not finish wrote: every key but the node's metadata."""
        self._clear(_RESTORING_KEY, _HEIGHT_KEY, _BASE_KEY)

    def _clear(self, *meta: bytes) -> None:
        """Deletes every key but the node's metadata, and of that the keys `meta`, in one synced end."""
        batch = WriteBatch()
        for key in meta:
            batch.delete(key)
        for key, _ in self.kv.iterate(b""):
            if key.startswith(_META_PREFIX):
                continue
            batch.delete(key)
            if len(batch) >= _CLEAR_BATCH:
                self.kv.write_batch(batch, sync=False)
                batch = WriteBatch()
        self.kv.write_batch(batch, sync=True)
        self._height, self._base = 0, 1

    def load_safety(self) -> bytes | None:
        return self.kv.get(_SAFETY_KEY)

    def save_safety(self, data: bytes) -> None:
        # Synced: consensus sends a signed message only after this returns.
        self.kv.put(_SAFETY_KEY, data, sync=True)

    def delete_safety(self) -> None:
        self.kv.delete(_SAFETY_KEY, sync=True)

    def block_heights(self) -> Iterator[int]:
        """Heights of every stored block, in order (reads every block: for whole-store checks)."""
        for key, _ in self.kv.iterate(_BLOCK_PREFIX):
            height = _decode_height(key[len(_BLOCK_PREFIX):], key)
            assert height is not None
            yield height

    def load_meta(self, name: str) -> bytes | None:
        return self.kv.get(_meta_key(name))

    def save_meta(self, name: str, value: bytes) -> None:
        self.kv.put(_meta_key(name), value, sync=True)

    def _load_at_height(self, prefix: bytes, height: int) -> bytes | None:
        if height < 1:
            return None  # blocks start at 1; also keeps to_bytes from failing
        return self.kv.get(prefix + _encode_height(height))


class StateView:
    """The state pairs and height of a store at one moment."""

    def __init__(self, view: ReadView) -> None:
        self._view = view
        stored = _decode_height(view.get(_HEIGHT_KEY), _HEIGHT_KEY)
        self.height = 0 if stored is None else stored

    def pairs(self) -> Iterator[tuple[bytes, bytes]]:
        strip = len(_STATE_PREFIX)
        return ((key[strip:], value) for key, value in self._view.iterate(_STATE_PREFIX))

    def close(self) -> None:
        self._view.close()


def _block_batch(w: BlockWrite) -> WriteBatch:
    height = _encode_height(w.height)
    batch = WriteBatch()
    batch.put(_BLOCK_PREFIX + height, w.block)
    batch.put(_CERTIFICATE_PREFIX + height, w.certificate)
    batch.put(_HASH_PREFIX + w.block_hash, height)
    for tx_hash, entry in w.txs:
        batch.put(_TX_PREFIX + tx_hash, entry)
    for key, value in w.state.items():
        batch.writes[_STATE_PREFIX + key] = value
    for bucket, blob in w.buckets.items():
        batch.writes[_BUCKET_PREFIX + bucket.to_bytes(4, "big")] = blob or None
    for subject, index, entry in w.history:
        batch.put(_HISTORY_PREFIX + subject + _complement(w.height, _HEIGHT_BYTES) + _complement(index, 4), entry)
    batch.put(_HEIGHT_KEY, height)
    return batch


def _complement(n: int, size: int) -> bytes:
    """n's big-endian complement: a larger n sorts first."""
    return ((1 << (8 * size)) - 1 - n).to_bytes(size, "big")


def _complement_of(data: bytes) -> int:
    return (1 << (8 * len(data))) - 1 - int.from_bytes(data, "big")


def _meta_key(name: str) -> bytes:
    # "m/height" is the height pointer; metadata must not overwrite it.
    if name == "height":
        raise ValueError('meta name "height" is reserved for the height pointer')
    return _META_PREFIX + name.encode("utf-8")


def _encode_height(height: int) -> bytes:
    return height.to_bytes(_HEIGHT_BYTES, "big")


def _decode_height(data: bytes | None, key: bytes) -> int | None:
    if data is None:
        return None
    if len(data) != _HEIGHT_BYTES:
        raise StoreCorrupt(f"value of {key!r} is {len(data)} bytes, not an {_HEIGHT_BYTES}-byte height")
    return int.from_bytes(data, "big")
