"""Transaction gossip: admitting what peers send, batching what clients submitted."""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from node.chain.ledger import Ledger
from node.chain.tx import Transaction, sign_tx
from node.p2p.gossip import GOSSIP_BATCH_TXS_MAX, GOSSIP_INTERVAL_S, TxGossip
from node.p2p.wire import TXS, FrameError, Txs, decode
from node.pipeline.driver import Driver
from node.txpool.admission import Admission
from node.txpool.verifier import Verifier
from tests.shell.chainkit import Consortium, build, consortium, driver_for, wait_until

Autojump = trio.testing.MockClock
PEER = b"\x05" * 32


class RecordingNetwork:
    def __init__(self) -> None:
        self.broadcasts: list[list[Any]] = []
        self.sent: list[tuple[bytes, bytes]] = []

    def broadcast_to_validators(self, payload: bytes) -> None:
        self.broadcasts.append(msgpack.unpackb(payload, raw=False))

    def send(self, peer: bytes, payload: bytes) -> None:
        self.sent.append((peer, payload))

    def connected(self, peer: bytes) -> bool:
        return True


@dataclass
class Setup:
    c: Consortium
    driver: Driver
    gossip: TxGossip
    outbox: RecordingNetwork

    @property
    def mempool_hashes(self) -> list[bytes]:
        return [tx.hash for tx in self.driver.mempool.oldest(10**6)]

    def mempool_full_count(self) -> float:
        registry = self.gossip.metrics.registry
        return registry.get_sample_value("alliance_txs_rejected_total", {"reason": "mempool_full"}) or 0.0

    async def receive(self, fields: list[Any], peer: bytes = PEER) -> None:
        """Hands a TXS frame's fields to gossip and waits until it has been dealt with.

        Admission may verify signatures off the event loop, so a fresh valid
        transaction sent after the frame is the sign that the frame was handled
        (the mempool must have room for it).
        """
        try:
            await _call(self.gossip.on_txs, peer, decode(msgpack.packb([TXS, *fields], use_bin_type=True)))
        except FrameError:
            pass  # dropped before gossip sees it
        marker = self.c.tx("marker")
        await _call(self.gossip.on_txs, peer, Txs((marker.raw,)))
        await wait_until(lambda: marker.hash in self.driver.mempool)
        self.driver.mempool.remove([marker.hash])


async def _call(fn: Callable[..., Any], *args: Any) -> None:
    result = fn(*args)
    if inspect.isawaitable(result):
        await result


def _admission(c: Consortium, ledger: Ledger, driver: Driver) -> Admission:
    return Admission(c.genesis, ledger, driver.mempool, Verifier(ledger, driver.mempool), driver.inbox)


def _setup(mempool_txs_max: int = 100) -> Setup:
    c = consortium(validators=1, chain_id="gossip-test")
    ledger = c.ledger()
    driver = driver_for(c, ledger, 0, mempool_txs_max=mempool_txs_max)
    network = RecordingNetwork()
    admission = _admission(c, ledger, driver)
    gossip = TxGossip(network, admission, driver.metrics)
    return Setup(c, driver, gossip, network)


@asynccontextmanager
async def _running(mempool_txs_max: int = 100) -> AsyncIterator[Setup]:
    """A gossip loop and the signature verifier running."""
    s = _setup(mempool_txs_max)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(s.gossip.admission.verifier.run)
        nursery.start_soon(s.gossip.run)
        yield s
        nursery.cancel_scope.cancel()


@pytest.fixture
async def running() -> AsyncIterator[Setup]:
    """Tests using it take `autojump_clock` themselves when they want virtual time (pytest-trio
    only picks up a clock that is a direct argument of the test)."""
    async with _running(mempool_txs_max=10_000) as s:
        yield s


def _forged(tx: Transaction) -> bytes:
    return tx.raw[:-1] + bytes([tx.raw[-1] ^ 1])


# ---- on_txs: what peers send ------------------------------------------------------------------


async def test_valid_transactions_from_a_peer_enter_the_mempool_in_order(running: Setup) -> None:
    txs = [running.c.tx(f"k{i}") for i in range(5)]
    await running.receive([[tx.raw for tx in txs]])
    assert running.mempool_hashes == [tx.hash for tx in txs]


async def test_duplicates_are_admitted_once(running: Setup) -> None:
    a, b = running.c.tx("a"), running.c.tx("b")
    await running.receive([[a.raw, a.raw, b.raw]])
    await running.receive([[b.raw, a.raw]], peer=b"\x06" * 32)
    assert running.mempool_hashes == [a.hash, b.hash]


async def test_transactions_already_committed_are_ignored(running: Setup) -> None:
    ledger = running.driver.ledger
    done = running.c.tx("done")
    candidate = build(running.c, ledger, [done])
    ledger.commit(candidate.block, candidate.txs, candidate.execution, running.c.seal(candidate.block_hash))
    await running.receive([[done.raw]])
    assert running.mempool_hashes == []


async def test_bad_entries_are_skipped_and_the_good_ones_around_them_admitted(running: Setup) -> None:
    c = running.c
    good = [c.tx(f"good{i}") for i in range(3)]
    bad: list[Any] = [
        _forged(c.tx("forged")),  # bad signature
        c.tx("intruder", signer=SigningKey.generate()).raw,  # unauthorised sender
        sign_tx(c.client, "other-chain", "kv", "put", {"key": "x", "value": b"v"}, 1).raw,
        b"\xc1",
        b"",
        b"\x00" * 70_000,  # oversize
        "not bytes",
        42,
        None,
        [good[0].raw],
        {"raw": good[0].raw},
    ]
    await running.receive([[good[0].raw, *bad[:6], good[1].raw, *bad[6:], good[2].raw]])
    assert running.mempool_hashes == [tx.hash for tx in good]
    assert running.mempool_full_count() == 0


async def test_a_forged_signature_is_refused(running: Setup) -> None:
    await running.receive([[_forged(running.c.tx("forged"))]])
    assert running.mempool_hashes == []


@pytest.mark.parametrize("fields", [[], [b"raw"], ["x"], [None], [{"a": 1}], [42]])
async def test_fields_that_are_not_a_list_of_transactions_are_ignored(running: Setup, fields: list[Any]) -> None:
    await running.receive(fields)
    assert running.mempool_hashes == []


async def test_admission_stops_at_twice_the_client_limit_and_counts_it_once() -> None:
    async with _running(mempool_txs_max=3) as s:
        txs = [s.c.tx(f"k{i}") for i in range(9)]
        await _call(s.gossip.on_txs, PEER, Txs(tuple(tx.raw for tx in txs)))
        await wait_until(lambda: s.mempool_full_count() > 0)
        await trio.testing.wait_all_tasks_blocked()
        assert s.mempool_hashes == [tx.hash for tx in txs[:6]]  # peers' transactions may fill 2 x txs_max
        assert s.mempool_full_count() == 1  # the rest of the batch is not tried


async def test_transactions_from_peers_are_not_relayed(running: Setup) -> None:
    await running.receive([[running.c.tx("a").raw]])
    assert len(running.mempool_hashes) == 1
    assert running.gossip._outgoing == [] and not running.gossip._wake.is_set()  # nothing queued to send
    assert running.outbox.broadcasts == [] and running.outbox.sent == []


def _receive_in_fresh_node(fields: list[Any]) -> list[bytes]:
    async def scenario() -> list[bytes]:
        async with _running() as s:
            await s.receive(fields)
            return s.mempool_hashes

    return trio.run(scenario)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=80) | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=12,
    )
)
def test_on_txs_never_raises_on_arbitrary_fields(fields: Any) -> None:
    assert _receive_in_fresh_node(fields if isinstance(fields, list) else [fields]) == []


_values = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=70) | st.text(max_size=10)


@settings(max_examples=100, deadline=None)
@given(st.lists(_values | st.dictionaries(st.text(max_size=5), _values, max_size=3), min_size=6, max_size=9))
def test_on_txs_never_raises_on_transaction_shaped_garbage(fields: list[Any]) -> None:
    """Arrays of about a transaction's length, with any element types, reach decode_tx's checks."""
    raw = msgpack.packb([1, "gossip-test", *fields[2:]], use_bin_type=True)
    assert _receive_in_fresh_node([[raw, msgpack.packb(fields, use_bin_type=True)]]) == []


# ---- announce and the gossip loop -----------------------------------------------------------


def _frames(s: Setup) -> list[list[bytes]]:
    assert all(frame[0] == TXS and len(frame) == 2 for frame in s.outbox.broadcasts)
    return [frame[1] for frame in s.outbox.broadcasts]


async def _settle() -> None:
    """Lets the gossip loop finish whatever an announce started (virtual time)."""
    await trio.sleep(GOSSIP_INTERVAL_S * 10)
    await trio.testing.wait_all_tasks_blocked()


async def test_nothing_is_sent_without_announcements(running: Setup, autojump_clock: Autojump) -> None:
    await trio.sleep(60)
    assert running.outbox.broadcasts == []


async def test_a_burst_of_announcements_makes_one_frame(running: Setup, autojump_clock: Autojump) -> None:
    txs = [running.c.tx(f"k{i}") for i in range(100)]
    for tx in txs:
        running.gossip.announce(tx)
    await _settle()
    assert _frames(running) == [[tx.raw for tx in txs]]


async def test_announcements_within_one_interval_of_a_frame_share_the_next(
    running: Setup, autojump_clock: Autojump
) -> None:
    first, second, third = running.c.tx("first"), running.c.tx("second"), running.c.tx("third")
    running.gossip.announce(first)
    await trio.sleep(GOSSIP_INTERVAL_S / 4)
    running.gossip.announce(second)
    await trio.sleep(GOSSIP_INTERVAL_S / 4)
    running.gossip.announce(third)
    await _settle()
    assert _frames(running) == [[first.raw], [second.raw, third.raw]]


async def test_announcements_after_a_quiet_interval_go_at_once(running: Setup, autojump_clock: Autojump) -> None:
    first, second = running.c.tx("first"), running.c.tx("second")
    running.gossip.announce(first)
    await _settle()
    running.gossip.announce(second)
    await trio.testing.wait_all_tasks_blocked()
    assert _frames(running) == [[first.raw], [second.raw]]


async def test_a_frame_goes_one_interval_after_the_last_one_while_announcements_keep_coming(
    running: Setup, autojump_clock: Autojump
) -> None:
    running.gossip.announce(running.c.tx("t"))
    await trio.testing.wait_all_tasks_blocked()
    assert len(running.outbox.broadcasts) == 1  # after a quiet spell: at once, without waiting
    first_at = trio.current_time()
    running.gossip.announce(running.c.tx("u"))
    while len(running.outbox.broadcasts) == 1:
        await trio.sleep(GOSSIP_INTERVAL_S / 100)
    assert trio.current_time() - first_at == pytest.approx(GOSSIP_INTERVAL_S, abs=GOSSIP_INTERVAL_S / 50)


async def test_a_large_burst_is_split_into_bounded_frames_in_order(running: Setup, autojump_clock: Autojump) -> None:
    count = 2 * GOSSIP_BATCH_TXS_MAX + 7
    txs = [running.c.tx(f"k{i}") for i in range(count)]
    for tx in txs:
        running.gossip.announce(tx)
    await _settle()
    frames = _frames(running)
    assert len(frames) == math.ceil(count / GOSSIP_BATCH_TXS_MAX)
    assert all(len(f) <= GOSSIP_BATCH_TXS_MAX for f in frames)
    assert [raw for f in frames for raw in f] == [tx.raw for tx in txs]

