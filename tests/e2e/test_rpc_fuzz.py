"""Every bad input is typed: a real node answers fuzzed JSON-RPC (every method, the batch form, raw NaN,
Infinity, 1e400 and lone surrogates in the body) with strict JSON-RPC 2.0 and never with -32603, and
its log holds no traceback."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from websockets.sync.client import ClientConnection, connect

from tests.e2e.nodeproc import NodeProcess, make_testnet, node_process
from tests.jsonrpc_fuzz import BATCHES, Raw, answered, body_of, calls, check_body, strict_json

FUZZ = settings(max_examples=400, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Poster:
    """POSTs raw bodies to the node's RPC address on one kept-alive connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, body: bytes) -> tuple[int, bytes]:
        try:
            return self._post(body)
        except (http.client.HTTPException, ConnectionError):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            return self._post(body)

    def _post(self, body: bytes) -> tuple[int, bytes]:
        self.connection.request("POST", "/", body, {"Content-Type": "application/json"})
        reply = self.connection.getresponse()
        return reply.status, reply.read()

    def call(self, request: Any) -> Any:
        status, body = self.post(body_of(request))
        check_body(request, body, status)
        return strict_json(body) if body else None


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    net, base = make_testnet(tmp_path_factory.mktemp("fuzz"))
    process = node_process(net, base)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def poster(node: NodeProcess) -> Iterator[Poster]:
    poster = Poster(node.rpc_port)
    yield poster
    poster.connection.close()
    log = node.log_text()
    assert "Traceback" not in log and "rpc_internal_error" not in log, log[-3000:]


def _call(method: str, params: Any, id_: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}


def _error(answer: Any) -> int:
    assert "error" in answer, answer
    code: int = answer["error"]["code"]
    return code


def test_height_beyond_any_integer_is_invalid_params(poster: Poster) -> None:
    for height in (2**64, 2**63, -1, -(2**70), True, Raw("NaN"), Raw("1e400"), 1.0):
        assert _error(poster.call(_call("get_block", {"height": height}))) == -32602, height
    assert _error(poster.call(_call("get_block", {"height": 2**63 - 1}))) == -32005


def test_lone_surrogate_key_is_invalid_params(poster: Poster) -> None:
    assert b'"\\ud800"' in body_of(_call("query", {"family": "kv", "key": "\ud800"}))
    answer = poster.call(_call("query", {"family": "kv", "key": "\ud800"}))
    assert _error(answer) == -32602 and "surrogate" in answer["error"]["message"]
    assert poster.call(_call("query", {"family": "kv", "key": "k" * 300}))["result"] is None


@pytest.mark.parametrize("id_", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "true", "[1]", '{"a":1}'])
def test_id_that_is_no_json_rpc_id_is_an_invalid_request_with_id_null(poster: Poster, id_: str) -> None:
    status, body = poster.post(f'{{"jsonrpc":"2.0","id":{id_},"method":"status"}}'.encode())
    answer = strict_json(body)
    assert status == 200 and answer["id"] is None and _error(answer) == -32600, answer
    status, body = poster.post(f'[{{"jsonrpc":"2.0","id":{id_},"method":"status"}},'
                               f'{{"jsonrpc":"2.0","id":2,"method":"status"}}]'.encode())
    first, second = strict_json(body)
    assert first["id"] is None and _error(first) == -32600 and second["id"] == 2 and "result" in second


def test_huge_integer_id_is_echoed_exactly(poster: Poster) -> None:
    for id_ in (2**64, 10**300, -(10**100), 1.5e300):
        status, body = poster.post(body_of(_call("status", {}, id_)))
        assert status == 200 and strict_json(body)["id"] == id_ and json.dumps(id_).encode() in body


def test_a_batch_of_a_thousand_bad_calls_logs_nothing(node: NodeProcess, poster: Poster) -> None:
    before = len(node.log_text())
    batch = [_call("get_block", {"height": 2**64}, i) if i % 2 else _call("query", {"family": "kv", "key": "\ud800"}, i)
             for i in range(1000)]
    answers = poster.call(batch)
    assert [a["id"] for a in answers] == list(range(1000)) and {_error(a) for a in answers} == {-32602}
    assert len(node.log_text()) - before < 1000


def test_fuzzed_single_calls(poster: Poster) -> None:
    @FUZZ
    @given(calls())
    def one(call: Any) -> None:
        poster.call(call)

    one()


def test_fuzzed_batches(poster: Poster) -> None:
    @settings(FUZZ, max_examples=150)
    @given(BATCHES)
    def batch(calls_: list[Any]) -> None:
        poster.call(calls_)

    batch()


def _ws_answer(ws: ClientConnection, request: Any) -> None:
    """Sends `request` over the socket and checks its answer; one that has none is followed by a call
    whose answer must be the next frame."""
    ws.send(body_of(request).decode())
    try:
        parsed = json.loads(body_of(request))
    except RecursionError:
        parsed = None
    calls_ = parsed if isinstance(parsed, list) and parsed else [parsed]
    if any(answered(c) for c in calls_):
        text = ws.recv(timeout=30)
        check_body(request, text.encode() if isinstance(text, str) else text, 200)
    else:
        ws.send('{"jsonrpc":"2.0","id":"sync","method":"status"}')
        assert json.loads(ws.recv(timeout=30))["id"] == "sync", request


def test_fuzzed_calls_over_the_websocket(node: NodeProcess, poster: Poster) -> None:
    with connect(f"ws://127.0.0.1:{node.rpc_port}/ws", open_timeout=30) as ws:
        @settings(FUZZ, max_examples=150)
        @given(calls() | BATCHES)
        def over_ws(request: Any) -> None:
            _ws_answer(ws, request)

        over_ws()


def test_node_still_serves_after_the_fuzz(node: NodeProcess, poster: Poster) -> None:
    assert poster.call(_call("status", {}))["result"]["chain_id"]
    assert node.process is not None and node.process.poll() is None
