"""The one place that decides whether this validator may sign a consensus message.

Everything the replica signs, its commit seals included, goes through
`SafetyRules`, which holds the signing key and the state of what was signed
(`SafetyState`, persisted before anything signed leaves the node). It never
signs two messages of one phase for one height and round, nothing for a height
or round it has left, nothing below the sign floor, nothing at a height whose
validators it is not among (or does not know), no PREPARE for a block other
than the one it proposed, no COMMIT without its own PREPARE and a quorum of
that height's validators' for that block, and no ROUND-CHANGE that hides the
certificate it committed under.
A refusal raises a `SigningRefused` variant that says what was refused and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from consensus.messages import (
    Commit,
    Crypto,
    Message,
    Prepare,
    PreparedCertificate,
    Proposal,
    RoundChange,
    Signed,
    seal_bytes,
    sign,
)
from consensus.safety_state import SafetyState
from consensus.validator_sets import ValidatorSets

Unsealed = Union[Proposal, Prepare, RoundChange]  # what `sign` takes; COMMIT goes through `commit`


@dataclass
class SigningRefused(Exception):
    """Why the kernel would not sign; each subclass is one rule and carries what broke it."""

    height: int
    round: int

    def __str__(self) -> str:
        return repr(self)

    @property
    def reason(self) -> str:
        """The rule's name in snake case, as counted among the replica's drops."""
        return "refused_" + re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()


@dataclass
class BelowSignFloor(SigningRefused):
    sign_from: int


@dataclass
class NotAValidator(SigningRefused):
    key: bytes  # this kernel's key, not among the validators of the height (or their set is unknown)


@dataclass
class HeightPassed(SigningRefused):
    signed_height: int  # the height this kernel last signed at


@dataclass
class RoundPassed(SigningRefused):
    signed_round: int  # the round this kernel last signed in, at this height


@dataclass
class AlreadySigned(SigningRefused):
    phase: str  # the message kind already signed in this height and round


@dataclass
class NotProposed(SigningRefused):
    block_hash: bytes
    proposed: bytes  # the block this kernel proposed in the round


@dataclass
class NotPrepared(SigningRefused):
    block_hash: bytes  # committed without this kernel's PREPARE for it in the round


@dataclass
class ShortCertificate(SigningRefused):
    block_hash: bytes
    prepares: int  # distinct validators' matching prepares in the certificate
    needed: int


@dataclass
class HiddenCertificate(SigningRefused):
    carried: PreparedCertificate | None  # what the round change carries
    prepared: PreparedCertificate | None  # what this kernel committed under at this height


def phase(message: Message) -> str:
    return type(message).__name__


class SafetyRules:
    def __init__(
        self, crypto: Crypto, chain_id: str, sets: ValidatorSets, state: SafetyState, sign_from: int = 0
    ):
        self._crypto = crypto
        self._chain_id = chain_id
        self._sets = sets
        self._state = state
        # Below this height nothing is signed: after its store was rebuilt the node
        # cannot know what it signed there before. The shell lowers it once learnt.
        self._sign_from = sign_from

    @property
    def sign_from(self) -> int:
        return self._sign_from

    def learn_sign_floor(self, height: int) -> None:
        """Lowers the floor from "sign nothing" to what the peers' heights allow; never below what was signed."""
        assert not self._state.sent or height > self._state.height, "a learnt floor lies above all that was signed"
        self._sign_from = height

    @property
    def state(self) -> SafetyState:
        """What was signed so far; persist it before anything `sign` returned leaves."""
        return self._state

    def sign(self, message: Unsealed) -> Signed:
        self._check(message)
        if isinstance(message, Prepare):
            self._check_proposed(message)
        elif isinstance(message, RoundChange):
            self._check_carried(message)
        return self._record(sign(self._crypto, self._chain_id, message), self._prepared_at(message.height))

    def commit(self, height: int, certificate: PreparedCertificate) -> Signed:
        """Signs a COMMIT, its seal included, for the block `certificate` shows prepared."""
        pc = certificate
        self._check(Commit(height, pc.round, pc.block_hash, b""))
        self._check_prepared(height, pc)
        seal = self._crypto.sign(seal_bytes(pc.block_hash))
        return self._record(sign(self._crypto, self._chain_id, Commit(height, pc.round, pc.block_hash, seal)), pc)

    # ---- rules ------------------------------------------------------------------

    def _check(self, m: Message) -> None:
        s = self._state
        if m.height < self.sign_from:
            raise BelowSignFloor(m.height, m.round, self.sign_from)
        vs = self._sets.at(m.height)
        if vs is None or self._crypto.public_key not in vs.members:
            raise NotAValidator(m.height, m.round, self._crypto.public_key)
        if m.height < s.height:
            raise HeightPassed(m.height, m.round, s.height)
        if m.height == s.height and m.round < s.round:
            raise RoundPassed(m.height, m.round, s.round)
        if any(phase(signed.message) == phase(m) for signed in self._sent_in(m)):
            raise AlreadySigned(m.height, m.round, phase(m))

    def _check_proposed(self, m: Prepare) -> None:
        for signed in self._sent_in(m):
            p = signed.message
            if isinstance(p, Proposal) and p.block_hash != m.block_hash:
                raise NotProposed(m.height, m.round, m.block_hash, p.block_hash)

    def _check_carried(self, m: RoundChange) -> None:
        prepared = self._prepared_at(m.height)
        if m.prepared != prepared:
            raise HiddenCertificate(m.height, m.round, m.prepared, prepared)

    def _check_prepared(self, height: int, pc: PreparedCertificate) -> None:
        mine = Prepare(height, pc.round, pc.block_hash)
        if not any(signed.message == mine for signed in self._sent_in(mine)):
            raise NotPrepared(height, pc.round, pc.block_hash)
        vs = self._sets.at(height)
        assert vs is not None, "_check refused heights of unknown validators"
        senders = {s.sender for s in pc.prepares if s.message == mine and s.sender in vs.members}
        if len(senders) < vs.q:
            raise ShortCertificate(height, pc.round, pc.block_hash, len(senders), vs.q)

    # ---- state ------------------------------------------------------------------

    def _sent_in(self, m: Message) -> tuple[Signed, ...]:
        s = self._state
        return s.sent if (s.height, s.round) == (m.height, m.round) else ()

    def _prepared_at(self, height: int) -> PreparedCertificate | None:
        return self._state.prepared if self._state.height == height else None

    def _record(self, signed: Signed, prepared: PreparedCertificate | None) -> Signed:
        m = signed.message
        state = SafetyState(m.height, m.round, prepared, self._sent_in(m) + (signed,))
        phases = [phase(s.message) for s in state.sent]
        assert len(phases) == len(set(phases)), f"two signatures for one phase at {m.height}/{m.round}: {phases}"
        self._state = state
        return signed
