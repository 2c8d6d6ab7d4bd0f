"""The chain as the node sees it: decoded blocks, transaction entries and state, over ChainStore."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from node.chain.block import (
    Block, BlockError, Header, decode_block, decode_certificate, encode_certificate, header_from_wire,
    stored_block_txs,
)
from node.chain.canonical import CodecError, pack_flat, unpack
from node.chain.execution import GENESIS_STATE_ROOT, Execution, Receipt
from node.chain.genesis import Genesis
from node.chain.governance import ACTIVATION_DELAY, ACTIVATIONS_KEY, ReadState, past_members, upcoming_members
from node.chain.history import HistoryEntry, block_history, decode_entry, subject_of
from node.chain.membership import Membership
from node.chain.state_tree import StateTree, TreeUpdate, leaf_hashes
from node.chain.tx import Transaction, TxError, decode_tx, tx_hash_of
from storage.chain import BlockWrite, ChainStore, PrunedBlock
from storage.kv import StoreCorrupt

GENESIS_META = "genesis_hash"
# Blocks whose tx hashes are kept in memory, so that refusing a just-committed
# transaction needs no LevelDB read (and closes the race with a late gossip copy).
RECENT_BLOCKS = 64
# Memberships kept at hand: admission and the peers ask for the next height's at every turn.
MEMBERSHIPS_CACHED = 16
# Committed blocks kept decoded: a transaction entry points into its block, and
# clients that waited for a commit ask for the transactions of the newest ones.
DECODED_BLOCKS = 8


@dataclass(frozen=True, slots=True)
class TxEntry:
    """Where a committed transaction is and what it did."""

    height: int
    index: int
    receipt: Receipt
    tx: Transaction


class BlockPruned(Exception):
    """The block is below this node's base: pruned (`storage.retain_blocks`) or before the snapshot the
    node started from; its header and certificate may still be stored."""

    def __init__(self, height: int, base: int) -> None:
        super().__init__(f"block {height} is pruned on this node (it keeps blocks from {base})")
        self.height = height
        self.base = base


class GenesisMismatch(Exception):
    """The data directory belongs to a chain with another genesis."""


class Ledger:
    def __init__(self, store: ChainStore, genesis: Genesis, leaves: Mapping[int, bytes] | None = None) -> None:
        """The ledger of `store`; `leaves`: the state tree's leaf hashes when known (node/chain/state_tree.py)."""
        self.store = store
        self.genesis = genesis
        self._check_genesis()
        self.last_header: Header | None = None
        self._recent: deque[list[bytes]] = deque(maxlen=RECENT_BLOCKS)
        self._recent_hashes: set[bytes] = set()
        self._decoded: dict[int, Block] = {}  # written only by commit; read with .get from any thread
        self._members: dict[tuple[int, int], Membership] = {}  # (tip, height) -> membership at height
        if store.height() > 0:
            self.last_header = self.header(store.height())
        self.tree = StateTree(self._read_bucket, leaf_hashes(store.iterate_buckets()) if leaves is None else leaves)
        if self.tree.root != self.state_root:
            raise StoreCorrupt(
                f"the state tree's root {self.tree.root.hex()[:16]}... is not the state root of block "
                f"{self.height} ({self.state_root.hex()[:16]}...): the state is damaged"
            )

    def _read_bucket(self, bucket: int) -> bytes:
        blob = self.store.load_bucket(bucket)
        if blob is None:
            raise StoreCorrupt(f"bucket {bucket} of the state tree is missing from the store")
        return blob

    def _check_genesis(self) -> None:
        stored = self.store.load_meta(GENESIS_META)
        if stored is None:
            self.store.save_meta(GENESIS_META, self.genesis.hash())
        elif stored != self.genesis.hash():
            raise GenesisMismatch(
                f"the data directory holds chain {stored.hex()[:16]}..., not this genesis "
                f"({self.genesis.hash().hex()[:16]}...)"
            )

    @property
    def height(self) -> int:
        return self.store.height()

    @property
    def last_hash(self) -> bytes:
        """Hash of the last block; the genesis hash before block 1."""
        return self.genesis.hash() if self.last_header is None else self.last_header.hash()

    @property
    def state_root(self) -> bytes:
        return GENESIS_STATE_ROOT if self.last_header is None else self.last_header.state_root

    @property
    def last_time_ms(self) -> int:
        return self.genesis.genesis_time_ms if self.last_header is None else self.last_header.time_ms

    @property
    def base(self) -> int:
        """The lowest height whose block this node holds."""
        return self.store.base()

    def block(self, height: int) -> Block | None:
        """The committed block at `height`; None above the tip, BlockPruned below the base. A hole
        between them is StoreCorrupt, never None."""
        self._check_pruned(height)
        cached = self._decoded.get(height)
        if cached is not None:
            return cached
        raw = self.store.load_block(height)
        if raw is None:
            self._check_pruned(height)  # pruned meanwhile
            self._check_above_tip(height, "block")
            return None
        return decode_block(raw)

    def header(self, height: int) -> Header:
        """The header of a committed block, held or kept when pruned (BlockPruned if not)."""
        if height >= self.store.base():
            try:
                return self._require_block(height).header
            except BlockPruned:
                pass  # pruned meanwhile: its header may be kept
        raw = self.store.load_header(height)
        if raw is None:
            raise BlockPruned(height, self.store.base())
        try:
            return header_from_wire(unpack(raw))
        except (BlockError, CodecError) as exc:
            raise StoreCorrupt(f"the header of block {height} does not decode: {exc}") from None

    def _require_block(self, height: int) -> Block:
        block = self.block(height)
        if block is None:
            raise StoreCorrupt(f"block {height} is missing from the store")
        return block

    def certificate(self, height: int) -> tuple[tuple[bytes, bytes], ...] | None:
        """The commit certificate of a committed block; BlockPruned below the base unless it was kept."""
        raw = self.store.load_certificate(height)
        if raw is None:
            self._check_pruned(height)
            self._check_above_tip(height, "certificate of block")
            return None
        return decode_certificate(raw)

    def stored_block(self, height: int) -> tuple[bytes, bytes]:
        """A block at or below the tip and its certificate, as stored (what catch-up serves); BlockPruned
        below the base."""
        self._check_pruned(height)
        block, certificate = self.store.load_block(height), self.store.load_certificate(height)
        if block is None or certificate is None:
            self._check_pruned(height)
            raise StoreCorrupt(f"block {height} or its certificate is missing from the store below its tip {self.height}")
        return block, certificate

    def _check_pruned(self, height: int) -> None:
        # Pruning moves the base before it deletes: a block gone is below the base read after it.
        base = self.store.base()
        if 1 <= height < base:
            raise BlockPruned(height, base)

    def _check_above_tip(self, height: int, what: str) -> None:
        # The node refuses a store with holes at start; one found later is damage, not "not found".
        if 1 <= height <= self.height:
            raise StoreCorrupt(f"the {what} {height} is missing from the store below its tip {self.height}")

    def tx_entry(self, tx_hash: bytes) -> TxEntry | None:
        found = self._entry(tx_hash)
        if found is None:
            return None
        height, index, receipt = found
        txs = self._block_txs(height)
        if not (index < len(txs) and isinstance(txs[index], bytes) and tx_hash_of(txs[index]) == tx_hash):
            raise StoreCorrupt(f"the entry of transaction {tx_hash.hex()} points to no such tx of block {height}")
        try:
            return TxEntry(height, index, receipt, decode_tx(txs[index]))
        except TxError as exc:
            raise StoreCorrupt(f"transaction {tx_hash.hex()} of block {height} does not decode: {exc}") from None

    def _block_txs(self, height: int) -> Sequence[bytes]:
        cached = self._decoded.get(height)
        if cached is not None:
            return cached.txs
        raw = self.store.load_block(height)
        if raw is None:
            self._check_pruned(height)  # since its entry was read
            raise StoreCorrupt(f"block {height} is missing from the store")
        try:
            return stored_block_txs(raw)
        except BlockError as exc:
            raise StoreCorrupt(f"block {height}: {exc}") from None

    def receipt(self, tx_hash: bytes) -> Receipt | None:
        """The receipt of a committed transaction, without reading its block."""
        found = self._entry(tx_hash)
        return None if found is None else found[2]

    def _entry(self, tx_hash: bytes) -> tuple[int, int, Receipt] | None:
        raw = self.store.load_tx(tx_hash)
        if raw is None:
            return None
        try:
            entry = unpack(raw)
        except CodecError:
            entry = None
        if not (type(entry) is list and len(entry) == 4 and type(entry[0]) is int and type(entry[1]) is int
                and type(entry[2]) is int and type(entry[3]) is str):
            raise StoreCorrupt(f"the entry of transaction {tx_hash.hex()} is not [height, index, code, log]")
        height, index, code, log = entry
        return height, index, Receipt(code, log)

    def has_tx(self, tx_hash: bytes) -> bool:
        return tx_hash in self._recent_hashes or self.store.has_tx(tx_hash)

    def committed_recently(self, tx_hash: bytes) -> bool:
        """In one of the last RECENT_BLOCKS blocks; a memory lookup."""
        return tx_hash in self._recent_hashes

    def _remember(self, tx_hashes: list[bytes]) -> None:
        if len(self._recent) == RECENT_BLOCKS:
            self._recent_hashes.difference_update(self._recent[0])
        self._recent.append(tx_hashes)
        self._recent_hashes.update(tx_hashes)

    def read_state(self, key: bytes) -> bytes | None:
        return self.store.load_state(key)

    def state_update(self, execution: Execution) -> TreeUpdate:
        """What `execution`, as the next block's, does to the state tree (computed once per execution)."""
        if execution.tree is None or execution.tree.base_root != self.tree.root:
            execution.tree = self.tree.update(execution.writes)
        return execution.tree

    def history(self, state_key: bytes, before_height: int | None = None) -> Iterator[HistoryEntry]:
        """The committed transactions that touched a record, newest first (from the base, for a
        node restored from a snapshot)."""
        for height, index, raw in self.store.history(subject_of(state_key), before_height):
            yield decode_entry(height, index, raw)

    def members(self, height: int) -> Membership:
        """The membership in force at `height`: known from the genesis up to ACTIVATION_DELAY past the tip.

        Raises governance.GovernanceCorrupt if the state holding it is damaged."""
        tip = self.height
        if not 1 <= height <= tip + ACTIVATION_DELAY:
            raise ValueError(f"the membership at height {height} is not known at tip {tip}")
        key = (tip if height > tip else 0, height)  # past heights never change
        found = self._members.get(key)
        if found is None:
            state, genesis = ReadState(self.read_state), self.genesis.members
            found = upcoming_members(state, genesis, height) if height > tip else past_members(state, genesis, height)
            if len(self._members) >= MEMBERSHIPS_CACHED:
                self._members = {}
            self._members[key] = found
        return found

    def prune(self, below: int, most: int) -> int:
        """Prunes the blocks from the base up to `below` (exclusive), at most `most` of them, in one
        batch; returns how many. The header and certificate of the last block before each activation
        stay: a proof of a later block follows the validators through them (api/lookup validator_changes)."""
        base = self.store.base()
        last = min(below, base + most, self.height) - 1
        if last < base:
            return 0
        kept = {activation - 1 for activation in ReadState(self.read_state).get(ACTIVATIONS_KEY) or []}
        blocks = []
        for height in range(base, last + 1):
            block = self._require_block(height)
            header = block.header.encode() if height in kept else None
            blocks.append(PrunedBlock(height, block.header.hash(), [tx_hash_of(raw) for raw in block.txs], header))
        self.store.prune(blocks)
        return len(blocks)

    def commit(
        self,
        block: Block,
        txs: list[Transaction],
        execution: Execution,
        certificate: tuple[tuple[bytes, bytes], ...],
    ) -> None:
        """Saves the block, certificate, tx entries, receipts, state and state tree in one synced batch.

        An entry holds where its transaction is, not the transaction again: the
        block has it, and every byte written twice is compacted again and again.
        """
        header = block.header
        entries = [
            (tx.hash, pack_flat([header.height, i, r.code, r.log]))
            for i, (tx, r) in enumerate(zip(txs, execution.receipts))
        ]
        tree = self.state_update(execution)
        if tree.root != header.state_root:
            raise ValueError(f"block {header.height}'s state_root is not the root its execution gives")
        write = BlockWrite(
            height=header.height,
            block_hash=header.hash(),
            block=block.encode(),
            certificate=encode_certificate(certificate),
            txs=entries,
            state=execution.writes,
            buckets=tree.buckets,
            history=block_history(txs, execution.receipts),
        )

        def persist() -> None:
            self.store.write_block(write)
            self.last_header = header

        self.tree.apply(tree, persist)
        self._decoded[header.height] = block
        self._decoded.pop(header.height - DECODED_BLOCKS, None)
        self._remember([tx.hash for tx in txs])
