"""Is the store whole? Checks of the chain at start-up (a window back from the tip) and of a whole stopped store.

Each block is checked for what the node relies on when serving it: it is
there and decodes, it is at its height, links to the previous block, is
indexed by its hash, carries a certificate (verified against the validators
of its height, which the stored membership history gives), its header's transaction count and root match its
transactions, and each transaction's entry points back to it. The height
pointer must agree with the blocks present. A fault raises `Fault` naming
the first bad height.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from node.chain.block import (
    BlockError, Header, decode_block, decode_certificate, header_from_wire, verify_certificate,
)
from node.chain.candidate import BlockInvalid, Contents, check_tx_root
from node.chain.canonical import CodecError, unpack
from node.chain.execution import Receipt, execute, validators_hashes
from node.chain.genesis import Genesis
from node.chain.governance import GovernanceCorrupt, ReadState, past_members
from node.chain.membership import validators_hash
from node.chain.state_tree import StateTree, leaf_hashes
from node.chain.tx import TxError, decode_tx, tx_hash_of
from storage.chain import ChainStore
from storage.kv import StorageError

# Checked back from the tip at start-up: this many blocks, or blocks holding this
# many transactions if fewer; about a quarter of a second either way.
START_WINDOW_BLOCKS = 256
START_WINDOW_TXS = 20_000


Validators = Callable[[int], tuple[bytes, ...]]


def stored_validators(store: ChainStore, genesis: Genesis) -> Validators:
    """The validators of each stored height, from the membership history in the stored state."""
    state = ReadState(store.load_state)

    def at(height: int) -> tuple[bytes, ...]:
        try:
            return past_members(state, genesis.members, height).validator_keys
        except GovernanceCorrupt as exc:
            raise Fault(height, f"cannot be checked: {exc}") from None

    return at


class Fault(Exception):
    """What is wrong with the block at `height`."""

    def __init__(self, height: int, reason: str) -> None:
        super().__init__(f"block {height} {reason}")
        self.height = height


def verify_window(store: ChainStore, genesis: Genesis, window: int = START_WINDOW_BLOCKS,
                  txs: int = START_WINDOW_TXS) -> None:
    """Checks the height pointer and, back from the tip, `window` blocks or `txs` transactions; raises Fault."""
    tip = store.height()
    if store.load_block(tip + 1) is not None:
        raise Fault(tip + 1, f"is stored above the height pointer ({tip})")
    validators = stored_validators(store, genesis)
    linked_from: bytes | None = None  # the prev_hash of the block above, already checked
    base = store.base()  # below it the blocks were pruned
    for height in range(tip, max(base - 1, tip - window), -1):
        header, block_txs = check_stored_block(store, genesis, height, None, validators)
        if linked_from is not None and header.hash() != linked_from:
            raise Fault(height + 1, "does not link to the block before it")
        linked_from, txs = header.prev_hash, txs - len(block_txs)
        if txs <= 0:
            return
    if base == 1 and tip <= window and linked_from is not None and linked_from != genesis.hash():
        raise Fault(1, "does not link to the genesis")


class ReplayImpossible(Exception):
    """The store was pruned: the blocks a replay from the genesis needs are gone."""


def check_store(store: ChainStore, genesis: Genesis, replay: bool) -> tuple[int, Fault | None]:
    """Checks every stored block from the base (and with `replay` re-executes them all from the genesis,
    which a pruned store cannot: ReplayImpossible): blocks that passed, and the first fault."""
    tip, checked, base = store.height(), 0, store.base()
    if replay and base > 1:
        raise ReplayImpossible(f"the store was pruned below block {base}: a replay from the genesis needs every "
                               "block (replay an archive instead: `alliance archive verify`)")
    state = Replay(genesis) if replay else None
    try:
        last: Header | None = None
        for last, txs in walk(store, genesis, base, tip):
            if state is not None:
                state.apply(last, txs)
            checked += 1
        above = next((h for h in store.block_heights() if h > tip), None)
        if state is not None and above is None:
            state.compare(store, tip)
        if above is None:
            _check_state_tree(store, tip, last)
    except StorageError as exc:
        return checked, Fault(base + checked, f"cannot be read: {exc}")
    except Fault as fault:
        return checked, fault
    return checked, None if above is None else Fault(above, f"is stored above the height pointer ({tip})")


def _check_state_tree(store: ChainStore, tip: int, header: Header | None) -> None:
    """The stored state tree hashes to the tip header's state_root; raises Fault (tip) otherwise."""
    if tip == 0:
        return
    if header is None:  # restored from a snapshot: the tip's block is below the base
        raw = store.load_header(tip)
        try:
            header = header_from_wire(unpack(raw)) if raw is not None else None
        except (BlockError, CodecError):
            header = None
        if header is None:
            raise Fault(tip, "has no readable header below the base")
    root = StateTree(_no_read, leaf_hashes(store.iterate_buckets())).root
    if root != header.state_root:
        raise Fault(tip, f"commits to state root {header.state_root.hex()[:16]}..., but the stored state tree "
                         f"hashes to {root.hex()[:16]}...: the state is damaged")


def _no_read(bucket: int) -> bytes:
    raise AssertionError("building a tree from stored buckets reads none")


class Replay:
    """The state re-built from the genesis, block by block, against each header's state root."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis.members
        self.state: dict[bytes, bytes] = {}
        self.written_at: dict[bytes, int] = {}  # the height that last wrote each key
        self.buckets: dict[int, bytes] = {}
        self.tree = StateTree(self.buckets.__getitem__, {})

    def apply(self, header: Header, raw_txs: tuple[bytes, ...]) -> list[Receipt]:
        """Executes the block on the state, checked against its header; its receipts."""
        try:
            txs = [decode_tx(raw) for raw in raw_txs]
        except TxError as exc:
            raise Fault(header.height, f"holds a transaction that does not decode: {exc}") from None
        execution = execute(txs, header.height, header.time_ms, self.state.get, self.genesis)
        validators = validators_hashes(execution, self.state.get, self.genesis, header.height)
        tree = self.tree.update(execution.writes)
        try:
            Contents.of(txs, execution, tree.root, validators).check(header)
        except BlockInvalid as exc:
            raise Fault(header.height, f"does not replay: {exc}") from None
        self.tree.apply(tree, lambda: self._write(header.height, execution.writes, tree.buckets))
        return execution.receipts

    def _write(self, height: int, writes: dict[bytes, bytes | None], buckets: dict[int, bytes]) -> None:
        for key, value in writes.items():
            self.written_at[key] = height
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
        for bucket, blob in buckets.items():
            if blob:
                self.buckets[bucket] = blob
            else:
                self.buckets.pop(bucket, None)

    def compare(self, store: ChainStore, tip: int) -> None:
        """The stored state and state tree must be the replayed ones: every key, no other, the same
        bytes; raises Fault."""
        if dict(store.iterate_buckets()) != self.buckets:
            raise Fault(tip, "ends a chain whose state tree differs from the stored one")
        stored = dict(store.iterate_state(b""))
        for key in sorted(self.state.keys() | stored.keys()):
            value = stored.get(key)
            if value == self.state.get(key):
                continue
            if key not in self.written_at:
                raise Fault(tip, f"ends a chain that never wrote state key {key!r}, yet the store holds it")
            what = "missing from" if value is None else "deleted by it but still in" if key not in self.state \
                else "different in"
            raise Fault(self.written_at[key], f"last wrote state key {key!r}, which is {what} the store")


def walk(store: ChainStore, genesis: Genesis, first: int, last: int) -> Iterator[tuple[Header, tuple[bytes, ...]]]:
    """Checks blocks first..last in order, yielding each header and its transactions once it passed. The
    first block of a pruned store links to nothing stored: its certificate vouches for it."""
    prev_hash = genesis.hash() if first == 1 else None if first == store.base() else _load(store, first - 1)[0].hash()
    validators = stored_validators(store, genesis)
    for height in range(first, last + 1):
        header, txs = check_stored_block(store, genesis, height, prev_hash, validators)
        prev_hash = header.hash()
        yield header, txs


def check_stored_block(store: ChainStore, genesis: Genesis, height: int, prev_hash: bytes | None,
                       validators: Validators) -> tuple[Header, tuple[bytes, ...]]:
    """Checks one block, and its link to `prev_hash` unless None."""
    header, txs = _load(store, height)
    if header.chain_id != genesis.chain_id:
        raise Fault(height, f"belongs to chain {header.chain_id!r}")
    if prev_hash is not None and header.prev_hash != prev_hash:
        raise Fault(height, "does not link to the block before it")
    block_hash = header.hash()
    if _height_of(store, block_hash, height) != height:
        raise Fault(height, "is not indexed under its hash")
    keys = validators(height)
    if header.validators_hash != validators_hash(keys):
        raise Fault(height, "names other validators than the chain's membership at its height")
    _check_certificate(store, height, block_hash, keys)
    hashes = [tx_hash_of(tx) for tx in txs]
    try:
        check_tx_root(header, hashes)
    except BlockInvalid:
        raise Fault(height, "has transactions that differ from its header's root") from None
    for index, tx_hash in enumerate(hashes):
        _check_entry(store, height, index, tx_hash)
    return header, txs


def _load(store: ChainStore, height: int) -> tuple[Header, tuple[bytes, ...]]:
    try:
        raw = store.load_block(height)
        if raw is None:
            raise Fault(height, "is missing")
        block = decode_block(raw)
    except BlockError as exc:
        raise Fault(height, f"does not decode: {exc}") from None
    except StorageError as exc:
        raise Fault(height, f"cannot be read: {exc}") from None
    if block.header.height != height:
        raise Fault(height, f"holds the block of height {block.header.height}")
    return block.header, block.txs


def _height_of(store: ChainStore, block_hash: bytes, height: int) -> int | None:
    try:
        return store.height_of(block_hash)
    except StorageError as exc:
        raise Fault(height, f"has an unreadable hash index: {exc}") from None


def _check_certificate(store: ChainStore, height: int, block_hash: bytes, validators: tuple[bytes, ...]) -> None:
    try:
        raw = store.load_certificate(height)
        if raw is None:
            raise Fault(height, "has no commit certificate")
        certificate = decode_certificate(raw)
    except (BlockError, StorageError) as exc:
        raise Fault(height, f"has an unreadable commit certificate: {exc}") from None
    if not verify_certificate(block_hash, certificate, validators).quorate:
        raise Fault(height, "has a commit certificate that does not verify against the validators of its height")


def _check_entry(store: ChainStore, height: int, index: int, tx_hash: bytes) -> None:
    try:
        raw = store.load_tx(tx_hash)
        entry = None if raw is None else unpack(raw)
    except (CodecError, StorageError) as exc:
        raise Fault(height, f"transaction {index} has an unreadable entry: {exc}") from None
    if entry is None:
        raise Fault(height, f"transaction {index} ({tx_hash.hex()[:16]}...) has no entry")
    if not (type(entry) is list and len(entry) == 4 and entry[:2] == [height, index]):
        raise Fault(height, f"transaction {index} has an entry that points elsewhere")
