"""State proofs from a real 4-node consortium: `query` with `prove`, checked offline by
`alliance verify-proof` and `alliance lookup --verify`, for present and absent keys, and refused
once tampered (exit 6)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.client import RpcError
from tests.e2e.nodeproc import NodeProcess, alliance, make_testnet, node_process


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[NodeProcess]]]:
    net, base = make_testnet(tmp_path_factory.mktemp("state-proof"), nodes=4)
    nodes = [node_process(net, base, i) for i in range(4)]
    for node in nodes:
        node.start()
    try:
        signing = ["--rpc", nodes[0].rpc_url, "--key", str(net / "client.key")]
        for i in range(20):
            alliance("tx", "put", f"invoice/{i}", f"status {i}", *signing, *(["--wait"] if i == 19 else []))
        yield net, nodes
    finally:
        for node in nodes:
            node.stop()


def _verify(net: Path, proof: Any, tmp: Path) -> tuple[int, dict[str, Any] | str]:
    path = tmp / "proof.json"
    path.write_text(json.dumps(proof))
    result = alliance("verify-proof", str(path), "--genesis", str(net / "genesis.toml"), check=False)
    assert "Traceback" not in result.stderr
    return result.returncode, json.loads(result.stdout) if result.returncode == 0 else result.stderr


def test_present_and_absent_kv_keys_are_proved_offline(consortium: tuple[Path, list[NodeProcess]],
                                                       tmp_path: Path) -> None:
    net, nodes = consortium
    present = nodes[2].client().call("query", family="kv", key="invoice/7", prove=True)
    code, summary = _verify(net, present, tmp_path)
    assert code == 0 and isinstance(summary, dict)
    assert summary["present"] and bytes.fromhex(summary["result"]["value"]) == b"status 7"
    absent = nodes[1].client().call("query", family="kv", key="invoice/never", prove=True)
    code, summary = _verify(net, absent, tmp_path)
    assert code == 0 and isinstance(summary, dict) and summary["present"] is False and summary["result"] is None


def _flip(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


@pytest.mark.parametrize("field", ["value", "records", "siblings", "state_root", "signature", "result"])
def test_a_tampered_state_proof_fails_offline(consortium: tuple[Path, list[NodeProcess]], tmp_path: Path,
                                              field: str) -> None:
    net, nodes = consortium
    proof = copy.deepcopy(nodes[0].client().call("query", family="kv", key="invoice/3", prove=True))
    if field == "siblings":
        proof["siblings"][0] = _flip(proof["siblings"][0])
    elif field == "state_root":
        proof["header"]["state_root"] = _flip(proof["header"]["state_root"])
    elif field == "signature":
        signature = proof["commit"]["signatures"][0]
        signature["signature"] = _flip(signature["signature"])
    elif field == "result":
        proof["result"]["owner"] = "00" * 32
    else:
        proof[field] = _flip(proof[field])
    code, stderr = _verify(net, proof, tmp_path)
    assert code == 6, stderr


def test_a_state_proof_at_another_height_is_not_kept(consortium: tuple[Path, list[NodeProcess]]) -> None:
    _, nodes = consortium
    with pytest.raises(RpcError) as caught:
        nodes[0].client().call("query", family="kv", key="invoice/1", prove=True, height=1)
    assert caught.value.code == -32005 and caught.value.data["reason"] == "state_not_kept"


def test_lookup_verify_proves_a_recorded_and_an_unrecorded_file(consortium: tuple[Path, list[NodeProcess]],
                                                                tmp_path: Path) -> None:
    net, nodes = consortium
    genesis, rpc = str(net / "genesis.toml"), ["--rpc", nodes[3].rpc_url]
    recorded, unrecorded = tmp_path / "invoice.pdf", tmp_path / "forged.pdf"
    recorded.write_bytes(b"%PDF-1.7 invoice 2026-0042")
    unrecorded.write_bytes(b"%PDF-1.7 invoice 2026-0042 altered")
    alliance("notarize", str(recorded), "--wait", "--rpc", nodes[0].rpc_url, "--key", str(net / "client.key"))
    shown = json.loads(alliance("lookup", str(recorded), "--verify", "--genesis", genesis, *rpc).stdout)
    assert shown["verified"] is True and shown["digest"] == hashlib.sha256(recorded.read_bytes()).hexdigest()
    result = alliance("lookup", str(unrecorded), "--verify", "--genesis", genesis, *rpc, check=False)
    assert result.returncode == 5 and "proved absent" in result.stderr and "Traceback" not in result.stderr
    printed = json.loads(result.stdout)
    assert printed["recorded"] is False and printed["verified"] is True
