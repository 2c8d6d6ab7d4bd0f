"""`alliance localnet`: a view that survives a node that stops answering, fits 80 columns, and no
node left running however localnet ends (a signal, SIGKILL, the end of its parent, a closed stdout)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import signal
import socket
import struct
import subprocess
import termios
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.e2e.nodeproc import ALLIANCE, DEADLINE_S, alliance, free_base_port, wait_for


class Localnet:
    """An `alliance localnet` process (or a shell around it) whose stdout lines are collected as they come."""

    def __init__(self, cwd: Path, nodes: int, *extra: str, shell: bool = False) -> None:
        self.base = free_base_port(10 * nodes + 10)
        command = [*ALLIANCE, "localnet", "--nodes", str(nodes), "--home", "local", "--base-port", str(self.base),
                   *extra]
        if shell:  # a parent that waits for localnet, as make does
            command = ["sh", "-c", '"$@"; echo', "sh", *command]
        self.process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._readers = [threading.Thread(target=_collect, args=(pipe, into), daemon=True)
                         for pipe, into in ((self.process.stdout, self.lines), (self.process.stderr, self.errors))]
        for reader in self._readers:
            reader.start()

    def rows(self, node: str) -> list[str]:
        return [line for line in self.lines if line.startswith(f"{node} ")]

    def wait_rows(self, node: str, count: int) -> None:
        wait_for(lambda: len(self.rows(node)) >= count, f"{count} rows of {node}")

    def node_pids(self) -> list[int]:
        """The `alliance run` processes localnet started (children of the localnet process)."""
        localnet = self.localnet_pid()
        return [pid for pid in _pids() if _ppid(pid) == localnet]

    def localnet_pid(self) -> int:
        if not any(a == "sh" for a in self.process.args):  # type: ignore[union-attr]
            return self.process.pid
        found = wait_for(lambda: [pid for pid in _pids() if _ppid(pid) == self.process.pid], "localnet under sh")
        return int(found[0])

    def finish(self) -> tuple[int, str]:
        """The exit status and stderr; output still held open by a process left behind does not block it."""
        code = self.process.wait(timeout=DEADLINE_S)
        for reader in self._readers:
            reader.join(timeout=DEADLINE_S if code == 0 else 1)
        return code, "\n".join(self.errors)


def _collect(pipe: IO[str] | None, into: list[str]) -> None:
    assert pipe is not None
    for line in pipe:
        into.append(line.rstrip("\n"))


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _running(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: list[int]) -> None:
    assert pids
    wait_for(lambda: not any(_running(pid) for pid in pids), f"processes {pids} to end")


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path: Path) -> Iterator[None]:
    """A test that fails must not leave nodes behind: any still running in its directory are killed."""
    yield
    for pid in _nodes_in(tmp_path, " localnet ") + _nodes_in(tmp_path):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def stopped_nodes() -> Iterator[list[int]]:
    """Pids to SIGCONT at the end whatever happens, so that no test leaves a stopped process."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _running(pid):
            os.kill(pid, signal.SIGCONT)


def test_view_goes_on_while_a_node_does_not_answer(tmp_path: Path, stopped_nodes: list[int]) -> None:
    net = Localnet(tmp_path, 2, "--load", "20")
    try:
        net.wait_rows("node1", 2)
        node1 = [pid for pid in net.node_pids() if "local/node1" in _cmdline(pid)]
        assert len(node1) == 1, net.node_pids()
        stopped_nodes.append(node1[0])
        os.kill(node1[0], signal.SIGSTOP)
        seen = len(net.lines)
        wait_for(lambda: sum(r == "node1   no answer" for r in net.lines[seen:]) >= 3, "node1 shown as no answer")
        assert len([r for r in net.lines[seen:] if r.startswith("node0 ")]) >= 3  # node0's rows go on
        os.kill(node1[0], signal.SIGCONT)
        seen = len(net.lines)
        wait_for(lambda: any(r.startswith("node1 ") and "no answer" not in r for r in net.lines[seen:]),
                 "node1 answering again")
        assert any(line.startswith("load    20 tx/s offered") for line in net.lines)
    finally:
        pids = net.node_pids()
        net.process.send_signal(signal.SIGTERM)
        code, stderr = net.finish()
    assert code == 0 and stderr == "", stderr
    _wait_gone(pids)
    assert all(len(line) <= 80 for line in net.lines), max(net.lines, key=len)
    assert net.lines[-1].startswith("localnet stopped on SIGTERM")


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_stops_every_node(tmp_path: Path, signum: signal.Signals) -> None:
    net = Localnet(tmp_path, 1)
    net.wait_rows("node0", 1)
    pids = net.node_pids()
    assert len(pids) == 1
    net.process.send_signal(signum)
    code, stderr = net.finish()
    assert code == 0 and "Traceback" not in stderr, stderr
    _wait_gone(pids)
    assert net.lines[-1].startswith("localnet stopped on ")


def test_nodes_end_with_a_killed_localnet(tmp_path: Path) -> None:
    net = Localnet(tmp_path, 1)
    net.wait_rows("node0", 1)
    pids = net.node_pids()
    assert len(pids) == 1
    net.process.kill()
    net.finish()
    _wait_gone(pids)  # the kernel's parent-death signal, SIGTERM, stopped the node


def test_localnet_stops_when_its_parent_is_killed(tmp_path: Path) -> None:
    net = Localnet(tmp_path, 1, shell=True)
    net.wait_rows("node0", 1)
    localnet = net.localnet_pid()
    pids = net.node_pids()
    assert len(pids) == 1
    net.process.kill()  # as `kill -9` of the make that runs `make run`
    net.finish()
    _wait_gone([localnet, *pids])


def test_a_closed_stdout_stops_localnet_quietly(tmp_path: Path) -> None:
    base = free_base_port(20)
    process = subprocess.Popen([*ALLIANCE, "localnet", "--nodes", "1", "--home", "local", "--base-port", str(base)],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # as `alliance localnet | head -1` once head has its line
    assert process.wait(timeout=DEADLINE_S) == 0
    assert process.stderr.read() == ""
    assert (tmp_path / "local" / "node0" / "data").is_dir()  # the node did start
    wait_for(lambda: not _nodes_in(tmp_path), "no node running in the localnet's directory")


def _nodes_in(cwd: Path, command: str = " run --home ") -> list[int]:
    """`alliance run` processes started in `cwd` (localnet's nodes), or those of another command."""
    found = []
    for pid in _pids():
        try:
            if Path(f"/proc/{pid}/cwd").resolve() == cwd.resolve() and command in _cmdline(pid):
                found.append(pid)
        except OSError:
            pass
    return [pid for pid in found if _running(pid)]


def test_on_a_terminal_the_table_is_redrawn_within_its_width(tmp_path: Path) -> None:
    base = free_base_port(20)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 40, 0, 0))  # a 40-column terminal
    process = subprocess.Popen([*ALLIANCE, "localnet", "--nodes", "1", "--home", "local", "--base-port", str(base),
                                "--duration", "4"], cwd=tmp_path, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    output = b""
    with contextlib.suppress(OSError):  # EIO once the process has closed the terminal
        while chunk := os.read(leader, 4096):
            output += chunk
    os.close(leader)
    assert process.wait(timeout=DEADLINE_S) == 0
    text = output.decode()
    assert text.count("\x1b[1F") >= 2  # each frame after the first goes back over the previous one's row
    table = text[text.index("node "):text.index("localnet stopped")]
    rows = [re.sub(r"\x1b\[[0-9]*[A-Za-z]", "", line) for line in re.split(r"\r?\n", table)]
    assert all(len(row) <= 40 for row in rows), rows
    assert any(row.startswith("node0 ") for row in rows)


def test_ports_in_use_are_refused_before_anything_starts(tmp_path: Path) -> None:
    base = free_base_port(20)
    with socket.create_server(("127.0.0.1", base + 11)):  # node1's peer port, held by someone else
        result = alliance("localnet", "--nodes", "2", "--home", str(tmp_path / "local"), "--base-port", str(base),
                          "--duration", "1", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines() == [f"alliance: error: port {base + 11} on 127.0.0.1 is in use; "
                                          "choose another --base-port"]
    assert not (tmp_path / "local").exists() and "node0" not in result.stdout


def test_a_node_that_exits_early_is_named_with_its_last_error(tmp_path: Path) -> None:
    base = free_base_port(10)
    home = tmp_path / "local"
    alliance("testnet", "--nodes", "1", "--out", str(home), "--base-port", str(base))
    (home / "node0" / "node.toml").write_text('nmae = "typo"\n')
    result = alliance("localnet", "--nodes", "1", "--home", str(home), "--base-port", str(base), "--duration", "1",
                      check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    [error] = [line for line in result.stderr.splitlines() if line.startswith("alliance: error:")]
    assert error.startswith("alliance: error: node0 exited with 1: alliance: error: "), error
    assert "unknown setting nmae" in error, error
    assert error.endswith(f"see {home}/node0/node.log"), error
