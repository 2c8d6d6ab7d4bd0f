"""PeerNetwork over real TCP on 127.0.0.1: dialing, accepting, routing, queues, restarts.

Addresses: each node's listening socket is bound on port 0 first and the port it got
goes into the genesis, so the dialers find the listeners. A restarted node binds
a new socket on the same port (SO_REUSEADDR, as node.api.http_server.bind sets): that is what a
restarted `alliance run` does, and it is how the others, which dial the address the
membership gives, find it again.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgpack
import pytest
import trio
from nacl.signing import SigningKey

from node.api.http_server import bind
from node.config import Address
from node.ops.metrics import Metrics
from node.p2p import peers
from node.p2p.framing import frame
from node.p2p.handshake import AUTH_PREFIX, HANDSHAKE_FRAME_BYTES_MAX, PROTOCOL
from node.p2p.outbox import PeerOutbox
from node.p2p.peers import PeerNetwork
from node.p2p.transport import FrameReader, Session, TransportError, handshake
from node.p2p.wire import CONSENSUS, Message, Status, Txs, decode, encode
from tests.shell.chainkit import Consortium, consortium, wait_until

HOST = "127.0.0.1"


@dataclass
class Peer:
    index: int
    net: PeerNetwork
    outbox: PeerOutbox
    scope: trio.CancelScope
    port: int
    got: list[tuple[bytes, Message]]

    @property
    def me(self) -> bytes:
        return self.net.me

    def frames_from(self, sender: bytes) -> list[Message]:
        return [f for s, f in self.got if s == sender]

    def metric(self, name: str) -> float:
        return self.net.metrics.registry.get_sample_value(name) or 0.0


def _listen(port: int = 0) -> socket.socket:
    return bind(Address(HOST, port), "p2p.listen")


async def _serve(net: PeerNetwork, sock: socket.socket, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(net.serve, sock)
            task_status.started(scope)


async def _start(nursery: trio.Nursery, c: Consortium, index: int, sock: socket.socket) -> Peer:
    metrics, got = Metrics(), list[tuple[bytes, Message]]()
    outbox = PeerOutbox(c.ledger(), metrics)
    net = PeerNetwork(c.chain_id, c.keys[index], c.genesis.members, metrics, outbox,
                      handler=lambda sender, message: got.append((sender, message)), on_connect=lambda peer: None)
    port = sock.getsockname()[1]
    scope = await nursery.start(_serve, net, sock)
    return Peer(index, net, outbox, scope, port, got)


def _consortium_on(socks: list[socket.socket | None]) -> Consortium:
    """Validators whose genesis addresses are the bound ports (1 for a member that never listens)."""
    ports = [1 if s is None else s.getsockname()[1] for s in socks]
    return consortium(len(socks), chain_id="peers-test", addresses=[f"{HOST}:{p}" for p in ports])


def _after_a_raw_member(listeners: int) -> tuple[Consortium, list[socket.socket]]:
    """Validator 0 is a raw test session that never listens (dials to its port 1 fail);
    validators 1.. listen on the returned sockets."""
    socks = [_listen() for _ in range(listeners)]
    return _consortium_on([None, *socks]), socks


def _all_connected(nodes: list[Peer]) -> bool:
    return all(a.outbox.connected(b.me) for a in nodes for b in nodes if a is not b)


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


@pytest.fixture(autouse=True)
def _fast_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "RECONNECT_MAX_S", 0.1)


async def _network(nursery: trio.Nursery, n: int) -> tuple[Consortium, list[Peer]]:
    socks = [_listen() for _ in range(n)]
    c = _consortium_on(list(socks))
    nodes = [await _start(nursery, c, i, s) for i, s in enumerate(socks)]
    await wait_until(lambda: _all_connected(nodes))
    return c, nodes


# ---- connecting and routing -------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3])
async def test_validators_connect_to_each_other(nursery: trio.Nursery, n: int) -> None:
    _, nodes = await _network(nursery, n)
    for node in nodes:
        assert node.metric("alliance_peers_connected") == n - 1
        assert set(node.outbox.links) == {other.me for other in nodes if other is not node}


async def test_broadcast_reaches_every_other_node_exactly_once(nursery: trio.Nursery) -> None:
    _, nodes = await _network(nursery, 3)
    for sender in nodes:
        sender.outbox.broadcast(encode(Txs((b"tx from %d" % sender.index,))))
        sender.outbox.broadcast(encode(Status(100 + sender.index)))  # frames on a link keep their order

    def others(node: Peer) -> list[Peer]:
        return [o for o in nodes if o is not node]

    await wait_until(lambda: all(len(n.got) == 2 * len(others(n)) for n in nodes))
    for node in nodes:
        for sender in others(node):
            assert node.frames_from(sender.me) == [Txs((b"tx from %d" % sender.index,)), Status(100 + sender.index)]
        assert node.frames_from(node.me) == []


async def test_send_reaches_only_its_peer(nursery: trio.Nursery) -> None:
    _, nodes = await _network(nursery, 3)
    a, b, c = nodes
    a.outbox.send(c.me, encode(Status(7)))
    a.outbox.broadcast(encode(Status(8)))  # a marker: once it arrives, the first frame would have too
    await wait_until(lambda: Status(8) in b.frames_from(a.me) and Status(8) in c.frames_from(a.me))
    assert c.frames_from(a.me) == [Status(7), Status(8)]
    assert b.frames_from(a.me) == [Status(8)]


async def test_send_to_an_unconnected_peer_is_a_no_op(nursery: trio.Nursery) -> None:
    _, nodes = await _network(nursery, 2)
    nodes[0].outbox.send(b"\x09" * 32, encode(Status(1)))
    assert nodes[0].metric("alliance_p2p_frames_dropped_total") == 0


async def test_on_connect_is_called_for_each_peer(nursery: trio.Nursery) -> None:
    socks = [_listen() for _ in range(3)]
    c = _consortium_on(list(socks))
    seen: list[bytes] = []
    metrics = Metrics()
    net = PeerNetwork(c.chain_id, c.keys[1], c.genesis.members, metrics, PeerOutbox(c.ledger(), metrics),
                      handler=lambda sender, message: None, on_connect=seen.append)
    await nursery.start(net.serve, socks[1])
    others = [await _start(nursery, c, i, socks[i]) for i in (0, 2)]
    await wait_until(lambda: len(seen) == 2)
    assert set(seen) == {o.me for o in others}


# ---- restarts ---------------------------------------------------------------------------------


async def _stop(node: Peer, nodes: list[Peer]) -> None:
    node.scope.cancel()
    await wait_until(lambda: not any(o.outbox.connected(node.me) for o in nodes if o is not node))


async def test_restarted_accepting_node_is_redialed(nursery: trio.Nursery) -> None:
    """Restarted on its genesis port, a validator is dialed again by the others."""
    c, nodes = await _network(nursery, 3)
    last = nodes[2]
    await _stop(last, nodes)
    assert nodes[0].metric("alliance_peers_connected") == 1
    nodes[2] = await _start(nursery, c, 2, _listen(last.port))
    await wait_until(lambda: _all_connected(nodes))
    nodes[0].outbox.send(nodes[2].me, encode(Status(1)))
    nodes[2].outbox.send(nodes[1].me, encode(Status(2)))
    await wait_until(lambda: nodes[2].got == [(nodes[0].me, Status(1))] and len(nodes[1].got) == 1)
    assert nodes[1].got == [(nodes[2].me, Status(2))]


async def test_restarted_dialing_node_reconnects_from_anywhere(nursery: trio.Nursery) -> None:
    """A restarted validator dials the others itself: its own listening port does not matter."""
    c, nodes = await _network(nursery, 3)
    old_sessions = [n.outbox.links[nodes[0].me].session for n in nodes[1:]]
    await _stop(nodes[0], nodes)
    nodes[0] = await _start(nursery, c, 0, _listen())
    await wait_until(lambda: _all_connected(nodes))
    assert all(n.outbox.links[nodes[0].me].session is not old for n, old in zip(nodes[1:], old_sessions))
    nodes[1].outbox.broadcast(encode(Status(3)))
    await wait_until(lambda: nodes[0].frames_from(nodes[1].me) == [Status(3)])


async def test_newest_session_with_a_peer_replaces_the_old_one(nursery: trio.Nursery) -> None:
    """A member (say, a restarted node whose old connection is not yet noticed) connects again."""
    c, socks = _after_a_raw_member(listeners=1)
    node = await _start(nursery, c, 1, socks[0])  # v0 never listens: node 1 only accepts from it
    v0 = c.validators[0]
    first = await _member_session(c, 0, node.port)
    await wait_until(lambda: node.outbox.connected(v0))
    first_link = node.outbox.links[v0]
    second = await _member_session(c, 0, node.port)
    await wait_until(lambda: node.outbox.links.get(v0) not in (None, first_link))
    await second.send(encode(Status(4)))
    await wait_until(lambda: node.got == [(v0, Status(4))])
    with trio.fail_after(5), pytest.raises(TransportError):
        await first.receive()  # the node closed the replaced session
    assert node.outbox.connected(v0) and node.metric("alliance_peers_connected") == 1


# ---- raw members: misbehaviour ------------------------------------------------------------------


async def _member_session(c: Consortium, index: int, port: int) -> Session:
    """A raw, authenticated session as validator `index`, dialed to `port`."""
    stream = await trio.open_tcp_stream(HOST, port)
    return await handshake(stream, c.chain_id, c.keys[index], lambda peer: True, initiator=True)


async def test_malformed_frames_from_a_member_are_counted_and_the_session_survives(nursery: trio.Nursery) -> None:
    c, socks = _after_a_raw_member(listeners=1)
    node = await _start(nursery, c, 1, socks[0])
    session = await _member_session(c, 0, node.port)
    bad = [b"\xc1", b"", msgpack.packb(5), msgpack.packb([]), msgpack.packb(["status"]), msgpack.packb([True, 1]),
           msgpack.packb({"0": 1}), b"\x91\x00extra"]
    for payload in bad:
        await session.send(payload)
    await session.send(encode(Status(9)))
    await wait_until(lambda: len(node.got) == 1)
    assert node.got == [(c.validators[0], Status(9))]
    assert node.metric("alliance_p2p_frames_malformed_total") == len(bad)
    assert node.outbox.connected(c.validators[0])
    node.outbox.send(c.validators[0], encode(Status(10)))
    with trio.fail_after(5):
        assert decode(await session.receive()) == Status(10)


async def test_malformed_consensus_frames_are_counted_as_dropped_consensus_messages(nursery: trio.Nursery) -> None:
    c, socks = _after_a_raw_member(listeners=1)
    node = await _start(nursery, c, 1, socks[0])
    session = await _member_session(c, 0, node.port)
    for payload in (msgpack.packb([CONSENSUS, b"junk"]), msgpack.packb([CONSENSUS, 7]), msgpack.packb([CONSENSUS])):
        await session.send(payload)
    await session.send(encode(Status(9)))
    await wait_until(lambda: len(node.got) == 1)
    dropped = node.net.metrics.registry.get_sample_value(
        "alliance_consensus_messages_dropped_total", {"reason": "malformed"})
    assert dropped == 3 and node.metric("alliance_p2p_frames_malformed_total") == 0


async def test_non_member_is_refused_and_counted(nursery: trio.Nursery) -> None:
    c, socks = _after_a_raw_member(listeners=1)
    node = await _start(nursery, c, 1, socks[0])
    stream = await trio.open_tcp_stream(HOST, node.port)
    with trio.fail_after(5), pytest.raises(TransportError):
        await handshake(stream, c.chain_id, SigningKey.generate(), lambda peer: True, initiator=True)
    await wait_until(lambda: node.metric("alliance_p2p_sessions_refused_total") == 1)
    assert node.outbox.links == {}
    session = await _member_session(c, 0, node.port)  # the node still serves members
    await session.send(encode(Status(1)))
    await wait_until(lambda: len(node.got) == 1)


async def test_many_refused_handshakes_are_logged_once_with_a_count(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(peers, "refusals", peers.RateLog(peers.log))  # none counted by other tests
    c, socks = _after_a_raw_member(listeners=1)
    node = await _start(nursery, c, 1, socks[0])
    with caplog.at_level(logging.WARNING, "alliance.p2p"):
        for _ in range(5):
            stream = await trio.open_tcp_stream(HOST, node.port)
            with trio.fail_after(5), pytest.raises(TransportError):
                await handshake(stream, c.chain_id, SigningKey.generate(), lambda peer: True, initiator=True)
        await wait_until(lambda: node.metric("alliance_p2p_sessions_refused_total") == 5)
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert lines == ["event=peers_refused kind=handshake_failed count=1"], lines


async def test_node_refuses_to_talk_to_itself(nursery: trio.Nursery) -> None:
    c, socks = _after_a_raw_member(listeners=1)
    node = await _start(nursery, c, 1, socks[0])
    stream = await trio.open_tcp_stream(HOST, node.port)
    with trio.fail_after(5), pytest.raises(TransportError):
        await handshake(stream, c.chain_id, c.keys[1], lambda peer: True, initiator=True)
    await wait_until(lambda: node.metric("alliance_p2p_sessions_refused_total") == 1)


async def test_member_with_a_low_order_kx_key_does_not_crash_the_node(nursery: trio.Nursery) -> None:
    c, socks = _after_a_raw_member(listeners=2)
    node = await _start(nursery, c, 1, socks[0])
    other = await _start(nursery, c, 2, socks[1])
    await wait_until(lambda: node.outbox.connected(other.me))
    stream = await trio.open_tcp_stream(HOST, node.port)
    await _signed_hello_with_kx(stream, c, 0, bytes(32))
    await wait_until(lambda: node.metric("alliance_p2p_sessions_refused_total") == 1)
    node.outbox.send(other.me, encode(Status(1)))
    await wait_until(lambda: other.got == [(node.me, Status(1))])


async def _signed_hello_with_kx(stream: trio.abc.Stream, c: Consortium, index: int, kx_public: bytes) -> None:
    """The first two handshake steps of validator `index`, honestly signed, with a chosen kx key."""
    key = c.keys[index]
    hello = msgpack.packb([PROTOCOL, c.chain_id, bytes(key.verify_key), kx_public], use_bin_type=True)
    await stream.send_all(frame(hello))
    theirs = await FrameReader(stream).read(HANDSHAKE_FRAME_BYTES_MAX)
    transcript = hashlib.sha256(c.chain_id.encode() + b"\x00" + hello + theirs).digest()
    await stream.send_all(frame(key.sign(AUTH_PREFIX + b"I" + transcript).signature))


# ---- send queues ---------------------------------------------------------------------------------


async def test_full_send_queue_drops_and_counts_instead_of_blocking(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "SEND_QUEUE_FRAMES_MAX", 2)
    _, (a, b) = await _network(nursery, 2)
    sent = 1000
    for i in range(sent):  # no checkpoint in between: the writer cannot drain the queue
        a.outbox.send(b.me, encode(Status(i)))
    dropped = a.metric("alliance_p2p_frames_dropped_total")
    assert sent - 3 <= dropped < sent  # one handed to the waiting writer, two queued
    await wait_until(lambda: len(b.got) == sent - dropped)
    heights = [f.height for _, f in b.got if isinstance(f, Status)]
    assert heights == sorted(heights) and heights[0] == 0
    a.outbox.send(b.me, encode(Status(-1)))  # the session still works
    await wait_until(lambda: b.got[-1] == (a.me, Status(-1)))


async def test_peer_that_does_not_read_loses_frames_without_stalling_the_node(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "SEND_QUEUE_FRAMES_MAX", 8)
    c, socks = _after_a_raw_member(listeners=2)
    node = await _start(nursery, c, 1, socks[0])
    other = await _start(nursery, c, 2, socks[1])
    stuck = await _member_session(c, 0, node.port)  # authenticates, then never reads
    assert stuck.peer == node.me
    await wait_until(lambda: node.outbox.connected(c.validators[0]) and node.outbox.connected(other.me))
    big = encode(Txs((b"\x00" * 60_000,)))
    with trio.fail_after(20):
        while node.metric("alliance_p2p_frames_dropped_total") == 0:
            node.outbox.send(c.validators[0], big)
            await trio.sleep(0.001)
    node.outbox.send(other.me, encode(Status(5)))
    await wait_until(lambda: other.got == [(node.me, Status(5))], timeout_s=5)
    assert node.outbox.connected(c.validators[0])  # a slow reader is not disconnected, only starved
