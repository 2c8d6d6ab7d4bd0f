"""Both clients' HTTP transport against a tiny local server that counts the requests it gets: a request
goes out a second time only when the server had closed the idle keep-alive connection, never after a
timeout; proxy settings in the environment are ignored."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from node.client import AsyncClient, Client, NoAnswer, NodeUnreachable
from tests.e2e.nodeproc import free_base_port

ANSWER = b'{"jsonrpc":"2.0","result":"ok","id":1}'
RELEASE_DEADLINE_S = 30.0


class _CountingServer(ThreadingHTTPServer):
    """Handles its i-th request as actions[i] says; joins every handler thread when closed."""

    daemon_threads = False

    def __init__(self, port: int, actions: list[str]) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.actions = actions
        self.requests = 0
        self.lock = threading.Lock()
        self.release = threading.Event()  # lets a "slow" answer go

    def next_action(self) -> str:
        with self.lock:
            self.requests += 1
            return self.actions[min(self.requests, len(self.actions)) - 1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    server: _CountingServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        action = self.server.next_action()
        if action == "hang up":  # close without answering
            self.close_connection = True
            return
        if action == "slow" and not self.server.release.wait(RELEASE_DEADLINE_S):
            raise AssertionError("the test never released the slow answer")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)
        # "answer, then close": the client is not told, so it keeps the connection for its next request
        self.close_connection = action == "answer, then close"

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def counting_server(*actions: str) -> Iterator[_CountingServer]:
    """The server, running; on exit every request it will ever count has been counted."""
    server = _CountingServer(free_base_port(1), list(actions))
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        thread.join()
        server.server_close()  # joins the handler threads


def url_of(server: _CountingServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("actions", [("slow",), ("answer", "slow")], ids=["new connection", "reused connection"])
def test_a_timed_out_request_is_never_sent_again(actions: tuple[str, ...]) -> None:
    with counting_server(*actions) as server:
        with Client(url_of(server), timeout_s=0.3) as client:
            for _ in actions[:-1]:
                assert client.call("status") == "ok"
            with pytest.raises(NoAnswer, match="may still take effect"):
                client.call("status")
    assert server.requests == len(actions)


def test_a_keep_alive_connection_closed_by_the_server_is_replaced_once() -> None:
    with counting_server("answer, then close", "answer") as server:
        with Client(url_of(server)) as client:
            assert client.post_raw(b"{}") == (200, ANSWER, False)
            assert client.post_raw(b"{}") == (200, ANSWER, True)
    assert server.requests == 2


def test_a_new_connection_that_is_hung_up_on_is_not_retried() -> None:
    with counting_server("hang up") as server:
        with Client(url_of(server)) as client, pytest.raises(NodeUnreachable) as raised:
            client.call("status")
    assert not isinstance(raised.value, NoAnswer) and server.requests == 1


async def test_async_timeout_and_hang_up_are_sent_once() -> None:
    with counting_server("slow") as server:
        async with AsyncClient(url_of(server), timeout_s=0.3) as client:
            with pytest.raises(NoAnswer, match="may still take effect"):
                await client.call("status")
    assert server.requests == 1
    with counting_server("hang up") as server:
        async with AsyncClient(url_of(server)) as client:
            with pytest.raises(NodeUnreachable):
                await client.call("status")
    assert server.requests == 1


async def test_both_clients_ignore_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    dead_proxy = f"http://127.0.0.1:{free_base_port(1)}"
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, dead_proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with counting_server("answer") as server:
        with Client(url_of(server)) as client:
            assert client.call("status") == "ok"
        async with AsyncClient(url_of(server)) as async_client:
            assert await async_client.call("status") == "ok"
    assert server.requests == 2
