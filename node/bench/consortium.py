"""The consortium under `alliance bench`: its nodes started as `alliance run` processes and watched."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.bench.progress import progress
from node.bench.watch import BlockWatcher
from node.cli import localnet
from node.cli.localnet import LocalNode, local_nodes, start_process
from node.client import Client, NodeUnreachable
from node.config import load_config
from node.errors import AllianceError

CONNECTED_TIMEOUT_S = 30.0
EXIT_SEEN_S = 2.0  # how long a node whose event stream closed is given to be seen exited


def start_nodes(home: Path, nodes: int, base_port: int, profiles: list[Path] | None) -> list[LocalNode]:
    """Starts each node with localnet.start_process, with `--profile FILE` when asked."""
    started = local_nodes(home, nodes, base_port)
    for node in started:
        start_node(node, profiles[node.index] if profiles else None)
    return started


def start_node(node: LocalNode, profile: Path | None) -> None:
    start_process(node, *(["--profile", str(profile)] if profile else []))


def check_alive(nodes: list[LocalNode]) -> None:
    localnet.check_alive(nodes, " during the benchmark")


def check_watching(nodes: list[LocalNode], watcher: BlockWatcher) -> None:
    """The nodes alive and the watcher following node0; else a clear error. A node that dies closes its
    event stream a moment before its exit can be seen: then the exit is the error, not the stream."""
    if watcher.error is None:
        return
    for node in nodes:
        if node.index == 0 and node.process is not None:
            try:
                node.process.wait(timeout=EXIT_SEEN_S)
            except subprocess.TimeoutExpired:
                pass
    check_alive(nodes)
    raise AllianceError(f"watcher lost node0: {watcher.error}")


@dataclass(frozen=True)
class Reached:
    """When a restarted or new node first answered, first had a peer, and reached a height (seconds from
    `since`), and its status then."""
    rpc_s: float
    peer_s: float  # the time it reached the height, if no answer before showed a peer connected
    height_s: float
    status: dict[str, Any]


def time_to_height(node: LocalNode, target: int, since: float, poll_s: float, timeout_s: float,
                   failure: str) -> Reached:
    """Polls the node's status until its height is `target`; AllianceError naming `failure` after `timeout_s`."""
    client = Client(node.rpc_url, timeout_s=10)
    rpc_at: float | None = None
    peer_at: float | None = None
    try:
        while True:
            check_alive([node])
            try:
                answer = client.status()
            except NodeUnreachable:
                answer = None
            now = time.monotonic()
            if answer is not None:
                rpc_at = now if rpc_at is None else rpc_at
                if peer_at is None and any(p["connected"] for p in answer["peers"]):
                    peer_at = now
                if answer["height"] >= target:
                    return Reached(rpc_at - since, (peer_at or now) - since, now - since, answer)
            if now - since > timeout_s:
                raise AllianceError(f"node{node.index} {failure} within {timeout_s:g} s; see {node.home}/node.log")
            time.sleep(poll_s)
    finally:
        client.close()


def wait_connected(nodes: list[LocalNode]) -> None:
    """Until every node reports all its peers connected."""
    deadline = time.monotonic() + CONNECTED_TIMEOUT_S
    for node in nodes:
        client = Client(node.rpc_url, timeout_s=5)
        while True:
            check_alive(nodes)
            try:
                peers = client.status()["peers"]
            except NodeUnreachable:
                peers = [{"connected": False}]
            if all(p["connected"] for p in peers):
                break
            if time.monotonic() > deadline:
                raise AllianceError(f"node{node.index} was not connected to all its peers within "
                                    f"{CONNECTED_TIMEOUT_S:.0f} s; see {node.home}/node.log")
            time.sleep(0.1)
        client.close()


def status(node: LocalNode) -> dict[str, Any]:
    client = Client(node.rpc_url, timeout_s=10)
    try:
        return client.status()
    finally:
        client.close()


def metrics_url(node: LocalNode) -> str:
    address = load_config(node.home).metrics_listen
    return f"http://{address.host}:{address.port}"


def check_clean_exit(nodes: list[LocalNode]) -> None:
    for node in nodes:
        if node.process is not None and node.process.returncode not in (0, -signal.SIGTERM):
            progress(f"node{node.index} exited with {node.process.returncode} on SIGTERM; "
                     f"see {node.home}/node.log")
