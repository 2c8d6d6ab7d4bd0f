"""What a block holds and commits to, the proposal body that carries it, and building one to propose."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from node.chain.block import Block, BlockError, Header, header_from_wire
from node.chain.canonical import CodecError, pack_flat, unpack
from node.chain.execution import Execution, execute, receipt_bytes
from node.chain.ledger import Ledger
from node.chain.merkle import merkle_root
from node.chain.tx import Transaction, TxError, decode_tx

# Encoded transactions in one block, so that a proposal fits a peer frame.
BLOCK_TX_BYTES_MAX = 8 * 1024 * 1024
# A proposal's item of this length is a transaction's hash: an encoded transaction is longer.
HASH_ITEM_BYTES = 32

KnownTx = Callable[[bytes], Transaction | None]


class BlockInvalid(Exception):
    """A block that an honest validator must not prepare, commit or apply; the message says why."""


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


def parse_body(body: bytes) -> tuple[Header, list[bytes]]:
    """The header and the items of a proposal body; BlockInvalid when it is not one."""
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
        _, items = parse_body(body)
    except BlockInvalid:
        return []
    return [item for item in items if len(item) == HASH_ITEM_BYTES and known_tx(item) is None]


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


def verified_new_tx(raw: bytes, chain_id: str) -> Transaction:
    """The transaction if it decodes, is for this chain and its signature verifies; else BlockInvalid."""
    try:
        tx = decode_tx(raw)
    except TxError as exc:
        raise BlockInvalid(f"malformed transaction: {exc}") from None
    if tx.chain_id != chain_id or not tx.verify_signature():
        raise BlockInvalid(f"tx {tx.hash.hex()} has a bad signature or chain id")
    return tx
