"""Blocks, their headers and commit certificates, and their canonical encodings.

header  = [4, chain_id, height, prev_hash, time_ms, proposer, tx_count, tx_root, receipt_root, state_root,
           validators_hash, next_validators_hash]   (the validators of this height and of the next)
block   = [header, [tx, ...]]            (each tx is its encoded bytes)
hash    = SHA-256(canonical encoding of header)
cert    = [[validator_pubkey, seal], ...] where seal signs b"alliance-commit-v1\\x00" + hash
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from consensus.messages import seal_bytes
from consensus.quorum import quorum
from node.chain.canonical import CodecError, pack, unpack
from node.chain.crypto import Verify, verify

BLOCK_VERSION = 4


class BlockError(ValueError):
    """Bytes that are not a well-formed block or certificate."""


@dataclass(frozen=True, slots=True)
class Header:
    chain_id: str
    height: int
    prev_hash: bytes
    time_ms: int
    proposer: bytes
    tx_count: int
    tx_root: bytes
    receipt_root: bytes
    state_root: bytes
    validators_hash: bytes
    next_validators_hash: bytes

    def wire(self) -> list[Any]:
        return [
            BLOCK_VERSION, self.chain_id, self.height, self.prev_hash,
            self.time_ms, self.proposer, self.tx_count, self.tx_root, self.receipt_root, self.state_root,
            self.validators_hash, self.next_validators_hash,
        ]

    def encode(self) -> bytes:
        return pack(self.wire())

    def hash(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()


@dataclass(frozen=True, slots=True)
class Block:
    header: Header
    txs: tuple[bytes, ...]

    def encode(self) -> bytes:
        return pack([self.header.wire(), list(self.txs)])


def header_from_wire(obj: Any) -> Header:
    if not isinstance(obj, list) or len(obj) != 12 or type(obj[0]) is not int or obj[0] != BLOCK_VERSION:
        raise BlockError(f"header must be [{BLOCK_VERSION}, chain_id, height, prev_hash, time, proposer, "
                         "tx_count, tx_root, receipt_root, state_root, validators_hash, next_validators_hash]")
    chain_id, height, time_ms, tx_count = obj[1], obj[2], obj[4], obj[6]
    ints_ok = all(type(i) is int and i >= 0 for i in (height, time_ms, tx_count)) and height > 0
    hashes_ok = all(isinstance(obj[i], bytes) and len(obj[i]) == 32 for i in (3, 5, 7, 8, 9, 10, 11))
    if not (isinstance(chain_id, str) and ints_ok and hashes_ok):
        raise BlockError("header fields have the wrong types")
    return Header(*obj[1:])


def decode_block(data: bytes) -> Block:
    try:
        obj = unpack(data)
    except CodecError as exc:
        raise BlockError(f"block: {exc}") from None
    if not isinstance(obj, list) or len(obj) != 2 or not isinstance(obj[1], list):
        raise BlockError("block must be [header, [tx, ...]]")
    if not all(isinstance(tx, bytes) for tx in obj[1]):
        raise BlockError("block transactions must be binary")
    return Block(header_from_wire(obj[0]), tuple(obj[1]))


def stored_block_txs(data: bytes) -> list[bytes]:
    """The transactions of a block this node stored, without checking that its encoding is canonical.

    The node checked the block before storing it; reading one transaction back
    should not cost the checks of all the others (a tenth of the time).
    """
    try:
        obj = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BlockError(f"stored block: not MessagePack ({exc.__class__.__name__})") from None
    if not isinstance(obj, list) or len(obj) != 2 or not isinstance(obj[1], list):
        raise BlockError("stored block must be [header, [tx, ...]]")
    txs: list[bytes] = obj[1]
    return txs


def encode_certificate(seals: tuple[tuple[bytes, bytes], ...]) -> bytes:
    return pack([[validator, seal] for validator, seal in seals])


def decode_certificate(data: bytes) -> tuple[tuple[bytes, bytes], ...]:
    try:
        obj = unpack(data)
    except CodecError as exc:
        raise BlockError(f"certificate: {exc}") from None
    if not isinstance(obj, list) or not all(_is_seal_pair(p) for p in obj):
        raise BlockError("certificate must be [[validator (32 bytes), seal (64 bytes)], ...]")
    return tuple((v, s) for v, s in obj)


def _is_seal_pair(pair: Any) -> bool:
    if not isinstance(pair, list) or len(pair) != 2:
        return False
    validator, seal = pair
    return isinstance(validator, bytes) and len(validator) == 32 and isinstance(seal, bytes) and len(seal) == 64


@dataclass(frozen=True, slots=True)
class Sealed:
    """What a certificate's seals establish for a block hash.

    `sealed` counts the distinct validators whose seal verifies; `fault` names
    the first seal that is not a distinct validator's valid one (a stored
    certificate may carry such seals; a proof may not).
    """

    sealed: int
    quorum: int
    fault: str | None

    @property
    def quorate(self) -> bool:
        return self.sealed >= self.quorum


def verify_certificate(
    block_hash: bytes, certificate: Sequence[tuple[bytes, bytes]], validators: Sequence[bytes], check: Verify = verify
) -> Sealed:
    """Checks every seal of `certificate` over `block_hash` against the validator set, each with `check`."""
    members, seen, sealed = set(validators), set(), set()
    faults: list[str] = []
    message = seal_bytes(block_hash)
    for i, (validator, seal) in enumerate(certificate):
        if validator not in members:
            faults.append(f"signature {i} is by {validator.hex()}, not a validator of that height")
            continue
        if validator in seen:
            faults.append(f"validator {validator.hex()} signs more than once")
            if validator in sealed:
                continue
        seen.add(validator)
        if check(validator, message, seal):
            sealed.add(validator)
        else:
            faults.append(f"signature {i} by {validator.hex()} does not verify")
    return Sealed(len(sealed), quorum(len(validators)), faults[0] if faults else None)
