"""The membership methods of the client protocol (get_members, get_proposal) and its gauges.

Both read the governance state of the last committed block. `pending` is that state's: the
proposals still open at the tip and those passed but not in force yet, whatever height was asked
(the state keeps no earlier approvals)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from node.api.jsonrpc import NOT_FOUND, Params, RpcError
from node.api.params import check_names, hash_param, height_param
from node.chain.governance import (
    GovernanceCorrupt, Proposal, ReadState, load_proposal, open_proposals, scheduled_proposals,
)
from node.chain.ledger import Ledger
from node.ops.metrics import Metrics
from storage.kv import StoreCorrupt

Method = Callable[[Params], Awaitable[Any]]


@contextlib.contextmanager
def _damage_is_store_corrupt() -> Iterator[None]:
    """A governance entry that does not decode is a damaged store: the node's damage path stops it."""
    try:
        yield
    except GovernanceCorrupt as exc:
        raise StoreCorrupt(str(exc)) from exc


def pending_proposals(ledger: Ledger, tip: int) -> list[Proposal]:
    """Proposals open at the tip (not expired), then those passed but not in force yet, in passing order."""
    state = ReadState(ledger.read_state)
    still_open = [p for p in open_proposals(state) if p.status(tip) == "open"]
    return still_open + scheduled_proposals(state)


class MemberMethods:
    """get_members and get_proposal over the committed chain."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def methods(self) -> dict[str, Method]:
        return {"get_members": self._get_members, "get_proposal": self._get_proposal}

    async def _get_members(self, params: Params) -> Any:
        check_names(params, (), ("height",))
        tip = self.ledger.height
        height = height_param(params.get("height", "latest"), tip)
        if height > tip:
            raise RpcError(NOT_FOUND, f"no block at height {height}: the chain is at {tip}")
        with _damage_is_store_corrupt():
            members = self.ledger.genesis.members if height == 0 else self.ledger.members(height)
            pending = pending_proposals(self.ledger, tip)
        return {
            "height": height, **members.to_json(),
            "pending": [
                {"proposal": p.id.hex(), "change": p.change.to_json(), "approvals": [a.hex() for a in p.approvals],
                 "activation": p.activation}
                for p in pending
            ],
        }

    async def _get_proposal(self, params: Params) -> Any:
        check_names(params, ("proposal",))
        proposal_id = hash_param(params, "proposal")
        tip = self.ledger.height
        with _damage_is_store_corrupt():
            proposal = load_proposal(ReadState(self.ledger.read_state), proposal_id)
        if proposal is None:
            raise RpcError(NOT_FOUND, f"no proposal {proposal_id.hex()}")
        return proposal.to_json(tip)


class MembershipGauges:
    """alliance_validators, alliance_observers and alliance_gov_proposals_pending, set after each commit."""

    def __init__(self, ledger: Ledger, metrics: Metrics) -> None:
        self.ledger = ledger
        self.metrics = metrics

    def committed(self, height: int) -> None:
        """Sets the gauges for the chain once block `height` is committed (0: a chain without blocks yet):
        the membership that decides the next block, and the proposals pending. Raises GovernanceCorrupt
        if the governance state is damaged."""
        members = self.ledger.members(height + 1)
        self.metrics.validators.set(len(members.validators))
        self.metrics.observers.set(len(members.observers))
        self.metrics.gov_proposals_pending.set(len(pending_proposals(self.ledger, height)))
