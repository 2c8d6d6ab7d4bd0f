"""systemd's notify protocol against a real NOTIFY_SOCKET: a unix datagram socket the test binds itself."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from node.ops.notify import Notifier, node_status, socket_address, watchdog_s
from tests.e2e.nodeproc import alliance, make_testnet, node_process

WATCHDOG_USEC = 1_000_000  # the node pings every 0.5 s


def bind_notify_socket(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    return sock


class Listener:
    """Collects the notify messages (one datagram each, newline-separated assignments)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.messages: list[list[str]] = []

    def read(self) -> None:
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode().split("\n"))
        except (TimeoutError, BlockingIOError):
            pass

    def lines(self) -> list[str]:
        return [line for message in self.messages for line in message]

    def wait_line(self, pattern: str, deadline_s: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            self.read()
            for line in self.lines():
                match = re.fullmatch(pattern, line)
                if match:
                    return match
        raise AssertionError(f"no notify line matching {pattern!r}; got {self.lines()}")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    sock = bind_notify_socket(str(tmp_path / "notify.sock"))
    with sock:
        yield Listener(sock)


def test_a_real_node_notifies_ready_status_watchdog_and_stopping(
    tmp_path: Path, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, base = make_testnet(tmp_path)
    node = node_process(net, base)
    monkeypatch.setenv("NOTIFY_SOCKET", listener.sock.getsockname())
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    node.start()
    try:
        listener.wait_line("READY=1")
        first = listener.messages[0]
        assert first[0] == "READY=1", "READY=1 is the node's first message"
        assert re.fullmatch(r"STATUS=height=0 role=leader view=\d+ peers=0", first[1]), first
        alliance("tx", "put", "k", "v", "--key", str(net / "client.key"), "--rpc", node.rpc_url)
        listener.wait_line(r"STATUS=height=[1-9]\d* role=leader view=\d+ peers=0")
        pings = listener.lines().count("WATCHDOG=1")
        time.sleep(1.6)
        listener.read()
        assert listener.lines().count("WATCHDOG=1") >= pings + 2, "WATCHDOG=1 every half of WATCHDOG_USEC"
        assert "STOPPING=1" not in listener.lines()
    finally:
        code = node.stop()
    assert code == 0, node.log_text()
    listener.read()
    assert "STOPPING=1" in listener.lines()


def test_abstract_namespace_addresses_start_with_a_nul_byte() -> None:
    assert socket_address("@systemd/notify") == "\0systemd/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@") is None
    assert socket_address("relative/path") is None


def test_a_notifier_sends_to_an_abstract_socket() -> None:
    name = f"alliance-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier.send("READY=1", "STATUS=hello")
        assert sock.recv(4096) == b"READY=1\nSTATUS=hello"
        notifier.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert notifier.address is None and notifier.watchdog_s is None
    assert not notifier.send("READY=1")
    notifier.stopping()


def test_the_watchdog_period_belongs_to_the_process_named_in_watchdog_pid() -> None:
    assert watchdog_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_s({}) is None


async def test_the_watchdog_is_withheld_while_the_consensus_loop_is_stalled(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    sock = bind_notify_socket(str(tmp_path / "n.sock"))
    sock.setblocking(False)
    alive = [True]
    notifier = Notifier(str(tmp_path / "n.sock"), watchdog_s=1.0)
    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(notifier.serve, lambda: "height=7", lambda stall_s: alive[0])
            await trio.sleep(1.2)  # pings at 0, 0.5 and 1.0 s
            listener = Listener(sock)
            listener.read()
            assert listener.messages[0] == ["READY=1", "STATUS=height=7"]
            assert listener.lines().count("WATCHDOG=1") == 3
            alive[0] = False
            await trio.sleep(1.5)
            listener.messages.clear()
            listener.read()
            assert "WATCHDOG=1" not in listener.lines()
            nursery.cancel_scope.cancel()
        listener.read()
        assert listener.lines() == ["STOPPING=1"]
    notifier.close()


def test_the_status_line_is_read_from_the_status_object() -> None:
    me, other = "aa" * 32, "bb" * 32
    status = {"height": 12, "view": 3, "node": {"pubkey": me}, "leader": me, "syncing": False,
              "peers": [{"connected": True}, {"connected": False}, {"connected": True}]}
    assert node_status(status) == "height=12 role=leader view=3 peers=2"
    assert node_status({**status, "leader": other}) == "height=12 role=validator view=3 peers=2"
    assert node_status({**status, "syncing": True}) == "height=12 role=catching_up view=3 peers=2"
