"""One measured `alliance bench` run over started, connected nodes: sign, load, watch, drain, report.

Every transaction is signed before the clock starts; a forked load process sends them for the window while
a watcher thread here sees each block as node0 commits it, and the nodes' CPU time is read at both ends of
the window; a drain of at most DRAIN_S seconds then gives late transactions a latency.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import secrets
import time
from array import array
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from node.bench.catch_up import catch_up, stop_follower
from node.bench.join import join, snapshot_interval
from node.bench.consortium import check_alive, check_watching, metrics_url, status
from node.bench.load import HTTP_TIMEOUT_S, LoadPlan, LoadResult, load_process, make_batches
from node.bench.progress import progress
from node.bench.report import window_figures
from node.bench.settings import Settings
from node.bench.sign import presign
from node.bench.watch import BlockWatcher, SeenBlock, cpu_seconds, peak_rss_mb, view_changes
from node.cli.localnet import LocalNode
from node.errors import AllianceError
from node.keys import load_key

DRAIN_S = 10.0
START_DELAY_S = 0.2
STALL_S = 30.0  # --catch-up: no block for this long before the count is reached is an error


def measure(settings: Settings, home: Path, nodes: list[LocalNode], loads: list[BaseProcess],
            profiles: list[Path] | None) -> dict[str, Any]:
    """The report; the load process is appended to `loads` as soon as it is started, for the caller to end."""
    start = status(nodes[0])
    key = load_key(home / "client.key")
    count = settings.count

    started = time.monotonic()
    progress(f"signing {count} transactions with {settings.signers} process(es)")
    calls, hashes = presign(key, start["chain_id"], secrets.token_hex(4), count, settings.signers)
    batches = make_batches(calls, settings.batch)
    signing_s = time.monotonic() - started
    check_alive(nodes)

    stopped = stop_follower(nodes[settings.catch_up_node]) if settings.catch_up else None
    running = [n for n in nodes if stopped is None or n is not stopped.node]
    plan = LoadPlan(tuple(n.rpc_url for n in running), settings.rate, settings.batch, settings.connections,
                    settings.duration_s)
    context = multiprocessing.get_context("fork")  # the load process inherits the signed calls; no copy
    pipe, child_pipe = context.Pipe()
    load = context.Process(target=load_process, args=(child_pipe, plan, calls, batches), name="bench-load",
                           daemon=True)
    load.start()
    loads.append(load)
    child_pipe.close()
    del batches

    watcher = BlockWatcher(nodes[0].rpc_url, stopped.height if stopped else start["height"])
    watcher.start()
    t0 = time.monotonic() + START_DELAY_S
    pipe.send(("go", t0))
    rate_text = f"{settings.rate:g} tx/s" if settings.rate else "as fast as possible"
    until = f"until {count} are committed" if settings.catch_up else f"for {settings.duration_s:g} s"
    progress(f"load: {rate_text} {until}, batches of {settings.batch}, {settings.connections} connection(s) per node")
    time.sleep(max(0.0, t0 - time.monotonic()))
    pids = [n.process.pid for n in running if n.process] + [os.getpid()]
    cpu_start = [cpu_seconds(pid) for pid in pids]
    end = _run_window(running, watcher, load, pipe, t0, t0 + settings.duration_s, settings.catch_up)
    cpu = [b - a for a, b in zip(cpu_start, [cpu_seconds(pid) for pid in pids])]

    result = _load_result(pipe, load, running, watcher)
    caught_up = catch_up(stopped, running, watcher, end, profiles, settings.poll_s) if stopped else {}
    accepted_at = array("d")
    accepted_at.frombytes(result.accepted_at)
    _drain(nodes, watcher, hashes, accepted_at)
    watcher.stop()
    rss = [peak_rss_mb(n.process.pid) for n in nodes if n.process]
    rounds = [view_changes(metrics_url(n)) for n in nodes]

    report = window_figures(settings, plan, signing_s, result, watcher, hashes, accepted_at, t0, end)
    report["rss_peak_mb"] = [round(v, 1) for v in rss]
    report["view_changes"] = rounds
    node_cpu = dict(zip((n.index for n in running), cpu[:-1]))  # the stopped node used none in the window
    report["cpu_s"] = [round(node_cpu.get(n.index, 0.0), 2) for n in nodes]
    report["cpu_ms_per_tx"] = (round(1000 * sum(node_cpu.values()) / report["committed"], 3)
                               if report["committed"] else None)
    report["load_cpu_s"] = round(result.cpu_s, 2)
    report["watcher_cpu_s"] = round(cpu[-1], 2)
    report.update(caught_up)
    if stopped and settings.join:
        report.update(join(stopped.node, running, snapshot_interval(settings.count), settings.poll_s,
                           settings.join_runs))
    return report


def _check_running(nodes: list[LocalNode], watcher: BlockWatcher, load: BaseProcess, pipe: Connection) -> None:
    check_watching(nodes, watcher)
    if load.exitcode is not None and not pipe.poll(0):
        raise AllianceError(f"the load process exited with {load.exitcode} without a result")


def _run_window(nodes: list[LocalNode], watcher: BlockWatcher, load: BaseProcess, pipe: Connection,
                t0: float, end: float, until_txs: int | None) -> float:
    """Until `end`, or with `until_txs` until the block that brings the window's commits to that many.

    Returns the end of the window.
    """
    next_report = t0 + 1.0
    last_committed = 0
    while True:
        now = time.monotonic()
        if now >= end:
            return end
        _check_running(nodes, watcher, load, pipe)
        if until_txs is not None:
            reached = _block_reaching(list(watcher.blocks), t0, until_txs)
            if reached is not None:
                return math.nextafter(reached.seen_at, math.inf)  # just after it, so that the window holds it
            _check_not_stalled(watcher, t0, now)
        if now >= next_report:
            committed = sum(b.txs for b in list(watcher.blocks) if t0 <= b.seen_at < end)
            progress(f"{now - t0:5.1f} s  height {watcher.height}  committed {committed} "
                     f"({committed - last_committed} in the last second)")
            last_committed = committed
            next_report += 1.0
        time.sleep(min(0.1, max(0.0, end - now)))


def _block_reaching(blocks: list[SeenBlock], t0: float, count: int) -> SeenBlock | None:
    """The first block seen from `t0` on with which the transactions committed since then reach `count`."""
    committed = 0
    for block in blocks:
        if block.seen_at >= t0:
            committed += block.txs
            if committed >= count:
                return block
    return None


def _check_not_stalled(watcher: BlockWatcher, t0: float, now: float) -> None:
    last = watcher.blocks[-1].seen_at if watcher.blocks else t0
    if now - max(last, t0) > STALL_S:
        raise AllianceError(f"the chain committed no block for {STALL_S:g} s before the --catch-up count was "
                            f"reached (at height {watcher.height})")


def _load_result(pipe: Connection, load: BaseProcess, nodes: list[LocalNode], watcher: BlockWatcher) -> LoadResult:
    """The load process's answer, once its last requests are answered."""
    deadline = time.monotonic() + HTTP_TIMEOUT_S + 10
    while not pipe.poll(0.1):
        _check_running(nodes, watcher, load, pipe)
        if time.monotonic() > deadline:
            raise AllianceError("the load process did not finish its last requests in time")
    kind, payload = pipe.recv()
    if kind == "error":
        raise AllianceError(f"load: {payload}")
    result: LoadResult = payload
    return result


def _drain(nodes: list[LocalNode], watcher: BlockWatcher, hashes: list[bytes], accepted_at: array[float]) -> None:
    """Waits (at most DRAIN_S) until every accepted transaction is seen committed, for its latency."""
    waiting = [hashes[i] for i, t in enumerate(accepted_at) if not math.isnan(t)]
    deadline = time.monotonic() + DRAIN_S
    while waiting and time.monotonic() < deadline:
        check_watching(nodes, watcher)
        committed = watcher.committed_at
        waiting = [h for h in waiting if h not in committed]
        if waiting:
            time.sleep(0.1)
    if waiting:
        progress(f"{len(waiting)} accepted transaction(s) not committed {DRAIN_S:g} s after the load stopped")
