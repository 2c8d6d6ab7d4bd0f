"""Proofs end to end: get_proof of a real `alliance run` node, and the evidence flow on the command line
(notarize --proof, verify-proof, lookup --verify, lookup --proof with no node at all)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node.chain.tx import sign_tx
from node.client import RpcError
from node.keys import load_key
from tests.e2e.nodeproc import NodeProcess, alliance, make_testnet, node_process


@dataclass
class Chain:
    net: Path
    node: NodeProcess

    @property
    def genesis(self) -> str:
        return str(self.net / "genesis.toml")

    def signing(self) -> list[str]:
        return ["--rpc", self.node.rpc_url, "--key", str(self.net / "client.key")]


def _start(tmp: Path) -> Chain:
    net, base = make_testnet(tmp)
    node = node_process(net, base)
    node.start()
    return Chain(net, node)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    started = _start(tmp_path_factory.mktemp("proof-cli"))
    try:
        yield started
    finally:
        started.node.stop()


def _document(tmp: Path, name: str = "invoice-2026-0001.pdf") -> Path:
    path = tmp / name
    path.write_bytes(f"%PDF-1.7 {name} {tmp}".encode())
    return path


def _notarize_with_proof(chain: Chain, document: Path, out: Path) -> dict[str, Any]:
    result = alliance("notarize", str(document), "--wait", "--proof", str(out), "--meta", "signed copy",
                      *chain.signing())
    printed: dict[str, Any] = json.loads(result.stdout)
    return printed


def _error_line(result: subprocess.CompletedProcess[str], prefix: str = "alliance: error: ") -> str:
    """The one line of the error, which starts with `prefix`; never a traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("alliance:")]
    assert len(lines) == 1 and lines[0].startswith(prefix), result.stderr
    return lines[0][len(prefix):]


# ---- get_proof -------------------------------------------------------------------------------


@pytest.mark.parametrize("tx_hash", ["xyz", "00" * 31, "0x" + "ab" * 31, 7])
def test_get_proof_of_a_malformed_hash_is_invalid_params(chain: Chain, tx_hash: Any) -> None:
    with pytest.raises(RpcError) as caught:
        chain.node.client().call("get_proof", tx_hash=tx_hash)
    assert caught.value.code == -32602


def test_get_proof_without_params_is_invalid_params(chain: Chain) -> None:
    with pytest.raises(RpcError) as caught:
        chain.node.client().call("get_proof")
    assert caught.value.code == -32602


def test_get_proof_of_an_unknown_transaction_is_not_found(chain: Chain) -> None:
    with pytest.raises(RpcError) as caught:
        chain.node.client().call("get_proof", tx_hash="ab" * 32)
    assert caught.value.code == -32005
    assert "unknown" in caught.value.message
    assert caught.value.data == {"status": "unknown"}


def test_get_proof_of_a_pending_transaction_is_not_found(tmp_path: Path) -> None:
    # One of two validators: no quorum, so an admitted transaction stays pending.
    net, base = make_testnet(tmp_path, nodes=2)
    node = node_process(net, base)
    node.start()
    try:
        client = node.client()
        tx = sign_tx(load_key(net / "client.key"), client.status()["chain_id"], "kv", "put",
                     {"key": "k", "value": b"v"}, 1)
        client.call("send_tx", tx=tx.raw.hex())
        assert client.call("get_tx", tx_hash=tx.hash.hex())["status"] == "pending"
        with pytest.raises(RpcError) as caught:
            client.call("get_proof", tx_hash=tx.hash.hex())
    finally:
        assert node.stop() == 0
    assert caught.value.code == -32005
    assert "pending" in caught.value.message
    assert caught.value.data == {"status": "pending"}


# ---- notarize --proof and verify-proof ------------------------------------------------------------


def test_notarize_writes_a_proof_that_verify_proof_accepts(chain: Chain, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    document, out = _document(tmp_path), tmp_path / "evidence" / "invoice.proof.json"
    out.parent.mkdir()
    printed = _notarize_with_proof(chain, document, out)
    assert printed["status"] == "committed" and printed["code"] == 0
    assert printed["proof"] == str(out)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left behind
    proof = json.loads(out.read_text())
    assert proof["tx_hash"] == printed["tx_hash"]

    summary = json.loads(alliance("verify-proof", str(out), "--genesis", chain.genesis).stdout)
    assert summary["tx_hash"] == printed["tx_hash"]
    assert (summary["height"], summary["index"]) == (printed["height"], printed["index"])
    assert summary["block_hash"] == proof["commit"]["block_hash"]
    assert (summary["family"], summary["op"], summary["code"], summary["log"]) == ("notary", "record", 0, "")
    assert summary["args"] == {"digest": hashlib.sha256(document.read_bytes()).hexdigest(), "meta": "signed copy"}
    assert summary["sender"] == printed["tx"]["sender"]
    assert (summary["signatures"], summary["quorum"]) == (1, 1)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALLIANCE_GENESIS", chain.genesis)
    assert json.loads(alliance("verify-proof", str(out)).stdout) == summary


def test_a_tampered_proof_fails_with_its_reason(chain: Chain, tmp_path: Path) -> None:
    out = tmp_path / "proof.json"
    _notarize_with_proof(chain, _document(tmp_path), out)
    proof = json.loads(out.read_text())
    proof["header"]["time"] += 1
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(proof))
    result = alliance("verify-proof", str(tampered), "--genesis", chain.genesis, check=False)
    assert result.returncode == 6 and result.stdout == ""
    assert _error_line(result, "alliance: proof invalid: ").startswith("block hash: the header hashes to ")


def test_a_proof_against_another_chain_fails(chain: Chain, tmp_path: Path) -> None:
    out = tmp_path / "proof.json"
    _notarize_with_proof(chain, _document(tmp_path), out)
    other = tmp_path / "other"
    alliance("testnet", "--nodes", "1", "--out", str(other), "--chain-id", "another-chain")
    result = alliance("verify-proof", str(out), "--genesis", str(other / "genesis.toml"), check=False)
    assert _error_line(result, "alliance: proof invalid: ").startswith("chain id: ")


def test_notarize_with_proof_and_no_wait_is_a_usage_error(chain: Chain, tmp_path: Path) -> None:
    document = _document(tmp_path)
    result = alliance("notarize", str(document), "--no-wait", "--proof", str(tmp_path / "p.json"),
                      *chain.signing(), check=False)
    assert result.returncode == 2
    assert "--no-wait" in _error_line(result)
    assert alliance("notarize", str(document), "--wait", "--no-wait", *chain.signing(), check=False).returncode == 2


def test_notarize_refuses_an_unwritable_proof_path_before_recording(chain: Chain, tmp_path: Path) -> None:
    document = _document(tmp_path)
    result = alliance("notarize", str(document), "--proof", str(tmp_path / "missing" / "p.json"),
                      *chain.signing(), check=False)
    assert "cannot write" in _error_line(result)
    lookup = alliance("lookup", str(document), "--rpc", chain.node.rpc_url, check=False)
    assert "is not recorded" in _error_line(lookup)


def test_notarize_of_a_recorded_file_writes_no_proof(chain: Chain, tmp_path: Path) -> None:
    document = _document(tmp_path)
    _notarize_with_proof(chain, document, tmp_path / "first.json")
    again = tmp_path / "again.json"
    result = alliance("notarize", str(document), "--proof", str(again), *chain.signing(), check=False)
    assert "committed with code 4" in _error_line(result)
    assert not again.exists()


@pytest.mark.parametrize(("content", "expected"), [
    (None, "proof file .* does not exist"),
    ("{not json", "proof file .* is not valid JSON"),
    ('{"version": 2, "version": 1}', "proof file .* is not valid JSON: an object repeats a key"),
    ("[" * 100_000 + "]" * 100_000, "proof file .* is not valid JSON: nested too deeply"),
])
def test_verify_proof_of_a_bad_file(chain: Chain, tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "proof.json"
    if content is not None:
        path.write_text(content)
    result = alliance("verify-proof", str(path), "--genesis", chain.genesis, check=False)
    assert result.returncode == 1
    assert re.match(expected, _error_line(result))


def test_verify_proof_without_a_valid_genesis(chain: Chain, tmp_path: Path) -> None:
    out = tmp_path / "proof.json"
    _notarize_with_proof(chain, _document(tmp_path), out)
    missing = alliance("verify-proof", str(out), "--genesis", str(tmp_path / "nope.toml"), check=False)
    assert "genesis file" in _error_line(missing) and "does not exist" in _error_line(missing)
    broken = tmp_path / "broken.toml"
    broken.write_text('chain_id = "x"\nvalidators = "none"\n')
    invalid = alliance("verify-proof", str(out), "--genesis", str(broken), check=False)
    assert "validators must be an array" in _error_line(invalid)


# ---- lookup --verify and lookup --proof -----------------------------------------------------------


def test_lookup_verify_checks_the_record_with_its_proof(chain: Chain, tmp_path: Path) -> None:
    document = _document(tmp_path)
    out = tmp_path / "proof.json"
    printed = _notarize_with_proof(chain, document, out)
    shown = json.loads(alliance("lookup", str(document), "--verify", "--genesis", chain.genesis,
                                "--rpc", chain.node.rpc_url).stdout)
    proof = json.loads(out.read_text())
    assert shown.pop("proved_at_height") >= printed["height"]  # the record's state proof, at the tip
    assert shown == {
        "digest": hashlib.sha256(document.read_bytes()).hexdigest(), "recorder": printed["tx"]["sender"],
        "height": printed["height"], "time": proof["header"]["time"], "tx_hash": printed["tx_hash"],
        "meta": "signed copy", "verified": True, "block_hash": proof["commit"]["block_hash"],
    }


def test_lookup_of_an_unrecorded_file_fails_cleanly(chain: Chain, tmp_path: Path) -> None:
    document = _document(tmp_path, "never-notarized.pdf")
    for extra in ([], ["--verify", "--genesis", chain.genesis]):
        result = alliance("lookup", str(document), *extra, "--rpc", chain.node.rpc_url, check=False)
        assert result.returncode == 5
        assert "never-notarized.pdf (sha256 " in _error_line(result) and "is not recorded" in _error_line(result)


def test_lookup_proof_of_another_file_fails(chain: Chain, tmp_path: Path) -> None:
    out = tmp_path / "proof.json"
    _notarize_with_proof(chain, _document(tmp_path), out)
    other = _document(tmp_path, "other.pdf")
    result = alliance("lookup", str(other), "--proof", str(out), "--genesis", chain.genesis, check=False)
    assert _error_line(result).startswith("the proof does not show ")
    assert "it records another digest" in _error_line(result)


def test_lookup_genesis_without_verify_is_a_usage_error(chain: Chain, tmp_path: Path) -> None:
    result = alliance("lookup", str(_document(tmp_path)), "--genesis", chain.genesis, check=False)
    assert result.returncode == 2 and "--genesis is for --verify or --proof" in _error_line(result)


def test_lookup_proof_checks_the_evidence_with_no_node_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = _start(tmp_path)
    document, out = _document(tmp_path), tmp_path / "proof.json"
    try:
        printed = _notarize_with_proof(own, document, out)
    finally:
        assert own.node.stop() == 0
    monkeypatch.delenv("ALLIANCE_RPC", raising=False)
    shown = json.loads(alliance("lookup", str(document), "--proof", str(out), "--genesis", own.genesis).stdout)
    assert shown["verified"] is True
    assert (shown["tx_hash"], shown["height"]) == (printed["tx_hash"], printed["height"])
    proof = json.loads(out.read_text())
    proof["receipt"]["code"] = 4
    out.write_text(json.dumps(proof))
    result = alliance("lookup", str(document), "--proof", str(out), "--genesis", own.genesis, check=False)
    assert _error_line(result, "alliance: proof invalid: ").startswith("receipt path: ")
