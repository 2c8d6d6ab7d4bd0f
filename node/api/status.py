"""What a node says of itself: the status object (RPC `status`), its peers, and why it is not ready."""

from __future__ import annotations

from typing import Any

import trio

from consensus.quorum import quorum
from consensus.replica import Replica
from node.chain.genesis import Genesis
from node.chain.ledger import Ledger
from node.chain.membership import Membership
from node.config import NodeConfig
from node.p2p.outbox import PeerOutbox
from node.p2p.sync import Syncer
from node.version import VERSION


class NodeStatus:
    def __init__(
        self,
        config: NodeConfig,
        genesis: Genesis,
        ledger: Ledger,
        replica: Replica,
        outbox: PeerOutbox,
        syncer: Syncer,
        storage_closed: trio.Event,
        joined: dict[str, str],
    ) -> None:
        self.config = config
        self.genesis = genesis
        self.ledger = ledger
        self.replica = replica
        self.outbox = outbox  # who is connected
        self.syncer = syncer  # what the peers have reached
        self.storage_closed = storage_closed  # set once the node stopped
        self.joined = joined  # how the node got its state: {"mode": "state"|"blocks", "state_sync": what it did}

    @property
    def storage_open(self) -> bool:
        return not self.storage_closed.is_set()

    def members(self) -> Membership:
        """The membership that decides the next block."""
        return self.ledger.members(self.ledger.height + 1)

    def peers(self) -> list[dict[str, Any]]:
        me = self.replica.me
        return [
            {"name": m.name, "pubkey": m.pubkey.hex(), "connected": self.outbox.connected(m.pubkey)}
            for m in self.members().validators if m.pubkey != me
        ]

    def status(self) -> dict[str, Any]:
        replica = self.replica
        return {
            "chain_id": self.genesis.chain_id,
            "node": {"name": self.config.name, "pubkey": replica.me.hex()},
            "height": self.ledger.height,
            "last_block_hash": self.ledger.last_hash.hex(),
            "view": replica.round,
            "leader": replica.proposer(replica.height, replica.round).hex(),
            "validators": [m.pubkey.hex() for m in self.members().validators],
            "peers": self.peers(),
            "syncing": self.syncer.syncing,
            "sync": self.sync(),
            "version": VERSION,
        }

    def sync(self) -> dict[str, Any]:
        """How the node got its state, and the lowest height whose block it holds."""
        return {**self.joined, "base": self.ledger.base}

    def readiness(self) -> list[str]:
        """Why the node is not ready; empty when it is."""
        validators = self.members().validator_keys
        connected = (self.replica.me in validators) + sum(p["connected"] for p in self.peers())
        needed = quorum(len(validators))
        reasons = []
        if connected < needed:
            reasons.append(f"connected to {connected} of {needed} validators needed for a quorum")
        best = self.syncer.peers_height
        if self.syncer.syncing or best > self.ledger.height + 1:
            reasons.append(f"catching up: at height {self.ledger.height} of {best}")
        if not self.storage_open:
            reasons.append("storage is closed")
        return reasons
