"""The normal case with every validator up: proposal, prepares, commits; and the
messages a replica must drop or keep for later."""

from __future__ import annotations

import pytest

from consensus.actions import Action, Broadcast, BuildBlock, CommitBlock, RequestSync, ValidateBlock
from consensus.events import BlockSynced, BlockValidated, MessageReceived
from consensus.messages import Commit, Prepare, Proposal, Signed, seal_bytes
from consensus.quorum import quorum
from consensus.replica import Replica
from tests.consensus.harness import (
    OUTSIDER,
    Network,
    assert_persisted_before_broadcast,
    block_for,
    broadcasts,
    hash_of,
    make_config,
    make_keys,
    of_type,
    signed_by,
)

HEIGHTS = 3


@pytest.mark.parametrize("n", [4, 7])
def test_every_replica_commits_the_same_blocks(n: int) -> None:
    net = Network(n, build_heights_max=HEIGHTS).start().run()
    expected = [block_for(h, 0) for h in range(1, HEIGHTS + 1)]
    for i in range(n):
        assert net.committed_blocks(i) == expected
        assert [c.height for c in net.commits[i]] == [1, 2, 3]
        assert net.replicas[i].height == HEIGHTS + 1
        assert_persisted_before_broadcast(net.actions[i])
        assert not set(net.replicas[i].dropped) - {"old"}  # only late votes for finished heights


@pytest.mark.parametrize("n", [4, 7])
def test_certificates_hold_a_quorum_of_distinct_valid_seals(n: int) -> None:
    net = Network(n, build_heights_max=HEIGHTS).start().run()
    validators = net.config.validators
    for i in range(n):
        for c in net.commits[i]:
            signers = [v for v, _ in c.certificate]
            assert len(set(signers)) == len(signers) >= quorum(n)
            assert signers == sorted(signers, key=validators.index)
            assert all(net.keys[0].verify(v, seal_bytes(c.block_hash), s) for v, s in c.certificate)
            assert c.block_hash == hash_of(c.block)


def test_the_proposer_rotates_with_the_height() -> None:
    net = Network(4, build_heights_max=HEIGHTS).start().run()
    for height in range(1, HEIGHTS + 1):
        proposers = [i for i in range(4) if any(isinstance(m, Proposal) and m.height == height for m in net.sent_by(i))]
        assert proposers == [height % 4]


def test_a_replica_that_finds_the_block_invalid_does_not_prepare_it() -> None:
    net = Network(4)
    net.valid = lambda i, block: i != 2
    net.start().run()
    assert not [m for m in net.sent_by(2) if isinstance(m, (Prepare, Commit))]
    assert net.replicas[2].dropped["invalid_block"] == 1
    for i in (0, 1, 3):  # three honest validators are a quorum without it
        assert net.committed_blocks(i) == [block_for(1, 0)]


# ---- one replica fed by hand ------------------------------------------------------

KEYS = make_keys(4)
BLOCK = block_for(1, 0)
PROPOSAL = signed_by(KEYS[1], Proposal(1, 0, BLOCK, hash_of(BLOCK), ()))  # validator 1 proposes (1, 0)


def replica(index: int = 0, **config: object) -> Replica:
    r = Replica(make_config(4, **config), KEYS[index], 1)
    r.start()
    return r


def feed(r: Replica, *signed: Signed) -> list[Action]:
    return [a for s in signed for a in r.handle(MessageReceived(s))]


def prepared_replica() -> Replica:
    """Replica 0 holding the proposal for (1, 0), validated, and its own Prepare."""
    r = replica()
    assert of_type(feed(r, PROPOSAL), ValidateBlock) == [ValidateBlock(1, 0, BLOCK, hash_of(BLOCK))]
    assert broadcasts(r.handle(BlockValidated(1, 0, hash_of(BLOCK), True)), Prepare) == [Prepare(1, 0, hash_of(BLOCK))]
    return r


def test_an_invalid_block_is_not_prepared() -> None:
    r = replica()
    feed(r, PROPOSAL)
    assert r.handle(BlockValidated(1, 0, hash_of(BLOCK), False)) == []
    assert r.dropped["invalid_block"] == 1
    prepares = [signed_by(KEYS[i], Prepare(1, 0, hash_of(BLOCK))) for i in (1, 2, 3)]
    assert broadcasts(feed(r, *prepares)) == []  # never prepares, so never commits either


def test_a_non_member_is_dropped_and_counted() -> None:
    r = prepared_replica()
    forged = [signed_by(OUTSIDER, Prepare(1, 0, hash_of(BLOCK))) for _ in range(3)]
    assert feed(r, *forged) == []
    assert r.dropped["non_member"] == 3
    assert feed(r, signed_by(KEYS[2], Prepare(1, 0, hash_of(BLOCK)))) == []  # 2 of 3: still not prepared


def test_a_bad_signature_is_dropped_and_counted() -> None:
    r = prepared_replica()
    prepare = signed_by(KEYS[2], Prepare(1, 0, hash_of(BLOCK)))
    wrong_key = Signed(KEYS[3].public_key, prepare.message, prepare.signature)  # 2's signature, 3's name
    altered = Signed(prepare.sender, Prepare(1, 0, hash_of(b"other")), prepare.signature)
    by_outsider = Signed(KEYS[2].public_key, prepare.message, signed_by(OUTSIDER, prepare.message).signature)
    assert feed(r, wrong_key, altered, by_outsider) == []
    assert r.dropped["bad_signature"] == 3
    assert broadcasts(feed(r, prepare), Commit) == []  # 0 and 2 only: the forgeries did not count
    assert broadcasts(feed(r, signed_by(KEYS[3], Prepare(1, 0, hash_of(BLOCK)))), Commit) != []


def test_a_forged_seal_is_dropped() -> None:
    r = prepared_replica()
    seal = KEYS[3].sign(seal_bytes(hash_of(b"other")))
    assert feed(r, signed_by(KEYS[3], Commit(1, 0, hash_of(BLOCK), seal))) == []
    assert r.dropped["bad_seal"] == 1


def test_a_full_normal_case_by_hand() -> None:
    r = prepared_replica()
    h = hash_of(BLOCK)
    actions = feed(r, *(signed_by(KEYS[i], Prepare(1, 0, h)) for i in (1, 2)))
    assert broadcasts(actions, Commit) == [Commit(1, 0, h, KEYS[0].sign(seal_bytes(h)))]
    commits = [signed_by(KEYS[i], Commit(1, 0, h, KEYS[i].sign(seal_bytes(h)))) for i in (1, 3)]
    actions = feed(r, *commits)
    [commit] = of_type(actions, CommitBlock)
    assert [v for v, _ in commit.certificate] == [KEYS[i].public_key for i in (0, 1, 3)]
    assert r.height == 2


def network_with_a_late_replica() -> tuple[Network, list[Signed]]:
    """Replicas 0-2 commit heights 1 and 2 while replica 3 hears nothing; returns what it missed."""
    net = Network(4, build_heights_max=2)
    missed: list[Signed] = []

    def keep_from_3(sender: int, receiver: int, signed: Signed) -> bool:
        if receiver == 3:
            missed.append(signed)
        return receiver == 3

    net.drop = keep_from_3
    net.crashed = {3}
    net.start().run()
    assert all(net.committed_blocks(i) == [block_for(1, 0), block_for(2, 0)] for i in (0, 1, 2))
    net.crashed = set()
    net.drop = lambda sender, receiver, signed: False
    return net, missed


def test_future_heights_are_kept_and_used_later() -> None:
    net, missed = network_with_a_late_replica()
    r = net.replicas[3]
    net.route(3, r.start())
    for s in [s for s in missed if s.message.height == 2]:  # height 2 first: kept for later
        assert net.deliver(3, MessageReceived(s)) == []
    assert r.height == 1
    for s in [s for s in missed if s.message.height == 1]:
        net.deliver(3, MessageReceived(s))
    net.run()
    assert net.committed_blocks(3) == [block_for(1, 0), block_for(2, 0)]
    assert r.height == 3
    assert not of_type(net.actions[3], RequestSync)
    assert not set(r.dropped) - {"old"}


def test_far_future_heights_are_dropped_with_a_sync_request() -> None:
    r = replica(future_heights_max=4)
    kept = signed_by(KEYS[1], Prepare(5, 0, hash_of(BLOCK)))
    far = signed_by(KEYS[1], Prepare(6, 0, hash_of(BLOCK)))
    assert feed(r, kept) == []
    assert feed(r, far) == [RequestSync(6)]
    assert r.dropped["far_height"] == 1 and r.height == 1


def test_the_future_buffer_is_bounded() -> None:
    r = replica(future_messages_max=2)
    msgs = [signed_by(KEYS[i], Prepare(2, 0, hash_of(BLOCK))) for i in (1, 2, 3)]
    assert feed(r, *msgs) == [RequestSync(2)]
    assert r.dropped["far_height"] == 1


def test_messages_for_past_heights_are_dropped() -> None:
    net = Network(4, build_heights_max=1).start().run()
    old = [s.signed for s in of_type(net.actions[1], Broadcast)]
    r = net.replicas[0]
    before = r.dropped["old"]
    assert [a for s in old for a in r.handle(MessageReceived(s))] == []
    assert r.dropped["old"] == before + len(old)


# ---- commits that arrive before the block is validated -----------------------------


def commit_seals(block_hash: bytes, *indices: int) -> list[Signed]:
    return [signed_by(KEYS[i], Commit(1, 0, block_hash, KEYS[i].sign(seal_bytes(block_hash)))) for i in indices]


def test_commits_before_validation_wait_for_it() -> None:
    r = replica()
    feed(r, PROPOSAL)
    assert of_type(feed(r, *commit_seals(hash_of(BLOCK), 1, 2, 3)), CommitBlock) == []
    actions = r.handle(BlockValidated(1, 0, hash_of(BLOCK), True))
    [commit] = of_type(actions, CommitBlock)
    assert (commit.block, commit.block_hash) == (BLOCK, hash_of(BLOCK))
    assert r.height == 2


def test_commits_arriving_before_the_proposal_are_counted_once_it_is_valid() -> None:
    r = replica()
    feed(r, *commit_seals(hash_of(BLOCK), 1, 2, 3))
    feed(r, PROPOSAL)
    assert of_type(r.handle(BlockValidated(1, 0, hash_of(BLOCK), True)), CommitBlock) != []


def test_a_quorum_of_seals_does_not_commit_bytes_that_do_not_match_the_hash() -> None:
    """A faulty proposer sends this replica other bytes under the hash the others commit."""
    r = replica()
    h = hash_of(BLOCK)
    feed(r, signed_by(KEYS[1], Proposal(1, 0, b"not the block", h, ())))
    assert of_type(feed(r, *commit_seals(h, 1, 2, 3)), CommitBlock) == []
    assert of_type(r.handle(BlockValidated(1, 0, h, False)), CommitBlock) == []
    assert r.height == 1


def test_a_synced_replica_moves_past_the_synced_height() -> None:
    r = replica(index=0)
    assert r.handle(BlockSynced(3)) == [BuildBlock(4, 0)]  # validator 0 proposes height 4
    assert (r.height, r.round) == (4, 0)
    assert r.handle(BlockSynced(2)) == [] and r.height == 4
