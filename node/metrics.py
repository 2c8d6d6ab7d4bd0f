"""The Prometheus series of the client protocol, in a registry of the node's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

COMMIT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.chain_height = Gauge("alliance_chain_height", "Height of the last committed block.", registry=r)
        self.txs_committed = Counter("alliance_txs_committed", "Transactions committed in blocks.", registry=r)
        self.txs_rejected = Counter(
            "alliance_txs_rejected", "Transactions refused at send_tx, by reason.", ["reason"], registry=r
        )
        self.mempool_txs = Gauge("alliance_mempool_txs", "Transactions waiting in the mempool.", registry=r)
        self.consensus_view = Gauge("alliance_consensus_view", "Current round (view) at the current height.", registry=r)
        self.view_changes = Counter(
            "alliance_consensus_view_changes", "Moves to a higher round within a height.", registry=r
        )
        self.peers_connected = Gauge("alliance_peers_connected", "Peers with an open session.", registry=r)
        self.block_commit_seconds = Histogram(
            "alliance_block_commit_seconds", "Time from proposal to commit of a block.",
            buckets=COMMIT_BUCKETS_S, registry=r,
        )
        self.rpc_requests = Counter(
            "alliance_rpc_requests", "JSON-RPC calls by method and outcome.", ["method", "outcome"], registry=r
        )
        self.messages_dropped = Counter(
            "alliance_consensus_messages_dropped", "Consensus messages dropped, by reason.", ["reason"], registry=r
        )

        self.p2p_sessions_refused = Counter(
            "alliance_p2p_sessions_refused", "Incoming connections that failed the member handshake.", registry=r
        )
        self.p2p_frames_dropped = Counter(
            "alliance_p2p_frames_dropped", "Frames not sent because a peer's send queue was full.", registry=r
        )
        self.p2p_frames_malformed = Counter(
            "alliance_p2p_frames_malformed", "Frames from members that did not decode.", registry=r
        )

        self.ws_connections = Gauge("alliance_ws_connections", "Open WebSocket connections at /ws.", registry=r)
        self.ws_subscriptions = Gauge(
            "alliance_ws_subscriptions", "Live event subscriptions, by topic.", ["topic"], registry=r
        )
        self.ws_subscribers_dropped = Counter(
            "alliance_ws_subscribers_dropped",
            "WebSocket connections dropped for falling too many notifications behind.", registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
