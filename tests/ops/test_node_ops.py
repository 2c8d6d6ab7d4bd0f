"""A real node's operations surface: its version, its series from the start, its log lines, its refusals."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.client.types import status_from
from node.ops.logs import parse_fields
from node.ops.metrics import MESSAGE_DROP_REASONS, RPC_METHODS, TX_REJECTION_REASONS
from node.version import VERSION
from tests.e2e.nodeproc import ALLIANCE, NodeProcess, alliance, make_testnet, node_process, wait_for

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
PROMTOOL = shutil.which("promtool")


def start(node: NodeProcess, journal: bool = False) -> Path:
    """Starts the node with stderr to a file; with `journal`, $JOURNAL_STREAM names that file as systemd would."""
    log = node.home / f"run{len(node.logs)}.log"
    node.logs.append(log)
    with log.open("wb") as out:
        env = dict(os.environ)
        env.pop("JOURNAL_STREAM", None)
        if journal:
            st = os.fstat(out.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        node.process = subprocess.Popen([*ALLIANCE, "run", "--home", str(node.home)], stderr=out, env=env)
    wait_for(node._answers, f"{node.home} to answer RPC")
    return log


def rpc(node: NodeProcess, method: Any, **params: Any) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(node.rpc_url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def scrape(node: NodeProcess) -> str:
    with urllib.request.urlopen(node.metrics_url + "/metrics", timeout=30) as response:
        return str(response.read().decode())


def rpc_series(text: str) -> set[str]:
    return set(re.findall(r"^alliance_rpc_requests_total(\{[^}]*\})", text, re.M))


@pytest.fixture
def journal_node(tmp_path: Path) -> Iterator[tuple[NodeProcess, Path]]:
    net, base = make_testnet(tmp_path, nodes=1)
    node = node_process(net, base)
    log = start(node, journal=True)
    try:
        yield node, log
    finally:
        if node.process is not None and node.process.poll() is None:
            assert node.stop() == 0, node.log_text()


def test_a_fresh_node_exports_its_version_process_series_and_every_label_at_zero(
    journal_node: tuple[NodeProcess, Path],
) -> None:
    node, _ = journal_node
    text = scrape(node)
    assert re.search(rf'^alliance_build_info\{{python="[\d.]+",version="{re.escape(VERSION)}"}} 1\.0$', text, re.M)
    for series in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                   "process_start_time_seconds"):
        assert re.search(rf"^{series} \S+$", text, re.M), series
    assert "\nalliance_validators 1.0\n" in text and "\nalliance_mempool_txs_max 10000.0\n" in text
    assert "\nalliance_peers_best_height 0.0\n" in text
    for reason in TX_REJECTION_REASONS:
        assert f'\nalliance_txs_rejected_total{{reason="{reason}"}} 0.0\n' in text, reason
    for method in RPC_METHODS:
        for outcome in ("ok", "error"):
            assert f'alliance_rpc_requests_total{{method="{method}",outcome="{outcome}"}}' in text
    for reason in MESSAGE_DROP_REASONS:
        assert f'\nalliance_consensus_messages_dropped_total{{reason="{reason}"}} 0.0\n' in text, reason
    if PROMTOOL is not None:
        checked = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True,
                                 timeout=60)
        assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), checked


def test_calls_of_every_kind_count_in_series_that_existed_from_the_start(
    journal_node: tuple[NodeProcess, Path],
) -> None:
    node, _ = journal_node
    before = rpc_series(scrape(node))
    zero = "00" * 32
    calls: list[tuple[str, dict[str, Any]]] = [
        ("status", {}), ("get_tx", {"tx_hash": zero}), ("get_block", {"height": 0}), ("get_block", {"height": -1}),
        ("get_proof", {"tx_hash": zero}), ("query", {"family": "kv", "key": "k"}), ("send_tx", {"tx": "00"}),
        ("no_such_method", {}),
    ]
    for method, params in calls:
        rpc(node, method, **params)
    rpc(node, 5)  # not a valid call
    text = scrape(node)
    assert rpc_series(text) == before
    assert 'alliance_rpc_requests_total{method="unknown",outcome="error"} 1.0' in text
    assert 'alliance_rpc_requests_total{method="invalid",outcome="error"} 1.0' in text
    assert 'alliance_txs_rejected_total{reason="malformed"} 1.0' in text


def test_status_says_the_version(journal_node: tuple[NodeProcess, Path]) -> None:
    node, _ = journal_node
    result = rpc(node, "status")["result"]
    assert result["version"] == VERSION
    assert status_from(result).version == VERSION
    del result["version"]  # a node that does not say
    assert status_from(result).version is None


def test_log_lines_carry_the_journal_level_prefix_and_are_logfmt(journal_node: tuple[NodeProcess, Path]) -> None:
    node, log = journal_node
    assert node.stop() == 0
    lines = log.read_text().splitlines()
    assert lines, "the node logged nothing"
    events = []
    for line in lines:
        m = re.fullmatch(r"<([2-7])>(.*)", line)
        assert m, line
        fields = dict(parse_fields(m.group(2)) or [])
        assert TS.fullmatch(fields.get("ts", "")), line
        assert {"debug": "7", "info": "6", "warning": "4", "error": "3"}[fields["level"]] == m.group(1), line
        events.append(fields.get("event"))
    assert "node_started" in events and "node_stopped" in events


def test_log_format_json_writes_one_object_per_line(tmp_path: Path) -> None:
    net, base = make_testnet(tmp_path, nodes=1)
    node = node_process(net, base)
    config = node.home / "node.toml"
    config.write_text('log_format = "json"\n' + config.read_text())
    log = start(node)
    assert node.stop() == 0
    objects = [json.loads(line) for line in log.read_text().splitlines()]
    started = [o for o in objects if o.get("event") == "node_started"]
    assert len(started) == 1 and TS.fullmatch(started[0]["ts"]) and started[0]["level"] == "info"
    assert started[0]["logger"] == "alliance.node" and started[0]["height"] == "0"


def _refused(home: Path, pattern: str) -> None:
    result = alliance("run", "--home", str(home), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.stderr


def test_run_refuses_an_out_of_range_setting_in_one_line(tmp_path: Path) -> None:
    net, _ = make_testnet(tmp_path, nodes=1)
    home = net / "node0"
    config = home / "node.toml"
    assert "[mempool]" not in config.read_text()
    config.write_text(config.read_text() + "\n[mempool]\ntxs_max = 100000000000000000000\n")
    _refused(home, r"mempool\.txs_max = 100000000000000000000 is out of range 1\.\.1000000")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not on PATH")
def test_run_refuses_an_encrypted_key_saying_so(tmp_path: Path) -> None:
    net, _ = make_testnet(tmp_path, nodes=1)
    key = net / "node0" / "node.key"
    key.unlink()
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-aes-256-cbc", "-pass", "pass:x",
                    "-out", str(key)], check=True, capture_output=True)
    key.chmod(0o600)
    _refused(net / "node0", rf"{re.escape(str(key))} is an encrypted key; .*openssl pkcs8 -in ")
