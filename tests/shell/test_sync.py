"""Catch-up: checking committed blocks from peers, and the Syncer over an in-memory network."""

from __future__ import annotations

import itertools
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from node.chain.block import decode_block
from node.chain.block_check import check_synced_block
from node.chain.candidate import BlockInvalid
from node.chain.ledger import Ledger
from node.chain.proposal import BLOCK_TX_BYTES_MAX
from node.chain.tx import Transaction, sign_tx
from node.p2p import sync
from node.p2p.sync import RESPONSE_BYTES_MAX, HeightAnnouncer, Syncer
from node.p2p.transport import FRAME_BYTES_MAX
from node.p2p.wire import BLOCKS, GET_BLOCKS, STATUS, Blocks, FrameError, GetBlocks, Message, Status, decode
from node.pipeline.driver import Wakeup
from tests.shell.chainkit import (
    Consortium,
    build,
    consortium,
    driver_for,
    grow,
    raw_block,
    reheader,
    sealed,
    wait_until,
)
from tests.shell.membership_chain import Applier, change, governed, pub
from tests.shell.membership_chain import grow as grow_governed

SOURCE_BLOCKS = 5
_pad_nonces = itertools.count(10**9)


@pytest.fixture
def c() -> Consortium:
    return consortium(validators=4)


@pytest.fixture
def source(c: Consortium) -> Ledger:
    ledger = c.ledger()
    grow(c, ledger, SOURCE_BLOCKS)
    return ledger


def _apply(c: Consortium, ledger: Ledger, block: bytes, certificate: bytes) -> None:
    checked = check_synced_block(ledger, block, certificate)
    assert checked is not None
    candidate, seals = checked
    ledger.commit(candidate.block, candidate.txs, candidate.execution, seals)


def _refused(c: Consortium, ledger: Ledger, block: bytes, certificate: bytes, words: str) -> None:
    height = ledger.height
    with pytest.raises(BlockInvalid, match=words):
        check_synced_block(ledger, block, certificate)
    assert ledger.height == height


# ---- check_synced_block -------------------------------------------------------------------


def test_sealed_blocks_are_accepted_in_order_and_give_the_same_chain(c: Consortium, source: Ledger) -> None:
    fresh = c.ledger()
    for height in range(1, SOURCE_BLOCKS + 1):
        _apply(c, fresh, *raw_block(source, height))
    assert fresh.height == SOURCE_BLOCKS
    assert fresh.last_hash == source.last_hash and fresh.state_root == source.state_root
    for height in range(1, SOURCE_BLOCKS + 1):
        assert raw_block(fresh, height) == raw_block(source, height)


def test_too_few_seals_are_refused(c: Consortium, source: Ledger) -> None:
    block = decode_block(raw_block(source, 1)[0])
    _refused(c, c.ledger(), *sealed(c, block, c.keys[:2]), "certificate")


def test_a_full_quorum_of_seals_is_enough(c: Consortium, source: Ledger) -> None:
    block = decode_block(raw_block(source, 1)[0])
    _apply(c, c.ledger(), *sealed(c, block, c.keys[1:4]))


def test_seals_by_non_validators_are_refused(c: Consortium, source: Ledger) -> None:
    outsiders = consortium(validators=4).keys
    block = decode_block(raw_block(source, 1)[0])
    _refused(c, c.ledger(), *sealed(c, block, outsiders), "certificate")


def test_non_validator_seals_do_not_make_up_a_missing_quorum(c: Consortium, source: Ledger) -> None:
    outsider = consortium(validators=1).keys[0]
    block = decode_block(raw_block(source, 1)[0])
    _refused(c, c.ledger(), *sealed(c, block, [c.keys[0], c.keys[1], outsider]), "certificate")


def test_duplicate_seals_from_one_validator_count_once(c: Consortium, source: Ledger) -> None:
    block = decode_block(raw_block(source, 1)[0])
    _refused(c, c.ledger(), *sealed(c, block, [c.keys[0], c.keys[0], c.keys[1]]), "certificate")
    _apply(c, c.ledger(), *sealed(c, block, [c.keys[0], c.keys[0], c.keys[1], c.keys[2]]))


def test_seals_over_another_block_are_refused(c: Consortium, source: Ledger) -> None:
    block_1, _ = raw_block(source, 1)
    _, certificate_2 = raw_block(source, 2)
    _refused(c, c.ledger(), block_1, certificate_2, "certificate")


def test_a_skipped_height_is_refused(c: Consortium, source: Ledger) -> None:
    _refused(c, c.ledger(), *raw_block(source, 2), "does not extend")


def test_a_block_already_held_is_not_applied_again(c: Consortium, source: Ledger) -> None:
    fresh = c.ledger()
    _apply(c, fresh, *raw_block(source, 1))
    try:  # refused, or None: "consensus got there first"
        assert check_synced_block(fresh, *raw_block(source, 1)) is None
    except BlockInvalid as exc:
        assert "does not extend" in str(exc)
    assert fresh.height == 1


def test_a_sealed_block_on_another_parent_is_refused(c: Consortium, source: Ledger) -> None:
    fork = c.ledger()
    grow(c, fork, 2)  # another block 1, so fork's block 2 has another prev_hash
    fresh = c.ledger()
    _apply(c, fresh, *raw_block(source, 1))
    _refused(c, fresh, *raw_block(fork, 2), "does not extend")


def test_a_block_with_a_forged_prev_hash_is_refused_even_when_sealed(c: Consortium, source: Ledger) -> None:
    block = reheader(decode_block(raw_block(source, 1)[0]), prev_hash=b"\x01" * 32)
    _refused(c, c.ledger(), *sealed(c, block), "does not extend")


def test_a_tampered_tx_list_is_refused(c: Consortium, source: Ledger) -> None:
    raw, certificate = raw_block(source, 1)
    block = decode_block(raw)
    swapped = type(block)(block.header, (c.tx("other").raw, *block.txs[1:]))
    assert swapped.header.hash() == block.header.hash()  # the certificate still matches the header
    _refused(c, c.ledger(), swapped.encode(), certificate, "tx_root")
    dropped = type(block)(block.header, block.txs[:1])
    _refused(c, c.ledger(), dropped.encode(), certificate, "tx_count")


def test_a_sealed_header_with_a_wrong_state_root_is_refused(c: Consortium, source: Ledger) -> None:
    block = reheader(decode_block(raw_block(source, 1)[0]), state_root=b"\x02" * 32)
    _refused(c, c.ledger(), *sealed(c, block), "state_root")


def test_a_sealed_header_over_other_transactions_is_refused(c: Consortium) -> None:
    fresh = c.ledger()
    candidate = build(c, fresh, [c.tx("a"), c.tx("b")])
    other = type(candidate.block)(candidate.block.header, (c.tx("c").raw, c.tx("d").raw))
    _refused(c, fresh, *sealed(c, other), "tx_root")


@pytest.mark.parametrize("block, certificate", [(b"\xc1", None), (None, b"\xc1"), (b"\x90", None), (None, b"\x91\x01")])
def test_undecodable_blocks_and_certificates_are_refused(
    c: Consortium, source: Ledger, block: bytes | None, certificate: bytes | None
) -> None:
    good_block, good_certificate = raw_block(source, 1)
    _refused(c, c.ledger(), block or good_block, certificate or good_certificate, "undecodable")


# ---- an in-memory peer network -----------------------------------------------------------


def encode_frame(kind: int, *fields: Any) -> bytes:
    """A frame as a peer may send it, well-formed or not."""
    return msgpack.packb([kind, *fields], use_bin_type=True)  # type: ignore[no-any-return]


class Hub:
    """Delivers frames between FakeNetworks in order, asynchronously, like sessions do."""

    def __init__(self) -> None:
        self.nets: dict[bytes, FakeNetwork] = {}
        self.frames: list[tuple[bytes, bytes, list[Any]]] = []
        self._in, self._out = trio.open_memory_channel[tuple[bytes, bytes, bytes]](math.inf)

    async def deliver(self) -> None:
        async for sender, receiver, payload in self._out:
            self.frames.append((sender, receiver, msgpack.unpackb(payload, raw=False)))
            try:
                message = decode(payload)
            except FrameError:
                continue  # PeerNetwork drops it (counted)
            self.nets[receiver].handler(sender, message)


class FakeNetwork:
    """What Syncer uses of PeerNetwork: connected, send, broadcast."""

    def __init__(self, hub: Hub, me: bytes) -> None:
        self.hub, self.me = hub, me
        self.handler: Callable[[bytes, Message], None] = lambda peer, message: None
        hub.nets[me] = self

    def connected(self, peer: bytes) -> bool:
        return peer != self.me and peer in self.hub.nets

    def send(self, peer: bytes, payload: bytes) -> None:
        if self.connected(peer):
            self.hub._in.send_nowait((self.me, peer, payload))

    def broadcast(self, payload: bytes) -> None:
        for peer in list(self.hub.nets):
            self.send(peer, payload)


def _ignore_damage(exc: Exception) -> None:
    """The stores of these tests are whole, except where a test watches for damage itself."""


def _route(net: FakeNetwork, handlers: dict[type, Callable[[bytes, Any], None]]) -> None:
    net.handler = lambda peer, message: handlers[type(message)](peer, message) if type(message) in handlers else None


def _serve_blocks(hub: Hub, c: Consortium, ledger: Ledger, index: int) -> HeightAnnouncer:
    """A peer that holds `ledger` and answers GET_BLOCKS from it; it tells its height through what it returns."""
    net = FakeNetwork(hub, c.validators[index])
    syncer = Syncer(ledger, net, None, Wakeup(), _ignore_damage)  # type: ignore[arg-type]  # never fetches
    _route(net, {GetBlocks: syncer.on_get_blocks})
    return HeightAnnouncer(ledger, net)  # type: ignore[arg-type]


def _answering(hub: Hub, me: bytes, answer: Callable[[GetBlocks], list[Any] | None]) -> FakeNetwork:
    """A peer whose answer to GET_BLOCKS is `answer(request)` (None: it stays silent)."""
    net = FakeNetwork(hub, me)

    def on_get_blocks(peer: bytes, request: GetBlocks) -> None:
        items = answer(request)
        if items is not None:
            net.send(peer, encode_frame(BLOCKS, items))

    _route(net, {GetBlocks: on_get_blocks})
    return net


async def _fresh(nursery: trio.Nursery, hub: Hub, c: Consortium, index: int = 3) -> Syncer:
    """A validator with an empty ledger, its Driver and Syncer running."""
    ledger = c.ledger()
    wanted = Wakeup()
    driver = driver_for(c, ledger, index, sync_wanted=wanted)
    await nursery.start(driver.run)
    net = FakeNetwork(hub, c.validators[index])
    syncer = Syncer(ledger, net, driver, wanted, _ignore_damage)  # type: ignore[arg-type]
    _route(net, {Status: syncer.on_status, Blocks: syncer.on_blocks})
    nursery.start_soon(syncer.run)
    return syncer


def _requests(hub: Hub, sender: bytes) -> list[list[Any]]:
    return [frame for s, _, frame in hub.frames if s == sender and frame[0] == GET_BLOCKS]


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    hub = Hub()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(hub.deliver)
        yield hub
        nursery.cancel_scope.cancel()


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


# ---- the Syncer end to end ------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, sync.BLOCKS_PER_REQUEST])
async def test_fresh_validator_catches_up_with_identical_blocks(
    c: Consortium, source: Ledger, hub: Hub, nursery: trio.Nursery, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync, "BLOCKS_PER_REQUEST", batch)
    server = _serve_blocks(hub, c, source, 0)
    fresh = await _fresh(nursery, hub, c)
    assert not fresh.syncing
    server.announce()
    await wait_until(lambda: fresh.ledger.height == SOURCE_BLOCKS)
    for height in range(1, SOURCE_BLOCKS + 1):
        assert raw_block(fresh.ledger, height) == raw_block(source, height)
    assert not fresh.syncing
    await wait_until(lambda: fresh.driver.replica.height == SOURCE_BLOCKS + 1)  # consensus follows the ledger
    assert len(_requests(hub, c.validators[3])) == math.ceil(SOURCE_BLOCKS / batch)


async def test_fresh_validator_follows_a_peer_that_keeps_committing(
    c: Consortium, source: Ledger, hub: Hub, nursery: trio.Nursery
) -> None:
    server = _serve_blocks(hub, c, source, 0)
    fresh = await _fresh(nursery, hub, c)
    server.announce()
    await wait_until(lambda: fresh.ledger.height == SOURCE_BLOCKS)
    grow(c, source, 2)
    server.announce()
    await wait_until(lambda: fresh.ledger.height == SOURCE_BLOCKS + 2)
    assert fresh.ledger.last_hash == source.last_hash


async def test_get_blocks_is_answered_with_blocks_and_certificates(c: Consortium, source: Ledger) -> None:
    sent: list[tuple[bytes, list[Any]]] = []

    class Recorder:
        def send(self, peer: bytes, payload: bytes) -> None:
            sent.append((peer, msgpack.unpackb(payload, raw=False)))

    server = Syncer(source, Recorder(), None, Wakeup(), _ignore_damage)  # type: ignore[arg-type]
    asker = c.validators[1]
    server.on_get_blocks(asker, GetBlocks(2, 2))
    server.on_get_blocks(asker, GetBlocks(SOURCE_BLOCKS, 10))
    server.on_get_blocks(asker, GetBlocks(SOURCE_BLOCKS + 1, 10))
    server.on_get_blocks(asker, GetBlocks(0, 1))
    with pytest.raises(FrameError):  # malformed: no answer
        decode(encode_frame(GET_BLOCKS, "x", 1))
    assert [peer for peer, _ in sent] == [asker] * 4
    assert [frame[0] for _, frame in sent] == [BLOCKS] * 4
    assert sent[0][1][1] == [list(raw_block(source, 2)), list(raw_block(source, 3))]
    assert sent[1][1][1] == [list(raw_block(source, SOURCE_BLOCKS))]
    assert sent[2][1][1] == []
    assert sent[3][1][1] == []  # heights start at 1; [0, 1] covers nothing


async def test_peer_announcing_a_height_it_cannot_back_is_no_longer_believed(
    c: Consortium, hub: Hub, nursery: trio.Nursery
) -> None:
    liar = _answering(hub, c.validators[0], lambda fields: [])
    fresh = await _fresh(nursery, hub, c)
    liar.send(c.validators[3], encode_frame(STATUS, 50))
    await wait_until(lambda: bool(_requests(hub, c.validators[3])))
    await wait_until(lambda: not fresh.syncing)
    assert c.validators[0] not in fresh.peer_heights
    assert fresh.ledger.height == 0
    assert len(_requests(hub, c.validators[3])) == 1


async def test_silent_peer_is_no_longer_believed_after_the_request_timeout(
    c: Consortium, hub: Hub, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    silent = _answering(hub, c.validators[0], lambda fields: None)
    fresh = await _fresh(nursery, hub, c)
    silent.send(c.validators[3], encode_frame(STATUS, 50))
    await wait_until(lambda: fresh.syncing)
    started = trio.current_time()
    await wait_until(lambda: not fresh.syncing, timeout_s=sync.REQUEST_TIMEOUT_S * 2)
    assert trio.current_time() - started == pytest.approx(sync.REQUEST_TIMEOUT_S, abs=0.05)
    assert fresh.ledger.height == 0


async def test_peer_serving_blocks_without_a_quorum_is_no_longer_believed(
    c: Consortium, source: Ledger, hub: Hub, nursery: trio.Nursery
) -> None:
    forged = [list(sealed(c, decode_block(raw_block(source, 1)[0]), c.keys[:1]))]
    forger = _answering(hub, c.validators[0], lambda fields: forged)
    fresh = await _fresh(nursery, hub, c)
    forger.send(c.validators[3], encode_frame(STATUS, SOURCE_BLOCKS))
    await wait_until(lambda: bool(_requests(hub, c.validators[3])))
    await wait_until(lambda: not fresh.syncing)
    assert fresh.ledger.height == 0


@pytest.mark.parametrize("items", [[[b"a"]], [["x", b"y"]], [b"not a pair"], "not a list"])
async def test_malformed_blocks_answer_is_not_believed(
    c: Consortium, hub: Hub, nursery: trio.Nursery, items: Any, autojump_clock: trio.testing.MockClock
) -> None:
    peer = _answering(hub, c.validators[0], lambda fields: items)
    fresh = await _fresh(nursery, hub, c)
    peer.send(c.validators[3], encode_frame(STATUS, 3))
    await wait_until(lambda: bool(_requests(hub, c.validators[3])))
    await wait_until(lambda: not fresh.syncing, timeout_s=sync.REQUEST_TIMEOUT_S + 5)
    assert fresh.ledger.height == 0


async def test_blocks_from_a_peer_not_asked_are_ignored(
    c: Consortium, source: Ledger, hub: Hub, nursery: trio.Nursery
) -> None:
    fresh = await _fresh(nursery, hub, c)
    stranger = FakeNetwork(hub, c.validators[1])
    stranger.send(c.validators[3], encode_frame(BLOCKS, [list(raw_block(source, 1))]))
    await wait_until(lambda: any(f[0] == BLOCKS for _, _, f in hub.frames))
    await trio.testing.wait_all_tasks_blocked()
    assert fresh.ledger.height == 0


async def test_after_dropping_a_liar_catch_up_continues_from_an_honest_peer(
    c: Consortium, source: Ledger, hub: Hub, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    _answering(hub, c.validators[1], lambda fields: [])
    _serve_blocks(hub, c, source, 0)
    fresh = await _fresh(nursery, hub, c)
    fresh.on_status(c.validators[0], Status(SOURCE_BLOCKS))  # both heights known before the syncer runs:
    fresh.on_status(c.validators[1], Status(100))  # it asks the liar first, then should ask the honest peer
    await wait_until(lambda: c.validators[1] not in fresh.peer_heights)
    with trio.move_on_after(60):  # virtual seconds: no STATUS, no consensus traffic, so no wake
        await wait_until(lambda: fresh.ledger.height == SOURCE_BLOCKS)
    assert fresh.ledger.height == SOURCE_BLOCKS


# ---- response size -------------------------------------------------------------------------


def _padded_tx(c: Consortium, pad: int) -> Transaction:
    """A valid, authorised transaction of an unknown operation: it fails in execution but fills a block."""
    return sign_tx(c.client, c.chain_id, "junk", "pad", {"pad": bytes(pad)}, next(_pad_nonces))


def _txs_sized(c: Consortium, size_of: Callable[[list[Transaction]], int], target: int) -> list[Transaction]:
    """Near-maximal transactions, the last one padded so that size_of(txs) == target exactly."""
    full = [_padded_tx(c, 65_000) for _ in range(target // 65_200)]
    pad = 1000
    for _ in range(5):
        txs = full + [_padded_tx(c, pad)]
        missing = target - size_of(txs)
        if missing == 0:
            return txs
        pad += missing
    raise AssertionError("could not size the block exactly")


def _commit(c: Consortium, ledger: Ledger, txs: list[Transaction]) -> None:
    candidate = build(c, ledger, txs)
    assert len(candidate.txs) == len(txs)
    ledger.commit(candidate.block, candidate.txs, candidate.execution, c.seal(candidate.block_hash))


def test_blocks_answer_always_fits_in_one_frame(c: Consortium) -> None:
    source = c.ledger()
    _commit(c, source, _txs_sized(c, lambda txs: len(build(c, source, txs).block.encode()), RESPONSE_BYTES_MAX))
    _commit(c, source, _txs_sized(c, lambda txs: sum(len(tx.raw) for tx in txs), BLOCK_TX_BYTES_MAX))
    sent: list[bytes] = []

    class Recorder:
        def send(self, peer: bytes, payload: bytes) -> None:
            sent.append(payload)

    Syncer(source, Recorder(), None, Wakeup(), _ignore_damage).on_get_blocks(c.validators[1], GetBlocks(1, 64))  # type: ignore[arg-type]
    assert len(sent) == 1 and msgpack.unpackb(sent[0])[1]  # it answered, with at least one block
    assert len(sent[0]) <= FRAME_BYTES_MAX  # what Session.receive accepts (sealed: + 17 bytes)


async def test_a_second_answer_from_one_peer_is_not_taken_as_another_peers_reply(
    c: Consortium, hub: Hub, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
) -> None:
    monkeypatch.setattr(sync, "BLOCKS_PER_REQUEST", 2)
    source = c.ledger()
    grow(c, source, 6)
    first, honest = c.validators[1], c.validators[0]
    FakeNetwork(hub, first)  # answered by hand below
    _serve_blocks(hub, c, source, 0)
    fresh = await _fresh(nursery, hub, c)
    fresh.on_status(first, Status(5))
    await wait_until(lambda: bool(_requests(hub, c.validators[3])))
    fresh.on_status(honest, Status(6))
    forged_block, forged_certificate = sealed(c, decode_block(raw_block(source, 3)[0]), c.keys[:1])
    fresh.on_blocks(first, Blocks((raw_block(source, 1), raw_block(source, 2))))
    fresh.on_blocks(first, Blocks(((forged_block, forged_certificate),)))  # read from the same TCP segment: no checkpoint in between
    with trio.move_on_after(30):  # virtual seconds
        await wait_until(lambda: fresh.ledger.height == 6, timeout_s=60)
    assert honest in fresh.peer_heights
    assert fresh.ledger.height == 6


@settings(max_examples=200, deadline=None)
@given(st.lists(st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40)
                | st.lists(st.binary(max_size=40) | st.integers(), max_size=3), max_size=3))
def test_frame_handlers_never_raise_on_arbitrary_fields(fields: list[Any]) -> None:
    c = consortium(validators=4)
    ledger = c.ledger()
    grow(c, ledger, 2, txs_per_block=1)
    sent: list[bytes] = []

    class Recorder:
        def send(self, peer: bytes, payload: bytes) -> None:
            sent.append(payload)

        def connected(self, peer: bytes) -> bool:
            return True

    syncer = Syncer(ledger, Recorder(), None, Wakeup(), _ignore_damage)  # type: ignore[arg-type]
    handlers: dict[type, Callable[[bytes, Any], None]] = {
        Status: syncer.on_status, GetBlocks: syncer.on_get_blocks, Blocks: syncer.on_blocks,
    }
    for kind in (STATUS, GET_BLOCKS, BLOCKS):
        try:
            message = decode(encode_frame(kind, *fields))
        except (FrameError, OverflowError):
            continue  # no frame, or dropped before any handler sees it
        handlers[type(message)](c.validators[1], message)
    assert all(msgpack.unpackb(payload)[0] == BLOCKS for payload in sent)


# ---- what peers report, and a damaged store ---------------------------------------------------


async def test_peers_whose_blocks_are_refused_still_show_how_far_behind_the_node_is(
    c: Consortium, source: Ledger, hub: Hub, nursery: trio.Nursery
) -> None:
    forged = [list(sealed(c, decode_block(raw_block(source, 1)[0]), c.keys[:1]))]
    forgers = [_answering(hub, c.validators[i], lambda fields: forged) for i in (0, 1)]
    fresh = await _fresh(nursery, hub, c)
    forgers[0].send(c.validators[3], encode_frame(STATUS, SOURCE_BLOCKS + 5))  # one report alone is not believed
    await wait_until(lambda: bool(_requests(hub, c.validators[3])))
    await wait_until(lambda: not fresh.syncing)
    assert fresh.reported_height == 0, "one peer (perhaps the faulty one) does not make the node look behind"
    forgers[1].send(c.validators[3], encode_frame(STATUS, SOURCE_BLOCKS))
    await wait_until(lambda: len(_requests(hub, c.validators[3])) >= 2)
    await wait_until(lambda: not fresh.syncing)
    assert fresh.ledger.height == 0 and fresh.best_height == 0
    assert fresh.reported_height == SOURCE_BLOCKS, "f+1 peers report it: the gap stays visible"


def test_a_hole_in_the_served_chain_is_reported_as_damage_not_served(c: Consortium, source: Ledger) -> None:
    sent: list[bytes] = []

    class Recorder:
        def send(self, peer: bytes, payload: bytes) -> None:
            sent.append(payload)

    found: list[Exception] = []
    server = Syncer(source, Recorder(), None, Wakeup(), on_store_damaged=found.append)  # type: ignore[arg-type]
    source.store.kv.delete(b"c/" + (2).to_bytes(8, "big"))
    server.on_get_blocks(c.validators[1], GetBlocks(1, 5))
    assert sent == [] and len(found) == 1 and "block 2" in str(found[0])


# ---- following the membership ------------------------------------------------------------------


class Connected:
    """An outbox connected to every peer, keeping nothing sent."""

    def connected(self, peer: bytes) -> bool:
        return True

    def send(self, peer: bytes, payload: bytes) -> None:
        pass


class CountedWakeup(Wakeup):
    def __init__(self) -> None:
        super().__init__()
        self.sets = 0

    def set(self) -> None:
        self.sets += 1
        super().set()


def test_heights_count_only_from_the_validators_of_the_next_height() -> None:
    g = governed(validators=4, observers=1)
    wanted = CountedWakeup()
    syncer = Syncer(g.ledger(), Connected(), None, wanted, _ignore_damage)  # type: ignore[arg-type]
    syncer.on_status(pub(g.observers[0]), Status(50))
    syncer.on_status(pub(g.newcomer()), Status(60))  # not a member at all
    assert syncer.best_height == 0 and syncer.reported_height == 0 and wanted.sets == 0
    syncer.on_status(pub(g.validators[2]), Status(40))
    assert syncer.best_height == 40 and wanted.sets == 1


def test_the_f_plus_one_reports_trusted_follow_the_size_of_the_next_heights_set() -> None:
    g = governed(validators=4)
    ledger = g.ledger()
    added = [g.newcomer() for _ in range(3)]
    activation = change(g, ledger, *({"kind": "add_validator", "name": f"n{i}", "pubkey": pub(k),
                                      "address": "127.0.0.1:1"} for i, k in enumerate(added)))
    syncer = Syncer(ledger, Connected(), None, Wakeup(), _ignore_damage)  # type: ignore[arg-type]
    for key in g.validators[:2]:
        syncer.on_status(pub(key), Status(30))
    assert syncer.reported_height == 30, "4 validators: f = 1, two reports are enough"
    grow_governed(g, ledger, activation - 1 - ledger.height)
    assert syncer.reported_height == 0, "7 validators: f = 2, two reports are not"
    syncer.on_status(pub(added[0]), Status(30))
    assert syncer.reported_height == 30


async def test_a_node_catching_up_across_membership_changes_follows_them_in_order(
    hub: Hub, nursery: trio.Nursery
) -> None:
    g = governed(validators=4)
    source = g.ledger()
    added = [g.newcomer() for _ in range(3)]
    grown = change(g, source, *({"kind": "add_validator", "name": f"n{i}", "pubkey": pub(k),
                                 "address": "127.0.0.1:1"} for i, k in enumerate(added)))
    grow_governed(g, source, grown - source.height)  # blocks from here on are sealed by 5 of 7
    removed = g.validators[:3]
    shrunk = change(g, source, *({"kind": "remove_validator", "pubkey": pub(k)} for k in removed))
    grow_governed(g, source, shrunk + 2 - source.height)  # and from here on by 3 of v3, n0, n1, n2
    assert source.members(source.height).validator_keys == (pub(g.validators[3]), *map(pub, added))

    server = FakeNetwork(hub, pub(g.validators[3]))
    serving = Syncer(source, server, None, Wakeup(), _ignore_damage)  # type: ignore[arg-type]
    _route(server, {GetBlocks: serving.on_get_blocks})
    ledger = g.ledger()
    net = FakeNetwork(hub, pub(g.newcomer()))
    wanted = Wakeup()
    fresh = Syncer(ledger, net, Applier(ledger), wanted, _ignore_damage)  # type: ignore[arg-type]
    _route(net, {Status: fresh.on_status, Blocks: fresh.on_blocks})
    nursery.start_soon(fresh.run)
    HeightAnnouncer(source, server).announce()  # type: ignore[arg-type]
    await wait_until(lambda: ledger.height == source.height)
    assert ledger.last_hash == source.last_hash
    for key in (*removed, added[0]):
        FakeNetwork(hub, pub(key))  # connected, like the server
    for key in removed:  # no longer validators: their heights count no more
        fresh.on_status(pub(key), Status(500))
    assert fresh.best_height == source.height
    fresh.on_status(pub(added[0]), Status(source.height + 3))
    assert fresh.best_height == source.height + 3
