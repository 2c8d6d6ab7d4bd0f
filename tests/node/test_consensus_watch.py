"""The consensus watch (last message of each kind per validator) and the waiting_for sentences."""

from __future__ import annotations

import pytest

from consensus.messages import Commit, Prepare, Proposal, RoundChange
from consensus.round_state import RoundTally
from node.cli.consensus_cmd import render
from node.client import BadAnswer
from node.pipeline.consensus_watch import ConsensusWatch, Seen, waiting_for

KEYS = tuple(bytes([i]) * 32 for i in range(4))
NAMES = {k: f"node{i}" for i, k in enumerate(KEYS)}
H = b"\x07" * 32


def tally(round_: int = 0, proposal: bool = True, prepares: tuple[int, ...] = (), commits: tuple[int, ...] = (),
          changes: tuple[int, ...] = (), active: bool = True) -> RoundTally:
    return RoundTally(812, round_, active, proposal, frozenset(KEYS[i] for i in prepares),
                      frozenset(KEYS[i] for i in commits), frozenset(KEYS[i] for i in changes))


def test_the_last_message_of_each_kind_is_kept_with_the_time_it_came() -> None:
    now = iter(range(1000, 2000, 10))
    watch = ConsensusWatch(lambda: next(now))
    watch.record(KEYS[1], Proposal(5, 0, b"block", H, ()), KEYS)
    watch.record(KEYS[1], Prepare(5, 0, H), KEYS)
    watch.record(KEYS[1], Prepare(6, 1, H), KEYS)
    watch.record(KEYS[1], RoundChange(6, 2, None), KEYS)
    assert watch.last(KEYS[1], "proposal") == Seen(5, 0, 1000)
    assert watch.last(KEYS[1], "prepare") == Seen(6, 1, 1020)
    assert watch.last(KEYS[1], "commit") is None
    assert watch.highest(KEYS[1]) == (6, 2)  # a round change counts for the highest seen
    entry = watch.validator(KEYS[1], "node1", True)
    assert entry == {"pubkey": KEYS[1].hex(), "name": "node1", "connected": True, "height": 6, "view": 2,
                     "last_proposal": {"height": 5, "view": 0, "at": 1000},
                     "last_prepare": {"height": 6, "view": 1, "at": 1020}, "last_commit": None}


def test_only_validators_are_recorded_and_those_leaving_the_set_are_forgotten() -> None:
    watch = ConsensusWatch(lambda: 1)
    stranger = b"\x09" * 32
    watch.record(stranger, Commit(5, 0, H, b"s" * 64), KEYS)
    assert watch.last(stranger, "commit") is None and watch.highest(stranger) is None
    watch.record(KEYS[3], Commit(5, 0, H, b"s" * 64), KEYS)
    watch.keep_only(KEYS[:3])
    assert watch.last(KEYS[3], "commit") is None and watch.highest(KEYS[3]) is None
    entry = watch.validator(KEYS[3], "node3", False)
    assert (entry["height"], entry["view"], entry["last_commit"]) == (None, None, None)


def test_waiting_for_commit_votes_names_who_is_in_and_who_is_missing() -> None:
    text = waiting_for(tally(3, prepares=(0, 1, 2), commits=(0, 2)), 812, KEYS, KEYS[3], NAMES)
    assert text == "waiting for 1 more commit vote for height 812, view 3: have node0 node2, missing node1 node3"


def test_waiting_for_prepare_votes_counts_what_lacks_for_the_quorum() -> None:
    text = waiting_for(tally(0, prepares=(0,)), 812, KEYS, KEYS[0], NAMES)
    assert text == "waiting for 2 more prepare votes for height 812, view 0: have node0, missing node1 node2 node3"


def test_waiting_for_the_proposal_names_the_leader() -> None:
    text = waiting_for(tally(3, proposal=False, changes=(0, 1, 2)), 812, KEYS, KEYS[1], NAMES)
    assert text == "waiting for the proposal of height 812, view 3 from node1"


def test_waiting_for_round_changes_below_a_quorum() -> None:
    text = waiting_for(tally(4, proposal=False, changes=(0,)), 812, KEYS, KEYS[0], NAMES)
    assert text == "waiting for round changes for view 4: have node0, missing node1 node2 node3"


def test_an_idle_round_waits_for_transactions_and_a_parked_one_for_its_set() -> None:
    assert waiting_for(tally(0, proposal=False, active=False), 812, KEYS, KEYS[0], NAMES) == (
        "waiting for transactions to propose at height 812")
    assert waiting_for(None, 812, (), None, NAMES).startswith("waiting for the validator set of height 812")


def test_a_round_with_both_quorums_is_committing() -> None:
    text = waiting_for(tally(0, prepares=(0, 1, 2), commits=(0, 1, 3)), 812, KEYS, KEYS[0], NAMES)
    assert text == "committing the block of height 812, view 0"


def test_the_cli_shows_the_round_its_lack_and_a_row_per_validator() -> None:
    watch = ConsensusWatch(lambda: 10_000)
    watch.record(KEYS[0], Commit(5, 0, H, b"s" * 64), KEYS)
    state = {"height": 6, "view": 1, "leader": KEYS[1].hex(), "waiting_for": "waiting for round changes",
             "validators": [watch.validator(KEYS[0], "node0", True), watch.validator(KEYS[1], "node1", False)]}
    lines = render(state, now_ms=12_500).splitlines()
    assert lines[:2] == ["height 6, view 1, leader node1", "waiting for round changes"]
    assert lines[4].split() == ["node0", "yes", "5/0", "-", "-", "5/0", "2.5s", "ago"]
    assert lines[5].split() == ["node1", "NO", "-", "-", "-", "-"]


def test_the_cli_refuses_an_answer_that_is_not_the_protocol_s() -> None:
    with pytest.raises(BadAnswer):
        render({"height": 6}, now_ms=0)
    validator = {"pubkey": "aa" * 32, "name": 5, "connected": True, "height": 1, "view": 0,
                 "last_proposal": None, "last_prepare": None, "last_commit": None}
    for name in (5, ["node0"]):  # a name that is not a string
        with pytest.raises(BadAnswer):
            render({"height": 1, "view": 0, "leader": None, "waiting_for": "",
                    "validators": [{**validator, "name": name}]}, now_ms=0)
