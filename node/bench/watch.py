"""What `alliance bench` measures: commits seen from the blocks, and the nodes' CPU and memory from /proc."""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from node.client import Client, NodeUnreachable

STOP_CHECK_S = 0.1
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class SeenBlock:
    height: int
    seen_at: float  # monotonic time the watcher first saw the height
    txs: int


class BlockWatcher(threading.Thread):
    """Follows one node's blocks over its WebSocket event stream (docs/events.md).

    `committed_at` maps a transaction hash to the time its block's notification
    arrived, which stands for the commit time. The node pushes each block as it
    commits it, so the measurement costs the node one small message per block
    instead of a poll every few milliseconds. A height the stream skipped (none
    should be) is fetched with get_block.
    """

    def __init__(self, url: str, start_height: int) -> None:
        super().__init__(name="bench-watcher", daemon=True)
        self._client = Client(url, timeout_s=30)
        self._stream = self._client.blocks()  # subscribed before the load starts: no block is missed
        self.height = start_height
        self.blocks: list[SeenBlock] = []
        self.committed_at: dict[bytes, float] = {}
        self.error: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                try:
                    block = self._stream.next_event(STOP_CHECK_S)
                except TimeoutError:
                    continue
                seen_at = time.monotonic()
                for h in range(self.height + 1, block.height):
                    self._record(h, self._client.call("get_block", height=h)["txs"], seen_at)
                if block.height > self.height:
                    self._record(block.height, block.txs, seen_at)
        except NodeUnreachable as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported by the bench as one line
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._stream.close()
            self._client.close()

    def _record(self, height: int, txs: Sequence[str], seen_at: float) -> None:
        for tx_hash in txs:
            self.committed_at[bytes.fromhex(tx_hash)] = seen_at
        self.blocks.append(SeenBlock(height, seen_at, len(txs)))
        self.height = height

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=35)


def view_changes(metrics_url: str) -> int | None:
    """The node's alliance_consensus_view_changes_total (summed over its reasons), from its /metrics; None if it does not answer."""
    try:
        with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    counts = [float(line.split()[-1]) for line in text.splitlines()
              if line.startswith(("alliance_consensus_view_changes_total ", "alliance_consensus_view_changes_total{"))]
    return int(sum(counts)) if counts else None


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100) of an ascending list; None when it is empty."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil(n * p / 100)
    return sorted_values[int(rank) - 1]
