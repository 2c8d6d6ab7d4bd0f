"""consensus_state of the client protocol: this node's view of the round it is deciding ("why is it stuck")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from consensus.replica import Replica
from node.api.jsonrpc import Params
from node.api.params import check_names
from node.chain.ledger import Ledger
from node.pipeline.consensus_watch import ConsensusWatch, waiting_for

Method = Callable[[Params], Awaitable[Any]]


class Connections(Protocol):
    """The p2p layer's open sessions (the peers' outbox)."""

    def connected(self, peer: bytes) -> bool: ...


class ConsensusMethods:
    """consensus_state over the replica, what the driver watched of each validator, and the p2p sessions."""

    def __init__(self, ledger: Ledger, replica: Replica, watch: ConsensusWatch, links: Connections) -> None:
        self.ledger = ledger  # the members' names
        self.replica = replica
        self.watch = watch
        self.links = links

    def methods(self) -> dict[str, Method]:
        return {"consensus_state": self._consensus_state}

    async def _consensus_state(self, params: Params) -> Any:
        check_names(params, ())
        return self.state()

    def state(self) -> dict[str, Any]:
        replica = self.replica
        height, view = replica.height, replica.round
        validators = replica.validators
        leader = replica.proposer(height, view) if validators else None
        members = self.ledger.members(min(height, self.ledger.height + 1)).validators
        names = {m.pubkey: m.name for m in members}
        return {
            "height": height, "view": view, "leader": None if leader is None else leader.hex(),
            "validators": [
                self.watch.validator(key, names.get(key, ""), key == replica.me or self.links.connected(key))
                for key in validators
            ],
            "waiting_for": waiting_for(replica.tally(), height, validators, leader, names),
        }
