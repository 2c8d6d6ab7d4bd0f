"""What a run is judged by once it ends: liveness across the membership changes, every honest
store re-read, and what honest replicas refused."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from node.chain.block import decode_block, decode_certificate
from node.chain.tx import tx_hash_of
from storage.chain import ChainStore
from tests.sim.invariants import InvariantViolated
from tests.sim.membership import PROMOTE

if TYPE_CHECKING:
    from tests.sim.world import Simulation

UNEXPECTED_DROPS = (  # "non_member" only from a key that is not a validator of the message's height
    "non_member", "bad_signature", "bad_seal", "unjustified_proposal", "invalid_round_change", "sender_over_limit"
)


def silent_new_validators(sim: Simulation) -> list[str]:
    """The keys changes made validators (and no later change took away) that signed no COMMIT, or are in
    no certificate an honest node stored, from the change's activation on."""
    keys, silent = sim.keyring.public_keys, []
    for i, step in enumerate(sim.plan):
        added = step.key if step.new_key is None else step.new_key
        if any(later.key == added for later in sim.plan[i + 1:]):
            continue
        if step.activation is not None and (step.kind == PROMOTE or step.kind.startswith("replace")):
            key = keys[added]
            signed = min(sim.invariants.committed_at.get(key, 0), sim.invariants.sealed_at.get(key, 0))
            if signed < step.activation:
                silent.append(f"{key.hex()[:8]} ({step.kind} active at {step.activation})")
    return silent


def check_end(sim: Simulation) -> None:
    """Raises InvariantViolated unless the run ended live and every store checks out."""
    if not sim.live():
        heights = {node.id: (node.height(), node.replica and node.replica.round) for node in sim.honest}
        raise InvariantViolated(
            f"no liveness: {sim.scenario.heights_after_heal} heights past the heal and the last membership "
            f"change were not reached by every honest node within {sim.scenario.liveness_bound_ms} ms; "
            f"changes passed {sum(s.passed_at is not None for s in sim.plan)} of {len(sim.plan)}, "
            f"target {sim.target()}, (height, round) by node {heights}, "
            f"added validators silent since their activation: {silent_new_validators(sim)}"
        )
    _check_chains(sim)
    _check_drops(sim)
    _count_new_validators_seals(sim)
    sim.stats["foreign_messages"] = sum(node.foreign for node in sim.honest)


def _count_new_validators_seals(sim: Simulation) -> None:
    """How many certificates from their activation to the target hold the seals of the keys changes added."""
    keys = sim.keyring.public_keys
    for step in sim.plan:
        if step.kind == PROMOTE or step.kind.startswith("replace"):
            key = keys[step.key if step.new_key is None else step.new_key]
            assert step.activation is not None
            sealed = sum(any(v == key for v, _ in _certificate(sim, h)) for h in range(step.activation, sim.target() + 1))
            sim.stats["new_validator_certificates"] = sim.stats.get("new_validator_certificates", 0) + sealed


def _check_drops(sim: Simulation) -> None:
    """Every message here is validly signed by a member: an honest replica that rejects one
    as forged or unjustified rejects what honest code produced. Only messages from keys that are not
    validators of their height (a Byzantine node signing on with a removed key) may be refused, once each."""
    for node in sim.honest:
        dropped = node.dropped + (node.replica.dropped if node.replica is not None else Counter())
        wrong = {reason: dropped[reason] for reason in UNEXPECTED_DROPS if dropped[reason]}
        if sum(wrong.values()) > node.foreign or dropped["invalid_validator_set"]:
            raise InvariantViolated(f"honest node {node.id} dropped well-formed messages: {wrong} "
                                    f"(of {node.foreign} from non-validators), {dropped['invalid_validator_set']} "
                                    "validator sets")


def _check_chains(sim: Simulation) -> None:
    """Every honest store holds a prefix of one chain, each block certified by its height's
    validators, re-read from the stores themselves."""
    for node in sim.honest:
        store = ChainStore(node.store)
        for height in range(1, node.height() + 1):
            raw, cert = store.load_block(height), store.load_certificate(height)
            assert raw is not None and cert is not None
            block = decode_block(raw)
            header = block.header
            sim.invariants.check_certificate(node.id, height, header.hash(), decode_certificate(cert))
            sim.invariants.check_header_validators(node.id, header)
            sim.invariants.check_block(node.id, height, header.hash(), header.state_root)
            sim.invariants.check_txs(node.id, height, [tx_hash_of(tx) for tx in block.txs])


def _certificate(sim: Simulation, height: int) -> tuple[tuple[bytes, bytes], ...]:
    """The certificate of `height` in the store of an honest node that holds it."""
    node = next(node for node in sim.honest if node.height() >= height)
    raw = ChainStore(node.store).load_certificate(height)
    assert raw is not None
    return decode_certificate(raw)
