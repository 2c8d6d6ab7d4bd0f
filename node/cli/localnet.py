"""`alliance localnet`: a testnet run as separate processes, with a live view and optional load."""

from __future__ import annotations

import argparse
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from node.cli.setup import DEFAULT_CHAIN_ID, node_ports, write_testnet
from node.client import Client, NodeUnreachable, RpcError
from node.errors import AllianceError
from node.keys import load_key
from node.tx import sign_tx

STARTUP_TIMEOUT_S = 30.0


@dataclass
class LocalNode:
    index: int
    home: Path
    rpc_url: str
    process: subprocess.Popen[bytes] | None = None
    log_file: Any = None


@dataclass
class LoadStats:
    sent: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)


def prepare_home(home: Path, nodes: int, base_port: int, fresh: bool) -> None:
    if fresh and home.exists():
        if not (home / "genesis.toml").exists():
            raise AllianceError(f"--fresh refuses to delete {home}: it does not look like a localnet home")
        shutil.rmtree(home)
    if not (home / "genesis.toml").exists():
        write_testnet(home, nodes, DEFAULT_CHAIN_ID, base_port)
    missing = [i for i in range(nodes) if not (home / f"node{i}" / "node.toml").exists()]
    if missing:
        raise AllianceError(f"{home} holds a testnet with fewer than {nodes} nodes; use --fresh or another --home")


def local_nodes(home: Path, nodes: int, base_port: int) -> list[LocalNode]:
    return [LocalNode(i, home / f"node{i}", f"http://127.0.0.1:{node_ports(base_port, i)[0]}") for i in range(nodes)]


def start_process(node: LocalNode, *run_args: str) -> None:
    """Starts (or restarts) the node's `alliance run` process, appending to its node.log."""
    node.log_file = (node.home / "node.log").open("ab")
    node.process = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "run", "--home", str(node.home), *run_args],
        stdout=node.log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )


def start_nodes(home: Path, nodes: int, base_port: int) -> list[LocalNode]:
    started = local_nodes(home, nodes, base_port)
    for node in started:
        start_process(node)
    return started


def check_alive(nodes: list[LocalNode], during: str = "") -> None:
    """A clear error for a node whose process has ended."""
    for node in nodes:
        assert node.process is not None
        if node.process.poll() is not None:
            raise AllianceError(f"node{node.index} exited with {node.process.returncode}{during}; "
                                f"see {node.home}/node.log")


def wait_ready(nodes: list[LocalNode]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    for node in nodes:
        while True:
            assert node.process is not None
            if node.process.poll() is not None:
                raise AllianceError(f"node{node.index} exited with {node.process.returncode}; see {node.home}/node.log")
            try:
                Client(node.rpc_url, timeout_s=2).status()
                break
            except NodeUnreachable:
                if time.monotonic() > deadline:
                    raise AllianceError(f"node{node.index} did not answer within {STARTUP_TIMEOUT_S:.0f} s") from None
                time.sleep(0.1)


def stop_nodes(nodes: list[LocalNode]) -> None:
    for node in nodes:
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    for node in nodes:
        if node.process is not None:
            try:
                node.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        if node.log_file is not None:
            node.log_file.close()


def run_load(url: str, key: SigningKey, rate: float, stop: threading.Event, stats: LoadStats) -> None:
    """Sends kv puts at about `rate` per second in small batches until `stop` is set."""
    client = Client(url)
    chain_id = client.status()["chain_id"]
    batch_s = 0.1
    per_batch = max(1, round(rate * batch_s))
    while not stop.is_set():
        started = time.monotonic()
        txs = [
            sign_tx(key, chain_id, "kv", "put", {"key": f"demo/{secrets.token_hex(8)}", "value": b"hello"},
                    secrets.randbits(64))
            for _ in range(per_batch)
        ]
        try:
            results = client.batch([("send_tx", {"tx": tx.raw.hex()}) for tx in txs])
        except NodeUnreachable as exc:
            stats.errors.append(str(exc))
            stop.wait(1.0)
            continue
        stats.refused += sum(isinstance(r, RpcError) for r in results)
        stats.sent += len(results)
        stop.wait(max(0.0, batch_s - (time.monotonic() - started)))


def _view_line(nodes: list[LocalNode], last: dict[int, tuple[float, int]]) -> str:
    parts = []
    for node in nodes:
        try:
            s = Client(node.rpc_url, timeout_s=2).status()
        except NodeUnreachable:
            parts.append(f"node{node.index}: down")
            continue
        now, height = time.monotonic(), s["height"]
        tx_rate = _tx_rate(node, height, last.get(node.index), now)
        last[node.index] = (now, height)
        connected = sum(p["connected"] for p in s["peers"])
        parts.append(f"node{node.index}: h={height} view={s['view']} peers={connected}/{len(s['peers'])} {tx_rate}")
    return " | ".join(parts)


def _tx_rate(node: LocalNode, height: int, previous: tuple[float, int] | None, now: float) -> str:
    if previous is None or previous[1] == height:
        return "0 tx/s" if previous else ""
    client = Client(node.rpc_url, timeout_s=2)
    txs = 0
    for h in range(previous[1] + 1, height + 1):
        txs += len(client.call("get_block", height=h)["txs"])
    return f"{txs / (now - previous[0]):.0f} tx/s"


def cmd_localnet(args: argparse.Namespace) -> None:
    home = Path(args.home)
    prepare_home(home, args.nodes, args.base_port, args.fresh)
    nodes = start_nodes(home, args.nodes, args.base_port)
    stop = threading.Event()
    stats = LoadStats()
    try:
        wait_ready(nodes)
        print(f"localnet: {args.nodes} node(s) in {home}; RPC {nodes[0].rpc_url}; Ctrl-C stops them all")
        print(f"  try: alliance tx put hello world --key {home / 'client.key'} --rpc {nodes[0].rpc_url}")
        if args.load > 0:
            key = load_key(home / "client.key")
            threading.Thread(target=run_load, args=(nodes[0].rpc_url, key, args.load, stop, stats),
                             daemon=True).start()
        _live_view(nodes, args.duration, stats)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        stop_nodes(nodes)
    print(f"localnet stopped; logs in {home}/node*/node.log")


def _live_view(nodes: list[LocalNode], duration_s: float | None, stats: LoadStats) -> None:
    deadline = None if duration_s is None else time.monotonic() + duration_s
    last: dict[int, tuple[float, int]] = {}
    tty = sys.stdout.isatty()
    while deadline is None or time.monotonic() < deadline:
        check_alive(nodes)
        line = _view_line(nodes, last)
        if stats.sent:
            line += f" | load sent={stats.sent} refused={stats.refused}"
        print(("\r\033[K" if tty else "") + line, end="" if tty else "\n", flush=True)
        time.sleep(1.0)
    if tty:
        print()
