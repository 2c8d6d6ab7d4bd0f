"""`alliance gov` against one real node of a testnet with 3 admins (threshold 2): a client added by
governance, from proposal to a transaction of its own; and refused gov transactions."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.nodeproc import DEADLINE_S, NodeProcess, alliance, free_base_port, node_process

HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Net:
    dir: Path
    node: NodeProcess

    def gov(self, *args: str, key: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        keys = ["--key", str(self.dir / key)] if key else []
        return alliance("gov", *args, *keys, "--rpc", self.node.rpc_url, check=check)

    def json(self, *args: str) -> Any:
        return json.loads(self.gov(*args).stdout)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    out = tmp_path_factory.mktemp("gov") / "net"
    base = free_base_port(20)
    alliance("testnet", "--nodes", "1", "--admins", "3", "--out", str(out), "--base-port", str(base))
    node = node_process(out, base)
    node.start()
    try:
        yield Net(out, node)
    finally:
        node.stop()


def test_a_client_added_by_governance_can_send(net: Net, tmp_path: Path) -> None:
    newcomer_key = tmp_path / "newcomer.key"
    newcomer = alliance("keygen", "--out", str(newcomer_key)).stdout.strip()
    admins = [m["pubkey"] for m in net.json("members")["admins"]]

    proposed = net.gov("propose", "add_client", "--name", "newcomer", "--pubkey", newcomer, key="admin0.key")
    proposal = proposed.stdout.strip()
    assert HEX64.fullmatch(proposal), proposed.stdout

    shown = net.json("show", proposal)
    assert shown["status"] == "open" and shown["approvals"] == [admins[0]] and shown["activation"] is None
    assert shown["change"] == {"kind": "add_client", "name": "newcomer", "pubkey": newcomer}
    pending = net.json("members")["pending"]
    assert [(p["proposal"], p["activation"]) for p in pending] == [(proposal, None)]

    # No other traffic: a chain with a change to bring in force makes the blocks that get it there.
    approved = alliance("gov", "approve", proposal, "--wait", "--key", str(net.dir / "admin1.key"),
                        "--rpc", net.node.rpc_url, "--timeout", str(DEADLINE_S), check=False)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.splitlines() == ["passed", "active"]

    shown = net.json("show", proposal)
    assert shown["status"] == "active" and shown["approvals"] == admins[:2]
    members = net.json("members")
    assert newcomer in [c["pubkey"] for c in members["clients"]] and members["pending"] == []
    before = net.json("members", "--height", str(shown["activation"] - 1))
    assert newcomer not in [c["pubkey"] for c in before["clients"]]

    put = alliance("tx", "put", "from-newcomer", "hello", "--key", str(newcomer_key), "--rpc", net.node.rpc_url)
    assert json.loads(put.stdout)["code"] == 0


def test_a_change_that_would_leave_no_validator_is_refused_with_code_7(net: Net) -> None:
    validator = net.json("members")["validators"][0]["pubkey"]
    result = net.gov("propose", "remove_validator", "--pubkey", validator, key="admin0.key", check=False)
    assert result.returncode == 4, result.stderr
    assert "code 7" in result.stderr and "no validator" in result.stderr and "Traceback" not in result.stderr
    assert net.json("members")["validators"][0]["pubkey"] == validator


def test_a_client_may_not_propose_and_an_unknown_proposal_is_not_found(net: Net) -> None:
    result = net.gov("propose", "remove_client", "--pubkey", "ab" * 32, key="client.key", check=False)
    assert result.returncode == 4 and "code 5" in result.stderr, result.stderr
    missing = net.gov("show", "ab" * 32, check=False)
    assert missing.returncode == 5 and "Traceback" not in missing.stderr, missing.stderr
    approve = net.gov("approve", "ab" * 32, key="admin2.key", check=False)
    assert approve.returncode == 4 and "code 6" in approve.stderr, approve.stderr
