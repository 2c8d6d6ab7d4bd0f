"""The peers follow the chain's membership: who passes the handshake, who is dialed, who is sent what.

The handshake decision and the outbox's choice of recipients are checked without sockets;
the dialing, the closing of removed members' sessions and an observer's catch-up over real
TCP on 127.0.0.1 (ports the kernel picks, as in test_peers.py).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import pytest
import trio
from nacl.signing import SigningKey

from consensus.messages import Prepare, Signed
from node.api.http_server import bind
from node.chain.ledger import Ledger
from node.chain.membership import Member, Membership
from node.config import Address
from node.ops.metrics import Metrics
from node.p2p import peers
from node.p2p.handshake import Handshake, HandshakeRefused, Refusal
from node.p2p.outbox import Link, PeerOutbox
from node.p2p.peers import PeerNetwork
from node.p2p.sync import HeightAnnouncer, Syncer
from node.p2p.transport import Session
from node.p2p.wire import Blocks, Consensus, GetBlocks, Message, Status, Txs, encode
from node.pipeline.driver import Wakeup
from tests.shell.chainkit import wait_until
from tests.shell.membership_chain import Applier, Governed, change, governed, grow, pub

HOST = "127.0.0.1"
UNUSED = f"{HOST}:1"  # an address for a member no test dials


def _network(g: Governed, key: SigningKey, members: Membership, ledger: Ledger | None = None,
             handler: Callable[[bytes, Message], None] = lambda peer, message: None,
             on_connect: Callable[[bytes], None] = lambda peer: None) -> PeerNetwork:
    metrics = Metrics()
    outbox = PeerOutbox(ledger or g.ledger(), metrics)
    return PeerNetwork(g.chain_id, key, members, metrics, outbox, handler, on_connect)


def _handshake(dialer: SigningKey, acceptor: SigningKey, admits: Callable[[bytes], bool]) -> bytes:
    """Both sides of a handshake, without sockets; the identity the acceptor authenticated."""
    a = Handshake("membership-test", dialer, lambda peer: True, initiator=True)
    b = Handshake("membership-test", acceptor, admits, initiator=False)
    to_b, to_a = a.start(), b.start()
    while to_a or to_b:
        from_b = b.receive_data(to_b) if to_b else b""
        from_a = a.receive_data(to_a) if to_a else b""
        to_a, to_b = from_b, from_a
    assert b.established is not None
    return b.established.peer


def _refused(net: PeerNetwork, key: SigningKey) -> bool:
    try:
        _handshake(key, net.key, net.is_member)
    except HandshakeRefused as exc:
        assert exc.refusal is Refusal.NOT_MEMBER
        return True
    return False


def _next(ledger: Ledger) -> Membership:
    return ledger.members(ledger.height + 1)


# ---- the handshake decision, without sockets -----------------------------------------------------


@pytest.mark.parametrize("kind", ["add_validator", "add_observer"])
def test_a_key_added_at_a_height_is_refused_before_it_and_accepted_from_it(kind: str) -> None:
    g = governed(validators=4)
    ledger = g.ledger()
    net = _network(g, g.validators[0], _next(ledger), ledger)
    newcomer = g.newcomer()
    activation = change(g, ledger, {"kind": kind, "name": "n", "pubkey": pub(newcomer), "address": UNUSED})
    while ledger.height + 1 < activation:
        net.follow(_next(ledger))
        assert _refused(net, newcomer), f"accepted at next height {ledger.height + 1}, before {activation}"
        grow(g, ledger, 1)
    net.follow(_next(ledger))
    assert _handshake(newcomer, g.validators[0], net.is_member) == pub(newcomer)
    assert _handshake(g.validators[1], g.validators[0], net.is_member) == pub(g.validators[1])


def test_a_removed_or_replaced_key_is_refused_from_its_activation() -> None:
    g = governed(validators=4, observers=1)
    ledger = g.ledger()
    net = _network(g, g.validators[0], _next(ledger), ledger)
    removed, old, observer = g.validators[3], g.validators[2], g.observers[0]
    new = g.newcomer()
    change(g, ledger, {"kind": "remove_validator", "pubkey": pub(removed)})
    activation = change(g, ledger, {"kind": "replace_key", "old": pub(old), "new": pub(new)},
                        {"kind": "remove_observer", "pubkey": pub(observer)})
    net.follow(_next(ledger))  # the removal is in force at the next height; the rest is not yet
    assert _refused(net, removed)
    assert not _refused(net, old) and not _refused(net, observer) and _refused(net, new)
    grow(g, ledger, activation - 1 - ledger.height)
    net.follow(_next(ledger))
    assert _refused(net, removed) and _refused(net, old) and _refused(net, observer)
    assert not _refused(net, new) and not _refused(net, g.validators[1])


def test_a_node_refuses_its_own_key_whatever_its_role() -> None:
    g = governed(validators=2, observers=1)
    observer = g.observers[0]
    net = _network(g, observer, g.genesis.members)
    assert _refused(net, observer)
    assert not _refused(net, g.validators[0])


# ---- what goes to whom, without sockets ------------------------------------------------------------


def _attach(outbox: PeerOutbox, peer: bytes) -> trio.MemoryReceiveChannel[bytes]:
    send, receive = trio.open_memory_channel[bytes](16)
    outbox.attach(peer, Link(cast(Session, None), send, trio.CancelScope(), peer))
    return receive


def _received(channels: dict[bytes, trio.MemoryReceiveChannel[bytes]]) -> set[bytes]:
    """The peers that got a frame since the last call."""
    got = set()
    for peer, channel in channels.items():
        while True:
            try:
                channel.receive_nowait()
            except trio.WouldBlock:
                break
            got.add(peer)
    return got


def _prepare(sender: SigningKey, height: int) -> Signed:
    return Signed(pub(sender), Prepare(height, 0, b"\x01" * 32), b"\x00" * 64)


def test_consensus_goes_to_the_validators_of_its_height_transactions_to_those_of_the_next() -> None:
    g = governed(validators=4, observers=1)
    ledger = g.ledger()
    removed, observer = pub(g.validators[3]), pub(g.observers[0])
    newcomer = g.newcomer()
    change(g, ledger, {"kind": "remove_validator", "pubkey": removed})  # in force from height 3
    change(g, ledger, {"kind": "add_validator", "name": "n", "pubkey": pub(newcomer), "address": UNUSED})  # from 4
    outbox = PeerOutbox(ledger, Metrics())  # at height 2: the sets of heights 3 and 4 are known
    everyone = [pub(k) for k in g.validators[1:]] + [observer, pub(newcomer)]
    channels = {peer: _attach(outbox, peer) for peer in everyone}
    validators = {pub(k) for k in g.validators[1:3]}

    outbox.broadcast_consensus(_prepare(g.validators[0], 2))
    assert _received(channels) == validators | {removed}
    outbox.broadcast_consensus(_prepare(g.validators[0], 3))
    assert _received(channels) == validators
    outbox.broadcast_consensus(_prepare(g.validators[0], 4))
    assert _received(channels) == validators | {pub(newcomer)}
    outbox.broadcast_to_validators(encode(Txs((b"tx",))))  # next height: 3
    assert _received(channels) == validators
    assert outbox.is_validator(pub(g.validators[1])) and not outbox.is_validator(removed)
    assert not outbox.is_validator(observer)
    outbox.broadcast(encode(Status(2)))
    assert _received(channels) == set(everyone)


# ---- over TCP ------------------------------------------------------------------------------------


@dataclass
class Node:
    net: PeerNetwork
    ledger: Ledger
    got: list[tuple[bytes, Message]]
    scope: trio.CancelScope

    @property
    def outbox(self) -> PeerOutbox:
        return self.net.outbox

    def metric(self, name: str) -> float:
        return self.net.metrics.registry.get_sample_value(name) or 0.0

    def follow(self) -> None:
        self.net.follow(_next(self.ledger))


def _listen() -> socket.socket:
    return bind(Address(HOST, 0), "p2p.listen")


def _address(sock: socket.socket) -> str:
    return f"{HOST}:{sock.getsockname()[1]}"


async def _serve(net: PeerNetwork, sock: socket.socket, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(net.serve, sock)
            task_status.started(scope)


async def _start(nursery: trio.Nursery, g: Governed, key: SigningKey, sock: socket.socket,
                 ledger: Ledger | None = None, members: Membership | None = None) -> Node:
    """A node of `key` listening on `sock`, its peers those of `members` (else its ledger's next height)."""
    ledger = ledger or g.ledger()
    got: list[tuple[bytes, Message]] = []
    net = _network(g, key, members or _next(ledger), ledger, handler=lambda peer, m: got.append((peer, m)))
    scope = await nursery.start(_serve, net, sock)
    return Node(net, ledger, got, scope)


def _unreachable(members: Membership) -> Membership:
    """`members` with no addresses: a node given it dials no one, so only others' dials connect it."""
    def strip(ms: tuple[Member, ...]) -> tuple[Member, ...]:
        return tuple(replace(m, address="") for m in ms)
    return replace(members, validators=strip(members.validators), observers=strip(members.observers))


@pytest.fixture
async def nursery() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as n:
        yield n
        n.cancel_scope.cancel()


@pytest.fixture(autouse=True)
def _fast_reconnect(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "RECONNECT_MAX_S", 0.1)


async def test_a_removed_validator_is_sent_what_was_queued_then_disconnected_and_refused(nursery: trio.Nursery) -> None:
    socks = [_listen() for _ in range(3)]
    g = governed(validators=3, addresses=[_address(s) for s in socks])
    nodes = [await _start(nursery, g, key, sock) for key, sock in zip(g.validators, socks)]
    removed, a, b = nodes  # listed first, the removed validator is the one that dials `a`
    key = pub(g.validators[0])
    await wait_until(lambda: all(x.outbox.connected(y.net.me) for x in nodes for y in nodes if x is not y))
    activation = change(g, a.ledger, {"kind": "remove_validator", "pubkey": key})
    a.follow()
    assert a.outbox.connected(key), "still a validator at the next height"
    grow(g, a.ledger, activation - 1 - a.ledger.height)
    refused = a.metric("alliance_p2p_sessions_refused_total")
    a.outbox.send(key, encode(Status(99)))  # its last votes, say: queued before the commit that removes it
    a.follow()
    assert not a.outbox.connected(key)  # nothing more is sent to it
    await wait_until(lambda: (a.net.me, Status(99)) in removed.got)  # but what was queued still goes
    # The removed node still takes `a` for a member and dials it: refused, again and again.
    await wait_until(lambda: a.metric("alliance_p2p_sessions_refused_total") >= refused + 3)
    assert not a.outbox.connected(key) and not removed.outbox.connected(a.net.me)
    assert a.outbox.connected(b.net.me) and a.metric("alliance_peers_connected") == 1


async def test_an_added_member_is_dialed_once_it_is_in_force_at_the_next_height(nursery: trio.Nursery) -> None:
    v_sock, o_sock = _listen(), _listen()
    g = governed(validators=1, addresses=[_address(v_sock)])
    v = await _start(nursery, g, g.validators[0], v_sock)
    observer = g.newcomer()
    activation = change(g, v.ledger, {"kind": "add_observer", "name": "o", "pubkey": pub(observer),
                                      "address": _address(o_sock)})
    v.follow()
    # The observer takes the validator for a peer but has no address for it: only the validator can dial.
    o = await _start(nursery, g, observer, o_sock, members=_unreachable(v.ledger.members(activation)))
    assert not v.outbox.connected(pub(observer))
    grow(g, v.ledger, activation - 1 - v.ledger.height)
    v.follow()
    await wait_until(lambda: v.outbox.connected(pub(observer)) and o.outbox.connected(v.net.me))


async def test_a_member_whose_address_changed_is_dialed_at_the_new_one(nursery: trio.Nursery) -> None:
    v_sock, old_sock, new_sock = _listen(), _listen(), _listen()
    g = governed(validators=2, addresses=[_address(v_sock), _address(old_sock)])
    v = await _start(nursery, g, g.validators[0], v_sock)
    moving = g.validators[1]
    old = await _start(nursery, g, moving, old_sock, members=_unreachable(g.genesis.members))
    await wait_until(lambda: v.outbox.connected(pub(moving)))
    activation = change(g, v.ledger, {"kind": "set_address", "pubkey": pub(moving), "address": _address(new_sock)})
    v.follow()
    old.scope.cancel()  # the node moves: its old address no longer answers
    old_sock.close()
    await wait_until(lambda: not v.outbox.connected(pub(moving)))
    await _start(nursery, g, moving, new_sock, members=_unreachable(g.genesis.members))
    grow(g, v.ledger, activation - 1 - v.ledger.height)
    v.follow()
    await wait_until(lambda: v.outbox.connected(pub(moving)))


async def test_observers_get_announcements_but_neither_consensus_nor_transactions(nursery: trio.Nursery) -> None:
    socks = [_listen() for _ in range(3)]
    g = governed(validators=2, observers=1, addresses=[_address(s) for s in socks])
    keys = g.validators + g.observers
    a, b, o = [await _start(nursery, g, key, sock) for key, sock in zip(keys, socks)]
    await wait_until(lambda: a.outbox.connected(b.net.me) and a.outbox.connected(o.net.me))
    a.outbox.broadcast_consensus(_prepare(g.validators[0], 1))
    a.outbox.broadcast_to_validators(encode(Txs((b"tx",))))
    a.outbox.broadcast(encode(Status(7)))  # after the others on each link: once it is in, they would be
    await wait_until(lambda: len(b.got) == 3 and len(o.got) == 1)
    assert [type(m) for _, m in b.got] == [Consensus, Txs, Status]
    assert o.got == [(a.net.me, Status(7))]


def _router(handlers: dict[type, Callable[[bytes, Any], None]]) -> Callable[[bytes, Message], None]:
    return lambda peer, message: handlers[type(message)](peer, message) if type(message) in handlers else None


async def test_an_observer_node_learns_the_height_and_fetches_the_blocks(nursery: trio.Nursery) -> None:
    v_sock, o_sock = _listen(), _listen()
    g = governed(validators=1, observers=1, addresses=[_address(v_sock), _address(o_sock)])
    source = g.ledger()
    newcomer = g.newcomer()  # a change on the way, so that the observer follows one
    change(g, source, {"kind": "add_observer", "name": "n", "pubkey": pub(newcomer), "address": UNUSED})
    grow(g, source, 4)

    served = PeerOutbox(source, Metrics())
    server = Syncer(source, served, Applier(source), Wakeup(), on_store_damaged=lambda exc: None)  # type: ignore[arg-type]
    heights = HeightAnnouncer(source, served)
    v_net = PeerNetwork(g.chain_id, g.validators[0], _next(source), served.metrics, served,
                        _router({GetBlocks: server.on_get_blocks}), on_connect=heights.announce)
    await nursery.start(v_net.serve, v_sock)

    ledger = g.ledger()
    fetching = PeerOutbox(ledger, Metrics())
    wanted = Wakeup()
    syncer = Syncer(ledger, fetching, Applier(ledger), wanted, on_store_damaged=lambda exc: None)  # type: ignore[arg-type]
    o_net = PeerNetwork(g.chain_id, g.observers[0], _next(ledger), fetching.metrics, fetching,
                        _router({Status: syncer.on_status, Blocks: syncer.on_blocks}), on_connect=lambda peer: None)
    await nursery.start(o_net.serve, o_sock)
    nursery.start_soon(syncer.run)
    await wait_until(lambda: ledger.height == source.height)
    assert ledger.last_hash == source.last_hash
    assert ledger.members(ledger.height + 1).observers == source.members(source.height + 1).observers


async def test_following_a_change_keeps_the_sessions_of_members_that_stay(nursery: trio.Nursery) -> None:
    socks = [_listen() for _ in range(2)]
    g = governed(validators=2, observers=1, addresses=[*map(_address, socks), UNUSED])
    a, b = [await _start(nursery, g, key, sock) for key, sock in zip(g.validators, socks)]
    await wait_until(lambda: a.outbox.connected(b.net.me))
    link = a.outbox.links[b.net.me]
    grow(g, a.ledger, 1)
    a.follow()  # a block that changed nothing
    activation = change(g, a.ledger, {"kind": "remove_observer", "pubkey": pub(g.observers[0])},
                        {"kind": "add_observer", "name": "n", "pubkey": pub(g.newcomer()), "address": UNUSED})
    grow(g, a.ledger, activation - 1 - a.ledger.height)
    a.follow()  # a change to other members
    assert a.outbox.links[b.net.me] is link
    assert not link.scope.cancel_called
