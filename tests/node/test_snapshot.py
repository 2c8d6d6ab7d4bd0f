"""Certified snapshots: built from a ledger, checked with only the genesis, restored into an empty store;
every tampered manifest and chunk refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
import trio

from node.chain.ledger import BlockPruned, Ledger
from node.chain.proposal import build_block
from node.chain.snapshot import (
    BUCKETS_PER_CHUNK, CHUNK_BYTES_MAX, CHUNKS, Manifest, SnapshotInvalid, build_chunks, chunk_of,
    decode_manifest, verify_chunk, verify_manifest,
)
from node.chain.state_tree import EMPTY, bucket_of, key_hash
from node.chain.tx import sign_tx
from node.cli.main import build_parser
from node.errors import AllianceError
from node.disk.integrity import check_store, verify_window
from node.disk.safety_file import SafetyFile
from node.disk import snapshot_files
from node.disk.snapshot_files import (
    SPILL_BUFFER_BYTES, SnapshotFiles, SnapshotWriter, restore_directory, validator_changes,
)
from node.ops.metrics import Metrics
from node.p2p.sync import Syncer
from node.p2p.wire import Blocks, GetBlocks, decode
from node.pipeline.driver import Wakeup
from storage.chain import ChainStore
from storage.kv import StorageError
from storage.leveldb import LevelDBStore
from storage.memory import MemoryStore
from tests.shell.chainkit import wait_until
from tests.node.proof_example import CHAIN_ID, CLIENT, GENESIS, GENESIS_TIME_MS, NODES, build_ledger, genesis_toml

KEYS = 400  # state keys enough to fill many chunks


def _ledger() -> Ledger:
    """The proof example's chain (a fifth validator from block 4) and a block 5 of KEYS kv writes."""
    ledger, _ = build_ledger()
    txs = [sign_tx(CLIENT, CHAIN_ID, "kv", "put", {"key": f"k{i}", "value": b"v" * (i % 7)}, 100 + i)
           for i in range(KEYS)]
    candidate = build_block(ledger, txs, bytes(NODES[0].verify_key), GENESIS_TIME_MS + 30_000)
    seals = tuple((bytes(NODES[i].verify_key), NODES[i].sign(b"alliance-commit-v1\x00" + candidate.block_hash).signature)
                  for i in (0, 1, 2, 4))
    ledger.commit(candidate.block, candidate.txs, candidate.execution, seals)
    return ledger


def _snapshot(ledger: Ledger) -> tuple[Manifest, list[bytes]]:
    view = ledger.store.state_view()
    chunks, roots = build_chunks(view.pairs())
    view.close()
    height = ledger.height
    certificate = ledger.store.load_certificate(height)
    assert certificate is not None
    manifest = Manifest(CHAIN_ID, height, ledger.header(height).encode(), certificate, tuple(roots),
                        tuple(validator_changes(ledger, height)))
    return manifest, chunks


@pytest.fixture(scope="module")
def built() -> tuple[Ledger, Manifest, list[bytes]]:
    ledger = _ledger()
    manifest, chunks = _snapshot(ledger)
    return ledger, manifest, chunks


def test_a_snapshot_verifies_and_restores_to_the_same_state(built: tuple[Ledger, Manifest, list[bytes]]) -> None:
    ledger, manifest, chunks = built
    assert len(manifest.changes) == 1  # the fifth validator
    decoded = decode_manifest(manifest.encode())
    header = verify_manifest(decoded, CHAIN_ID, GENESIS.validator_keys)
    assert header == ledger.header(5)
    assert sum(bool(c) for c in chunks) > 100
    store = ChainStore(MemoryStore())
    store.begin_restore()
    for index, (chunk, root) in enumerate(zip(chunks, decoded.roots)):
        verified = verify_chunk(index, chunk, root)
        store.restore_state(verified.pairs, verified.buckets)
    change = decoded.changes[0]
    store.finish_restore(5, header.hash(), [(5, decoded.header, decoded.certificate), (3, change.header, change.certificate)])
    restored = Ledger(store, GENESIS)
    assert (restored.height, restored.base, restored.tree.root) == (5, 6, ledger.tree.root)
    assert restored.last_hash == ledger.last_hash
    assert restored.read_state(b"kv/k7") == ledger.read_state(b"kv/k7") is not None
    assert restored.members(6) == ledger.members(6)
    with pytest.raises(BlockPruned):
        restored.block(3)
    assert validator_changes(restored, 5) == list(decoded.changes)  # a restored node can serve snapshots too
    assert check_store(store, GENESIS, replay=False) == (0, None)  # `alliance check`: whole from its base
    bucket, blob = next(store.iterate_buckets())
    store.kv.put(b"z/" + bucket.to_bytes(4, "big"), blob[:-1] + bytes([blob[-1] ^ 1]))
    _, fault = check_store(store, GENESIS, replay=False)
    assert fault is not None and fault.height == 5 and "state is damaged" in str(fault)


def _restore_into(store: ChainStore, manifest: Manifest, chunks: list[bytes]) -> None:
    """Writes the snapshot's chunks (checked) into a store marked restoring, and its height 5."""
    for index, (chunk, root) in enumerate(zip(chunks, manifest.roots)):
        verified = verify_chunk(index, chunk, root)
        store.restore_state(verified.pairs, verified.buckets)
    change = manifest.changes[0]
    header = verify_manifest(manifest, CHAIN_ID, GENESIS.validator_keys)
    store.finish_restore(5, header.hash(), [(5, manifest.header, manifest.certificate),
                                            (3, change.header, change.certificate)])


def _one_chunk(chunks: list[bytes]) -> int:
    return next(i for i, c in enumerate(chunks) if len(msgpack.unpackb(c or b"\x90")) >= 2)


def test_a_chunk_that_differs_from_its_subtree_root_is_refused(built: tuple[Ledger, Manifest, list[bytes]]) -> None:
    _, manifest, chunks = built
    i = _one_chunk(chunks)
    pairs = msgpack.unpackb(chunks[i])
    pairs[0][1] += b"x"
    with pytest.raises(SnapshotInvalid, match="does not hash to its subtree root"):
        verify_chunk(i, msgpack.packb(pairs), manifest.roots[i])
    with pytest.raises(SnapshotInvalid, match="does not hash"):
        verify_chunk(i, msgpack.packb(pairs[1:]), manifest.roots[i])  # a pair left out
    other = next(j for j, c in enumerate(chunks) if c and j != i)
    with pytest.raises(SnapshotInvalid, match="does not hash"):
        verify_chunk(other, chunks[other], manifest.roots[i])  # another subtree's root
    with pytest.raises(SnapshotInvalid, match="is empty"):
        verify_chunk(i, b"", manifest.roots[i])
    assert verify_chunk(i, chunks[i], manifest.roots[i]).pairs == [tuple(p) for p in msgpack.unpackb(chunks[i])]


def test_a_chunk_with_keys_of_another_bucket_or_out_of_order_is_refused(
        built: tuple[Ledger, Manifest, list[bytes]]) -> None:
    _, manifest, chunks = built
    i = _one_chunk(chunks)
    pairs = msgpack.unpackb(chunks[i])
    stranger = next(f"s{n}".encode() for n in range(10_000)
                    if bucket_of(key_hash(f"s{n}".encode())) // BUCKETS_PER_CHUNK != i)
    with pytest.raises(SnapshotInvalid, match="not of this chunk"):
        verify_chunk(i, msgpack.packb(pairs + [[stranger, b"v"]]), manifest.roots[i])
    with pytest.raises(SnapshotInvalid, match="key-hash order"):
        verify_chunk(i, msgpack.packb(list(reversed(pairs))), manifest.roots[i])
    with pytest.raises(SnapshotInvalid, match="above"):
        verify_chunk(i, b"\x00" * (CHUNK_BYTES_MAX + 1), manifest.roots[i])
    with pytest.raises(SnapshotInvalid, match="decode"):
        verify_chunk(i, b"\xc1", manifest.roots[i])
    with pytest.raises(SnapshotInvalid, match="list of"):
        verify_chunk(i, msgpack.packb([[b"k"]]), manifest.roots[i])


def test_a_manifest_with_a_wrong_root_or_of_the_wrong_validators_is_refused(
        built: tuple[Ledger, Manifest, list[bytes]]) -> None:
    _, manifest, _ = built
    roots = list(manifest.roots)
    j = next(k for k, r in enumerate(roots) if r == EMPTY)
    roots[j] = b"\x01" * 32
    with pytest.raises(SnapshotInvalid, match="do not fold"):
        verify_manifest(replace(manifest, roots=tuple(roots)), CHAIN_ID, GENESIS.validator_keys)
    with pytest.raises(SnapshotInvalid, match="is a change missing"):
        verify_manifest(replace(manifest, changes=()), CHAIN_ID, GENESIS.validator_keys)  # a change left out
    strangers = tuple(bytes([i]) * 32 for i in range(4))
    with pytest.raises(SnapshotInvalid, match="not the hash of the validators in force"):
        verify_manifest(manifest, CHAIN_ID, strangers)
    change = manifest.changes[0]
    forged = replace(change, validators=(*change.validators[:4], bytes(32)))
    with pytest.raises(SnapshotInvalid, match="next_validators_hash is not the hash of its validators"):
        verify_manifest(replace(manifest, changes=(forged,)), CHAIN_ID, GENESIS.validator_keys)
    with pytest.raises(SnapshotInvalid, match="below the quorum"):
        verify_manifest(replace(manifest, certificate=msgpack.packb([])), CHAIN_ID, GENESIS.validator_keys)
    with pytest.raises(SnapshotInvalid, match="chain"):
        verify_manifest(manifest, "another-chain", GENESIS.validator_keys)
    with pytest.raises(SnapshotInvalid, match="wrong types"):
        decode_manifest(msgpack.packb([1, CHAIN_ID, 5, b"", b"", [b"x"] * CHUNKS, []]))


def test_a_restore_cut_short_leaves_a_store_that_is_emptied_at_the_next_start(
        built: tuple[Ledger, Manifest, list[bytes]]) -> None:
    _, manifest, chunks = built
    kv = MemoryStore()
    Ledger(ChainStore(kv), GENESIS)  # the node opened it empty: its metadata is there
    store = ChainStore(kv)
    store.begin_restore()
    i = _one_chunk(chunks)
    verified = verify_chunk(i, chunks[i], manifest.roots[i])
    store.restore_state(verified.pairs, verified.buckets)
    kv.put(b"m/other", b"synced", sync=True)
    kv.crash()
    store = ChainStore(kv)
    assert store.restoring() and store.height() == 0
    store.abandon_restore()
    assert not store.restoring() and list(kv.iterate(b"s/")) == [] and list(kv.iterate(b"z/")) == []
    assert Ledger(store, GENESIS).height == 0


def test_snapshot_files_are_written_whole_and_the_newest_kept(tmp_path: Path) -> None:
    files = SnapshotFiles(tmp_path / "data.snapshots", keep=2)
    assert files.heights() == [] and files.manifest(10) is None
    for height in (10, 20, 30):
        files.write(height, [(b"c", EMPTY)] + [(b"", EMPTY)] * (CHUNKS - 1), lambda roots: b"m%d" % height)
    (tmp_path / "data.snapshots" / "40.tmp").mkdir()  # a write cut short
    assert files.heights() == [30, 20]
    assert files.manifest(30) == b"m30" and files.chunk(30, 0) == b"c" and files.chunk(30, 1) == b""
    assert files.chunk(30, CHUNKS) is None and files.chunk(10, 0) is None and files.manifest(40) is None


def test_a_store_far_behind_is_emptied_and_then_restored(built: tuple[Ledger, Manifest, list[bytes]]) -> None:
    original, manifest, chunks = built
    behind, _ = build_ledger()  # the same chain four blocks long, in its own store
    store = behind.store
    assert store.height() == 4
    with pytest.raises(StorageError, match="empty store only"):
        store.begin_restore()
    store.begin_restore(replace=True)
    assert store.restoring() and store.height() == 0
    assert [k for k, _ in store.kv.iterate(b"") if not k.startswith(b"m/")] == []  # blocks, state, tree: gone
    _restore_into(store, manifest, chunks)
    restored = Ledger(store, GENESIS)  # the genesis mark was kept: the same chain
    assert (restored.height, restored.base, restored.tree.root) == (5, 6, original.tree.root)


def test_a_stopped_node_is_restored_offline_from_a_snapshot_directory(
        built: tuple[Ledger, Manifest, list[bytes]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ledger, manifest, chunks = built
    SnapshotFiles(tmp_path / "backup", keep=2).write(5, zip(chunks, manifest.roots), lambda roots: manifest.encode())
    home = tmp_path / "home"
    home.mkdir()
    (home / "genesis.toml").write_text(genesis_toml())
    (home / "node.toml").write_text('name = "n"\n')
    restore = build_parser().parse_args(["snapshot", "restore", "--home", str(home), "--from",
                                          str(tmp_path / "backup" / "5")])
    restore.handler(restore)
    assert "restored the state at height 5" in capsys.readouterr().out
    kv = LevelDBStore.open(home / "data")
    restored = Ledger(ChainStore(kv), GENESIS)
    assert (restored.height, restored.base, restored.tree.root) == (5, 6, ledger.tree.root)
    kv.close()
    safety = SafetyFile.load(home / "data.safety")
    assert safety is not None and safety.record.sign_from == 6  # never signs at or below the snapshot
    safety.close()
    with pytest.raises(AllianceError, match="holds 5 blocks"):
        restore.handler(restore)


def test_a_restored_node_answers_requests_for_blocks_below_its_base_with_none(
        built: tuple[Ledger, Manifest, list[bytes]]) -> None:
    _, manifest, chunks = built
    store = ChainStore(MemoryStore())
    store.begin_restore()
    _restore_into(store, manifest, chunks)
    restored = Ledger(store, GENESIS)
    sent: list[bytes] = []
    outbox: Any = SimpleNamespace(send=lambda peer, frame: sent.append(frame))
    syncer = Syncer(restored, outbox, None, Wakeup(), on_store_damaged=pytest.fail)  # type: ignore[arg-type]
    syncer.on_get_blocks(b"p" * 32, GetBlocks(1, 64))
    syncer.on_get_blocks(b"p" * 32, GetBlocks(6, 64))
    assert [decode(frame) for frame in sent] == [Blocks(()), Blocks(())]
    verify_window(store, GENESIS)  # the start-up check of a store that holds no block yet


@pytest.mark.parametrize("spill_bytes", [SPILL_BUFFER_BYTES, 24], ids=["in-memory", "spilled"])
def test_the_writer_writes_a_snapshot_at_each_interval_that_restores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spill_bytes: int
) -> None:
    monkeypatch.setattr(snapshot_files, "SPILL_BUFFER_BYTES", spill_bytes)  # 24: most chunks' pairs go to files
    spilled: list[Path] = []
    append = snapshot_files._append

    def recording(path: Path, data: bytes | bytearray) -> None:
        spilled.append(path)
        append(path, data)

    monkeypatch.setattr(snapshot_files, "_append", recording)
    pauses: list[None] = []
    monkeypatch.setattr(snapshot_files, "_pause", lambda: pauses.append(None))
    monkeypatch.setattr(snapshot_files, "PAIRS_PER_PAUSE", 100)
    ledger = _ledger()
    files = SnapshotFiles(tmp_path / "data.snapshots", keep=2)
    metrics = Metrics()

    async def inline(fn: Any, *args: Any) -> Any:
        return fn(*args)

    writer = SnapshotWriter(ledger, files, 5, metrics, run_blocking=inline)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            await wait_until(lambda: writer._jobs.statistics().tasks_waiting_receive == 1)  # waits for a height
            writer.committed(4)  # not a multiple of the interval
            writer.committed(5)
            await wait_until(lambda: metrics.snapshots_written._value.get() == 1)
            nursery.cancel_scope.cancel()

    trio.run(main)
    assert files.heights() == [5]
    chunks = [(files.root / "5" / f"chunk-{i}").read_bytes() for i in range(CHUNKS)]
    assert chunks == _snapshot(ledger)[1]  # as built in memory at once
    assert (len(spilled) > CHUNKS // 2) == (spill_bytes < SPILL_BUFFER_BYTES)  # a small state spills nothing
    assert len(pauses) == KEYS // 100 + CHUNKS  # one after each 100 pairs read and each chunk written
    assert not [p for p in files.root.iterdir() if not p.name.isdigit()]  # no spill or temporary left
    store = ChainStore(MemoryStore())
    assert restore_directory(files.root / "5", store, GENESIS) == 5
    assert Ledger(store, GENESIS).tree.root == ledger.tree.root


def test_a_chunk_whose_sorted_pairs_are_far_above_a_chunk_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot_files, "CHUNK_BYTES_MAX", 1000)
    monkeypatch.setattr(snapshot_files, "SPILL_BUFFER_BYTES", 100)  # most of them in the spill file
    keys = [key for key in (f"k{i}".encode() for i in range(20_000)) if chunk_of(key) == 0][:30]
    groups = snapshot_files._Spill(((key, b"v" * 100) for key in keys), tmp_path)
    with pytest.raises(SnapshotInvalid, match="chunk 0 would be about"):
        groups.pairs(0)
    assert groups.pairs(1) == []
