"""`alliance bench --join TXS`: after the catch-up run, the same node started from an empty data directory,
timed until it reaches the others' tip: by state sync (docs/operations.md section 10d), then by
blocks from the genesis; `--join-runs N` times the pair N times and reports the medians.

The nodes write a snapshot about twice over the chain the load makes (blocks of up to 1,000
transactions); once the others wrote that of their tip (rounded down), the node's data directory, safety file and mempool log are deleted (it signed nothing
during the load, so it cannot sign twice) and it is started with `[sync] state_sync` set.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from node.bench.consortium import check_alive, start_node, status, time_to_height
from node.bench.progress import progress
from node.cli.localnet import LocalNode, stop_nodes
from node.errors import AllianceError

BLOCK_TXS = 1000  # a testnet's [block] txs_max: the load fills its blocks
JOIN_TIMEOUT_S = 1800.0
SNAPSHOT_TIMEOUT_S = 300.0


def snapshot_interval(txs: int) -> int:
    """Blocks between snapshots for a load of `txs`: two snapshots over the chain it makes."""
    return max(5, txs // BLOCK_TXS // 2)


def with_snapshots(home: Path, nodes: int, interval: int) -> None:
    """Makes every node of the testnet in `home` write a snapshot every `interval` blocks."""
    for i in range(nodes):
        path = home / f"node{i}" / "node.toml"
        text = path.read_text()
        if "[snapshot]" not in text:
            path.write_text(text + f"\n[snapshot]\ninterval_blocks = {interval}\n")


def join(node: LocalNode, others: list[LocalNode], interval: int, poll_s: float, runs: int = 1) -> dict[str, Any]:
    """Times `node` from an empty data directory to the others' tip, by state sync, then by blocks, `runs`
    times in turn; the median of each, and each run's figures."""
    stop_nodes([node])
    snapshot = _wait_snapshots(others, interval)
    target = max(status(n)["height"] for n in others)
    config = node.home / "node.toml"
    original = config.read_text()
    figures: dict[str, Any] = {"join_height": target, "join_snapshot_height": snapshot}
    times: dict[str, list[float]] = {}
    try:
        for run in range(runs):
            for mode, state_sync in (("state_sync", True), ("block_sync", False)):
                _empty(node)
                config.write_text(original + f"\n[sync]\nstate_sync = {'true' if state_sync else 'false'}\n")
                started = time.monotonic()
                start_node(node, None)
                reached = time_to_height(node, target, started, poll_s, JOIN_TIMEOUT_S, f"did not reach height {target}")
                sync = reached.status["sync"]
                if state_sync or run < runs - 1:
                    stop_nodes([node])  # the last block-sync run is left running, as the others are
                progress(f"node{node.index} joined by {mode.replace('_', ' ')} in {reached.height_s:.2f} s "
                         f"({sync['state_sync']})")
                if state_sync and sync["mode"] != "state":
                    raise AllianceError(f"node{node.index} did not state-sync: {sync['state_sync']}")
                times.setdefault(f"join_{mode}_s", []).append(round(reached.height_s, 2))
                times.setdefault(f"join_{mode}_rpc_s", []).append(round(reached.rpc_s, 2))
    finally:
        config.write_text(original)
    for name, values in times.items():
        figures[name] = statistics.median(values)
        if runs > 1:
            figures[name.removesuffix("_s") + "_runs_s"] = values
    return figures


def _wait_snapshots(others: list[LocalNode], interval: int) -> int:
    """The height of the snapshot of the others' tip (rounded down), once each has written it."""
    tip = int(max(status(n)["height"] for n in others))
    height = tip // interval * interval
    if height == 0:
        raise AllianceError(f"the chain is {tip} blocks long, below the {interval} of a snapshot: "
                            "send more transactions")
    deadline = time.monotonic() + SNAPSHOT_TIMEOUT_S
    while not all((n.home / "data.snapshots" / str(height) / "manifest").exists() for n in others):
        check_alive(others)
        if time.monotonic() > deadline:
            raise AllianceError(f"the nodes did not write their snapshot of height {height} within "
                                f"{SNAPSHOT_TIMEOUT_S:g} s")
        time.sleep(0.1)
    return height


def _empty(node: LocalNode) -> None:
    """Deletes the node's store and what lies beside it, as on a new machine."""
    for name in ("data", "data.txlog", "data.snapshots"):
        shutil.rmtree(node.home / name, ignore_errors=True)
    for name in ("data.safety", "data.corrupt"):
        (node.home / name).unlink(missing_ok=True)
