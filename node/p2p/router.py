"""Hands each decoded frame from a peer to the component that handles its kind."""

from __future__ import annotations

from typing import Protocol

from consensus.events import MessageReceived
from node.ops.metrics import Metrics
from node.p2p.fetch import TxFetcher
from node.p2p.gossip import TxGossip
from node.p2p.snapshot_server import SnapshotServer
from node.p2p.sync import Syncer
from node.p2p.wire import (
    Blocks, Consensus, FoundTxs, GetBlocks, GetChunk, GetManifest, GetSnapshots, GetTxs, Message, Status, Txs,
)


class ConsensusInbox(Protocol):
    """Where peers' consensus messages go (the consensus loop's Inbox)."""

    def feed(self, event: MessageReceived) -> None: ...


class Router:
    def __init__(
        self, syncer: Syncer, gossip: TxGossip, fetcher: TxFetcher, consensus: ConsensusInbox, metrics: Metrics,
        snapshots: SnapshotServer,
    ) -> None:
        self.syncer = syncer
        self.gossip = gossip
        self.fetcher = fetcher
        self.consensus = consensus
        self.metrics = metrics
        self.snapshots = snapshots

    def route(self, peer: bytes, message: Message) -> None:
        if isinstance(message, Consensus):
            self.on_consensus(peer, message)
        elif isinstance(message, Status):
            self.syncer.on_status(peer, message)
        elif isinstance(message, Txs):
            self.gossip.on_txs(peer, message)
        elif isinstance(message, GetBlocks):
            self.syncer.on_get_blocks(peer, message)
        elif isinstance(message, Blocks):
            self.syncer.on_blocks(peer, message)
        elif isinstance(message, GetTxs):
            self.fetcher.on_get_txs(peer, message)
        elif isinstance(message, FoundTxs):
            self.fetcher.on_found_txs(peer, message)
        elif isinstance(message, GetSnapshots):
            self.snapshots.on_get_snapshots(peer)
        elif isinstance(message, GetManifest):
            self.snapshots.on_get_manifest(peer, message)
        elif isinstance(message, GetChunk):
            self.snapshots.on_get_chunk(peer, message)

    def on_consensus(self, peer: bytes, message: Consensus) -> None:
        signed = message.signed
        if signed.sender != peer:
            self.metrics.messages_dropped.labels("sender_mismatch").inc()
        elif self.syncer.syncing and signed.message.height <= self.syncer.best_height:
            self.metrics.messages_dropped.labels("decided").inc()  # catch-up brings that height
        else:
            self.consensus.feed(MessageReceived(signed))
