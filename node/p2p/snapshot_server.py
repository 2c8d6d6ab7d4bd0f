"""Serving snapshots to state-syncing peers, from this node's snapshot files only (node/disk/snapshot_files.py).

Any member may ask. An unknown height or chunk is answered with a "don't have" (nil) rather than
silence, so that the asker turns to another peer at once.
"""

from __future__ import annotations

from node.disk.snapshot_files import SnapshotFiles
from node.ops.metrics import Metrics
from node.p2p.outbox import PeerOutbox
from node.p2p.wire import SNAPSHOT_HEIGHTS_MAX, Chunk, GetChunk, GetManifest, ManifestFrame, Snapshots, encode


class SnapshotServer:
    def __init__(self, files: SnapshotFiles, outbox: PeerOutbox, metrics: Metrics) -> None:
        self.files = files
        self.outbox = outbox
        self.metrics = metrics  # chunks served

    def on_get_snapshots(self, peer: bytes) -> None:
        self.outbox.send(peer, encode(Snapshots(tuple(self.files.heights()[:SNAPSHOT_HEIGHTS_MAX]))))

    def on_get_manifest(self, peer: bytes, request: GetManifest) -> None:
        self.outbox.send(peer, encode(ManifestFrame(request.height, self._manifest(request.height))))

    def _manifest(self, height: int) -> bytes | None:
        return self.files.manifest(height) if height in self.files.heights() else None

    def on_get_chunk(self, peer: bytes, request: GetChunk) -> None:
        data = self.files.chunk(request.height, request.index) if request.height in self.files.heights() else None
        if data is not None:
            self.metrics.snapshot_chunks_served.inc()
        self.outbox.send(peer, encode(Chunk(request.height, request.index, data)))
