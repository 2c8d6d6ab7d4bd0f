"""Sessions with the other members: dialing, accepting, and decoding frames for the handler.

The peers are the validators and observers of the membership in force at the
node's next height (`follow` is told it after each commit): only their keys
pass the handshake. Every pair keeps one session: the member listed first
(validators, then observers) dials the other, at the address the membership
gives, so a restarted node is reconnected by whichever side is up; a node the
membership gives no address (one still catching up to the height it joins at,
say) dials all. Should both sides dial at once, each keeps the session the
lower key opened. Each session has a bounded send queue: a peer that does not
read loses frames (counted), it never stalls the node.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import trio
from nacl.signing import SigningKey

from node.chain.membership import Member, Membership
from node.config import parse_address
from node.errors import ConfigError
from node.ops.metrics import Metrics
from node.ops.ratelog import RateLog
from node.p2p.outbox import Link, PeerOutbox
from node.p2p.transport import Session, TransportError, handshake
from node.p2p.wire import CONSENSUS, FrameError, Message, decode

log = logging.getLogger("alliance.p2p")
refusals = RateLog(log)
TIMED_OUT = "handshake timed out"

SEND_QUEUE_FRAMES_MAX = 4096
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 2.0
REMOVED_DRAIN_S = 2.0  # a removed member's session lives this long at most, to send what was queued for it

Handler = Callable[[bytes, Message], None]


class PeerNetwork:
    def __init__(
        self,
        chain_id: str,
        key: SigningKey,
        members: Membership,
        metrics: Metrics,
        outbox: PeerOutbox,
        handler: Handler,
        on_connect: Callable[[bytes], None],
    ) -> None:
        self.chain_id = chain_id
        self.key = key
        self.me = bytes(key.verify_key)
        self.metrics = metrics
        self.outbox = outbox  # each session is attached there while it runs
        self.handler = handler  # each frame received
        self.on_connect = on_connect  # each peer as its session opens
        self._membership = members
        self._peers = self._peers_of(members)  # who may connect, with their addresses
        self._dialed = self._dialed_of(members)  # whom this node dials
        self._dialing: dict[bytes, tuple[str, trio.CancelScope]] = {}  # peer -> (address, its dial loop)
        self._changed = trio.Event()  # whom to dial changed

    def _peers_of(self, members: Membership) -> dict[bytes, Member]:
        return {m.pubkey: m for m in members.validators + members.observers if m.pubkey != self.me}

    def _dialed_of(self, members: Membership) -> frozenset[bytes]:
        """The peers with an address listed after this node, or all of them if it has no address."""
        listed = members.validators + members.observers
        mine = next((i for i, m in enumerate(listed) if m.pubkey == self.me and m.address), -1)
        return frozenset(m.pubkey for m in listed[mine + 1:] if m.address and m.pubkey != self.me)

    # ---- following the membership -----------------------------------------------------

    def follow(self, members: Membership) -> None:
        """Takes the membership in force at the node's next height (after each commit): dials the
        members added, dials changed addresses, closes the sessions of members removed."""
        if members is self._membership:
            return
        before, self._membership = self._membership, members
        if members.validators + members.observers == before.validators + before.observers:
            return  # the usual case: a block that changed no peer
        peers = self._peers_of(members)
        for peer, link in list(self.outbox.links.items()):
            if peer not in peers:  # nothing more is queued for it; what is (its last votes) still goes
                link.queue.close()
                link.scope.deadline = min(link.scope.deadline, trio.current_time() + REMOVED_DRAIN_S)
                self.outbox.detach(peer, link)
                self._connections_changed(peer, "peer_disconnected", "no longer a member")
        self._peers, self._dialed = peers, self._dialed_of(members)
        for peer, (address, scope) in list(self._dialing.items()):
            member = peers.get(peer)
            if member is None or (member.address != address and not self.outbox.connected(peer)):
                scope.cancel()  # removed, or moved while not connected: dialed again at the new address
                del self._dialing[peer]
        self._changed.set()

    def is_member(self, peer: bytes) -> bool:
        """Whether `peer` may connect: a validator or observer at the node's next height, not itself."""
        return peer in self._peers

    # ---- sessions ---------------------------------------------------------------------

    async def serve(self, sock: socket.socket, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._accepted, [listener])
            nursery.start_soon(self._dial_members)
            task_status.started()

    async def _dial_members(self) -> None:
        """Keeps a dial loop running for each peer this node dials."""
        async with trio.open_nursery() as nursery:
            while True:
                self._changed = trio.Event()
                for peer in self._dialed - self._dialing.keys():
                    scope = trio.CancelScope()
                    self._dialing[peer] = (self._peers[peer].address, scope)
                    nursery.start_soon(self._dial_within, scope, peer)
                await self._changed.wait()

    async def _accepted(self, stream: trio.SocketStream) -> None:
        try:
            session = await handshake(stream, self.chain_id, self.key, self.is_member, initiator=False)
        except (TransportError, trio.TooSlowError) as exc:
            self._refused(stream, str(exc) or TIMED_OUT)
            await stream.aclose()
            return
        await self._run(session, dialed_by=session.peer)

    def _refused(self, stream: trio.SocketStream, reason: str) -> None:
        self.metrics.p2p_sessions_refused.inc()
        try:
            address = stream.socket.getpeername()
        except OSError:
            address = "?"
        log.debug("event=peer_refused address=%s reason=%r", address, reason)
        # Keyed by kind, not by the reason's text, which names keys a stranger chooses.
        refusals.log(f"event=peers_refused kind={'timeout' if reason == TIMED_OUT else 'handshake_failed'}")

    async def _dial_within(self, scope: trio.CancelScope, peer: bytes) -> None:
        try:
            with scope:
                await self._dial_loop(peer)
        finally:
            if self._dialing.get(peer, ("", None))[1] is scope:
                del self._dialing[peer]

    async def _dial_loop(self, peer: bytes) -> None:
        """Dials `peer` at its current address while this node is the one to and is not connected to it."""
        backoff_s = RECONNECT_MIN_S
        while peer in self._dialed:
            if not self.outbox.connected(peer) and await self._dial(self._peers[peer]):
                backoff_s = RECONNECT_MIN_S
            await trio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)

    async def _dial(self, member: Member) -> bool:
        """One connection to `member`, served until it breaks; whether the handshake succeeded."""
        try:
            address = parse_address(member.address, f"address of {member.name}")
            stream = await trio.open_tcp_stream(address.host, address.port)
        except (OSError, ConfigError):
            return False
        try:
            session = await handshake(stream, self.chain_id, self.key, lambda p: p == member.pubkey, initiator=True)
        except (TransportError, trio.TooSlowError) as exc:
            # Redialled every few seconds: one line per peer and minute, with the count.
            closed = isinstance(exc, TransportError) and str(exc) == "connection closed by peer"
            why = "refused_by_peer" if closed else "timeout" if isinstance(exc, trio.TooSlowError) else "failed"
            refusals.log(f"event=handshake_failed peer={member.pubkey.hex()[:16]} reason={why}")
            await stream.aclose()
            return False
        await self._run(session, dialed_by=self.me)
        return True

    async def _run(self, session: Session, dialed_by: bytes) -> None:
        """Serves a session until it breaks. The newest session with a peer replaces older ones, but
        for one the lower key opened: kept by both sides when both dialed at once."""
        peer = session.peer
        old = self.outbox.link(peer)
        removed = not self.is_member(peer)  # by a commit while the handshake ran
        if removed or (old is not None and old.dialed_by == min(self.me, peer) != dialed_by):
            await session.aclose()
            return
        if old is not None:
            old.scope.cancel()
        send, receive = trio.open_memory_channel[bytes](SEND_QUEUE_FRAMES_MAX)
        reason = "session closed"
        with trio.CancelScope() as scope:
            link = Link(session, send, scope, dialed_by)
            self.outbox.attach(peer, link)
            self._connections_changed(peer, "peer_connected")
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write, session, receive, nursery.cancel_scope)
                    await self._read(session)
            except* TransportError as group:
                reason = str(group.exceptions[0])
            finally:
                if self.outbox.detach(peer, link):
                    self._connections_changed(peer, "peer_disconnected", reason)
                send.close()
                await session.aclose()

    def _connections_changed(self, peer: bytes, event: str, reason: str = "") -> None:
        connected = len(self.outbox.links)
        self.metrics.peers_connected.set(connected)
        log.info("event=%s peer=%s connected=%d reason=%r", event, self._name(peer), connected, reason)
        if event == "peer_connected":
            self.on_connect(peer)

    async def _write(self, session: Session, frames: trio.MemoryReceiveChannel[bytes], done: trio.CancelScope) -> None:
        async for payload in frames:
            await session.send(payload)
        done.cancel()  # the queue was closed: the peer left the membership and was sent what it was owed

    async def _read(self, session: Session) -> None:
        while True:
            payload = await session.receive()
            try:
                message = decode(payload)
            except FrameError as exc:
                if exc.kind == CONSENSUS:
                    self.metrics.messages_dropped.labels("malformed").inc()
                else:
                    self.metrics.p2p_frames_malformed.inc()
                continue
            try:
                self.handler(session.peer, message)
            except Exception:  # a frame must never take the node down
                self.metrics.p2p_frames_malformed.inc()
                log.exception("event=frame_handler_failed peer=%s kind=%d", self._name(session.peer), message.KIND)

    def _name(self, peer: bytes) -> str:
        member = self._peers.get(peer)
        return member.name if member is not None else peer.hex()[:16]  # removed meanwhile
