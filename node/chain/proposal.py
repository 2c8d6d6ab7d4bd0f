"""Building a block to propose and checking a block proposed by another validator."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from node.chain.block import Block, BlockError, Header, header_from_wire
from node.chain.canonical import CodecError, pack_flat, unpack
from node.chain.execution import Execution, execute, receipt_bytes
from node.chain.ledger import Ledger
from node.chain.merkle import merkle_root
from node.chain.tx import Transaction, TxError, decode_tx, tx_hash_of

# How far ahead of a validator's clock a proposed block's time may be.
BLOCK_TIME_AHEAD_MS_MAX = 10_000
# Encoded transactions in one block, so that a proposal fits a peer frame.
BLOCK_TX_BYTES_MAX = 8 * 1024 * 1024
# A proposal's item of this length is a transaction's hash: an encoded transaction is longer.
HASH_ITEM_BYTES = 32

KnownTx = Callable[[bytes], Transaction | None]


class BlockInvalid(Exception):
    """A proposed block that an honest validator must not prepare."""


@dataclass(frozen=True)
class Candidate:
    """A block with its decoded transactions and the outcome of executing it."""

    block: Block
    block_hash: bytes
    txs: list[Transaction]
    execution: Execution


def _within_size(txs: Sequence[Transaction]) -> list[Transaction]:
    taken, size = [], 0
    for tx in txs:
        size += len(tx.raw)
        if size > BLOCK_TX_BYTES_MAX:
            break
        taken.append(tx)
    return taken


@dataclass(frozen=True)
class Contents:
    """What a header commits to about its transactions and their execution."""

    tx_count: int
    tx_root: bytes
    receipt_root: bytes
    state_root: bytes

    @staticmethod
    def of(txs: Sequence[Transaction], execution: Execution, prev_state_root: bytes) -> Contents:
        hashes = [tx.hash for tx in txs]
        return Contents(
            tx_count=len(txs),
            tx_root=merkle_root(hashes),
            receipt_root=merkle_root([receipt_bytes(h, r) for h, r in zip(hashes, execution.receipts)]),
            state_root=execution.state_root(prev_state_root),
        )

    def check(self, header: Header) -> None:
        """Raises BlockInvalid naming the first header field that does not match."""
        for name in ("tx_count", "tx_root", "receipt_root", "state_root"):
            if getattr(header, name) != getattr(self, name):
                raise BlockInvalid(f"{name} differs from the block's transactions and their execution")


def proposal_body(candidate: Candidate, inline: Callable[[bytes], bool]) -> bytes:
    """What a proposal carries: [header, [item, ...]], each item the transaction, or its hash when not `inline`.

    The proposer sends by hash what its gossip brought the other validators
    already; with every item inline the body is the block's own encoding.
    """
    items = [tx.raw if inline(tx.hash) else tx.hash for tx in candidate.txs]
    return pack_flat([candidate.block.header.wire(), items])


def _parse_body(body: bytes) -> tuple[Header, list[bytes]]:
    try:
        obj = unpack(body)
    except CodecError as exc:
        raise BlockInvalid(f"block: {exc}") from None
    if not (type(obj) is list and len(obj) == 2 and type(obj[1]) is list and all(type(i) is bytes for i in obj[1])):
        raise BlockInvalid("block must be [header, [tx or tx hash, ...]]")
    try:
        return header_from_wire(obj[0]), obj[1]
    except BlockError as exc:
        raise BlockInvalid(str(exc)) from None


def missing_txs(body: bytes, known_tx: KnownTx) -> list[bytes]:
    """The hashes in a proposal body of transactions this node does not hold (none if the body is malformed)."""
    try:
        _, items = _parse_body(body)
    except BlockInvalid:
        return []
    return [item for item in items if len(item) == HASH_ITEM_BYTES and known_tx(item) is None]


def _resolved(
    items: list[bytes], known_tx: KnownTx, fetched: Mapping[bytes, Transaction]
) -> list[Transaction | bytes]:
    """Each item as the transaction this node holds, or as encoded bytes to check."""
    resolved: list[Transaction | bytes] = []
    for item in items:
        if len(item) != HASH_ITEM_BYTES:
            resolved.append(item)
            continue
        held = known_tx(item) or fetched.get(item)
        if held is None:
            raise BlockInvalid(f"tx {item.hex()} is not available: neither held nor fetched")
        resolved.append(held)
    return resolved


def block_of(
    body: bytes, known_tx: KnownTx, fetched: Mapping[bytes, Transaction]
) -> tuple[Block, list[Transaction]]:
    """The block and its transactions from a proposal body, signatures unchecked (2f+1 committed it)."""
    header, items = _parse_body(body)
    resolved = _resolved(items, known_tx, fetched)
    try:
        txs = [item if isinstance(item, Transaction) else decode_tx(item) for item in resolved]
    except TxError as exc:
        raise BlockInvalid(f"malformed transaction: {exc}") from None
    return Block(header, tuple(tx.raw for tx in txs)), txs


def build_block(ledger: Ledger, txs: Sequence[Transaction], proposer: bytes, now_ms: int) -> Candidate:
    txs = _within_size(txs)
    height = ledger.height + 1
    time_ms = max(now_ms, ledger.last_time_ms)
    execution = execute(txs, height, time_ms, ledger.read_state)
    contents = Contents.of(txs, execution, ledger.state_root)
    header = Header(
        chain_id=ledger.genesis.chain_id,
        height=height,
        prev_hash=ledger.last_hash,
        time_ms=time_ms,
        proposer=proposer,
        tx_count=contents.tx_count,
        tx_root=contents.tx_root,
        receipt_root=contents.receipt_root,
        state_root=contents.state_root,
    )
    block = Block(header, tuple(tx.raw for tx in txs))
    return Candidate(block, header.hash(), list(txs), execution)


def check_block(
    ledger: Ledger,
    body: bytes,
    block_hash: bytes,
    proposers: frozenset[bytes],
    now_ms: int,
    known_tx: KnownTx,
    fetched: Mapping[bytes, Transaction] | None = None,
) -> Candidate:
    """Decodes and fully checks a proposal body; raises BlockInvalid with the reason.

    Items sent by hash are the transactions `known_tx` holds, or those
    `fetched` from peers; both had their signatures checked already.
    `proposers` are the proposers of the height's rounds up to this one: a block
    prepared in an earlier round is proposed again with its builder's name.
    """
    header, body_items = _parse_body(body)
    _check_header(ledger, header, block_hash, proposers, now_ms)
    items = _resolved(body_items, known_tx, fetched or {})
    if sum(len(item.raw if isinstance(item, Transaction) else item) for item in items) > BLOCK_TX_BYTES_MAX:
        raise BlockInvalid("block is larger than the block size limit")
    txs = _check_txs(ledger, items, known_tx)
    execution = execute(txs, header.height, header.time_ms, ledger.read_state)
    Contents.of(txs, execution, ledger.state_root).check(header)
    return Candidate(Block(header, tuple(tx.raw for tx in txs)), block_hash, txs, execution)


def _check_header(
    ledger: Ledger, header: Header, block_hash: bytes, proposers: frozenset[bytes], now_ms: int
) -> None:
    checks = [
        (header.hash() == block_hash, "block hash does not match the header"),
        (header.chain_id == ledger.genesis.chain_id, "wrong chain id"),
        (header.height == ledger.height + 1, f"height {header.height} is not {ledger.height + 1}"),
        (header.prev_hash == ledger.last_hash, "prev_hash is not the last block's hash"),
        (header.proposer in proposers, "proposer is not a proposer of this height's rounds so far"),
        (header.time_ms >= ledger.last_time_ms, "time goes backwards"),
        (header.time_ms <= now_ms + BLOCK_TIME_AHEAD_MS_MAX, "time is too far in the future"),
    ]
    for ok, reason in checks:
        if not ok:
            raise BlockInvalid(reason)


def _check_txs(ledger: Ledger, items: Sequence[Transaction | bytes], known_tx: KnownTx) -> list[Transaction]:
    authorised = ledger.genesis.authorised_senders()
    txs: list[Transaction] = []
    seen: set[bytes] = set()
    for item in items:
        if isinstance(item, Transaction):  # pending here, or fetched: only a pending one is known not committed
            tx, known = item, (item if known_tx(item.hash) is item else None)
        else:
            known = _known(item, known_tx)
            tx = known or verified_new_tx(item, ledger.genesis.chain_id)
        if tx.sender not in authorised:
            raise BlockInvalid(f"tx {tx.hash.hex()} has an unauthorised sender")
        # The mempool never holds a committed transaction: only new ones need the store.
        committed = ledger.committed_recently(tx.hash) or (known is None and ledger.has_tx(tx.hash))
        if tx.hash in seen or committed:
            raise BlockInvalid(f"tx {tx.hash.hex()} is a duplicate")
        seen.add(tx.hash)
        txs.append(tx)
    return txs


def _known(raw: bytes, known_tx: KnownTx) -> Transaction | None:
    """The transaction as this node already verified it, if it did."""
    if len(raw) <= 66:
        return None
    known = known_tx(tx_hash_of(raw))
    return known if known is not None and known.raw == raw else None


def verified_new_tx(raw: bytes, chain_id: str) -> Transaction:
    """The transaction if it decodes, is for this chain and its signature verifies; else BlockInvalid."""
    try:
        tx = decode_tx(raw)
    except TxError as exc:
        raise BlockInvalid(f"malformed transaction: {exc}") from None
    if tx.chain_id != chain_id or not tx.verify_signature():
        raise BlockInvalid(f"tx {tx.hash.hex()} has a bad signature or chain id")
    return tx
