"""What this node last heard from each validator in consensus, and what its current round lacks.

The driver records each consensus message the replica accepted (its signature checked) and each one
this node sent. Bounded: one record per kind per validator of the current height's set; keys that
leave the set are forgotten."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from consensus.messages import Commit, Message, Prepare, Proposal
from consensus.quorum import quorum
from consensus.round_state import RoundTally

KINDS: tuple[tuple[type, str], ...] = ((Proposal, "proposal"), (Prepare, "prepare"), (Commit, "commit"))


@dataclass(frozen=True)
class Seen:
    height: int
    view: int
    at: int  # wall clock, ms since the epoch, when this node received (or sent) it

    def to_json(self) -> dict[str, int]:
        return {"height": self.height, "view": self.view, "at": self.at}


class ConsensusWatch:
    """The last proposal, prepare and commit of each validator, and the highest (height, view) it spoke in."""

    def __init__(self, clock_ms: Callable[[], int]) -> None:
        self.clock_ms = clock_ms
        self._last: dict[bytes, dict[str, Seen]] = {}
        self._highest: dict[bytes, tuple[int, int]] = {}

    def record(self, sender: bytes, message: Message, validators: Collection[bytes]) -> None:
        """Notes `message` of `sender`, if it is one of `validators` (the current height's)."""
        if sender not in validators:
            return
        at = (message.height, message.round)
        if at > self._highest.get(sender, (-1, -1)):
            self._highest[sender] = at
        kind = next((name for cls, name in KINDS if isinstance(message, cls)), None)
        if kind is not None:
            self._last.setdefault(sender, {})[kind] = Seen(message.height, message.round, self.clock_ms())

    def keep_only(self, validators: Collection[bytes]) -> None:
        """Forgets every key not in `validators` (after the set changed)."""
        for table in (self._last, self._highest):
            for key in [k for k in table if k not in validators]:
                del table[key]

    def last(self, key: bytes, kind: str) -> Seen | None:
        return self._last.get(key, {}).get(kind)

    def highest(self, key: bytes) -> tuple[int, int] | None:
        return self._highest.get(key)

    def validator(self, key: bytes, name: str, connected: bool) -> dict[str, Any]:
        """One entry of consensus_state's `validators`."""
        highest = self.highest(key)
        return {
            "pubkey": key.hex(), "name": name, "connected": connected,
            "height": None if highest is None else highest[0], "view": None if highest is None else highest[1],
            **{f"last_{kind}": _json(self.last(key, kind)) for _, kind in KINDS},
        }


def _json(seen: Seen | None) -> dict[str, int] | None:
    return None if seen is None else seen.to_json()


def waiting_for(tally: RoundTally | None, height: int, validators: tuple[bytes, ...], leader: bytes | None,
                names: Mapping[bytes, str]) -> str:
    """In one sentence, what the current round still lacks."""
    if tally is None:
        return f"waiting for the validator set of height {height} (catching up with the chain)"
    at = f"height {tally.height}, view {tally.round}"
    if not tally.proposal and tally.round > 0 and len(tally.round_changes) < quorum(len(validators)):
        return f"waiting for round changes for view {tally.round}: {_have_missing(tally.round_changes, validators, names)}"
    if not tally.proposal:
        if not tally.active:
            return f"waiting for transactions to propose at height {tally.height}"
        who = names.get(leader, leader.hex()[:16]) if leader is not None else "its leader"
        return f"waiting for the proposal of {at} from {who}"
    for votes, kind in ((tally.prepares, "prepare"), (tally.commits, "commit")):
        lacking = quorum(len(validators)) - len(votes & set(validators))
        if lacking > 0:
            plural = "" if lacking == 1 else "s"
            return (f"waiting for {lacking} more {kind} vote{plural} for {at}: "
                    f"{_have_missing(votes, validators, names)}")
    return f"committing the block of {at}"


def _have_missing(have: Collection[bytes], validators: tuple[bytes, ...], names: Mapping[bytes, str]) -> str:
    def listed(keys: list[bytes]) -> str:
        return " ".join(names.get(k, k.hex()[:16]) for k in keys) or "none"
    return (f"have {listed([v for v in validators if v in have])}, "
            f"missing {listed([v for v in validators if v not in have])}")
