"""Consensus messages, their signed envelope and their wire encoding.

Every message travels inside `Signed`, whose signature covers
MESSAGE_PREFIX + chain id + NUL + the message's encoding. A COMMIT also carries
a seal, the validator's signature over COMMIT_SEAL_PREFIX + block hash; 2f+1
seals form a block's commit certificate, checkable offline with only the
validator set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Union

import msgpack

MESSAGE_PREFIX = b"alliance-msg-v1\x00"
COMMIT_SEAL_PREFIX = b"alliance-commit-v1\x00"
HASH_BYTES = 32
KEY_BYTES = 32
SIGNATURE_BYTES = 64


class MessageError(ValueError):
    """Bytes that do not decode to a well-formed consensus message."""


class Crypto(Protocol):
    """Signing with this replica's key and checking others' signatures."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool: ...


@dataclass(frozen=True)
class Prepare:
    height: int
    round: int
    block_hash: bytes


@dataclass(frozen=True)
class Commit:
    height: int
    round: int
    block_hash: bytes
    seal: bytes


@dataclass(frozen=True)
class PreparedCertificate:
    """A block that 2f+1 validators prepared in `round`."""

    round: int
    block: bytes
    block_hash: bytes
    prepares: tuple[Signed, ...]


@dataclass(frozen=True)
class RoundChange:
    height: int
    round: int
    prepared: PreparedCertificate | None


@dataclass(frozen=True)
class Proposal:
    height: int
    round: int
    block: bytes
    block_hash: bytes
    justification: tuple[Signed, ...]  # 2f+1 round changes for `round` when round > 0


Message = Union[Proposal, Prepare, Commit, RoundChange]


@dataclass(frozen=True)
class Signed:
    sender: bytes
    message: Message
    signature: bytes


def seal_bytes(block_hash: bytes) -> bytes:
    return COMMIT_SEAL_PREFIX + block_hash


def signing_bytes(chain_id: str, message: Message) -> bytes:
    return MESSAGE_PREFIX + chain_id.encode() + b"\x00" + _pack(_message_wire(message))


def sign(crypto: Crypto, chain_id: str, message: Message) -> Signed:
    return Signed(crypto.public_key, message, crypto.sign(signing_bytes(chain_id, message)))


# Wire form: Signed = [sender, signature, kind, fields...]; kinds are small ints.
_PROPOSAL, _PREPARE, _COMMIT, _ROUND_CHANGE = 1, 2, 3, 4


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _message_wire(m: Message) -> list[Any]:
    if isinstance(m, Proposal):
        just = [signed_to_wire(s) for s in m.justification]
        return [_PROPOSAL, m.height, m.round, m.block, m.block_hash, just]
    if isinstance(m, Prepare):
        return [_PREPARE, m.height, m.round, m.block_hash]
    if isinstance(m, Commit):
        return [_COMMIT, m.height, m.round, m.block_hash, m.seal]
    return [_ROUND_CHANGE, m.height, m.round, prepared_to_wire(m.prepared)]


def prepared_to_wire(p: PreparedCertificate | None) -> list[Any] | None:
    if p is None:
        return None
    return [p.round, p.block, p.block_hash, [signed_to_wire(s) for s in p.prepares]]


def signed_to_wire(s: Signed) -> list[Any]:
    return [s.sender, s.signature, _message_wire(s.message)]


def encode_signed(s: Signed) -> bytes:
    return _pack(signed_to_wire(s))


def decode_signed(data: bytes) -> Signed:
    try:
        obj = msgpack.unpackb(data, raw=False, use_list=True)
        return signed_from_wire(obj)
    except MessageError:
        raise
    except (ValueError, TypeError, RecursionError, KeyError, IndexError, msgpack.UnpackException) as exc:
        raise MessageError(f"malformed consensus message ({exc.__class__.__name__})") from None


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise MessageError(what)


def uint_field(v: Any) -> int:
    _require(type(v) is int and 0 <= v < 2**63, "height and round must be non-negative integers")
    return int(v)


def _bin(v: Any, size: int | None = None) -> bytes:
    _require(isinstance(v, bytes) and (size is None or len(v) == size), "bad binary field")
    return bytes(v)


def signed_from_wire(obj: Any) -> Signed:
    _require(isinstance(obj, list) and len(obj) == 3, "signed message must be [sender, signature, message]")
    sender, signature, message = obj
    return Signed(_bin(sender, KEY_BYTES), _message_from(message), _bin(signature, SIGNATURE_BYTES))


def _message_from(obj: Any) -> Message:
    _require(isinstance(obj, list) and len(obj) >= 4, "message must be an array")
    _require(type(obj[0]) is int, "message kind must be an integer")
    kind, height, round_ = obj[0], uint_field(obj[1]), uint_field(obj[2])
    if kind == _PROPOSAL and len(obj) == 6:
        just = tuple(_nested_from_wire(s, _ROUND_CHANGE) for s in _list(obj[5]))
        return Proposal(height, round_, _bin(obj[3]), _bin(obj[4], HASH_BYTES), just)
    if kind == _PREPARE and len(obj) == 4:
        return Prepare(height, round_, _bin(obj[3], HASH_BYTES))
    if kind == _COMMIT and len(obj) == 5:
        return Commit(height, round_, _bin(obj[3], HASH_BYTES), _bin(obj[4], SIGNATURE_BYTES))
    if kind == _ROUND_CHANGE and len(obj) == 4:
        return RoundChange(height, round_, prepared_from_wire(obj[3]))
    raise MessageError(f"unknown message kind {kind!r}")


def _nested_from_wire(obj: Any, kind: int) -> Signed:
    """A signed message inside another: a justification holds round changes, a certificate prepares.

    The kind is checked before decoding, so nothing nests deeper than
    proposal > round change > certificate > prepare.
    """
    ok = isinstance(obj, list) and len(obj) == 3 and isinstance(obj[2], list) and obj[2][:1] == [kind]
    _require(ok, "unexpected message kind inside a justification or certificate")
    return signed_from_wire(obj)


def _list(v: Any) -> list[Any]:
    _require(isinstance(v, list), "expected an array")
    return list(v)


def prepared_from_wire(obj: Any) -> PreparedCertificate | None:
    if obj is None:
        return None
    _require(isinstance(obj, list) and len(obj) == 4, "prepared certificate must have 4 fields")
    prepares = tuple(_nested_from_wire(s, _PREPARE) for s in _list(obj[3]))
    return PreparedCertificate(uint_field(obj[0]), _bin(obj[1]), _bin(obj[2], HASH_BYTES), prepares)
