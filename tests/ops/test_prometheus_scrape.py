"""A real Prometheus server scraping four real nodes: every node up, the height rising, rules and dashboard queries sound."""

from __future__ import annotations

import json
import math
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from node.chain.tx import sign_tx
from node.client import NodeUnreachable, RpcError
from node.keys import load_key
from tests.e2e.nodeproc import NodeProcess, make_testnet, node_process, wait_for
from tests.ops.test_prometheus_rules import ALERTS, PROMETHEUS_DIR, dashboard_exprs

pytestmark = pytest.mark.slow

PROMETHEUS = Path("/usr/bin/prometheus")
NODES = 4
# Dashboard queries that are empty until something goes wrong (no message has been dropped yet).
MAY_BE_EMPTY = ("alliance_consensus_messages_dropped_total",)


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"GET {path} {params}: {exc.code} {exc.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}: {self.log.read_text()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError):
            return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connected(node: NodeProcess) -> int:
    try:
        return sum(p["connected"] for p in node.client().status()["peers"])
    except NodeUnreachable:
        return -1


@pytest.fixture
def consortium(tmp_path: Path) -> Iterator[tuple[Path, list[NodeProcess]]]:
    net, base = make_testnet(tmp_path, nodes=NODES)
    nodes = [node_process(net, base, i) for i in range(NODES)]
    try:
        for node in nodes:
            node.start()
        wait_for(lambda: all(_connected(n) == NODES - 1 for n in nodes), "every node to connect to every peer")
        yield net, nodes
    finally:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                assert node.stop() == 0, node.log_text()


@pytest.fixture
def prometheus(tmp_path: Path, consortium: tuple[Path, list[NodeProcess]]) -> Iterator[Prometheus]:
    if not PROMETHEUS.exists():
        pytest.skip("/usr/bin/prometheus is not installed (Debian: apt-get install prometheus)")
    _, nodes = consortium
    port = _free_port()
    # deploy/prometheus/prometheus.yml with this consortium's ports and a 1 s cadence; JSON is YAML.
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
        "scrape_configs": [{
            "job_name": "alliance",
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "static_configs": [
                {"targets": [n.metrics_url.removeprefix("http://")], "labels": {"node": f"node{i}", "org": f"org{i}"}}
                for i, n in enumerate(nodes)
            ],
        }],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(json.dumps(config, indent=2))
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={config_file}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_for(server.ready, "prometheus to be ready")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


def _heights(server: Prometheus) -> dict[str, int]:
    return {r["metric"]["node"]: int(float(r["value"][1])) for r in server.query('alliance_chain_height{job="alliance"}')}


def test_prometheus_sees_every_node_up_and_the_height_rising(
    consortium: tuple[Path, list[NodeProcess]], prometheus: Prometheus
) -> None:
    net, nodes = consortium
    names = {f"node{i}" for i in range(NODES)}

    def all_up() -> bool:
        up = prometheus.query('up{job="alliance"}')
        return {r["metric"]["node"] for r in up if r["value"][1] == "1"} == names and len(up) == NODES

    wait_for(all_up, 'up{job="alliance"} == 1 for every node')
    targets = prometheus.get("/api/v1/targets")["activeTargets"]
    assert sorted(t["labels"]["org"] for t in targets if t["health"] == "up") == [f"org{i}" for i in range(NODES)]

    wait_for(lambda: set(_heights(prometheus)) == names, "a height from every node")
    before = _heights(prometheus)

    key = load_key(net / "client.key")
    chain_id = nodes[0].client().status()["chain_id"]
    for i in range(6):
        tx = sign_tx(key, chain_id, "kv", "put", {"key": f"ops/{i}", "value": secrets.token_bytes(8)}, secrets.randbits(64))
        assert nodes[i % NODES].client().send_tx(tx, wait=True)["status"] == "committed"
    with pytest.raises(RpcError):
        nodes[0].client().call("send_tx", tx="00")  # a refusal, so the rejection and error panels have data
    committed = max(int(n.client().status()["height"]) for n in nodes)
    assert committed > max(before.values())

    wait_for(lambda: all(h > before[n] for n, h in _heights(prometheus).items()) and len(_heights(prometheus)) == NODES,
             "alliance_chain_height to rise on every node in Prometheus")
    wait_for(lambda: prometheus.query('increase(alliance_txs_committed_total{job="alliance"}[1m]) >= 6'),
             "the committed transactions in Prometheus")


def test_alert_rules_load_and_evaluate_quietly_on_a_healthy_consortium(prometheus: Prometheus) -> None:
    def rules() -> list[dict[str, Any]]:
        groups = prometheus.get("/api/v1/rules", type="alert")["groups"]
        found = [r for g in groups for r in g["rules"]]
        return found if found and all(r["health"] == "ok" for r in found) else []

    loaded = wait_for(rules, "every alert rule to be evaluated without error")
    assert sorted(r["name"] for r in loaded) == sorted(ALERTS)
    for rule in loaded:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["name"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["name"]
    wait_for(lambda: len(prometheus.query('up{job="alliance"} == 1')) == NODES, "every node up")
    time.sleep(3)  # a few evaluations with every node scraped
    active = prometheus.get("/api/v1/alerts")["alerts"]
    assert active == [], f"alerts on a healthy consortium: {active}"


def test_every_dashboard_query_answers_against_the_consortium(
    consortium: tuple[Path, list[NodeProcess]], prometheus: Prometheus
) -> None:
    net, nodes = consortium
    # Commit only once Prometheus holds a sample from before, so that the rates see the commit.
    wait_for(lambda: len(prometheus.query('alliance_block_commit_seconds_count{job="alliance"}')) == NODES,
             "a first scrape of every node")
    key = load_key(net / "client.key")
    chain_id = nodes[0].client().status()["chain_id"]
    tx = sign_tx(key, chain_id, "kv", "put", {"key": "ops/dashboard", "value": b"1"}, secrets.randbits(64))
    assert nodes[1].client().send_tx(tx, wait=True)["status"] == "committed"
    with pytest.raises(RpcError):
        nodes[2].client().call("send_tx", tx="00")

    exprs = dashboard_exprs()

    def all_answer() -> list[str] | None:
        empty = [e for e in exprs if not prometheus.query(e) and not any(s in e for s in MAY_BE_EMPTY)]
        return None if empty else exprs

    try:
        wait_for(all_answer, "every dashboard query to return data")
    except AssertionError:
        empty = [e for e in exprs if not prometheus.query(e) and not any(s in e for s in MAY_BE_EMPTY)]
        raise AssertionError(f"dashboard queries with no data: {empty}") from None
    # The latency panels read the histogram: p95 of a commit is a time, not NaN.
    def p95() -> float | None:
        result = prometheus.query(
            'histogram_quantile(0.95, sum by(le) (rate(alliance_block_commit_seconds_bucket{job="alliance"}[1m])))')
        value = float(result[0]["value"][1]) if result else math.nan
        return None if math.isnan(value) else value

    assert 0 < wait_for(p95, "a commit latency p95 from the histogram") < 30
