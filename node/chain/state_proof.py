"""Verifying a state proof: the value of a state key (or its absence) at a certified height, checkable
with nothing but the genesis (docs/proofs.md, section "State proofs").

A state proof carries the key's bucket of the state tree (its records, node/chain/state_tree.py) and
the bucket's 18 siblings up to the header's state_root, and the header with its certificate and the
validator changes exactly as a transaction proof does (node/chain/proof.py checks those).

Pure code, no I/O of its own, so that clients and verifiers can use it; the node builds state proofs in
node/api/lookup.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from node.chain.block import Header
from node.chain.canonical import unpack
from node.chain.execution import KV_KEY_BYTES_MAX, kv_key, notary_key
from node.chain.proof import (
    ProofInvalid, json_hex, json_object, json_str, json_uint, json_version, parse_certified, parse_changes,
    verify_certified,
)
from node.chain.state_tree import DEPTH, BlobInvalid, bucket_of, fold, key_hash, leaf_hash, records

STATE_PROOF_VERSION = 1
STATE_PROOF_KEYS = ("version", "family", "key", "state_key", "state_value", "result", "bucket", "records",
                    "siblings", "header", "commit", "validator_changes")
FAMILIES = ("kv", "notary")


class KeyInvalid(ValueError):
    """A family or key that names no state key."""


def state_key_of(family: str, key: Any) -> bytes:
    """The state key a `query` names: b"kv/" + the key's UTF-8 (1..256 bytes), b"nt/" + a 32-byte digest
    given as 64 hex characters."""
    if family == "kv":
        if not isinstance(key, str):
            raise KeyInvalid("a kv key is a string")
        try:
            size = len(key.encode())
        except UnicodeEncodeError:
            raise KeyInvalid("a kv key is valid Unicode (no lone surrogates)") from None
        if not 1 <= size <= KV_KEY_BYTES_MAX:
            raise KeyInvalid(f"a kv key is 1 to {KV_KEY_BYTES_MAX} bytes of UTF-8")
        return kv_key(key)
    if family == "notary":
        if not isinstance(key, str) or len(key) != 64 or key != key.lower():
            raise KeyInvalid("a notary key is a digest of 64 lowercase hex characters")
        try:
            return notary_key(bytes.fromhex(key))
        except ValueError:
            raise KeyInvalid("a notary key is a digest of 64 lowercase hex characters") from None
    raise KeyInvalid('family must be "kv" or "notary"')


def query_result(family: str, raw: bytes | None) -> dict[str, Any] | None:
    """The `query` result of a stored state value (None when the key is absent)."""
    if raw is None:
        return None
    if family == "kv":
        value, owner, height = unpack(raw)
        return {"value": value.hex(), "owner": owner.hex(), "height": height}
    recorder, height, time_ms, tx_hash, meta = unpack(raw)
    return {"recorder": recorder.hex(), "height": height, "time": time_ms, "tx_hash": tx_hash.hex(), "meta": meta}


@dataclass(frozen=True, slots=True)
class VerifiedState:
    """What a valid state proof establishes: at this certified height, the key held this value (or none)."""

    family: str
    key: str
    state_key: bytes
    state_value: bytes | None
    result: dict[str, Any] | None
    height: int
    block_hash: bytes
    time_ms: int
    header: Header
    signatures: int
    quorum: int
    validators: tuple[bytes, ...]
    validator_changes: int

    @property
    def present(self) -> bool:
        return self.state_value is not None


def is_state_proof(proof: Any) -> bool:
    """Tells a state proof from a transaction proof by its keys."""
    return isinstance(proof, dict) and "state_key" in proof


def verify_state_proof(proof: Any, chain_id: str, validators: Sequence[bytes]) -> VerifiedState:
    """Checks `proof` (decoded JSON) in the order of docs/proofs.md section 7; raises ProofInvalid naming
    the first check that fails."""
    top = json_object(proof, STATE_PROOF_KEYS, "proof")
    json_version(top["version"], STATE_PROOF_VERSION, "version")
    family = json_str(top["family"], "family")
    state_key = json_hex(top["state_key"], "state_key")
    value = None if top["state_value"] is None else json_hex(top["state_value"], "state_value")
    bucket = json_uint(top["bucket"], "bucket")
    blob = b"" if top["records"] == "" else json_hex(top["records"], "records")
    siblings = [json_hex(s, f"siblings[{i}]", 32) for i, s in enumerate(_siblings(top["siblings"]))]
    block, changes = parse_certified(top, ""), parse_changes(top)
    try:
        derived = state_key_of(family, top["key"])
    except KeyInvalid as exc:
        raise ProofInvalid(f"state key: {exc}") from None
    if derived != state_key:
        raise ProofInvalid("state key: state_key is not the state key of family and key")
    kh = key_hash(state_key)
    if bucket != bucket_of(kh):
        raise ProofInvalid(f"bucket: the key hash is in bucket {bucket_of(kh)}, not {bucket}")
    _check_value(family, blob, bucket, kh, value, top["result"])
    root = fold(bucket, leaf_hash(blob), siblings)
    if root != block.header.state_root:
        raise ProofInvalid(f"state root: records and siblings fold to {root.hex()}, not header.state_root")
    in_force, quorum = verify_certified(block, changes, chain_id, validators)
    header = block.header
    return VerifiedState(
        family=family, key=top["key"], state_key=state_key, state_value=value, result=top["result"],
        height=header.height, block_hash=block.block_hash, time_ms=header.time_ms, header=header,
        signatures=len(block.signatures), quorum=quorum, validators=in_force, validator_changes=len(changes),
    )


def _siblings(value: Any) -> list[Any]:
    if not isinstance(value, list) or len(value) != DEPTH:
        raise ProofInvalid(f"shape: siblings must be an array of {DEPTH} hashes")
    return value


def _check_value(family: str, blob: bytes, bucket: int, kh: bytes, value: bytes | None, result: Any) -> None:
    """The bucket's records are well formed; the key's record matches the value, or there is none."""
    try:
        found = [r[32:] for r in records(blob, bucket) if r[:32] == kh]
    except BlobInvalid as exc:
        raise ProofInvalid(f"records: {exc}") from None
    if value is None:
        if found:
            raise ProofInvalid("value: the records hold the key, the proof says it is absent")
        if result is not None:
            raise ProofInvalid("value: result must be null for an absent key")
        return
    if not found:
        raise ProofInvalid("value: the records do not hold the key, the proof gives it a value")
    if found[0] != hashlib.sha256(value).digest():
        raise ProofInvalid("value: the key's record is not the hash of state_value")
    try:  # binary where the result has a number is no state value either: JSON cannot hold it
        decoded = json.dumps(query_result(family, value), sort_keys=True)
    except (ValueError, TypeError, AttributeError):
        raise ProofInvalid("value: state_value is not a state value of its family") from None
    if json.dumps(result, sort_keys=True) != decoded:  # 152.0 and true are not 152, 1
        raise ProofInvalid("value: result is not state_value decoded")
