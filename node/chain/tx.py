"""Transactions: encoding, hashing and signatures exactly as the client protocol says."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from node.chain.canonical import CodecError, pack, unpack

TX_VERSION = 1
TX_BYTES_MAX = 64 * 1024
SIGNING_PREFIX = b"alliance-tx-v1\x00"
NONCE_MAX = 2**64 - 1
# A canonical tx ends with its 64-byte signature encoded as bin 8: c4 40 + 64 bytes.
SIGNATURE_TAIL_BYTES = 2 + 64
# The `data.reason` of a transaction for another chain, and of one whose signature does not verify.
WRONG_CHAIN_ID, BAD_SIGNATURE = "wrong_chain_id", "bad_signature"


class TxError(ValueError):
    """A refused transaction; `reason` is the spec's `data.reason`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Transaction:
    chain_id: str
    sender: bytes
    nonce: int
    family: str
    op: str
    args: dict[str, Any]
    signature: bytes
    raw: bytes
    hash: bytes

    @property
    def signing_bytes(self) -> bytes:
        # The body is the tx array less its last element: fixarray 7 instead of 8.
        return SIGNING_PREFIX + b"\x97" + self.raw[1:-SIGNATURE_TAIL_BYTES]

    def verify_signature(self) -> bool:
        try:
            VerifyKey(self.sender).verify(self.signing_bytes, self.signature)
        except BadSignatureError:
            return False
        return True


def _check_fields(obj: Any) -> None:
    if type(obj) is not list or len(obj) != 8:
        raise TxError("malformed", "a transaction is an array of 8 elements")
    version, chain_id, sender, nonce, family, op, args, signature = obj
    # One test per field, the common case first: this runs for every transaction a node sees.
    if type(version) is not int or version != TX_VERSION:
        raise TxError("malformed", "version must be 1")
    if type(chain_id) is not str:
        raise TxError("malformed", "chain_id must be a string")
    if type(sender) is not bytes or len(sender) != 32:
        raise TxError("malformed", "sender must be 32 bytes")
    if type(nonce) is not int or not 0 <= nonce <= NONCE_MAX:
        raise TxError("malformed", "nonce must be an integer in 0..2**64-1")
    if type(family) is not str or type(op) is not str:
        raise TxError("malformed", "family and op must be strings")
    if type(args) is not dict:
        raise TxError("malformed", "args must be a map")
    if type(signature) is not bytes or len(signature) != 64:
        raise TxError("malformed", "signature must be 64 bytes")


def decode_tx(raw: bytes) -> Transaction:
    """Parses and checks the structure of an encoded transaction (not its signature)."""
    if len(raw) > TX_BYTES_MAX:
        raise TxError("oversize", f"transaction is {len(raw)} bytes, more than {TX_BYTES_MAX}")
    try:
        obj = unpack(raw)
    except CodecError as exc:
        raise TxError(exc.reason, exc.detail) from None
    _check_fields(obj)
    _, chain_id, sender, nonce, family, op, args, signature = obj
    return Transaction(chain_id, sender, nonce, family, op, args, signature, raw, tx_hash_of(raw))


def decode_for_chain(raw: bytes, chain_id: str) -> Transaction:
    """The decoded transaction if it is for `chain_id` (its signature unchecked); else TxError."""
    tx = decode_tx(raw)
    if tx.chain_id != chain_id:
        raise TxError(WRONG_CHAIN_ID, f"chain id {tx.chain_id!r} is not {chain_id!r}")
    return tx


def verified_tx(raw: bytes, chain_id: str) -> Transaction:
    """The transaction if it decodes, is for `chain_id` and its signature verifies; else TxError."""
    tx = decode_for_chain(raw, chain_id)
    if not tx.verify_signature():
        raise TxError(BAD_SIGNATURE, "the signature does not verify")
    return tx


def sign_tx(
    key: SigningKey, chain_id: str, family: str, op: str, args: dict[str, Any], nonce: int
) -> Transaction:
    """Builds and signs a transaction (client side)."""
    sender = bytes(key.verify_key)
    body = [TX_VERSION, chain_id, sender, nonce, family, op, args]
    signature = key.sign(SIGNING_PREFIX + pack(body)).signature
    return decode_tx(pack(body + [signature]))


def tx_json(tx: Transaction) -> dict[str, Any]:
    """The `tx` object of `get_tx`: binary values as hex."""
    return {
        "chain_id": tx.chain_id,
        "sender": tx.sender.hex(),
        "nonce": tx.nonce,
        "family": tx.family,
        "op": tx.op,
        "args": to_json(tx.args),
    }


def to_json(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def tx_hash_of(raw: bytes) -> bytes:
    """The hash of a canonical encoded transaction, without decoding it."""
    return hashlib.sha256(SIGNING_PREFIX + b"\x97" + raw[1:-SIGNATURE_TAIL_BYTES]).digest()
