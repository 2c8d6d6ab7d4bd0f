"""`alliance localnet`: a testnet run as separate processes, with a live view and optional load."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from node.chain.tx import sign_tx
from node.cli.live_view import LiveView
from node.cli.setup import DEFAULT_CHAIN_ID, check_ports_free, node_ports, write_testnet
from node.client import Client, NodeUnreachable, RpcError
from node.errors import AllianceError
from node.keys import load_key

STARTUP_TIMEOUT_S = 30.0
ERROR_LINE = re.compile(r"alliance: error:|\blevel=(error|critical)\b")  # a refusal to start, an error logged
LOG_TAIL_BYTES = 64 * 1024  # how much of the end of a node.log is searched for its last error


@dataclass
class LocalNode:
    index: int
    home: Path
    rpc_url: str
    metrics_url: str
    process: subprocess.Popen[bytes] | None = None
    log_file: Any = None
    log_start: int = 0  # where this run's lines begin in node.log

    def exited(self, during: str = "") -> str:
        """Why the process ended, in one line: its status and the last error it logged."""
        assert self.process is not None
        error = self.last_error()
        return (f"node{self.index} exited with {self.process.returncode}{during}{': ' + error if error else ''}; "
                f"see {self.home}/node.log")

    def last_error(self) -> str:
        try:
            with (self.home / "node.log").open("rb") as log:
                log.seek(max(self.log_start, log.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
                lines = log.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [line for line in lines if ERROR_LINE.search(line)]
        return errors[-1].strip()[:300] if errors else ""


@dataclass
class LoadStats:
    rate: float
    sent: int = 0
    refused: int = 0
    failures: int = 0
    last_failure: str = ""

    def summary(self) -> str:
        text = f"load    {self.rate:g} tx/s offered: {self.sent} sent, {self.refused} refused"
        return text + (f", {self.failures} failed ({self.last_failure})" if self.failures else "")


class Stopped(Exception):
    """A signal or the end of the parent process: stop every node and exit."""


class StopRequest:
    """SIGINT, SIGTERM and SIGHUP (a closed terminal) are noted here and acted on where the loops check:
    an exception raised by a signal handler at any instant could leave a lock held, and the exit hang."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.why = ""

    def __call__(self, signum: int, _frame: Any) -> None:
        self.why = self.why or ("on Ctrl-C" if signum == signal.SIGINT else f"on {signal.Signals(signum).name}")
        self.event.set()

    def check(self) -> None:
        if self.event.is_set():
            raise Stopped(self.why)

    def sleep(self, seconds: float) -> None:
        """Sleeps, and raises Stopped as soon as a stop is asked for."""
        self.event.wait(seconds)
        self.check()


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
    made = []
    for i in range(nodes):
        rpc, _, metrics = node_ports(base_port, i)
        made.append(LocalNode(i, home / f"node{i}", f"http://127.0.0.1:{rpc}", f"http://127.0.0.1:{metrics}"))
    return made


def start_process(node: LocalNode, *run_args: str) -> None:
    """Starts (or restarts) the node's `alliance run` process, appending to its node.log.

    The node runs in a session of its own (a Ctrl-C meant for the tool does not reach it half-way)
    and ends with this process, however this one ends (node/cli/child.py).
    """
    node.log_file = (node.home / "node.log").open("ab")
    node.log_start = node.log_file.tell()
    node.process = subprocess.Popen(
        [sys.executable, "-m", "node.cli.child", str(os.getpid()), "run", "--home", str(node.home), *run_args],
        stdout=node.log_file, stderr=subprocess.STDOUT, start_new_session=True,
    )


def check_alive(nodes: list[LocalNode], during: str = "") -> None:
    """A clear error for a node whose process has ended."""
    for node in nodes:
        assert node.process is not None
        if node.process.poll() is not None:
            raise AllianceError(node.exited(during))


def wait_ready(nodes: list[LocalNode], stopping: StopRequest | None = None) -> None:
    stopping = stopping or StopRequest()  # none given: no signal is noted, and it only sleeps
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    for node in nodes:
        while True:
            assert node.process is not None
            if node.process.poll() is not None:
                raise AllianceError(node.exited())
            try:
                Client(node.rpc_url, timeout_s=2).status()
                break
            except NodeUnreachable:
                if time.monotonic() > deadline:
                    raise AllianceError(f"node{node.index} did not answer within {STARTUP_TIMEOUT_S:.0f} s") from None
                stopping.sleep(0.1)


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


def run_load(url: str, key: SigningKey, stop: threading.Event, stats: LoadStats) -> None:
    """Sends kv puts at about `stats.rate` per second in small batches until `stop` is set."""
    client = Client(url, timeout_s=10)
    batch_s = 0.1
    per_batch = max(1, round(stats.rate * batch_s))
    chain_id = None
    while not stop.is_set():
        started = time.monotonic()
        try:
            chain_id = chain_id or client.status()["chain_id"]
            txs = [
                sign_tx(key, chain_id, "kv", "put", {"key": f"demo/{secrets.token_hex(8)}", "value": b"hello"},
                        secrets.randbits(64))
                for _ in range(per_batch)
            ]
            results = client.batch([("send_tx", {"tx": tx.raw.hex()}) for tx in txs])
        except AllianceError as exc:  # unreachable, no answer in time, a bad answer: say so and retry
            stats.failures += 1
            stats.last_failure = str(exc)
            stop.wait(1.0)
            continue
        stats.refused += sum(isinstance(r, RpcError) for r in results)
        stats.sent += len(results)
        stop.wait(max(0.0, batch_s - (time.monotonic() - started)))


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    request = StopRequest()
    previous = {sig: signal.signal(sig, request) for sig in SIGNALS}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_localnet(args: argparse.Namespace) -> None:
    home = Path(args.home)
    check_ports_free(args.base_port, args.nodes)
    prepare_home(home, args.nodes, args.base_port, args.fresh)
    parent = os.getppid()
    nodes = local_nodes(home, args.nodes, args.base_port)
    stop = threading.Event()
    outcome = ""
    with stop_on_signals() as stopping:
        try:
            for node in nodes:
                start_process(node)
            wait_ready(nodes, stopping)
            _introduce(home, nodes)
            stats = LoadStats(args.load)
            if args.load > 0:
                key = load_key(home / "client.key")
                threading.Thread(target=run_load, args=(nodes[0].rpc_url, key, stop, stats), daemon=True).start()
            _live_view(nodes, args.duration, stats if args.load > 0 else None, parent, stopping)
        except Stopped as exc:
            outcome = f" {exc}"
        finally:
            stop.set()
            stop_nodes(nodes)  # a second signal is noted and changes nothing: the stopping is not cut short
    with contextlib.suppress(OSError):  # the terminal may be gone
        print(f"localnet stopped{outcome}; logs in {home}/node*/node.log", flush=True)


def _introduce(home: Path, nodes: list[LocalNode]) -> None:
    print(f"localnet: {len(nodes)} node(s) in {home}; Ctrl-C stops them all")
    print("in another terminal, for example:")
    print(f"  export ALLIANCE_RPC={nodes[0].rpc_url}")
    print(f"  export ALLIANCE_KEY={home / 'client.key'}")
    print("  alliance tx put hello world; alliance tx get hello")
    print(f"web console: {nodes[0].rpc_url}/ (docs/console.md)", flush=True)


def _live_view(nodes: list[LocalNode], duration_s: float | None, load: LoadStats | None, parent: int,
               stopping: StopRequest) -> None:
    """Redraws the view once a second until the duration is over (or a signal, or the parent's end)."""
    deadline = None if duration_s is None else time.monotonic() + duration_s
    with LiveView([f"node{n.index}" for n in nodes], [n.metrics_url for n in nodes], sys.stdout) as view:
        while deadline is None or time.monotonic() < deadline:
            stopping.check()
            if os.getppid() != parent:
                raise Stopped("as its parent process exited")
            exited = {f"node{n.index}": code for n in nodes if n.process and (code := n.process.poll()) is not None}
            if len(exited) == len(nodes):
                raise AllianceError(f"every node has exited; {nodes[0].exited()}")
            view.frame(exited, load.summary() if load else None)
            stopping.sleep(max(0.0, 1.0 - view.last_frame_s))
