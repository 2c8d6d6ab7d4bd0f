"""One real validator process: 1,000 transactions in JSON-RPC batches, kill -9, restart, nothing lost."""

from __future__ import annotations

import hashlib
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from node.api.rpc import BATCH_CALLS_MAX
from node.chain.tx import Transaction, sign_tx
from node.client import Client, RpcError
from node.keys import load_key
from tests.e2e.nodeproc import make_testnet, node_process, wait_for

TXS_TOTAL = 1000
BATCH = 100


def _signed_txs(net: Path, chain_id: str) -> list[Transaction]:
    key = load_key(net / "client.key")
    txs = []
    for i in range(TXS_TOTAL):
        if i % 10 == 0:
            digest = hashlib.sha256(f"document {i} {secrets.token_hex(4)}".encode()).digest()
            args: dict[str, Any] = {"digest": digest, "meta": f"invoice {i}"}
            txs.append(sign_tx(key, chain_id, "notary", "record", args, secrets.randbits(64)))
        else:
            txs.append(sign_tx(key, chain_id, "kv", "put", {"key": f"k{i}", "value": i.to_bytes(4, "big")},
                               secrets.randbits(64)))
    return txs


def _send_batches(client: Client, txs: list[Transaction]) -> None:
    for start in range(0, len(txs), BATCH):
        chunk = txs[start:start + BATCH]
        results = client.batch([("send_tx", {"tx": tx.raw.hex()}) for tx in chunk])
        assert [r["tx_hash"] for r in results] == [tx.hash.hex() for tx in chunk]


def _statuses(client: Client, txs: list[Transaction]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for start in range(0, len(txs), BATCH):
        out += client.batch([("get_tx", {"tx_hash": tx.hash.hex()}) for tx in txs[start:start + BATCH]])
    return out


def _chain(client: Client) -> list[dict[str, Any]]:
    height = client.status()["height"]
    return [client.call("get_block", height=h) for h in range(1, height + 1)]


def _state(client: Client, txs: list[Transaction]) -> list[Any]:
    calls = []
    for tx in txs:
        if tx.family == "kv":
            calls.append(("query", {"family": "kv", "key": tx.args["key"]}))
        else:
            calls.append(("query", {"family": "notary", "key": tx.args["digest"].hex()}))
    return client.batch(calls)


def test_thousand_transactions_survive_kill9(single: Any) -> None:
    net, node = single
    client = node.client()
    txs = _signed_txs(net, client.status()["chain_id"])
    _send_batches(client, txs)
    wait_for(lambda: all(s["status"] == "committed" for s in _statuses(client, txs)), "all 1,000 txs to commit")

    statuses = _statuses(client, txs)
    assert all(s["code"] == 0 and s["log"] == "" for s in statuses)
    chain = _chain(client)
    assert sorted(h for b in chain for h in b["txs"]) == sorted(tx.hash.hex() for tx in txs)
    for prev, block in zip(chain, chain[1:]):
        assert block["prev_hash"] == prev["hash"] and block["height"] == prev["height"] + 1
    for status in statuses:
        assert chain[status["height"] - 1]["txs"][status["index"]] == status["tx_hash"]
    state = _state(client, txs)
    for tx, entry in zip(txs, state):
        if tx.family == "kv":
            assert entry["value"] == tx.args["value"].hex() and entry["owner"] == tx.sender.hex()
        else:
            assert entry["recorder"] == tx.sender.hex() and entry["meta"] == tx.args["meta"]

    node.kill9()
    node.start()
    client = node.client()
    assert _statuses(client, txs) == statuses
    assert _chain(client) == chain
    assert _state(client, txs) == state
    again = client.send_tx(_signed_txs(net, client.status()["chain_id"])[1], wait=True)
    assert again["status"] == "committed" and again["height"] == len(chain) + 1


def test_acknowledged_commit_survives_kill9_immediately(single: Any) -> None:
    net, node = single
    client = node.client()
    key = load_key(net / "client.key")
    chain_id = client.status()["chain_id"]
    committed = []
    for i in range(20):
        tx = sign_tx(key, chain_id, "kv", "put", {"key": f"fast{i}", "value": b"v"}, secrets.randbits(64))
        committed.append(client.send_tx(tx, wait=True))
    node.kill9()  # right after the last acknowledgement
    node.start()
    client = node.client()
    for result in committed:
        assert client.call("get_tx", tx_hash=result["tx_hash"]) == result


def test_duplicate_refused_after_restart(single: Any) -> None:
    net, node = single
    client = node.client()
    tx = sign_tx(load_key(net / "client.key"), client.status()["chain_id"], "kv", "put",
                 {"key": "once", "value": b"1"}, secrets.randbits(64))
    client.send_tx(tx, wait=True)
    node.kill9()
    node.start()
    with pytest.raises(RpcError) as refused:
        node.client().send_tx(tx)
    assert refused.value.code == -32003


def test_sigterm_shuts_down_cleanly_and_reopens(single: Any) -> None:
    _, node = single
    assert node.stop() == 0
    assert "event=node_stopped" in node.log_text()
    assert "Traceback" not in node.log_text()
    node.start()
    assert node.client().status()["height"] == 0


def test_mempool_full_gives_overloaded(tmp_path: Path) -> None:
    net, base = make_testnet(tmp_path)
    config = net / "node0" / "node.toml"
    config.write_text(config.read_text() + "\n[mempool]\ntxs_max = 5\n")
    node = node_process(net, base)
    node.start()
    try:
        client = node.client()
        key = load_key(net / "client.key")
        chain_id = client.status()["chain_id"]
        txs = [sign_tx(key, chain_id, "kv", "put", {"key": f"m{i}", "value": b""}, i) for i in range(50)]
        results = client.batch([("send_tx", {"tx": tx.raw.hex()}) for tx in txs])
        codes = {r.code for r in results if isinstance(r, RpcError)}
        assert codes == {-32004}
        accepted = [r for r in results if not isinstance(r, RpcError)]
        assert 5 <= len(accepted) < 50
    finally:
        assert node.stop() == 0


def test_commit_timeout_without_quorum(tmp_path: Path) -> None:
    """One of four validators alone accepts transactions but cannot commit them."""
    net, base = make_testnet(tmp_path, nodes=4)
    node = node_process(net, base)
    node.start()
    try:
        client = node.client()
        tx = sign_tx(load_key(net / "client.key"), client.status()["chain_id"], "kv", "put",
                     {"key": "stuck", "value": b""}, 7)
        with pytest.raises(RpcError) as timed_out:
            client.send_tx(tx, wait=True, timeout_s=0.5)
        assert timed_out.value.code == -32006
        assert client.call("get_tx", tx_hash=tx.hash.hex())["status"] == "pending"
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(node.metrics_url + "/readyz", timeout=10)
        assert not_ready.value.code == 503
        assert "quorum" in not_ready.value.read().decode()
    finally:
        assert node.stop() == 0


def test_a_batch_over_the_call_limit_is_one_invalid_request(single: Any) -> None:
    _, node = single
    client = node.client()
    calls = [{"jsonrpc": "2.0", "id": i, "method": "status"} for i in range(BATCH_CALLS_MAX + 1)]
    answer = client.post(calls)
    assert answer["error"]["code"] == -32600 and answer["id"] is None
    assert f"at most {BATCH_CALLS_MAX}" in answer["error"]["message"]
    assert len(client.post(calls[:BATCH_CALLS_MAX])) == BATCH_CALLS_MAX


def test_a_batch_of_send_tx_calls_gets_each_its_own_answer(single: Any) -> None:
    """send_tx calls of one batch are checked together; each still gets the answer it would get alone."""
    net, node = single
    client = node.client()
    chain_id = client.status()["chain_id"]
    key = load_key(net / "client.key")
    fresh = [sign_tx(key, chain_id, "kv", "put", {"key": f"b{i}", "value": b"v"}, secrets.randbits(64))
             for i in range(6)]
    committed = fresh[0]
    assert client.call("send_tx", tx=committed.raw.hex(), wait=True)["status"] == "committed"
    forged = bytearray(fresh[1].raw)
    forged[-1] ^= 1
    rejected_before = (node.metric("alliance_txs_rejected_total", reason="bad_signature") or 0.0)

    def send(i: Any, tx_hex: Any, **more: Any) -> dict[str, Any]:
        call = {"jsonrpc": "2.0", "method": "send_tx", "params": {"tx": tx_hex, **more}}
        return call if i is None else {**call, "id": i}

    batch = [
        send(1, fresh[2].raw.hex()),
        send(2, bytes(forged).hex()),
        send(3, fresh[2].raw.hex()),  # the same transaction again, in the same batch
        send(4, committed.raw.hex()),
        send(5, "zz"),
        send(6, fresh[3].raw.hex(), wait="yes"),
        send(7, fresh[4].raw.hex(), wait=True),
        {"jsonrpc": "1.0", "id": 8, "method": "send_tx", "params": {"tx": fresh[3].raw.hex()}},
        {"jsonrpc": "2.0", "id": 9, "method": "status"},
        send(None, fresh[5].raw.hex()),  # a notification: admitted, not answered
    ]
    answers = {a["id"]: a for a in client.post(batch)}
    assert sorted(answers) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert answers[1]["result"] == {"tx_hash": fresh[2].hash.hex()}
    assert answers[2]["error"]["code"] == -32001 and answers[2]["error"]["data"] == {"reason": "bad_signature"}
    assert answers[3]["error"]["code"] == -32003
    assert answers[4]["error"]["code"] == -32003
    assert answers[5]["error"]["code"] == -32001 and answers[5]["error"]["data"] == {"reason": "malformed"}
    assert answers[6]["error"]["code"] == -32602
    assert answers[7]["result"]["status"] == "committed" and answers[7]["result"]["tx_hash"] == fresh[4].hash.hex()
    assert answers[8]["error"]["code"] == -32600
    assert answers[9]["result"]["chain_id"] == chain_id
    for tx in (fresh[2], fresh[5]):
        wait_for(lambda: client.call("get_tx", tx_hash=tx.hash.hex())["status"] == "committed", "the commit")
    assert client.call("get_tx", tx_hash=fresh[3].hash.hex())["status"] == "unknown"
    assert (node.metric("alliance_txs_rejected_total", reason="bad_signature") or 0.0) == rejected_before + 1


def test_deeply_nested_json_is_a_parse_error(single: Any) -> None:
    _, node = single
    answer = node.client().post_raw(b"[" * 50_000)
    assert answer[0] == 200 and b"-32700" in answer[1]
