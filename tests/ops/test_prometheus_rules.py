"""deploy/prometheus and deploy/grafana checked with promtool and against a real node's /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.client import RpcError
from tests.e2e.nodeproc import NodeProcess, make_testnet, node_process

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "alliance-dashboard.json"
PROMTOOL = shutil.which("promtool")

ALERTS = ("AllianceNodeDown", "AllianceHeightStalled", "AllianceViewChangeStorm",
          "AlliancePeersBelowQuorum", "AllianceMempoolNearFull", "AllianceCatchingUpTooLong")
# What the issue asks the dashboard to show, by the series it is computed from.
DASHBOARD_SERIES = ("alliance_chain_height", "alliance_txs_committed_total", "alliance_block_commit_seconds_bucket",
                    "alliance_consensus_view", "alliance_consensus_view_changes_total", "alliance_peers_connected",
                    "alliance_mempool_txs", "alliance_rpc_requests_total", "alliance_txs_rejected_total")
# Labels Prometheus adds (job, instance), prometheus.yml adds (node, org) or histograms carry (le).
TARGET_LABELS = {"job", "instance", "node", "org", "le"}

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)")


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> str:
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard, with Grafana's variables replaced as Grafana would."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return [e.replace("$__rate_interval", "1m").replace("$node", ".*") for e in exprs]


def alert_exprs() -> list[str]:
    """The `expr:` of every rule in alerts.yml (single-line or `|` block), without a YAML library."""
    exprs, lines = [], (PROMETHEUS_DIR / "alerts.yml").read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        if m.group(2) != "|":
            exprs.append(m.group(2))
            continue
        block = []
        for following in lines[i + 1:]:
            if following.strip() and len(following) - len(following.lstrip()) <= len(m.group(1)):
                break
            block.append(following.strip())
        exprs.append(" ".join(block))
    return exprs


@needs_promtool
def test_scrape_config_and_its_rule_file_are_valid() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert "1 rule files found" in out


@needs_promtool
def test_alert_rules_are_valid() -> None:
    out = promtool("check", "rules", "alerts.yml")
    assert f"{len(ALERTS)} rules found" in out


@needs_promtool
def test_alert_rule_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    rules = (PROMETHEUS_DIR / "alerts.yml").read_text()
    assert sorted(re.findall(r"- alert: (\w+)", rules)) == sorted(ALERTS)
    assert rules.count("severity:") == len(ALERTS)
    assert rules.count("summary:") == len(ALERTS) and rules.count("description:") == len(ALERTS)
    tests = (PROMETHEUS_DIR / "alerts_test.yml").read_text()
    for alert in ALERTS:
        checks = re.findall(rf"alertname: {alert}\n\s*exp_alerts:(.*)", tests)
        assert any(c.strip() == "[]" for c in checks), f"{alert} is never shown not firing"
        assert any(c.strip() == "" for c in checks), f"{alert} is never shown firing"


@needs_promtool
def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """promtool has no offline query linter, so every query becomes a recording rule it checks."""
    exprs = dashboard_exprs()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard_rules.yml").write_text(json.dumps(rules))  # JSON is YAML
    assert f"{len(exprs)} rules found" in promtool("check", "rules", "dashboard_rules.yml", cwd=tmp_path)


def test_dashboard_shape() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], panel["title"]
    text = " ".join(dashboard_exprs())
    for series in DASHBOARD_SERIES:
        assert series in text, f"no panel shows {series}"
    assert "histogram_quantile(0.5," in text and "histogram_quantile(0.95," in text


@pytest.fixture
def node_metrics(tmp_path: Path) -> Iterator[str]:
    """The /metrics text of a real node after an accepted call and a refused transaction."""
    net, base = make_testnet(tmp_path, nodes=1)
    node: NodeProcess = node_process(net, base)
    node.start()
    try:
        node.client().status()
        with pytest.raises(RpcError):
            node.client().call("send_tx", tx="00")  # refused: labels the rejected and error series
        with urllib.request.urlopen(node.metrics_url + "/metrics", timeout=10) as response:
            yield response.read().decode()
    finally:
        assert node.stop() == 0, node.log_text()


def _exported(metrics_text: str) -> tuple[set[str], set[str]]:
    """Names of the series (sampled, or declared by `# TYPE` for a labelled family with no child yet) and labels."""
    names, labels = set(), set()
    for line in metrics_text.splitlines():
        declared = re.match(r"^# TYPE (\S+) (counter|gauge|histogram)$", line)
        if declared:
            name, kind = declared.groups()
            names |= {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s", line)
        if m:
            names.add(m.group(1))
            labels |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)=\"", m.group(2) or ""))
    return names, labels


def test_dashboard_and_alerts_use_only_series_the_node_exports(node_metrics: str) -> None:
    names, labels = _exported(node_metrics)
    exprs = dashboard_exprs() + alert_exprs()
    assert len(alert_exprs()) == len(ALERTS)
    used = {n for e in exprs for n in re.findall(r"\balliance_[a-z0-9_]+", e)}
    assert used, "no alliance_ series found in the queries"
    assert used <= names, f"not exported by the node: {sorted(used - names)}"
    grouped: set[str] = set()
    for e in exprs:
        for clause in re.findall(r"\b(?:by|on|without|group_left|group_right)\s*\(([^)]*)\)", e):
            grouped |= {label.strip() for label in clause.split(",") if label.strip()}
        grouped |= set(re.findall(r"([a-z_]+)\s*(?:=~|!=|!~|=)\s*\"", e))
    assert grouped - TARGET_LABELS <= labels, f"labels not exported: {sorted(grouped - TARGET_LABELS - labels)}"


def test_scrape_targets_carry_node_and_org_labels() -> None:
    config = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    assert "job_name: alliance" in config
    assert re.search(r"^\s*- alerts\.yml$", config, re.M)
    targets = re.findall(r'- targets: \["([^"]+)"\]\n\s*labels: \{node: (\w+), org: (\w+)\}', config)
    assert len(targets) == 4, targets
    assert len({t[0] for t in targets}) == 4 and len({t[1] for t in targets}) == 4
