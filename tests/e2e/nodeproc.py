"""Real `alliance` processes for end-to-end tests: start, wait, kill, restart."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node.client import Client, NodeUnreachable

ALLIANCE = [sys.executable, "-m", "node.cli"]
DEADLINE_S = 30.0


def _ephemeral_low() -> int:
    """The first port the kernel hands to outgoing connections (Linux: 32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


RANDOM_PORTS = (10000, 21000)  # the modules with fixed ports take theirs from 21000 up


def free_base_port(span: int = 40) -> int:
    """A base port P such that P..P+span are free on 127.0.0.1 right now.

    Below the ephemeral range: a node restarted on its port must not find it
    taken by some outgoing connection meanwhile. Each pytest-xdist worker picks
    in its own share of RANDOM_PORTS, so that two running at once never pick
    the same range.
    """
    low, high = _share(*RANDOM_PORTS)
    top = min(high, _ephemeral_low()) - span
    for _ in range(200):
        base = random.randrange(low, top, 10)
        if all(_port_free(base + i) for i in range(span)):
            return base
    raise RuntimeError("no free port range found")


def _share(low: int, high: int) -> tuple[int, int]:
    """This pytest-xdist worker's part of [low, high): all of it without xdist."""
    worker, workers = os.environ.get("PYTEST_XDIST_WORKER", "gw0"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker.removeprefix("gw"))
    size = (high - low) // workers // 10 * 10
    return low + index * size, low + (index + 1) * size


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def alliance(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*ALLIANCE, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"alliance {' '.join(args)} failed: {result.stderr}")
    return result


def wait_for(condition: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S, poll_s: float = 0.05) -> Any:
    """Polls `condition` until it returns a truthy value, or fails after the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(poll_s)


def wait_connected(nodes: list[NodeProcess]) -> None:
    """Waits until every node has a session with every other one."""
    def all_connected() -> bool:
        return all(sum(p["connected"] for p in n.client().status()["peers"]) == len(nodes) - 1 for n in nodes)
    wait_for(all_connected, "every node to connect to every other")


@dataclass
class NodeProcess:
    home: Path
    rpc_port: int
    process: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port + 2}"

    def client(self) -> Client:
        return Client(self.rpc_url, timeout_s=30)

    def metric(self, name: str, **labels: str) -> float | None:
        """The value of one series on the node's /metrics, or None when it is not exported."""
        label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        prefix = f"{name}{{{label_text}}} " if labels else f"{name} "
        with urllib.request.urlopen(self.metrics_url + "/metrics", timeout=DEADLINE_S) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(prefix):
                    return float(line.split()[-1])
        return None

    def start(self) -> None:
        log = self.home / f"run{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [*ALLIANCE, "run", "--home", str(self.home)], stdout=out, stderr=subprocess.STDOUT
            )
        wait_for(self._answers, f"{self.home} to answer RPC")

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"node exited with {self.process.returncode}: {self.logs[-1].read_text()}")
        try:
            self.client().status()
        except NodeUnreachable:
            return False
        return True

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=DEADLINE_S)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=DEADLINE_S)

    def log_text(self) -> str:
        return self.logs[-1].read_text()


def make_testnet(tmp: Path, nodes: int = 1) -> tuple[Path, int]:
    base = free_base_port(10 * nodes + 10)
    out = tmp / "net"
    alliance("testnet", "--nodes", str(nodes), "--out", str(out), "--base-port", str(base))
    return out, base


def node_process(net: Path, base: int, index: int = 0) -> NodeProcess:
    return NodeProcess(net / f"node{index}", base + 10 * index)


@contextmanager
def running(net: Path, base: int, count: int, *, clean_exit: bool = False) -> Iterator[list[NodeProcess]]:
    """The first `count` nodes of the testnet in `net`, started; afterwards those still up are stopped
    (with `clean_exit`, each must then exit with status 0)."""
    nodes = [node_process(net, base, i) for i in range(count)]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                code = node.stop()
                assert not clean_exit or code == 0, node.log_text()


def set_mode(path: Path, mode: int) -> None:
    os.chmod(path, mode)
