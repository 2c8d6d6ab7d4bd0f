"""The deterministic simulator over many seeds, and the tools to replay one.

Every scenario runs CI_SEEDS seeds (CI_SEEDS_N7 with seven validators); a failure names the seed and the command
that replays it alone:

    SIM_SCENARIO=n4_twins SIM_SEED=1234 .venv/bin/pytest tests/sim -k replay

Larger sweeps are marked slow and run only when asked for:

    SIM_SEEDS=5000 .venv/bin/pytest tests/sim -m slow   (SIM_SEED_START=... to move on)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import consensus.quorum
import consensus.replica
import consensus.validator_sets
import node.chain.block
import node.chain.execution
import node.chain.ledger
import node.chain.candidate
import tests.sim.keyring
import tests.sim.world
from storage.chain import ChainStore
from tests.sim.invariants import InvariantViolated
from tests.sim.world import SCENARIOS, Simulation, run

CI_SEEDS = 60  # per scenario (the sweep below runs more)
CI_SEEDS_N7 = 30  # seven validators cost several times as much per seed


def ci_seeds(scenario: str) -> int:
    return CI_SEEDS_N7 if scenario.startswith("n7") else CI_SEEDS
ROOT = Path(__file__).resolve().parents[2]


def replay_command(scenario: str, seed: int) -> str:
    return f"SIM_SCENARIO={scenario} SIM_SEED={seed} .venv/bin/pytest tests/sim -k replay"


def check_seed(scenario: str, seed: int) -> Simulation:
    """Runs one seed; any failure, an invariant or a crash of the code under test, names the seed."""
    try:
        return run(SCENARIOS[scenario], seed)
    except Exception as exc:
        raise AssertionError(
            f"simulation {scenario} failed at seed {seed}: {exc}\n  replay: {replay_command(scenario, seed)}"
        ) from exc


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario(scenario: str) -> None:
    for seed in range(ci_seeds(scenario)):
        check_seed(scenario, seed)


@pytest.mark.slow
@pytest.mark.skipif("SIM_SEEDS" not in os.environ, reason="set SIM_SEEDS=<seeds per scenario> for a long sweep")
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_sweep(scenario: str) -> None:
    start = int(os.environ.get("SIM_SEED_START", ci_seeds(scenario)))
    for seed in range(start, start + int(os.environ["SIM_SEEDS"])):
        check_seed(scenario, seed)


@pytest.mark.skipif("SIM_SEED" not in os.environ, reason="set SIM_SEED (and SIM_SCENARIO) to replay one seed")
def test_replay() -> None:
    seed = int(os.environ["SIM_SEED"])
    for scenario in os.environ.get("SIM_SCENARIO", ",".join(sorted(SCENARIOS))).split(","):
        sim = check_seed(scenario, seed)
        print(f"{scenario} seed {seed}: healed at {sim.heal_ms} ms, live at {sim.live_ms} ms, {sim.stats}")


# ---- the simulator itself ------------------------------------------------------------


def fingerprint(sim: Simulation) -> str:
    """Everything a run decided: the time it ended, its counters, and every node's chain."""
    digest = hashlib.sha256(repr((sim.now_ms, sorted(sim.stats.items()))).encode())
    for node in sim.nodes:
        assert node.ledger is not None
        store = node.ledger.store
        for height in range(1, node.height() + 1):
            digest.update(store.load_block(height) or b"")
        digest.update(store.load_safety() or b"")
    return digest.hexdigest()


def test_a_seed_runs_the_same_twice() -> None:
    assert fingerprint(run(SCENARIOS["n4_twins_forged"], 7)) == fingerprint(run(SCENARIOS["n4_twins_forged"], 7))
    assert fingerprint(run(SCENARIOS["n4_twins_forged"], 7)) != fingerprint(run(SCENARIOS["n4_twins_forged"], 8))


def test_a_seed_runs_the_same_under_another_hash_seed() -> None:
    """Nothing may depend on set or dict order of bytes, which PYTHONHASHSEED changes."""
    code = "from tests.sim.test_simulation import *; print(fingerprint(run(SCENARIOS['n7_twins'], 3)))"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == fingerprint(run(SCENARIOS["n7_twins"], 3))


def test_a_run_goes_through_every_kind_of_fault() -> None:
    totals: dict[str, int] = {}
    for seed in range(10):
        for key, count in run(SCENARIOS["n4_twins_forged"], seed).stats.items():
            totals[key] = totals.get(key, 0) + count
    assert all(totals.get(key, 0) > 0 for key in ("crashes", "crashes_mid_output", "partitions", "syncs")), totals


def first_failure(scenario: str, seeds: int) -> str:
    for seed in range(seeds):
        try:
            run(SCENARIOS[scenario], seed)
        except InvariantViolated as exc:
            return str(exc)
    return "no failure"


def test_it_catches_a_replica_that_forgets_its_safety_state(monkeypatch: pytest.MonkeyPatch) -> None:
    original = consensus.replica.Replica.__init__

    def amnesiac(self: consensus.replica.Replica, config: Any, crypto: Any, height: int, safety: object = None,
                 **rest: Any) -> None:
        original(self, config, crypto, height, None, **rest)

    monkeypatch.setattr(consensus.replica.Replica, "__init__", amnesiac)
    assert "signed two conflicting messages" in first_failure("n4_faults", 20)


def test_it_catches_a_safety_state_written_without_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    """The crash model matters: a crash forgets an unsynced write, and the restarted replica signs again."""
    monkeypatch.setattr(ChainStore, "save_safety", lambda self, data: self.kv.put(b"x/safety", data, sync=False))
    assert "signed two conflicting messages" in first_failure("n4_faults", 20)


def patch_consensus_quorum(monkeypatch: pytest.MonkeyPatch, quorum: object) -> None:
    monkeypatch.setattr(consensus.validator_sets, "quorum", quorum)  # where each height's quorum is counted


def test_it_catches_a_quorum_one_too_small(monkeypatch: pytest.MonkeyPatch) -> None:
    too_small = lambda n: (n + consensus.quorum.fault_tolerance(n)) // 2  # noqa: E731
    patch_consensus_quorum(monkeypatch, too_small)
    assert "without a quorum of valid seals" in first_failure("n4_twins", 20)
    monkeypatch.setattr(tests.sim.world, "quorum", too_small)  # certificates too: then the chains fork
    monkeypatch.setattr(node.chain.block, "quorum", too_small)
    assert "fork at height" in first_failure("n4_twins", 20)


def test_it_catches_a_block_check_that_trusts_the_state_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real block check runs under the seeds: without its contents check, honest nodes
    prepare a Byzantine block whose state root its transactions do not produce."""
    monkeypatch.setattr(node.chain.candidate.Contents, "check", lambda self, header: None)
    assert "signed a block the block check refuses" in first_failure("n4_bad_blocks", 20)


def test_it_catches_a_commit_that_skips_execution(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger that stores a block without the state it writes keeps one chain but not one state."""
    original = node.chain.ledger.Ledger.commit

    def stateless(self: node.chain.ledger.Ledger, block: Any, txs: Any, execution: Any, certificate: Any) -> None:
        if block.header.height == 3:
            # as if the block changed nothing but the state tree
            execution = node.chain.execution.Execution(execution.receipts, {}, self.state_update(execution))
        original(self, block, txs, execution, certificate)

    monkeypatch.setattr(node.chain.ledger.Ledger, "commit", stateless)
    assert "state" in first_failure("n4_faults", 20)


def test_a_failure_names_its_seed_and_the_command_to_run_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    patch_consensus_quorum(monkeypatch, lambda n: 1)
    with pytest.raises(AssertionError, match=r"at seed 0: .*\n  replay: SIM_SCENARIO=n4_twins SIM_SEED=0 "):
        check_seed("n4_twins", 0)


def test_it_catches_a_replica_that_keeps_the_validators_it_started_with(monkeypatch: pytest.MonkeyPatch) -> None:
    """A consensus core that ignores the sets it is told decides on with the old set: a grown set's
    height by the old quorum, or with a removed validator's signatures."""
    original = consensus.validator_sets.ValidatorSets.__init__

    def static(self: consensus.validator_sets.ValidatorSets, height: int, validators: Any, known: Any) -> None:
        original(self, height, validators, None)

    monkeypatch.setattr(consensus.validator_sets.ValidatorSets, "__init__", static)
    failure = first_failure("n4_promote_remove", 10)
    assert "without a quorum of valid seals (3 of 5" in failure or "not a validator of that height" in failure


def test_it_catches_a_replica_that_counts_a_removed_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The twins of a removed validator sign on with its key: a core that takes their messages as a
    member's puts them in what it signs and commits."""
    original = consensus.validator_sets.ValidatorSet.__init__
    genesis_keys = frozenset(tests.sim.keyring.Keyring(4).public_keys)

    def lax(self: consensus.validator_sets.ValidatorSet, validators: tuple[bytes, ...]) -> None:
        original(self, validators)
        self.members = self.members | genesis_keys

    monkeypatch.setattr(consensus.validator_sets.ValidatorSet, "__init__", lax)
    assert "not validators of" in first_failure("n4_twins_removed", 20)


