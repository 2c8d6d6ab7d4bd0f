"""docs/operations.md sections 3 to 6 followed for four machines made of Linux network namespaces.

Each "machine" is a network namespace with its own address 10.203.K.i/24 on a veth whose other end
is plugged into a bridge in a "hub" namespace (the switch). Nodes listen on their own address only,
so they can reach each other only across the veth pairs and the bridge, never through 127.0.0.1.
The root namespace's interfaces and routes are never touched. Needs root; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.e2e.nodeproc import wait_for

pytestmark = pytest.mark.slow

MACHINES = 4
RPC_PORT, P2P_PORT, METRICS_PORT = 26600, 26601, 26602
DEADLINE_S = 60.0
POLL_S = 0.2
ALLIANCE = str(Path(sys.executable).parent / "alliance")
SUFFIX = str(os.getpid())
SUBNET = f"10.203.{os.getpid() % 250 + 1}"


# ---- small helpers -----------------------------------------------------------------------------


def run(*argv: str, check: bool = True, timeout: float = DEADLINE_S) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}{result.stdout}")
    return result


def wait(condition: Callable[[], Any], what: str) -> Any:
    # each poll starts a process inside a namespace: poll less often than the default
    return wait_for(condition, what, DEADLINE_S, POLL_S)


def netns_usable() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2's `ip`"
    probe = f"alnprobe{SUFFIX}"
    added = run("ip", "netns", "add", probe, check=False)
    if added.returncode != 0:
        return f"`ip netns add` does not work here: {added.stderr.strip()}"
    run("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class Machine:
    index: int  # 1..4
    ns: str
    home: Path
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.index}"

    @property
    def rpc_url(self) -> str:
        return f"http://{self.address}:{RPC_PORT}"

    @property
    def name(self) -> str:
        return f"org{self.index}-node0"

    def exec(self, *argv: str, check: bool = True, timeout: float = DEADLINE_S) -> subprocess.CompletedProcess[str]:
        """Runs a command inside this machine's namespace."""
        return run("ip", "netns", "exec", self.ns, *argv, check=check, timeout=timeout)

    def alliance(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`alliance` in this machine's namespace, with the application's token once it has one (section 1a)."""
        token = self.home / "app.token"
        env = ["env", f"ALLIANCE_TOKEN={token.read_text().strip()}"] if token.exists() else []
        return self.exec(*env, ALLIANCE, *args, check=check)

    def start(self) -> None:
        self.log = self.home / "run.log"
        with self.log.open("wb") as out:
            # `ip netns exec` execs the command, so this pid is the node's own.
            self.process = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, ALLIANCE, "run", "--home", str(self.home)],
                stdout=out, stderr=subprocess.STDOUT,
            )

    def status(self) -> dict[str, Any] | None:
        """`alliance status` from inside the namespace; None while the node does not answer."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}: {self.log_text()}")
        result = self.alliance("status", "--rpc", self.rpc_url, check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None

    def connected_peers(self) -> int:
        status = self.status()
        return sum(p["connected"] for p in status["peers"]) if status else -1

    def height(self) -> int:
        status = self.status()
        return status["height"] if status else -1

    def readyz(self) -> int:
        result = self.exec("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                           f"http://{self.address}:{METRICS_PORT}/readyz", check=False)
        return int(result.stdout or 0)

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=DEADLINE_S)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=DEADLINE_S)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""


@dataclass
class Network:
    hub: str
    machines: list[Machine]

    def hub_port(self, machine: Machine) -> str:
        """The hub-side end of the machine's veth: its "switch port"."""
        return f"port{machine.index}"

    def set_link(self, machine: Machine, up: bool) -> None:
        run("ip", "-n", self.hub, "link", "set", self.hub_port(machine), "up" if up else "down")


@pytest.fixture
def network(tmp_path: Path) -> Iterator[Network]:
    reason = netns_usable()
    if reason:
        pytest.skip(reason)
    hub = f"alnhub{SUFFIX}"
    machines = [Machine(i, f"alnm{i}-{SUFFIX}", tmp_path / f"machine{i}") for i in range(1, MACHINES + 1)]
    created: list[str] = []
    try:
        for ns in [hub, *(m.ns for m in machines)]:
            run("ip", "netns", "add", ns)
            created.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", hub, "link", "set", "br0", "up")
        net = Network(hub, machines)
        for m in machines:
            m.home.mkdir()
            port = net.hub_port(m)
            # Both ends are created directly in their namespaces: nothing appears in the root namespace.
            run("ip", "-n", hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", m.ns)
            run("ip", "-n", hub, "link", "set", port, "master", "br0", "up")
            run("ip", "-n", m.ns, "addr", "add", f"{m.address}/24", "dev", "eth0")
            run("ip", "-n", m.ns, "link", "set", "eth0", "up")
        yield net
    finally:
        for m in machines:
            m.kill()
        for ns in reversed(created):
            run("ip", "netns", "del", ns, check=False)


# ---- the guide, sections 3 to 6 ----------------------------------------------------------------


def keygen(machine: Machine, filename: str) -> str:
    """Section 3: a key made on the machine itself; only the public key leaves it."""
    pubkey = machine.alliance("keygen", "--out", str(machine.home / filename)).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", pubkey), pubkey
    return pubkey


def assemble_genesis(coordinator: Path, machines: list[Machine], node_keys: dict[int, str], app_key: str) -> Path:
    """Section 4: the coordinator assembles the genesis from what the organisations sent in."""
    coordinator.mkdir()
    genesis = coordinator / "genesis.toml"
    run(ALLIANCE, "genesis", "new", "--chain-id", "acme-invoices", "--out", str(genesis))
    for m in machines:
        run(ALLIANCE, "genesis", "add-validator", str(genesis), "--name", m.name,
            "--pubkey", node_keys[m.index], "--address", f"{m.address}:{P2P_PORT}")
    run(ALLIANCE, "genesis", "add-client", str(genesis), "--name", "org2-invoicing", "--pubkey", app_key)
    return genesis


def genesis_hash(machine: Machine) -> str:
    shown = machine.alliance("genesis", "show", str(machine.home / "genesis.toml")).stdout
    match = re.search(r"genesis hash\s+([0-9a-f]{64})", shown)
    assert match, shown
    return match.group(1)


def write_config(machine: Machine) -> None:
    """Section 5: node.toml, every listener on the machine's own address."""
    config = {
        "name": machine.name,
        "key_file": "node.key",
        "genesis_file": "genesis.toml",
        "data_dir": str(machine.home / "data"),
        # Not loopback, so closed by default: the application gets a token (section 1a).
        "rpc": {"listen": f"{machine.address}:{RPC_PORT}", "tokens_file": "tokens.toml"},
        "p2p": {"listen": f"{machine.address}:{P2P_PORT}"},
        "metrics": {"listen": f"{machine.address}:{METRICS_PORT}"},
    }
    (machine.home / "node.toml").write_text(tomli_w.dumps(config))
    token = machine.alliance("token", "new", "--name", "app", "--roles", "read,submit",
                             "--file", str(machine.home / "tokens.toml")).stdout.strip()
    (machine.home / "app.token").write_text(token)


def put(machine: Machine, key: str, value: str) -> dict[str, Any]:
    result = machine.alliance("tx", "put", key, value, "--key", str(machine.home / "app.key"),
                              "--rpc", machine.rpc_url)
    return json.loads(result.stdout)


def get(machine: Machine, key: str) -> dict[str, Any]:
    return json.loads(machine.alliance("tx", "get", key, "--rpc", machine.rpc_url).stdout)


def test_four_machines_in_network_namespaces(network: Network, tmp_path: Path) -> None:
    machines = network.machines
    m1, m2, m3, m4 = machines

    # 3. Keys, each made on its own machine.
    node_keys = {m.index: keygen(m, "node.key") for m in machines}
    app_key = keygen(m2, "app.key")  # org2's client application

    # 4. Genesis: assembled by a coordinator, a copy to every machine, the same hash everywhere.
    genesis = assemble_genesis(tmp_path / "coordinator", machines, node_keys, app_key)
    for m in machines:
        shutil.copyfile(genesis, m.home / "genesis.toml")
    hashes = {genesis_hash(m) for m in machines}
    assert len(hashes) == 1, hashes

    # 5. and 6. Configure and start (the CLI in place of systemd).
    for m in machines:
        write_config(m)
    for m in machines:
        m.start()
    try:
        for m in machines:
            wait(lambda m=m: m.connected_peers() == MACHINES - 1, f"{m.name} to connect to its 3 peers")
        for m in machines:
            status = m.status()
            assert status is not None and status["chain_id"] == "acme-invoices"
            assert status["node"]["pubkey"] == node_keys[m.index]
            assert all(p["connected"] for p in status["peers"]), status["peers"]
            wait(lambda m=m: m.readyz() == 200, f"{m.name}'s /readyz to answer 200")

        # An end-to-end transaction: submitted through machine 2, read through machine 4.
        committed = put(m2, "hello", "world")
        assert committed.get("code") in (None, 0), committed
        wait(lambda: m4.height() >= m2.height() > 0, "machine 4 to reach machine 2's height")
        entry = get(m4, "hello")
        assert entry["value_text"] == "world", entry

        # Unplug machine 3 at the switch: the other three are a quorum and still commit.
        before = m3.height()
        network.set_link(m3, up=False)
        committed = put(m2, "while-unplugged", "3 of 4")
        assert committed.get("code") in (None, 0), committed
        others_height = wait(lambda: min(m.height() for m in (m1, m2, m4)) > before and m2.height(),
                                 "the three connected machines to commit")
        assert get(m1, "while-unplugged")["value_text"] == "3 of 4"
        assert m3.height() == before, "machine 3 committed without a link"
        assert m3.alliance("tx", "get", "while-unplugged", "--rpc", m3.rpc_url, check=False).returncode != 0

        # Plug it back in: it catches up from its peers.
        network.set_link(m3, up=True)
        wait(lambda: m3.height() >= others_height, "machine 3 to catch up after the link came back")
        assert get(m3, "while-unplugged")["value_text"] == "3 of 4"
        wait(lambda: m3.connected_peers() == MACHINES - 1, "machine 3 to be connected to its 3 peers again")
        wait(lambda: m3.readyz() == 200, "machine 3's /readyz to answer 200 again")
    except BaseException:
        for m in machines:
            print(f"---- {m.name} log ----\n{m.log_text()[-4000:]}")
        raise
    finally:
        codes = {m.name: m.stop() for m in machines}
    assert codes == {m.name: 0 for m in machines}, codes
