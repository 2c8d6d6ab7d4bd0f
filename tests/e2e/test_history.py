"""Record history end to end: a real node, kv and notary records touched by several transactions (one
refused in execution), get_history over RPC, the SDK and the CLI, paged; the same after SIGKILL."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.client import RpcError, load_key

from tests.e2e.nodeproc import NodeProcess, alliance, node_process

BASE_PORT = 29600  # one node: 29600..29602
NOT_OWNER = 2


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, NodeProcess]]:
    out = tmp_path_factory.mktemp("history") / "net"
    alliance("testnet", "--nodes", "1", "--out", str(out), "--base-port", str(BASE_PORT))
    node = node_process(out, BASE_PORT)
    node.start()
    try:
        yield out, node
    finally:
        node.stop()


def _history(node: NodeProcess, *args: str) -> Any:
    return json.loads(alliance("history", *args, "--rpc", node.rpc_url).stdout)


def test_every_transaction_that_touched_a_record_newest_first(net: tuple[Path, NodeProcess], tmp_path: Path) -> None:
    out, node = net
    client, admin = load_key(out / "client.key"), load_key(out / "admin0.key")
    rpc = node.client()
    sent = [
        rpc.submit(client, "kv", "put", {"key": "invoice/1", "value": b"issued"}),
        rpc.submit(client, "kv", "put", {"key": "invoice/2", "value": b"other"}),
        rpc.submit(client, "kv", "put", {"key": "invoice/1", "value": b"paid"}),
        rpc.submit(admin, "kv", "put", {"key": "invoice/1", "value": b"forged"}),
        rpc.submit(client, "kv", "delete", {"key": "invoice/1"}),
    ]
    assert [s["code"] for s in sent] == [0, 0, 0, NOT_OWNER, 0]
    mine = [sent[i] for i in (4, 3, 2, 0)]
    page = rpc.get_history("kv", "invoice/1")
    assert page.next_before_height is None
    assert [(e.tx_hash, e.height, e.index, e.op, e.code) for e in page.entries] == \
        [(s["tx_hash"], s["height"], s["index"], s["tx"]["op"], s["code"]) for s in mine]
    assert [e.sender for e in page.entries] == [s["tx"]["sender"] for s in mine]

    first = _history(node, "invoice/1", "--limit", "1")
    assert [e["tx_hash"] for e in first["entries"]] == [mine[0]["tx_hash"]]
    assert first["next_before_height"] == mine[0]["height"]
    rest = _history(node, "invoice/1", "--limit", "1", "--before-height", str(first["next_before_height"]), "--all")
    assert [e["tx_hash"] for e in first["entries"] + rest["entries"]] == [s["tx_hash"] for s in mine]
    assert rest["next_before_height"] is None
    assert _history(node, "never/written")["entries"] == []

    document = tmp_path / "invoice.pdf"
    document.write_bytes(b"%PDF e-invoice 1")
    recorded = json.loads(alliance("notarize", str(document), "--rpc", node.rpc_url,
                                   "--key", str(out / "client.key")).stdout)
    again = rpc.submit(admin, "notary", "record", {"digest": hashlib.sha256(document.read_bytes()).digest()})
    assert again["code"] != 0  # already recorded: refused in execution, still part of the record's story
    looked = json.loads(alliance("lookup", str(document), "--history", "--rpc", node.rpc_url).stdout)
    assert [(e["tx_hash"], e["code"]) for e in looked["entries"]] == [(again["tx_hash"], again["code"]),
                                                                      (recorded["tx_hash"], 0)]
    before = rpc.call("get_history", family="kv", key="invoice/1")

    node.kill9()
    node.start()
    assert node.client().call("get_history", family="kv", key="invoice/1") == before


@pytest.mark.parametrize("params", [
    {"family": "kv"}, {"family": "other", "key": "a"}, {"family": "kv", "key": 5},
    {"family": "notary", "key": "zz"}, {"family": "kv", "key": "a", "limit": 0},
    {"family": "kv", "key": "a", "limit": 1001}, {"family": "kv", "key": "a", "before_height": True},
    {"family": "kv", "key": "a", "extra": 1},
])
def test_bad_params_are_invalid_params(net: tuple[Path, NodeProcess], params: dict[str, Any]) -> None:
    _, node = net
    with pytest.raises(RpcError) as refused:
        node.client().call("get_history", **params)
    assert refused.value.code == -32602
