"""Authenticated, encrypted sessions between members over TCP: the trio shell.

The handshake (handshake.Handshake) and the framing (framing.Deframer) are
machines without I/O; this module moves bytes between a trio stream and them.
The handshake must complete within HANDSHAKE_TIMEOUT_S.
"""

from __future__ import annotations

from collections.abc import Callable

import trio
from nacl.signing import SigningKey

from node.p2p.framing import Deframer, FramingError
from node.p2p.handshake import Channel, ChannelError, Handshake, HandshakeRefused

FRAME_BYTES_MAX = 16 * 1024 * 1024
SEALED_BYTES_MAX = FRAME_BYTES_MAX + 17  # a secretstream message adds 17 bytes
HANDSHAKE_TIMEOUT_S = 5.0
_IO_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class TransportError(Exception):
    """The peer broke the protocol, failed authentication or went away."""


async def _receive_some(stream: trio.abc.Stream, wanted: int) -> bytes:
    chunk = await stream.receive_some(min(max(65536, wanted), 1 << 20))
    if not chunk:
        raise TransportError("connection closed by peer")
    return bytes(chunk)


class FrameReader:
    """Whole frames from a stream."""

    def __init__(self, stream: trio.abc.Stream, deframer: Deframer | None = None) -> None:
        self._stream = stream
        self._deframer = deframer or Deframer()

    async def read(self, max_bytes: int) -> bytes:
        while True:
            try:
                body = self._deframer.next_frame(max_bytes)
            except FramingError as exc:
                raise TransportError(str(exc)) from None
            if body is not None:
                return body
            self._deframer.receive_data(await _receive_some(self._stream, self._deframer.missing))


class Session:
    """An authenticated, encrypted connection to the member `peer`."""

    def __init__(self, peer: bytes, stream: trio.abc.Stream, channel: Channel, rest: bytes = b"") -> None:
        self.peer = peer
        self.stream = stream
        self._channel = channel
        deframer = Deframer()
        deframer.receive_data(rest)
        self._reader = FrameReader(stream, deframer)
        self._send_lock = trio.Lock()

    async def send(self, payload: bytes) -> None:
        async with self._send_lock:
            try:
                await self.stream.send_all(self._channel.seal(payload))
            except _IO_ERRORS as exc:
                raise TransportError(f"send failed: {exc}") from None

    async def receive(self) -> bytes:
        try:
            sealed = await self._reader.read(SEALED_BYTES_MAX)
        except _IO_ERRORS as exc:
            raise TransportError(f"receive failed: {exc}") from None
        try:
            return self._channel.open(sealed)
        except ChannelError as exc:
            raise TransportError(str(exc)) from None

    async def aclose(self) -> None:
        await self.stream.aclose()


async def handshake(
    stream: trio.abc.Stream,
    chain_id: str,
    key: SigningKey,
    is_member: Callable[[bytes], bool],
    initiator: bool,
) -> Session:
    """Runs the handshake; raises TransportError if the peer is not an authenticated member."""
    machine = Handshake(chain_id, key, is_member, initiator)
    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
        try:
            await stream.send_all(machine.start())
            while machine.established is None:
                reply = machine.receive_data(await _receive_some(stream, 65536))
                if reply:
                    await stream.send_all(reply)
        except HandshakeRefused as exc:
            raise TransportError(str(exc)) from None
        except _IO_ERRORS as exc:
            raise TransportError(f"connection lost during handshake: {exc}") from None
    established = machine.established
    return Session(established.peer, stream, established.channel, established.rest)
