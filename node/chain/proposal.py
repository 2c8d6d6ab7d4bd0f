"""The proposal body that carries a block, and building a block to propose."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from node.chain.block import Block, BlockError, Header, header_from_wire
from node.chain.candidate import BlockInvalid, Candidate, Contents, KnownTx
from node.chain.canonical import CodecError, pack_flat, unpack
from node.chain.execution import execute, validators_hashes
from node.chain.ledger import Ledger
from node.chain.tx import Transaction

# Encoded transactions in one block, so that a proposal fits a peer frame.
BLOCK_TX_BYTES_MAX = 8 * 1024 * 1024
# A proposal's item of this length is a transaction's hash: an encoded transaction is longer.
HASH_ITEM_BYTES = 32


def _within_size(txs: Sequence[Transaction]) -> list[Transaction]:
    taken, size = [], 0
    for tx in txs:
        size += len(tx.raw)
        if size > BLOCK_TX_BYTES_MAX:
            break
        taken.append(tx)
    return taken


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
    execution = execute(txs, height, time_ms, ledger.read_state, ledger.genesis.members)
    validators = validators_hashes(execution, ledger.read_state, ledger.genesis.members, height)
    contents = Contents.of(txs, execution, ledger.state_update(execution).root, validators)
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
        validators_hash=contents.validators_hash,
        next_validators_hash=contents.next_validators_hash,
    )
    block = Block(header, tuple(tx.raw for tx in txs))
    return Candidate(block, header.hash(), list(txs), execution)

