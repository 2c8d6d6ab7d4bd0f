"""Checking a block against the ledger, whatever vouches for it: its proposer, a certificate, or consensus.

A proposal is checked in full before this node prepares it. A block that
catch-up fetched comes with its commit certificate: a quorum of validators
checked it, so its signatures are not verified again, but it must extend this
chain and its header must match its execution here. A block that 2f+1
validators committed while this node did not validate it is executed as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from node.chain.block import Block, BlockError, Header, decode_block, decode_certificate, verify_certificate
from node.chain.candidate import BlockInvalid, Candidate, Contents, KnownTx
from node.chain.canonical import CodecError
from node.chain.crypto import Verify, verify
from node.chain.execution import execute, validators_hashes
from node.chain.ledger import Ledger
from node.chain.proposal import BLOCK_TX_BYTES_MAX, HASH_ITEM_BYTES
from node.chain.tx import (
    BAD_SIGNATURE, SIGNATURE_TAIL_BYTES, WRONG_CHAIN_ID, Transaction, TxError, decode_tx, tx_hash_of, verified_tx,
)

# How far ahead of a validator's clock a proposed block's time may be.
BLOCK_TIME_AHEAD_MS_MAX = 10_000

Certificate = tuple[tuple[bytes, bytes], ...]
_NOTHING: Mapping[bytes, Transaction] = {}


@dataclass(frozen=True, slots=True)
class Proposed:
    """A proposal under consensus' hash; `proposers` are those of the height's rounds so far
    (a block prepared in an earlier round is proposed again with its builder's name)."""

    block_hash: bytes
    proposers: frozenset[bytes]
    now_ms: int


@dataclass(frozen=True, slots=True)
class Certified:
    """A committed block from a peer, with the certificate a quorum of `validators` sealed
    (each seal checked with `verify_seal`)."""

    certificate: Certificate
    validators: tuple[bytes, ...]
    verify_seal: Verify = verify


@dataclass(frozen=True, slots=True)
class Decided:
    """A block 2f+1 validators committed under `block_hash`, which this node did not validate:
    at least f+1 honest ones did."""

    block_hash: bytes


Vouch = Proposed | Certified | Decided


def _unknown(tx_hash: bytes) -> Transaction | None:
    return None


def check_block(
    ledger: Ledger,
    header: Header,
    items: Sequence[bytes],
    vouch: Vouch,
    known_tx: KnownTx = _unknown,
    fetched: Mapping[bytes, Transaction] = _NOTHING,
) -> Candidate:
    """The block as the next one of `ledger`, executed; raises BlockInvalid with the reason.

    `items` are encoded transactions or, in a proposal or a decided block, the
    hashes of transactions `known_tx` holds or peers `fetched`: both had their
    signatures checked already, as have the encoded ones `known_tx` holds.
    """
    block_hash = _check_header(ledger, header, vouch)
    txs = _txs(ledger, items, vouch, known_tx, fetched)
    genesis = ledger.genesis.members
    execution = execute(txs, header.height, header.time_ms, ledger.read_state, genesis)
    state_root = ledger.state_update(execution).root
    if not isinstance(vouch, Decided):
        validators = validators_hashes(execution, ledger.read_state, genesis, header.height)
        _check_contents(Contents.of(txs, execution, state_root, validators), header, vouch)
    elif state_root != header.state_root:
        raise BlockInvalid("state_root differs from the state after the block's transactions")
    return Candidate(Block(header, tuple(tx.raw for tx in txs)), block_hash, txs, execution)


def check_synced_block(
    ledger: Ledger, raw_block: bytes, raw_certificate: bytes, verify_seal: Verify = verify
) -> tuple[Candidate, Certificate] | None:
    """A committed block from a peer, checked against its certificate (by the validators of its
    height) and re-executed.

    None when the ledger already holds that height (consensus got there first).
    """
    try:
        block = decode_block(raw_block)
        certificate = decode_certificate(raw_certificate)
    except (BlockError, CodecError) as exc:
        raise BlockInvalid(f"undecodable block: {exc}") from None
    if block.header.height <= ledger.height:
        return None
    if block.header.height != ledger.height + 1:
        raise BlockInvalid(f"block {block.header.height} does not extend our chain at {ledger.height}")
    validators = ledger.members(block.header.height).validator_keys
    return check_block(ledger, block.header, block.txs, Certified(certificate, validators, verify_seal)), certificate


def _check_header(ledger: Ledger, header: Header, vouch: Vouch) -> bytes:
    """The block's hash, once the header is one `vouch` allows as the ledger's next."""
    if isinstance(vouch, Proposed):
        return _check_proposed_header(ledger, header, vouch)
    if header.height != ledger.height + 1 or header.prev_hash != ledger.last_hash:
        raise BlockInvalid(f"block {header.height} does not extend our chain at {ledger.height}")
    block_hash = header.hash()
    if isinstance(vouch, Decided):
        if block_hash != vouch.block_hash:  # the bytes held under that hash: a faulty proposer's other block
            raise BlockInvalid("block hash does not match the header")
    elif not verify_certificate(block_hash, vouch.certificate, vouch.validators, vouch.verify_seal).quorate:
        raise BlockInvalid(f"block {header.height} has no valid commit certificate")
    return block_hash


def _check_proposed_header(ledger: Ledger, header: Header, vouch: Proposed) -> bytes:
    checks = [
        (header.hash() == vouch.block_hash, "block hash does not match the header"),
        (header.chain_id == ledger.genesis.chain_id, "wrong chain id"),
        (header.height == ledger.height + 1, f"height {header.height} is not {ledger.height + 1}"),
        (header.prev_hash == ledger.last_hash, "prev_hash is not the last block's hash"),
        (header.proposer in vouch.proposers, "proposer is not a proposer of this height's rounds so far"),
        (header.time_ms >= ledger.last_time_ms, "time goes backwards"),
        (header.time_ms <= vouch.now_ms + BLOCK_TIME_AHEAD_MS_MAX, "time is too far in the future"),
    ]
    for ok, reason in checks:
        if not ok:
            raise BlockInvalid(reason)
    return vouch.block_hash


def _txs(
    ledger: Ledger, items: Sequence[bytes], vouch: Vouch, known_tx: KnownTx, fetched: Mapping[bytes, Transaction]
) -> list[Transaction]:
    if isinstance(vouch, Certified):  # a stored block carries every transaction whole
        return _decoded(items, "undecodable block")
    resolved = _resolved(items, known_tx, fetched)
    if isinstance(vouch, Decided):
        return _decoded(resolved, "malformed transaction")
    if sum(len(item.raw if isinstance(item, Transaction) else item) for item in resolved) > BLOCK_TX_BYTES_MAX:
        raise BlockInvalid("block is larger than the block size limit")
    return _checked_txs(ledger, resolved, known_tx)


def _resolved(
    items: Sequence[bytes], known_tx: KnownTx, fetched: Mapping[bytes, Transaction]
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


def _decoded(items: Sequence[Transaction | bytes], what: str) -> list[Transaction]:
    """The transactions, signatures unchecked: a quorum of validators checked them."""
    try:
        return [item if isinstance(item, Transaction) else decode_tx(item) for item in items]
    except TxError as exc:
        raise BlockInvalid(f"{what}: {exc}") from None


def _checked_txs(ledger: Ledger, items: Sequence[Transaction | bytes], known_tx: KnownTx) -> list[Transaction]:
    authorised = ledger.members(ledger.height + 1).authorised_senders
    txs: list[Transaction] = []
    seen: set[bytes] = set()
    for item in items:
        if isinstance(item, Transaction):  # pending here, or fetched: only a pending one is known not committed
            tx, known = item, (item if known_tx(item.hash) is item else None)
        else:
            known = _known(item, known_tx)
            tx = known or _verified_new_tx(item, ledger.genesis.chain_id)
        if tx.sender not in authorised:
            raise BlockInvalid(f"tx {tx.hash.hex()} has an unauthorised sender")
        # The mempool never holds a committed transaction: only new ones need the store.
        committed = ledger.committed_recently(tx.hash) or (known is None and ledger.has_tx(tx.hash))
        if tx.hash in seen or committed:
            raise BlockInvalid(f"tx {tx.hash.hex()} is a duplicate")
        seen.add(tx.hash)
        txs.append(tx)
    return txs


def _verified_new_tx(raw: bytes, chain_id: str) -> Transaction:
    try:
        return verified_tx(raw, chain_id)
    except TxError as exc:
        if exc.reason in (WRONG_CHAIN_ID, BAD_SIGNATURE):
            raise BlockInvalid(f"tx {tx_hash_of(raw).hex()} has a bad signature or chain id") from None
        raise BlockInvalid(f"malformed transaction: {exc}") from None


def _known(raw: bytes, known_tx: KnownTx) -> Transaction | None:
    """The transaction as this node already verified it, if it did."""
    if len(raw) <= SIGNATURE_TAIL_BYTES:
        return None
    known = known_tx(tx_hash_of(raw))
    return known if known is not None and known.raw == raw else None


def _check_contents(contents: Contents, header: Header, vouch: Proposed | Certified) -> None:
    try:
        contents.check(header)
    except BlockInvalid as exc:
        if isinstance(vouch, Certified):
            raise BlockInvalid(f"block {header.height}: {exc}") from None
        raise
