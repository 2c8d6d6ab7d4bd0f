"""A client removed by governance while its transactions stream in: none of them may stop the chain.

The spec (2.2, 3): from the activation height a removed sender's pending transactions never commit,
and the chain goes on. Transactions that were admitted while the removal was being committed must
not stay in the mempool, where every proposer puts them in a block the others refuse."""

from __future__ import annotations

import threading
from pathlib import Path

from node.client.core import generate_key, load_key, public_key_hex
from node.client.errors import RpcError
from node.client.sync import Client
from tests.e2e.nodeproc import alliance, free_base_port, node_process, wait_for


def test_txs_of_a_client_removed_while_it_sends_do_not_halt_the_chain(tmp_path: Path) -> None:
    out = tmp_path / "net"
    base = free_base_port(50)
    alliance("testnet", "--nodes", "4", "--admins", "1", "--out", str(out), "--base-port", str(base))
    nodes = [node_process(out, base, i) for i in range(4)]
    for n in nodes:
        n.start()
    node = nodes[0]
    try:
        url = node.rpc_url
        admin = Client(url, timeout_s=30, key=load_key(out / "admin0.key"))
        client = Client(url, timeout_s=30, key=load_key(out / "client.key"))
        leaving_key = generate_key()
        leaving = bytes.fromhex(public_key_hex(leaving_key))
        assert admin.propose({"kind": "add_client", "name": "leaving", "pubkey": leaving}).code == 0
        sender = Client(url, timeout_s=30, key=leaving_key)
        wait_for(lambda: _sends(sender), "the added client to be authorised")

        stop = threading.Event()

        def flood(target: str) -> None:  # batches of the leaving client, until it is well out
            batch = 0
            to = Client(target, timeout_s=30, key=leaving_key)
            while not stop.is_set():
                txs = [to.sign("kv", "put", {"key": f"{target}-{batch}-{i}", "value": b"v" * 500}) for i in range(200)]
                to.send_batch(txs, wait=False)
                batch += 1

        threads = [threading.Thread(target=flood, args=(n.rpc_url,)) for n in nodes[:2]]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: node.metric("alliance_mempool_txs"), "the flood to fill the mempool")
            removed = admin.propose({"kind": "remove_client", "pubkey": leaving})  # threshold 1: passes at once
            assert removed.code == 0 and removed.log is not None and removed.log.startswith("passed"), removed.log
            activation = int(removed.log.rsplit(" ", 1)[1])
            wait_for(lambda: admin.status()["height"] >= activation, "the activation height")
        finally:
            stop.set()
            for thread in threads:
                thread.join()

        # The chain must go on: a genesis client's put commits...
        assert client.kv_put("after-removal", "v", timeout_s=20).code == 0
        # ...and nothing of the removed client stays pending.
        for n in nodes:
            wait_for(lambda: n.metric("alliance_mempool_txs") == 0, "the mempools to empty")
    finally:
        for n in nodes:
            n.stop()


def _sends(client: Client) -> bool:
    try:
        return client.kv_put("probe", "v").code == 0
    except RpcError:
        return False
