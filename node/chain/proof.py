"""Verifying a transaction proof: a committed transaction, its receipt and the certificate of its block,
checkable with nothing but the genesis (docs/proofs.md).

The validators of a block may not be the genesis ones: governance changes them. A proof carries each
change up to its block as a step, the header of the last block of the old set (which commits to the
new set in `next_validators_hash`) certified by the old set, and the new set's keys; the verifier
walks them from the genesis validators, light-client style.

Pure code, no I/O of its own, so that clients and verifiers can use it; the node builds proofs in
node/api/lookup.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from node.chain.block import BLOCK_VERSION, Header, verify_certificate
from node.chain.execution import Receipt, receipt_bytes
from node.chain.membership import validators_hash
from node.chain.merkle import verify_path
from node.chain.tx import BAD_SIGNATURE, WRONG_CHAIN_ID, Transaction, TxError, verified_tx

PROOF_VERSION = 2
UINT64_MAX = 2**64 - 1
_LOWER_HEX = re.compile(r"(?:[0-9a-f]{2})+")

PROOF_KEYS = ("version", "tx_hash", "tx", "receipt", "index", "tx_path", "receipt_path", "header", "commit",
              "validator_changes")
RECEIPT_KEYS = ("code", "log")
HEADER_KEYS = ("version", "chain_id", "height", "prev_hash", "time", "proposer", "tx_count", "tx_root",
               "receipt_root", "state_root", "validators_hash", "next_validators_hash")
COMMIT_KEYS = ("height", "block_hash", "signatures")
SIGNATURE_KEYS = ("validator", "signature")
CHANGE_KEYS = ("header", "commit", "validators")


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
    quorum: int  # seals the validator set of the block requires
    header: Header
    validators: tuple[bytes, ...]  # the validator set of the block, reached from the genesis one
    validator_changes: int  # the steps walked to reach it


# ---- verifying (anyone with the genesis) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Certified:
    """A header with the commit certificate that came with it."""

    header: Header
    commit_height: int
    block_hash: bytes
    signatures: list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Change:
    """A step of validator_changes: the last block of the old set, and the new set."""

    block: Certified
    validators: list[bytes]


@dataclass(frozen=True, slots=True)
class _Parts:
    """A proof whose shape is right, with its values decoded."""

    tx_hash: bytes
    tx: bytes
    receipt: Receipt
    index: int
    tx_path: list[bytes]
    receipt_path: list[bytes]
    block: Certified
    changes: list[Change]


def verify_proof(proof: Any, chain_id: str, validators: Sequence[bytes]) -> VerifiedProof:
    """Checks `proof` (decoded JSON) against a genesis' chain id and validator keys, in the order
    of docs/proofs.md; raises ProofInvalid naming the first check that fails."""
    parts = _parse(proof)
    header = parts.block.header
    in_force, needed = verify_certified(parts.block, parts.changes, chain_id, validators)
    tx = _check_transaction(parts, chain_id)
    _check_paths(parts)
    return VerifiedProof(
        tx=tx, code=parts.receipt.code, log=parts.receipt.log, height=header.height, index=parts.index,
        block_hash=parts.block.block_hash, time_ms=header.time_ms, signatures=len(parts.block.signatures),
        quorum=needed, header=header, validators=in_force, validator_changes=len(parts.changes),
    )


def verify_certified(block: Certified, changes: list[Change], chain_id: str,
                     validators: Sequence[bytes]) -> tuple[tuple[bytes, ...], int]:
    """Checks steps 2 to 6 of docs/proofs.md, shared by transaction and state proofs: the block is of
    the genesis' chain, its header hashes to the certified hash, and a quorum of the validators in force
    at its height, reached from the genesis ones, sealed it. Returns those validators and the quorum."""
    header = block.header
    if header.chain_id != chain_id:
        raise ProofInvalid(f"chain id: the proof is for chain {header.chain_id!r}, the genesis is {chain_id!r}")
    _check_block_hash(block, "")
    if not validators:
        raise ProofInvalid("certificate: the genesis lists no validators")
    in_force = _walk_changes(changes, chain_id, tuple(validators), header.height)
    if header.validators_hash != validators_hash(in_force):
        raise ProofInvalid(f"validators: header.validators_hash is not the hash of the {len(in_force)} validators "
                           f"in force after {len(changes)} validator changes (is a change missing?)")
    return in_force, _check_certificate(block, in_force, "certificate: ")


def _walk_changes(changes: list[Change], chain_id: str, genesis: tuple[bytes, ...], height: int) -> tuple[bytes, ...]:
    """The validator set of block `height`: the genesis one, changed by each step in turn."""
    in_force, previous = genesis, 0
    for i, change in enumerate(changes):
        header = change.block.header
        where = f"validator change: validator_changes[{i}] (block {header.height}): "
        if header.chain_id != chain_id:
            raise ProofInvalid(f"{where}header.chain_id is {header.chain_id!r}, not the genesis chain id {chain_id!r}")
        if not previous < header.height < height:
            raise ProofInvalid(f"{where}its height must be above {previous} (the previous step's) "
                               f"and below {height} (the proof's block)")
        _check_block_hash(change.block, where)
        if header.validators_hash != validators_hash(in_force):
            raise ProofInvalid(f"{where}header.validators_hash is not the hash of the validators in force, "
                               "the genesis ones changed by the steps before it (is a step missing or out of order?)")
        _check_certificate(change.block, in_force, f"{where}certificate: ")
        new = tuple(change.validators)
        if not new or len(set(new)) != len(new):
            raise ProofInvalid(f"{where}validators must list at least one key, none twice")
        if header.next_validators_hash != validators_hash(new):
            raise ProofInvalid(f"{where}header.next_validators_hash is not the hash of its validators")
        if header.next_validators_hash == header.validators_hash:
            raise ProofInvalid(f"{where}the validators do not change after this block")
        in_force, previous = new, header.height
    return in_force


def _check_block_hash(block: Certified, where: str) -> None:
    computed = block.header.hash()
    if computed != block.block_hash:
        raise ProofInvalid(f"{where or 'block hash: '}the header hashes to {computed.hex()}, "
                           f"not commit.block_hash {block.block_hash.hex()}")
    if block.commit_height != block.header.height:
        raise ProofInvalid(f"{where or 'commit height: '}commit.height {block.commit_height} "
                           f"is not header.height {block.header.height}")


def _check_certificate(block: Certified, validators: tuple[bytes, ...], where: str) -> int:
    """Every seal is a distinct member's valid seal, and there are a quorum of them; returns the quorum."""
    sealed = verify_certificate(block.block_hash, block.signatures, validators)
    if sealed.fault is not None:
        raise ProofInvalid(f"{where}{sealed.fault}")
    if not sealed.quorate:
        raise ProofInvalid(f"{where}{sealed.sealed} signatures, below the quorum of {sealed.quorum} "
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
    header, index = parts.block.header, parts.index
    if index >= header.tx_count:
        raise ProofInvalid(f"index: index {index} is not below header.tx_count {header.tx_count}")
    if not verify_path(parts.tx_hash, index, header.tx_count, parts.tx_path, header.tx_root):
        raise ProofInvalid(f"tx path: tx_path does not prove tx_hash at index {index} under header.tx_root")
    item = receipt_bytes(parts.tx_hash, parts.receipt)
    if not verify_path(item, index, header.tx_count, parts.receipt_path, header.receipt_root):
        raise ProofInvalid(f"receipt path: receipt_path does not prove the receipt at index {index} "
                           "under header.receipt_root")


# ---- shape (shared with node/chain/state_proof.py) ---------------------------------------------------------------------------------


def _parse(proof: Any) -> _Parts:
    top = json_object(proof, PROOF_KEYS, "proof")
    json_version(top["version"], PROOF_VERSION, "version")
    receipt = json_object(top["receipt"], RECEIPT_KEYS, "receipt")
    return _Parts(
        tx_hash=json_hex(top["tx_hash"], "tx_hash", 32),
        tx=json_hex(top["tx"], "tx"),
        receipt=Receipt(json_uint(receipt["code"], "receipt.code"), json_str(receipt["log"], "receipt.log")),
        index=json_uint(top["index"], "index"),
        tx_path=json_hashes(top["tx_path"], "tx_path"),
        receipt_path=json_hashes(top["receipt_path"], "receipt_path"),
        block=parse_certified(top, ""),
        changes=parse_changes(top),
    )


def parse_changes(top: dict[str, Any]) -> list[Change]:
    return [parse_change(item, f"validator_changes[{i}]")
            for i, item in enumerate(json_list(top["validator_changes"], "validator_changes"))]


def parse_change(value: Any, where: str) -> Change:
    step = json_object(value, CHANGE_KEYS, where)
    return Change(parse_certified(step, f"{where}."), json_hashes(step["validators"], f"{where}.validators"))


def parse_certified(obj: dict[str, Any], where: str) -> Certified:
    commit = json_object(obj["commit"], COMMIT_KEYS, f"{where}commit")
    return Certified(
        header=_header(obj["header"], f"{where}header"),
        commit_height=json_uint(commit["height"], f"{where}commit.height"),
        block_hash=json_hex(commit["block_hash"], f"{where}commit.block_hash", 32),
        signatures=_signatures(commit["signatures"], f"{where}commit.signatures"),
    )


def _header(value: Any, where: str) -> Header:
    h = json_object(value, HEADER_KEYS, where)
    json_version(h["version"], BLOCK_VERSION, f"{where}.version")
    return Header(
        chain_id=json_str(h["chain_id"], f"{where}.chain_id"),
        height=json_uint(h["height"], f"{where}.height"),
        prev_hash=json_hex(h["prev_hash"], f"{where}.prev_hash", 32),
        time_ms=json_uint(h["time"], f"{where}.time"),
        proposer=json_hex(h["proposer"], f"{where}.proposer", 32),
        tx_count=json_uint(h["tx_count"], f"{where}.tx_count"),
        tx_root=json_hex(h["tx_root"], f"{where}.tx_root", 32),
        receipt_root=json_hex(h["receipt_root"], f"{where}.receipt_root", 32),
        state_root=json_hex(h["state_root"], f"{where}.state_root", 32),
        validators_hash=json_hex(h["validators_hash"], f"{where}.validators_hash", 32),
        next_validators_hash=json_hex(h["next_validators_hash"], f"{where}.next_validators_hash", 32),
    )


def _signatures(value: Any, where: str) -> list[tuple[bytes, bytes]]:
    out = []
    for i, item in enumerate(json_list(value, where)):
        entry = json_object(item, SIGNATURE_KEYS, f"{where}[{i}]")
        out.append((json_hex(entry["validator"], f"{where}[{i}].validator", 32),
                    json_hex(entry["signature"], f"{where}[{i}].signature", 64)))
    return out


def json_object(value: Any, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProofInvalid(f"shape: {where} must be an object")
    missing = [k for k in keys if k not in value]
    if missing:
        raise ProofInvalid(f"shape: {where} lacks the key {missing[0]!r}")
    extra = sorted(str(k) for k in value if k not in keys)
    if extra:
        raise ProofInvalid(f"shape: {where} has the unknown key {extra[0]!r}")
    return value


def json_version(value: Any, expected: int, where: str) -> None:
    if type(value) is not int or value != expected:
        raise ProofInvalid(f"shape: {where} must be {expected}")


def json_uint(value: Any, where: str) -> int:
    if type(value) is not int or not 0 <= value <= UINT64_MAX:
        raise ProofInvalid(f"shape: {where} must be an integer in 0..2**64-1")
    return value


def json_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ProofInvalid(f"shape: {where} must be a string")
    try:
        value.encode()
    except UnicodeEncodeError:  # JSON can spell a lone surrogate ("\ud800"), which no UTF-8 string holds
        raise ProofInvalid(f"shape: {where} is not valid Unicode text") from None
    return value


def json_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProofInvalid(f"shape: {where} must be an array")
    return value


def json_hashes(value: Any, where: str) -> list[bytes]:
    return [json_hex(item, f"{where}[{i}]", 32) for i, item in enumerate(json_list(value, where))]


def json_hex(value: Any, where: str, size: int | None = None) -> bytes:
    """Non-empty lowercase hex; exactly `size` bytes when given."""
    wrong_size = size is not None and isinstance(value, str) and len(value) != 2 * size
    if not isinstance(value, str) or wrong_size or not _LOWER_HEX.fullmatch(value):
        length = f"{2 * size} " if size is not None else "an even number of "
        raise ProofInvalid(f"shape: {where} must be {length}lowercase hex characters")
    return bytes.fromhex(value)


def commit_json(height: int, block_hash: str, certificate: Iterable[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The `commit` object of get_block and of a proof: a block's certificate."""
    return {
        "height": height, "block_hash": block_hash,
        "signatures": [{"validator": v.hex(), "signature": s.hex()} for v, s in certificate],
    }


def header_json(header: Header) -> dict[str, Any]:
    """The `header` object of a proof: every field, binary ones as hex."""
    return {
        "version": BLOCK_VERSION, "chain_id": header.chain_id, "height": header.height,
        "prev_hash": header.prev_hash.hex(), "time": header.time_ms, "proposer": header.proposer.hex(),
        "tx_count": header.tx_count, "tx_root": header.tx_root.hex(), "receipt_root": header.receipt_root.hex(),
        "state_root": header.state_root.hex(), "validators_hash": header.validators_hash.hex(),
        "next_validators_hash": header.next_validators_hash.hex(),
    }
