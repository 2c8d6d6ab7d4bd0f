"""State proofs: built by the node over the worked example's chain (a validator added on the way),
verified with nothing but the genesis, and every tampered field refused."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from node.api.lookup import build_state_proof
from node.chain.proof import ProofInvalid
from node.chain.state_proof import KeyInvalid, state_key, verify_state_proof
from node.chain.state_tree import bucket_of, key_hash
from tests.node import proof_example

GENESIS = proof_example.GENESIS
VALIDATORS = GENESIS.members.validator_keys
LEDGER, _ = proof_example.build_ledger()
RECORDED = hashlib.sha256(proof_example.DOCUMENT).hexdigest()
UNRECORDED = hashlib.sha256(b"never recorded").hexdigest()


def proof(family: str, key: str) -> dict[str, Any]:
    built = build_state_proof(LEDGER, family, key)
    assert built is not None
    return built


def verify(p: dict[str, Any], chain_id: str = GENESIS.chain_id) -> Any:
    return verify_state_proof(p, chain_id, VALIDATORS)


def test_a_present_kv_key_is_proved_with_its_value() -> None:
    verified = verify(proof("kv", "invoice/2026-0001/status"))
    assert verified.result is not None and bytes.fromhex(verified.result["value"]) == b"sent"
    assert (verified.height, verified.validator_changes, len(verified.validators)) == (4, 1, 5)
    assert verified.header.state_root == LEDGER.state_root


def test_a_present_notary_record_is_proved() -> None:
    verified = verify(proof("notary", RECORDED))
    assert verified.result is not None and verified.result["meta"] == "invoice 2026-0001"


@pytest.mark.parametrize(("family", "key"), [("kv", "invoice/2026-0009/status"), ("kv", "never/written"),
                                             ("notary", UNRECORDED)])
def test_an_absent_key_is_proved_absent(family: str, key: str) -> None:
    p = proof(family, key)
    assert p["value"] is None and p["result"] is None
    assert verify(p).result is None


def test_a_proof_shares_its_bucket_with_other_keys_and_still_proves_absence() -> None:
    """Absence in a bucket that holds another key: find a key of the bucket of a present one."""
    present = state_key("kv", "invoice/2026-0001/status")
    target = bucket_of(key_hash(present))
    absent = next(f"probe/{i}" for i in range(10**7) if bucket_of(key_hash(state_key("kv", f"probe/{i}"))) == target)
    p = proof("kv", absent)
    assert p["records"] != "" and p["value"] is None
    assert verify(p).result is None


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(p: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = p
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value(target[int(last) if last.isdigit() else last]) \
            if callable(value) else value
    return change


def _flip(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


TAMPERINGS = [
    ("value", _set("value", _flip), "^value: its SHA-256"),
    ("value dropped", _set("value", None), "^value: the records hold the key"),
    ("result", _set("result.value", "00"), "^result:"),
    ("key", _set("key", "invoice/2026-0002/status"), "^(records|value|state root):"),
    ("family", _set("family", "notary"), "^key:"),
    ("records", _set("records", _flip), "^(value|state root):"),
    ("records cut", _set("records", lambda r: r[:-2]), "^records:"),
    ("sibling", _set("siblings.5", _flip), "^state root:"),
    ("siblings short", _set("siblings", lambda s: s[:-1]), "^shape: siblings"),
    ("header.state_root", _set("header.state_root", _flip), "^block hash:"),
    ("header.height", _set("header.height", 3), "^block hash:"),
    ("signature", _set("commit.signatures.0.signature", _flip), "^certificate:"),
    ("signatures", _set("commit.signatures", lambda s: s[:2]), "^certificate:"),
    ("validator_changes", _set("validator_changes", []), "^validators:"),
    ("version", _set("version", 2), "^shape: version"),
    ("extra key", lambda p: p.__setitem__("height", 4), "^shape: proof has the unknown key"),
]


@pytest.mark.parametrize(("tamper", "reason"), [(t, r) for _, t, r in TAMPERINGS], ids=[n for n, _, _ in TAMPERINGS])
def test_a_tampered_proof_is_refused(tamper: Callable[[dict[str, Any]], None], reason: str) -> None:
    p = copy.deepcopy(proof("kv", "invoice/2026-0001/status"))
    verify(p)
    tamper(p)
    with pytest.raises(ProofInvalid, match=reason):
        verify(p)


def test_an_absence_claimed_for_a_present_key_is_refused() -> None:
    p = proof("kv", "invoice/2026-0001/status")
    p["value"], p["result"] = None, None
    with pytest.raises(ProofInvalid, match="^value: the records hold the key"):
        verify(p)


def test_a_presence_claimed_for_an_absent_key_is_refused() -> None:
    present, absent = proof("kv", "invoice/2026-0001/status"), proof("kv", "never/written")
    absent["value"], absent["result"] = present["value"], present["result"]
    with pytest.raises(ProofInvalid, match="^value: the records do not hold the key"):
        verify(absent)


def test_another_chain_is_refused() -> None:
    with pytest.raises(ProofInvalid, match="^chain id:"):
        verify(proof("kv", "invoice/2026-0001/status"), "other-chain")


def test_a_key_naming_no_state_key_is_refused_before_building() -> None:
    with pytest.raises(KeyInvalid):
        build_state_proof(LEDGER, "notary", "not hex")
    with pytest.raises(KeyInvalid):
        build_state_proof(LEDGER, "kv", "")
