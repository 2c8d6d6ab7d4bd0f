"""State proofs end to end: a 4-node testnet of real processes, proofs fetched over RPC and with the CLI,
checked offline by `alliance verify-proof` and `alliance lookup --verify`, tampered ones refused (exit 6)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node.client import NotFound, RpcError

from tests.e2e.nodeproc import NodeProcess, alliance, node_process, wait_for

BASE_PORT = 28000  # 28000..28049: four nodes, ten ports each
VERIFICATION_FAILED, NOT_FOUND = 6, 5


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, NodeProcess]]:
    out = tmp_path_factory.mktemp("state-proof") / "net"
    alliance("testnet", "--nodes", "4", "--out", str(out), "--base-port", str(BASE_PORT))
    nodes = [node_process(out, BASE_PORT, i) for i in range(4)]
    try:
        for node in nodes:
            node.start()
        yield out, nodes[1]
    finally:
        for node in nodes:
            if node.process is not None:
                node.stop()


def _rpc(node: NodeProcess) -> list[str]:
    return ["--rpc", node.rpc_url]


def _verify(net: Path, proof: dict[str, Any], tmp: Path, name: str = "proof.json") -> Any:
    path = tmp / name
    path.write_text(json.dumps(proof))
    return alliance("verify-proof", str(path), "--genesis", str(net / "genesis.toml"), check=False)


def test_state_proofs_verify_and_tampered_ones_exit_6(net: tuple[Path, NodeProcess], tmp_path: Path) -> None:
    out, node = net
    key = ["--key", str(out / "client.key")]
    put = json.loads(alliance("tx", "put", "invoice/7/status", "paid", *_rpc(node), *key).stdout)
    wait_for(lambda: node.client().status()["height"] >= put["height"], "the put to reach node1")
    got = json.loads(alliance("tx", "get", "invoice/7/status", "--prove", str(tmp_path / "kv.json"),
                              *_rpc(node)).stdout)
    assert got["value_text"] == "paid"
    present = json.loads((tmp_path / "kv.json").read_text())
    checked = _verify(out, present, tmp_path)
    assert checked.returncode == 0, checked.stderr
    summary = json.loads(checked.stdout)
    assert summary["present"] and summary["height"] == present["header"]["height"] >= put["height"]
    assert bytes.fromhex(summary["result"]["value"]) == b"paid" and summary["genesis"].endswith("genesis.toml")

    absent = node.client().query("kv", "invoice/8/status", prove=True)
    assert absent["state_value"] is None
    assert json.loads(_verify(out, absent, tmp_path).stdout)["present"] is False
    digest = hashlib.sha256(b"never recorded").hexdigest()
    unrecorded = node.client().query("notary", digest, prove=True)
    assert json.loads(_verify(out, unrecorded, tmp_path).stdout)["present"] is False

    def flip(text: str) -> str:
        return text[:-1] + ("0" if text[-1] != "0" else "1")

    tamperings: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
        ("value", lambda p: p.__setitem__("state_value", flip(p["state_value"]))),
        ("records", lambda p: p.__setitem__("records", p["records"][:-2])),
        ("state root", lambda p: p["siblings"].__setitem__(0, flip(p["siblings"][0]))),
        ("block hash", lambda p: p["header"].__setitem__("time", p["header"]["time"] + 1)),
        ("certificate", lambda p: p["commit"]["signatures"][0].__setitem__(
            "signature", flip(p["commit"]["signatures"][0]["signature"]))),
    ]
    for check, change in tamperings:
        proof = copy.deepcopy(present)
        change(proof)
        result = _verify(out, proof, tmp_path)
        assert result.returncode == VERIFICATION_FAILED, (check, result.stderr)
        assert "Traceback" not in result.stderr and check in result.stderr, (check, result.stderr)


def test_a_compact_proof_is_written_by_tx_get_and_checked_by_verify_proof(net: tuple[Path, NodeProcess],
                                                                          tmp_path: Path) -> None:
    out, node = net
    genesis = ["--genesis", str(out / "genesis.toml")]
    put = json.loads(alliance("tx", "put", "invoice/9/status", "paid", *_rpc(node), "--key", str(out / "client.key")).stdout)
    wait_for(lambda: node.client().status()["height"] >= put["height"], "the put to reach node1")
    path = tmp_path / "kv.bin"
    got = json.loads(alliance("tx", "get", "invoice/9/status", "--prove", str(path), "--compact", *genesis,
                              *_rpc(node)).stdout)
    assert got["value_text"] == "paid"
    data = path.read_bytes()
    assert len(data) < 2048 and len(data) < len(json.dumps(node.client().query("kv", "invoice/9/status", prove=True))) / 2
    checked = alliance("verify-proof", str(path), *genesis, check=False)
    assert checked.returncode == 0, checked.stderr
    summary = json.loads(checked.stdout)
    assert summary["present"] and bytes.fromhex(summary["result"]["value"]) == b"paid"
    assert summary["signatures"] == summary["quorum"] == 3 and summary["validators"] == 4  # a quorum, no more
    damaged = tmp_path / "damaged.bin"
    damaged.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    refused = alliance("verify-proof", str(damaged), *genesis, check=False)
    assert refused.returncode == VERIFICATION_FAILED and "Traceback" not in refused.stderr, refused.stderr
    misused = alliance("tx", "get", "invoice/9/status", "--compact", *_rpc(node), check=False)
    assert misused.returncode != 0 and "--compact is for --prove" in misused.stderr


def test_lookup_verify_proves_recorded_and_unrecorded_files(net: tuple[Path, NodeProcess], tmp_path: Path) -> None:
    out, node = net
    genesis = ["--genesis", str(out / "genesis.toml")]
    document = tmp_path / "contract.pdf"
    document.write_bytes(b"%PDF-1.7 contract 7")
    other = tmp_path / "draft.pdf"
    other.write_bytes(b"%PDF-1.7 draft")
    recorded = json.loads(alliance("notarize", str(document), "--meta", "contract 7", *_rpc(node),
                                   "--key", str(out / "client.key")).stdout)
    wait_for(lambda: node.client().status()["height"] >= recorded["height"], "the record to reach node1")
    evidence = json.loads(alliance("lookup", str(document), "--verify", *genesis, *_rpc(node)).stdout)
    assert evidence["verified"] and evidence["meta"] == "contract 7" and evidence["height"] == recorded["height"]
    assert evidence["proved_at_height"] >= recorded["height"] and evidence["recorder"]
    missing = alliance("lookup", str(other), "--verify", *genesis, *_rpc(node), check=False)
    assert missing.returncode == NOT_FOUND and "Traceback" not in missing.stderr
    assert "not recorded, proved absent at height" in missing.stderr
    proof = node.client().query("notary", hashlib.sha256(document.read_bytes()).hexdigest(), prove=True)
    proof["result"]["meta"] = "contract 8"
    assert _verify(out, proof, tmp_path).returncode == VERIFICATION_FAILED


def test_query_proves_only_at_the_tip_and_checks_its_params(net: tuple[Path, NodeProcess]) -> None:
    _, node = net
    client = node.client()
    wait_for(lambda: client.status()["height"] >= 2, "two blocks")
    tip = client.query("kv", "x", prove=True)["header"]["height"]
    with pytest.raises(NotFound) as caught:
        client.query("kv", "x", prove=True, height=1)
    assert caught.value.data["reason"] == "state_not_kept" and caught.value.data["heights"][0] >= tip
    assert client.query("kv", "x", prove=False) is None  # unchanged without prove
    for params in ({"prove": "yes"}, {"prove": True, "key": ""}, {"prove": True, "family": "gov"},
                   {"prove": True, "height": -1}):
        with pytest.raises(RpcError) as refused:
            client.call("query", **{"family": "kv", "key": "x", **params})
        assert refused.value.code == -32602
