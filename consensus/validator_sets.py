"""The validators that decide each height, and the quorum arithmetic of each set.

A chain's validator set can change at a height. The replica knows the set of
its start height and learns later ones (`ValidatorSetKnown`), one per height;
on a static chain (no sets given) every height is decided by the first set.
"""

from __future__ import annotations

from collections.abc import Mapping

from consensus.quorum import fault_tolerance, quorum


class ValidatorSet:
    """One height's validators in proposer order: n, f and the quorum follow from them."""

    def __init__(self, validators: tuple[bytes, ...]):
        if not validators or len(set(validators)) != len(validators):
            raise ValueError("a validator set needs at least one validator and no key twice")
        self.validators = validators
        self.members = frozenset(validators)
        self.n = len(validators)
        self.f = fault_tolerance(self.n)
        self.q = quorum(self.n)

    def proposer(self, height: int, round_: int) -> bytes:
        return self.validators[(height + round_) % self.n]


class ValidatorSets:
    """The sets of the heights this replica knows, from the one it starts at on.

    `known=None` is a static chain: the start set decides every height. Otherwise
    a height is known only once its set was given, and heights before the one
    the replica is in are forgotten.
    """

    def __init__(self, height: int, validators: tuple[bytes, ...], known: Mapping[int, tuple[bytes, ...]] | None):
        self._static = known is None
        self._sets = {height: ValidatorSet(validators)}
        self._latest = self._sets[height]  # the set of the highest height known
        for later, vs in sorted((known or {}).items()):
            if later == height and vs != validators:
                raise ValueError(f"the known validators of height {height} differ from the configured ones")
            if later > height:
                self._sets[later] = self._latest = ValidatorSet(vs)

    def at(self, height: int) -> ValidatorSet | None:
        """The set that decides `height`, if it is known."""
        if self._static:
            return self._latest
        return self._sets.get(height)

    def learn(self, height: int, validators: tuple[bytes, ...]) -> bool:
        """Records the set of `height`; False (nothing changes) if a different one is known for it.

        On a static chain there is nothing to learn: the one set stays.
        """
        if self._static:
            return validators == self._latest.validators
        known = self._sets.get(height)
        if known is None:
            vs = ValidatorSet(validators)
            if height > max(self._sets, default=-1):
                self._latest = vs
            self._sets[height] = vs
        return known is None or known.validators == validators

    def size_at(self, height: int) -> int:
        """How many validators share the bounds on what is kept for `height`: its set's, else the latest known."""
        vs = self.at(height)
        return (vs or self._latest).n

    def forget_before(self, height: int) -> None:
        if not self._static:
            self._sets = {h: vs for h, vs in self._sets.items() if h >= height}
