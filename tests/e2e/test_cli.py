"""The `alliance` command line: help, keys, and one clear line (never a traceback) for each mistake."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.e2e.nodeproc import ALLIANCE, DEADLINE_S, alliance, free_base_port, make_testnet, node_process

COMMANDS = [
    [], ["keygen"], ["testnet"], ["run"], ["localnet"], ["status"], ["tx"], ["tx", "put"], ["tx", "get"],
    ["tx", "delete"], ["notarize"], ["lookup"], ["genesis"], ["genesis", "new"], ["genesis", "add-validator"],
    ["genesis", "add-client"], ["genesis", "add-observer"], ["genesis", "add-admin"], ["genesis", "set-threshold"],
    ["genesis", "show"], ["verify-proof"], ["snapshot"], ["snapshot", "restore"],
]


def _fails_with_one_line(result: object, pattern: str) -> None:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.returncode != 0  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("alliance: error:")]
    assert len(lines) == 1, stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "alliance")
def test_every_command_has_help(command: list[str]) -> None:
    result = alliance(*command, "--help")
    assert result.stdout.startswith("usage: alliance")


def test_keygen_writes_private_key_0600_and_refuses_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "me.key"
    result = alliance("keygen", "--out", str(out))
    assert re.fullmatch(r"[0-9a-f]{64}\n", result.stdout)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_text().startswith("-----BEGIN PRIVATE KEY-----\n")
    _fails_with_one_line(alliance("keygen", "--out", str(out), check=False), "already exists")


def test_testnet_layout(tmp_path: Path) -> None:
    net, base = make_testnet(tmp_path, nodes=2)
    for i in range(2):
        home = net / f"node{i}"
        assert {p.name for p in home.iterdir()} == {"node.toml", "node.key", "genesis.toml"}
        assert (home / "genesis.toml").read_text() == (net / "genesis.toml").read_text()
        assert f'listen = "127.0.0.1:{base + 10 * i + 1}"' in (home / "node.toml").read_text()
    assert stat.S_IMODE((net / "client.key").stat().st_mode) == 0o600
    _fails_with_one_line(alliance("testnet", "--nodes", "2", "--out", str(net), check=False), "already holds")


def test_run_without_config(tmp_path: Path) -> None:
    _fails_with_one_line(alliance("run", "--home", str(tmp_path), check=False), "node.toml does not exist")


def test_run_with_invalid_config(tmp_path: Path) -> None:
    net, _ = make_testnet(tmp_path)
    config = net / "node0" / "node.toml"
    config.write_text("name = [unclosed\n")
    _fails_with_one_line(alliance("run", "--home", str(net / "node0"), check=False), "not valid TOML")
    config.write_text('nmae = "typo"\n')
    _fails_with_one_line(alliance("run", "--home", str(net / "node0"), check=False), "unknown setting nmae")


def test_run_refusal_reaches_the_journal_as_an_error(tmp_path: Path) -> None:
    net, _ = make_testnet(tmp_path)
    (net / "node0" / "node.toml").write_text('nmae = "typo"\n')
    stderr_file = tmp_path / "stderr"
    with stderr_file.open("w") as stderr:
        st = os.fstat(stderr.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        result = subprocess.run([*ALLIANCE, "run", "--home", str(net / "node0")], stdout=subprocess.DEVNULL,
                                stderr=stderr, env=env, timeout=DEADLINE_S)
    assert result.returncode == 1
    [error] = [line for line in stderr_file.read_text().splitlines() if "alliance: error:" in line]
    assert error.startswith("<3>alliance: error: ") and "unknown setting nmae" in error, error


def test_run_without_genesis(tmp_path: Path) -> None:
    net, _ = make_testnet(tmp_path)
    (net / "node0" / "genesis.toml").unlink()
    _fails_with_one_line(alliance("run", "--home", str(net / "node0"), check=False), "genesis file .* does not exist")


def test_run_refuses_readable_key(tmp_path: Path) -> None:
    net, _ = make_testnet(tmp_path)
    os.chmod(net / "node0" / "node.key", 0o644)
    _fails_with_one_line(alliance("run", "--home", str(net / "node0"), check=False), "chmod 600")


def test_run_with_port_in_use(tmp_path: Path) -> None:
    net, base = make_testnet(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base))
        busy.listen()
        result = alliance("run", "--home", str(net / "node0"), check=False)
    _fails_with_one_line(result, f"rpc.listen 127.0.0.1:{base}: Address already in use")


def test_run_with_data_directory_in_use(tmp_path: Path) -> None:
    net, base = make_testnet(tmp_path)
    node = node_process(net, base)
    node.start()
    try:
        result = alliance("run", "--home", str(net / "node0"), check=False)
        _fails_with_one_line(result, "in use by another node")
    finally:
        assert node.stop() == 0


def test_run_with_another_chains_data(tmp_path: Path) -> None:
    first, base = make_testnet(tmp_path / "a")
    node = node_process(first, base)
    node.start()
    assert node.stop() == 0
    second, _ = make_testnet(tmp_path / "b")
    (second / "node0" / "data").symlink_to(first / "node0" / "data")
    _fails_with_one_line(alliance("run", "--home", str(second / "node0"), check=False), "not this genesis")


def test_client_commands_against_a_node(tmp_path: Path) -> None:
    net, base = make_testnet(tmp_path)
    node = node_process(net, base)
    node.start()
    rpc = ["--rpc", node.rpc_url]
    key = ["--key", str(net / "client.key")]
    try:
        assert json.loads(alliance("status", *rpc).stdout)["height"] == 0
        put = json.loads(alliance("tx", "put", "greeting", "你好", *rpc, *key).stdout)
        assert put["status"] == "committed" and put["code"] == 0
        got = json.loads(alliance("tx", "get", "greeting", *rpc).stdout)
        assert got["value_text"] == "你好" and got["height"] == put["height"]
        document = tmp_path / "invoice.pdf"
        document.write_bytes(b"%PDF-1.7 invoice 42")
        _fails_with_one_line(alliance("lookup", str(document), *rpc, check=False), "is not recorded")
        alliance("notarize", str(document), "--meta", "invoice 42", *rpc, *key)
        record = json.loads(alliance("lookup", str(document), *rpc).stdout)
        assert record["meta"] == "invoice 42" and record["height"] == put["height"] + 1
        _fails_with_one_line(alliance("notarize", str(document), *rpc, *key, check=False), "code 4")
        _fails_with_one_line(alliance("tx", "get", "missing", *rpc, check=False), "no such key")
    finally:
        assert node.stop() == 0


def test_client_command_without_node() -> None:
    port = free_base_port(1)
    result = alliance("status", "--rpc", f"http://127.0.0.1:{port}", check=False)
    _fails_with_one_line(result, "cannot reach node")


def test_localnet_single_node_commits_demo_load(tmp_path: Path) -> None:
    base = free_base_port(20)
    home = tmp_path / "local"
    result = alliance("localnet", "--nodes", "1", "--home", str(home), "--base-port", str(base),
                      "--load", "50", "--duration", "4")
    heights = [int(h) for h in re.findall(r"^node0 +(\d+) ", result.stdout, re.MULTILINE)]
    assert heights and heights[-1] > 0, result.stdout
    assert "localnet stopped" in result.stdout
