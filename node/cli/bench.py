"""`alliance bench`: a local consortium of real processes under a measured load; one JSON object at the end.

The order of things (docs/performance.md says what each figure means):

1. a testnet in a temporary directory (or --home), its nodes started as `alliance run` processes
   (with `--profile` when asked), and a wait until every node is connected to all its peers;
2. every transaction signed and encoded into ready JSON-RPC batch bodies, before the clock starts;
3. a forked load process sends them for --duration seconds, while a watcher thread here sees each block
   as it is committed on node0 and reads the nodes' CPU time at both ends of the window;
4. a drain of at most DRAIN_S seconds so that late transactions still get a latency;
5. the nodes stopped with SIGTERM, their profiles summarised, the figures printed.

With --catch-up TXS, node1 is stopped before step 3, the load (over the other nodes) is exactly TXS
transactions and the window ends with the block that commits the last of them; node1 is then restarted and
timed until it reaches the height the others had at its restart.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import pstats
import secrets
import shutil
import signal
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from consensus.quorum import quorum
from node.bench.load import HTTP_TIMEOUT_S, LoadPlan, LoadResult, load_process, make_batches
from node.bench.sign import presign
from node.bench.watch import BlockWatcher, SeenBlock, cpu_seconds, peak_rss_mb, percentile, view_changes
from node.cli.localnet import (
    LocalNode, check_alive, local_nodes, prepare_home, start_process, stop_nodes, wait_ready,
)
from node.cli.setup import check_ports_free, node_ports
from node.client import Client, NodeUnreachable
from node.config import load_config
from node.errors import AllianceError
from node.keys import load_key

DEFAULT_BASE_PORT = 28600  # below Linux's ephemeral ports (32768+), clear of the 26600 of testnet and localnet
DEFAULT_DURATION_S = 10.0
RATE_CEILING = 8000  # tx/s pre-signed for "as fast as possible", above what 2 cores can commit
BATCH_FAST = 100  # transactions per request when sending as fast as possible
BATCH_INTERVAL_S = 0.02  # at a fixed rate, a batch every 20 ms (of rate * 0.02 transactions)
BATCH_MAX = 1000  # 1000 calls are about 450 KB, under the node's 1 MiB body limit
CONNECTED_TIMEOUT_S = 30.0
DRAIN_S = 10.0
START_DELAY_S = 0.2
CATCH_UP_NODE = 1  # dials every later node itself, so its restart does not wait for the others' reconnection back-off
STALL_S = 30.0  # --catch-up: no block for this long before the count is reached is an error
CATCH_UP_TIMEOUT_S = 300.0
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2]) + os.sep


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _check_args(args: argparse.Namespace) -> None:
    if args.nodes < 1:
        raise AllianceError("--nodes must be at least 1")
    if args.catch_up is not None:
        _check_catch_up_args(args)
    elif args.duration is None:  # None in the parser so that --catch-up can refuse an explicit --duration
        args.duration = DEFAULT_DURATION_S
    elif not args.duration > 0:
        raise AllianceError("--duration must be more than 0 seconds")
    if not args.rate >= 0 or math.isinf(args.rate):
        raise AllianceError("--rate must be a number of transactions per second (0: as fast as possible)")
    if args.batch is not None and not 1 <= args.batch <= BATCH_MAX:
        raise AllianceError(f"--batch must be in 1..{BATCH_MAX}")
    if args.txs is not None and args.txs < 1:
        raise AllianceError("--txs must be at least 1")
    if args.connections < 1:
        raise AllianceError("--connections must be at least 1")
    if args.signers is not None and args.signers < 1:
        raise AllianceError("--signers must be at least 1")
    if not 1 <= args.poll_ms <= 1000:
        raise AllianceError("--poll-ms must be in 1..1000")
    if args.profile_top < 1:
        raise AllianceError("--profile-top must be at least 1")


def _check_catch_up_args(args: argparse.Namespace) -> None:
    if args.catch_up < 1:
        raise AllianceError("--catch-up must be at least 1 transaction")
    if args.nodes - 1 < quorum(args.nodes):
        raise AllianceError("--catch-up stops a node, so it needs a consortium that keeps a quorum without it: "
                            "at least 3 nodes")
    if args.duration is not None or args.txs is not None:
        raise AllianceError("--catch-up sends exactly TXS transactions and measures how long they take; "
                            "it takes no --duration or --txs")


def _start_nodes(home: Path, nodes: int, base_port: int, profiles: list[Path] | None) -> list[LocalNode]:
    """Starts each node with localnet.start_process, with `--profile FILE` when asked."""
    started = local_nodes(home, nodes, base_port)
    for node in started:
        _start_process(node, profiles[node.index] if profiles else None)
    return started


def _start_process(node: LocalNode, profile: Path | None) -> None:
    start_process(node, *(["--profile", str(profile)] if profile else []))


def _check_alive(nodes: list[LocalNode]) -> None:
    check_alive(nodes, " during the benchmark")


def _wait_connected(nodes: list[LocalNode]) -> None:
    """Until every node reports all its peers connected."""
    deadline = time.monotonic() + CONNECTED_TIMEOUT_S
    for node in nodes:
        client = Client(node.rpc_url, timeout_s=5)
        while True:
            _check_alive(nodes)
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


def _batch_size(args: argparse.Namespace) -> int:
    if args.batch is not None:
        return int(args.batch)
    if args.rate > 0:
        return max(1, min(BATCH_MAX, round(float(args.rate) * BATCH_INTERVAL_S)))
    return BATCH_FAST


def _tx_count(args: argparse.Namespace) -> int:
    if args.catch_up is not None:
        return int(args.catch_up)
    wanted = math.ceil(float(args.rate or RATE_CEILING) * float(args.duration))
    return min(wanted, int(args.txs)) if args.txs is not None else wanted


def cmd_bench(args: argparse.Namespace) -> None:
    _check_args(args)
    check_ports_free(args.base_port, args.nodes)
    temporary = args.home is None
    home = Path(tempfile.mkdtemp(prefix="alliance-bench-")) if temporary else Path(args.home)
    nodes: list[LocalNode] = []
    loads: list[BaseProcess] = []
    keep_home = not temporary
    try:
        prepare_home(home, args.nodes, args.base_port, args.fresh)
        profiles = _profile_paths(args)
        nodes = _start_nodes(home, args.nodes, args.base_port, profiles)
        wait_ready(nodes)
        _wait_connected(nodes)
        _progress(f"{args.nodes} node(s) up and connected in {home}")
        report = _measure(args, home, nodes, loads, profiles)
        _check_alive(nodes)
        stop_nodes(nodes)
        _check_clean_exit(nodes)
        if profiles:
            report["profiles"] = [str(p) for p in profiles]
            _summarise_profiles(profiles, args.profile_sort, args.profile_top)
        print(json.dumps(report))
    except AllianceError:
        if nodes:
            keep_home = True  # the message points at the node logs in it
            if temporary:
                _progress(f"kept {home} for its node logs")
        raise
    finally:
        for load in loads:
            if load.is_alive():
                load.terminate()
                load.join(timeout=5)
        stop_nodes(nodes)
        if not keep_home:
            shutil.rmtree(home, ignore_errors=True)


def _profile_paths(args: argparse.Namespace) -> list[Path] | None:
    if args.profile is None:
        return None
    directory = Path(args.profile).resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AllianceError(f"--profile {args.profile}: {exc.strerror}") from None
    paths = [directory / f"node{i}.pstats" for i in range(args.nodes)]
    for path in paths:
        path.unlink(missing_ok=True)  # so that a stale profile is never taken for this run's
    return paths


@dataclass(frozen=True)
class _Stopped:
    """--catch-up: the node stopped before the load, its height then, and when its process had exited."""
    node: LocalNode
    height: int
    at: float


def _status(node: LocalNode) -> dict[str, Any]:
    client = Client(node.rpc_url, timeout_s=10)
    try:
        return client.status()
    finally:
        client.close()


def _measure(args: argparse.Namespace, home: Path, nodes: list[LocalNode], loads: list[BaseProcess],
             profiles: list[Path] | None) -> dict[str, Any]:
    status = _status(nodes[0])
    key = load_key(home / "client.key")
    count = _tx_count(args)
    signers = args.signers or os.cpu_count() or 1
    batch = _batch_size(args)

    started = time.monotonic()
    _progress(f"signing {count} transactions with {signers} process(es)")
    calls, hashes = presign(key, status["chain_id"], secrets.token_hex(4), count, signers)
    batches = make_batches(calls, batch)
    signing_s = time.monotonic() - started
    _check_alive(nodes)

    stopped = _stop_follower(nodes[CATCH_UP_NODE]) if args.catch_up else None
    running = [n for n in nodes if stopped is None or n is not stopped.node]
    duration = math.inf if args.catch_up else float(args.duration)  # --catch-up: until the count is committed
    plan = LoadPlan(tuple(n.rpc_url for n in running), float(args.rate), batch, args.connections, duration)
    context = multiprocessing.get_context("fork")  # the load process inherits the signed calls; no copy
    pipe, child_pipe = context.Pipe()
    load = context.Process(target=load_process, args=(child_pipe, plan, calls, batches), name="bench-load",
                           daemon=True)
    load.start()
    loads.append(load)
    child_pipe.close()
    del batches

    watcher = BlockWatcher(nodes[0].rpc_url, stopped.height if stopped else status["height"])
    watcher.start()
    t0 = time.monotonic() + START_DELAY_S
    pipe.send(("go", t0))
    rate_text = f"{args.rate:g} tx/s" if args.rate else "as fast as possible"
    until = f"until {count} are committed" if args.catch_up else f"for {args.duration:g} s"
    _progress(f"load: {rate_text} {until}, batches of {batch}, {args.connections} connection(s) per node")
    time.sleep(max(0.0, t0 - time.monotonic()))
    pids = [n.process.pid for n in running if n.process] + [os.getpid()]
    cpu_start = [cpu_seconds(pid) for pid in pids]
    end = _run_window(running, watcher, load, pipe, t0, t0 + duration, args.catch_up)
    cpu = [b - a for a, b in zip(cpu_start, [cpu_seconds(pid) for pid in pids])]

    result = _load_result(pipe, load, running, watcher)
    catch_up = _catch_up(stopped, running, watcher, end, profiles, args.poll_ms / 1000) if stopped else {}
    accepted_at = array("d")
    accepted_at.frombytes(result.accepted_at)
    _drain(nodes, watcher, hashes, accepted_at)
    watcher.stop()
    rss = [peak_rss_mb(n.process.pid) for n in nodes if n.process]
    rounds = [view_changes(_metrics_url(n)) for n in nodes]

    report = _report(args, plan, count, signing_s, result, watcher, hashes, accepted_at, t0, end)
    report["rss_peak_mb"] = [round(v, 1) for v in rss]
    report["view_changes"] = rounds
    node_cpu = dict(zip((n.index for n in running), cpu[:-1]))  # the stopped node used none in the window
    report["cpu_s"] = [round(node_cpu.get(n.index, 0.0), 2) for n in nodes]
    report["cpu_ms_per_tx"] = (round(1000 * sum(node_cpu.values()) / report["committed"], 3)
                               if report["committed"] else None)
    report["load_cpu_s"] = round(result.cpu_s, 2)
    report["watcher_cpu_s"] = round(cpu[-1], 2)
    report.update(catch_up)
    return report


def _metrics_url(node: LocalNode) -> str:
    address = load_config(node.home).metrics_listen
    return f"http://{address.host}:{address.port}"


def _check_running(nodes: list[LocalNode], watcher: BlockWatcher, load: BaseProcess, pipe: Connection) -> None:
    _check_alive(nodes)
    if watcher.error is not None:
        raise AllianceError(f"watcher lost node0: {watcher.error}")
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
            _progress(f"{now - t0:5.1f} s  height {watcher.height}  committed {committed} "
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


# ---- --catch-up ----------------------------------------------------------------------------------


def _stop_follower(node: LocalNode) -> _Stopped:
    """Stops a node (SIGTERM) before the load starts; the chain is idle, so its height is final."""
    height = _status(node)["height"]
    stop_nodes([node])
    _progress(f"node{node.index} stopped at height {height}")
    return _Stopped(node, height, time.monotonic())


def _catch_up(stopped: _Stopped, others: list[LocalNode], watcher: BlockWatcher, produced_at: float,
              profiles: list[Path] | None, poll_s: float) -> dict[str, Any]:
    """Restarts the stopped node and times it until it reaches the height the others had at its restart."""
    node = stopped.node
    target = max(_status(n)["height"] for n in others)
    restarted = time.monotonic()
    _start_process(node, profiles[node.index] if profiles else None)
    _progress(f"node{node.index} restarted, {target - stopped.height} block(s) behind")
    rpc_s, peer_s, catch_up_s = _time_catch_up(node, target, restarted, poll_s)
    assert node.process is not None
    node_cpu_s = cpu_seconds(node.process.pid)
    _progress(f"node{node.index} reached height {target} {catch_up_s:.2f} s after its restart")
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


def _time_catch_up(node: LocalNode, target: int, restarted: float, poll_s: float) -> tuple[float, float, float]:
    """Seconds from the restart until the node's RPC answered, it had a peer connected, and its height was `target`."""
    client = Client(node.rpc_url, timeout_s=10)
    rpc_at: float | None = None
    peer_at: float | None = None
    try:
        while True:
            _check_alive([node])
            try:
                status = client.status()
            except NodeUnreachable:
                status = None
            now = time.monotonic()
            if status is not None:
                rpc_at = now if rpc_at is None else rpc_at
                if peer_at is None and any(p["connected"] for p in status["peers"]):
                    peer_at = now
                if status["height"] >= target:
                    return rpc_at - restarted, (peer_at or now) - restarted, now - restarted
            if now - restarted > CATCH_UP_TIMEOUT_S:
                raise AllianceError(f"node{node.index} did not catch up to height {target} within "
                                    f"{CATCH_UP_TIMEOUT_S:g} s of its restart; see {node.home}/node.log")
            time.sleep(poll_s)
    finally:
        client.close()


def _wait_seen(watcher: BlockWatcher, height: int) -> None:
    """Until the watcher has seen `height` (it polls node0, which another node can be a moment ahead of)."""
    deadline = time.monotonic() + DRAIN_S
    while watcher.height < height:
        if watcher.error is not None:
            raise AllianceError(f"watcher lost node0: {watcher.error}")
        if time.monotonic() > deadline:
            raise AllianceError(f"node0 did not reach height {height}, which another node had")
        time.sleep(0.01)


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
        _check_alive(nodes)
        if watcher.error is not None:
            raise AllianceError(f"watcher lost node0: {watcher.error}")
        committed = watcher.committed_at
        waiting = [h for h in waiting if h not in committed]
        if waiting:
            time.sleep(0.1)
    if waiting:
        _progress(f"{len(waiting)} accepted transaction(s) not committed {DRAIN_S:g} s after the load stopped")


def _report(args: argparse.Namespace, plan: LoadPlan, count: int, signing_s: float, result: LoadResult,
            watcher: BlockWatcher, hashes: list[bytes], accepted_at: array[float],
            t0: float, end: float) -> dict[str, Any]:
    window = [b for b in watcher.blocks if t0 <= b.seen_at < end]
    committed = sum(b.txs for b in window)
    duration = float(args.duration) if args.catch_up is None else end - t0
    latencies = sorted(
        1000 * (watcher.committed_at[h] - sent)
        for h, sent in zip(hashes, accepted_at)
        if not math.isnan(sent) and h in watcher.committed_at
    )

    def ms(p: float) -> float | None:
        value = percentile(latencies, p)
        return None if value is None else round(value, 1)

    return {
        "nodes": args.nodes,
        "duration_s": args.duration if args.catch_up is None else round(duration, 2),
        "offered_rate": args.rate or None,
        "batch": plan.batch,
        "connections": plan.connections_per_node * len(plan.urls),
        "presigned": count,
        "signing_s": round(signing_s, 2),
        "sent": result.sent,
        "accepted": result.accepted,
        "rejected": result.rejected,
        "rejected_codes": {str(code): n for code, n in sorted(result.rejected_codes.items())},
        "mempool_full": result.mempool_full,
        "retry_pending": result.retry_pending,
        "load_exhausted": (None if args.catch_up is not None  # it sends exactly TXS by design
                           else result.exhausted or (args.rate > 0 and count < args.rate * args.duration)),
        "committed": committed,
        "committed_tx_per_s": round(committed / duration, 1),
        "blocks": len(window),
        "txs_per_block": round(committed / len(window), 1) if window else 0.0,
        "latency_p50_ms": ms(50),
        "latency_p95_ms": ms(95),
        "latency_p99_ms": ms(99),
        "latency_samples": len(latencies),
        "uncommitted": result.accepted - len(latencies),
    }


def _check_clean_exit(nodes: list[LocalNode]) -> None:
    for node in nodes:
        if node.process is not None and node.process.returncode not in (0, -signal.SIGTERM):
            _progress(f"node{node.index} exited with {node.process.returncode} on SIGTERM; "
                      f"see {node.home}/node.log")


def _summarise_profiles(paths: list[Path], sort: str, top: int) -> None:
    for i, path in enumerate(paths):
        if not path.exists():
            _progress(f"node{i} wrote no profile to {path}")
            continue
        stats = pstats.Stats(str(path))
        rows = sorted(stats.stats.items(),  # type: ignore[attr-defined]
                      key=lambda item: item[1][2 if sort == "tottime" else 3], reverse=True)[:top]
        total = stats.total_tt  # type: ignore[attr-defined]
        print(f"\nnode{i} profile: {path} ({total:.1f} s in the event-loop thread; top {top} by {sort})",
              file=sys.stderr)
        print(f"{'tottime':>9} {'cumtime':>9} {'calls':>10}  function", file=sys.stderr)
        for (filename, line, function), (_, calls, tottime, cumtime, _) in rows:
            print(f"{tottime:9.2f} {cumtime:9.2f} {calls:10d}  {_short(filename)}:{line}({function})",
                  file=sys.stderr)
    print(file=sys.stderr)


def _short(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1]
    return filename[len(_SOURCE_ROOT):] if filename.startswith(_SOURCE_ROOT) else filename
