"""Round changes: timeouts, f+1 to join a higher round, 2f+1 to propose in it,
and a prepared block carried into the next round."""

from __future__ import annotations

from consensus.actions import Broadcast, BuildBlock, PersistSafetyState, ScheduleTimeout, ValidateBlock
from consensus.events import BlockBuilt, BlockValidated, MessageReceived, TimeoutFired, TransactionsPending
from consensus.messages import Commit, Prepare, PreparedCertificate, Proposal, RoundChange, Signed, seal_bytes
from consensus.replica import Replica
from tests.consensus.harness import (
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

KEYS = make_keys(4)  # height 1: validator 1 proposes round 0, validator 2 round 1


def fire_timeouts(net: Network, round_: int) -> None:
    for i in net.live:
        net.deliver(i, TimeoutFired(1, round_))


def test_a_crashed_proposer_is_replaced_in_round_1() -> None:
    net = Network(4, crashed={1}).start()
    for i in net.live:
        assert net.deliver(i, TransactionsPending()) == [ScheduleTimeout(1, 0, 2000)]
    net.run()
    assert all(net.commits[i] == [] for i in net.live)
    for i in net.live:
        actions = net.deliver(i, TimeoutFired(1, 0))
        assert broadcasts(actions) == [RoundChange(1, 1, None)]
        assert ScheduleTimeout(1, 1, 4000) in actions
        assert_persisted_before_broadcast(actions)
    net.run()
    [proposal] = broadcasts(net.actions[2], Proposal)
    assert (proposal.round, proposal.block) == (1, block_for(1, 1))
    assert len({s.sender for s in proposal.justification}) >= 3
    assert all(s.message == RoundChange(1, 1, None) for s in proposal.justification)
    for i in net.live:
        assert net.committed_blocks(i) == [block_for(1, 1)]


def test_timeouts_double_per_round_up_to_the_maximum() -> None:
    r = Replica(make_config(4, round_timeout_ms=1000, round_timeout_max_ms=5000), KEYS[0], 1)
    r.start()
    delays = [of_type(r.handle(TransactionsPending()), ScheduleTimeout)[0].delay_ms]
    r.handle(MessageReceived(round_change(2, 9)))  # someone is further on: no round is a solo run
    for round_ in range(5):
        [timer] = of_type(r.handle(TimeoutFired(1, round_)), ScheduleTimeout)
        assert (timer.height, timer.round) == (1, round_ + 1)
        delays.append(timer.delay_ms)
    assert delays == [1000, 2000, 4000, 5000, 5000, 5000]
    assert r.handle(TimeoutFired(1, 2)) == []  # a stale timer does nothing
    assert r.round == 5


def lagging_replica() -> Replica:
    r = Replica(make_config(4), KEYS[0], 1)
    r.start()
    return r


def round_change(index: int, round_: int, prepared: PreparedCertificate | None = None) -> Signed:
    return signed_by(KEYS[index], RoundChange(1, round_, prepared))


def test_one_validator_cannot_push_the_round() -> None:
    r = lagging_replica()
    actions = r.handle(MessageReceived(round_change(2, 5)))
    assert broadcasts(actions) == [] and r.round == 0


def test_f_plus_one_round_changes_pull_a_lagging_replica() -> None:
    r = lagging_replica()
    r.handle(MessageReceived(round_change(2, 5)))
    actions = r.handle(MessageReceived(round_change(3, 5)))
    assert r.round == 5
    assert broadcasts(actions) == [RoundChange(1, 5, None)]
    assert ScheduleTimeout(1, 5, 60000) in actions  # 2000 << 5, capped
    assert_persisted_before_broadcast(actions)


def test_a_lagging_replica_joins_the_lowest_round_f_plus_one_reached() -> None:
    r = lagging_replica()
    r.handle(MessageReceived(round_change(2, 7)))
    r.handle(MessageReceived(round_change(3, 3)))
    assert r.round == 3


def test_a_prepared_block_is_proposed_again() -> None:
    net = Network(4)
    net.drop = lambda sender, receiver, signed: isinstance(signed.message, Commit) and signed.message.round == 0
    net.start().run()
    prepared = hash_of(block_for(1, 0))
    for i in range(4):
        assert net.commits[i] == []
        assert broadcasts(net.actions[i], Commit) == [Commit(1, 0, prepared, net.keys[i].sign(seal_bytes(prepared)))]
    fire_timeouts(net, 0)
    net.run()
    [proposal] = [m for m in broadcasts(net.actions[2], Proposal) if m.round == 1]
    assert proposal.block_hash == prepared
    assert BuildBlock(1, 1) not in net.actions[2]
    for i in range(4):
        [change] = broadcasts(net.actions[i], RoundChange)
        assert change.prepared is not None and change.prepared.block_hash == prepared
        assert net.committed_blocks(i) == [block_for(1, 0)]
        assert net.commits[i][0].block_hash == prepared


# ---- proposals for round 1 must carry 2f+1 round changes ----------------------------

BLOCK_A = block_for(1, 0)
BLOCK_B = block_for(1, 1)


def certificate_for_a() -> PreparedCertificate:
    prepares = tuple(signed_by(KEYS[i], Prepare(1, 0, hash_of(BLOCK_A))) for i in (0, 1, 3))
    return PreparedCertificate(0, BLOCK_A, hash_of(BLOCK_A), prepares)


def proposal_for_round_1(block: bytes, justification: tuple[Signed, ...]) -> Signed:
    return signed_by(KEYS[2], Proposal(1, 1, block, hash_of(block), justification))


def assert_dropped_as_unjustified(proposal: Signed) -> None:
    r = lagging_replica()
    actions = r.handle(MessageReceived(proposal))
    assert actions == [ScheduleTimeout(1, 0, 2000)]  # a validly signed message starts the timer, nothing more
    assert r.dropped["unjustified_proposal"] == 1 and r.round == 0


def test_a_proposal_without_round_changes_is_dropped() -> None:
    assert_dropped_as_unjustified(proposal_for_round_1(BLOCK_B, ()))


def test_a_proposal_with_too_few_round_changes_is_dropped() -> None:
    assert_dropped_as_unjustified(proposal_for_round_1(BLOCK_B, (round_change(1, 1), round_change(3, 1))))


def test_a_proposal_with_repeated_round_changes_is_dropped() -> None:
    again = round_change(3, 1)
    assert_dropped_as_unjustified(proposal_for_round_1(BLOCK_B, (again, again, again)))


def test_a_proposal_with_round_changes_for_another_round_is_dropped() -> None:
    assert_dropped_as_unjustified(proposal_for_round_1(BLOCK_B, tuple(round_change(i, 2) for i in (1, 2, 3))))


def test_a_proposal_that_ignores_a_prepared_block_is_dropped() -> None:
    changes = (round_change(1, 1, certificate_for_a()), round_change(2, 1), round_change(3, 1))
    assert_dropped_as_unjustified(proposal_for_round_1(BLOCK_B, changes))


def test_a_justified_proposal_moves_the_replica_to_its_round() -> None:
    r = lagging_replica()
    changes = (round_change(1, 1, certificate_for_a()), round_change(2, 1), round_change(3, 1))
    actions = r.handle(MessageReceived(proposal_for_round_1(BLOCK_A, changes)))
    assert of_type(actions, ValidateBlock) == [ValidateBlock(1, 1, BLOCK_A, hash_of(BLOCK_A))]
    assert r.round == 1 and not of_type(actions, PersistSafetyState)


def test_a_round_change_with_a_forged_certificate_is_dropped() -> None:
    r = lagging_replica()
    cert = certificate_for_a()
    forged = PreparedCertificate(0, BLOCK_B, hash_of(BLOCK_B), cert.prepares)  # prepares are for A
    r.handle(MessageReceived(round_change(2, 5, forged)))
    r.handle(MessageReceived(round_change(3, 5, forged)))
    assert r.dropped["invalid_round_change"] == 2 and r.round == 0


def test_a_certificate_must_come_from_a_round_before_the_round_change() -> None:
    r = lagging_replica()
    prepares = tuple(signed_by(KEYS[i], Prepare(1, 1, hash_of(BLOCK_A))) for i in (0, 1, 3))
    same_round = PreparedCertificate(1, BLOCK_A, hash_of(BLOCK_A), prepares)  # real prepares, but of round 1
    r.handle(MessageReceived(round_change(2, 1, same_round)))
    assert r.dropped["invalid_round_change"] == 1
    changes = (round_change(1, 1, same_round), round_change(2, 1), round_change(3, 1))
    assert_dropped_as_unjustified(proposal_for_round_1(BLOCK_A, changes))


# ---- a replica that timed out alone waits for the others ---------------------------


def replica_alone_in_round_1() -> tuple[Replica, Signed]:
    r = lagging_replica()
    r.handle(TransactionsPending())
    [change] = [a.signed for a in r.handle(TimeoutFired(1, 0)) if isinstance(a, Broadcast)]
    assert change.message == RoundChange(1, 1, None) and r.round == 1
    return r, change


def test_a_replica_that_timed_out_alone_stays_in_its_round_and_repeats_its_round_change() -> None:
    """With timeouts capped, a replica climbing alone would stay rounds ahead of a quorum that needs it."""
    r, change = replica_alone_in_round_1()
    for _ in range(3):
        actions = r.handle(TimeoutFired(1, 1))
        assert actions == [Broadcast(change), ScheduleTimeout(1, 1, 4000)]  # signed and persisted already
    assert r.round == 1


def test_a_replica_moves_on_once_a_quorum_reached_its_round() -> None:
    r, _ = replica_alone_in_round_1()
    r.handle(MessageReceived(round_change(1, 1)))
    r.handle(TimeoutFired(1, 1))
    assert r.round == 1  # two of three
    r.handle(MessageReceived(round_change(3, 1)))
    assert broadcasts(r.handle(TimeoutFired(1, 1)), RoundChange) == [RoundChange(1, 2, None)]
    assert r.round == 2


def test_a_replica_moves_on_when_another_validator_is_further() -> None:
    r, _ = replica_alone_in_round_1()
    r.handle(MessageReceived(round_change(3, 4)))  # one is not enough to join round 4 ...
    assert r.round == 1
    assert broadcasts(r.handle(TimeoutFired(1, 1)), RoundChange) == [RoundChange(1, 2, None)]  # ... but to climb


def test_rounds_do_not_drift_apart_while_a_quorum_is_split() -> None:
    """Validator 3 is down and 0 is cut off for many timeouts; once it is back, 0, 1 and 2 agree at once."""
    net = Network(4, crashed={3})
    net.drop = lambda sender, receiver, signed: 0 in (sender, receiver)
    net.start()
    for i in net.live:
        net.deliver(i, TransactionsPending())
    net.run()
    for _ in range(6):
        for i in net.live:
            net.deliver(i, TimeoutFired(1, net.replicas[i].round))
        net.run()
    assert [net.replicas[i].round for i in net.live] == [1, 1, 1]
    net.drop = lambda sender, receiver, signed: False
    for i in net.live:
        net.deliver(i, TimeoutFired(1, 1))  # each repeats its round change, now heard by all
    net.run()
    assert all(net.committed_blocks(i) == [block_for(1, 1)] for i in net.live)


def test_a_quorum_reaching_its_round_gives_the_round_a_whole_timeout() -> None:
    """It got to round 1 first; when the others arrive, round 1 must not end on its early timer."""
    r, _ = replica_alone_in_round_1()
    assert of_type(r.handle(MessageReceived(round_change(1, 1))), ScheduleTimeout) == []
    assert of_type(r.handle(MessageReceived(round_change(3, 1))), ScheduleTimeout) == [ScheduleTimeout(1, 1, 4000)]
    assert of_type(r.handle(MessageReceived(round_change(2, 1))), ScheduleTimeout) == []  # once per round


def test_a_proposer_that_got_to_its_round_first_still_proposes() -> None:
    r = Replica(make_config(4), KEYS[2], 1)  # proposes round 1 of height 1
    r.start()
    r.handle(TransactionsPending())
    r.handle(TimeoutFired(1, 0))
    r.handle(MessageReceived(round_change(1, 1)))
    actions = r.handle(MessageReceived(round_change(3, 1)))
    assert BuildBlock(1, 1) in actions and ScheduleTimeout(1, 1, 4000) in actions
    assert broadcasts(r.handle(BlockBuilt(1, 1, BLOCK_B, hash_of(BLOCK_B))), Proposal) != []


def test_a_proposer_carries_the_bytes_it_validated_not_those_of_a_forged_certificate() -> None:
    """Validator 1 sends real prepares for A with other bytes; the proposer prepared A itself."""
    r = Replica(make_config(4), KEYS[2], 1)  # proposes round 1 of height 1
    r.start()
    r.handle(MessageReceived(signed_by(KEYS[1], Proposal(1, 0, BLOCK_A, hash_of(BLOCK_A), ()))))
    r.handle(BlockValidated(1, 0, hash_of(BLOCK_A), True))
    for i in (0, 1):
        r.handle(MessageReceived(signed_by(KEYS[i], Prepare(1, 0, hash_of(BLOCK_A)))))
    assert r.prepared is not None and r.prepared.block == BLOCK_A
    forged = PreparedCertificate(0, b"forged bytes", hash_of(BLOCK_A), certificate_for_a().prepares)
    r.handle(MessageReceived(round_change(1, 1, forged)))  # arrives first ...
    actions = r.handle(MessageReceived(round_change(3, 1)))  # ... and f+1 pull the proposer into round 1
    [proposal] = broadcasts(actions, Proposal)
    assert (proposal.round, proposal.block, proposal.block_hash) == (1, BLOCK_A, hash_of(BLOCK_A))
