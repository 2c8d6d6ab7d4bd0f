"""Four real validator processes on 127.0.0.1: load, a killed leader, a restarted follower, hostile peers."""

from __future__ import annotations

import json
import secrets
import socket
import struct
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from nacl.signing import SigningKey

from node.chain.tx import Transaction, sign_tx
from node.keys import load_key
from node.p2p.transport import TransportError, handshake
from tests.e2e.load import Load
from tests.e2e.nodeproc import NodeProcess, make_testnet, running, wait_connected, wait_for

pytestmark = pytest.mark.slow

NODES = 4


@pytest.fixture
def consortium(tmp_path: Path) -> Iterator[tuple[Path, list[NodeProcess]]]:
    net, base = make_testnet(tmp_path, nodes=NODES)
    with running(net, base, NODES, clean_exit=True) as nodes:
        wait_connected(nodes)
        yield net, nodes


def _height(node: NodeProcess) -> int:
    return int(node.client().status()["height"])


def _all_committed(node: NodeProcess, txs: list[Transaction]) -> bool:
    client = node.client()
    for start in range(0, len(txs), 200):
        chunk = txs[start:start + 200]
        results = client.batch([("get_tx", {"tx_hash": tx.hash.hex()}) for tx in chunk])
        if any(r["status"] != "committed" for r in results):
            return False
    return True


def _blocks(node: NodeProcess, top: int) -> list[dict[str, Any]]:
    """Blocks 1..top without their certificates: which seals a node holds may differ."""
    client = node.client()
    return [{k: v for k, v in client.call("get_block", height=h).items() if k != "commit"} for h in range(1, top + 1)]


def _leader(nodes: list[NodeProcess]) -> NodeProcess:
    leader = nodes[0].client().status()["leader"]
    by_key = {n.client().status()["node"]["pubkey"]: n for n in nodes}
    return by_key[leader]


def test_transactions_reach_every_validator(consortium: Any) -> None:
    net, nodes = consortium
    client = nodes[3].client()
    tx = sign_tx(load_key(net / "client.key"), client.status()["chain_id"], "kv", "put",
                 {"key": "everywhere", "value": b"1"}, 1)
    result = client.send_tx(tx, wait=True)
    assert result["status"] == "committed"
    # Committed on node3 means a quorum committed; node0 may apply it a moment later.
    wait_for(lambda: _height(nodes[0]) >= result["height"], "node0 to commit the block")
    block = nodes[0].client().call("get_block", height=result["height"])
    assert len(block["commit"]["signatures"]) >= 3
    for node in nodes:
        wait_for(lambda: node.client().query("kv", "everywhere") is not None, "the write on every node")


def _longest_commit_gap(node: NodeProcess, watch_s: float) -> float:
    """The longest time without a new block, from now over `watch_s` seconds."""
    start = last_change = time.monotonic()
    height, longest = _height(node), 0.0
    while time.monotonic() - start < watch_s:
        now, current = time.monotonic(), _height(node)
        if current > height:
            longest, last_change, height = max(longest, now - last_change), now, current
        time.sleep(0.01)
    return max(longest, time.monotonic() - last_change)


def test_leader_killed_under_load(consortium: Any) -> None:
    net, nodes = consortium
    leader = _leader(nodes)
    followers = [n for n in nodes if n is not leader]
    with Load(load_key(net / "client.key"), followers[0].client().status()["chain_id"], followers) as load:
        wait_for(lambda: _height(followers[0]) >= 5, "blocks under load")
        leader.kill9()
        stall_s = _longest_commit_gap(followers[0], watch_s=6.0)
        wait_for(lambda: _all_committed(followers[0], load.accepted[:]), "accepted transactions to commit")
    print(json.dumps({"longest_commit_gap_after_leader_kill_s": round(stall_s, 3)}))
    assert stall_s < 5
    assert load.accepted
    for node in followers:
        wait_for(lambda: _all_committed(node, load.accepted), "every accepted transaction to commit", deadline_s=60)


def test_follower_restarts_and_catches_up(consortium: Any) -> None:
    net, nodes = consortium
    leader = _leader(nodes)
    follower = next(n for n in nodes if n is not leader)
    live = [n for n in nodes if n is not follower]
    with Load(load_key(net / "client.key"), live[0].client().status()["chain_id"], live) as load:
        wait_for(lambda: _height(live[0]) >= 3, "blocks under load")
        follower.kill9()
        stopped_at = _height(live[0])
        wait_for(lambda: _height(live[0]) >= stopped_at + 20, "the chain to move on without the follower")
        follower.start()
        wait_for(lambda: _height(follower) >= _height(live[0]) - 1 and _height(follower) > stopped_at + 20,
                 "the follower to catch up")
    top = min(_height(n) for n in nodes)
    reference = _blocks(live[0], top)
    assert _blocks(follower, top) == reference
    assert _blocks(live[1], top) == reference
    wait_for(lambda: _all_committed(follower, load.accepted), "accepted transactions on the restarted node")
    assert not follower.client().status()["syncing"]


def _metric(node: NodeProcess, name: str) -> float:
    return node.metric(name) or 0.0


async def _handshake_as(key: SigningKey, port: int, chain_id: str) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        session = await handshake(stream, chain_id, key, lambda peer: True, initiator=True)
        await session.receive()  # a refused peer sees the connection closed
    finally:
        await stream.aclose()


def test_non_member_is_refused(consortium: Any) -> None:
    _, nodes = consortium
    chain_id = nodes[0].client().status()["chain_id"]
    with pytest.raises(TransportError):
        trio.run(_handshake_as, SigningKey.generate(), nodes[0].rpc_port + 1, chain_id)
    assert _metric(nodes[0], "alliance_p2p_sessions_refused_total") >= 1
    assert "event=peers_refused kind=handshake_failed count=1" in nodes[0].log_text()
    assert all(p["connected"] for p in nodes[0].client().status()["peers"])


def _send_raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError:
            pass
        return received


def test_garbage_and_oversized_frames_change_nothing(consortium: Any) -> None:
    net, nodes = consortium
    port = nodes[1].rpc_port + 1
    _send_raw(port, secrets.token_bytes(4096))
    _send_raw(port, struct.pack(">I", 0x7FFFFFFF) + b"\x00" * 1024)
    _send_raw(port, struct.pack(">I", 100) + b"\x93" + secrets.token_bytes(99))
    refused = _metric(nodes[1], "alliance_p2p_sessions_refused_total")
    assert refused >= 3
    client = nodes[1].client()
    tx = sign_tx(load_key(net / "client.key"), client.status()["chain_id"], "kv", "put",
                 {"key": "after-garbage", "value": b"ok"}, 2)
    assert client.send_tx(tx, wait=True)["status"] == "committed"
    assert all(p["connected"] for p in client.status()["peers"])


def test_status_shows_view_leader_and_peers(consortium: Any) -> None:
    _, nodes = consortium
    statuses = [n.client().status() for n in nodes]
    assert len({s["leader"] for s in statuses}) == 1
    assert all(s["leader"] in s["validators"] for s in statuses)
    assert all(len(s["peers"]) == NODES - 1 and not s["syncing"] for s in statuses)
    ready = urllib.request.urlopen(nodes[0].metrics_url + "/readyz", timeout=10)
    assert ready.status == 200
    assert _metric(nodes[0], "alliance_peers_connected") == NODES - 1
