"""Live events at ws://.../ws against real `alliance run` processes, with the ordinary `websockets` client."""

from __future__ import annotations

import base64
import itertools
import json
import os
import secrets
import signal
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from node.api.http_server import Limits
from node.api.subscriptions import CONNECTIONS_MAX, DROP_REASON, SUBSCRIPTIONS_PER_CONNECTION_MAX
from node.api.ws import CLOSE_GRACE_S, IDLE_REASON, IDLE_TIMEOUT_S, REQUESTS_IN_FLIGHT_MAX, WRITE_TIMEOUT_S
from node.chain.tx import Transaction, sign_tx
from node.keys import load_key
from tests.e2e.nodeproc import DEADLINE_S, NodeProcess, make_testnet, running, wait_connected, wait_for

pytestmark = pytest.mark.slow

NODES = 4
CHAIN_ID = "alliance-local"


# ---- HTTP and metrics ---------------------------------------------------------------------


def http(node: NodeProcess, payload: Any) -> Any:
    request = urllib.request.Request(node.rpc_url, json.dumps(payload).encode(),
                                     {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=DEADLINE_S) as response:
        return json.loads(response.read())


def http_call(node: NodeProcess, method: str, **params: Any) -> Any:
    answer = http(node, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    assert "result" in answer, answer
    return answer["result"]


def height(node: NodeProcess) -> int:
    return int(http_call(node, "status")["height"])


def metric(node: NodeProcess, name: str) -> float:
    value = node.metric(name)
    if value is None:
        raise AssertionError(f"{name} not in the metrics")
    return value


# ---- load ---------------------------------------------------------------------------------


class Load:
    """kv puts to the given nodes from a background thread, in batches of 20."""

    def __init__(self, net: Path, nodes: list[NodeProcess]) -> None:
        self.key = load_key(net / "client.key")
        self.nodes = nodes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=DEADLINE_S)

    def _run(self) -> None:
        for node in itertools.cycle(self.nodes):
            if self._stop.is_set():
                return
            batch = [{"jsonrpc": "2.0", "id": i, "method": "send_tx", "params": {"tx": tx_put(self.key).raw.hex()}}
                     for i in range(20)]
            try:
                http(node, batch)
            except OSError:
                pass  # a node being restarted
            self._stop.wait(0.03)


def tx_put(key: Any, name: str | None = None) -> Transaction:
    args = {"key": name or f"load/{secrets.token_hex(6)}", "value": b"x" * 32}
    return sign_tx(key, CHAIN_ID, "kv", "put", args, secrets.randbits(64))


# ---- WebSocket clients ------------------------------------------------------------------------


def ws_url(node: NodeProcess, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{node.rpc_port}{path}"


class Socket(AbstractContextManager["Socket"]):
    """A JSON-RPC connection to /ws; notifications read while waiting for answers are kept, in order."""

    def __init__(self, node: NodeProcess, **options: Any) -> None:
        self._stack = ExitStack()
        self.ws: ClientConnection = self._stack.enter_context(
            connect(ws_url(node), open_timeout=DEADLINE_S, **options))
        self.notifications: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def request(self, payload: Any) -> Any:
        """Sends a request (or batch) and returns its answer."""
        self.ws.send(json.dumps(payload))
        ids = {c.get("id") for c in payload} if isinstance(payload, list) else {payload.get("id")}
        while True:
            frame = json.loads(self.ws.recv(timeout=DEADLINE_S))
            if isinstance(frame, list) or frame.get("id", "no id") in ids:
                return frame
            assert "method" in frame, frame
            self.notifications.append(frame)

    def answer(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        call: dict[str, Any] = {"jsonrpc": "2.0", "id": next(self._ids), "method": method}
        if params is not None:
            call["params"] = params
        answer: dict[str, Any] = self.request(call)
        return answer

    def call(self, method: str, **params: Any) -> Any:
        answer = self.answer(method, params)
        assert "result" in answer, answer
        return answer["result"]

    def error(self, method: str, params: dict[str, Any] | None = None) -> int:
        answer = self.answer(method, params)
        assert "error" in answer, answer
        return int(answer["error"]["code"])

    def notification(self) -> dict[str, Any]:
        if self.notifications:
            return self.notifications.pop(0)
        frame: dict[str, Any] = json.loads(self.ws.recv(timeout=DEADLINE_S))
        assert frame.get("method") == "subscription", frame
        return frame


class Follower:
    """Subscribes to blocks and records every notification from a background thread; close() to stop."""

    def __init__(self, node: NodeProcess) -> None:
        self.socket = Socket(node)
        self.id = self.socket.call("subscribe", topic="blocks")
        self.blocks: list[dict[str, Any]] = []
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                frame = json.loads(self.socket.ws.recv())
                assert frame["params"]["subscription"] == self.id, frame
                self.blocks.append(frame["params"]["result"])
        except ConnectionClosed:
            pass
        except BaseException as exc:  # reported by reached() and close()
            self.failure = exc

    def reached(self, top: int) -> bool:
        assert self.failure is None, self.failure
        return bool(self.blocks) and self.blocks[-1]["height"] >= top

    def close(self) -> list[dict[str, Any]]:
        self.socket.__exit__(None, None, None)
        self._thread.join(timeout=DEADLINE_S)
        assert self.failure is None, self.failure
        return self.blocks


def assert_chain_as_get_block(node: NodeProcess, blocks: list[dict[str, Any]]) -> None:
    """Consecutive heights, each exactly the node's get_block object."""
    assert blocks
    first = blocks[0]["height"]
    assert [b["height"] for b in blocks] == list(range(first, first + len(blocks)))
    for start in range(0, len(blocks), 100):
        chunk = blocks[start:start + 100]
        answers = http(node, [{"jsonrpc": "2.0", "id": b["height"], "method": "get_block",
                               "params": {"height": b["height"]}} for b in chunk])
        assert [a["result"] for a in sorted(answers, key=lambda a: a["id"])] == chunk


# A raw WebSocket client: a handshake and masked text frames, and then it need never read.

def raw_handshake(node: NodeProcess, receive_buffer: int | None = None,
                  source: str = "127.0.0.1") -> tuple[socket.socket, int]:
    """A TCP connection from `source` that has asked for a WebSocket at /ws; with the response's status code."""
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(DEADLINE_S)
    sock.bind((source, 0))  # every 127.x.y.z is this host: a client address of its own
    sock.connect(("127.0.0.1", node.rpc_port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{node.rpc_port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        assert byte, f"connection closed during the handshake: {head!r}"
        head += byte
    return sock, int(head.split(b" ")[1])


def raw_send_text(sock: socket.socket, text: str) -> None:
    data, mask = text.encode(), os.urandom(4)
    if len(data) < 126:
        header = struct.pack("!BB", 0x81, 0x80 | len(data))
    elif len(data) < 65536:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, len(data))
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, len(data))
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))


def subscribe_all() -> list[dict[str, Any]]:
    """A batch of as many block subscriptions as a connection may hold."""
    return [{"jsonrpc": "2.0", "id": i, "method": "subscribe", "params": {"topic": "blocks"}}
            for i in range(SUBSCRIPTIONS_PER_CONNECTION_MAX)]


def expect_closed(sock: socket.socket) -> None:
    """Reads whatever is buffered until the node's close or reset; socket.timeout if it never comes."""
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        pass


def rpc_while(node: NodeProcess, condition: Any, what: str, deadline_s: float) -> float:
    """Calls status over HTTP until `condition` holds; the slowest answer's seconds."""
    deadline, slowest = time.monotonic() + deadline_s, 0.0
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {deadline_s} s waiting for {what}"
        started = time.monotonic()
        http_call(node, "status")
        slowest = max(slowest, time.monotonic() - started)
    return slowest


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[NodeProcess]]]:
    net, base = make_testnet(tmp_path_factory.mktemp("ws"), nodes=NODES)
    with running(net, base, NODES, clean_exit=True) as nodes:
        wait_connected(nodes)
        yield net, nodes


# ---- following the chain ------------------------------------------------------------------------


def test_follow_a_consortium_under_load(consortium: Any) -> None:
    net, nodes = consortium
    with Load(net, nodes):
        followers = [Follower(node) for node in (nodes[0], nodes[2])]
        top = height(nodes[0]) + 30
        for follower in followers:
            wait_for(lambda: follower.reached(top), "30 blocks followed under load", deadline_s=2 * DEADLINE_S)
    for follower, node in zip(followers, (nodes[0], nodes[2])):
        blocks = follower.close()
        assert any(b["txs"] for b in blocks)
        assert_chain_as_get_block(node, blocks)


def test_blocks_applied_by_catch_up_are_published(consortium: Any) -> None:
    net, nodes = consortium
    paused = nodes[3]
    assert paused.process is not None
    synced_before = paused.log_text().count("event=synced")
    with Socket(paused) as conn, Load(net, nodes[:3]):
        subscription = conn.call("subscribe", topic="blocks")
        start = conn.call("status")["height"]
        paused.process.send_signal(signal.SIGSTOP)  # its socket stays open; the others go on without it
        try:
            target = height(nodes[0]) + 12
            wait_for(lambda: height(nodes[0]) >= target, "the chain to move on without node3",
                     deadline_s=2 * DEADLINE_S)
        finally:
            paused.process.send_signal(signal.SIGCONT)
        blocks: list[dict[str, Any]] = []
        while not blocks or blocks[-1]["height"] < target:
            frame = conn.notification()
            assert frame["params"]["subscription"] == subscription
            blocks.append(frame["params"]["result"])
    assert blocks[0]["height"] <= start + 1
    assert_chain_as_get_block(paused, blocks)
    # The syncer logs its batch after the batch's blocks are published: wait for the line, do not race it.
    wait_for(lambda: paused.log_text().count("event=synced") > synced_before, "node3 to log its catch-up")


# ---- transactions -------------------------------------------------------------------------------


def test_tx_subscription_before_and_after_its_commit(consortium: Any) -> None:
    net, nodes = consortium
    tx = tx_put(load_key(net / "client.key"), f"watched/{secrets.token_hex(4)}")
    with Socket(nodes[1]) as conn:
        before = conn.call("subscribe", topic="tx", tx_hash=tx.hash.hex())
        committed = http_call(nodes[3], "send_tx", tx=tx.raw.hex(), wait=True)
        assert conn.notification() == {"jsonrpc": "2.0", "method": "subscription",
                                       "params": {"subscription": before, "topic": "tx", "result": committed}}
        assert committed == http_call(nodes[1], "get_tx", tx_hash=tx.hash.hex())
        assert conn.error("unsubscribe", {"subscription": before}) == -32005  # it ended by itself

        after = conn.call("subscribe", topic="tx", tx_hash=tx.hash.hex())
        assert conn.notification()["params"] == {"subscription": after, "topic": "tx", "result": committed}
        assert conn.error("unsubscribe", {"subscription": after}) == -32005


def test_tx_subscription_made_in_the_batch_that_sends_it(consortium: Any) -> None:
    net, nodes = consortium
    tx = tx_put(load_key(net / "client.key"))
    with Socket(nodes[0]) as conn:
        answers = conn.request([
            {"jsonrpc": "2.0", "id": "sub", "method": "subscribe",
             "params": {"topic": "tx", "tx_hash": tx.hash.hex()}},
            {"jsonrpc": "2.0", "id": "send", "method": "send_tx", "params": {"tx": tx.raw.hex(), "wait": True}},
        ])
        by_id = {a["id"]: a for a in answers}
        assert not conn.notifications  # the answer telling the id comes before the notification
        assert conn.notification()["params"] == {
            "subscription": by_id["sub"]["result"], "topic": "tx", "result": by_id["send"]["result"]}


def test_unsubscribe_stops_notifications(consortium: Any) -> None:
    net, nodes = consortium
    with Socket(nodes[2]) as conn, Load(net, nodes):
        kept = conn.call("subscribe", topic="blocks")
        removed = conn.call("subscribe", topic="blocks")
        first = conn.notification()["params"]["result"]["height"]
        assert conn.call("unsubscribe", subscription=removed) is True
        conn.notifications.clear()  # sent before the answer
        while True:  # a connection's frames keep their order: every later one is for `kept`
            params = conn.notification()["params"]
            assert params["subscription"] == kept
            if params["result"]["height"] >= first + 3:
                break
        assert conn.error("unsubscribe", {"subscription": removed}) == -32005


# ---- the rest of the protocol -----------------------------------------------------------------------


def test_ordinary_methods_over_the_socket_answer_as_over_http(consortium: Any) -> None:
    _, nodes = consortium
    node = nodes[1]
    with Socket(node) as conn:
        top = height(node)
        assert conn.call("get_block", height=top) == http_call(node, "get_block", height=top)
        assert conn.call("status")["chain_id"] == CHAIN_ID
        assert conn.call("query", family="kv", key="no/such/key") is None
        for payload in (
            {"jsonrpc": "2.0", "id": 7, "method": "get_tx", "params": {"tx_hash": "00" * 32}},
            {"jsonrpc": "2.0", "id": 8, "method": "get_block", "params": {"height": 10 ** 9}},
            {"jsonrpc": "2.0", "id": 9, "method": "no_such_method"},
            [{"jsonrpc": "2.0", "id": 1, "method": "get_block", "params": {"height": 1}}, {"id": 2}],
        ):
            assert conn.request(payload) == http(node, payload)
        conn.ws.send("{not json")
        assert json.loads(conn.ws.recv(timeout=DEADLINE_S))["error"]["code"] == -32700
        conn.ws.send(json.dumps({"jsonrpc": "2.0", "method": "status"}))  # a notification: no answer
        assert conn.call("subscribe", topic="blocks")


def test_errors(consortium: Any) -> None:
    _, nodes = consortium
    node = nodes[0]
    with Socket(node) as conn:
        for params in ({"topic": "headers"}, {}, {"topic": "blocks", "extra": 1}, {"topic": "tx"},
                       {"topic": "tx", "tx_hash": "ab"}, {"topic": "tx", "tx_hash": "zz" * 32}):
            assert conn.error("subscribe", params) == -32602, params
        assert conn.error("subscribe", None) == -32602
        assert conn.error("unsubscribe", {}) == -32602
        assert conn.error("unsubscribe", {"subscription": "no-such-id"}) == -32005
        for _ in range(SUBSCRIPTIONS_PER_CONNECTION_MAX):
            conn.call("subscribe", topic="blocks")
        assert conn.error("subscribe", {"topic": "blocks"}) == -32004

    for method, params in (("subscribe", {"topic": "blocks"}), ("unsubscribe", {"subscription": "x"})):
        answer = http(node, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        assert answer["error"]["code"] == -32601

    with Socket(node) as big:
        big.ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "status", "pad": "x" * (1 << 20)}))
        with pytest.raises(ConnectionClosed) as closed:
            big.ws.recv(timeout=DEADLINE_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    with pytest.raises(InvalidStatus) as refused, connect(ws_url(node, "/other"), open_timeout=DEADLINE_S):
        pass
    assert refused.value.response.status_code == 404


def test_subscribe_and_unsubscribe_sent_as_notifications_do_nothing(consortium: Any) -> None:
    net, nodes = consortium
    node = nodes[3]
    silent = {"jsonrpc": "2.0", "method": "subscribe", "params": {"topic": "blocks"}}
    with Socket(node) as conn, Load(net, nodes):
        for _ in range(SUBSCRIPTIONS_PER_CONNECTION_MAX):
            conn.ws.send(json.dumps(silent))
        conn.ws.send(json.dumps([silent, silent]))  # a batch of notifications only: no answer either
        [status] = conn.request([silent, {"jsonrpc": "2.0", "id": "status", "method": "status"}])
        assert status["id"] == "status" and "result" in status
        kept = conn.call("subscribe", topic="blocks")  # none of them took one of the 64 places
        conn.ws.send(json.dumps({"jsonrpc": "2.0", "method": "unsubscribe", "params": {"subscription": kept}}))
        first = conn.notification()["params"]
        while True:  # only `kept` notifies, and it goes on after the unsubscribe notification
            params = conn.notification()["params"]
            assert params["subscription"] == first["subscription"] == kept
            if params["result"]["height"] >= first["result"]["height"] + 2:
                break
        assert conn.call("unsubscribe", subscription=kept) is True


def test_connection_limit(consortium: Any) -> None:
    _, nodes = consortium
    node = nodes[1]
    wait_for(lambda: metric(node, "alliance_ws_connections") == 0, "earlier tests' connections to close")
    subscribe = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"topic": "blocks"}})
    socks = []
    hosts = [f"127.0.1.{i}" for i in range(1, 1 + CONNECTIONS_MAX // Limits.per_address_max)]
    try:
        for host, _ in itertools.product(hosts, range(Limits.per_address_max)):
            sock, status = raw_handshake(node, source=host)
            socks.append(sock)
            assert status == 101
            raw_send_text(sock, subscribe)  # busy: no connection makes room for another
        wait_for(lambda: node.metric("alliance_ws_subscriptions", topic="blocks") == CONNECTIONS_MAX,
                 "every connection's subscription")
        sock, status = raw_handshake(node, source=hosts[0])  # that address's share is taken
        sock.close()
        assert status == 503
        sock, status = raw_handshake(node, source="127.0.2.1")  # and so are all the node's WebSockets
        sock.close()
        assert status == 503
        assert http_call(node, "status")  # HTTP is not limited by them
        socks.pop().close()
        wait_for(lambda: metric(node, "alliance_ws_connections") < CONNECTIONS_MAX, "a connection to be released")
        idle, status = raw_handshake(node, source="127.0.2.1")
        socks.append(idle)
        assert status == 101
        sock, status = raw_handshake(node, source="127.0.2.2")  # the idle one makes room
        socks.append(sock)
        assert status == 101
        expect_closed(idle)
    finally:
        for sock in socks:
            sock.close()


def test_a_connection_without_subscriptions_is_closed_when_idle(consortium: Any) -> None:
    _, nodes = consortium
    node = nodes[3]
    with Socket(node) as idle, Socket(node) as subscribed, Socket(node) as asking:
        subscribed.call("subscribe", topic="blocks")
        opened = time.monotonic()
        while time.monotonic() < opened + IDLE_TIMEOUT_S + 1:  # requests keep a connection open
            assert asking.call("status")
            time.sleep(1)
        with pytest.raises(ConnectionClosed):
            idle.ws.recv(timeout=IDLE_TIMEOUT_S)
        assert idle.ws.close_code == 1000 and idle.ws.close_reason == IDLE_REASON
        assert subscribed.call("status") and asking.call("status")


# ---- subscribers that stop reading ------------------------------------------------------------------


def test_subscribers_that_stop_reading_are_dropped_and_block_nothing(consortium: Any) -> None:
    net, nodes = consortium
    node = nodes[0]
    with Load(net, nodes):
        follower = Follower(node)

        # One that stops reading for a while, then reads: everything sent, the drop notice, close 1008.
        with Socket(node, max_queue=4) as late:
            assert len(late.request(subscribe_all())) == SUBSCRIPTIONS_PER_CONNECTION_MAX
            dropped = metric(node, "alliance_ws_subscribers_dropped_total")
            wait_for(lambda: metric(node, "alliance_ws_subscribers_dropped_total") > dropped, "the late one's drop")
            frames = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    frames.append(json.loads(late.ws.recv(timeout=DEADLINE_S)))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert frames[-1] == {"jsonrpc": "2.0", "method": "subscription_dropped", "params": {"reason": DROP_REASON}}
        assert all(f["method"] == "subscription" for f in frames[:-1])

        # One that never reads again: its connection is reset soon after the drop.
        wait_for(lambda: metric(node, "alliance_ws_connections") == 1, "only the follower to be connected")
        stuck, status = raw_handshake(node, receive_buffer=4096)
        assert status == 101
        raw_send_text(stuck, json.dumps(subscribe_all()))
        slowest = rpc_while(node, lambda: metric(node, "alliance_ws_subscribers_dropped_total") == dropped + 2,
                            "the stuck one's drop", DEADLINE_S)
        slowest = max(slowest, rpc_while(node, lambda: metric(node, "alliance_ws_connections") == 1,
                                         "the stuck one's connection to be reset", CLOSE_GRACE_S + 5))
        assert slowest < 2.0, f"RPC took {slowest:.2f} s while a subscriber was stuck"
        expect_closed(stuck)
        stuck.close()

        top = height(node) + 5
        wait_for(lambda: follower.reached(top), "the follower to see the chain go on")
    assert_chain_as_get_block(node, follower.close())


def test_a_client_that_sends_requests_and_never_reads_is_reset(consortium: Any) -> None:
    _, nodes = consortium
    node = nodes[2]
    wait_for(lambda: metric(node, "alliance_ws_connections") == 0, "earlier tests' connections to close")
    dropped = metric(node, "alliance_ws_subscribers_dropped_total")
    block = http(node, [{"jsonrpc": "2.0", "id": 1, "method": "get_block", "params": {"height": 1}}])
    calls = 1 + (8 << 20) // (REQUESTS_IN_FLIGHT_MAX * len(json.dumps(block)))  # answers of 8 MiB in all
    batch = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "get_block", "params": {"height": 1}}
                        for i in range(calls)])
    stuck, status = raw_handshake(node, receive_buffer=4096)
    assert status == 101
    for _ in range(REQUESTS_IN_FLIGHT_MAX):
        raw_send_text(stuck, batch)
    for i in range(20):  # more than the node reads while every answer waits to be sent
        raw_send_text(stuck, json.dumps({"jsonrpc": "2.0", "id": i, "method": "status"}))
    slowest = rpc_while(node, lambda: metric(node, "alliance_ws_connections") == 0,
                        "the connection to be reset", WRITE_TIMEOUT_S + 10)
    assert slowest < 2.0, f"RPC took {slowest:.2f} s while a client was stuck"
    assert metric(node, "alliance_ws_subscribers_dropped_total") == dropped + 1
    expect_closed(stuck)
    stuck.close()
    with Socket(node) as conn:
        assert conn.call("get_block", height=1) == block[0]["result"]


def test_a_stuck_subscriber_does_not_hold_shutdown(single: Any) -> None:
    net, node = single
    stuck, status = raw_handshake(node, receive_buffer=4096)
    assert status == 101
    raw_send_text(stuck, json.dumps(subscribe_all()))
    with Load(net, [node]):
        wait_for(lambda: metric(node, "alliance_ws_subscribers_dropped_total") == 1, "the stuck subscriber's drop")
        assert node.process is not None
        started = time.monotonic()
        node.process.send_signal(signal.SIGTERM)  # while the node's write to it is blocked
        assert node.process.wait(timeout=DEADLINE_S) == 0
        assert time.monotonic() - started < CLOSE_GRACE_S - 1, "shutdown waited for the subscriber"
    stuck.close()
