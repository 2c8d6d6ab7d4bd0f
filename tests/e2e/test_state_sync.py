"""State sync with real processes: a validator starting from an empty data directory restores a peer's
snapshot (one peer serving corrupt chunks), then catches up by blocks; with no snapshot offered it
falls back to catching up from the genesis, and says so; one that was down for long replaces its
store with a snapshot, one down for a short while catches up by blocks."""

from __future__ import annotations

import json
import secrets
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.chain.snapshot import CHUNKS
from node.chain.tx import Transaction, sign_tx
from node.client import NodeUnreachable, RpcError
from node.keys import load_key
from tests.e2e.nodeproc import ALLIANCE, DEADLINE_S, NodeProcess, alliance, node_process, wait_for

pytestmark = pytest.mark.slow

NODES = 4
SYNC_BASE_PORT = 28500
FALLBACK_BASE_PORT = 28700
BEHIND_BASE_PORT = 28900


def _testnet(tmp: Path, base: int, interval: int) -> tuple[Path, list[NodeProcess]]:
    net = tmp / "net"
    alliance("testnet", "--nodes", str(NODES), "--out", str(net), "--base-port", str(base))
    for i in range(NODES):  # the last one joins later, with state sync on
        with (net / f"node{i}" / "node.toml").open("a") as toml:
            toml.write(f"\n[block]\ntxs_max = 100\n\n[snapshot]\ninterval_blocks = {interval}\n\n"
                       f"[sync]\nstate_sync = {'true' if i == NODES - 1 else 'false'}\nsnapshot_timeout_ms = 3000\n")
    return net, [node_process(net, base, i) for i in range(NODES)]


@pytest.fixture
def stopper() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for node in started:
        if node.process is not None and node.process.poll() is None:
            assert node.stop() == 0, node.log_text()


def _load(net: Path, node: NodeProcess, count: int) -> list[Transaction]:
    """Sends `count` kv puts in batches; the acknowledged ones."""
    key, chain_id = load_key(net / "client.key"), node.client().status()["chain_id"]
    accepted: list[Transaction] = []
    while len(accepted) < count:
        txs = [sign_tx(key, chain_id, "kv", "put", {"key": f"load/{secrets.token_hex(6)}", "value": b"x" * 32},
                       secrets.randbits(64)) for _ in range(200)]
        try:
            results = node.client().batch([("send_tx", {"tx": tx.raw.hex()}) for tx in txs])
        except NodeUnreachable:
            continue
        accepted += [tx for tx, r in zip(txs, results) if not isinstance(r, RpcError)]
    return accepted


def _committed(node: NodeProcess, txs: list[Transaction]) -> bool:
    client = node.client()
    for start in range(0, len(txs), 200):
        results = client.batch([("get_tx", {"tx_hash": tx.hash.hex()}) for tx in txs[start:start + 200]])
        if any(r["status"] != "committed" for r in results):
            return False
    return True


def _in_state(node: NodeProcess, txs: list[Transaction]) -> bool:
    client = node.client()
    for start in range(0, len(txs), 200):
        calls = [("query", {"family": "kv", "key": tx.args["key"]}) for tx in txs[start:start + 200]]
        if any(r is None or r["value"] != (b"x" * 32).hex() for r in client.batch(calls)):
            return False
    return True


def _tip(node: NodeProcess) -> tuple[int, str]:
    status = node.client().status()
    return int(status["height"]), str(status["last_block_hash"])


def _same_tip(nodes: list[NodeProcess]) -> bool:
    return len({_tip(n) for n in nodes}) == 1


def _snapshot_heights(node: NodeProcess) -> set[int]:
    root = node.home / "data.snapshots"
    return {int(p.name) for p in root.iterdir() if p.name.isdigit()} if root.is_dir() else set()


def _corrupt_chunks(node: NodeProcess) -> int:
    """Changes the last byte (inside the last value) of every non-empty chunk of every snapshot."""
    changed = 0
    for height in _snapshot_heights(node):
        for i in range(CHUNKS):
            path = node.home / "data.snapshots" / str(height) / f"chunk-{i}"
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # an older snapshot, deleted as a newer one became whole
                continue
            if data:
                path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
                changed += 1
    return changed


def _killed_once_restoring(node: NodeProcess) -> None:
    """Starts the node and SIGKILLs it as soon as it starts restoring a snapshot (its store marked)."""
    log = node.home / "killed.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*ALLIANCE, "run", "--home", str(node.home)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "event=state_sync_restoring" in log.read_text(), "the restore to begin", poll_s=0.002)
    finally:
        process.kill()
        process.wait()


def _readyz(node: NodeProcess) -> Any:
    try:
        with urllib.request.urlopen(node.metrics_url + "/readyz", timeout=DEADLINE_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503 while not ready: the body says why
        return json.loads(exc.read())


def test_an_empty_validator_restores_a_snapshot_refusing_corrupt_chunks(tmp_path: Path,
                                                                         stopper: list[NodeProcess]) -> None:
    net, nodes = _testnet(tmp_path, SYNC_BASE_PORT, interval=10)
    live, joiner = nodes[:3], nodes[3]
    for node in live:  # three of four: a quorum
        node.start()
        stopper.append(node)
    acked = _load(net, live[0], 3000)
    wait_for(lambda: _committed(live[0], acked), "the load to commit", deadline_s=60)
    wait_for(lambda: _same_tip(live), "the three at one tip")
    newest = _tip(live[0])[0] // 10 * 10
    assert newest >= 20
    wait_for(lambda: all(max(_snapshot_heights(n), default=0) == newest for n in live),
             "the three to write their snapshot of the tip")
    assert _corrupt_chunks(live[2]) > 0
    joiner.start()  # answers once restored
    stopper.append(joiner)
    sync = joiner.client().status()["sync"]
    assert sync["mode"] == "state", joiner.log_text()
    restored = int(sync["state_sync"].removeprefix("restored at "))
    assert restored == newest and sync["base"] == restored + 1
    assert f"event=state_synced height={restored} sign_from={restored + 1}" in joiner.log_text()
    assert (joiner.metric("alliance_snapshot_chunks_refused_total", reason="invalid") or 0) >= 1
    assert "event=snapshot_chunk_refused" in joiner.log_text()
    wait_for(lambda: _same_tip(nodes), "the joiner to reach the others' tip")
    more = _load(net, joiner, 200)  # it takes part: what it acknowledges commits everywhere
    wait_for(lambda: all(_committed(n, more) for n in nodes), "the joiner's transactions to commit everywhere")
    wait_for(lambda: _same_tip(nodes), "every node at one tip")
    height = _tip(joiner)[0]
    roots = {n.client().call("get_block", height=height)["state_root"] for n in nodes}
    assert len(roots) == 1
    assert _in_state(joiner, acked + more)
    with pytest.raises(RpcError):  # below its base: refused cleanly, the node stays up
        joiner.client().call("get_block", height=1)
    assert joiner.client().status()["height"] >= height


def test_with_no_snapshot_offered_an_empty_node_falls_back_to_blocks(tmp_path: Path,
                                                                     stopper: list[NodeProcess]) -> None:
    net, nodes = _testnet(tmp_path, FALLBACK_BASE_PORT, interval=0)
    live, joiner = nodes[:3], nodes[3]
    for node in live:
        node.start()
        stopper.append(node)
    acked = _load(net, live[0], 400)
    wait_for(lambda: _committed(live[0], acked), "the load to commit")
    joiner.start()
    stopper.append(joiner)
    sync = joiner.client().status()["sync"]
    assert sync["mode"] == "blocks" and sync["state_sync"].startswith("fell back: no peer offered"), sync
    assert _readyz(joiner)["sync"]["mode"] == "blocks"
    assert "event=state_sync_fallback" in joiner.log_text()
    wait_for(lambda: _same_tip(nodes), "the joiner to catch up by blocks")
    assert _committed(joiner, acked) and joiner.client().status()["sync"]["base"] == 1


def test_a_validator_far_behind_replaces_its_store_with_a_snapshot(tmp_path: Path,
                                                                   stopper: list[NodeProcess]) -> None:
    net, nodes = _testnet(tmp_path, BEHIND_BASE_PORT, interval=10)
    with (net / "node3" / "node.toml").open("a") as toml:
        toml.write("state_sync_behind_blocks = 15\n")  # appended to its [sync] table
    live, behind = nodes[:3], nodes[3]
    for node in nodes:  # all four start empty: no snapshot yet, so node3 falls back to blocks
        node.start()
        stopper.append(node)
    first = _load(net, live[0], 1100)
    wait_for(lambda: _committed(behind, first), "node3 to commit the first load")
    wait_for(lambda: all(_snapshot_heights(n) for n in live), "a snapshot on each of the three")
    assert behind.stop() == 0
    _load(net, live[0], 300)  # a few blocks while it is down: not enough for a snapshot to pay
    behind.start()
    sync = behind.client().status()["sync"]
    assert sync["mode"] == "blocks" and sync["state_sync"].startswith("not needed: no snapshot offered above"), sync
    assert sync["base"] == 1 and "event=state_sync_not_needed" in behind.log_text()
    wait_for(lambda: _same_tip(nodes), "node3 to catch up by blocks")
    held = _tip(behind)[0]
    assert behind.stop() == 0
    second = _load(net, live[0], 3000)
    wait_for(lambda: _committed(live[0], second) and _same_tip(live), "the second load to commit")
    newest = _tip(live[0])[0] // 10 * 10
    assert newest > held + 15
    wait_for(lambda: all(max(_snapshot_heights(n), default=0) == newest for n in live),
             "the three to write their snapshot of the tip")
    _killed_once_restoring(behind)  # mid-replace: the next start empties the store, and is not refused
    behind.start()
    sync = behind.client().status()["sync"]
    assert sync == {"mode": "state", "state_sync": f"restored at {newest}", "base": newest + 1}, sync
    assert "event=state_sync_abandoned" in behind.log_text()
    assert f"event=state_synced height={newest} sign_from={newest + 1} replaced_height=0" in behind.log_text()
    wait_for(lambda: _same_tip(nodes), "node3 to reach the others' tip")
    more = _load(net, behind, 200)
    wait_for(lambda: all(_committed(n, more) for n in nodes), "node3's transactions to commit everywhere")
    assert _in_state(behind, first + second + more)
