"""Membership changes on a real Ledger: the history it answers for a height, the headers that commit to
the validators, and the checks (block, admission, mempool) that follow a change from its activation."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from nacl.signing import SigningKey

from node.chain.block import Block
from node.chain.block_check import Proposed, check_block
from node.chain.candidate import BlockInvalid, Candidate
from node.chain.genesis import Genesis
from node.chain.ledger import Ledger
from node.chain.membership import Member, validators_hash
from node.chain.proposal import build_block
from node.chain.tx import Transaction, sign_tx
from node.pipeline.commit import CommitPipeline
from node.txpool.admission import UNAUTHORISED, Admission, NotAMember, Refused
from node.txpool.mempool import Mempool
from node.txpool.verifier import Verifier
from storage.chain import ChainStore
from storage.memory import MemoryStore

CHAIN = "gov-chain-test"
VALIDATORS = [SigningKey(bytes([0x30 + i]) * 32) for i in range(4)]
A0, A1, A2 = (SigningKey(bytes([0x40 + i]) * 32) for i in range(3))
CLIENT, OTHER, NEWCOMER = SigningKey(b"c" * 32), SigningKey(b"d" * 32), SigningKey(b"n" * 32)
GENESIS = Genesis(
    chain_id=CHAIN,
    genesis_time_ms=1_700_000_000_000,
    validators=tuple(Member(f"v{i}", bytes(k.verify_key), f"127.0.0.1:{26601 + 10 * i}")
                     for i, k in enumerate(VALIDATORS)),
    clients=(Member("client", bytes(CLIENT.verify_key)), Member("other", bytes(OTHER.verify_key))),
    admins=(Member("a0", bytes(A0.verify_key)), Member("a1", bytes(A1.verify_key)), Member("a2", bytes(A2.verify_key))),
)  # admin_threshold unstated: 2 of 3
PROPOSER = bytes(VALIDATORS[0].verify_key)
_nonce = iter(range(10**9))


def key(k: SigningKey) -> bytes:
    return bytes(k.verify_key)


def gov(signer: SigningKey, op: str, **args: object) -> Transaction:
    return sign_tx(signer, CHAIN, "gov", op, dict(args), next(_nonce))


def put(signer: SigningKey, k: str) -> Transaction:
    return sign_tx(signer, CHAIN, "kv", "put", {"key": k, "value": b"v"}, next(_nonce))


class Chain:
    """Two ledgers of one chain: blocks are built on the first and committed to both."""

    def __init__(self) -> None:
        self.builder, self.checker = (Ledger(ChainStore(MemoryStore()), GENESIS) for _ in range(2))

    @property
    def height(self) -> int:
        return self.builder.height

    def build(self, *txs: Transaction) -> Candidate:
        return build_block(self.builder, list(txs), PROPOSER, self.builder.last_time_ms + 1000)

    def commit(self, *txs: Transaction) -> Candidate:
        candidate = self.build(*txs)
        seal = tuple((key(k), k.sign(b"alliance-commit-v1\x00" + candidate.block_hash).signature)
                     for k in VALIDATORS[:3])
        for ledger in (self.builder, self.checker):
            ledger.commit(candidate.block, candidate.txs, candidate.execution, seal)
        return candidate

    def check(self, candidate: Candidate) -> Candidate:
        """The candidate as the checker validates a proposal of it."""
        header = candidate.block.header
        return check_block(self.checker, header, candidate.block.txs,
                           Proposed(candidate.block_hash, frozenset([PROPOSER]), header.time_ms))

    def pass_at_2(self, kind: str, **change: object) -> None:
        """Proposed in block 1, passed by the second approval in block 2: in force from block 4."""
        proposal = gov(A0, "propose", change={"kind": kind, **change})
        self.commit(proposal)
        assert self.commit(gov(A1, "approve", proposal=proposal.hash)).execution.receipts[0].code == 0


def rebuilt(candidate: Candidate, **header: Any) -> Candidate:
    block = Block(dataclasses.replace(candidate.block.header, **header), candidate.block.txs)
    return Candidate(block, block.header.hash(), candidate.txs, candidate.execution)


OLD = tuple(key(k) for k in VALIDATORS)
NEW = OLD[:3]


@pytest.fixture
def removal() -> Chain:
    """A chain at height 2 whose last validator is removed from block 4 on."""
    chain = Chain()
    chain.pass_at_2("remove_validator", pubkey=OLD[3])
    return chain


def test_the_ledger_answers_for_past_current_and_the_two_upcoming_heights(removal: Chain) -> None:
    ledger = removal.builder
    assert [ledger.members(h).validator_keys for h in (1, 2, 3, 4)] == [OLD, OLD, OLD, NEW]
    for height in (0, 5):
        with pytest.raises(ValueError, match=f"height {height} is not known at tip 2"):
            ledger.members(height)
    removal.commit()
    assert [ledger.members(h).validator_keys for h in (3, 4, 5)] == [OLD, NEW, NEW]
    with pytest.raises(ValueError):
        ledger.members(6)
    removal.commit(), removal.commit()
    assert [ledger.members(h).validator_keys for h in range(1, 8)] == [OLD, OLD, OLD, NEW, NEW, NEW, NEW]
    reopened = Ledger(ledger.store, GENESIS)
    assert [reopened.members(h) for h in range(1, 8)] == [ledger.members(h) for h in range(1, 8)]
    assert ledger.members(3) == GENESIS.members


def test_headers_commit_to_the_validators_of_their_height_and_the_next(removal: Chain) -> None:
    for _ in range(3):
        removal.commit()
    old, new = validators_hash(OLD), validators_hash(NEW)
    headers = [removal.builder.block(h).header for h in range(1, 6)]  # type: ignore[union-attr]
    assert [(h.validators_hash, h.next_validators_hash) for h in headers] == [
        (old, old), (old, old), (old, new), (new, new), (new, new),
    ]


@pytest.mark.parametrize(("field", "wrong"), [
    ("validators_hash", validators_hash(NEW)), ("next_validators_hash", validators_hash(OLD)),
])
def test_a_proposed_block_naming_other_validators_is_refused(removal: Chain, field: str, wrong: bytes) -> None:
    candidate = removal.build()  # block 3, across the activation
    assert removal.check(candidate).block_hash == candidate.block_hash
    with pytest.raises(BlockInvalid, match=f"^{field} differs"):
        removal.check(rebuilt(candidate, **{field: wrong}))


@pytest.fixture
def removed_client() -> Chain:
    """A chain at height 2 whose client CLIENT is removed from block 4 on."""
    chain = Chain()
    chain.pass_at_2("remove_client", pubkey=key(CLIENT))
    return chain


def test_a_block_carrying_a_tx_of_a_client_removed_at_its_height_is_refused(removed_client: Chain) -> None:
    chain = removed_client
    assert chain.check(chain.build(put(CLIENT, "k3"))).execution.receipts[0].code == 0  # block 3: still a client
    chain.commit(put(CLIENT, "k3"))
    with pytest.raises(BlockInvalid, match="unauthorised sender"):
        chain.check(chain.build(put(CLIENT, "k4")))
    assert chain.check(chain.build(put(OTHER, "k4"))).execution.receipts[0].code == 0


def test_a_block_carrying_a_tx_of_a_client_added_at_its_height_is_accepted() -> None:
    chain = Chain()
    chain.pass_at_2("add_client", name="newcomer", pubkey=key(NEWCOMER))
    with pytest.raises(BlockInvalid, match="unauthorised sender"):
        chain.check(chain.build(put(NEWCOMER, "k3")))
    chain.commit()
    assert chain.check(chain.build(put(NEWCOMER, "k4"))).execution.receipts[0].code == 0


class Quiet:
    def transactions_pending(self) -> None:
        pass


def admission_over(ledger: Ledger) -> Admission:
    mempool = Mempool(100)
    return Admission(GENESIS, ledger, mempool, Verifier(ledger, mempool), Quiet())


def unauthorised(admission: Admission, tx: Transaction) -> bool:
    try:
        admission.check(tx.raw)
    except Refused as refused:
        return refused.kind == UNAUTHORISED
    return False


def test_admission_refuses_a_removed_client_from_its_activation_height(removed_client: Chain) -> None:
    admission = admission_over(removed_client.builder)
    assert admission.check(put(CLIENT, "a").raw).sender == key(CLIENT)  # the next block, 3, takes it
    removed_client.commit()
    assert unauthorised(admission, put(CLIENT, "b"))  # the next block is 4: the client is removed there
    assert admission.check(put(OTHER, "c").raw).sender == key(OTHER)


def test_admission_takes_an_added_client_from_its_activation_height() -> None:
    chain = Chain()
    admission = admission_over(chain.builder)
    chain.pass_at_2("add_client", name="newcomer", pubkey=key(NEWCOMER))
    assert unauthorised(admission, put(NEWCOMER, "a"))
    chain.commit()
    assert admission.check(put(NEWCOMER, "b").raw).sender == key(NEWCOMER)


def test_the_pipeline_drops_the_pending_txs_of_a_removed_sender(removed_client: Chain) -> None:
    chain = removed_client
    pipeline = CommitPipeline(chain.builder, Mempool(100), PROPOSER, 10)
    gone, kept = put(CLIENT, "x"), put(OTHER, "y")
    pipeline.pool.add(gone)
    pipeline.pool.add(kept)
    assert pipeline.drop_unauthorised() == []  # the next block, 3, still takes it
    chain.commit()
    assert pipeline.drop_unauthorised() == [gone.hash]
    assert [tx.hash for tx in pipeline.pool.oldest(10)] == [kept.hash]


def test_a_block_built_takes_no_tx_of_a_sender_removed_after_it_was_admitted(removed_client: Chain) -> None:
    chain = removed_client
    pipeline = CommitPipeline(chain.builder, Mempool(100), PROPOSER, 10)
    gone, kept = put(CLIENT, "x"), put(OTHER, "y")
    pipeline.pool.add(gone)
    pipeline.pool.add(kept)
    assert [tx.hash for tx in pipeline.block_txs()] == [gone.hash, kept.hash]  # block 3 may still carry it
    chain.commit()  # admitted meanwhile, after the commit's own drop: the builder leaves it out
    assert [tx.hash for tx in pipeline.block_txs()] == [kept.hash]
    assert gone.hash not in pipeline.pool


def test_a_tx_whose_sender_is_removed_while_it_is_verified_is_refused(removed_client: Chain) -> None:
    admission = admission_over(removed_client.builder)
    tx = admission.check(put(CLIENT, "a").raw)  # authorised for block 3
    removed_client.commit()
    refused = admission._submitted(tx)  # its signature was verified meanwhile
    assert isinstance(refused, Refused) and refused.kind == UNAUTHORISED
    assert tx.hash not in admission.mempool


def test_a_node_that_is_no_member_acknowledges_no_client_tx(removed_client: Chain) -> None:
    ledger = removed_client.builder
    mempool = Mempool(100)
    outsider = Admission(GENESIS, ledger, mempool, Verifier(ledger, mempool), Quiet(), node_key=key(NEWCOMER))
    with pytest.raises(NotAMember):
        outsider.check(put(OTHER, "a").raw)
    assert outsider.check(put(OTHER, "b").raw, from_peer=True).sender == key(OTHER)  # a peer's: passed on
    member = Admission(GENESIS, ledger, mempool, Verifier(ledger, mempool), Quiet(),
                       node_key=GENESIS.validators[0].pubkey)
    assert member.check(put(OTHER, "c").raw).sender == key(OTHER)


def test_a_validator_whose_removal_passed_acknowledges_no_client_tx(removal: Chain) -> None:
    ledger, mempool = removal.builder, Mempool(100)

    def node(validator: int) -> Admission:
        return Admission(GENESIS, ledger, mempool, Verifier(ledger, mempool), Quiet(), node_key=OLD[validator])

    with pytest.raises(NotAMember, match="removes this node's key from the chain by height 4"):
        node(3).check(put(OTHER, "a").raw)  # still a validator of block 3, but cut off at 4
    assert node(3).check(put(OTHER, "b").raw, from_peer=True).sender == key(OTHER)
    assert node(0).check(put(OTHER, "c").raw).sender == key(OTHER)
