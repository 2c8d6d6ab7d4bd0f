"""Snapshots on disk, and writing one every `snapshot.interval_blocks` committed blocks.

A snapshot at height H is the directory `<data_dir>.snapshots/<H>/` (beside the data directory:
LevelDB's holds its own files only) with `manifest` and `chunk-<i>` for i in 0..CHUNKS-1 (an empty
subtree gives an empty file), in the format of node/chain/snapshot.py. It is written under
`<H>.tmp/`, every file fsynced, then renamed and the parent fsynced: a directory named by a height
alone is whole. The newest `snapshot.keep` are kept. A node serves snapshots only from these files.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import trio

from node.chain.block import header_from_wire
from node.chain.genesis import Genesis
from node.chain.governance import ACTIVATIONS_KEY, ReadState
from node.chain.ledger import Ledger
from node.chain.canonical import pack_flat, unpack
from node.chain.snapshot import (
    CHUNK_BYTES_MAX, CHUNKS, Manifest, SnapshotInvalid, ValidatorChange, chunk_of, decode_manifest,
    encode_chunk, fold_roots, verify_chunk, verify_manifest,
)
from node.disk.filesync import sync_directory, write_all
from node.disk.safety_file import UNKNOWN, SafetyRecord
from node.ops.metrics import Metrics
from storage.chain import ChainStore, StateView
from storage.kv import StorageError

log = logging.getLogger("alliance.snapshot")

MANIFEST_FILE = "manifest"
SPILL_BUFFER_BYTES = 64 * 1024  # per chunk, while the state is sorted into chunks
# A snapshot is background work: its writer pauses after each chunk (its file synced) and after every
# PAIRS_PER_PAUSE pairs read, so that the synced writes of consensus on the same disk and the event
# loop on the same cores do not wait behind it. At 1,000 tx/s on 2 cores a 20,000-key snapshot without
# pauses held blocks up to 5 times as long for half a second (p99 20 -> 100 ms); with pauses of 5 ms, 30 to 40 ms.
PAUSE_S = 0.005
PAIRS_PER_PAUSE = 1024
T = TypeVar("T")


def snapshot_root(data_dir: Path) -> Path:
    """`<data_dir>.snapshots`: where a node keeps its snapshots."""
    return data_dir.with_name(data_dir.name + ".snapshots")


class SnapshotFiles:
    """The snapshots in one directory: listed, read and written whole."""

    def __init__(self, root: Path, keep: int) -> None:
        self.root = root
        self.keep = keep  # the newest this many are kept

    def heights(self) -> list[int]:
        """The heights of the whole snapshots, newest first."""
        try:
            names = [p.name for p in self.root.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []
        return sorted((int(n) for n in names if n.isascii() and n.isdigit()), reverse=True)

    def manifest(self, height: int) -> bytes | None:
        return self._read(height, MANIFEST_FILE)

    def chunk(self, height: int, index: int) -> bytes | None:
        return self._read(height, f"chunk-{index}") if 0 <= index < CHUNKS else None

    def _read(self, height: int, name: str) -> bytes | None:
        try:
            return (self.root / str(height) / name).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write(self, height: int, chunks: Iterable[tuple[bytes, bytes]],
              manifest: Callable[[list[bytes]], bytes]) -> Path:
        """Writes a snapshot whole: the chunks as they come ((chunk, subtree root) in order), then the
        manifest of their roots, in a temporary directory, synced, renamed; then drops the oldest beyond `keep`."""
        self.root.mkdir(parents=True, exist_ok=True)
        final, tmp = self.root / str(height), self.root / f"{height}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            roots = []
            for i, (chunk, root) in enumerate(chunks):
                _write_synced(tmp / f"chunk-{i}", chunk)
                roots.append(root)
            _write_synced(tmp / MANIFEST_FILE, manifest(roots))
            sync_directory(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        sync_directory(self.root)
        for old in self.heights()[self.keep:]:
            shutil.rmtree(self.root / str(old), ignore_errors=True)
        return final


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def validator_changes(ledger: Ledger, height: int) -> list[ValidatorChange]:
    """The certified last blocks of each validator set before `height`, with the set after each."""
    changes = []
    for activation in ReadState(ledger.read_state).get(ACTIVATIONS_KEY) or []:
        if activation > height:
            break
        new = ledger.members(activation).validator_keys
        if new == ledger.members(activation - 1).validator_keys:
            continue
        certificate = ledger.store.load_certificate(activation - 1)
        if certificate is None:
            raise StorageError(f"the certificate of block {activation - 1} is missing from the store")
        changes.append(ValidatorChange(ledger.header(activation - 1).encode(), certificate, new))
    return changes


class SnapshotWriter:
    """Writes a snapshot at every `interval`-th committed height, off the event loop, one at a time:
    a height reached while one is being written gets none."""

    def __init__(self, ledger: Ledger, files: SnapshotFiles, interval: int, metrics: Metrics,
                 run_blocking: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync) -> None:
        self.ledger = ledger
        self.files = files
        self.interval = interval  # 0: none
        self.metrics = metrics  # snapshots written
        self.run_blocking = run_blocking
        self._jobs, self._next = trio.open_memory_channel[tuple[Manifest, StateView]](0)
        self._stopping = threading.Event()

    def committed(self, height: int) -> None:
        """Told each committed height (on the event loop, before the next commit)."""
        if not self.interval or height % self.interval:
            return
        view = self.ledger.store.state_view()  # the state at `height`: a commit may follow before it is read
        try:
            if view.height != height:
                raise StorageError(f"the store is at {view.height}, not {height}")
            certificate = self.ledger.store.load_certificate(height)
            if certificate is None:
                raise StorageError(f"the certificate of block {height} is missing")
            manifest = Manifest(self.ledger.genesis.chain_id, height, self.ledger.header(height).encode(),
                                certificate, (), tuple(validator_changes(self.ledger, height)))
            self._jobs.send_nowait((manifest, view))
        except trio.WouldBlock:
            view.close()
            log.info("event=snapshot_skipped height=%d reason=%r", height, "another snapshot is being written")
        except StorageError as exc:
            view.close()
            log.warning("event=snapshot_failed height=%d reason=%r", height, str(exc))

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._stop_when_cancelled)
            await self._write_each()

    async def _stop_when_cancelled(self) -> None:
        """Tells a write in progress to stop as the node stops: its thread is not cancelled by trio."""
        try:
            await trio.sleep_forever()
        finally:
            self._stopping.set()

    async def _write_each(self) -> None:
        async for manifest, view in self._next:
            try:
                path = await self.run_blocking(self._write, manifest, view)
            except (OSError, StorageError, SnapshotInvalid) as exc:
                log.warning("event=snapshot_failed height=%d reason=%r", manifest.height, str(exc))
            else:
                self.metrics.snapshots_written.inc()
                log.info("event=snapshot_written height=%d path=%s", manifest.height, path)

    def _write(self, manifest: Manifest, view: StateView) -> Path:
        self.files.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="spill-", dir=self.files.root) as spill:
            try:
                groups = _Spill(self._paced(view.pairs(), PAIRS_PER_PAUSE), Path(spill))
            finally:
                view.close()
            state_root = self.ledger.header(manifest.height).state_root

            def whole(roots: list[bytes]) -> bytes:
                if fold_roots(roots) != state_root:
                    raise SnapshotInvalid("the state read does not hash to the block's state_root")
                return replace(manifest, roots=tuple(roots)).encode()

            chunks = (encode_chunk(i, groups.pairs(i)) for i in self._paced(range(CHUNKS), 1))
            return self.files.write(manifest.height, chunks, whole)

    def _paced(self, items: Iterable[T], per_pause: int) -> Iterator[T]:
        """`items`, with a pause of PAUSE_S after every `per_pause` of them; StorageError once the node stops."""
        for n, item in enumerate(items, 1):
            if self._stopping.is_set():
                raise StorageError("the node is stopping")
            yield item
            if n % per_pause == 0:
                _pause()


def _pause() -> None:
    time.sleep(PAUSE_S)


class _Spill:
    """The state's pairs sorted into one group per chunk, unordered. Each group stays in memory up to
    SPILL_BUFFER_BYTES and goes on in a file of `directory` beyond: memory stays within a buffer per
    chunk, and a small state touches no file (where every snapshot wrote and deleted 256 more)."""

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]], directory: Path) -> None:
        self.directory = directory
        self.buffers = [bytearray() for _ in range(CHUNKS)]
        self.spilled: set[int] = set()
        for key, value in pairs:
            index = chunk_of(key)
            buffer = self.buffers[index]
            buffer += pack_flat([key, value])
            if len(buffer) > SPILL_BUFFER_BYTES:
                _append(directory / str(index), buffer)
                buffer.clear()
                self.spilled.add(index)

    def pairs(self, index: int) -> list[tuple[bytes, bytes]]:
        """The pairs of chunk `index`; SnapshotInvalid when they are far more than a chunk may hold."""
        path = self.directory / str(index)
        size = (path.stat().st_size if index in self.spilled else 0) + len(self.buffers[index])
        if size > 2 * CHUNK_BYTES_MAX:
            raise SnapshotInvalid(f"chunk {index} would be about {size} bytes, above {CHUNK_BYTES_MAX}")
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=2 * CHUNK_BYTES_MAX)
        if index in self.spilled:
            unpacker.feed(path.read_bytes())
        unpacker.feed(self.buffers[index])
        return [(key, value) for key, value in unpacker]


def _append(path: Path, data: bytes | bytearray) -> None:
    with path.open("ab") as f:
        f.write(data)


def restored_record(record: SafetyRecord, height: int) -> SafetyRecord:
    """The safety record of a node whose store was restored at `height`: it never signs at or below it."""
    sign_from = UNKNOWN if record.sign_from == UNKNOWN else max(record.sign_from, height + 1)
    return SafetyRecord(max(record.committed, height), sign_from, record.safety_bytes)


def restore_directory(directory: Path, store: ChainStore, genesis: Genesis) -> int:
    """Restores the snapshot in `directory` (a `<height>/` of snapshot files) into the empty `store`,
    each part checked against the genesis; the restored height. Raises SnapshotInvalid, OSError."""
    manifest = decode_manifest((directory / MANIFEST_FILE).read_bytes())
    header = verify_manifest(manifest, genesis.chain_id, genesis.validator_keys)
    store.begin_restore()
    try:
        for index, root in enumerate(manifest.roots):
            path = directory / f"chunk-{index}"
            verified = verify_chunk(index, path.read_bytes() if path.exists() else b"", root)
            store.restore_state(verified.pairs, verified.buckets)
        headers = [(manifest.height, manifest.header, manifest.certificate)] + [
            (header_from_wire(unpack(c.header)).height, c.header, c.certificate) for c in manifest.changes]
        store.finish_restore(manifest.height, header.hash(), headers)
    except BaseException:
        store.abandon_restore()
        raise
    return manifest.height
