"""The live view of `alliance localnet`: one row per node, from each node's /metrics, once a second.

Rates come from the nodes' counters (alliance_txs_committed_total, alliance_chain_height), so a frame
costs one small GET per node whatever the load; a node that does not answer within a fraction of a
second is shown as such and the view goes on. On a terminal the table is redrawn in place, clipped to
its width; otherwise each frame is printed as plain lines of at most 80 columns.
"""

from __future__ import annotations

import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TextIO

from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT_S = 0.8  # under the 1 s frame, so that a stopped node does not hold up the others
METRICS_MAX_BYTES = 1 << 20
WIDTH = 80
HEADER = f"{'node':<8}{'height':>8}{'view':>6}{'peers':>7}{'mempool':>9}{'tx/s':>8}{'blocks/s':>10}"

HEIGHT = "alliance_chain_height"
COMMITTED = "alliance_txs_committed_total"
VIEW = "alliance_consensus_view"
PEERS = "alliance_peers_connected"
MEMPOOL = "alliance_mempool_txs"

# Proxy settings in the environment are ignored: the nodes are on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Sample:
    at: float
    values: dict[str, float]


def scrape(metrics_url: str) -> Sample | None:
    """The unlabelled series of one node's /metrics, or None if it does not answer in time."""
    try:
        with _OPENER.open(metrics_url + "/metrics", timeout=SCRAPE_TIMEOUT_S) as response:
            text = response.read(METRICS_MAX_BYTES).decode()
        values = {s.name: s.value for family in text_string_to_metric_families(text)
                  for s in family.samples if not s.labels}
    except (OSError, ValueError):  # refused, timed out, or not the Prometheus text format
        return None
    return Sample(time.monotonic(), values)


def _count(sample: Sample, name: str) -> str:
    value = sample.values.get(name)
    return "-" if value is None else f"{value:.0f}"


def _rate(now: Sample, before: Sample | None, name: str, digits: int) -> str:
    if before is None or name not in now.values or name not in before.values or now.at <= before.at:
        return "-"
    delta = now.values[name] - before.values[name]
    return "-" if delta < 0 else f"{delta / (now.at - before.at):.{digits}f}"


def node_row(name: str, now: Sample, before: Sample | None, peers_total: int) -> str:
    return (f"{name:<8}{_count(now, HEIGHT):>8}{_count(now, VIEW):>6}"
            f"{_count(now, PEERS) + '/' + str(peers_total):>7}{_count(now, MEMPOOL):>9}"
            f"{_rate(now, before, COMMITTED, 0):>8}{_rate(now, before, HEIGHT, 1):>10}")


class LiveView:
    """Scrapes the nodes in parallel and writes one frame of rows per call of `frame`."""

    def __init__(self, names: list[str], metrics_urls: list[str], out: TextIO) -> None:
        self.names = names
        self.urls = metrics_urls
        self.out = out
        self.tty = out.isatty()
        self.last: dict[str, Sample] = {}
        self.drawn = 0
        self.last_frame_s = 0.0
        self._pool = ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="scrape")

    def __enter__(self) -> LiveView:
        self._write([HEADER])
        self.drawn = 0
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def frame(self, exited: dict[str, int], load: str | None) -> None:
        """One frame: a row per node ("no answer", or its exit status, where it has one) and the load."""
        started = time.monotonic()
        rows = []
        for name, sample in zip(self.names, self._pool.map(scrape, self.urls)):
            if name in exited:
                rows.append(f"{name:<8}exited with status {exited[name]}; see {name}/node.log")
            elif sample is None:
                rows.append(f"{name:<8}no answer")
            else:
                rows.append(node_row(name, sample, self.last.get(name), len(self.names) - 1))
                self.last[name] = sample
        if load is not None:
            rows.append(load)
        if self.tty and self.drawn:
            self.out.write(f"\033[{self.drawn}F")  # back to the first row of the previous frame
        self._write(rows)
        self.drawn = len(rows)
        self.last_frame_s = time.monotonic() - started

    def _write(self, rows: list[str]) -> None:
        width = min(WIDTH, _columns(self.out)) if self.tty else WIDTH
        erase = "\033[K" if self.tty else ""
        self.out.write("".join(row[:width] + erase + "\n" for row in rows))
        self.out.flush()


def _columns(out: TextIO) -> int:
    """The width of the terminal written to (not $COLUMNS, which may be another's)."""
    try:
        return os.get_terminal_size(out.fileno()).columns or WIDTH
    except OSError:
        return WIDTH
