"""The trio driver around the real consensus core, over the in-memory store, on trio's mock clock."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing
from nacl.signing import SigningKey

from consensus.config import ReplicaConfig
from consensus.events import Event, MessageReceived, TimeoutFired, TransactionsPending
from consensus.replica import Replica
from consensus.safety_state import decode_safety
from node.chain.crypto import NodeCrypto
from node.chain.genesis import Genesis
from node.chain.ledger import Ledger
from node.chain.membership import Member
from node.chain.tx import Transaction, sign_tx
from node.ops.metrics import Metrics
from node.pipeline.driver import INLINE_TXS_MAX, PEER_EVENTS_QUEUED_MAX, Driver, Inbox, Wakeup
from node.txpool.mempool import Mempool
from storage.chain import ChainStore
from storage.memory import MemoryStore
from tests.shell.chainkit import Peers, driver_over, submit

ROUND_TIMEOUT_MS = 1000


@dataclass
class Harness:
    driver: Driver
    peers: Peers
    ledger: Ledger
    store: MemoryStore
    client: SigningKey
    chain_id: str

    def tx(self, key: str) -> Transaction:
        return sign_tx(self.client, self.chain_id, "kv", "put", {"key": key, "value": b"v"}, secrets.randbits(64))


def _genesis(validators: list[SigningKey], client: SigningKey) -> Genesis:
    members = tuple(Member(f"v{i}", bytes(k.verify_key), "") for i, k in enumerate(validators))
    return Genesis("shell-test", 0, members, (Member("c", bytes(client.verify_key)),), ())


async def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def _harness(nursery: trio.Nursery, validators: int) -> Harness:
    keys = [SigningKey.generate() for _ in range(validators)]
    client = SigningKey.generate()
    genesis = _genesis(keys, client)
    store = MemoryStore()
    ledger = Ledger(ChainStore(store), genesis)
    config = ReplicaConfig("shell-test", tuple(bytes(k.verify_key) for k in keys), round_timeout_ms=ROUND_TIMEOUT_MS)
    replica = Replica(config, NodeCrypto(keys[0]), ledger.height + 1)
    peers = Peers()
    driver = driver_over(replica, ledger, peers=peers, run_blocking=_inline)
    await nursery.start(driver.run)
    return Harness(driver, peers, ledger, store, client, "shell-test")


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


async def test_single_validator_commits_submitted_transactions(nursery: trio.Nursery) -> None:
    h = await _harness(nursery, validators=1)
    txs = [h.tx(f"k{i}") for i in range(25)]
    for tx in txs:
        submit(h.driver, tx)
    for tx in txs:
        assert await h.driver.wait_committed(tx.hash, timeout_s=5)
    assert h.ledger.height >= 3  # 25 txs with at most 10 per block
    assert len(h.driver.mempool) == 0
    h.store.crash()  # every block was written with sync: nothing is lost
    reopened = Ledger(ChainStore(h.store), h.ledger.genesis)
    assert all(reopened.tx_entry(tx.hash) is not None for tx in txs)


async def test_idle_chain_makes_no_blocks(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    h = await _harness(nursery, validators=1)
    await trio.sleep(3600)
    assert h.ledger.height == 0
    assert h.driver.replica.round == 0


async def test_wait_committed_times_out_without_quorum(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await _harness(nursery, validators=4)
    tx = h.tx("stuck")
    submit(h.driver, tx)
    assert not await h.driver.wait_committed(tx.hash, timeout_s=0.5)
    assert tx.hash in h.driver.mempool


async def test_lone_validator_changes_round_once_and_repeats_its_round_change(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await _harness(nursery, validators=4)
    submit(h.driver, h.tx("pending"))
    # Round 0 times out after 1 s; nobody else is there, so it stays in round 1 and repeats itself.
    await trio.sleep(7 * ROUND_TIMEOUT_MS / 1000 + 0.1)
    assert h.driver.replica.round == 1
    saved = h.ledger.store.load_safety()
    assert saved is not None and decode_safety(saved).round == 1
    sent = h.peers.broadcasts
    assert len(sent) >= 3 and all(s == sent[0] for s in sent)
    metrics = h.driver.metrics.render().decode()
    assert 'alliance_consensus_view_changes_total{reason="timeout"} 1.0' in metrics  # its round timer expired


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)



# ---- the inbox and its wakeups ----------------------------------------------------------------


def _queued(inbox: Inbox) -> list[Event]:
    events: list[Event] = []
    while True:
        try:
            events.append(inbox.events.receive_nowait())
        except trio.WouldBlock:
            return events


def test_the_inbox_drops_peers_messages_beyond_its_bound_and_never_the_nodes_own_events() -> None:
    metrics = Metrics()
    inbox = Inbox(Mempool(10), metrics)
    from_peer = MessageReceived(None)  # type: ignore[arg-type]  # the inbox never looks inside
    for _ in range(PEER_EVENTS_QUEUED_MAX + 3):
        inbox.feed(from_peer)
    inbox.feed(TimeoutFired(1, 0))
    queued = _queued(inbox)
    assert queued == [from_peer] * PEER_EVENTS_QUEUED_MAX + [TimeoutFired(1, 0)]
    dropped = metrics.registry.get_sample_value("alliance_consensus_messages_dropped_total", {"reason": "queue_full"})
    assert dropped == 3


def test_pending_transactions_tell_the_core_once_and_count_the_mempool() -> None:
    client = SigningKey.generate()
    mempool, metrics = Mempool(10), Metrics()
    inbox = Inbox(mempool, metrics)
    for key in ("a", "b"):
        mempool.add(sign_tx(client, "shell-test", "kv", "put", {"key": key, "value": b"v"}, secrets.randbits(64)))
        inbox.transactions_pending()
    assert _queued(inbox) == [TransactionsPending()]
    assert metrics.registry.get_sample_value("alliance_mempool_txs") == 2


async def test_a_wakeup_set_several_times_before_its_wait_wakes_it_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    wakeup = Wakeup()
    wakeup.set()
    wakeup.set()
    await wakeup.wait()
    with trio.move_on_after(1) as waiting:
        await wakeup.wait()
    assert waiting.cancelled_caught


async def test_small_blocks_are_worked_on_the_loop_and_large_ones_in_a_worker(nursery: trio.Nursery) -> None:
    client, key = SigningKey.generate(), SigningKey.generate()
    ledger = Ledger(ChainStore(MemoryStore()), _genesis([key], client))
    replica = Replica(ReplicaConfig("shell-test", (bytes(key.verify_key),), round_timeout_ms=ROUND_TIMEOUT_MS),
                      NodeCrypto(key), 1)
    off_loop: list[str] = []

    async def worker(fn: Callable[..., Any], *args: Any) -> Any:
        off_loop.append(fn.__name__)
        return fn(*args)

    driver = driver_over(replica, ledger, block_txs_max=1000, run_blocking=worker)
    await nursery.start(driver.run)
    h = Harness(driver, Peers(), ledger, MemoryStore(), client, "shell-test")

    async def commit(count: int) -> None:
        txs = [h.tx(secrets.token_hex(8)) for _ in range(count)]
        for tx in txs:
            submit(driver, tx)
        for tx in txs:
            assert await driver.wait_committed(tx.hash, timeout_s=5)

    await commit(3)
    assert off_loop == []  # a thread's hop would cost more than building and writing three transactions
    await commit(INLINE_TXS_MAX + 1)
    assert "build" in off_loop and "commit" in off_loop
