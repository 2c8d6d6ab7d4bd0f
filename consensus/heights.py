"""The height a replica is in and what reaches it: each message checked against
the validator set of its height, those for heights not entered yet kept for later.

A replica parks at a height whose set it was not told (`current` is None):
everything for that height is kept until the set is known, then handed over
and checked again against that set.
"""

from __future__ import annotations

from consensus.config import ReplicaConfig
from consensus.future_messages import FutureMessages
from consensus.justification import Certificates
from consensus.messages import Commit, Signed
from consensus.validator_sets import ValidatorSet, ValidatorSets

DELIVER = "deliver"  # `admit`'s verdict on a message to handle now
KEPT = "kept"  # `admit`'s verdict on a message kept for a height not entered yet


class Heights:
    def __init__(self, config: ReplicaConfig, sets: ValidatorSets, certificates: Certificates, height: int):
        self.height = height
        self.current: ValidatorSet | None = sets.at(height)  # None: parked until the height's set is known
        self._config = config
        self._sets = sets
        self._certificates = certificates
        self._future = FutureMessages(config.future_heights_max, config.future_messages_max)

    def admit(self, signed: Signed, round_: int, verified: bool = False) -> str:
        """What becomes of `signed` while in `round_`: DELIVER, KEPT, or why it is dropped."""
        m = signed.message
        vs = self._sets.at(m.height)  # None: kept on its signature, its sender checked when taken
        if vs is not None and signed.sender not in vs.members:
            return "non_member"
        if m.height < self.height:
            return "old"
        if m.height == self.height and m.round > round_ + self._config.future_rounds_max:
            return "far_round"
        if not verified and not self._certificates.verify(signed):
            return "bad_signature"
        if not verified and isinstance(m, Commit) and not self._certificates.valid_seal(signed.sender, m):
            return "bad_seal"
        if m.height == self.height and self.current is not None:
            return DELIVER
        return self._future.keep(signed, self.height, self._sets.size_at(m.height)) or KEPT

    def advance(self, height: int) -> list[Signed] | None:
        """Goes on to `height`: what was kept for it, or None when its set is unknown and the replica parks."""
        assert height > self.height, (height, self.height)
        self.height = height
        self._sets.forget_before(height)
        self.current = self._sets.at(height)
        return None if self.current is None else self._future.take(height)

    def learn(self, height: int, validators: tuple[bytes, ...]) -> list[Signed] | None:
        """Records the set of `height` (ValueError if it is empty or conflicts with a known one);
        what was kept for the current height when this releases it from parking, else None."""
        if height < self.height:
            return None
        if not self._sets.learn(height, validators):
            raise ValueError(f"a different validator set is known for height {height}")
        if self.current is not None or height != self.height:
            return None
        self.current = self._sets.at(height)
        return self._future.take(height)

    def proposer(self, height: int, round_: int) -> bytes:
        vs = self._sets.at(height)
        if vs is None:
            raise LookupError(f"the validators of height {height} are not known")
        return vs.proposer(height, round_)

    def highest_ahead(self) -> int | None:
        """The highest later height a validator signed for (see FutureMessages.highest_ahead)."""
        return self._future.highest_ahead(self.height)
