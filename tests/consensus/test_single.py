"""A chain of one validator: every quorum is itself, so each block commits at once."""

from __future__ import annotations

from consensus.actions import (
    Broadcast,
    BuildBlock,
    CommitBlock,
    PersistSafetyState,
    ScheduleTimeout,
)
from consensus.events import BlockBuilt, TransactionsPending
from consensus.messages import Commit, Prepare, Proposal, seal_bytes
from consensus.replica import Replica
from tests.consensus.harness import (
    assert_persisted_before_broadcast,
    block_for,
    broadcasts,
    hash_of,
    make_config,
    make_keys,
    of_type,
)

KEY = make_keys(1)[0]


def solo() -> Replica:
    return Replica(make_config(1), KEY, 1)


def built(height: int) -> BlockBuilt:
    block = block_for(height, 0)
    return BlockBuilt(height, 0, block, hash_of(block))


def test_start_asks_for_the_first_block() -> None:
    assert solo().start() == [BuildBlock(1, 0)]


def test_a_built_block_is_persisted_sent_and_committed() -> None:
    r = solo()
    r.start()
    actions = r.handle(built(1))
    kinds = [type(a) for a in actions]
    assert kinds == [PersistSafetyState, Broadcast, Broadcast, Broadcast, CommitBlock, BuildBlock]
    assert_persisted_before_broadcast(actions)
    assert [type(m) for m in broadcasts(actions)] == [Proposal, Prepare, Commit]
    assert actions[-1] == BuildBlock(2, 0)
    assert r.height == 2


def test_the_commit_certificate_holds_one_valid_seal() -> None:
    r = solo()
    r.start()
    commit = of_type(r.handle(built(1)), CommitBlock)[0]
    block = block_for(1, 0)
    assert (commit.height, commit.block, commit.block_hash) == (1, block, hash_of(block))
    [(validator, seal)] = commit.certificate
    assert validator == KEY.public_key
    assert KEY.verify(validator, seal_bytes(hash_of(block)), seal)
    assert not KEY.verify(validator, seal_bytes(hash_of(b"other")), seal)


def test_the_persisted_state_holds_what_was_signed() -> None:
    r = solo()
    r.start()
    actions = r.handle(built(1))
    [persist] = of_type(actions, PersistSafetyState)
    assert (persist.state.height, persist.state.round) == (1, 0)
    assert persist.state.sent == tuple(a.signed for a in of_type(actions, Broadcast))
    assert persist.state.prepared is not None and persist.state.prepared.block == block_for(1, 0)


def test_heights_follow_one_another() -> None:
    r = solo()
    r.start()
    for height in range(1, 6):
        commit = of_type(r.handle(built(height)), CommitBlock)[0]
        assert commit.height == height and commit.block == block_for(height, 0)
    assert r.height == 6


def test_an_idle_chain_schedules_no_timer() -> None:
    r = solo()
    actions = r.start()
    for height in range(1, 4):
        actions += r.handle(built(height))
    assert of_type(actions, ScheduleTimeout) == []


def test_pending_transactions_start_one_timer_per_height() -> None:
    r = solo()
    r.start()
    assert r.handle(TransactionsPending()) == [ScheduleTimeout(1, 0, r.config.round_timeout_ms)]
    assert r.handle(TransactionsPending()) == []  # the timer already runs
    r.handle(built(1))
    assert r.handle(TransactionsPending()) == [ScheduleTimeout(2, 0, r.config.round_timeout_ms)]


def test_a_block_built_for_another_round_is_ignored() -> None:
    r = solo()
    r.start()
    block = block_for(1, 3)
    assert r.handle(BlockBuilt(1, 3, block, hash_of(block))) == []
    assert r.handle(BlockBuilt(2, 0, block, hash_of(block))) == []
    assert r.height == 1
