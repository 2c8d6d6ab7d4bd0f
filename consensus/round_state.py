"""What the rounds of the current height have seen: each round's proposal and
the votes for it, and the latest round each validator asked to change to."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from consensus.messages import Commit, Prepare, Proposal, RoundChange, Signed
from consensus.validator_sets import ValidatorSet


@dataclass
class RoundState:
    proposal: Proposal | None = None
    validated: bool = False
    invalid: bool = False  # ValidateBlock found the proposal's block invalid
    my_prepare: bytes | None = None  # the block hash this replica prepared
    my_commit: bool = False
    build_requested: bool = False
    justification: tuple[Signed, ...] = ()
    prepares: dict[bytes, Signed] = field(default_factory=dict)  # sender -> its PREPARE
    commits: dict[bytes, Signed] = field(default_factory=dict)  # sender -> its COMMIT
    round_changes: dict[bytes, Signed] = field(default_factory=dict)  # sender -> its ROUND-CHANGE

    def restore(self, sent: tuple[Signed, ...]) -> None:
        """After a restart: what this replica signed in the round, so it goes on from there."""
        for signed in sent:
            m = signed.message
            if isinstance(m, Proposal):
                self.proposal, self.validated, self.build_requested = m, True, True
            elif isinstance(m, Prepare):
                self.my_prepare = m.block_hash
            elif isinstance(m, Commit):
                self.my_commit = True


@dataclass(frozen=True)
class RoundTally:
    """Whom a replica heard from in its current round: a read-only summary for a node's status."""

    height: int
    round: int
    active: bool  # a round timer runs (there is work, or others are at this height)
    proposal: bool
    prepares: frozenset[bytes]
    commits: frozenset[bytes]
    round_changes: frozenset[bytes]


class Rounds:
    """The rounds of one height, tallied against the validator set of that height."""

    def __init__(self, validators: ValidatorSet):
        self._order = {v: i for i, v in enumerate(validators.validators)}
        self._f = validators.f
        self._q = validators.q
        self._states: dict[int, RoundState] = {}
        self._latest_round_change: dict[bytes, int] = {}  # validator -> highest round it asked for

    def __getitem__(self, round_: int) -> RoundState:
        return self._states.setdefault(round_, RoundState())

    def get(self, round_: int) -> RoundState | None:
        return self._states.get(round_)

    def forget_before(self, round_: int) -> None:
        self._states = {r: s for r, s in self._states.items() if r >= round_}

    def add_round_change(self, signed: Signed, m: RoundChange, current: int) -> bool:
        """Tallies a ROUND-CHANGE; True when it is the one that brings `m.round` to a quorum."""
        if m.round > self._latest_round_change.get(signed.sender, -1):
            self._latest_round_change[signed.sender] = m.round
        if m.round < current:
            return False
        changes = self[m.round].round_changes
        return changes.setdefault(signed.sender, signed) is signed and len(changes) == self._q

    def changed_to(self, round_: int) -> bool:
        """Whether a quorum's round changes for `round_` are in: its proposer may propose."""
        return len(self[round_].round_changes) >= self._q

    def reached(self, round_: int) -> bool:
        """Whether anyone else got to `round_` or beyond, so moving past it is no solo run.

        A replica that timed out alone (partitioned, or the rest were slower)
        waits in its round and repeats its round change instead of climbing
        further; otherwise, with timeouts capped at round_timeout_max_ms, it
        stays rounds ahead of the others for ever and a quorum that needs it
        never forms again.
        """
        rs = self[round_]
        if round_ == 0 or rs.proposal is not None or len(rs.round_changes) >= self._q:
            return True
        return any(r > round_ for r in self._latest_round_change.values())

    def to_join(self, current: int) -> int | None:
        """The round to follow when f+1 validators are in rounds after `current`: one is honest."""
        higher = sorted((r for r in self._latest_round_change.values() if r > current), reverse=True)
        return higher[self._f] if len(higher) > self._f else None

    def prepared(self, round_: int, block_hash: bytes) -> tuple[Signed, ...] | None:
        """A quorum's prepares for `block_hash` in `round_`, if there is one."""
        votes = _votes_for(self[round_].prepares, block_hash)
        return tuple(votes) if len(votes) >= self._q else None

    def decided(self, round_: int) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]] | None:
        """The block a quorum committed in `round_` and their seals in validator order, if one did."""
        commits = self[round_].commits
        counts = Counter(getattr(s.message, "block_hash") for s in commits.values())
        if not counts:
            return None
        block_hash = counts.most_common(1)[0][0]
        votes = _votes_for(commits, block_hash)
        if len(votes) < self._q:
            return None
        seals = tuple(sorted(((s.sender, _seal(s)) for s in votes), key=lambda vs: self._order[vs[0]]))
        assert len({v for v, _ in seals}) == len(seals) >= self._q, "a commit certificate needs distinct validators"
        return block_hash, seals


def _votes_for(votes: dict[bytes, Signed], block_hash: bytes | None) -> list[Signed]:
    return [s for s in votes.values() if getattr(s.message, "block_hash", None) == block_hash]


def _seal(signed: Signed) -> bytes:
    assert isinstance(signed.message, Commit)
    return signed.message.seal
