"""The sans-I/O core alone: the requests it builds, and answers turned into typed results and errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from node.client import (
    BadAnswer, CommitTimeout, DuplicateTx, InvalidInput, NotAuthorised, NotFound, Overloaded, RpcError,
    SubscriptionDropped, TxRefused, build_tx, generate_key,
)
from node.chain.tx import decode_tx
from node.client.core import Core, Op, run
from node.client.events import blocks_subscription, tx_subscription, ws_url

STATUS = {
    "chain_id": "test-chain", "node": {"name": "n0", "pubkey": "aa" * 32}, "height": 3,
    "last_block_hash": "bb" * 32, "view": 0, "leader": "aa" * 32, "validators": ["aa" * 32],
    "peers": [{"name": "n1", "pubkey": "cc" * 32, "connected": True}], "syncing": False,
}
COMMITTED = {
    "tx_hash": "dd" * 32, "status": "committed", "height": 3, "index": 0, "code": 0, "log": "",
    "tx": {"chain_id": "test-chain", "sender": "aa" * 32, "nonce": 1, "family": "kv", "op": "put",
           "args": {"key": "k", "value": "76"}},
}


def answering(op: Op[Any], *results: Any) -> tuple[Any, list[Any]]:
    """Runs `op`, answering its i-th post with results[i] (a result, or an error dict under "error")."""
    posted: list[Any] = []

    def post(payload: Any) -> Any:
        posted.append(payload)
        result = results[len(posted) - 1]
        if isinstance(payload, list):
            return [_answer(p["id"], r) for p, r in zip(payload, result)]
        return _answer(payload["id"], result)

    return run(op, post), posted


def _answer(request_id: int, result: Any) -> dict[str, Any]:
    if isinstance(result, dict) and set(result) == {"error"}:
        return {"jsonrpc": "2.0", "error": result["error"], "id": request_id}
    return {"jsonrpc": "2.0", "result": result, "id": request_id}


def error(code: int, data: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": f"error {code}", **({"data": data} if data else {})}}


@pytest.mark.parametrize("code, cls", [
    (-32001, TxRefused), (-32002, NotAuthorised), (-32003, DuplicateTx), (-32004, Overloaded),
    (-32005, NotFound), (-32006, CommitTimeout), (-32602, RpcError),
])
def test_each_protocol_error_code_has_its_class(code: int, cls: type[RpcError]) -> None:
    with pytest.raises(cls) as raised:
        answering(Core().call("get_tx", {}), error(code))
    assert type(raised.value) is cls and raised.value.code == code and isinstance(raised.value, RpcError)


def test_error_data_is_exposed() -> None:
    with pytest.raises(TxRefused) as refused:
        answering(Core().call("send_tx", {}), error(-32001, {"reason": "bad_signature"}))
    assert refused.value.reason == "bad_signature"
    with pytest.raises(CommitTimeout) as timed_out:
        answering(Core().call("send_tx", {}), error(-32006, {"tx_hash": "dd" * 32}))
    assert timed_out.value.tx_hash == "dd" * 32


def test_status_decodes_and_remembers_the_chain_id() -> None:
    core = Core()
    status, posted = answering(core.status(), STATUS)
    assert posted == [{"jsonrpc": "2.0", "method": "status", "params": {}, "id": 1}]
    assert status.peers[0].connected and status.node_name == "n0" and core.chain_id == "test-chain"


def test_signing_fetches_the_chain_id_once() -> None:
    core = Core(generate_key())
    tx, posted = answering(core.sign("kv", "put", {"key": "k", "value": b"v"}), STATUS)
    again, posted_again = answering(core.sign("kv", "put", {"key": "k", "value": b"v"}))
    assert len(posted) == 1 and posted_again == []
    assert tx.chain_id == "test-chain" and tx.verify_signature() and decode_tx(tx.raw) == tx
    assert tx.nonce != again.nonce  # a fresh random nonce each time


def test_batch_places_each_result_or_error_by_id() -> None:
    core = Core(generate_key())
    core.chain_id = "test-chain"
    txs = [answering(core.sign("kv", "put", {"key": str(i), "value": b""}))[0] for i in range(3)]
    posted: list[Any] = []

    def post(payload: list[dict[str, Any]]) -> Any:
        posted.append(payload)
        # answered out of order: ids, not positions, match answers to calls
        return [
            _answer(payload[2]["id"], error(-32003)),
            _answer(payload[0]["id"], {"tx_hash": txs[0].hash.hex()}),
            _answer(payload[1]["id"], error(-32002)),
        ]

    results = run(core.send_batch(txs), post)
    assert [p["params"]["wait"] for p in posted[0]] == [False] * 3
    assert results[0].status == "pending" and results[0].tx.args == {"key": "0", "value": ""}
    assert isinstance(results[1], NotAuthorised) and isinstance(results[2], DuplicateTx)


def test_waited_send_gives_the_committed_object() -> None:
    core = Core(generate_key())
    core.chain_id = "test-chain"
    info, posted = answering(core.submit("kv", "put", {"key": "k", "value": b"v"}), [COMMITTED])
    assert posted[0][0]["params"]["wait"] is True and info.ok and info.tx.args["value"] == "76"


@pytest.mark.parametrize("answer", [
    "nonsense", {"jsonrpc": "2.0", "id": 1}, {"jsonrpc": "2.0", "error": {"message": "no code"}, "id": 1},
])
def test_malformed_answers_are_bad_answers(answer: Any) -> None:
    with pytest.raises(BadAnswer):
        run(Core().call("status", {}), lambda payload: answer)


@pytest.mark.parametrize("result", [
    {**STATUS, "height": "3"}, {**STATUS, "syncing": 0}, {**STATUS, "node": None}, {**STATUS, "peers": [1]},
    {k: v for k, v in STATUS.items() if k != "view"}, {**STATUS, "height": True},
])
def test_status_of_the_wrong_shape_is_a_bad_answer(result: Any) -> None:
    with pytest.raises(BadAnswer):
        answering(Core().status(), result)


def test_committed_tx_without_receipt_is_a_bad_answer() -> None:
    with pytest.raises(BadAnswer):
        answering(Core().get_tx("dd" * 32), {**COMMITTED, "code": None})
    with pytest.raises(BadAnswer):
        answering(Core().get_tx("dd" * 32), {**COMMITTED, "status": "lost"})


def test_send_answered_with_another_hash_is_a_bad_answer() -> None:
    core = Core(generate_key())
    core.chain_id = "test-chain"
    tx = answering(core.sign("kv", "put", {"key": "k", "value": b""}))[0]
    with pytest.raises(BadAnswer):
        answering(core.send(tx, wait=False), [{"tx_hash": "ee" * 32}])


def test_queries_absent_and_present() -> None:
    assert answering(Core().kv_get("k"), None)[0] is None
    entry, posted = answering(Core().kv_get("k"), {"value": "0102", "owner": "aa" * 32, "height": 2})
    assert entry.value == b"\x01\x02" and posted[0]["params"] == {"family": "kv", "key": "k"}
    record, posted = answering(Core().notary_lookup(b"\x07" * 32), {
        "recorder": "aa" * 32, "height": 2, "time": 5, "tx_hash": "dd" * 32, "meta": ""})
    assert record.height == 2 and posted[0]["params"]["key"] == "07" * 32


@pytest.mark.parametrize("op", [
    lambda c: c.get_tx("AB"), lambda c: c.get_tx(b"\x00" * 31), lambda c: c.get_block(-1),
    lambda c: c.get_block(True), lambda c: c.get_block("earliest"), lambda c: c.notary_lookup("g" * 64),
    lambda c: c.sign("kv", "put", {}), lambda c: c.get_proof(""), lambda c: c.notarize_file("/nonexistent"),
    lambda c: c.notary_lookup_file("/nonexistent"), lambda c: c.verified_proof("ab" * 32, None, "chain", None),
    lambda c: c.verified_proof("ab" * 32, "/nonexistent/genesis.toml", None, ["aa" * 32]),
    lambda c: c.verified_proof("ab" * 32, "/nonexistent/genesis.toml", "chain", None),
])
def test_inputs_refused_before_anything_is_sent(op: Any) -> None:
    with pytest.raises(InvalidInput):
        run(op(Core()), lambda payload: pytest.fail("nothing may be sent"))


def test_file_operations_send_the_files_digest(tmp_path: Path) -> None:
    document = tmp_path / "invoice.pdf"
    document.write_bytes(b"%PDF- invoice")
    digest = hashlib.sha256(b"%PDF- invoice").digest()
    assert answering(Core().notary_lookup_file(document), None)[1][0]["params"]["key"] == digest.hex()
    core = Core(generate_key())
    core.chain_id = "test-chain"
    receipt, posted = answering(core.notarize_file(document, "m", wait=True), [COMMITTED])
    tx = decode_tx(bytes.fromhex(posted[0][0]["params"]["tx"]))
    assert (tx.family, tx.op, tx.args) == ("notary", "record", {"digest": digest, "meta": "m"}) and receipt.ok


@pytest.mark.parametrize("args", [{"x": 1.5}, {1: "non-string key"}, {"x": 2**70}, {"value": b"z" * 70_000}])
def test_transactions_that_cannot_be_encoded_are_refused(args: dict[Any, Any]) -> None:
    with pytest.raises(InvalidInput, match="cannot encode transaction"):
        build_tx(generate_key(), "test-chain", "kv", "put", args)


# ---- subscriptions ------------------------------------------------------------------------------

BLOCK = {
    "height": 3, "hash": "11" * 32, "prev_hash": "22" * 32, "time": 5, "proposer": "aa" * 32,
    "tx_root": "33" * 32, "state_root": "44" * 32, "txs": ["dd" * 32],
    "commit": {"height": 3, "block_hash": "11" * 32, "signatures": [{"validator": "aa" * 32, "signature": "55" * 64}]},
}


def notification(subscription: str, topic: str, result: Any) -> str:
    params = {"subscription": subscription, "topic": topic, "result": result}
    return json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": params})


def test_block_subscription_confirms_then_decodes_events() -> None:
    sub = blocks_subscription(Core())
    request = json.loads(sub.subscribe_frame())
    assert (request["method"], request["params"]) == ("subscribe", {"topic": "blocks"})
    assert sub.feed(json.dumps({"jsonrpc": "2.0", "result": "s1", "id": request["id"]})) is None
    assert sub.confirmed and sub.feed(notification("s1", "blocks", BLOCK)).height == 3
    with pytest.raises(BadAnswer):
        sub.feed(notification("s2", "blocks", BLOCK))


def test_tx_event_may_come_before_the_answer_to_subscribe() -> None:
    sub = tx_subscription(Core(), "dd" * 32)
    assert json.loads(sub.subscribe_frame())["params"] == {"topic": "tx", "tx_hash": "dd" * 32}
    assert sub.feed(notification("s1", "tx", COMMITTED)).ok and not sub.confirmed


def test_refused_and_dropped_subscriptions_raise_typed_errors() -> None:
    sub = blocks_subscription(Core())
    request_id = json.loads(sub.subscribe_frame())["id"]
    with pytest.raises(Overloaded):
        sub.feed(json.dumps({"jsonrpc": "2.0", "error": {"code": -32004, "message": "too many"}, "id": request_id}))
    dropped = {"jsonrpc": "2.0", "method": "subscription_dropped", "params": {"reason": "too slow"}}
    with pytest.raises(SubscriptionDropped, match="too slow"):
        sub.feed(json.dumps(dropped))
    for frame in ("not json", "[1]", json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": {}})):
        with pytest.raises(BadAnswer):
            sub.feed(frame)
    with pytest.raises(InvalidInput):
        tx_subscription(Core(), "dd")


def test_event_url_is_the_rpc_address_at_ws() -> None:
    assert ws_url("http://127.0.0.1:26600") == "ws://127.0.0.1:26600/ws"


@pytest.mark.parametrize("token", ["a\nb", "a\r\nX-Injected: 1", "tab\there", "nul\x00", "é"])
def test_a_token_that_cannot_be_a_header_is_refused_before_sending(token: str) -> None:
    from node.client import AsyncClient, Client
    for make in (Client, AsyncClient):
        with pytest.raises(InvalidInput, match="token"):
            make("http://127.0.0.1:1", token=token)


def test_a_missing_tls_file_is_the_one_named(tmp_path: Path) -> None:
    from node.client import Client
    ca = tmp_path / "ca.pem"
    ca.write_text("not read: a missing file is named first")
    for given in ({"client_cert": tmp_path / "none.pem"}, {"client_cert": ca, "client_key": tmp_path / "none.key"}):
        with pytest.raises(InvalidInput, match="none"):
            Client("https://127.0.0.1:1", ca_file=ca, **given)


def test_a_certificate_for_another_host_is_said_so() -> None:
    import ssl
    from node.client.auth import unreachable
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code, exc.verify_message = 62, "Hostname mismatch, certificate is not valid for 'localhost'."
    message = str(unreachable("https://localhost:26600", exc))
    assert "not valid for 'localhost'" in message and "--ca" not in message, message
    exc.verify_code, exc.verify_message = 19, "self-signed certificate in certificate chain"
    assert "--ca" in str(unreachable("https://localhost:26600", exc))


def test_a_refused_connection_is_not_blamed_on_a_client_certificate() -> None:
    from node.client.auth import unreachable
    message = str(unreachable("https://127.0.0.1:1", ConnectionRefusedError(111, "Connection refused")))
    assert "Connection refused" in message and "client" not in message, message
    assert "client_cert" in str(unreachable("https://127.0.0.1:1", ConnectionResetError(104, "reset by peer")))


def test_an_https_url_in_capitals_is_still_tls_and_never_sends_the_token_in_clear() -> None:
    import socket
    import threading
    from node.client import Client, NodeUnreachable
    server = socket.create_server(("127.0.0.1", 0))
    first: list[bytes] = []

    def accept() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(5)
            first.append(conn.recv(5))  # then hang up, as a node refusing the handshake would

    thread = threading.Thread(target=accept)
    thread.start()
    url = f"HTTPS://127.0.0.1:{server.getsockname()[1]}"
    with pytest.raises(NodeUnreachable), Client(url, timeout_s=5, token="secret-token") as client:
        client.status()
    thread.join(5)
    server.close()
    assert first and first[0][:1] == b"\x16", first  # a TLS handshake record, not "POST / ..." with the token
