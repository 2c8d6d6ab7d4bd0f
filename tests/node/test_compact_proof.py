"""Compact state proofs: the worked example's proofs compacted, checked as their JSON form is, every damaged byte refused."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgpack
import pytest

from node.api.lookup import build_state_proof
from node.chain.compact_proof import compact_state_proof, expand_state_proof, is_compact, verify_compact_state_proof
from node.chain.proof import ProofInvalid
from node.chain.state_proof import verify_state_proof
from tests.node import proof_example
from tests.node.proof_example import ABSENT_DIGEST, CHAIN_ID, PRESENT_KV_KEY

GENESIS_KEYS = [bytes.fromhex(m["pubkey"]) for m in proof_example.GENESIS.to_dict()["validators"]]
LEDGER, _ = proof_example.build_ledger()
PROOFS = {"present": ("kv", PRESENT_KV_KEY), "absent": ("notary", ABSENT_DIGEST)}


def _proof(which: str) -> dict[str, Any]:
    proof = build_state_proof(LEDGER, *PROOFS[which])
    assert proof is not None
    return proof


def _reason(data: bytes) -> str:
    with pytest.raises(ProofInvalid) as caught:
        verify_compact_state_proof(data, CHAIN_ID, GENESIS_KEYS)
    return caught.value.reason


@pytest.mark.parametrize("which", PROOFS)
def test_a_compact_proof_proves_what_its_json_form_proves_in_under_half_the_bytes(which: str) -> None:
    proof = _proof(which)
    data = compact_state_proof(proof, CHAIN_ID, GENESIS_KEYS)
    assert is_compact(data) and not is_compact(json.dumps(proof).encode())
    full, compact = verify_state_proof(proof, CHAIN_ID, GENESIS_KEYS), verify_compact_state_proof(data, CHAIN_ID, GENESIS_KEYS)
    assert (compact.family, compact.key, compact.state_value, compact.result, compact.height, compact.block_hash,
            compact.validator_changes) == (full.family, full.key, full.state_value, full.result, full.height,
                                           full.block_hash, full.validator_changes)
    assert compact.present == (which == "present")
    assert compact.signatures == compact.quorum <= full.signatures  # a quorum is kept, no more
    assert len(data) < len(json.dumps(proof, separators=(",", ":"))) / 2


@pytest.mark.parametrize("which", PROOFS)
def test_every_changed_or_missing_byte_is_refused(which: str) -> None:
    data = compact_state_proof(_proof(which), CHAIN_ID, GENESIS_KEYS)
    for i in range(len(data)):
        for flip in (0x01, 0x80):
            damaged = data[:i] + bytes([data[i] ^ flip]) + data[i + 1:]
            try:
                verified = verify_compact_state_proof(damaged, CHAIN_ID, GENESIS_KEYS)
            except ProofInvalid:
                continue
            # Only another key's absence may still hold: one whose bucket's path folds the same way (an
            # empty subtree of the small example). The proof then says what is true of that key.
            assert which == "absent" and verified.key != ABSENT_DIGEST and not verified.present
            assert LEDGER.read_state(verified.state_key) is None
    for size in range(len(data)):
        with pytest.raises(ProofInvalid):
            verify_compact_state_proof(data[:size], CHAIN_ID, GENESIS_KEYS)
    assert _reason(data + b"\x00").startswith("shape: not a compact proof")


def test_a_proof_that_does_not_hold_is_not_compacted() -> None:
    proof = _proof("present")
    proof["siblings"][-1] = "11" * 32
    with pytest.raises(ProofInvalid, match="^state root"):
        compact_state_proof(proof, CHAIN_ID, GENESIS_KEYS)


def _edited(which: str, edit: Any) -> bytes:
    obj = msgpack.unpackb(compact_state_proof(_proof(which), CHAIN_ID, GENESIS_KEYS))
    edit(obj)
    return msgpack.packb(obj, use_bin_type=True)


def test_signers_are_named_by_index_among_the_validators_in_force() -> None:
    def out_of_range(obj: list[Any]) -> None:
        obj[6][1][0][0] = 5  # the proof's block is decided by the 5 validators after the change
    assert _reason(_edited("present", out_of_range)) == "shape: signatures[0] names validator 5 of 5"

    def repeated(obj: list[Any]) -> None:
        obj[6][1][1] = obj[6][1][0]
    assert _reason(_edited("present", repeated)).startswith("certificate:")

    def fewer(obj: list[Any]) -> None:
        obj[7][0][1].pop()
    assert _reason(_edited("present", fewer)).startswith("validator change: validator_changes[0]")


def test_the_genesis_is_needed_to_read_the_indices() -> None:
    data = compact_state_proof(_proof("absent"), CHAIN_ID, GENESIS_KEYS)
    others = GENESIS_KEYS[1:] + GENESIS_KEYS[:1]
    with pytest.raises(ProofInvalid, match="^validator change"):
        verify_compact_state_proof(data, CHAIN_ID, others)
    assert expand_state_proof(data, GENESIS_KEYS)["commit"]["block_hash"] == _proof("absent")["commit"]["block_hash"]


def test_the_documented_compact_proof_is_what_the_code_writes() -> None:
    section = (Path(__file__).resolve().parents[2] / "docs" / "proofs.md").read_text().split("### The compact form")[1]
    documented = bytes.fromhex("".join(re.findall(r"```hex\n(.*?)```", section, re.DOTALL)[0].split()))
    assert documented == compact_state_proof(_proof("absent"), CHAIN_ID, GENESIS_KEYS)
    assert f"({len(documented):,} bytes" in section
    assert not verify_compact_state_proof(documented, CHAIN_ID, GENESIS_KEYS).present
