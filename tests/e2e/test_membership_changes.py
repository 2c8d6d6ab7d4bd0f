"""A consortium that changes while it runs, on real processes: an organisation joins as an observer and is
promoted, a SIGKILLed validator is removed, a client is added and removed, and a proof of a transaction from
after all of it verifies against the original genesis file."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from node.chain.tx import Transaction, sign_tx
from node.client import Client, RpcError
from node.keys import load_key, pubkey_hex, write_key
from tests.e2e.load import Load
from tests.e2e.nodeproc import NodeProcess, alliance, free_base_port, node_process, wait_for

pytestmark = pytest.mark.slow

DEADLINE_S = 60.0


def gov(*args: str, check: bool = True) -> Any:
    return alliance("gov", *args, check=check, timeout=DEADLINE_S + 30)


def propose_and_pass(net: Path, rpc: str, proposer: int, approver: int, kind: str, *fields: str) -> str:
    """Proposes with one admin, approves with another (threshold 2) and waits until the change is in force."""
    proposed = gov("propose", kind, *fields, "--key", str(net / f"admin{proposer}.key"), "--rpc", rpc)
    proposal = proposed.stdout.split()[-1]
    assert len(proposal) == 64, proposed.stdout
    gov("approve", proposal, "--key", str(net / f"admin{approver}.key"), "--rpc", rpc,
        "--wait", "--timeout", str(int(DEADLINE_S)))
    return proposal


def members(node: NodeProcess) -> dict[str, Any]:
    result: dict[str, Any] = node.client().call("get_members")
    return result


def keys_of(entries: list[dict[str, Any]]) -> set[str]:
    return {e["pubkey"] for e in entries}


def height(node: NodeProcess) -> int:
    return int(node.client().status()["height"])


def signers(node: NodeProcess, h: int) -> set[str]:
    block = node.client().call("get_block", height=h)
    return {s["validator"] for s in block["commit"]["signatures"]}


def test_members_join_leave_and_proofs_still_verify_from_the_genesis(tmp_path: Path) -> None:
    base = free_base_port(60)
    net = tmp_path / "net"
    alliance("testnet", "--nodes", "4", "--out", str(net), "--base-port", str(base), "--admins", "3")
    nodes = [node_process(net, base, i) for i in range(4)]
    for node in nodes:
        node.start()
    rpc = nodes[0].rpc_url
    chain_id = nodes[0].client().status()["chain_id"]
    joiner = NodeProcess(net / "node4", base + 40)
    try:
        with Load(load_key(net / "client.key"), chain_id, nodes[:3], batch=10) as load:
            wait_for(lambda: height(nodes[0]) >= 3, "the first blocks")

            # An organisation prepares its node from the genesis and joins as an observer.
            init = alliance("init", "--out", str(joiner.home), "--genesis", str(net / "genesis.toml"),
                            "--base-port", str(base + 40))
            joiner_key = init.stdout.split()[-1]
            assert joiner_key == pubkey_hex(load_key(joiner.home / "node.key"))
            joiner.start()
            address = f"127.0.0.1:{base + 41}"
            propose_and_pass(net, rpc, 0, 1, "add_observer", "--name", "node4", "--pubkey", joiner_key,
                             "--address", address)
            assert joiner_key in keys_of(members(nodes[0])["observers"])
            wait_for(lambda: height(joiner) >= height(nodes[0]) - 1, "the observer to catch up", DEADLINE_S)
            assert joiner.client().call("get_members")["observers"] == members(nodes[0])["observers"]

            # Promoted to validator while another validator is SIGKILLed as the change passes and restarted
            # after the activation height: the new one's seals appear in certificates from then on.
            proposed = gov("propose", "add_validator", "--name", "node4", "--pubkey", joiner_key, "--address",
                           address, "--key", str(net / "admin1.key"), "--rpc", rpc)
            promotion = proposed.stdout.split()[-1]
            approved_at = time.monotonic()
            gov("approve", promotion, "--key", str(net / "admin2.key"), "--rpc", rpc)
            nodes[2].kill9()
            activation = nodes[0].client().call("get_proposal", proposal=promotion)["activation"]
            wait_for(lambda: height(nodes[0]) >= activation, "the activation height", DEADLINE_S)
            first_signed = wait_for(
                lambda: next((h for h in range(activation, height(nodes[0]) + 1)
                              if joiner_key in signers(nodes[0], h)), None),
                "a certificate sealed by the new validator", DEADLINE_S)
            print(f"addition: {time.monotonic() - approved_at:.2f} s from the decisive approval to the first "
                  f"certificate the new validator seals (height {first_signed}, activation {activation})")
            assert keys_of(members(nodes[0])["validators"]) >= {joiner_key}
            nodes[2].start()
            restarted_key = pubkey_hex(load_key(nodes[2].home / "node.key"))
            restarted_at = height(nodes[0])
            wait_for(lambda: any(restarted_key in signers(nodes[0], h)
                                 for h in range(restarted_at + 1, height(nodes[0]) + 1)),
                     "the restarted validator to seal again", DEADLINE_S)

            # A validator dies with its key and is removed; the chain goes on without it.
            removed = nodes[3]
            removed_key = pubkey_hex(load_key(removed.home / "node.key"))
            removed.kill9()
            propose_and_pass(net, rpc, 2, 0, "remove_validator", "--pubkey", removed_key)
            assert removed_key not in keys_of(members(nodes[0])["validators"])
            after_removal = height(nodes[0])
            wait_for(lambda: height(nodes[0]) >= after_removal + 3, "blocks after the removal", DEADLINE_S)

        running = nodes[:3] + [joiner]
        _check_client_added_then_refused(net, rpc, running[0], chain_id)
        _check_every_acknowledged_tx_committed(running, load.accepted)
        _check_identical_blocks(running)
        _check_proof_from_the_genesis(tmp_path, net, running[0], load.accepted[-1])
    finally:
        for node in nodes + [joiner]:
            if node.process is not None and node.process.poll() is None:
                node.stop()


def _check_client_added_then_refused(net: Path, rpc: str, node: NodeProcess, chain_id: str) -> None:
    key = SigningKey.generate()
    write_key(net / "client2.key", key)
    propose_and_pass(net, rpc, 0, 1, "add_client", "--name", "client2", "--pubkey", pubkey_hex(key))
    put = sign_tx(key, chain_id, "kv", "put", {"key": "from-client2", "value": b"1"}, secrets.randbits(63))
    assert node.client().call("send_tx", tx=put.raw.hex(), wait=True)["code"] == 0
    propose_and_pass(net, rpc, 1, 2, "remove_client", "--pubkey", pubkey_hex(key))
    late = sign_tx(key, chain_id, "kv", "put", {"key": "too-late", "value": b"1"}, secrets.randbits(63))
    with pytest.raises(RpcError) as refused:
        node.client().call("send_tx", tx=late.raw.hex())
    assert refused.value.code == -32002


def _check_every_acknowledged_tx_committed(nodes: list[NodeProcess], accepted: list[Transaction]) -> None:
    assert len(accepted) > 100
    for node in nodes:
        client = node.client()
        missing = wait_for(lambda: _all_committed(client, accepted), f"{node.home.name} to hold every tx", DEADLINE_S)
        assert missing


def _all_committed(client: Client, txs: list[Transaction]) -> bool:
    for i in range(0, len(txs), 200):
        answers = client.batch([("get_tx", {"tx_hash": tx.hash.hex()}) for tx in txs[i:i + 200]])
        if any(isinstance(a, RpcError) or a["status"] != "committed" for a in answers):
            return False
    return True


def _check_identical_blocks(nodes: list[NodeProcess]) -> None:
    tip = wait_for(lambda: (lambda hs: min(hs) if max(hs) - min(hs) <= 2 else None)([height(n) for n in nodes]),
                   "the nodes to reach one height", DEADLINE_S)
    for h in range(1, tip + 1):
        hashes = {n.client().call("get_block", height=h)["hash"] for n in nodes}
        assert len(hashes) == 1, f"block {h} differs between nodes: {hashes}"


def _check_proof_from_the_genesis(tmp_path: Path, net: Path, node: NodeProcess, tx: Transaction) -> None:
    proof = node.client().get_proof(tx.hash)
    assert proof["validator_changes"], "the proof carries the validator-set changes"
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof))
    assert alliance("verify-proof", str(path), "--genesis", str(net / "genesis.toml")).returncode == 0
    proof["validator_changes"] = proof["validator_changes"][1:]
    path.write_text(json.dumps(proof))
    assert alliance("verify-proof", str(path), "--genesis", str(net / "genesis.toml"), check=False).returncode == 6
