"""Verifying a state proof: what the state holds under a key (or that it holds nothing) after a
finalised block, checkable with nothing but the genesis (docs/proofs.md, section 5).

The header and its certificate are checked as for a transaction proof (node/chain/proof.py); the
state part is the key's bucket and its path up to the header's state_root (node/chain/state_tree.py).
Pure code; the node builds state proofs in node/api/lookup.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any

from node.chain.block import Header
from node.chain.canonical import CodecError, unpack
from node.chain.execution import KV_KEY_BYTES_MAX, kv_key, notary_key
from node.chain.proof import (
    Certified, Change, ProofInvalid, certified, changes, check_certified, object_of, str_of,
)
from node.chain.state_tree import DEPTH, BlobInvalid, bucket_of, fold, key_hash, leaf_hash, records, value_hash

STATE_PROOF_VERSION = 1
STATE_PROOF_KEYS = ("version", "family", "key", "value", "result", "records", "siblings", "header", "commit",
                    "validator_changes")
FAMILIES = ("kv", "notary")
_HEX = re.compile(r"(?:[0-9a-f]{2})*")
_DIGEST = re.compile(r"[0-9a-f]{64}")


class KeyInvalid(ValueError):
    """A family and key that name no state key."""


def state_key(family: str, key: str) -> bytes:
    """The state key a query names: a kv key (1..256 bytes of UTF-8) or a notary digest (64 hex)."""
    if family == "kv":
        encoded = key.encode("utf-8", "strict")
        if not 1 <= len(encoded) <= KV_KEY_BYTES_MAX:
            raise KeyInvalid(f"a kv key is 1..{KV_KEY_BYTES_MAX} bytes of UTF-8")
        return kv_key(key)
    if family == "notary":
        if not _DIGEST.fullmatch(key.lower()):
            raise KeyInvalid("a notary key is a SHA-256 digest, 64 hex characters")
        return notary_key(bytes.fromhex(key))
    raise KeyInvalid('family must be "kv" or "notary"')


def query_result(family: str, raw: bytes | None) -> dict[str, Any] | None:
    """What `query` answers for a stored state value (None when absent)."""
    if raw is None:
        return None
    if family == "kv":
        value, owner, height = unpack(raw)
        return {"value": value.hex(), "owner": owner.hex(), "height": height}
    recorder, height, time_ms, tx_hash, meta = unpack(raw)
    return {"recorder": recorder.hex(), "height": height, "time": time_ms, "tx_hash": tx_hash.hex(), "meta": meta}


@dataclass(frozen=True, slots=True)
class VerifiedState:
    """What a valid state proof establishes: after block `height`, `family`/`key` holds `result` (None: nothing)."""

    family: str
    key: str
    result: dict[str, Any] | None
    height: int
    block_hash: bytes
    time_ms: int
    signatures: int
    quorum: int
    header: Header
    validators: tuple[bytes, ...]
    validator_changes: int


@dataclass(frozen=True, slots=True)
class _Parts:
    family: str
    key: str
    value: bytes | None
    result: Any
    blob: bytes
    siblings: list[bytes]
    block: Certified


def verify_state_proof(proof: Any, chain_id: str, validators: Sequence[bytes]) -> VerifiedState:
    """Checks a state proof (decoded JSON) against a genesis' chain id and validator keys, in the order
    of docs/proofs.md section 5; raises ProofInvalid naming the first check that fails."""
    parts, steps = _parse(proof)
    in_force, needed = check_certified(parts.block, steps, chain_id, validators)
    _check_state(parts)
    header = parts.block.header
    return VerifiedState(
        family=parts.family, key=parts.key, result=parts.result, height=header.height,
        block_hash=parts.block.block_hash, time_ms=header.time_ms, signatures=len(parts.block.signatures),
        quorum=needed, header=header, validators=in_force, validator_changes=len(steps),
    )


def _check_state(parts: _Parts) -> None:
    try:
        kh = key_hash(state_key(parts.family, parts.key))
    except (KeyInvalid, UnicodeEncodeError) as exc:
        raise ProofInvalid(f"key: {exc}") from None
    bucket = bucket_of(kh)
    try:
        records(parts.blob, bucket)
    except BlobInvalid as exc:
        raise ProofInvalid(f"records: {exc}") from None
    recorded = value_hash(parts.blob, kh)
    if parts.value is None:
        if recorded is not None:
            raise ProofInvalid("value: the records hold the key, yet the proof says it is absent")
    elif recorded is None:
        raise ProofInvalid("value: the records do not hold the key")
    elif recorded != key_hash(parts.value):
        raise ProofInvalid("value: its SHA-256 is not the one the records hold for the key")
    try:
        expected = query_result(parts.family, parts.value)
    except (CodecError, ValueError, TypeError, AttributeError):
        raise ProofInvalid(f"value: it is not a stored {parts.family} value") from None
    if parts.result != expected:
        raise ProofInvalid("result: it is not what the value decodes to")
    root = fold(bucket, leaf_hash(parts.blob), parts.siblings)
    if root != parts.block.header.state_root:
        raise ProofInvalid(f"state root: the records and siblings hash to {root.hex()}, "
                           f"not header.state_root {parts.block.header.state_root.hex()}")


def _parse(proof: Any) -> tuple[_Parts, list[Change]]:
    top = object_of(proof, STATE_PROOF_KEYS, "proof")
    if type(top["version"]) is not int or top["version"] != STATE_PROOF_VERSION:
        raise ProofInvalid(f"shape: version must be {STATE_PROOF_VERSION}")
    family = str_of(top["family"], "family")
    if family not in FAMILIES:
        raise ProofInvalid('shape: family must be "kv" or "notary"')
    siblings = top["siblings"]
    if not isinstance(siblings, list) or len(siblings) != DEPTH:
        raise ProofInvalid(f"shape: siblings must be an array of {DEPTH} hashes")
    value = None if top["value"] is None else _hex(top["value"], "value")
    parts = _Parts(
        family=family, key=str_of(top["key"], "key"), value=value, result=top["result"],
        blob=_hex(top["records"], "records"), siblings=[_hex(s, f"siblings[{i}]", 32) for i, s in enumerate(siblings)],
        block=certified(top, ""),
    )
    return parts, changes(top)


def _hex(value: Any, where: str, size: int | None = None) -> bytes:
    """Lowercase hex, possibly empty (an empty bucket's records); exactly `size` bytes when given."""
    if not isinstance(value, str) or not _HEX.fullmatch(value) or (size is not None and len(value) != 2 * size):
        length = f"{2 * size} " if size is not None else "an even number of "
        raise ProofInvalid(f"shape: {where} must be {length}lowercase hex characters")
    return bytes.fromhex(value)
