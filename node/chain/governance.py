"""The `gov` family: proposals, approvals and the activation of passed changes, all in the state.

State keys (values canonical MessagePack):
  gv/members            the membership in force (absent: the genesis one), `Membership.wire()`
  gv/activations        [height, ...]: the heights at which a membership took effect, ascending
  gv/at/<height: 8 bytes big-endian>   the membership in force from that height
  gv/scheduled          [[activation, proposal], ...]: passed changes not in force yet, in passing order
  gv/open               [proposal, ...]: proposals still open (some may have expired)
  gv/p/<proposal>       [proposer, change, [approver, ...], height, expires or nil, activation or nil]

A change that passes in block p is in force from block p + ACTIVATION_DELAY: the
validators of heights up to h + 2 are known once block h is, so a replica is told
the set of a height before it gets there.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from node.chain.canonical import CodecError, unpack
from node.chain.membership import (
    Change, ChangeMalformed, ChangeRefused, Membership, apply_change, membership_from_wire, parse_change,
)
from node.chain.tx import Transaction

ACTIVATION_DELAY = 2
# Open proposals an admin may have at once: no admin can crowd out the others' proposals,
# and what a propose reads stays bounded.
OPEN_PROPOSALS_PER_ADMIN = 16
BAD_ARGS, NOT_ADMIN, NOT_OPEN, NOT_ALLOWED, ALREADY_APPROVED = 1, 5, 6, 7, 8

MEMBERS_KEY = b"gv/members"
ACTIVATIONS_KEY = b"gv/activations"
HISTORY_PREFIX = b"gv/at/"
SCHEDULED_KEY = b"gv/scheduled"
OPEN_KEY = b"gv/open"
PROPOSAL_PREFIX = b"gv/p/"

Reader = Callable[[bytes], bytes | None]


class GovState(Protocol):
    """The state as a block's execution sees it: decoded reads, writes that pack."""

    def get(self, key: bytes) -> Any: ...

    def put(self, key: bytes, value: Any) -> None: ...


class GovernanceCorrupt(ValueError):
    """A governance state entry that does not decode: the store is damaged."""


@dataclass(frozen=True, slots=True)
class Proposal:
    id: bytes
    proposer: bytes
    change: Change
    approvals: tuple[bytes, ...]
    height: int
    expires: int | None
    activation: int | None

    def status(self, height: int) -> str:
        """open, passed, active or expired, as of the block at `height`."""
        if self.activation is not None:
            return "active" if height >= self.activation else "passed"
        return "expired" if self.expires is not None and height > self.expires else "open"

    def wire(self) -> list[Any]:
        return [self.proposer, self.change.wire(), list(self.approvals), self.height, self.expires, self.activation]

    def to_json(self, height: int) -> dict[str, Any]:
        return {
            "proposal": self.id.hex(), "proposer": self.proposer.hex(), "change": self.change.to_json(),
            "approvals": [a.hex() for a in self.approvals], "status": self.status(height),
            "height": self.height, "activation": self.activation,
        }


def proposal_key(proposal: bytes) -> bytes:
    return PROPOSAL_PREFIX + proposal


def history_key(height: int) -> bytes:
    return HISTORY_PREFIX + height.to_bytes(8, "big")


# ---- reading the membership ---------------------------------------------------------


def current_members(state: GovState, genesis: Membership) -> Membership:
    raw = state.get(MEMBERS_KEY)
    return genesis if raw is None else _membership(raw)


def upcoming_members(state: GovState, genesis: Membership, height: int) -> Membership:
    """The membership at `height`, for a state whose last block is below it (or at it): the current
    one with the changes scheduled up to `height` applied in order."""
    members = current_members(state, genesis)
    for activation, proposal in state.get(SCHEDULED_KEY) or ():
        if activation <= height:
            members = apply_change(members, _proposal(state, proposal).change)
    return members


def past_members(state: GovState, genesis: Membership, height: int) -> Membership:
    """The membership that was in force at `height`, at or below the state's last block."""
    activations = state.get(ACTIVATIONS_KEY) or []
    i = bisect_right(activations, height)
    return genesis if i == 0 else _membership(state.get(history_key(activations[i - 1])))


def projected_members(state: GovState, genesis: Membership) -> Membership:
    """The membership once every passed change is in force: what a new change must fit."""
    return upcoming_members(state, genesis, 2**63)


def load_proposal(state: GovState, proposal: bytes) -> Proposal | None:
    raw = state.get(proposal_key(proposal))
    return None if raw is None else _decode_proposal(proposal, raw)


def open_proposals(state: GovState) -> list[Proposal]:
    return [_proposal(state, p) for p in state.get(OPEN_KEY) or ()]


def change_scheduled(state: GovState) -> bool:
    """A passed change waits for its activation height: blocks are worth making, even empty ones."""
    return bool(state.get(SCHEDULED_KEY))


def scheduled_proposals(state: GovState) -> list[Proposal]:
    return [_proposal(state, p) for _, p in state.get(SCHEDULED_KEY) or ()]


def _proposal(state: GovState, proposal: bytes) -> Proposal:
    found = load_proposal(state, proposal)
    if found is None:
        raise GovernanceCorrupt(f"proposal {proposal.hex()} is listed but not stored")
    return found


def _membership(raw: Any) -> Membership:
    try:
        return membership_from_wire(raw)
    except ValueError as exc:
        raise GovernanceCorrupt(f"membership in the state: {exc}") from None


def _decode_proposal(proposal: bytes, raw: Any) -> Proposal:
    try:
        proposer, change, approvals, height, expires, activation = raw
        return Proposal(proposal, proposer, parse_change(change), tuple(approvals), height, expires, activation)
    except (ValueError, TypeError, ChangeMalformed) as exc:
        raise GovernanceCorrupt(f"proposal {proposal.hex()} in the state: {exc}") from None


# ---- executing a block --------------------------------------------------------------


def activate(state: GovState, genesis: Membership, height: int) -> None:
    """Puts in force, before a block's transactions run, the changes scheduled for its height."""
    scheduled = state.get(SCHEDULED_KEY) or []
    due = [p for activation, p in scheduled if activation <= height]
    if not due:
        return
    members = current_members(state, genesis)
    for proposal in due:
        members = apply_change(members, _proposal(state, proposal).change)  # fitted when it passed
    state.put(MEMBERS_KEY, members.wire())
    state.put(history_key(height), members.wire())
    state.put(ACTIVATIONS_KEY, (state.get(ACTIVATIONS_KEY) or []) + [height])
    state.put(SCHEDULED_KEY, [entry for entry in scheduled if entry[0] > height])


def propose(state: GovState, genesis: Membership, tx: Transaction, height: int) -> tuple[int, str]:
    members = current_members(state, genesis)
    if tx.sender not in members.admin_keys:
        return NOT_ADMIN, "only an admin may propose"
    if not set(tx.args) <= {"change", "expires"} or "change" not in tx.args:
        return BAD_ARGS, "propose takes change: map and optional expires: int"
    expires = tx.args.get("expires")
    if "expires" in tx.args and (type(expires) is not int or not height <= expires < 2**63):
        return BAD_ARGS, f"expires must be an integer height from {height} to 2**63-1"
    try:
        change = parse_change(tx.args["change"])
        apply_change(projected_members(state, genesis), change)
    except ChangeMalformed as exc:
        return BAD_ARGS, str(exc)
    except ChangeRefused as exc:
        return NOT_ALLOWED, str(exc)
    still_open = [p for p in open_proposals(state) if p.status(height) == "open"]
    if sum(p.proposer == tx.sender for p in still_open) >= OPEN_PROPOSALS_PER_ADMIN:
        return NOT_ALLOWED, f"this admin has {OPEN_PROPOSALS_PER_ADMIN} open proposals already"
    proposal = Proposal(tx.hash, tx.sender, change, (tx.sender,), height, expires, None)
    state.put(OPEN_KEY, [p.id for p in still_open] + [tx.hash])
    return _record_approval(state, genesis, proposal, members, height)


def approve(state: GovState, genesis: Membership, tx: Transaction, height: int) -> tuple[int, str]:
    members = current_members(state, genesis)
    if tx.sender not in members.admin_keys:
        return NOT_ADMIN, "only an admin may approve"
    target = tx.args.get("proposal")
    if set(tx.args) != {"proposal"} or not isinstance(target, bytes) or len(target) != 32:
        return BAD_ARGS, "approve takes proposal: bin (32 bytes)"
    proposal = load_proposal(state, target)
    if proposal is None or proposal.status(height) != "open":
        status = "unknown" if proposal is None else proposal.status(height)
        return NOT_OPEN, f"proposal {target.hex()} is {status}"
    if tx.sender in proposal.approvals:
        return ALREADY_APPROVED, "this admin approved the proposal already"
    approved = Proposal(proposal.id, proposal.proposer, proposal.change, proposal.approvals + (tx.sender,),
                        proposal.height, proposal.expires, None)
    return _record_approval(state, genesis, approved, members, height)


def _record_approval(
    state: GovState, genesis: Membership, proposal: Proposal, members: Membership, height: int
) -> tuple[int, str]:
    """Stores the proposal with its approvals; the one that reaches the threshold passes it."""
    if len(members.admin_keys.intersection(proposal.approvals)) < members.admin_threshold:
        state.put(proposal_key(proposal.id), proposal.wire())
        return 0, ""
    try:
        apply_change(projected_members(state, genesis), proposal.change)
    except ChangeRefused as exc:
        return NOT_ALLOWED, f"the change no longer fits: {exc}"
    activation = height + ACTIVATION_DELAY
    passed = Proposal(proposal.id, proposal.proposer, proposal.change, proposal.approvals,
                      proposal.height, proposal.expires, activation)
    state.put(proposal_key(proposal.id), passed.wire())
    state.put(SCHEDULED_KEY, (state.get(SCHEDULED_KEY) or []) + [[activation, proposal.id]])
    state.put(OPEN_KEY, [p for p in state.get(OPEN_KEY) or () if p != proposal.id])
    return 0, f"passed; in force from height {activation}"


class ReadState:
    """A GovState over a reader of committed state, for lookups (it refuses writes)."""

    def __init__(self, read: Reader) -> None:
        self._read = read

    def get(self, key: bytes) -> Any:
        raw = self._read(key)
        if raw is None:
            return None
        try:
            return unpack(raw)
        except CodecError as exc:
            raise GovernanceCorrupt(f"state entry {key!r}: {exc}") from None

    def put(self, key: bytes, value: Any) -> None:
        raise TypeError("a ReadState is read-only")
