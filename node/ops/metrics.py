"""The Prometheus series of the client protocol, in a registry of the node's own."""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector, generate_latest,
)

from node.version import VERSION

COMMIT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Every label value the node can give, exported at 0 from the start so that rate() and alerts see
# a series before the first event. Reasons of a refused send_tx (the spec's data.reason, and the
# other refusal codes); JSON-RPC methods (HTTP and WebSocket), "invalid" and "unknown" being the
# calls without a valid method; and why consensus messages were dropped (node and replica).
TX_REJECTION_REASONS = (
    "malformed", "not_canonical", "bad_signature", "wrong_chain_id", "oversize",
    "unauthorised", "duplicate", "mempool_full", "not_a_member", "invalid_params",
)
RPC_METHODS = (
    "status", "send_tx", "get_tx", "get_block", "get_proof", "query", "get_members", "get_proposal", "get_history",
    "subscribe", "unsubscribe", "consensus_state",
)
VIEW_CHANGE_REASONS = ("timeout", "round_changes", "proposal", "resumed")  # node/pipeline/driver.py
RPC_NON_METHODS = ("invalid", "unknown")
MESSAGE_DROP_REASONS = (
    "malformed", "sender_mismatch", "decided", "queue_full",
    "bad_seal", "bad_signature", "far_height", "far_round", "invalid_block", "invalid_proposal",
    "invalid_round_change", "invalid_validator_set", "non_member", "old", "sender_over_limit",
    "unjustified_proposal",
)
# Why the RPC listener refused a request or /ws handshake (node/api/access.py): 401 and 403.
RPC_REFUSAL_REASONS = ("unauthenticated", "forbidden")
# Why a state-syncing node refused a snapshot chunk (node/chain/snapshot.py checks it).
CHUNK_REFUSAL_REASONS = ("invalid", "missing")


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ... (Linux)
        PlatformCollector(registry=r)  # python_info
        Gauge("alliance_build_info", "The node's version; always 1.", ["version", "python"], registry=r).labels(
            VERSION, platform.python_version()).set(1)
        self.validators = Gauge(
            "alliance_validators", "Validators in force for the next block (n; a quorum is 2f+1).", registry=r
        )
        self.observers = Gauge("alliance_observers", "Observers in force for the next block.", registry=r)
        self.gov_proposals_pending = Gauge(
            "alliance_gov_proposals_pending", "Governance proposals open or passed but not in force yet.", registry=r
        )
        self.peers_best_height = Gauge(
            "alliance_peers_best_height", "Highest height a connected peer has announced.", registry=r
        )
        self.chain_height = Gauge("alliance_chain_height", "Height of the last committed block.", registry=r)
        self.txs_committed = Counter("alliance_txs_committed", "Transactions committed in blocks.", registry=r)
        self.txs_rejected = Counter(
            "alliance_txs_rejected", "Transactions refused at send_tx, by reason.", ["reason"], registry=r
        )
        self.mempool_txs = Gauge("alliance_mempool_txs", "Transactions waiting in the mempool.", registry=r)
        self.mempool_txs_max = Gauge("alliance_mempool_txs_max", "Capacity of the mempool (mempool.txs_max).", registry=r)
        self.consensus_view = Gauge("alliance_consensus_view", "Current round (view) at the current height.", registry=r)
        self.view_changes = Counter(
            "alliance_consensus_view_changes", "Moves to a higher round within a height, by reason: its round "
            "timer expired (timeout), it joined later rounds on others' round changes (round_changes) or on a "
            "justified proposal (proposal), or it resumed a round after a restart (resumed).", ["reason"], registry=r
        )
        for reason in VIEW_CHANGE_REASONS:
            self.view_changes.labels(reason)
        self.peers_connected = Gauge("alliance_peers_connected", "Peers with an open session.", registry=r)
        self.block_commit_seconds = Histogram(
            "alliance_block_commit_seconds", "Time from proposal to commit of a block.",
            buckets=COMMIT_BUCKETS_S, registry=r,
        )
        self.rpc_requests = Counter(
            "alliance_rpc_requests", "JSON-RPC calls by method and outcome.", ["method", "outcome"], registry=r
        )
        self.rpc_refused = Counter(
            "alliance_rpc_refused", "RPC requests and /ws handshakes refused by access control, by reason.",
            ["reason"], registry=r,
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

        self.snapshots_written = Counter(
            "alliance_snapshots_written", "State snapshots written to the snapshot directory.", registry=r
        )
        self.snapshot_chunks_served = Counter(
            "alliance_snapshot_chunks_served", "Snapshot chunks sent to state-syncing peers.", registry=r
        )
        self.snapshot_chunks_refused = Counter(
            "alliance_snapshot_chunks_refused", "Snapshot chunks a state sync refused, by reason.", ["reason"],
            registry=r,
        )

        self.ws_connections = Gauge("alliance_ws_connections", "Open WebSocket connections at /ws.", registry=r)
        self.ws_subscriptions = Gauge(
            "alliance_ws_subscriptions", "Live event subscriptions, by topic.", ["topic"], registry=r
        )
        self.ws_subscribers_dropped = Counter(
            "alliance_ws_subscribers_dropped",
            "WebSocket connections dropped for falling too many notifications behind.", registry=r,
        )

        self._zero_labels()

    def _zero_labels(self) -> None:
        for reason in TX_REJECTION_REASONS:
            self.txs_rejected.labels(reason)
        for method in RPC_METHODS:
            for outcome in ("ok", "error"):
                self.rpc_requests.labels(method, outcome)
        for method in RPC_NON_METHODS:
            self.rpc_requests.labels(method, "error")
        for reason in MESSAGE_DROP_REASONS:
            self.messages_dropped.labels(reason)
        for reason in RPC_REFUSAL_REASONS:
            self.rpc_refused.labels(reason)
        for reason in CHUNK_REFUSAL_REASONS:
            self.snapshot_chunks_refused.labels(reason)

    def render(self) -> bytes:
        return generate_latest(self.registry)
