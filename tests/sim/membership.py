"""The membership changes a simulation makes through governance: the plan each seed
draws, and the admins who carry it out with real `gov` transactions.

A plan is a sequence of changes (promote an observer, remove a validator, replace
a validator's key), each proposed by one admin and approved by another once the
proposal is committed; the next change is proposed once the one before passed.
The plan never leaves more Byzantine validators in a set than it tolerates.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from consensus.quorum import fault_tolerance
from node.chain.ledger import Ledger
from node.chain.tx import Transaction
from tests.sim.invariants import InvariantViolated
from tests.sim.workload import ADMINS, gov_txs, observer_name

PROMOTE, REMOVE, REMOVE_CRASHED, REMOVE_BYZANTINE = "promote", "remove", "remove_crashed", "remove_byzantine"
REPLACE, REPLACE_BYZANTINE = "replace", "replace_byzantine"
KINDS = (PROMOTE, REMOVE, REMOVE_CRASHED, REMOVE_BYZANTINE, REPLACE, REPLACE_BYZANTINE)
RESEND_MS = 2500  # a gov transaction not committed by then is submitted again (a node lost it)
ALIGN_MS = 4000  # how long the admins wait to time a removal's approval for the proposer's height


@dataclass
class Step:
    """One planned change: the key it promotes, removes or replaces (keyring indices)."""

    kind: str
    key: int
    pubkey: bytes
    new_key: int | None
    propose: Transaction
    approve: Transaction
    passed_at: int | None = None  # the height of the block whose approval passed it

    @property
    def activation(self) -> int | None:
        return None if self.passed_at is None else self.passed_at + 2

    @property
    def removes(self) -> bool:
        return self.kind.startswith("remove")


def draw_plan(
    rng: random.Random, kinds: Sequence[str], keys: tuple[bytes, ...], validators: int, byzantine: Sequence[int]
) -> list[Step]:
    """The steps of `kinds` in order; observers' keys follow the validators' in the keyring, then the spare
    keys that replacements bring in."""
    current = list(range(validators))
    observers = iter(range(validators, validators + kinds.count(PROMOTE)))
    spares = iter(range(validators + kinds.count(PROMOTE), len(keys)))
    steps = []
    for i, kind in enumerate(kinds):
        honest = [k for k in current if k not in byzantine]
        candidates = [k for k in current if k in byzantine] if kind.endswith("byzantine") else honest
        new_key = None
        if kind == PROMOTE:
            key = next(observers)
            change: dict[str, Any] = {"kind": "add_validator", "name": observer_name(key - validators),
                                      "pubkey": keys[key], "address": f"sim:{200 + key}"}
            current.append(key)
        elif kind.startswith("remove"):
            key = rng.choice(candidates)
            change = {"kind": "remove_validator", "pubkey": keys[key]}
            current.remove(key)
        else:
            key, new_key = rng.choice(candidates), next(spares)
            change = {"kind": "replace_key", "old": keys[key], "new": keys[new_key]}
            current[current.index(key)] = new_key
        assert sum(k in byzantine for k in current) <= fault_tolerance(len(current)), f"step {i} ({kind}) is unsafe"
        proposer, approver = rng.sample(range(len(ADMINS)), 2)
        propose, approve = gov_txs(change, proposer, approver, i + 1)
        steps.append(Step(kind, key, keys[key], new_key, propose, approve))
    return steps


def keys_needed(validators: int, kinds: Sequence[str]) -> int:
    return validators + kinds.count(PROMOTE) + sum(kind.startswith("replace") for kind in kinds)


class Governor:
    """The admins: what they submit next, judged from the chain of the most advanced honest node."""

    def __init__(self, steps: list[Step], on_passed: Callable[[Step], None]):
        self.steps = steps
        self._on_passed = on_passed
        self._index = 0
        self._approving_since: int | None = None
        self._sent: dict[bytes, int] = {}  # tx hash -> when last submitted

    @property
    def done(self) -> bool:
        return self._index == len(self.steps)

    @property
    def current(self) -> Step | None:
        return None if self.done else self.steps[self._index]

    def last_activation(self) -> int:
        return max((s.activation or 0 for s in self.steps), default=0)

    def tick(self, now_ms: int, ledger: Ledger) -> Transaction | None:
        """The transaction to submit now, if any."""
        step = self.current
        if step is None:
            return None
        if not self._committed(step.propose, ledger):
            return self._send(now_ms, step.propose)
        if self._approving_since is None:
            self._approving_since = now_ms
        if not self._committed(step.approve, ledger):
            if step.approve.hash not in self._sent and not self._aligned(now_ms, step, ledger):
                return None
            return self._send(now_ms, step.approve)
        entry = ledger.tx_entry(step.approve.hash)
        assert entry is not None
        step.passed_at = entry.height
        self._index += 1
        self._approving_since = None
        self._on_passed(step)
        return None

    def _committed(self, tx: Transaction, ledger: Ledger) -> bool:
        entry = ledger.tx_entry(tx.hash)
        if entry is not None and entry.receipt.code != 0:
            raise InvariantViolated(f"the chain refused the admins' gov {tx.op} {tx.args}: {entry.receipt}")
        return entry is not None

    def _send(self, now_ms: int, tx: Transaction) -> Transaction | None:
        if now_ms - self._sent.get(tx.hash, -RESEND_MS) < RESEND_MS:
            return None
        self._sent[tx.hash] = now_ms
        return tx

    def _aligned(self, now_ms: int, step: Step, ledger: Ledger) -> bool:
        """A removal's approval waits (a while) for the tip at which, if it lands in the next block,
        the removed validator would have been the proposer of the activation height's first round."""
        assert self._approving_since is not None
        if not step.removes or now_ms - self._approving_since >= ALIGN_MS:
            return True
        tip = ledger.height
        validators = ledger.members(tip + 2).validator_keys  # also those of tip + 3 unless a change passes
        return validators[(tip + 3) % len(validators)] == step.pubkey
