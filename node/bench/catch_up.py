"""`alliance bench --catch-up`: a node stopped before the load, restarted after it and timed until it catches up."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.bench.consortium import start_node, status, time_to_height
from node.bench.progress import progress
from node.bench.watch import BlockWatcher, cpu_seconds
from node.cli.localnet import LocalNode, stop_nodes
from node.errors import AllianceError

CATCH_UP_TIMEOUT_S = 300.0
SEEN_TIMEOUT_S = 10.0  # how far node0 (the watcher's) may lag behind the node that caught up


@dataclass(frozen=True)
class Stopped:
    """The node stopped before the load, its height then, and when its process had exited."""
    node: LocalNode
    height: int
    at: float


def stop_follower(node: LocalNode) -> Stopped:
    """Stops a node (SIGTERM) before the load starts; the chain is idle, so its height is final."""
    height = status(node)["height"]
    stop_nodes([node])
    progress(f"node{node.index} stopped at height {height}")
    return Stopped(node, height, time.monotonic())


def catch_up(stopped: Stopped, others: list[LocalNode], watcher: BlockWatcher, produced_at: float,
             profiles: list[Path] | None, poll_s: float) -> dict[str, Any]:
    """Restarts the stopped node and times it until it reaches the height the others had at its restart."""
    node = stopped.node
    target = max(status(n)["height"] for n in others)
    restarted = time.monotonic()
    start_node(node, profiles[node.index] if profiles else None)
    progress(f"node{node.index} restarted, {target - stopped.height} block(s) behind")
    reached = time_to_height(node, target, restarted, poll_s, CATCH_UP_TIMEOUT_S,
                             f"did not catch up to height {target} after its restart")
    rpc_s, peer_s, catch_up_s = reached.rpc_s, reached.peer_s, reached.height_s
    assert node.process is not None
    node_cpu_s = cpu_seconds(node.process.pid)
    progress(f"node{node.index} reached height {target} {catch_up_s:.2f} s after its restart")
    _wait_seen(watcher, target)
    txs = sum(b.txs for b in watcher.blocks if stopped.height < b.height <= target)
    produce_s = produced_at - stopped.at
    return {
        "catch_up_node": node.index,
        "catch_up_txs": txs,
        "catch_up_blocks": target - stopped.height,
        "produce_s": round(produce_s, 2),
        "catch_up_s": round(catch_up_s, 2),
        "catch_up_speedup": round(produce_s / catch_up_s, 2),
        "catch_up_tx_per_s": round(txs / catch_up_s, 1),
        "catch_up_rpc_s": round(rpc_s, 2),
        "catch_up_peer_s": round(peer_s, 2),
        "catch_up_cpu_s": round(node_cpu_s, 2),
    }


def _wait_seen(watcher: BlockWatcher, height: int) -> None:
    """Until the watcher has seen `height` (it polls node0, which another node can be a moment ahead of)."""
    deadline = time.monotonic() + SEEN_TIMEOUT_S
    while watcher.height < height:
        if watcher.error is not None:
            raise AllianceError(f"watcher lost node0: {watcher.error}")
        if time.monotonic() > deadline:
            raise AllianceError(f"node0 did not reach height {height}, which another node had")
        time.sleep(0.01)
