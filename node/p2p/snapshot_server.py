"""Serving snapshots to state-syncing peers, from this node's snapshot files only (node/disk/snapshot_files.py).

Any member may ask. An unknown height or chunk is answered with a "don't have" (nil) rather than
silence, so that the asker turns to another peer at once. So that a peer asking faster than it reads
cannot make this node queue many 8 MiB chunks (or 4 MiB manifests) for it, they are answered with nil
too while the peer's send queue already holds QUEUED_FRAMES_MAX frames.
"""

from __future__ import annotations

from node.disk.snapshot_files import SnapshotFiles
from node.ops.metrics import Metrics
from node.p2p.outbox import PeerOutbox
from node.p2p.wire import SNAPSHOT_HEIGHTS_MAX, Chunk, GetChunk, GetManifest, ManifestFrame, Snapshots, encode

QUEUED_FRAMES_MAX = 16  # a state sync asks for four chunks at once at most; the rest is gossip and consensus


class SnapshotServer:
    def __init__(self, files: SnapshotFiles, outbox: PeerOutbox, metrics: Metrics) -> None:
        self.files = files
        self.outbox = outbox
        self.metrics = metrics  # chunks served

    def on_get_snapshots(self, peer: bytes) -> None:
        self.outbox.send(peer, encode(Snapshots(tuple(self.files.heights()[:SNAPSHOT_HEIGHTS_MAX]))))

    def on_get_manifest(self, peer: bytes, request: GetManifest) -> None:
        manifest = None if self._busy(peer) else self._manifest(request.height)
        self.outbox.send(peer, encode(ManifestFrame(request.height, manifest)))

    def _manifest(self, height: int) -> bytes | None:
        return self.files.manifest(height) if height in self.files.heights() else None

    def _busy(self, peer: bytes) -> bool:
        link = self.outbox.link(peer)
        return link is None or link.queue.statistics().current_buffer_used >= QUEUED_FRAMES_MAX

    def on_get_chunk(self, peer: bytes, request: GetChunk) -> None:
        served = not self._busy(peer) and request.height in self.files.heights()
        data = self.files.chunk(request.height, request.index) if served else None
        if data is not None:
            self.metrics.snapshot_chunks_served.inc()
        self.outbox.send(peer, encode(Chunk(request.height, request.index, data)))
