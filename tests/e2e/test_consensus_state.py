"""consensus_state on a live 4-node chain, then with two validators killed: what the survivors lack."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.chain.tx import sign_tx
from node.keys import load_key
from tests.e2e.nodeproc import NodeProcess, alliance, running, wait_for

BASE_PORT = 29800


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[NodeProcess]]]:
    net = tmp_path_factory.mktemp("consensus") / "net"
    alliance("testnet", "--nodes", "4", "--out", str(net), "--base-port", str(BASE_PORT))
    with running(net, BASE_PORT, 4) as nodes:
        yield net, nodes


def _put(net: Path, node: NodeProcess, key: str, wait: bool) -> None:
    client = node.client()
    tx = sign_tx(load_key(net / "client.key"), client.status()["chain_id"], "kv", "put",
                 {"key": key, "value": b"v"}, secrets.randbits(64))
    client.send_tx(tx, wait=wait, timeout_s=20)


def _view_changes(node: NodeProcess) -> float:
    return sum(node.metric("alliance_consensus_view_changes_total", reason=r) or 0.0
               for r in ("timeout", "round_changes", "proposal", "resumed"))


def test_consensus_state_live_then_stuck(consortium: Any) -> None:
    net, nodes = consortium
    wait_for(lambda: all(v["connected"] for v in nodes[0].client().consensus_state()["validators"]),
             "node0 to be connected to every validator")
    for i in range(3):
        _put(net, nodes[i % 4], f"live{i}", wait=True)

    def every_commit_seen() -> dict[str, Any] | None:
        state: dict[str, Any] = nodes[0].client().consensus_state()
        return state if all(v["last_commit"] is not None for v in state["validators"]) else None
    state = wait_for(every_commit_seen, "node0 to have a commit vote from every validator")
    assert [v["name"] for v in state["validators"]] == ["node0", "node1", "node2", "node3"]
    assert all(v["connected"] for v in state["validators"])
    assert state["leader"] in {v["pubkey"] for v in state["validators"]}
    heights = [v["height"] for v in state["validators"]]
    assert max(heights) - min(heights) <= 2 and state["height"] - 2 <= min(heights), state
    assert isinstance(state["waiting_for"], str) and state["waiting_for"].startswith(("waiting", "committing"))

    before = _view_changes(nodes[0])
    for node in nodes[2:]:
        node.kill9()
    _put(net, nodes[0], "stuck", wait=False)

    def stuck() -> dict[str, Any] | None:
        state: dict[str, Any] = nodes[0].client().consensus_state()
        missing = state["waiting_for"].partition("missing ")[2].split()
        down = [v for v in state["validators"] if v["name"] in ("node2", "node3")]
        return state if {"node2", "node3"} <= set(missing) and not any(v["connected"] for v in down) else None
    state = wait_for(stuck, "node0's waiting_for to name node2 and node3 as missing")
    assert "node0" not in state["waiting_for"].partition("missing ")[2].split()
    wait_for(lambda: _view_changes(nodes[0]) > before, "a view change counted by reason on node0")


def test_alliance_consensus_prints_the_round_and_its_validators(consortium: Any) -> None:
    _, nodes = consortium
    shown = alliance("consensus", "--rpc", nodes[0].rpc_url).stdout
    assert "waiting for" in shown and "node3" in shown and "LAST COMMIT" in shown
    as_json = alliance("consensus", "--rpc", nodes[0].rpc_url, "--json").stdout
    assert '"waiting_for"' in as_json
