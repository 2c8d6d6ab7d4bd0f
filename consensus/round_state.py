"""What one round at the current height has seen: its proposal and the votes for it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from consensus.messages import Commit, Proposal, Signed


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


def votes_for(votes: dict[bytes, Signed], block_hash: bytes | None) -> list[Signed]:
    return [s for s in votes.values() if getattr(s.message, "block_hash", None) == block_hash]


def most_voted(votes: dict[bytes, Signed]) -> bytes | None:
    counts = Counter(getattr(s.message, "block_hash") for s in votes.values())
    return counts.most_common(1)[0][0] if counts else None


def seal_of(signed: Signed) -> bytes:
    assert isinstance(signed.message, Commit)
    return signed.message.seal
