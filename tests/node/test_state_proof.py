"""State proofs: built by the node over the worked example's chain, verified offline, every tampering refused."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from node.api.lookup import build_state_proof
from node.chain.proof import ProofInvalid
from node.chain.state_proof import KeyInvalid, is_state_proof, verify_state_proof
from tests.node import proof_example
from tests.node.proof_example import ABSENT_DIGEST, CHAIN_ID, PRESENT_KV_KEY, hex_locations

GENESIS_KEYS = [bytes.fromhex(m["pubkey"]) for m in proof_example.GENESIS.to_dict()["validators"]]
LEDGER, _ = proof_example.build_ledger()


def _proof(family: str, key: str) -> dict[str, Any]:
    proof = build_state_proof(LEDGER, family, key)
    assert proof is not None
    return proof


def _reason(proof: dict[str, Any]) -> str:
    with pytest.raises(ProofInvalid) as caught:
        verify_state_proof(proof, CHAIN_ID, GENESIS_KEYS)
    return caught.value.reason


def test_a_present_kv_key_is_proved_with_its_value_at_the_tip() -> None:
    proof = _proof("kv", PRESENT_KV_KEY)
    verified = verify_state_proof(proof, CHAIN_ID, GENESIS_KEYS)
    assert verified.present and verified.height == 4 and verified.validator_changes == 1
    assert bytes.fromhex(verified.result["value"]) == b"sent"  # type: ignore[index]
    assert (verified.signatures, verified.quorum, len(verified.validators)) == (4, 4, 5)
    assert is_state_proof(proof) and not is_state_proof(proof_example.proofs()[0])


def test_recorded_and_unrecorded_notary_digests_are_proved() -> None:
    recorded = hashlib.sha256(proof_example.DOCUMENT).hexdigest()
    present = verify_state_proof(_proof("notary", recorded), CHAIN_ID, GENESIS_KEYS)
    assert present.result is not None and present.result["meta"] == "invoice 2026-0001"
    absent = verify_state_proof(_proof("notary", ABSENT_DIGEST), CHAIN_ID, GENESIS_KEYS)
    assert (absent.present, absent.result, absent.height) == (False, None, 4)


def test_an_absent_kv_key_in_an_empty_bucket_is_proved_absent() -> None:
    proof = _proof("kv", "invoice/2026-0009/status")
    assert proof["records"] == "" and proof["state_value"] is None
    assert not verify_state_proof(proof, CHAIN_ID, GENESIS_KEYS).present


def test_keys_that_name_no_state_key_are_refused_when_building() -> None:
    for family, key in (("kv", ""), ("kv", "x" * 257), ("notary", "ab"), ("gov", "x"), ("kv", 5)):
        with pytest.raises(KeyInvalid):
            build_state_proof(LEDGER, family, key)


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _flip_last(proof: dict[str, Any], path: tuple[Any, ...]) -> None:
    parent, last = _get(proof, path[:-1]), path[-1]
    text = parent[last]
    parent[last] = text[:-1] + ("0" if text[-1] != "0" else "1")


@pytest.mark.parametrize("family,key", [("kv", PRESENT_KV_KEY), ("notary", ABSENT_DIGEST)])
def test_every_hex_character_changed_is_refused(family: str, key: str) -> None:
    base = _proof(family, key)
    locations = list(hex_locations(base))
    assert len(locations) > 40
    for path in locations:
        tampered = copy.deepcopy(base)
        _flip_last(tampered, path)
        with pytest.raises(ProofInvalid):
            verify_state_proof(tampered, CHAIN_ID, GENESIS_KEYS)


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda p: _get(p, path[:-1]).__setitem__(path[-1], value)


PRESENT = _proof("kv", PRESENT_KV_KEY)
ABSENT = _proof("notary", ABSENT_DIGEST)
OTHER_VALUE = b"\x93\xc4\x04paid\xc4\x20" + bytes(32) + b"\x04"
TAMPERINGS: list[tuple[str, dict[str, Any], Callable[[dict[str, Any]], None], str]] = [
    ("key of another key", PRESENT, _set(("key",), "invoice/2026-0002/status"), "state key"),
    ("family notary", PRESENT, _set(("family",), "notary"), "state key"),
    ("bucket + 1", PRESENT, lambda p: p.__setitem__("bucket", p["bucket"] + 1), "bucket"),
    ("another state value", PRESENT, _set(("state_value",), OTHER_VALUE.hex()), "value"),
    ("result height changed", PRESENT, lambda p: p["result"].__setitem__("height", 3), "value"),
    ("present said absent", PRESENT, lambda p: p.update(state_value=None, result=None), "value"),
    ("records truncated", PRESENT, lambda p: p.__setitem__("records", p["records"][:-2]), "records"),
    ("records emptied", PRESENT, _set(("records",), ""), "value"),
    ("a sibling changed", ABSENT, _set(("siblings", 17), "00" * 32), "state root"),
    ("a sibling dropped", ABSENT, lambda p: p["siblings"].pop(), "shape"),
    ("absent given a value", ABSENT, _set(("state_value",), "00"), "value"),
    ("absent given a result", ABSENT, _set(("result",), {}), "value"),
    ("header.state_root", ABSENT, _set(("header", "state_root"), "11" * 32), "state root"),
    ("header.time + 1", ABSENT, lambda p: p["header"].__setitem__("time", p["header"]["time"] + 1), "block hash"),
    ("last signature dropped", ABSENT, lambda p: p["commit"]["signatures"].pop(), "certificate"),
    ("validator_changes = []", ABSENT, _set(("validator_changes",), []), "validators"),
    ("version 2", ABSENT, _set(("version",), 2), "shape"),
    ("an unknown key", ABSENT, lambda p: p.__setitem__("extra", 1), "shape"),
]


# The step of docs/proofs.md section 6 at which each check is.
STEPS = {"shape": 1, "state key": 2, "bucket": 3, "records": 4, "value": 5, "state root": 6, "chain id": 7,
         "block hash": 8, "validator change": 9, "validators": 10, "certificate": 11}


@pytest.mark.parametrize(("base", "change", "check"), [(b, c, k) for _, b, c, k in TAMPERINGS],
                         ids=[n for n, _, _, _ in TAMPERINGS])
def test_each_tampering_fails_at_its_check(base: dict[str, Any], change: Callable[[dict[str, Any]], None],
                                           check: str) -> None:
    proof = copy.deepcopy(base)
    change(proof)
    assert _reason(proof).startswith(check + ":")


def test_a_proof_checked_against_another_chain_fails() -> None:
    with pytest.raises(ProofInvalid, match="^chain id"):
        verify_state_proof(PRESENT, "acme-orders", GENESIS_KEYS)


# ---- the worked example of docs/proofs.md section 6 ------------------------------------------------

SECTION = (Path(__file__).resolve().parents[2] / "docs" / "proofs.md").read_text().split("## 6. State proofs")[1]
STATE_FIELDS = ("family", "key", "state_key", "state_value", "result", "bucket", "records", "siblings")


def _documented() -> list[Any]:
    return [json.loads(text) for text in re.findall(r"```json\n(.*?)```", SECTION, re.DOTALL)]


def test_the_documented_state_proofs_are_what_the_node_builds_and_verify() -> None:
    present, absent = proof_example.state_proofs()
    documented = _documented()
    assert documented[0] == json.loads(json.dumps(present))
    assert documented[1] == json.loads(json.dumps({k: absent[k] for k in STATE_FIELDS}))
    assert verify_state_proof(documented[0], CHAIN_ID, GENESIS_KEYS).present
    whole = {**documented[0], **documented[1]}
    assert not verify_state_proof(whole, CHAIN_ID, GENESIS_KEYS).present


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_the_documented_intermediate_values_follow_from_the_definition() -> None:
    """kh, bucket, vh and every fold digest, recomputed here from the page's rules with hashlib alone."""
    for proof in proof_example.state_proofs():
        kh = _sha(bytes.fromhex(proof["state_key"]))
        bucket = int.from_bytes(kh[:4], "big") >> 14
        assert bucket == proof["bucket"] and f"`{kh.hex()}`" in SECTION and f"bucket {bucket}" in SECTION
        blob = bytes.fromhex(proof["records"])
        digest = _sha(b"\x00" + blob) if blob else bytes(32)
        assert f"leaf                                    = {digest.hex()}" in SECTION
        if proof["state_value"] is not None:
            assert f"`{_sha(bytes.fromhex(proof['state_value'])).hex()}`" in SECTION
        index = bucket
        for sibling in map(bytes.fromhex, proof["siblings"]):
            pair = sibling + digest if index & 1 else digest + sibling
            digest = bytes(32) if pair == bytes(64) else _sha(pair)
            assert f"index {index:6} " in SECTION and f") = {digest.hex()}" in SECTION
            index >>= 1
        assert digest.hex() == proof["header"]["state_root"]


def test_the_documented_failures_are_the_tested_ones() -> None:
    rows = re.findall(r"^\| (kv|notary) \| (.+?) \| (\d+), (.+?) \|$", SECTION, re.MULTILINE)
    expected = [("kv" if base is PRESENT else "notary", name, str(STEPS[check]), check)
                for name, base, _, check in TAMPERINGS]
    assert rows == expected
