"""Proposals that name transactions by hash: a validator resolves them from its mempool, fetches what it lacks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgpack
import trio

import pytest
from nacl.signing import SigningKey

from consensus.actions import CommitBlock, ValidateBlock
from consensus.events import BlockValidated
from consensus.config import ReplicaConfig
from consensus.replica import Replica
from node.chain.block_check import Proposed, check_block
from node.chain.candidate import BlockInvalid, Candidate
from node.chain.crypto import NodeCrypto
from node.chain.genesis import Genesis
from node.chain.ledger import Ledger
from node.chain.membership import Member
from node.chain.proposal import build_block, parse_body, proposal_body
from node.chain.tx import Transaction, sign_tx
from node.p2p.fetch import FETCH_TIMEOUT_S, TxFetcher
from node.p2p.wire import FOUND_TXS, GET_TXS, FoundTxs, FrameError, Message, decode
from node.pipeline.driver import Driver, Wakeup
from storage.chain import ChainStore
from storage.memory import MemoryStore
from tests.shell.chainkit import Fetcher, driver_over
from tests.shell.test_driver import _inline

KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
CLIENT = SigningKey(b"c" * 32)
GENESIS = Genesis(
    "compact-test", 0, tuple(Member(f"v{i}", bytes(k.verify_key), "") for i, k in enumerate(KEYS)),
    (Member("c", bytes(CLIENT.verify_key)),), (),
)
PROPOSER = bytes(KEYS[1].verify_key)  # the proposer of height 1, round 0 (validators take turns)


def _txs(n: int) -> list[Transaction]:
    return [sign_tx(CLIENT, GENESIS.chain_id, "kv", "put", {"key": f"k{i}", "value": b"v"}, i) for i in range(n)]


def _proposal(txs: list[Transaction]) -> Candidate:
    """What another validator built, at the same height, from the same chain."""
    return build_block(Ledger(ChainStore(MemoryStore()), GENESIS), txs, PROPOSER, 1_000)


class SyncAsked(Wakeup):
    """Counts the driver's requests for catch-up."""

    def __init__(self) -> None:
        super().__init__()
        self.times = 0

    def set(self) -> None:
        self.times += 1
        super().set()


@pytest.fixture
def fetcher() -> Fetcher:
    return Fetcher()


@pytest.fixture
def sync_asked() -> SyncAsked:
    return SyncAsked()


@pytest.fixture
async def driver(fetcher: Fetcher, sync_asked: SyncAsked) -> AsyncIterator[Driver]:
    config = ReplicaConfig(GENESIS.chain_id, tuple(bytes(k.verify_key) for k in KEYS), round_timeout_ms=60_000)
    ledger = Ledger(ChainStore(MemoryStore()), GENESIS)
    replica = Replica(config, NodeCrypto(KEYS[0]), 1)
    yield driver_over(replica, ledger, block_txs_max=100, fetcher=fetcher, sync_wanted=sync_asked, run_blocking=_inline)


def _holding(fetcher: Fetcher, txs: list[Transaction]) -> None:
    """The peers hold `txs` from now on."""
    fetcher.holds.update((tx.hash, tx) for tx in txs)


# ---- the fetcher ----------------------------------------------------------------------------


class Network:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, list[Any]]] = []  # (peer, or None for all validators; frame)

    def send(self, peer: bytes, payload: bytes) -> None:
        self.sent.append((peer, msgpack.unpackb(payload)))

    def broadcast_to_validators(self, payload: bytes) -> None:
        self.sent.append((None, msgpack.unpackb(payload)))


def _from_peer(kind: int, *fields: Any) -> Message:
    """A frame as a peer may send it, decoded as the node does."""
    return decode(msgpack.packb([kind, *fields], use_bin_type=True))


def _fetcher(holds: list[Transaction]) -> tuple[TxFetcher, Network]:
    network = Network()
    held = {tx.hash: tx for tx in holds}
    return TxFetcher(network, held.get, GENESIS.chain_id, run_blocking=_inline), network


def test_a_peer_answers_with_the_asked_transactions_it_holds() -> None:
    txs = _txs(4)
    fetcher, network = _fetcher(txs[:3])
    fetcher.on_get_txs(b"p" * 32, _from_peer(GET_TXS, [txs[0].hash, txs[3].hash, "junk", txs[2].hash]))  # type: ignore[arg-type]
    assert network.sent == [(b"p" * 32, [FOUND_TXS, [txs[0].raw, txs[2].raw]])]
    fetcher.on_get_txs(b"p" * 32, _from_peer(GET_TXS, [txs[3].hash]))  # type: ignore[arg-type]
    with pytest.raises(FrameError):
        _from_peer(GET_TXS, "not a list")
    assert len(network.sent) == 1  # nothing held: no answer


async def test_fetch_asks_every_peer_and_keeps_only_what_it_asked_for(autojump_clock: Any) -> None:
    txs = _txs(3)
    fetcher, network = _fetcher([])
    async with trio.open_nursery() as nursery:
        async def answer() -> None:
            await trio.sleep(0.01)
            fetcher.on_found_txs(b"p" * 32, _from_peer(FOUND_TXS, [txs[2].raw, b"junk", 7]))  # type: ignore[arg-type]
            fetcher.on_found_txs(b"q" * 32, FoundTxs((txs[0].raw, txs[1].raw)))

        nursery.start_soon(answer)
        found = await fetcher.fetch([txs[0].hash, txs[1].hash])
    assert network.sent == [(None, [GET_TXS, [txs[0].hash, txs[1].hash]])]
    assert found == {txs[0].hash: txs[0], txs[1].hash: txs[1]}
    assert trio.current_time() < FETCH_TIMEOUT_S  # answered: no waiting for the deadline


async def test_fetch_gives_up_at_its_deadline_with_what_came(autojump_clock: Any) -> None:
    txs = _txs(2)
    fetcher, _ = _fetcher([])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _answer_later(fetcher, txs[0].raw))
        found = await fetcher.fetch([txs[0].hash, txs[1].hash])
    assert found == {txs[0].hash: txs[0]}
    assert trio.current_time() >= FETCH_TIMEOUT_S
    assert await fetcher.fetch([]) == {}


async def test_a_broken_copy_answered_first_does_not_stop_a_good_one(autojump_clock: Any) -> None:
    [tx] = _txs(1)
    broken = bytearray(tx.raw)
    broken[-1] ^= 1  # same hash (the signature is not hashed), bad signature
    fetcher, _ = _fetcher([])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _answer_later(fetcher, bytes(broken)))
        nursery.start_soon(lambda: _answer_later(fetcher, tx.raw, delay_s=0.02))
        assert await fetcher.fetch([tx.hash]) == {tx.hash: tx}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _answer_later(fetcher, bytes(broken)))
        assert await fetcher.fetch([tx.hash]) == {}


async def test_copies_from_every_peer_are_checked_one_at_a_time(autojump_clock: Any) -> None:
    txs = _txs(2)
    broken = bytearray(txs[0].raw)
    broken[-1] ^= 1
    fetcher, _ = _fetcher([])
    checked: list[int] = []

    async def counting(fn: Any, raws: list[bytes]) -> Any:
        checked.append(len(raws))
        return fn(raws)

    fetcher.run_blocking = counting
    answers = [bytes(broken), txs[1].raw, txs[0].raw, txs[1].raw, txs[0].raw]  # three peers' copies at once
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: _answer_later(fetcher, *answers))
        found = await fetcher.fetch([tx.hash for tx in txs])
    assert found == {tx.hash: tx for tx in txs}
    assert checked == [2, 1]  # one copy of each, then a spare of the one whose copy was broken


async def _answer_later(fetcher: TxFetcher, *raws: bytes, delay_s: float = 0.01) -> None:
    await trio.sleep(delay_s)
    fetcher.on_found_txs(b"p" * 32, FoundTxs(raws))


def _held(driver: Driver, txs: list[Transaction]) -> None:
    for tx in txs:
        driver.mempool.add(tx, from_peer=True)


async def _validate(driver: Driver, body: bytes, candidate: Candidate) -> bool:
    [verdict] = await driver._carry_out(ValidateBlock(1, 0, body, candidate.block_hash))
    assert isinstance(verdict, BlockValidated)
    return verdict.valid


async def test_a_validation_asked_for_a_height_the_replica_left_is_not_carried_out(driver: Driver) -> None:
    # One output of the replica may ask to validate a height and then decide it: its validators are forgotten.
    candidate = _proposal(_txs(1))
    assert await driver._carry_out(ValidateBlock(driver.replica.height - 1, 0, b"", candidate.block_hash)) == []


async def test_a_proposal_by_hash_is_validated_from_the_mempool_without_fetching(
    driver: Driver, fetcher: Fetcher
) -> None:
    txs = _txs(6)
    candidate = _proposal(txs)
    body = proposal_body(candidate, inline=lambda tx_hash: tx_hash == txs[5].hash)
    assert len(body) < len(candidate.block.encode()) - 4 * 100  # five of six items are 32-byte hashes
    _held(driver, txs[:5])  # the sixth is carried whole
    assert await _validate(driver, body, candidate)
    assert fetcher.asked == []


async def test_transactions_a_validator_lacks_are_fetched_and_checked(driver: Driver, fetcher: Fetcher) -> None:
    txs = _txs(6)
    candidate = _proposal(txs)
    body = proposal_body(candidate, inline=lambda tx_hash: False)
    _held(driver, txs[:2])
    _holding(fetcher, txs)
    assert await _validate(driver, body, candidate)
    assert fetcher.asked == [[tx.hash for tx in txs[2:]]]


async def test_a_proposal_whose_transactions_nobody_sends_is_not_prepared(driver: Driver, fetcher: Fetcher) -> None:
    txs = _txs(3)
    candidate = _proposal(txs)
    _held(driver, txs[:2])
    _holding(fetcher, txs[:2])
    assert not await _validate(driver, proposal_body(candidate, inline=lambda tx_hash: False), candidate)


async def test_a_fetched_transaction_committed_before_is_a_duplicate(driver: Driver) -> None:
    old, new = _txs(2)
    first = _proposal([old])
    await driver._carry_out(CommitBlock(1, first.block.encode(), first.block_hash, ()))
    proposer = bytes(KEYS[2].verify_key)  # height 2, round 0
    fetched = {tx.hash: tx for tx in (old, new)}  # a peer still had the old one

    def check(txs: list[Transaction]) -> Candidate:
        candidate = build_block(Ledger(driver.ledger.store, GENESIS), txs, proposer, 2_000)
        header, items = parse_body(proposal_body(candidate, inline=lambda tx_hash: False))
        vouch = Proposed(candidate.block_hash, frozenset([proposer]), 2_000)
        return check_block(driver.ledger, header, items, vouch, driver.mempool.get, fetched)

    with pytest.raises(BlockInvalid, match=f"tx {old.hash.hex()} is a duplicate"):
        check([old, new])
    assert check([new]).txs == [new]


async def test_a_committed_block_with_missing_transactions_waits_for_catch_up(
    driver: Driver, fetcher: Fetcher, sync_asked: SyncAsked
) -> None:
    txs = _txs(3)
    candidate = _proposal(txs)
    body = proposal_body(candidate, inline=lambda tx_hash: False)
    assert await driver._carry_out(CommitBlock(1, body, candidate.block_hash, ())) == []
    assert driver.ledger.height == 0 and sync_asked.times == 1

    _holding(fetcher, txs)
    await driver._carry_out(CommitBlock(1, body, candidate.block_hash, ()))
    assert driver.ledger.height == 1 and driver.ledger.last_hash == candidate.block_hash
    assert driver.ledger.block(1) == candidate.block


async def test_a_body_with_every_transaction_inline_is_the_block_encoding(driver: Driver) -> None:
    candidate = _proposal(_txs(4))
    assert proposal_body(candidate, inline=lambda tx_hash: True) == candidate.block.encode()
    assert await _validate(driver, candidate.block.encode(), candidate)


async def test_transactions_of_the_last_committed_blocks_stay_at_hand_for_peers(
    driver: Driver, fetcher: Fetcher
) -> None:
    txs = _txs(3)
    candidate = _proposal(txs)
    _holding(fetcher, txs)
    await driver._carry_out(CommitBlock(1, candidate.block.encode(), candidate.block_hash, ()))
    assert driver.ledger.height == 1 and len(driver.mempool) == 0
    assert [driver.pipeline.held_tx(tx.hash) for tx in txs] == txs
    assert driver.pipeline.held_tx(bytes(32)) is None
