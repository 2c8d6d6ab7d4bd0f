"""A replica that falls behind asks to catch up, and what it keeps for later
heights is verified and bounded per sender."""

from __future__ import annotations

from consensus.actions import CommitBlock, RequestSync
from consensus.events import BlockSynced, BlockValidated, MessageReceived, TimeoutFired, TransactionsPending
from consensus.messages import Commit, Prepare, Proposal, Signed, seal_bytes
from consensus.replica import Replica
from tests.consensus.harness import block_for, hash_of, make_config, make_keys, of_type, signed_by

KEYS = make_keys(4)  # height 1, round 0: validator 1 proposes
BLOCK = block_for(1, 0)
LATER = hash_of(block_for(2, 0))


def replica(**config: object) -> Replica:
    r = Replica(make_config(4, **config), KEYS[0], 1)
    r.start()
    r.handle(TransactionsPending())
    return r


def later_prepare(index: int, round_: int = 0, height: int = 2) -> Signed:
    return signed_by(KEYS[index], Prepare(height, round_, LATER))


def test_a_replica_stuck_while_another_signed_for_a_later_height_asks_to_sync() -> None:
    """The others went on without it and may need it for their next quorum: waiting is no use."""
    r = replica()
    assert r.handle(MessageReceived(later_prepare(1))) == []  # kept for later: it may still catch up by itself
    assert RequestSync(2) in r.handle(TimeoutFired(1, 0))
    assert RequestSync(2) in r.handle(TimeoutFired(1, 1))  # and again each round, in case a fetch failed


def test_a_replica_that_hears_of_no_later_height_does_not_ask_to_sync() -> None:
    r = replica()
    assert of_type(r.handle(TimeoutFired(1, 0)), RequestSync) == []


def test_a_replica_asks_no_more_once_it_caught_up() -> None:
    r = replica()
    r.handle(MessageReceived(later_prepare(1)))
    r.handle(BlockSynced(1))
    assert r.height == 2
    assert of_type(r.handle(TimeoutFired(2, 0)), RequestSync) == []


def test_messages_for_later_heights_are_verified_before_they_are_kept() -> None:
    r = replica()
    good = later_prepare(1)
    forged = Signed(KEYS[2].public_key, good.message, good.signature)
    assert r.handle(MessageReceived(forged)) == []
    assert r.dropped["bad_signature"] == 1
    assert of_type(r.handle(TimeoutFired(1, 0)), RequestSync) == []  # a forgery is no sign of being behind


def test_one_sender_cannot_fill_the_buffer_for_later_heights() -> None:
    r = replica(future_messages_max=8)  # two per validator
    for round_ in range(3):
        r.handle(MessageReceived(later_prepare(1, round_)))
    assert r.dropped["sender_over_limit"] == 1
    r.handle(MessageReceived(later_prepare(2)))
    r.handle(MessageReceived(later_prepare(3)))
    assert r.dropped["sender_over_limit"] == 1 and r.dropped["far_height"] == 0  # the others still get in


def test_kept_messages_count_again_after_they_are_used() -> None:
    r = replica(future_messages_max=8)
    r.handle(MessageReceived(later_prepare(1, 0)))
    r.handle(MessageReceived(later_prepare(1, 1)))
    r.handle(BlockSynced(1))  # height 2: both are taken out of the buffer
    r.handle(MessageReceived(later_prepare(1, 0, height=3)))
    r.handle(MessageReceived(later_prepare(1, 1, height=3)))
    assert r.dropped["sender_over_limit"] == 0


# ---- a block this replica found invalid, committed by a quorum -----------------------


def commits(block_hash: bytes) -> list[Signed]:
    return [signed_by(KEYS[i], Commit(1, 0, block_hash, KEYS[i].sign(seal_bytes(block_hash)))) for i in (1, 2, 3)]


def test_a_replica_that_found_the_block_invalid_fetches_the_one_a_quorum_committed() -> None:
    """Its check failed (say, a transaction it had not seen yet); 2f+1 seals say the block is final."""
    r = replica()
    r.handle(MessageReceived(signed_by(KEYS[1], Proposal(1, 0, BLOCK, hash_of(BLOCK), ()))))
    r.handle(BlockValidated(1, 0, hash_of(BLOCK), False))
    actions = [a for s in commits(hash_of(BLOCK)) for a in r.handle(MessageReceived(s))]
    assert RequestSync(1) in actions and not of_type(actions, CommitBlock)


def test_seals_that_came_before_the_invalid_verdict_also_lead_to_a_fetch() -> None:
    r = replica()
    r.handle(MessageReceived(signed_by(KEYS[1], Proposal(1, 0, b"other bytes", hash_of(BLOCK), ()))))
    for s in commits(hash_of(BLOCK)):
        r.handle(MessageReceived(s))
    actions = r.handle(BlockValidated(1, 0, hash_of(BLOCK), False))
    assert actions == [RequestSync(1)]
    assert r.height == 1
