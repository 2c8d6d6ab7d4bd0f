"""The state-sync client against snapshot servers over an in-memory network: a corrupt peer is refused and
the chunks come from the others; with every peer corrupt, or none offering, it fails and leaves the store empty."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from node.chain.ledger import Ledger
from node.chain.state_tree import leaf_hashes
from node.disk.safety_file import SafetyRecord
from node.disk.snapshot_files import SnapshotFiles, restored_record
from node.ops.metrics import Metrics
from node.p2p.snapshot_server import QUEUED_FRAMES_MAX, SnapshotServer
from node.p2p.state_sync import FETCHERS, SnapshotClient, StateSyncFailed
from node.p2p.wire import Chunk, GetChunk, GetManifest, GetSnapshots, ManifestFrame, decode
from storage.chain import ChainStore
from storage.memory import MemoryStore
from tests.node.proof_example import GENESIS
from tests.node.test_snapshot import _ledger, _snapshot

CLIENT = b"c" * 32


class Wire:
    """Delivers each frame sent to a peer to that peer's handler at once; `queued` frames wait in its queue."""

    def __init__(self, deliver: Callable[[bytes, bytes], None], queued: int = 0) -> None:
        self.deliver = deliver
        self.queued = queued

    def send(self, peer: bytes, frame: bytes) -> None:
        self.deliver(peer, frame)

    def link(self, peer: bytes) -> Any:
        stats = SimpleNamespace(current_buffer_used=self.queued)
        return SimpleNamespace(queue=SimpleNamespace(statistics=lambda: stats))


async def _inline(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def _network(tmp_path: Path, corrupt: set[int], servers: int = 3) -> tuple[SnapshotClient, Metrics, Ledger]:
    manifest, chunks = _snapshot(_ledger())
    metrics = Metrics()
    empty = Ledger(ChainStore(MemoryStore()), GENESIS)
    handlers: dict[bytes, SnapshotServer] = {}
    client_box: list[SnapshotClient] = []

    def to_client(server: bytes) -> Wire:
        return Wire(lambda peer, frame: client_box[0].handle(server, decode(frame)))

    for i in range(servers):
        files = SnapshotFiles(tmp_path / f"s{i}", keep=2)
        bad = [c[:-1] + bytes([c[-1] ^ 1]) if c else c for c in chunks] if i in corrupt else chunks
        files.write(5, zip(bad, manifest.roots), lambda roots: manifest.encode())
        key = bytes([i]) * 32
        handlers[key] = SnapshotServer(files, to_client(key), metrics)  # type: ignore[arg-type]

    def to_server(peer: bytes, frame: bytes) -> None:
        message, server = decode(frame), handlers[peer]
        if isinstance(message, GetSnapshots):
            server.on_get_snapshots(CLIENT)
        elif isinstance(message, GetManifest):
            server.on_get_manifest(CLIENT, message)
        elif isinstance(message, GetChunk):
            server.on_get_chunk(CLIENT, message)

    client = SnapshotClient(GENESIS, empty, Wire(to_server), metrics, 5.0, run_blocking=_inline,
                            run_check=_inline)  # type: ignore[arg-type]
    client_box.append(client)
    for key in handlers:
        client.on_connect(key)
    return client, metrics, empty


def _restore(client: SnapshotClient) -> int | StateSyncFailed:
    async def main() -> int | StateSyncFailed:
        try:
            return await client.run()
        except StateSyncFailed as exc:
            return exc
    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_corrupt_peer_is_refused_and_the_snapshot_restored_from_the_others(tmp_path: Path) -> None:
    client, metrics, empty = _network(tmp_path, corrupt={1})
    assert _restore(client) == 5
    assert client.banned == {bytes([1]) * 32}
    assert metrics.snapshot_chunks_refused.labels("invalid")._value.get() == 1
    assert metrics.snapshot_chunks_served._value.get() > 100  # every non-empty chunk, and the refused one
    restored = Ledger(empty.store, GENESIS)
    assert (restored.height, restored.base, restored.tree.root) == (5, 6, _ledger().tree.root)
    assert client.leaves == leaf_hashes(empty.store.iterate_buckets())
    assert Ledger(empty.store, GENESIS, client.leaves).tree.root == restored.tree.root


def test_chunks_are_checked_in_worker_processes_and_a_bad_one_still_refused(tmp_path: Path) -> None:
    client, metrics, empty = _network(tmp_path, corrupt={2})
    client.run_check = None  # the node's default: trio_parallel workers (the refusal crosses the process boundary)

    async def main() -> int:
        return await client.run()

    assert trio.run(main) == 5
    assert client.banned == {bytes([2]) * 32}
    # Chunks asked of it before the first refusal came back may be refused too.
    assert 1 <= metrics.snapshot_chunks_refused.labels("invalid")._value.get() <= FETCHERS
    assert Ledger(empty.store, GENESIS, client.leaves).tree.root == _ledger().tree.root


def test_snapshots_at_or_below_the_floor_are_not_restored(tmp_path: Path) -> None:
    client, metrics, empty = _network(tmp_path, corrupt=set())
    client.above = 5  # the store is close enough to the newest snapshot (5): blocks will do
    outcome = _restore(client)
    assert isinstance(outcome, StateSyncFailed) and "no snapshot offered above height 5" in str(outcome)
    assert metrics.snapshot_chunks_served._value.get() == 0 and not empty.store.restoring()


def test_with_every_peer_corrupt_it_fails_and_leaves_the_store_empty(tmp_path: Path) -> None:
    client, _, empty = _network(tmp_path, corrupt={0, 1, 2})
    outcome = _restore(client)
    assert isinstance(outcome, StateSyncFailed) and "no peer gave a valid chunk" in str(outcome)
    assert empty.store.height() == 0 and not empty.store.restoring()
    assert list(empty.store.kv.iterate(b"s/")) == []


def test_with_no_offer_it_fails_after_the_timeout(tmp_path: Path) -> None:
    client, _, _ = _network(tmp_path, corrupt=set(), servers=0)
    outcome = _restore(client)
    assert isinstance(outcome, StateSyncFailed) and "within 5 s" in str(outcome)


def test_peers_that_have_none_end_the_wait_at_once(tmp_path: Path) -> None:
    client, _, _ = _network(tmp_path, corrupt=set(), servers=0)
    client.handle(b"x" * 32, decode(b"\x92\x08\x90"))
    client.handle(b"y" * 32, decode(b"\x92\x08\x90"))
    outcome = _restore(client)
    assert isinstance(outcome, StateSyncFailed) and "2 peers answered they have none" in str(outcome)


@pytest.mark.parametrize("sign_from, expected", [(0, 6), (9, 9), (-1, -1)])
def test_a_restored_node_never_signs_at_or_below_the_snapshot(sign_from: int, expected: int) -> None:
    record = restored_record(SafetyRecord(committed=0, sign_from=sign_from), 5)
    assert (record.committed, record.sign_from) == (5, expected)


def test_a_peer_whose_send_queue_is_full_is_told_none(tmp_path: Path) -> None:
    manifest, chunks = _snapshot(_ledger())
    files = SnapshotFiles(tmp_path / "s", keep=2)
    files.write(5, zip(chunks, manifest.roots), lambda roots: manifest.encode())
    sent: list[bytes] = []
    wire = Wire(lambda peer, frame: sent.append(frame), queued=QUEUED_FRAMES_MAX)
    server = SnapshotServer(files, wire, Metrics())  # type: ignore[arg-type]
    server.on_get_chunk(CLIENT, GetChunk(5, 0))
    server.on_get_manifest(CLIENT, GetManifest(5))
    wire.queued = 0
    server.on_get_chunk(CLIENT, GetChunk(5, 0))
    assert [decode(f) for f in sent] == [Chunk(5, 0, None), ManifestFrame(5, None), Chunk(5, 0, chunks[0])]
