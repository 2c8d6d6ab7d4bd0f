"""Compact state proofs: a state proof in MessagePack, under 2 KB at a million keys (docs/proofs.md,
"The compact form"), small enough for a QR code or a field of an e-invoice.

It holds what the JSON form holds minus what a verifier derives (the state key, the bucket, the decoded
result, each commit's height and block hash) and names each signer by its index among the validators in
force, with a quorum of signatures only. Checking one expands it back to the JSON form, against the
genesis validators (the indices need them), and checks that: a compact proof holds exactly when its
expansion does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consensus.quorum import quorum
from node.chain.block import BlockError, Header, header_from_wire
from node.chain.canonical import CodecError, pack, unpack
from node.chain.proof import (
    Certified, ProofInvalid, commit_json, header_json, json_object, parse_certified, parse_changes,
)
from node.chain.state_proof import (
    STATE_PROOF_KEYS, STATE_PROOF_VERSION, KeyInvalid, VerifiedState, query_result, state_key_of, verify_state_proof,
)
from node.chain.state_tree import DEPTH, bucket_of, key_hash

COMPACT_VERSION = 1
COMPACT_FIELDS = 8  # [version, family, key, state_value, records, siblings, block, validator_changes]
_FIRST_BYTE = 0x90 | COMPACT_FIELDS  # a MessagePack array of 8: JSON never starts with it


def is_compact(data: bytes) -> bool:
    """Tells a compact proof's bytes from a JSON proof's text."""
    return data[:1] == bytes([_FIRST_BYTE])


def compact_state_proof(proof: Any, chain_id: str, validators: Sequence[bytes]) -> bytes:
    """The compact form of a JSON state proof that holds for the genesis `chain_id` and `validators`
    (raises ProofInvalid otherwise: a proof that does not hold is not made smaller)."""
    verify_state_proof(proof, chain_id, validators)
    top = json_object(proof, STATE_PROOF_KEYS, "proof")
    in_force, steps = tuple(validators), []
    for change in parse_changes(top):
        steps.append([change.block.header.wire(), _seals(change.block, in_force), list(change.validators)])
        in_force = tuple(change.validators)
    value = None if top["state_value"] is None else bytes.fromhex(top["state_value"])
    siblings = b"".join(bytes.fromhex(s) for s in top["siblings"])
    block = parse_certified(top, "")
    return pack([COMPACT_VERSION, top["family"], top["key"], value, bytes.fromhex(top["records"]), siblings,
                 [block.header.wire(), _seals(block, in_force)], steps])


def expand_state_proof(data: bytes, validators: Sequence[bytes]) -> dict[str, Any]:
    """The JSON state proof a compact one stands for; raises ProofInvalid ("shape: ...") for bytes that
    are not one. `validators`: the genesis ones, whose indices the first certificate uses."""
    try:
        obj = unpack(data)
    except CodecError as exc:
        raise ProofInvalid(f"shape: not a compact proof: {exc}") from None
    if not isinstance(obj, list) or len(obj) != COMPACT_FIELDS:
        raise ProofInvalid(f"shape: a compact proof is an array of {COMPACT_FIELDS}")
    version, family, key, value, blob, siblings, block, steps = obj
    if type(version) is not int or version != COMPACT_VERSION:
        raise ProofInvalid(f"shape: version must be {COMPACT_VERSION}")
    if not isinstance(family, str) or not isinstance(key, str):
        raise ProofInvalid("shape: family and key must be strings")
    if not (value is None or isinstance(value, bytes)) or not isinstance(blob, bytes):
        raise ProofInvalid("shape: state_value must be binary or nil, records binary")
    if not isinstance(siblings, bytes) or len(siblings) != 32 * DEPTH:
        raise ProofInvalid(f"shape: siblings must be {32 * DEPTH} bytes")
    if not isinstance(steps, list):
        raise ProofInvalid("shape: validator_changes must be an array")
    in_force, changes = tuple(validators), []
    for i, step in enumerate(steps):
        where = f"validator_changes[{i}]"
        if not isinstance(step, list) or len(step) != 3 or not isinstance(step[2], list):
            raise ProofInvalid(f"shape: {where} must be [header, signatures, validators]")
        if not all(isinstance(v, bytes) and len(v) == 32 for v in step[2]):
            raise ProofInvalid(f"shape: {where}.validators must be keys of 32 bytes")
        changes.append({**_certified(step[:2], in_force, f"{where}."), "validators": [v.hex() for v in step[2]]})
        in_force = tuple(step[2])
    try:
        state_key = state_key_of(family, key)
    except KeyInvalid as exc:
        raise ProofInvalid(f"state key: {exc}") from None
    return {
        "version": STATE_PROOF_VERSION, "family": family, "key": key, "state_key": state_key.hex(),
        "state_value": None if value is None else value.hex(), "result": _result(family, value),
        "bucket": bucket_of(key_hash(state_key)), "records": blob.hex(),
        "siblings": [siblings[i:i + 32].hex() for i in range(0, len(siblings), 32)],
        **_certified(block, in_force, ""), "validator_changes": changes,
    }


def verify_compact_state_proof(data: bytes, chain_id: str, validators: Sequence[bytes]) -> VerifiedState:
    """Checks a compact state proof as its JSON form is checked (docs/proofs.md, section 6)."""
    return verify_state_proof(expand_state_proof(data, validators), chain_id, validators)


def _seals(block: Certified, in_force: tuple[bytes, ...]) -> list[list[Any]]:
    """A quorum of the block's signatures, each signer named by its index in `in_force`."""
    index = {key: i for i, key in enumerate(in_force)}
    return [[index[v], s] for v, s in block.signatures][:quorum(len(in_force))]


def _certified(value: Any, in_force: tuple[bytes, ...], where: str) -> dict[str, Any]:
    """The "header" and "commit" of a compact [header, [[index, signature], ...]]."""
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], list):
        raise ProofInvalid(f"shape: {where}block must be [header, signatures]")
    try:
        header: Header = header_from_wire(value[0])
    except BlockError as exc:
        raise ProofInvalid(f"shape: {where}header: {exc}") from None
    seals = []
    for j, seal in enumerate(value[1]):
        ok = isinstance(seal, list) and len(seal) == 2 and type(seal[0]) is int and isinstance(seal[1], bytes)
        if not ok or len(seal[1]) != 64:
            raise ProofInvalid(f"shape: {where}signatures[{j}] must be [index, 64-byte signature]")
        if not 0 <= seal[0] < len(in_force):
            raise ProofInvalid(f"shape: {where}signatures[{j}] names validator {seal[0]} of {len(in_force)}")
        seals.append((in_force[seal[0]], seal[1]))
    return {"header": header_json(header), "commit": commit_json(header.height, header.hash().hex(), seals)}


def _result(family: str, value: bytes | None) -> Any:
    """The decoded value; None for bytes that are no value of the family, which the check then refuses."""
    try:
        return query_result(family, value)
    except (ValueError, TypeError, AttributeError):
        return None
