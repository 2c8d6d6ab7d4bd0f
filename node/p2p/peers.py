"""Sessions with the other validators: dialing, accepting, and decoding frames for the handler.

Every pair of validators keeps one session; the one listed first in the
genesis dials, the other accepts, so a restarted node is reconnected by
whichever side is up. Each session has a bounded send queue: a peer that does
not read loses frames (counted), it never stalls the node.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import trio
from nacl.signing import SigningKey

from node.chain.membership import Member
from node.config import parse_address
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

Handler = Callable[[bytes, Message], None]


class PeerNetwork:
    def __init__(
        self,
        chain_id: str,
        key: SigningKey,
        validators: tuple[Member, ...],
        metrics: Metrics,
        outbox: PeerOutbox,
        handler: Handler,
        on_connect: Callable[[bytes], None],
    ) -> None:
        self.chain_id = chain_id
        self.key = key
        self.me = bytes(key.verify_key)
        self.metrics = metrics
        self.members = {m.pubkey: m for m in validators}
        self._order = [m.pubkey for m in validators]
        self.outbox = outbox  # each session is attached there while it runs
        self.handler = handler  # each frame received
        self.on_connect = on_connect  # each peer as its session opens

    # ---- sessions ---------------------------------------------------------------------

    async def serve(self, sock: socket.socket, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._accepted, [listener])
            for peer in self._order:
                if self._dials(peer):
                    nursery.start_soon(self._dial_loop, self.members[peer])
            task_status.started()

    def _dials(self, peer: bytes) -> bool:
        """The validator listed first dials; the other accepts."""
        return peer != self.me and self._order.index(self.me) < self._order.index(peer)

    def _is_member(self, peer: bytes) -> bool:
        return peer in self.members and peer != self.me

    async def _accepted(self, stream: trio.SocketStream) -> None:
        try:
            session = await handshake(stream, self.chain_id, self.key, self._is_member, initiator=False)
        except (TransportError, trio.TooSlowError) as exc:
            self._refused(stream, str(exc) or TIMED_OUT)
            await stream.aclose()
            return
        await self._run(session)

    def _refused(self, stream: trio.SocketStream, reason: str) -> None:
        self.metrics.p2p_sessions_refused.inc()
        try:
            address = stream.socket.getpeername()
        except OSError:
            address = "?"
        log.debug("event=peer_refused address=%s reason=%r", address, reason)
        # Keyed by kind, not by the reason's text, which names keys a stranger chooses.
        refusals.log(f"event=peers_refused kind={'timeout' if reason == TIMED_OUT else 'handshake_failed'}")

    async def _dial_loop(self, member: Member) -> None:
        address = parse_address(member.address, f"address of {member.name}")
        backoff_s = RECONNECT_MIN_S
        while True:
            try:
                stream = await trio.open_tcp_stream(address.host, address.port)
            except OSError:
                await trio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)
                continue
            try:
                session = await handshake(stream, self.chain_id, self.key, lambda p: p == member.pubkey, initiator=True)
            except (TransportError, trio.TooSlowError) as exc:
                log.warning("event=handshake_failed peer=%s reason=%r", member.name, str(exc) or "timeout")
                await stream.aclose()
            else:
                backoff_s = RECONNECT_MIN_S
                await self._run(session)
            await trio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, RECONNECT_MAX_S)

    async def _run(self, session: Session) -> None:
        """Serves a session until it breaks; the newest session with a peer replaces older ones."""
        peer = session.peer
        old = self.outbox.link(peer)
        if old is not None:
            old.scope.cancel()
        send, receive = trio.open_memory_channel[bytes](SEND_QUEUE_FRAMES_MAX)
        reason = "session closed"
        with trio.CancelScope() as scope:
            link = Link(session, send, scope)
            self.outbox.attach(peer, link)
            self._connections_changed(peer, "peer_connected")
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write, session, receive)
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
        log.info("event=%s peer=%s connected=%d reason=%r", event, self.members[peer].name, connected, reason)
        if event == "peer_connected":
            self.on_connect(peer)

    async def _write(self, session: Session, frames: trio.MemoryReceiveChannel[bytes]) -> None:
        async for payload in frames:
            await session.send(payload)

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
                log.exception("event=frame_handler_failed peer=%s kind=%d", self.members[session.peer].name, message.KIND)
