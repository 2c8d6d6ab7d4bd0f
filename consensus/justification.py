"""Checks on signatures and on what a message carries as proof: a prepared
certificate in a ROUND-CHANGE, 2f+1 round changes in the PRE-PREPARE of a round
after the first, and which block such a proposal must carry again."""

from __future__ import annotations

from collections import Counter

from consensus.messages import (
    Commit, Crypto, Prepare, PreparedCertificate, Proposal, RoundChange, Signed, seal_bytes, signing_bytes,
)
from consensus.validator_sets import ValidatorSets


class Certificates:
    """Signature and certificate checks, each against the validator set of the height concerned."""

    def __init__(self, chain_id: str, sets: ValidatorSets, crypto: Crypto):
        self._chain_id = chain_id
        self._sets = sets
        self._crypto = crypto

    def verify(self, signed: Signed) -> bool:
        data = signing_bytes(self._chain_id, signed.message)
        return self._crypto.verify(signed.sender, data, signed.signature)

    def valid_seal(self, sender: bytes, m: Commit) -> bool:
        return self._crypto.verify(sender, seal_bytes(m.block_hash), m.seal)

    def valid_prepared(self, pc: PreparedCertificate, height: int, round_: int) -> bool:
        """A quorum of `height`'s validators' prepares for the block in a round before `round_`."""
        vs = self._sets.at(height)
        if vs is None or pc.round >= round_:
            return False
        senders = set()
        for s in pc.prepares:
            m = s.message
            ok = isinstance(m, Prepare) and (m.height, m.round, m.block_hash) == (height, pc.round, pc.block_hash)
            if ok and s.sender in vs.members and s.sender not in senders and self.verify(s):
                senders.add(s.sender)
        return len(senders) >= vs.q

    def justified(self, p: Proposal) -> bool:
        """A proposal for round > 0 needs a quorum's round changes and must carry the highest prepared block."""
        vs = self._sets.at(p.height)
        if vs is None:
            return False
        senders = set()
        valid: list[Signed] = []
        for s in p.justification:
            m = s.message
            if not isinstance(m, RoundChange) or (m.height, m.round) != (p.height, p.round):
                continue
            if s.sender in vs.members and s.sender not in senders and self.verify(s):
                if m.prepared is None or self.valid_prepared(m.prepared, p.height, m.round):
                    senders.add(s.sender)
                    valid.append(s)
        if len(senders) < vs.q:
            return False
        best = highest_prepared(tuple(valid))
        return best is None or best.block_hash == p.block_hash


def highest_prepared(round_changes: tuple[Signed, ...]) -> PreparedCertificate | None:
    best: PreparedCertificate | None = None
    for s in round_changes:
        pc = s.message.prepared if isinstance(s.message, RoundChange) else None
        if pc is not None and (best is None or pc.round > best.round):
            best = pc
    return best


def carried_block(
    mine: PreparedCertificate | None, best: PreparedCertificate, justification: tuple[Signed, ...]
) -> bytes:
    """The bytes to propose again under `best`'s hash.

    A faulty validator can put real prepares and other bytes in its
    certificate, and nobody would validate the proposal. Prefer the bytes
    this replica validated itself (`mine`), then those most certificates carry.
    """
    if mine is not None and mine.block_hash == best.block_hash:
        return mine.block
    carried = Counter(
        s.message.prepared.block
        for s in justification
        if isinstance(s.message, RoundChange)
        and s.message.prepared is not None
        and s.message.prepared.block_hash == best.block_hash
    )
    return carried.most_common(1)[0][0]
