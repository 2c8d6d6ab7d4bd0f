"""Building and checking proposed blocks, and committing them to a Ledger."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from nacl.signing import SigningKey

from node.chain.block import Block, BlockError, decode_certificate
from node.chain.block_check import Proposed, check_block
from node.chain.candidate import BlockInvalid, Candidate
from node.chain.canonical import pack, unpack
from node.chain.execution import GENESIS_STATE_ROOT, kv_key
from node.chain.genesis import Genesis
from node.chain.ledger import GenesisMismatch, Ledger
from node.chain.membership import Member
from node.chain.merkle import merkle_root
from node.chain.proposal import build_block, parse_body
from node.chain.tx import Transaction, decode_tx, sign_tx
from storage.chain import ChainStore
from storage.kv import StoreCorrupt
from storage.memory import MemoryStore
from tests.node.state_reference import reference_root

VALIDATOR = SigningKey(b"v" * 32)
CLIENT = SigningKey(b"c" * 32)
STRANGER = SigningKey(b"s" * 32)
PROPOSER = bytes(VALIDATOR.verify_key)
GENESIS = Genesis(
    chain_id="proposal-test",
    genesis_time_ms=1_700_000_000_000,
    validators=(Member("v0", PROPOSER, "127.0.0.1:26601"),),
    clients=(Member("client", bytes(CLIENT.verify_key)),),
    admins=(),
)
NOW = GENESIS.genesis_time_ms + 1_000
_nonce = iter(range(10**9))


def new_ledger(genesis: Genesis = GENESIS) -> Ledger:
    return Ledger(ChainStore(MemoryStore()), genesis)


def put(key: str, value: bytes = b"v", signer: SigningKey = CLIENT, chain_id: str = GENESIS.chain_id) -> Transaction:
    return sign_tx(signer, chain_id, "kv", "put", {"key": key, "value": value}, next(_nonce))


def unknown(tx_hash: bytes) -> Transaction | None:
    return None


def check_body(ledger: Ledger, body: bytes, block_hash: bytes, proposers: frozenset[bytes],
               known_tx: Callable[[bytes], Transaction | None] = unknown) -> Candidate:
    header, items = parse_body(body)
    return check_block(ledger, header, items, Proposed(block_hash, proposers, NOW), known_tx)


def check(ledger: Ledger, candidate: Candidate, proposer: bytes = PROPOSER,
          known_tx: Callable[[bytes], Transaction | None] = unknown) -> Candidate:
    return check_body(ledger, candidate.block.encode(), candidate.block_hash, frozenset([proposer]), known_tx)


def rebuilt(candidate: Candidate, txs: list[bytes] | None = None, **header_changes: object) -> Candidate:
    """The candidate with some header fields or transactions replaced, hash recomputed."""
    header = dataclasses.replace(candidate.block.header, **header_changes)
    block = Block(header, candidate.block.txs if txs is None else tuple(txs))
    return Candidate(block, header.hash(), candidate.txs, candidate.execution)


def invalid(ledger: Ledger, candidate: Candidate, match: str, **kwargs: object) -> None:
    with pytest.raises(BlockInvalid, match=match):
        check(ledger, candidate, **kwargs)  # type: ignore[arg-type]


def seal(block_hash: bytes) -> tuple[tuple[bytes, bytes], ...]:
    return ((PROPOSER, VALIDATOR.sign(b"alliance-commit-v1\x00" + block_hash).signature),)


def commit(ledger: Ledger, candidate: Candidate) -> None:
    ledger.commit(candidate.block, candidate.txs, candidate.execution, seal(candidate.block_hash))


# --- build, check -----------------------------------------------------------------------


def test_built_block_is_accepted_by_another_ledger_at_the_same_state() -> None:
    builder, checker = new_ledger(), new_ledger()
    txs = [put("a"), put("b", b"2"), put("a", b"3")]
    candidate = build_block(builder, txs, PROPOSER, NOW)
    header = candidate.block.header
    assert (header.height, header.prev_hash, header.time_ms) == (1, GENESIS.hash(), NOW)
    assert header.tx_count == 3
    assert header.tx_root == merkle_root([t.hash for t in txs])
    receipts = candidate.execution.receipts
    assert header.receipt_root == merkle_root([pack([t.hash, r.code, r.log]) for t, r in zip(txs, receipts)])
    assert header.state_root == reference_root(candidate.execution.writes) != GENESIS_STATE_ROOT
    checked = check(checker, candidate)
    assert checked.block_hash == candidate.block_hash == header.hash()
    assert checked.block == candidate.block
    assert [t.hash for t in checked.txs] == [t.hash for t in txs]
    assert checked.execution == candidate.execution


def test_empty_block_is_accepted() -> None:
    assert check(new_ledger(), build_block(new_ledger(), [], PROPOSER, NOW)).txs == []


def test_block_time_never_goes_below_the_last_block() -> None:
    candidate = build_block(new_ledger(), [], PROPOSER, GENESIS.genesis_time_ms - 5)
    assert candidate.block.header.time_ms == GENESIS.genesis_time_ms


def test_wrong_hash() -> None:
    candidate = build_block(new_ledger(), [put("a")], PROPOSER, NOW)
    wrong = dataclasses.replace(candidate, block_hash=bytes(32))
    invalid(new_ledger(), wrong, "block hash does not match")


def test_wrong_prev_hash() -> None:
    candidate = build_block(new_ledger(), [put("a")], PROPOSER, NOW)
    invalid(new_ledger(), rebuilt(candidate, prev_hash=bytes(32)), "prev_hash")


@pytest.mark.parametrize("height", [2, 3])
def test_wrong_height(height: int) -> None:
    candidate = build_block(new_ledger(), [put("a")], PROPOSER, NOW)
    invalid(new_ledger(), rebuilt(candidate, height=height), f"height {height} is not 1")


def test_wrong_proposer() -> None:
    candidate = build_block(new_ledger(), [put("a")], PROPOSER, NOW)
    invalid(new_ledger(), candidate, "proposer", proposer=bytes(STRANGER.verify_key))
    other = build_block(new_ledger(), [put("a")], bytes(STRANGER.verify_key), NOW)
    invalid(new_ledger(), other, "proposer")


def test_wrong_chain_id_and_time() -> None:
    candidate = build_block(new_ledger(), [], PROPOSER, NOW)
    invalid(new_ledger(), rebuilt(candidate, chain_id="other"), "chain id")
    invalid(new_ledger(), rebuilt(candidate, time_ms=GENESIS.genesis_time_ms - 1), "backwards")
    invalid(new_ledger(), rebuilt(candidate, time_ms=NOW + 10_001), "future")


def test_unauthorised_sender() -> None:
    candidate = build_block(new_ledger(), [put("a"), put("b", signer=STRANGER)], PROPOSER, NOW)
    invalid(new_ledger(), candidate, "unauthorised sender")


def test_validator_is_not_an_authorised_sender() -> None:
    candidate = build_block(new_ledger(), [put("a", signer=VALIDATOR)], PROPOSER, NOW)
    invalid(new_ledger(), candidate, "unauthorised sender")


def bad_signature(tx: Transaction) -> Transaction:
    body = unpack(tx.raw)
    body[7] = bytes([body[7][0] ^ 1]) + body[7][1:]
    return decode_tx(pack(body))


def test_tx_with_bad_signature() -> None:
    candidate = build_block(new_ledger(), [put("a"), bad_signature(put("b"))], PROPOSER, NOW)
    invalid(new_ledger(), candidate, "bad signature")


def test_tx_with_bad_signature_is_caught_even_when_its_hash_is_known() -> None:
    good = put("a")
    forged = bad_signature(good)
    assert forged.hash == good.hash  # the hash does not cover the signature
    candidate = build_block(new_ledger(), [forged], PROPOSER, NOW)
    invalid(new_ledger(), candidate, "bad signature", known_tx={good.hash: good}.get)


def test_known_tx_is_accepted_without_decoding_again() -> None:
    tx = put("a")
    candidate = build_block(new_ledger(), [tx], PROPOSER, NOW)
    assert check(new_ledger(), candidate, known_tx={tx.hash: tx}.get).txs == [tx]


def test_tx_for_another_chain() -> None:
    candidate = build_block(new_ledger(), [put("a", chain_id="other-chain")], PROPOSER, NOW)
    invalid(new_ledger(), candidate, "chain id")


def test_malformed_tx_in_block() -> None:
    candidate = build_block(new_ledger(), [put("a")], PROPOSER, NOW)
    invalid(new_ledger(), rebuilt(candidate, txs=[b"\xc0"]), "malformed transaction")


def test_duplicate_tx_within_the_block() -> None:
    tx = put("a")
    candidate = build_block(new_ledger(), [tx, put("b"), tx], PROPOSER, NOW)
    invalid(new_ledger(), candidate, "duplicate")


def test_tx_already_committed() -> None:
    builder, checker = new_ledger(), new_ledger()
    tx = put("a")
    first = build_block(builder, [tx], PROPOSER, NOW)
    commit(builder, first)
    commit(checker, check(checker, first))
    second = build_block(builder, [put("b"), tx], PROPOSER, NOW + 1)
    invalid(checker, second, "duplicate")


def test_tampered_tx_root() -> None:
    candidate = build_block(new_ledger(), [put("a"), put("b")], PROPOSER, NOW)
    invalid(new_ledger(), rebuilt(candidate, txs=list(reversed(candidate.block.txs))), "tx_root")
    invalid(new_ledger(), rebuilt(candidate, tx_root=bytes(32)), "tx_root")


def test_tampered_tx_count_and_receipt_root() -> None:
    candidate = build_block(new_ledger(), [put("a"), put("b")], PROPOSER, NOW)
    invalid(new_ledger(), rebuilt(candidate, tx_count=3), "tx_count")
    invalid(new_ledger(), rebuilt(candidate, receipt_root=bytes(32)), "receipt_root")


def test_tampered_state_root() -> None:
    candidate = build_block(new_ledger(), [put("a")], PROPOSER, NOW)
    invalid(new_ledger(), rebuilt(candidate, state_root=bytes(32)), "state_root")


def test_checker_with_different_state_rejects() -> None:
    builder, checker = new_ledger(), new_ledger()
    commit(checker, build_block(checker, [], PROPOSER, NOW))  # checker is one block ahead
    invalid(checker, build_block(builder, [], PROPOSER, NOW), "height 1 is not 2")


def test_undecodable_block() -> None:
    with pytest.raises(BlockInvalid):
        check_body(new_ledger(), b"\x92\x01", bytes(32), frozenset([PROPOSER]))


# --- commit and read back -------------------------------------------------------------------


def test_commit_then_read_back() -> None:
    ledger = new_ledger()
    ok, not_owner = put("k", b"v1"), put("k", b"v2", signer=STRANGER)
    candidate = build_block(ledger, [ok, not_owner], PROPOSER, NOW)
    commit(ledger, candidate)

    assert ledger.height == 1
    assert ledger.last_hash == candidate.block_hash
    assert ledger.state_root == candidate.block.header.state_root
    assert ledger.last_time_ms == NOW
    assert ledger.block(1) == candidate.block
    assert ledger.block(2) is None
    assert ledger.certificate(1) == seal(candidate.block_hash)
    entry = ledger.tx_entry(ok.hash)
    assert entry is not None
    assert (entry.height, entry.index, entry.receipt.code, entry.tx) == (1, 0, 0, ok)
    failed = ledger.tx_entry(not_owner.hash)
    assert failed is not None and (failed.index, failed.receipt.code) == (1, 2)
    assert ledger.has_tx(ok.hash) and not ledger.has_tx(bytes(32))
    assert ledger.tx_entry(bytes(32)) is None
    assert ledger.read_state(kv_key("k")) == pack([b"v1", bytes(CLIENT.verify_key), 1])


def test_a_tx_entry_is_read_from_its_block_after_a_restart() -> None:
    ledger = new_ledger()
    txs = [put(f"k{i}") for i in range(5)]
    commit(ledger, build_block(ledger, txs, PROPOSER, NOW))
    reopened = Ledger(ledger.store, GENESIS)  # nothing decoded in memory
    for i, tx in enumerate(txs):
        entry = reopened.tx_entry(tx.hash)
        assert entry is not None and (entry.height, entry.index, entry.tx) == (1, i, tx)
    assert unpack(ledger.store.load_tx(txs[2].hash) or b"") == [1, 2, 0, ""]  # no second copy of the tx


@pytest.mark.parametrize("entry", [pack([1, 1, 0, ""]), pack([1, 9, 0, ""]), pack([1, 0, 0]), b"\xc1", pack("x")])
def test_a_damaged_tx_entry_is_store_corruption(entry: bytes) -> None:
    ledger = new_ledger()
    tx = put("k")
    commit(ledger, build_block(ledger, [tx, put("j")], PROPOSER, NOW))
    ledger.store.kv.put(b"t/" + tx.hash, entry)
    with pytest.raises(StoreCorrupt, match="entry of transaction"):
        Ledger(ledger.store, GENESIS).tx_entry(tx.hash)


@pytest.mark.parametrize("stored", [b"\xc1", pack([1, 2]), pack([[1], [b"not a tx", b"x"]]), pack([[1], [1, 2]])])
def test_a_damaged_stored_block_is_store_corruption_for_its_transactions(stored: bytes) -> None:
    ledger = new_ledger()
    tx = put("k")
    commit(ledger, build_block(ledger, [tx, put("j")], PROPOSER, NOW))
    commit(ledger, build_block(ledger, [put("i")], PROPOSER, NOW))
    ledger.store.kv.put(b"b/" + (1).to_bytes(8, "big"), stored)
    with pytest.raises(StoreCorrupt, match="block 1"):
        Ledger(ledger.store, GENESIS).tx_entry(tx.hash)


def test_next_block_chains_on_the_committed_one() -> None:
    builder, checker = new_ledger(), new_ledger()
    for height in (1, 2, 3):
        candidate = build_block(builder, [put(f"k{height}")], PROPOSER, NOW + height)
        assert candidate.block.header.height == height
        checked = check(checker, candidate)
        commit(builder, candidate)
        commit(checker, checked)
    assert builder.last_hash == checker.last_hash
    assert builder.block(3).header.prev_hash == builder.block(2).header.hash()  # type: ignore[union-attr]


def test_reopened_ledger_keeps_its_chain() -> None:
    store = ChainStore(MemoryStore())
    ledger = Ledger(store, GENESIS)
    candidate = build_block(ledger, [put("a")], PROPOSER, NOW)
    commit(ledger, candidate)
    reopened = Ledger(store, GENESIS)
    assert (reopened.height, reopened.last_hash, reopened.state_root) == (
        1, candidate.block_hash, candidate.block.header.state_root)


def test_reopened_with_another_genesis_is_refused() -> None:
    store = ChainStore(MemoryStore())
    Ledger(store, GENESIS)
    other = dataclasses.replace(GENESIS, chain_id="another-chain")
    with pytest.raises(GenesisMismatch):
        Ledger(store, other)
    Ledger(store, GENESIS)  # the right genesis still opens it


def test_certificate_with_integer_fields_is_refused() -> None:
    with pytest.raises(BlockError):
        decode_certificate(pack([[3, 4]]))


def test_certificate_with_string_fields_is_refused() -> None:
    with pytest.raises(BlockError):
        decode_certificate(pack([["validator", "seal"]]))


def test_header_version_true_is_refused() -> None:
    candidate = build_block(new_ledger(), [put("a")], PROPOSER, NOW)
    header = candidate.block.header.wire()
    raw = pack([[True] + header[1:], list(candidate.block.txs)])
    assert raw != candidate.block.encode()  # another encoding of "the same" block
    with pytest.raises(BlockInvalid):
        check_body(new_ledger(), raw, candidate.block_hash, frozenset([PROPOSER]))


def test_block_reproposed_in_a_later_round_keeps_its_builder() -> None:
    candidate = build_block(new_ledger(), [put("again")], PROPOSER, NOW)
    later_round = frozenset([bytes(STRANGER.verify_key), PROPOSER])
    raw = candidate.block.encode()
    assert check_body(new_ledger(), raw, candidate.block_hash, later_round).block_hash == candidate.block_hash
