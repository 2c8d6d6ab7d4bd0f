"""The people around a simulated chain who act on its membership: the admins, who submit the
plan's gov transactions (membership.Governor), and the operators, who keep a validator
to be removed down, restart a process with its replaced key, or start an honest process
for the key that replaces a Byzantine one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.sim.membership import REMOVE_CRASHED, REPLACE, REPLACE_BYZANTINE, Step
from tests.sim.process import Node

if TYPE_CHECKING:
    from tests.sim.world import Simulation

ACTIVATION_CRASH = 0.25  # chance a commit next to an activation height crashes a node (in the fault phase)


class Operators:
    def __init__(self, sim: Simulation):
        self.sim = sim
        self.replaced: dict[bytes, bytes] = {}  # old key -> new key, for the sets a Byzantine node keeps
        self._progress = (0, 0)  # (best honest height, since when)

    def on_heal(self) -> None:
        self._progress = (max(node.height() for node in self.sim.honest), self.sim.now_ms)

    def governor_tick(self) -> None:
        """The admins look at the most advanced honest chain and submit what the plan needs next."""
        step = self.sim.governor.current
        if step is not None and step.kind == REMOVE_CRASHED and not self.sim.healed:
            self.hold_down(self.node_with_key(step.key))
        ledgers = [node.ledger for node in self.sim.honest if node.ledger is not None]
        if ledgers:
            tx = self.sim.governor.tick(self.sim.now_ms, max(ledgers, key=lambda ledger: ledger.height))
            if tx is not None:
                self.sim.submit(tx)
        if not self.sim.governor.done:
            self.sim.after(300, self.governor_tick)

    def node_with_key(self, key: int) -> Node:
        return next(node for node in self.sim.honest if node.key == key or node.rekey_to == key)

    def hold_down(self, node: Node) -> None:
        """The validator to be removed while it is down: crashed until its removal is in force, or until the
        healed chain stalls without it (it may hold the only copy of a transaction a locked block needs)."""
        if not node.held_down:
            node.held_down = True
            if node.up:
                self.sim.crash(node)

    def passed(self, step: Step) -> None:
        """A change passed: the operators act on it. A replaced key's process restarts with its new key
        (an honest one) or an honest process with the new key joins (the old key is the attacker's)."""
        self.sim.stats["changes_passed"] = self.sim.stats.get("changes_passed", 0) + 1
        keys = self.sim.keyring.public_keys
        if step.new_key is not None:
            self.replaced[keys[step.key]] = keys[step.new_key]
        if step.kind == REPLACE:
            node = self.node_with_key(step.key)
            node.rekey_to = step.new_key
            self.sim.after(self.sim.rng.randint(0, 4000), self.rekey, node)
        elif step.kind == REPLACE_BYZANTINE:
            spare = Node(len(self.sim.nodes), step.new_key or 0, True)
            self.sim.nodes.append(spare)
            self.sim.after(self.sim.rng.randint(0, 4000), self.sim.restart, spare, spare.incarnation)
        if step.removes:
            self.sim.stats["removed_proposers"] = self.sim.stats.get("removed_proposers", 0) + self.was_proposer(step)

    def was_proposer(self, step: Step) -> int:
        """1 when the removed validator would have proposed the first round of the activation height."""
        assert step.activation is not None
        before = self.sim.invariants.validators.get(step.activation - 1, ())
        return int(bool(before) and before[step.activation % len(before)] == step.pubkey)

    def rekey(self, node: Node) -> None:
        if node.up and node.rekey_to is not None:
            self.sim.crash(node)

    def near_activation(self, height: int) -> None:
        """A commit at or just before an activation height: in the fault phase, sometimes a crash, and the
        release of a removed validator held down for its removal."""
        for step in self.sim.plan:
            if step.activation is None or height not in (step.activation - 1, step.activation):
                continue
            if not self.sim.healed and self.sim.rng.random() < ACTIVATION_CRASH:
                self.sim.after(0, self.sim.crash_some_node)
            if step.kind == REMOVE_CRASHED and height == step.activation:
                node = self.node_with_key(step.key)
                if node.held_down:
                    self.sim.stats["removed_while_down"] = self.sim.stats.get("removed_while_down", 0) + 1
                    node.held_down = False
                    self.sim.after(self.sim.rng.randint(300, 3000), self.sim.restart, node, node.incarnation)

    def release_if_stalled(self) -> None:
        """After the heal, a node held down is restarted once the chain made no progress for a while."""
        best = max(node.height() for node in self.sim.honest)
        if best != self._progress[0]:
            self._progress = (best, self.sim.now_ms)
        elif self.sim.healed and self.sim.now_ms - self._progress[1] >= 2 * self.sim.scenario.round_timeout_max_ms:
            for node in self.sim.nodes:
                if node.held_down:
                    node.held_down = False
                    self.sim.boot(node)
