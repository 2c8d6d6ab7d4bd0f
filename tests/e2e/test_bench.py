"""`alliance bench`: short real runs of the benchmark, its profiles and its errors (no assertions on speed)."""

from __future__ import annotations

import json
import os
import pstats
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.nodeproc import ALLIANCE, alliance, free_base_port, make_testnet

FIELDS = {
    "nodes", "duration_s", "offered_rate", "batch", "connections", "presigned", "signing_s", "sent", "accepted",
    "rejected", "rejected_codes", "mempool_full", "retry_pending", "load_exhausted", "committed",
    "committed_tx_per_s", "blocks", "txs_per_block", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
    "latency_samples", "uncommitted", "rss_peak_mb", "cpu_s", "cpu_ms_per_tx", "load_cpu_s", "watcher_cpu_s",
}
CATCH_UP_FIELDS = {
    "catch_up_txs", "catch_up_blocks", "produce_s", "catch_up_s", "catch_up_speedup", "catch_up_tx_per_s",
    "catch_up_rpc_s", "catch_up_peer_s", "catch_up_cpu_s",
}


def _bench(*args: str, nodes: int, timeout: float = 120) -> tuple[dict[str, Any], str]:
    base = free_base_port(10 * nodes + 10)
    result = alliance("bench", "--nodes", str(nodes), "--base-port", str(base), *args, timeout=timeout)
    last = result.stdout.strip().splitlines()[-1]
    return json.loads(last), result.stderr


def _check_report(report: dict[str, Any], nodes: int, rate: float, duration: float) -> None:
    assert FIELDS <= set(report), FIELDS - set(report)
    assert report["nodes"] == nodes and report["duration_s"] == duration and report["offered_rate"] == rate
    assert report["presigned"] == rate * duration
    assert 0 < report["committed"] <= report["accepted"] <= report["sent"] <= report["presigned"]
    assert report["committed_tx_per_s"] == pytest.approx(report["committed"] / duration, abs=0.1)
    assert report["rejected"] == 0 and report["mempool_full"] == 0
    assert report["blocks"] > 0
    assert report["txs_per_block"] == pytest.approx(report["committed"] / report["blocks"], abs=0.1)
    assert report["latency_samples"] > 0
    assert 0 < report["latency_p50_ms"] <= report["latency_p95_ms"] <= report["latency_p99_ms"]
    assert len(report["rss_peak_mb"]) == len(report["cpu_s"]) == nodes
    assert all(v > 0 for v in report["rss_peak_mb"]), report["rss_peak_mb"]
    assert all(v > 0 for v in report["cpu_s"]), report["cpu_s"]
    assert report["cpu_ms_per_tx"] > 0
    assert report["load_cpu_s"] > 0 and report["watcher_cpu_s"] > 0


def test_bench_one_node() -> None:
    report, stderr = _bench("--duration", "3", "--rate", "200", nodes=1)
    _check_report(report, nodes=1, rate=200, duration=3)
    assert "Traceback" not in stderr
    home = re.search(r"up and connected in (\S+)", stderr)
    assert home is not None and not Path(home.group(1)).exists()  # the temporary testnet is gone


def test_bench_four_nodes_keeps_home_when_asked(tmp_path: Path) -> None:
    home = tmp_path / "bench"
    report, _ = _bench("--duration", "3", "--rate", "200", "--home", str(home), nodes=4)
    _check_report(report, nodes=4, rate=200, duration=3)
    assert report["connections"] == 8
    for i in range(4):
        log = (home / f"node{i}" / "node.log").read_text()
        assert "Traceback" not in log


def test_bench_retries_when_the_mempool_is_full(tmp_path: Path) -> None:
    net, base = make_testnet(tmp_path)
    with (net / "node0" / "node.toml").open("a") as config:
        config.write("\n[mempool]\ntxs_max = 30\n")
    result = alliance("bench", "--home", str(net), "--nodes", "1", "--base-port", str(base),
                      "--duration", "2", "--rate", "3000", timeout=120)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["mempool_full"] > 0 and report["rejected"] == 0
    assert report["accepted"] + report["retry_pending"] == report["sent"]
    assert report["accepted"] > 30 and report["committed"] > 0  # retried transactions got in later
    assert (net / "node0" / "node.log").exists()  # --home is kept


def test_bench_as_fast_as_possible_with_a_cap() -> None:
    report, _ = _bench("--duration", "2", "--txs", "1500", "--batch", "50", nodes=1)
    assert report["offered_rate"] is None and report["presigned"] == 1500 and report["batch"] == 50
    assert report["committed"] > 0 and report["sent"] <= 1500
    assert report["latency_p50_ms"] <= report["latency_p95_ms"] <= report["latency_p99_ms"]


def test_bench_profile_writes_one_profile_per_node(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    report, stderr = _bench("--duration", "2", "--rate", "100", "--profile", str(profiles), "--profile-top", "5",
                            nodes=2)
    assert report["profiles"] == [str(profiles / "node0.pstats"), str(profiles / "node1.pstats")]
    for path in report["profiles"]:
        stats = pstats.Stats(path)
        assert stats.total_tt > 0  # type: ignore[attr-defined]
    assert re.search(r"node0 profile: .*node0\.pstats", stderr)
    assert re.search(r"node1 profile: .*node1\.pstats", stderr)


def test_bench_catch_up() -> None:
    report, stderr = _bench("--catch-up", "2000", "--rate", "1000", nodes=4)
    assert FIELDS <= set(report)
    assert all(report[name] > 0 for name in CATCH_UP_FIELDS), {name: report.get(name) for name in CATCH_UP_FIELDS}
    assert report["catch_up_node"] == 1 and report["cpu_s"][1] == 0.0  # stopped during the window
    assert report["connections"] == 6  # the load went to the three running nodes
    assert report["presigned"] == report["accepted"] == report["committed"] == 2000
    assert report["catch_up_txs"] >= 2000 and report["catch_up_blocks"] >= report["blocks"]
    assert report["catch_up_speedup"] == pytest.approx(report["produce_s"] / report["catch_up_s"], rel=0.05)
    assert report["catch_up_rpc_s"] <= report["catch_up_s"] and report["produce_s"] >= report["duration_s"]
    assert "node1 stopped at height" in stderr and "Traceback" not in stderr


def test_bench_join_twice_each_way() -> None:
    report, stderr = _bench("--join", "6000", "--join-runs", "2", nodes=4)
    assert report["join_snapshot_height"] == 5 and report["join_height"] >= 6
    for mode in ("state_sync", "block_sync"):
        runs = report[f"join_{mode}_runs_s"]
        assert len(runs) == 2 and all(t > 0 for t in runs)
        assert report[f"join_{mode}_s"] == pytest.approx(sum(runs) / 2)  # the median of two
    assert stderr.count("joined by state sync") == 2 and "restored at 5" in stderr and "Traceback" not in stderr


def test_run_profile_needs_an_existing_directory(tmp_path: Path) -> None:
    net, _ = make_testnet(tmp_path)
    result = alliance("run", "--home", str(net / "node0"), "--profile", str(tmp_path / "no" / "such.pstats"),
                      check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert re.search(r"^alliance: error: --profile .* does not exist$", result.stderr, re.M)


@pytest.mark.parametrize("args, message", [
    (["--duration", "0"], "--duration must be more than 0"),
    (["--rate", "-1"], "--rate must be"),
    (["--nodes", "0"], "--nodes must be at least 1"),
    (["--batch", "5000"], "--batch must be in"),
    (["--poll-ms", "0"], "--poll-ms must be in"),
    (["--catch-up", "100", "--nodes", "2"], "--catch-up stops a node"),
    (["--catch-up", "100", "--duration", "5"], "--catch-up sends exactly TXS"),
    (["--join", "100", "--join-runs", "0"], "--join-runs must be at least 1"),
    (["--join-runs", "2"], "--join-runs goes with --join"),
])
def test_bench_refuses_bad_arguments(args: list[str], message: str) -> None:
    result = alliance("bench", *args, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"alliance: error: {message}")


def test_bench_refuses_a_busy_port() -> None:
    base = free_base_port(30)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + 10))
        busy.listen()
        result = alliance("bench", "--nodes", "2", "--base-port", str(base), "--duration", "1", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"alliance: error: port {base + 10} on 127.0.0.1 is in use; choose another --base-port"
    )


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_a_node_that_dies_is_one_line_error(tmp_path: Path) -> None:
    base = free_base_port(20)
    bench = subprocess.Popen(
        [*ALLIANCE, "bench", "--nodes", "1", "--base-port", str(base), "--duration", "60", "--rate", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert bench.stderr is not None
        lines = []
        for line in bench.stderr:
            lines.append(line)
            if line.startswith("bench: load:"):
                break
        else:
            raise AssertionError("".join(lines))
        time.sleep(1)
        nodes = [c for c in _children(bench.pid) if b"run\0--home" in Path(f"/proc/{c}/cmdline").read_bytes()]
        assert len(nodes) == 1
        os.kill(nodes[0], signal.SIGKILL)
        _, stderr = bench.communicate(timeout=30)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 1 and "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("alliance: error:")]
    assert len(errors) == 1
    assert re.match(r"alliance: error: node0 exited with -9 during the benchmark(: .*)?; see ", errors[0]), errors
    kept = re.search(r"see (\S+)/node0/node.log", errors[0])
    assert kept is not None and Path(kept.group(1)).is_dir()
    shutil.rmtree(kept.group(1))


def test_bench_help() -> None:
    result = alliance("bench", "--help")
    assert result.stdout.startswith("usage: alliance bench")
    for option in ("--nodes", "--duration", "--rate", "--profile", "--home", "--base-port", "--catch-up"):
        assert option in result.stdout
    assert "--profile" in alliance("run", "--help").stdout
