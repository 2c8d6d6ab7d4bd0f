"""`alliance bench`: a local consortium of real processes under a measured load; one JSON object at the end.

The order of things (docs/performance.md says what each figure means):

1. a testnet in a temporary directory (or --home), its nodes started as `alliance run` processes
   (with `--profile` when asked), and a wait until every node is connected to all its peers;
2. every transaction signed and encoded into ready JSON-RPC batch bodies, before the clock starts;
3. a forked load process sends them for --duration seconds, while a watcher thread here sees each block
   as it is committed on node0 and reads the nodes' CPU time at both ends of the window;
4. a drain of at most measurement.DRAIN_S seconds so that late transactions still get a latency;
5. the nodes stopped with SIGTERM, their profiles summarised, the figures printed.

With --catch-up TXS, node1 is stopped before step 3, the load (over the other nodes) is exactly TXS
transactions and the window ends with the block that commits the last of them; node1 is then restarted and
timed until it reaches the height the others had at its restart. --join TXS does the same, the nodes
writing snapshots, then times node1 joining from an empty data directory by state sync and by blocks.

The steps are in node/bench/: consortium (the nodes), measurement (steps 2 to 4), catch_up, report (the
figures) and profile; this module checks the flags and runs them in order.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from multiprocessing.process import BaseProcess
from pathlib import Path

from consensus.quorum import quorum
from node.bench.consortium import check_alive, check_clean_exit, start_nodes, wait_connected
from node.bench.join import snapshot_interval, with_snapshots
from node.bench.measurement import measure
from node.bench.profile import profile_paths, summarise_profiles
from node.bench.report import history_index_cost
from node.bench.progress import progress
from node.bench.settings import Settings
from node.cli.localnet import LocalNode, prepare_home, stop_nodes, wait_ready
from node.cli.setup import check_ports_free
from node.errors import AllianceError

DEFAULT_BASE_PORT = 28600  # below Linux's ephemeral ports (32768+), clear of the 26600 of testnet and localnet
DEFAULT_DURATION_S = 10.0
# tx/s pre-signed for "as fast as possible", above what 2 cores can commit: four nodes, and one alone
RATE_CEILING = 8000
RATE_CEILING_ONE_NODE = 16000
BATCH_FAST = 100  # transactions per request when sending as fast as possible
BATCH_INTERVAL_S = 0.02  # at a fixed rate, a batch every 20 ms (of rate * 0.02 transactions)
BATCH_MAX = 1000  # 1000 calls are about 450 KB, under the node's 1 MiB body limit
CATCH_UP_NODE = 1  # dials every later node itself, so its restart does not wait for the others' reconnection back-off


def _check_args(args: argparse.Namespace) -> None:
    if args.nodes < 1:
        raise AllianceError("--nodes must be at least 1")
    if args.join is not None:
        if args.catch_up is not None:
            raise AllianceError("--join includes the catch-up run: give --join TXS or --catch-up TXS, not both")
        args.catch_up = args.join
        if args.join_runs < 1:
            raise AllianceError("--join-runs must be at least 1")
    elif args.join_runs != 1:
        raise AllianceError("--join-runs goes with --join TXS")
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


def _settings(args: argparse.Namespace) -> Settings:
    """The checked flags; with --catch-up the window has no fixed length."""
    return Settings(
        nodes=args.nodes,
        rate=float(args.rate),
        duration_s=math.inf if args.catch_up else float(args.duration),
        catch_up=args.catch_up,
        catch_up_node=CATCH_UP_NODE,
        join=args.join is not None,
        join_runs=args.join_runs,
        count=_tx_count(args),
        batch=_batch_size(args),
        connections=args.connections,
        signers=args.signers or os.cpu_count() or 1,
        poll_s=args.poll_ms / 1000,
    )


def _batch_size(args: argparse.Namespace) -> int:
    if args.batch is not None:
        return int(args.batch)
    if args.rate > 0:
        return max(1, min(BATCH_MAX, round(float(args.rate) * BATCH_INTERVAL_S)))
    return BATCH_FAST


def _tx_count(args: argparse.Namespace) -> int:
    if args.catch_up is not None:
        return int(args.catch_up)
    ceiling = RATE_CEILING_ONE_NODE if args.nodes == 1 else RATE_CEILING
    wanted = math.ceil(float(args.rate or ceiling) * float(args.duration))
    return min(wanted, int(args.txs)) if args.txs is not None else wanted


def cmd_bench(args: argparse.Namespace) -> None:
    _check_args(args)
    settings = _settings(args)
    check_ports_free(args.base_port, args.nodes)
    temporary = args.home is None
    home = Path(tempfile.mkdtemp(prefix="alliance-bench-")) if temporary else Path(args.home)
    nodes: list[LocalNode] = []
    loads: list[BaseProcess] = []
    keep_home = not temporary
    try:
        prepare_home(home, args.nodes, args.base_port, args.fresh)
        if args.join is not None:
            with_snapshots(home, args.nodes, snapshot_interval(args.join))
        profiles = profile_paths(args.profile, args.nodes)
        nodes = start_nodes(home, args.nodes, args.base_port, profiles)
        wait_ready(nodes)
        wait_connected(nodes)
        progress(f"{args.nodes} node(s) up and connected in {home}")
        report = measure(settings, home, nodes, loads, profiles)
        check_alive(nodes)
        stop_nodes(nodes)
        check_clean_exit(nodes)
        report["history_index"] = history_index_cost(home / "node0" / "data")
        if profiles:
            report["profiles"] = [str(p) for p in profiles]
            summarise_profiles(profiles, args.profile_sort, args.profile_top)
        print(json.dumps(report))
    except AllianceError:
        if nodes:
            keep_home = True  # the message points at the node logs in it
            if temporary:
                progress(f"kept {home} for its node logs")
        raise
    finally:
        for load in loads:
            if load.is_alive():
                load.terminate()
                load.join(timeout=5)
        stop_nodes(nodes)
        if not keep_home:
            shutil.rmtree(home, ignore_errors=True)
