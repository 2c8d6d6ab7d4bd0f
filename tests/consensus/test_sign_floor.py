"""Below `sign_from` a replica follows consensus and signs nothing: a rebuilt node cannot know what it signed there."""

from __future__ import annotations

from consensus.actions import Action, Broadcast, CommitBlock, PersistSafetyState, ValidateBlock
from consensus.events import BlockBuilt, BlockValidated, MessageReceived, TimeoutFired
from consensus.messages import Commit, Prepare, Proposal, seal_bytes
from consensus.replica import Replica
from tests.consensus.harness import block_for, hash_of, make_config, make_keys, of_type, signed_by

KEYS = make_keys(4)
CONFIG = make_config(4)


def _signs_nothing(actions: list[Action]) -> None:
    assert not of_type(actions, Broadcast) and not of_type(actions, PersistSafetyState), actions


def test_the_proposer_below_its_floor_proposes_nothing() -> None:
    replica = Replica(CONFIG, KEYS[1], 1, sign_from=3)  # KEYS[1] proposes height 1, round 0
    _signs_nothing(replica.start())
    block = block_for(1, 0)
    _signs_nothing(replica.handle(BlockBuilt(1, 0, block, hash_of(block))))
    _signs_nothing(replica.handle(TimeoutFired(1, 0)))  # no round change either


def test_a_replica_below_its_floor_commits_what_the_others_decided_without_voting() -> None:
    replica = Replica(CONFIG, KEYS[2], 1, sign_from=2)
    _signs_nothing(replica.start())
    block = block_for(1, 0)
    block_hash = hash_of(block)
    actions = replica.handle(MessageReceived(signed_by(KEYS[1], Proposal(1, 0, block, block_hash, ()))))
    assert of_type(actions, ValidateBlock)
    _signs_nothing(actions + replica.handle(BlockValidated(1, 0, block_hash, True)))
    voters = (KEYS[0], KEYS[1], KEYS[3])
    actions = []
    for key in voters:
        actions += replica.handle(MessageReceived(signed_by(key, Prepare(1, 0, block_hash))))
    for key in voters:
        seal = key.sign(seal_bytes(block_hash))
        actions += replica.handle(MessageReceived(signed_by(key, Commit(1, 0, block_hash, seal))))
    _signs_nothing(actions)
    assert [c.block_hash for c in of_type(actions, CommitBlock)] == [block_hash]
    assert replica.height == 2  # at its floor it takes part again: it proposes height 2
    block2 = block_for(2, 0)
    actions = replica.handle(BlockBuilt(2, 0, block2, hash_of(block2)))
    sent = [type(b.signed.message) for b in of_type(actions, Broadcast)]
    assert of_type(actions, PersistSafetyState) and sent == [Proposal, Prepare]
