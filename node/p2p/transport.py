"""Authenticated, encrypted sessions between members over TCP.

Handshake (each step one length-prefixed frame, both sides in parallel):

1. hello = packb(["alliance-p2p-v1", chain_id, identity_pubkey, kx_pubkey]): an
   Ed25519 identity and a fresh X25519 key (libsodium crypto_kx).
2. auth  = Ed25519 signature over b"alliance-p2p-auth-v1\\x00" + role + transcript,
   transcript = SHA-256(chain_id + NUL + initiator hello + responder hello),
   role = b"I" or b"R". Each side checks the other's signature and membership.
3. Session keys from crypto_kx; each side sends its secretstream header, and from
   then on every frame is one XChaCha20-Poly1305 secretstream message.

Frames are a 4-byte big-endian length and the body; a length over the cap
ends the session before anything is allocated.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass

import msgpack
import nacl.bindings as sodium
import trio
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey

from node.chain.crypto import verify

PROTOCOL = "alliance-p2p-v1"
AUTH_PREFIX = b"alliance-p2p-auth-v1\x00"
HANDSHAKE_FRAME_BYTES_MAX = 512
FRAME_BYTES_MAX = 16 * 1024 * 1024
HANDSHAKE_TIMEOUT_S = 5.0
_LENGTH = struct.Struct(">I")
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE


class TransportError(Exception):
    """The peer broke the protocol, failed authentication or went away."""


class FrameReader:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            chunk = await self._stream.receive_some(min(max(65536, size - len(self._buffer)), 1 << 20))
            if not chunk:
                raise TransportError("connection closed by peer")
            self._buffer += chunk

    async def read(self, max_bytes: int) -> bytes:
        await self._fill(4)
        (length,) = _LENGTH.unpack_from(self._buffer)
        if length > max_bytes:
            raise TransportError(f"frame of {length} bytes exceeds the {max_bytes}-byte cap")
        await self._fill(4 + length)
        body = bytes(self._buffer[4 : 4 + length])
        del self._buffer[: 4 + length]
        return body


def frame(body: bytes) -> bytes:
    return _LENGTH.pack(len(body)) + body


@dataclass
class Session:
    """An authenticated, encrypted connection to the member `peer`."""

    peer: bytes
    stream: trio.abc.Stream
    reader: FrameReader
    _push: sodium.crypto_secretstream_xchacha20poly1305_state
    _pull: sodium.crypto_secretstream_xchacha20poly1305_state

    def __post_init__(self) -> None:
        self._send_lock = trio.Lock()

    async def send(self, payload: bytes) -> None:
        async with self._send_lock:
            sealed = sodium.crypto_secretstream_xchacha20poly1305_push(self._push, payload, None, _TAG_MESSAGE)
            try:
                await self.stream.send_all(frame(sealed))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise TransportError(f"send failed: {exc}") from None

    async def receive(self) -> bytes:
        try:
            sealed = await self.reader.read(FRAME_BYTES_MAX + 17)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise TransportError(f"receive failed: {exc}") from None
        try:
            payload, _tag = sodium.crypto_secretstream_xchacha20poly1305_pull(self._pull, sealed, None)
        except Exception:  # nacl raises RuntimeError/CryptoError on forged or reordered frames
            raise TransportError("frame failed authentication") from None
        return bytes(payload)

    async def aclose(self) -> None:
        await self.stream.aclose()


def _hello(chain_id: str, identity: bytes, kx_public: bytes) -> bytes:
    return msgpack.packb([PROTOCOL, chain_id, identity, kx_public], use_bin_type=True)  # type: ignore[no-any-return]


def _parse_hello(data: bytes, chain_id: str) -> tuple[bytes, bytes]:
    try:
        protocol, their_chain, identity, kx_public = msgpack.unpackb(data, raw=False)
    except Exception:
        raise TransportError("malformed hello") from None
    if protocol != PROTOCOL:
        raise TransportError(f"unknown protocol {protocol!r}")
    if their_chain != chain_id:
        raise TransportError(f"peer is on chain {their_chain!r}, not {chain_id!r}")
    if not (isinstance(identity, bytes) and len(identity) == 32 and isinstance(kx_public, bytes) and len(kx_public) == 32):
        raise TransportError("malformed hello keys")
    return identity, kx_public


async def handshake(
    stream: trio.abc.Stream,
    chain_id: str,
    key: SigningKey,
    is_member: Callable[[bytes], bool],
    initiator: bool,
) -> Session:
    """Runs the handshake; raises TransportError if the peer is not an authenticated member."""
    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
        try:
            return await _handshake(stream, chain_id, key, is_member, initiator)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise TransportError(f"connection lost during handshake: {exc}") from None


async def _handshake(
    stream: trio.abc.Stream, chain_id: str, key: SigningKey, is_member: Callable[[bytes], bool], initiator: bool
) -> Session:
    reader = FrameReader(stream)
    kx_public, kx_secret = sodium.crypto_kx_keypair()
    mine = _hello(chain_id, bytes(key.verify_key), kx_public)
    await stream.send_all(frame(mine))
    theirs = await reader.read(HANDSHAKE_FRAME_BYTES_MAX)
    peer, peer_kx = _parse_hello(theirs, chain_id)
    if not is_member(peer):
        raise TransportError(f"{peer.hex()} is not a member of chain {chain_id!r}")
    first, second = (mine, theirs) if initiator else (theirs, mine)
    transcript = hashlib.sha256(chain_id.encode() + b"\x00" + first + second).digest()
    my_role, their_role = (b"I", b"R") if initiator else (b"R", b"I")
    await stream.send_all(frame(key.sign(AUTH_PREFIX + my_role + transcript).signature))
    signature = await reader.read(HANDSHAKE_FRAME_BYTES_MAX)
    if not verify(peer, AUTH_PREFIX + their_role + transcript, signature):
        raise TransportError(f"{peer.hex()} failed to prove its identity")
    try:
        if initiator:
            rx, tx = sodium.crypto_kx_client_session_keys(kx_public, kx_secret, peer_kx)
        else:
            rx, tx = sodium.crypto_kx_server_session_keys(kx_public, kx_secret, peer_kx)
    except CryptoError:
        raise TransportError("peer sent an unusable key-exchange key") from None
    push = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(push, tx)
    await stream.send_all(frame(header))
    pull = sodium.crypto_secretstream_xchacha20poly1305_state()
    their_header = await reader.read(HANDSHAKE_FRAME_BYTES_MAX)
    try:
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(pull, their_header, rx)
    except Exception:
        raise TransportError("malformed stream header") from None
    return Session(peer, stream, reader, push, pull)
