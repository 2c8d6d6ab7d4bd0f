"""Pruning and the archive with real processes: a 4-validator chain whose nodes 0 and 1 keep only the last
128 blocks, loaded for a few hundred blocks. The pruned nodes answer "pruned" for old blocks and
transactions and serve recent ones, their data directory stays bounded, a node that lagged catches up,
one that archives before pruning serves the proof of an old transaction from its archive, and an unpruned
node's blocks exported to an archive verify offline, and fail to once a byte is flipped."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.chain.tx import Transaction, sign_tx
from node.client import RpcError
from node.keys import load_key
from tests.e2e.load import Load
from tests.e2e.nodeproc import NodeProcess, alliance, running, wait_for

BASE_PORT = 29000
RETAIN = 128
PRUNED = (0, 1)
ARCHIVING = 1  # archives its blocks before pruning them, and serves proofs of pruned ones from there


class _OverwritingLoad(Load):
    """Puts to a fixed set of keys: the state stays the same size, so what the disk holds is the blocks'."""

    def _tx(self) -> Transaction:
        args = {"key": f"load/{secrets.randbelow(64)}", "value": secrets.token_bytes(32)}
        return sign_tx(self.key, self.chain_id, "kv", "put", args, secrets.randbits(64))


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[tuple[Path, list[NodeProcess]]]:
    net = tmp_path / "net"
    alliance("testnet", "--nodes", "4", "--out", str(net), "--base-port", str(BASE_PORT))
    for i in PRUNED:
        with (net / f"node{i}" / "node.toml").open("a") as config:
            archive = '\narchive_dir = "archive"' if i == ARCHIVING else ""
            config.write(f"\n[storage]\nretain_blocks = {RETAIN}{archive}\n")
    with running(net, BASE_PORT, 4) as nodes:
        yield net, nodes


def _height(node: NodeProcess) -> int:
    height: int = node.client().status()["height"]
    return height


def _status(node: NodeProcess, tx_hash: str) -> str | None:
    """A transaction's status (pending or committed), None while the node does not know it."""
    answer = _call(node, "get_tx", tx_hash=tx_hash)
    return None if isinstance(answer, RpcError) else str(answer["status"])


def _call(node: NodeProcess, method: str, **params: Any) -> Any:
    [answer] = node.client().batch([(method, params)])
    return answer


def _data_bytes(node: NodeProcess) -> int:
    return sum(p.stat().st_size for p in (node.home / "data").iterdir() if p.is_file())


def _compactions(node: NodeProcess) -> int:
    return node.log_text().count("event=store_compacted")


def _size_after_next_compaction(node: NodeProcess) -> int:
    seen = _compactions(node)
    wait_for(lambda: _compactions(node) > seen, "a compaction", deadline_s=60)
    return _data_bytes(node)


def test_a_pruned_node_answers_pruned_stays_bounded_and_an_archive_verifies(chain: Any) -> None:
    net, nodes = chain
    pruned, lagging, archiver = nodes[0], nodes[3], nodes[2]
    chain_id = pruned.client().status()["chain_id"]
    with _OverwritingLoad(load_key(net / "client.key"), chain_id, nodes[:3], batch=10) as load:
        wait_for(lambda: len(load.accepted) > 0 and _height(pruned) >= 5, "the first blocks")
        old_tx = load.accepted[0].hash.hex()
        wait_for(lambda: _status(pruned, old_tx) == "committed", "the first tx to commit")
        first = _size_after_next_compaction(pruned)
        _size_after_next_compaction(pruned)  # a whole retained window later (a compaction each half)
        second = _size_after_next_compaction(pruned)
        unpruned = _data_bytes(archiver)
        lagging.stop()
        stopped_at = _height(pruned)
        wait_for(lambda: _height(pruned) > stopped_at + 30, "the chain to move on without node3")
        lagging.start()
        wait_for(lambda: _height(lagging) >= _height(pruned) - 1, "node3 to catch up", deadline_s=60)
        recent = load.accepted[-50].hash.hex()
    height = _height(pruned)
    print(json.dumps({"height": height, "pruned_data_bytes": [first, second], "unpruned_data_bytes": unpruned}))
    assert height > 2 * RETAIN
    # Two compactions apart (each a retained window of blocks later), the pruned store has not grown more
    # than the jitter of LevelDB's level files; the unpruned one holds every block.
    assert second < first * 1.25 + 256 * 1024, (first, second)
    assert unpruned > second

    status = pruned.client().status()
    assert status["height"] >= height
    for method, params in (("get_block", {"height": 1}), ("get_tx", {"tx_hash": old_tx}),
                           ("get_proof", {"tx_hash": old_tx})):
        error = _call(pruned, method, **params)
        assert isinstance(error, RpcError) and error.code == -32005, (method, error)
        assert error.data["reason"] == "pruned" and error.data["base"] > 1, (method, error.data)
    wait_for(lambda: _status(pruned, recent) == "committed", "the recent tx to commit")
    assert _call(pruned, "get_proof", tx_hash=recent)["tx_hash"] == recent
    assert _call(pruned, "get_block", height=height)["height"] == height
    assert _call(archiver, "get_tx", tx_hash=old_tx)["status"] == "committed"  # the unpruned node keeps all

    archiving = nodes[ARCHIVING]
    assert _call(archiving, "get_tx", tx_hash=old_tx).data["reason"] == "pruned"
    proof_file = net / "old-proof.json"
    proof_file.write_text(json.dumps(_call(archiving, "get_proof", tx_hash=old_tx)))
    alliance("verify-proof", str(proof_file), "--genesis", str(net / "genesis.toml"))
    own = alliance("archive", "verify", str(archiving.home / "archive"), "--genesis", str(net / "genesis.toml"))
    assert json.loads(own.stdout)["blocks_verified"] >= _call(archiving, "get_block", height="latest")["height"] - RETAIN

    # A pruned store passes the start-up checks and `alliance check` from its base; a replay is impossible.
    pruned.stop()
    checked = json.loads(alliance("check", "--home", str(pruned.home)).stdout)
    assert checked["ok"] and checked["base"] > 1 and checked["blocks_checked"] == checked["height"] - checked["base"] + 1
    replay = alliance("check", "--home", str(pruned.home), "--state", check=False)
    assert replay.returncode == 1 and "pruned" in replay.stderr and "Traceback" not in replay.stderr
    pruned.start()
    assert _call(pruned, "get_block", height=1).data["reason"] == "pruned"

    archiver.stop()
    archive = net / "archive"
    exported = alliance("archive", "export", "--home", str(archiver.home), "--out", str(archive),
                        "--segment-blocks", "100")
    assert json.loads(exported.stdout)["first"] == 1
    verified = alliance("archive", "verify", str(archive), "--genesis", str(net / "genesis.toml"))
    report = json.loads(verified.stdout)
    assert report["ok"] and report["blocks_verified"] >= height
    segment = sorted(archive.glob("segment-*.seg"))[1]
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0x01
    segment.write_bytes(bytes(data))
    failed = alliance("archive", "verify", str(archive), "--genesis", str(net / "genesis.toml"), check=False)
    assert failed.returncode == 6, failed.stderr
    assert 101 <= json.loads(failed.stdout)["first_bad_height"] <= 200
