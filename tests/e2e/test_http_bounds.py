"""What one client can hold on a listener: node/api/http_server.py's Limits, on real Hypercorn and a real node, real sockets."""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from node.api.http_server import Limits, Receive, Scope, Send, bind, read_body, respond, serve_http
from node.api.ws import ROOM_REASON
from node.client import NodeUnreachable
from node.config import Address
from tests.e2e.nodeproc import ALLIANCE, DEADLINE_S, NodeProcess, make_testnet, node_process, wait_for

SHORT = Limits(connections_max=6, per_address_max=3, body_timeout_s=1.0, keep_alive_timeout_s=1.0,
               read_timeout_s=2, ws_ping_interval_s=0.5)
STATUS = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "status"}).encode()


# ---- a raw HTTP client --------------------------------------------------------------------------


def open_conn(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S, source_address=(source, 0))
    return sock


def head(port: int, length: int, path: str = "/") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def stalled(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A connection whose request body stops after one of its 100 bytes."""
    sock = open_conn(port, source)
    sock.sendall(head(port, 100) + b"{")
    return sock


def response(sock: socket.socket) -> tuple[int, bytes]:
    """The status and the rest of one response, read until the node closes the connection."""
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    assert data, "closed without a response"
    return int(data.split(b" ")[1]), data


def closed(sock: socket.socket) -> bool:
    """True once the server closed the connection (reading until then); False if it is still open after 0.1 s."""
    sock.settimeout(0.1)
    try:
        while sock.recv(1 << 16):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    finally:
        sock.settimeout(DEADLINE_S)


def post(port: int, body: bytes, source: str = "127.0.0.1") -> tuple[int, bytes]:
    with open_conn(port, source) as sock:
        sock.sendall(head(port, len(body)).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + body)
        return response(sock)


# ---- Hypercorn in this process, with short limits ---------------------------------------------------


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    await respond(send, 200, await read_body(scope, receive, 1000))


async def wait_for_close(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


@contextmanager
def serving(limits: Limits) -> Iterator[int]:
    """serve_http of `echo` (and `wait_for_close` at /ws) with `limits` in a thread; yields its port."""
    sock = bind(Address("127.0.0.1", 0), "test.listen")
    started = threading.Event()
    run: dict[str, Any] = {}

    async def main() -> None:
        run["token"] = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as run["scope"]:
            async with trio.open_nursery() as nursery:
                await nursery.start(partial(serve_http, echo, sock, websocket=wait_for_close, limits=limits))
                started.set()

    thread = threading.Thread(target=trio.run, args=(main,))
    thread.start()
    try:
        assert started.wait(DEADLINE_S), "the server did not start"
        yield sock.getsockname()[1]
    finally:
        if "scope" in run:
            trio.from_thread.run_sync(run["scope"].cancel, trio_token=run["token"])
        thread.join(DEADLINE_S)
        sock.close()
    assert not thread.is_alive(), "the server did not stop"


def test_a_stalled_body_is_answered_408_and_the_connection_closed() -> None:
    with serving(SHORT) as port, stalled(port) as sock:
        status, data = post(port, b"meanwhile")  # another request is served meanwhile
        assert status == 200 and data.endswith(b"meanwhile")
        status, data = response(sock)
        assert status == 408 and b"within 1 s" in data


def test_a_body_that_trickles_is_cut_at_the_deadline_too() -> None:
    with serving(SHORT) as port, open_conn(port) as sock:
        sock.sendall(head(port, 100))
        started = time.monotonic()
        with pytest.raises(OSError):  # broken pipe or reset, once the node answered and closed
            while time.monotonic() < started + DEADLINE_S:
                sock.sendall(b" ")
                time.sleep(0.2)
        assert response(sock)[0] == 408


def websocket(port: int, source: str) -> socket.socket:
    """A raw WebSocket connection from `source`, handshake done."""
    sock = open_conn(port, source)
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert sock.recv(12) == b"HTTP/1.1 101"
    return sock


def test_an_address_at_its_cap_gets_503_and_others_are_served() -> None:
    with serving(SHORT) as port, ExitStack() as held:
        for _ in range(SHORT.per_address_max):
            held.enter_context(websocket(port, "127.0.3.1"))
        status, data = post(port, b"x", "127.0.3.1")
        assert status == 503 and b"from 127.0.3.1" in data
        assert post(port, b"other", "127.0.3.2")[0] == 200  # another client is served meanwhile
        for _ in range(SHORT.connections_max - SHORT.per_address_max):
            held.enter_context(websocket(port, "127.0.3.2"))
        status, data = post(port, b"x", "127.0.3.3")
        assert status == 503 and b"over 6 connections" in data
        held.close()  # the connections end: the caps are free again
        wait_for(lambda: post(port, b"again", "127.0.3.3")[0] == 200, "the caps to free up")


def test_stalled_bodies_make_room_for_prompt_requests_from_their_address() -> None:
    with serving(SHORT) as port, ExitStack() as held:
        socks = [held.enter_context(stalled(port, "127.0.3.4")) for _ in range(SHORT.per_address_max)]
        status, data = post(port, b"prompt", "127.0.3.4")
        assert status == 200 and data.endswith(b"prompt")
        status, data = response(socks[0])  # the oldest stalled one made room
        assert status == 408 and b"cut short" in data
        assert all(response(sock)[0] == 408 for sock in socks[1:])


def test_idle_keep_alive_and_silent_connections_are_closed() -> None:
    with serving(SHORT) as port, open_conn(port) as idle, open_conn(port) as silent:
        idle.sendall(head(port, 2) + b"{}")
        wait_for(lambda: b"{}" in idle.recv(1 << 16), "the first answer")
        wait_for(lambda: closed(idle), "the idle connection to be closed", SHORT.keep_alive_timeout_s + 5)
        wait_for(lambda: closed(silent), "the silent connection to be closed", SHORT.keep_alive_timeout_s + 5)


def test_a_connection_that_opens_with_the_http2_preface_is_closed_at_once() -> None:
    # HTTP/1.1 only, as over TLS (ALPN): Hypercorn would switch to HTTP/2, whose limits are not these,
    # and hold a connection that then sends nothing until read_timeout_s instead of keep_alive_timeout_s.
    long_read = Limits(keep_alive_timeout_s=1.0, read_timeout_s=60)
    with serving(long_read) as port, open_conn(port) as h2:
        h2.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        wait_for(lambda: closed(h2), "the HTTP/2 connection to be closed", 5)
        assert post(port, b"{}")[0] == 200  # HTTP/1.1 is served as before


def test_a_websocket_that_answers_no_ping_is_closed_and_one_that_does_stays() -> None:
    with serving(SHORT) as port, connect(f"ws://127.0.0.1:{port}/ws", open_timeout=DEADLINE_S) as answering:
        with websocket(port, "127.0.0.1") as mute:
            opened = time.monotonic()
            wait_for(lambda: closed(mute), "the mute WebSocket to be closed", SHORT.read_timeout_s + 5)
            assert time.monotonic() - opened >= SHORT.read_timeout_s - 0.5  # its pings went unanswered
        assert answering.ping().wait(DEADLINE_S)  # answered every ping meanwhile: still open


# ---- a real node -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    net, base = make_testnet(tmp_path_factory.mktemp("bounds"))
    node = node_process(net, base)
    node.start()
    yield node
    assert node.stop() == 0


def rpc_status(node: NodeProcess, source: str = "127.0.0.1") -> int:
    status, data = post(node.rpc_port, STATUS, source)
    assert b'"height"' in data
    return status


def test_node_stalled_bodies_are_answered_408_and_hold_no_client_off(node: NodeProcess) -> None:
    port, cap = node.rpc_port, Limits.per_address_max
    with ExitStack() as held:
        socks = [held.enter_context(stalled(port, "127.0.4.1")) for _ in range(cap)]
        assert rpc_status(node) == 200  # another client meanwhile
        assert rpc_status(node, "127.0.4.1") == 200  # and one from the same address, in place of a stalled one
        assert b"cut short" in response(socks[0])[1]
        started = time.monotonic()
        for sock in socks[1:]:
            assert response(sock)[0] == 408
        assert time.monotonic() - started < Limits.body_timeout_s + 5
    assert rpc_status(node, "127.0.4.1") == 200
    assert "Traceback" not in node.log_text()
    assert node.log_text().count("event=http_body_timeout") == 1  # with a count, not once per request


def test_node_clients_leaving_mid_body_leave_no_traceback(node: NodeProcess) -> None:
    for _ in range(20):
        with stalled(node.rpc_port):
            pass
    assert rpc_status(node) == 200
    assert "Traceback" not in node.log_text() and "Cancelled" not in node.log_text()


def node_with_descriptors(tmp_path: Path, limit: int) -> NodeProcess:
    """A node started with at most `limit` file descriptors, answering."""
    net, base = make_testnet(tmp_path)
    node = node_process(net, base)
    log = node.home / "run0.log"
    node.logs.append(log)
    with log.open("wb") as out:
        node.process = subprocess.Popen(
            [*ALLIANCE, "run", "--home", str(node.home)], stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))
    wait_for(lambda: _answers(node), "the node to answer")
    return node


def test_node_out_of_file_descriptors_logs_once_and_recovers(tmp_path: Path) -> None:
    limit = 160
    node = node_with_descriptors(tmp_path, limit)
    try:
        with ExitStack() as held:
            for i in range(limit + 40):  # silent connections, from many addresses: only time bounds them
                held.enter_context(open_conn(node.rpc_port, f"127.0.5.{1 + i // 30}"))
            wait_for(lambda: "event=http_accept_failed" in node.log_text(), "the node to run out of descriptors")
            time.sleep(1)  # ten retries of accept, that must not log ten times
        wait_for(lambda: _answers(node), "the node to answer again")
        text = node.log_text()
        assert text.count("Traceback") == 0, text[-3000:]
        assert text.count("event=http_accept_failed") == 1, text[-3000:]
    finally:
        assert node.stop() == 0


def test_node_stalled_bodies_from_many_addresses_meet_the_cap_before_the_descriptor_limit(tmp_path: Path) -> None:
    limit = 160  # a listener's cap is then 40: stalled bodies make room long before descriptors run out
    node = node_with_descriptors(tmp_path, limit)
    try:
        with ExitStack() as held:
            socks = [held.enter_context(stalled(node.rpc_port, f"127.0.9.{1 + i // 20}")) for i in range(limit + 40)]
            assert rpc_status(node, "127.0.10.1") == 200  # while every stalled connection is still held
            assert b"cut short" in response(socks[0])[1]  # the oldest made room, before its body deadline
        assert "Traceback" not in node.log_text()
    finally:
        assert node.stop() == 0


def _answers(node: NodeProcess) -> bool:
    try:
        return bool(node.client().status())
    except NodeUnreachable:
        return False


def test_node_websockets_per_address_cap(node: NodeProcess) -> None:
    url = f"ws://127.0.0.1:{node.rpc_port}/ws"
    subscribe = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"topic": "blocks"}})
    with ExitStack() as held:
        idle = [held.enter_context(connect(url, open_timeout=DEADLINE_S)) for _ in range(Limits.per_address_max)]
        with connect(url, open_timeout=DEADLINE_S) as subscriber:  # the oldest idle one made room
            subscriber.send(subscribe)
            assert "result" in subscriber.recv(timeout=DEADLINE_S)
            with pytest.raises(ConnectionClosed):
                idle[0].recv(timeout=DEADLINE_S)
            assert idle[0].close_code == 1000 and idle[0].close_reason == ROOM_REASON
    with ExitStack() as held:
        for _ in range(Limits.per_address_max):
            busy = held.enter_context(connect(url, open_timeout=DEADLINE_S))
            busy.send(subscribe)
            assert "result" in busy.recv(timeout=DEADLINE_S)
        with pytest.raises(InvalidStatus) as refused:
            connect(url, open_timeout=DEADLINE_S)
        assert refused.value.response.status_code == 503  # none of them is idle
        assert rpc_status(node, "127.0.6.1") == 200  # another client meanwhile


def test_node_stops_promptly_while_a_client_does_not_read_its_answer(tmp_path: Path) -> None:
    net, base = make_testnet(tmp_path)
    node = node_process(net, base)
    node.start()
    batch = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "status"} for i in range(1000)]).encode()
    with open_conn(node.rpc_port) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(head(node.rpc_port, len(batch)) + batch)  # its answer, some 500 KB, is never read
        assert sock.recv(1) == b"H"  # the answer is being written, and soon waits on the full buffers
        started = time.monotonic()
        try:
            assert node.stop() == 0
        finally:
            if node.process is not None and node.process.poll() is None:
                node.kill9()
        assert time.monotonic() - started < 5, "the stop waited for the client"
