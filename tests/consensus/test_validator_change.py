"""A validator set that changes at a height: each height is decided by its own set,
a replica never enters a height whose set it was not told, and a key that is not
a validator at a height follows it without signing."""

from __future__ import annotations

import pytest

from consensus.actions import Action, Broadcast, BuildBlock, CommitBlock, PersistSafetyState, RequestSync
from consensus.actions import ScheduleTimeout, ValidateBlock
from consensus.config import ReplicaConfig
from consensus.events import BlockBuilt, BlockValidated, MessageReceived, TimeoutFired, TransactionsPending
from consensus.events import ValidatorSetKnown
from consensus.messages import Commit, Prepare, PreparedCertificate, Proposal, RoundChange, Signed, seal_bytes
from consensus.replica import Replica
from consensus.safety_rules import NotAValidator, SafetyRules, ShortCertificate
from consensus.safety_state import SafetyState
from consensus.validator_sets import ValidatorSets
from tests.consensus.harness import (
    CHAIN_ID,
    OUTSIDER,
    Ed25519,
    Network,
    assert_persisted_before_broadcast,
    block_for,
    broadcasts,
    hash_of,
    make_keys,
    of_type,
    signed_by,
)

KEYS = make_keys(6)


def keys_of(*indices: int) -> tuple[bytes, ...]:
    return tuple(KEYS[i].public_key for i in indices)


FOUR = keys_of(0, 1, 2, 3)
FIVE = keys_of(0, 1, 2, 3, 4)


def replica(key: Ed25519, height: int, validators: tuple[bytes, ...], **later: tuple[bytes, ...]) -> Replica:
    """A started replica at `height`; `later` gives the known sets of later heights as h<height>=set."""
    known = {int(h[1:]): vs for h, vs in later.items()}
    r = Replica(ReplicaConfig(CHAIN_ID, validators), key, height, known_validators=known)
    r.start()
    return r


def received(r: Replica, *signed: Signed) -> list[Action]:
    return [a for s in signed for a in r.handle(MessageReceived(s))]


def proposal(proposer: Ed25519, height: int, round_: int = 0) -> Signed:
    block = block_for(height, round_)
    return signed_by(proposer, Proposal(height, round_, block, hash_of(block), ()))


def prepare(key: Ed25519, height: int, round_: int = 0) -> Signed:
    return signed_by(key, Prepare(height, round_, hash_of(block_for(height, round_))))


def commit(key: Ed25519, height: int, round_: int = 0) -> Signed:
    h = hash_of(block_for(height, round_))
    return signed_by(key, Commit(height, round_, h, key.sign(seal_bytes(h))))


def decide(r: Replica, height: int, proposer: Ed25519, voters: list[Ed25519]) -> list[Action]:
    """Feeds `r` the proposal of (height, 0), its verdict, then the voters' prepares and commits."""
    actions = received(r, proposal(proposer, height))
    actions += r.handle(BlockValidated(height, 0, hash_of(block_for(height, 0)), True))
    actions += received(r, *(prepare(k, height) for k in voters))
    return actions + received(r, *(commit(k, height) for k in voters))


def signs_nothing(actions: list[Action]) -> bool:
    return not of_type(actions, Broadcast) and not of_type(actions, PersistSafetyState)


def proposers(net: Network, height: int) -> list[int]:
    return [i for i in range(len(net.keys)) if any(isinstance(m, Proposal) and m.height == height for m in net.sent_by(i))]


def signers(c: CommitBlock) -> set[bytes]:
    return {v for v, _ in c.certificate}


# ---- a network across the change ---------------------------------------------------


def test_a_validator_added_at_a_height_signs_from_there_and_the_quorum_grows() -> None:
    net = Network(5, build_heights_max=4, sets={1: (0, 1, 2, 3), 3: (0, 1, 2, 3, 4)}).start().run()
    for i in range(5):
        assert net.committed_blocks(i) == [block_for(h, 0) for h in range(1, 5)]
        assert_persisted_before_broadcast(net.actions[i])
    assert min(m.height for m in net.sent_by(4)) == 3  # it follows heights 1 and 2, then signs
    assert [proposers(net, h) for h in (2, 3, 4)] == [[2], [3], [4]]  # (height + round) % n of each set
    certificates = {c.height: c for c in net.commits[0]}
    assert signers(certificates[2]) <= set(FOUR) and len(signers(certificates[2])) >= 3
    assert signers(certificates[3]) <= set(FIVE) and len(signers(certificates[3])) >= 4
    assert not net.replicas[0].dropped["non_member"]


def test_a_validator_removed_at_a_height_signs_nothing_there_and_follows() -> None:
    net = Network(5, build_heights_max=4, sets={1: (0, 1, 2, 3, 4), 3: (0, 1, 2, 3)}).start().run()
    for i in range(5):
        assert net.committed_blocks(i) == [block_for(h, 0) for h in range(1, 5)]
    assert max(m.height for m in net.sent_by(4)) == 2
    assert all(KEYS[4].public_key not in signers(c) for c in net.commits[0] if c.height >= 3)
    assert [proposers(net, h) for h in (3, 4)] == [[3], [0]]
    assert not net.replicas[4].is_validator and net.replicas[4].validators == FOUR


def test_a_replaced_key_is_refused_and_its_successor_signs() -> None:
    net = Network(6, build_heights_max=4, sets={1: (0, 1, 2, 3), 3: (0, 1, 2, 5)}).start().run()
    for i in range(6):
        assert net.committed_blocks(i) == [block_for(h, 0) for h in range(1, 5)]
    assert max(m.height for m in net.sent_by(3)) == 2
    assert min(m.height for m in net.sent_by(5)) == 3
    assert net.sent_by(4) == []  # never a validator: it followed every height


def test_a_proposer_restarted_at_the_first_height_of_a_new_set_resumes_its_proposal() -> None:
    net = Network(5, build_heights_max=4, sets={1: (0, 1, 2, 3), 3: (0, 1, 2, 3, 4)})
    net.drop = lambda sender, receiver, signed: signed.message.height >= 3
    net.start().run()
    assert [len(c) for c in net.commits] == [2] * 5
    [state] = net.persisted[3][-1:]
    assert state.height == 3 and [type(s.message) for s in state.sent] == [Proposal, Prepare]
    net.drop = lambda sender, receiver, signed: False
    actions = net.restart(3)
    assert [a.signed for a in of_type(actions, Broadcast)] == list(state.sent) and not of_type(actions, BuildBlock)
    assert net.replicas[3].validators == FIVE
    net.run()
    for i in range(5):
        assert net.committed_blocks(i) == [block_for(h, 0) for h in range(1, 5)]


# ---- one replica fed by hand -------------------------------------------------------


def test_the_quorum_of_a_grown_set_is_four_of_five() -> None:
    r = replica(KEYS[0], 3, FIVE, h4=FIVE)
    actions = received(r, proposal(KEYS[3], 3))  # FIVE[(3 + 0) % 5]
    assert of_type(actions, ValidateBlock)
    r.handle(BlockValidated(3, 0, hash_of(block_for(3, 0)), True))
    assert broadcasts(received(r, prepare(KEYS[1], 3), prepare(KEYS[2], 3)), Commit) == []  # 3 of 5
    assert len(broadcasts(received(r, prepare(KEYS[4], 3)), Commit)) == 1  # 4 of 5
    assert not of_type(received(r, commit(KEYS[1], 3), commit(KEYS[2], 3)), CommitBlock)
    [decided] = of_type(received(r, commit(KEYS[4], 3)), CommitBlock)
    assert len(decided.certificate) == 4 and r.height == 4


def test_a_removed_validators_messages_are_dropped_from_the_height_it_leaves() -> None:
    at_2 = replica(KEYS[0], 2, FIVE, h3=FOUR)
    received(at_2, prepare(KEYS[4], 2))
    assert at_2.dropped["non_member"] == 0
    received(at_2, prepare(KEYS[4], 3))  # for a later height whose set is known: checked at once
    assert at_2.dropped["non_member"] == 1
    at_3 = replica(KEYS[0], 3, FOUR, h4=FOUR)
    received(at_3, prepare(KEYS[4], 3), proposal(KEYS[4], 3))
    assert at_3.dropped["non_member"] == 2


def test_a_round_change_justification_needs_a_quorum_of_its_heights_set() -> None:
    def round_one(changes: int) -> Replica:
        r = replica(KEYS[0], 3, FIVE, h4=FIVE)
        justification = tuple(signed_by(k, RoundChange(3, 1, None)) for k in KEYS[:changes])
        block = block_for(3, 1)
        received(r, signed_by(KEYS[4], Proposal(3, 1, block, hash_of(block), justification)))  # FIVE[(3 + 1) % 5]
        return r

    assert round_one(3).dropped["unjustified_proposal"] == 1  # a quorum of four, not of five
    accepted = round_one(4)
    assert accepted.round == 1 and not accepted.dropped


def test_a_replaced_key_is_refused_and_the_new_one_accepted() -> None:
    replaced = keys_of(0, 1, 2, 5)
    r = replica(KEYS[0], 3, replaced, h4=replaced)
    received(r, prepare(KEYS[3], 3))
    assert r.dropped["non_member"] == 1
    assert of_type(received(r, proposal(KEYS[5], 3)), ValidateBlock)  # replaced[(3 + 0) % 4]
    assert sum(r.dropped.values()) == 1


def test_a_replica_parks_at_a_height_whose_set_it_was_not_told_then_enters_it() -> None:
    r = replica(KEYS[0], 1, FOUR)
    actions = decide(r, 1, KEYS[1], [KEYS[1], KEYS[2]])  # with its own votes, 3 of 4
    assert of_type(actions, CommitBlock)
    after = actions[actions.index(of_type(actions, CommitBlock)[0]) + 1 :]
    assert not of_type(after, ScheduleTimeout) and not of_type(after, BuildBlock) and signs_nothing(after)
    assert (r.height, r.parked, r.validators, r.is_validator) == (2, True, (), False)
    with pytest.raises(LookupError):
        r.proposer(2, 0)
    assert r.handle(TransactionsPending()) == []
    assert r.handle(TimeoutFired(2, 0)) == []
    assert r.handle(BlockBuilt(2, 0, block_for(2, 0), hash_of(block_for(2, 0)))) == []
    assert received(r, proposal(KEYS[2], 2)) == []  # kept
    assert sum(r.dropped.values()) == 0
    actions = r.handle(ValidatorSetKnown(2, FOUR))
    assert not r.parked and r.is_validator and (r.height, r.round) == (2, 0)
    assert of_type(actions, ValidateBlock) == [ValidateBlock(2, 0, block_for(2, 0), hash_of(block_for(2, 0)))]
    assert of_type(actions, ScheduleTimeout)  # the round runs now


def test_a_released_proposer_builds_its_block_for_the_new_set() -> None:
    r = replica(KEYS[4], 1, FOUR)  # a follower at height 1
    assert signs_nothing(decide(r, 1, KEYS[1], [KEYS[0], KEYS[1], KEYS[2]]))
    assert r.parked
    actions = r.handle(ValidatorSetKnown(2, keys_of(0, 1, 4, 3)))  # promoted: it proposes (2, 0)
    assert actions == [BuildBlock(2, 0)]
    actions = r.handle(BlockBuilt(2, 0, block_for(2, 0), hash_of(block_for(2, 0))))
    assert [type(m) for m in broadcasts(actions)] == [Proposal, Prepare]
    assert_persisted_before_broadcast(actions)


def test_messages_kept_before_their_heights_set_was_known_are_checked_against_it() -> None:
    r = replica(KEYS[0], 1, FOUR)
    new = keys_of(0, 1, 4, 5)  # 2 and 3 leave at height 2; 4 and 5 join
    kept = received(r, proposal(KEYS[2], 2), prepare(KEYS[3], 2), proposal(KEYS[4], 2), prepare(KEYS[5], 2))
    assert kept == [] and sum(r.dropped.values()) == 0  # unknown set: kept on their signatures
    decide(r, 1, KEYS[1], [KEYS[1], KEYS[2]])
    assert r.parked
    actions = r.handle(ValidatorSetKnown(2, new))
    assert r.dropped["non_member"] == 2  # the old set's proposer and voter
    assert of_type(actions, ValidateBlock) == [ValidateBlock(2, 0, block_for(2, 0), hash_of(block_for(2, 0)))]
    assert broadcasts(r.handle(BlockValidated(2, 0, hash_of(block_for(2, 0)), True))) == [
        Prepare(2, 0, hash_of(block_for(2, 0)))
    ]


def test_each_sender_shares_the_room_for_later_heights_among_that_heights_validators() -> None:
    config = ReplicaConfig(CHAIN_ID, FOUR, future_messages_max=8)
    r = Replica(config, KEYS[0], 1, known_validators={2: FIVE, 3: FOUR})
    received(r, prepare(KEYS[1], 2, 0), prepare(KEYS[1], 2, 1))  # 8 // 5: one each
    assert r.dropped["sender_over_limit"] == 1
    received(r, prepare(KEYS[2], 3, 0), prepare(KEYS[2], 3, 1))  # 8 // 4: two each
    assert r.dropped["sender_over_limit"] == 1


def test_a_different_set_for_a_known_height_is_refused() -> None:
    r = replica(KEYS[0], 1, FOUR, h2=FOUR)
    assert r.handle(ValidatorSetKnown(2, FIVE)) == [] and r.handle(ValidatorSetKnown(3, ())) == []
    assert r.dropped["invalid_validator_set"] == 2
    assert r.handle(ValidatorSetKnown(2, FOUR)) == [] and r.dropped["invalid_validator_set"] == 2  # told again


def test_a_static_chain_keeps_its_one_set() -> None:
    r = Replica(ReplicaConfig(CHAIN_ID, FOUR), KEYS[0], 1)
    assert r.proposer(1000, 0) == FOUR[0]
    r.handle(ValidatorSetKnown(5, FIVE))
    assert r.dropped["invalid_validator_set"] == 1 and r.proposer(5, 0) == FOUR[1]


# ---- restart at the first height of a new set ---------------------------------------


def test_a_restart_with_a_state_at_the_activation_height_resends_and_counts_the_new_quorum() -> None:
    r = replica(KEYS[0], 3, FIVE, h4=FIVE)
    received(r, proposal(KEYS[3], 3))
    actions = r.handle(BlockValidated(3, 0, hash_of(block_for(3, 0)), True))
    [state] = [a.state for a in of_type(actions, PersistSafetyState)]
    assert state.height == 3
    restarted = Replica(ReplicaConfig(CHAIN_ID, FIVE), KEYS[0], 3, state, known_validators={4: FIVE})
    actions = restarted.start()
    assert [a.signed for a in of_type(actions, Broadcast)] == list(state.sent)
    assert restarted.validators == FIVE and restarted.proposer(3, 0) == FIVE[3]
    received(restarted, proposal(KEYS[3], 3))
    restarted.handle(BlockValidated(3, 0, hash_of(block_for(3, 0)), True))
    assert broadcasts(received(restarted, prepare(KEYS[1], 3), prepare(KEYS[2], 3)), Commit) == []  # 3 of 5
    assert len(broadcasts(received(restarted, prepare(KEYS[4], 3)), Commit)) == 1


def test_a_validator_restarted_where_it_was_removed_resends_nothing_of_the_height_before() -> None:
    r = replica(KEYS[4], 2, FIVE, h3=FOUR)
    received(r, proposal(KEYS[2], 2))  # FIVE[(2 + 0) % 5]
    actions = r.handle(BlockValidated(2, 0, hash_of(block_for(2, 0)), True))
    [state] = [a.state for a in of_type(actions, PersistSafetyState)]
    restarted = Replica(ReplicaConfig(CHAIN_ID, FOUR), KEYS[4], 3, state, known_validators={4: FOUR})
    assert signs_nothing(restarted.start()) and not restarted.is_validator
    assert signs_nothing(decide(restarted, 3, KEYS[3], [KEYS[0], KEYS[1], KEYS[3]]))


# ---- a follower ---------------------------------------------------------------------


def test_a_follower_signs_nothing_and_commits_on_a_quorum_of_seals() -> None:
    r = Replica(ReplicaConfig(CHAIN_ID, FOUR), OUTSIDER, 1)
    actions = r.start()
    assert not r.is_validator and r.validators == FOUR
    actions += received(r, proposal(KEYS[1], 1))
    actions += r.handle(BlockValidated(1, 0, hash_of(block_for(1, 0)), True))
    actions += received(r, *(prepare(k, 1) for k in KEYS[:3]), commit(KEYS[0], 1), commit(KEYS[1], 1))
    assert of_type(actions, ValidateBlock) and not of_type(actions, CommitBlock)
    decided = received(r, commit(KEYS[2], 1))
    [c] = of_type(decided, CommitBlock)
    assert (c.height, len(c.certificate), r.height) == (1, 3, 2)
    assert signs_nothing(actions + decided)
    assert not [reason for reason in r.dropped if reason.startswith("refused")]  # it did not even try


def test_a_follower_whose_round_times_out_asks_for_sync_and_moves_on_without_signing() -> None:
    r = Replica(ReplicaConfig(CHAIN_ID, FOUR), OUTSIDER, 1)
    actions = r.start() + received(r, proposal(KEYS[1], 1), prepare(KEYS[0], 2))  # someone went on
    actions += r.handle(TimeoutFired(1, 0))
    assert RequestSync(2) in actions and r.round == 1
    assert signs_nothing(actions + r.handle(TimeoutFired(1, 1)))


def test_a_follower_promoted_at_a_height_signs_from_there() -> None:
    promoted = keys_of(0, 1, 2, 3) + (OUTSIDER.public_key,)
    r = replica(OUTSIDER, 1, FOUR, h2=promoted)
    assert signs_nothing(decide(r, 1, KEYS[1], [KEYS[0], KEYS[1], KEYS[2]]))
    assert r.is_validator and r.height == 2
    received(r, proposal(KEYS[2], 2))  # promoted[(2 + 0) % 5]
    actions = r.handle(BlockValidated(2, 0, hash_of(block_for(2, 0)), True))
    assert broadcasts(actions) == [Prepare(2, 0, hash_of(block_for(2, 0)))]
    assert [a.signed.sender for a in of_type(actions, Broadcast)] == [OUTSIDER.public_key]
    assert_persisted_before_broadcast(actions)


# ---- the safety kernel ----------------------------------------------------------------


def test_the_kernel_counts_a_certificate_against_the_validators_of_its_height() -> None:
    kernel = SafetyRules(KEYS[0], CHAIN_ID, ValidatorSets(1, FOUR, {2: FIVE}), SafetyState(2, 0, None, ()))
    h = hash_of(block_for(2, 0))
    kernel.sign(Prepare(2, 0, h))
    three = tuple(prepare(k, 2) for k in KEYS[:3])
    with pytest.raises(ShortCertificate) as caught:
        kernel.commit(2, PreparedCertificate(0, block_for(2, 0), h, three))
    assert (caught.value.prepares, caught.value.needed) == (3, 4)
    kernel.commit(2, PreparedCertificate(0, block_for(2, 0), h, three + (prepare(KEYS[4], 2),)))


def test_the_kernel_signs_only_where_its_key_is_a_validator() -> None:
    kernel = SafetyRules(KEYS[4], CHAIN_ID, ValidatorSets(1, FIVE, {2: FOUR}), SafetyState(1, 0, None, ()))
    kernel.sign(Prepare(1, 0, hash_of(b"a")))
    for height in (2, 3):  # removed at 2; the set of 3 is not known
        with pytest.raises(NotAValidator):
            kernel.sign(Prepare(height, 0, hash_of(b"a")))
