"""A node that governance removed must not acknowledge what it can no longer bring to the chain.

The spec (2): once `send_tx` has answered with a `tx_hash`, the transaction commits (unless it is
refused in execution or its sender is removed first). A removed validator is refused at every
peer's handshake from its activation height: a transaction it acknowledges then never commits. It
stops acknowledging once the removal passed (its peers may cut it off before it learns the next block)."""

from __future__ import annotations

from pathlib import Path

from node.chain.governance import ACTIVATION_DELAY
from node.client.core import load_key
from node.client.errors import RpcError
from node.client.sync import Client
from tests.e2e.nodeproc import alliance, free_base_port, node_process, wait_connected, wait_for


def test_a_removed_validator_does_not_acknowledge_transactions_that_never_commit(tmp_path: Path) -> None:
    out = tmp_path / "net"
    base = free_base_port(50)
    alliance("testnet", "--nodes", "4", "--admins", "1", "--out", str(out), "--base-port", str(base))
    nodes = [node_process(out, base, i) for i in range(4)]
    for n in nodes:
        n.start()
    try:
        wait_connected(nodes)  # the removed node takes part in the blocks up to its removal
        admin = Client(nodes[0].rpc_url, timeout_s=30, key=load_key(out / "admin0.key"))
        leaving = admin.status()["validators"][3]
        removed = admin.propose({"kind": "remove_validator", "pubkey": bytes.fromhex(leaving)})
        assert removed.code == 0 and removed.log is not None and removed.log.startswith("passed"), removed.log
        activation = int(removed.log.rsplit(" ", 1)[1])
        passed = activation - ACTIVATION_DELAY  # the node stops acknowledging from here on
        wait_for(lambda: nodes[3].client().status()["height"] >= passed, "the removed node to learn it passed")
        wait_for(lambda: not any(p["connected"] for p in nodes[3].client().status()["peers"]),
                 "the removed node to be cut off")

        client = Client(nodes[3].rpc_url, timeout_s=30, key=load_key(out / "client.key"))
        tx = client.sign("kv", "put", {"key": "through-a-removed-node", "value": b"v"})
        try:
            client.send(tx, wait=False)
        except RpcError as refused:  # nothing was promised, and the client is told why
            assert refused.code == -32004 and (refused.data or {}).get("reason") == "not_a_member", refused
        else:
            raise AssertionError("a node cut off from the chain acknowledged a transaction it cannot pass on")
    finally:
        for n in nodes:
            n.stop()
