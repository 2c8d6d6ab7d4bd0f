"""docs/client-protocol.md, the project's copy of the client contract, lists every JSON-RPC method the node answers."""

from __future__ import annotations

import re
from pathlib import Path

from node.ops.metrics import RPC_METHODS

DOC = Path(__file__).resolve().parents[2] / "docs" / "client-protocol.md"
ELSEWHERE = {"get_proof": "docs/proofs.md", "subscribe": "docs/events.md", "unsubscribe": "docs/events.md"}


def test_every_method_has_a_row_in_the_methods_table() -> None:
    section = DOC.read_text().split("## 3. JSON-RPC", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.MULTILINE))
    assert "status" in rows  # the pattern still finds the table
    assert set(RPC_METHODS) - set(ELSEWHERE) <= rows


def test_the_readme_names_every_exit_status() -> None:
    table = DOC.read_text().split("### 5.1 Exit status", 1)[1]
    statuses = set(re.findall(r"^\| (\d) \|", table, re.MULTILINE)) - {"0"}
    assert {"1", "6", "7"} <= statuses  # the pattern still finds the table
    readme = " ".join((DOC.parents[1] / "README.md").read_text().split())
    summary = readme.split("Every command exits 0 on success", 1)[1].split("([the table]", 1)[0]
    assert statuses <= set(re.findall(r"\b(\d) [a-z]", summary)), summary
