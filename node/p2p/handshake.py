"""The member handshake and the encrypted channel after it, without I/O.

Handshake (each step one length-prefixed frame, both sides in parallel):

1. hello = packb(["alliance-p2p-v1", chain_id, identity_pubkey, kx_pubkey]): an
   Ed25519 identity and a fresh X25519 key (libsodium crypto_kx).
2. auth  = Ed25519 signature over b"alliance-p2p-auth-v1\\x00" + role + transcript,
   transcript = SHA-256(chain_id + NUL + initiator hello + responder hello),
   role = b"I" or b"R". Each side checks the other's signature and membership.
3. Session keys from crypto_kx; each side sends its secretstream header, and from
   then on every frame is one XChaCha20-Poly1305 secretstream message (Channel).

`Handshake.start()` gives the bytes to send first; `receive_data(data)` takes
what arrived and gives what to send next, until `established` is set, or
raises HandshakeRefused.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import msgpack
import nacl.bindings as sodium
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey

from node.chain.crypto import verify
from node.p2p.framing import Deframer, FramingError, frame

PROTOCOL = "alliance-p2p-v1"
AUTH_PREFIX = b"alliance-p2p-auth-v1\x00"
HANDSHAKE_FRAME_BYTES_MAX = 512
KEY_BYTES = 32
_TAG_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE


class Refusal(enum.Enum):
    FRAME_TOO_LARGE = "frame_too_large"
    MALFORMED_HELLO = "malformed_hello"
    WRONG_PROTOCOL = "wrong_protocol"
    WRONG_CHAIN = "wrong_chain"
    NOT_MEMBER = "not_member"
    BAD_SIGNATURE = "bad_signature"
    BAD_KX_KEY = "bad_kx_key"
    BAD_STREAM_HEADER = "bad_stream_header"


class HandshakeRefused(Exception):
    """The peer broke the handshake or is not an authenticated member; `refusal` says how."""

    def __init__(self, refusal: Refusal, reason: str) -> None:
        super().__init__(reason)
        self.refusal = refusal


class ChannelError(Exception):
    """A frame that fails authentication: forged, reordered, replayed, or one was dropped."""


class Channel:
    """The two secretstreams of an established session: one to seal what is sent, one to open what arrives."""

    def __init__(
        self,
        push: sodium.crypto_secretstream_xchacha20poly1305_state,
        pull: sodium.crypto_secretstream_xchacha20poly1305_state,
    ) -> None:
        self._push = push
        self._pull = pull

    def seal(self, payload: bytes) -> bytes:
        """The frame that carries `payload`, prefix included."""
        return frame(sodium.crypto_secretstream_xchacha20poly1305_push(self._push, payload, None, _TAG_MESSAGE))

    def open(self, sealed: bytes) -> bytes:
        try:
            payload, _tag = sodium.crypto_secretstream_xchacha20poly1305_pull(self._pull, sealed, None)
        except Exception:  # nacl raises RuntimeError/CryptoError on forged or reordered frames
            raise ChannelError("frame failed authentication") from None
        return bytes(payload)


@dataclass(frozen=True)
class Established:
    peer: bytes  # the authenticated member's identity key
    channel: Channel
    rest: bytes  # what arrived after the peer's stream header: the start of its first frames


def hello(chain_id: str, identity: bytes, kx_public: bytes) -> bytes:
    return msgpack.packb([PROTOCOL, chain_id, identity, kx_public], use_bin_type=True)  # type: ignore[no-any-return]


def parse_hello(data: bytes, chain_id: str) -> tuple[bytes, bytes]:
    """The peer's identity and key-exchange keys."""
    try:
        protocol, their_chain, identity, kx_public = msgpack.unpackb(data, raw=False)
    except Exception:
        raise HandshakeRefused(Refusal.MALFORMED_HELLO, "malformed hello") from None
    if protocol != PROTOCOL:
        raise HandshakeRefused(Refusal.WRONG_PROTOCOL, f"unknown protocol {protocol!r}")
    if their_chain != chain_id:
        raise HandshakeRefused(Refusal.WRONG_CHAIN, f"peer is on chain {their_chain!r}, not {chain_id!r}")
    if not all(isinstance(k, bytes) and len(k) == KEY_BYTES for k in (identity, kx_public)):
        raise HandshakeRefused(Refusal.MALFORMED_HELLO, "malformed hello keys")
    return identity, kx_public


def transcript(chain_id: str, initiator_hello: bytes, responder_hello: bytes) -> bytes:
    return hashlib.sha256(chain_id.encode() + b"\x00" + initiator_hello + responder_hello).digest()


class Handshake:
    """One side of the handshake; `is_member` says which identities it accepts."""

    def __init__(self, chain_id: str, key: SigningKey, is_member: Callable[[bytes], bool], initiator: bool) -> None:
        self.chain_id = chain_id
        self.key = key
        self.is_member = is_member
        self.initiator = initiator
        self.established: Established | None = None
        self._deframer = Deframer()
        self._kx_public, self._kx_secret = sodium.crypto_kx_keypair()
        self._hello = hello(chain_id, bytes(key.verify_key), self._kx_public)
        self._steps = [self._on_hello, self._on_auth, self._on_stream_header]
        self._peer = b""
        self._peer_kx = b""
        self._transcript = b""
        self._pull_key = b""
        self._push: sodium.crypto_secretstream_xchacha20poly1305_state | None = None

    def start(self) -> bytes:
        return frame(self._hello)

    def receive_data(self, data: bytes) -> bytes:
        """Takes what arrived; gives what to send now (maybe nothing). Raises HandshakeRefused."""
        self._deframer.receive_data(data)
        out = b""
        while self._steps:
            try:
                body = self._deframer.next_frame(HANDSHAKE_FRAME_BYTES_MAX)
            except FramingError as exc:
                raise HandshakeRefused(Refusal.FRAME_TOO_LARGE, str(exc)) from None
            if body is None:
                break
            out += self._steps.pop(0)(body)
        return out

    def _on_hello(self, theirs: bytes) -> bytes:
        self._peer, self._peer_kx = parse_hello(theirs, self.chain_id)
        if not self.is_member(self._peer):
            raise HandshakeRefused(Refusal.NOT_MEMBER, f"{self._peer.hex()} is not a member of chain {self.chain_id!r}")
        first, second = (self._hello, theirs) if self.initiator else (theirs, self._hello)
        self._transcript = transcript(self.chain_id, first, second)
        role = b"I" if self.initiator else b"R"
        return frame(self.key.sign(AUTH_PREFIX + role + self._transcript).signature)

    def _on_auth(self, signature: bytes) -> bytes:
        their_role = b"R" if self.initiator else b"I"
        if not verify(self._peer, AUTH_PREFIX + their_role + self._transcript, signature):
            raise HandshakeRefused(Refusal.BAD_SIGNATURE, f"{self._peer.hex()} failed to prove its identity")
        try:
            if self.initiator:
                rx, tx = sodium.crypto_kx_client_session_keys(self._kx_public, self._kx_secret, self._peer_kx)
            else:
                rx, tx = sodium.crypto_kx_server_session_keys(self._kx_public, self._kx_secret, self._peer_kx)
        except CryptoError:
            raise HandshakeRefused(Refusal.BAD_KX_KEY, "peer sent an unusable key-exchange key") from None
        self._pull_key = rx
        self._push = sodium.crypto_secretstream_xchacha20poly1305_state()
        return frame(sodium.crypto_secretstream_xchacha20poly1305_init_push(self._push, tx))

    def _on_stream_header(self, header: bytes) -> bytes:
        assert self._push is not None  # set by _on_auth, the step before
        pull = sodium.crypto_secretstream_xchacha20poly1305_state()
        try:
            sodium.crypto_secretstream_xchacha20poly1305_init_pull(pull, header, self._pull_key)
        except Exception:
            raise HandshakeRefused(Refusal.BAD_STREAM_HEADER, "malformed stream header") from None
        self.established = Established(self._peer, Channel(self._push, pull), self._deframer.buffered)
        return b""
