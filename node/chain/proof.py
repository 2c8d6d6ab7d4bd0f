"""Verifying a transaction proof: a committed transaction, its receipt and the certificate of its block,
checkable with nothing but the genesis (docs/proofs.md).

Pure code, no I/O of its own, so that clients and verifiers can use it; the node builds proofs in
node/api/lookup.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from node.chain.block import BLOCK_VERSION, Header, verify_certificate
from node.chain.execution import Receipt, receipt_bytes
from node.chain.merkle import verify_path
from node.chain.tx import BAD_SIGNATURE, WRONG_CHAIN_ID, Transaction, TxError, verified_tx

PROOF_VERSION = 1
UINT64_MAX = 2**64 - 1
_LOWER_HEX = re.compile(r"(?:[0-9a-f]{2})+")

PROOF_KEYS = ("version", "tx_hash", "tx", "receipt", "index", "tx_path", "receipt_path", "header", "commit")
RECEIPT_KEYS = ("code", "log")
HEADER_KEYS = ("version", "chain_id", "height", "prev_hash", "time", "proposer", "tx_count", "tx_root",
               "receipt_root", "state_root")
COMMIT_KEYS = ("height", "block_hash", "signatures")
SIGNATURE_KEYS = ("validator", "signature")


class ProofInvalid(ValueError):
    """A proof that does not hold; `reason` starts with the name of the failing check."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VerifiedProof:
    """What a valid proof establishes: this transaction, with this receipt, is in this finalised block."""

    tx: Transaction
    code: int
    log: str
    height: int
    index: int
    block_hash: bytes
    time_ms: int
    signatures: int  # valid seals in the certificate
    quorum: int  # seals the genesis validator set requires
    header: Header


# ---- verifying (anyone with the genesis) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Parts:
    """A proof whose shape is right, with its values decoded."""

    tx_hash: bytes
    tx: bytes
    receipt: Receipt
    index: int
    tx_path: list[bytes]
    receipt_path: list[bytes]
    header: Header
    commit_height: int
    block_hash: bytes
    signatures: list[tuple[bytes, bytes]]


def verify_proof(proof: Any, chain_id: str, validators: Sequence[bytes]) -> VerifiedProof:
    """Checks `proof` (decoded JSON) against a genesis' chain id and validator keys, in the order
    of docs/proofs.md; raises ProofInvalid naming the first check that fails."""
    parts = _parse(proof)
    header = parts.header
    if header.chain_id != chain_id:
        raise ProofInvalid(f"chain id: the proof is for chain {header.chain_id!r}, the genesis is {chain_id!r}")
    _check_block_hash(parts)
    needed = _check_certificate(parts.block_hash, parts.signatures, validators)
    tx = _check_transaction(parts, chain_id)
    _check_paths(parts)
    return VerifiedProof(
        tx=tx, code=parts.receipt.code, log=parts.receipt.log, height=header.height, index=parts.index,
        block_hash=parts.block_hash, time_ms=header.time_ms, signatures=len(parts.signatures), quorum=needed,
        header=header,
    )


def _check_block_hash(parts: _Parts) -> None:
    computed = parts.header.hash()
    if computed != parts.block_hash:
        raise ProofInvalid(f"block hash: the header hashes to {computed.hex()}, "
                           f"not commit.block_hash {parts.block_hash.hex()}")
    if parts.commit_height != parts.header.height:
        raise ProofInvalid(f"commit height: commit.height {parts.commit_height} "
                           f"is not header.height {parts.header.height}")


def _check_certificate(block_hash: bytes, signatures: list[tuple[bytes, bytes]], validators: Sequence[bytes]) -> int:
    """Every seal is a distinct member's valid seal, and there are a quorum of them; returns the quorum."""
    if not validators:
        raise ProofInvalid("certificate: the genesis lists no validators")
    sealed = verify_certificate(block_hash, signatures, validators)
    if sealed.fault is not None:
        raise ProofInvalid(f"certificate: {sealed.fault}")
    if not sealed.quorate:
        raise ProofInvalid(f"certificate: {sealed.sealed} signatures, below the quorum of {sealed.quorum} "
                           f"of {len(validators)} validators")
    return sealed.quorum


def _check_transaction(parts: _Parts, chain_id: str) -> Transaction:
    try:
        tx = verified_tx(parts.tx, chain_id)
    except TxError as exc:
        if exc.reason == WRONG_CHAIN_ID:
            raise ProofInvalid(f"transaction: tx {exc}") from None
        if exc.reason == BAD_SIGNATURE:
            raise ProofInvalid("transaction: the client signature of tx does not verify") from None
        raise ProofInvalid(f"transaction: tx is not a canonical transaction ({exc.reason}: {exc})") from None
    if tx.hash != parts.tx_hash:
        raise ProofInvalid(f"transaction: tx hashes to {tx.hash.hex()}, not tx_hash {parts.tx_hash.hex()}")
    return tx


def _check_paths(parts: _Parts) -> None:
    header, index = parts.header, parts.index
    if index >= header.tx_count:
        raise ProofInvalid(f"index: index {index} is not below header.tx_count {header.tx_count}")
    if not verify_path(parts.tx_hash, index, header.tx_count, parts.tx_path, header.tx_root):
        raise ProofInvalid(f"tx path: tx_path does not prove tx_hash at index {index} under header.tx_root")
    item = receipt_bytes(parts.tx_hash, parts.receipt)
    if not verify_path(item, index, header.tx_count, parts.receipt_path, header.receipt_root):
        raise ProofInvalid(f"receipt path: receipt_path does not prove the receipt at index {index} "
                           "under header.receipt_root")


# ---- shape ---------------------------------------------------------------------------------


def _parse(proof: Any) -> _Parts:
    top = _object(proof, PROOF_KEYS, "proof")
    _version(top["version"], PROOF_VERSION, "version")
    receipt = _object(top["receipt"], RECEIPT_KEYS, "receipt")
    commit = _object(top["commit"], COMMIT_KEYS, "commit")
    return _Parts(
        tx_hash=_hex(top["tx_hash"], "tx_hash", 32),
        tx=_hex(top["tx"], "tx"),
        receipt=Receipt(_uint(receipt["code"], "receipt.code"), _str(receipt["log"], "receipt.log")),
        index=_uint(top["index"], "index"),
        tx_path=_hashes(top["tx_path"], "tx_path"),
        receipt_path=_hashes(top["receipt_path"], "receipt_path"),
        header=_header(top["header"]),
        commit_height=_uint(commit["height"], "commit.height"),
        block_hash=_hex(commit["block_hash"], "commit.block_hash", 32),
        signatures=_signatures(commit["signatures"]),
    )


def _header(value: Any) -> Header:
    h = _object(value, HEADER_KEYS, "header")
    _version(h["version"], BLOCK_VERSION, "header.version")
    return Header(
        chain_id=_str(h["chain_id"], "header.chain_id"),
        height=_uint(h["height"], "header.height"),
        prev_hash=_hex(h["prev_hash"], "header.prev_hash", 32),
        time_ms=_uint(h["time"], "header.time"),
        proposer=_hex(h["proposer"], "header.proposer", 32),
        tx_count=_uint(h["tx_count"], "header.tx_count"),
        tx_root=_hex(h["tx_root"], "header.tx_root", 32),
        receipt_root=_hex(h["receipt_root"], "header.receipt_root", 32),
        state_root=_hex(h["state_root"], "header.state_root", 32),
    )


def _signatures(value: Any) -> list[tuple[bytes, bytes]]:
    out = []
    for i, item in enumerate(_list(value, "commit.signatures")):
        where = f"commit.signatures[{i}]"
        entry = _object(item, SIGNATURE_KEYS, where)
        out.append((_hex(entry["validator"], f"{where}.validator", 32),
                    _hex(entry["signature"], f"{where}.signature", 64)))
    return out


def _object(value: Any, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProofInvalid(f"shape: {where} must be an object")
    missing = [k for k in keys if k not in value]
    if missing:
        raise ProofInvalid(f"shape: {where} lacks the key {missing[0]!r}")
    extra = sorted(str(k) for k in value if k not in keys)
    if extra:
        raise ProofInvalid(f"shape: {where} has the unknown key {extra[0]!r}")
    return value


def _version(value: Any, expected: int, where: str) -> None:
    if type(value) is not int or value != expected:
        raise ProofInvalid(f"shape: {where} must be {expected}")


def _uint(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= UINT64_MAX:
        raise ProofInvalid(f"shape: {where} must be an integer in 0..2**64-1")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ProofInvalid(f"shape: {where} must be a string")
    try:
        value.encode()
    except UnicodeEncodeError:  # JSON can spell a lone surrogate ("\ud800"), which no UTF-8 string holds
        raise ProofInvalid(f"shape: {where} is not valid Unicode text") from None
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProofInvalid(f"shape: {where} must be an array")
    return value


def _hashes(value: Any, where: str) -> list[bytes]:
    return [_hex(item, f"{where}[{i}]", 32) for i, item in enumerate(_list(value, where))]


def _hex(value: Any, where: str, size: int | None = None) -> bytes:
    """Non-empty lowercase hex; exactly `size` bytes when given."""
    wrong_size = size is not None and isinstance(value, str) and len(value) != 2 * size
    if not isinstance(value, str) or wrong_size or not _LOWER_HEX.fullmatch(value):
        length = f"{2 * size} " if size is not None else "an even number of "
        raise ProofInvalid(f"shape: {where} must be {length}lowercase hex characters")
    return bytes.fromhex(value)
