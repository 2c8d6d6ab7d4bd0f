"""What a simulation runs: the network's size, its Byzantine members and how hard
its faults hit, as named scenarios; each seed draws its own fault intensities."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    """Everything but the seed: the network's size, its faults and its Byzantine members."""

    name: str
    validators: int
    byzantine: int = 0  # validators played by Byzantine nodes (at most f)
    twins: bool = True  # each Byzantine validator runs as two twins
    bad_blocks: float = 0.0  # chance a Byzantine block's bytes do not match its hash
    forged_certificates: bool = False  # Byzantine round changes carry other bytes under a prepared hash
    flaky_validation: float = 0.0  # chance an honest node wrongly finds a valid block invalid
    fault_phase_ms: tuple[int, int] = (30_000, 60_000)
    delay_max_ms: int = 600  # each seed draws its own fault intensities up to these maxima
    loss_max: float = 0.1
    duplicate_max: float = 0.05
    partition_chance_max: float = 0.1  # per half second of the fault phase
    crash_chance_max: float = 0.1  # per half second of the fault phase
    build_delay_ms: tuple[int, int] = (50, 400)
    heights_after_heal: int = 3
    round_timeout_ms: int = 1000
    round_timeout_max_ms: int = 8000
    changes: tuple[str, ...] = ()  # membership changes the admins make, in order (membership.KINDS)

    @property
    def liveness_bound_ms(self) -> int:
        """Virtual time allowed, after healing, for `heights_after_heal` more heights everywhere.

        Every honest node's round timer fires within round_timeout_max_ms of the
        heal; one more maximal timeout lets f+1 of them pull the rest into one
        round, and each height then needs at most a round with a faulty proposer
        (f rounds in a row at worst) plus one good round.
        A membership change still to make after the heal takes four heights more
        (its proposal's, its approval's and two to its activation), and a restart
        of the process whose key it replaced.
        """
        per_height_ms = (self.byzantine + 1) * self.round_timeout_max_ms
        heights = self.heights_after_heal + 1 + 4 * len(self.changes)
        restarts_ms = 2 * self.round_timeout_max_ms * len(self.changes)
        return 3 * self.round_timeout_max_ms + heights * per_height_ms + restarts_ms


@dataclass
class Network:
    delay_ms: tuple[int, int]
    loss: float
    duplicate: float
    groups: dict[int, int] | None = None  # node id -> partition group while partitioned


@dataclass(frozen=True)
class Faults:
    """How hard one seed's fault phase is: drawn per seed, so that seeds differ in kind
    (one loses many messages, another mostly partitions, a third crashes often)."""

    partition_chance: float
    crash_chance: float
    crashed_max: int  # nodes down at once: from one to all of them (a power cut)
    network: Network

    @staticmethod
    def draw(rng: random.Random, s: Scenario, nodes: int) -> Faults:
        delay_min_ms = rng.randint(1, 20)
        delay_max_ms = rng.randint(delay_min_ms + 10, s.delay_max_ms)
        network = Network((delay_min_ms, delay_max_ms), rng.uniform(0, s.loss_max), rng.uniform(0, s.duplicate_max))
        partition_chance, crash_chance = rng.uniform(0, s.partition_chance_max), rng.uniform(0, s.crash_chance_max)
        return Faults(partition_chance, crash_chance, rng.randint(1, nodes), network)


CHANGES_FAULT_PHASE_MS = (20_000, 45_000)  # shorter: the membership scenarios keep CI within its time

SCENARIOS = {
    s.name: s
    for s in [
        Scenario("n4_faults", 4),
        Scenario("n7_faults", 7),
        Scenario("n4_twins", 4, byzantine=1),
        Scenario("n7_twins", 7, byzantine=2),
        Scenario("n4_bad_blocks", 4, byzantine=1, twins=False, bad_blocks=0.7, flaky_validation=0.05),
        Scenario("n4_twins_forged", 4, byzantine=1, bad_blocks=0.5, flaky_validation=0.02),
        Scenario("n4_forged_certificates", 4, byzantine=1, twins=False, forged_certificates=True),
        Scenario("n7_twins_forged", 7, byzantine=2, bad_blocks=0.3, flaky_validation=0.02),
        # membership changes by governance (membership.py), made during the fault phase or after it
        Scenario("n4_promote_remove", 4, changes=("promote", "remove"), fault_phase_ms=CHANGES_FAULT_PHASE_MS),
        Scenario("n4_remove_crashed_replace", 4, changes=("remove_crashed", "replace"),
                 fault_phase_ms=CHANGES_FAULT_PHASE_MS),
        Scenario("n4_twins_replaced", 4, byzantine=1, changes=("promote", "replace_byzantine", "replace"),
                 fault_phase_ms=CHANGES_FAULT_PHASE_MS),
        Scenario("n4_twins_removed", 4, byzantine=1, changes=("remove_byzantine", "promote", "remove"),
                 fault_phase_ms=CHANGES_FAULT_PHASE_MS),
        Scenario("n7_twins_membership", 7, byzantine=2, changes=("replace_byzantine", "remove_byzantine", "promote"),
                 fault_phase_ms=CHANGES_FAULT_PHASE_MS),
    ]
}
