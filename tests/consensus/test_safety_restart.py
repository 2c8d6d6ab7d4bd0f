"""The safety state: persisted before sending, resumed after a restart, never
signing against itself; and the decoders' behaviour on any input."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.actions import Broadcast, BuildBlock, CommitBlock, PersistSafetyState, RequestSync, ScheduleTimeout, ValidateBlock
from consensus.events import BlockBuilt, BlockValidated, MessageReceived, TimeoutFired
from consensus.messages import (
    Commit,
    Message,
    MessageError,
    Prepare,
    PreparedCertificate,
    Proposal,
    RoundChange,
    Signed,
    decode_signed,
    encode_signed,
    seal_bytes,
)
from consensus.replica import Replica
from consensus.safety_state import SafetyState, decode_safety, encode_safety
from tests.consensus.harness import (
    Network,
    block_for,
    broadcasts,
    hash_of,
    make_config,
    make_keys,
    of_type,
    signed_by,
)

KEYS = make_keys(4)  # height 1, round 0: validator 1 proposes
CONFIG = make_config(4)
BLOCK_A = block_for(1, 0)
BLOCK_B = b"twin:1:0"  # what validator 1's twin proposes in the same round
A, B = hash_of(BLOCK_A), hash_of(BLOCK_B)


def proposal(block: bytes) -> Signed:
    return signed_by(KEYS[1], Proposal(1, 0, block, hash_of(block), ()))


def prepare(index: int, block_hash: bytes) -> Signed:
    return signed_by(KEYS[index], Prepare(1, 0, block_hash))


def feed(r: Replica, *signed: Signed) -> list[Any]:
    return [a for s in signed for a in r.handle(MessageReceived(s))]


def persisted(actions: list[Any]) -> SafetyState:
    """The last safety state in `actions`, through its byte encoding as storage keeps it."""
    return decode_safety(encode_safety(of_type(actions, PersistSafetyState)[-1].state))


def replica_that_prepared_a() -> tuple[Replica, SafetyState]:
    r = Replica(CONFIG, KEYS[0], 1)
    actions = r.start() + feed(r, proposal(BLOCK_A))
    actions += r.handle(BlockValidated(1, 0, A, True))
    assert broadcasts(actions) == [Prepare(1, 0, A)]
    return r, persisted(actions)


def restarted(state: SafetyState, index: int = 0) -> tuple[Replica, list[Any]]:
    r = Replica(CONFIG, KEYS[index], state.height, state)
    return r, r.start()


# ---- restart ---------------------------------------------------------------------


def test_a_restarted_replica_sends_again_what_it_signed() -> None:
    _, state = replica_that_prepared_a()
    r, actions = restarted(state)
    assert [a.signed for a in of_type(actions, Broadcast)] == list(state.sent)
    assert ScheduleTimeout(1, 0, CONFIG.round_timeout_ms) in actions
    assert (r.height, r.round) == (1, 0)


def test_a_fresh_replica_would_prepare_the_twins_block() -> None:
    """The control for the next test: without its safety state, replica 0 signs B."""
    r = Replica(CONFIG, KEYS[0], 1)
    r.start()
    feed(r, proposal(BLOCK_B))
    assert broadcasts(r.handle(BlockValidated(1, 0, B, True))) == [Prepare(1, 0, B)]


def test_a_restarted_replica_does_not_prepare_a_conflicting_block() -> None:
    _, state = replica_that_prepared_a()
    r, _ = restarted(state)
    actions = feed(r, proposal(BLOCK_B))
    if of_type(actions, ValidateBlock):
        actions += r.handle(BlockValidated(1, 0, B, True))
    actions += feed(r, prepare(1, B), prepare(2, B), prepare(3, B))
    assert broadcasts(actions) == []


def test_a_restarted_proposer_does_not_propose_again() -> None:
    r = Replica(CONFIG, KEYS[1], 1)
    actions = r.start() + r.handle(BlockBuilt(1, 0, BLOCK_A, A))
    assert broadcasts(actions) == [Proposal(1, 0, BLOCK_A, A, ()), Prepare(1, 0, A)]
    r, actions = restarted(persisted(actions), index=1)
    assert broadcasts(actions) == [Proposal(1, 0, BLOCK_A, A, ()), Prepare(1, 0, A)]
    assert not of_type(actions, BuildBlock)
    assert r.handle(BlockBuilt(1, 0, BLOCK_B, B)) == []
    actions = feed(r, prepare(2, A), prepare(3, A))  # it still finishes the round it was in
    assert broadcasts(actions) == [Commit(1, 0, A, KEYS[1].sign(seal_bytes(A)))]


def test_a_restarted_replica_carries_its_prepared_block_into_the_next_round() -> None:
    r, _ = replica_that_prepared_a()
    actions = feed(r, prepare(1, A), prepare(2, A))
    assert broadcasts(actions, Commit) != []
    r, _ = restarted(persisted(actions))
    [change] = broadcasts(r.handle(TimeoutFired(1, 0)), RoundChange)
    assert change.round == 1 and change.prepared is not None
    assert (change.prepared.round, change.prepared.block, change.prepared.block_hash) == (0, BLOCK_A, A)
    assert len(change.prepared.prepares) >= 3


def test_a_safety_state_for_an_older_height_is_not_resumed() -> None:
    _, state = replica_that_prepared_a()
    r = Replica(CONFIG, KEYS[0], 2, state)
    assert r.start() == []  # height 2, round 0: validator 2 proposes, nothing to re-send
    assert r.round == 0


def test_a_network_restarted_all_at_once_goes_on() -> None:
    net = Network(4, build_heights_max=3)
    net.drop = lambda sender, receiver, signed: isinstance(signed.message, Commit) and signed.message.height == 2
    net.start().run()
    assert all(net.replicas[i].height == 2 and len(net.commits[i]) == 1 for i in range(4))
    net.drop = lambda sender, receiver, signed: False
    for i in range(4):
        resent = net.restart(i)
        assert [a.signed for a in of_type(resent, Broadcast)] == list(net.persisted[i][-1].sent)
    net.run()  # the proposer of height 2 sent its proposal again: everyone can finish
    for i in range(4):
        assert net.committed_blocks(i) == [block_for(h, 0) for h in (1, 2, 3)]
    assert conflicting(m for i in range(4) for m in of_type(net.actions[i], Broadcast)) == []


def test_a_replica_holding_the_twins_block_asks_for_the_decided_one() -> None:
    """A quorum committed A while this replica holds B from the proposer's twin."""
    r = Replica(CONFIG, KEYS[0], 1)
    r.start()
    feed(r, proposal(BLOCK_B))
    r.handle(BlockValidated(1, 0, B, True))
    commits = [signed_by(KEYS[i], Commit(1, 0, A, KEYS[i].sign(seal_bytes(A)))) for i in (1, 2, 3)]
    actions = feed(r, *commits)
    assert not of_type(actions, CommitBlock) and broadcasts(actions, Commit) == []
    assert RequestSync(1) in actions


def conflicting(sent: Any) -> list[tuple[Signed, Signed]]:
    """Pairs of different messages one validator signed for the same kind, height and round."""
    first: dict[tuple[bytes, type, int, int], Signed] = {}
    pairs = []
    for b in sent:
        m = b.signed.message
        key = (b.signed.sender, type(m), m.height, m.round)
        if first.setdefault(key, b.signed) != b.signed:
            pairs.append((first[key], b.signed))
    return pairs


# ---- codecs ----------------------------------------------------------------------

heights = st.integers(0, 2**63 - 1)
hashes = st.binary(min_size=32, max_size=32)
keys = st.binary(min_size=32, max_size=32)
signatures = st.binary(min_size=64, max_size=64)
blocks = st.binary(max_size=48)


def signed_of(messages: st.SearchStrategy[Message]) -> st.SearchStrategy[Signed]:
    return st.builds(Signed, keys, messages, signatures)


prepares = st.builds(Prepare, heights, heights, hashes)
commits = st.builds(Commit, heights, heights, hashes, signatures)
certificates = st.builds(PreparedCertificate, heights, blocks, hashes, st.lists(signed_of(prepares), max_size=3).map(tuple))
round_changes = st.builds(RoundChange, heights, heights, st.none() | certificates)
proposals = st.builds(
    Proposal, heights, heights, blocks, hashes, st.lists(signed_of(round_changes), max_size=3).map(tuple)
)
signed_messages = signed_of(st.one_of(prepares, commits, round_changes, proposals))
safety_states = st.builds(
    SafetyState, heights, heights, st.none() | certificates, st.lists(signed_messages, max_size=3).map(tuple)
)


@given(signed_messages)
def test_messages_round_trip(s: Signed) -> None:
    data = encode_signed(s)
    assert decode_signed(data) == s
    assert encode_signed(decode_signed(data)) == data


@given(safety_states)
def test_safety_states_round_trip(s: SafetyState) -> None:
    assert decode_safety(encode_safety(s)) == s


def test_a_real_safety_state_round_trips() -> None:
    net = Network(4, build_heights_max=2).start().run()
    states = [s for i in range(4) for s in net.persisted[i]]
    assert any(s.prepared is not None for s in states)
    for s in states:
        assert decode_safety(encode_safety(s)) == s


def decodes_or_message_error(decode: Any, data: bytes) -> None:
    try:
        decode(data)
    except MessageError:
        pass


@given(st.binary(max_size=200))
def test_garbage_bytes_give_message_error(data: bytes) -> None:
    decodes_or_message_error(decode_signed, data)
    decodes_or_message_error(decode_safety, data)


wire_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=70) | st.text(max_size=4)
    | st.sampled_from([b"k" * 32, b"s" * 64, 1, 2, 3, 4]),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=30,
)


@given(wire_values)
def test_well_formed_msgpack_of_the_wrong_shape_gives_message_error(obj: Any) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    decodes_or_message_error(decode_signed, data)
    decodes_or_message_error(decode_safety, data)


@given(signed_messages, st.data())
def test_mutated_messages_give_message_error(s: Signed, data: st.DataObject) -> None:
    raw = bytearray(encode_signed(s))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] = data.draw(st.integers(0, 255))
    decodes_or_message_error(decode_signed, bytes(raw))


@given(signed_messages)
def test_truncated_messages_give_message_error(s: Signed) -> None:
    data = encode_signed(s)
    for end in range(len(data)):
        with pytest.raises(MessageError):
            decode_signed(data[:end])


@given(safety_states)
def test_truncated_safety_states_give_message_error(s: SafetyState) -> None:
    data = encode_safety(s)
    for end in range(len(data)):
        with pytest.raises(MessageError):
            decode_safety(data[:end])


def nested_proposals(depth: int) -> bytes:
    """A Prepare inside `depth` Proposals, each in the previous one's justification."""
    fields: bytes = msgpack.packb([b"k" * 32, b"s" * 64], use_bin_type=True)[1:]  # sender, signature
    block_and_hash: bytes = msgpack.packb([b"b", b"h" * 32], use_bin_type=True)[1:]
    opening = b"\x93" + fields + b"\x96\x01\x00\x00" + block_and_hash + b"\x91"
    innermost: bytes = msgpack.packb([b"k" * 32, b"s" * 64, [2, 0, 0, b"h" * 32]], use_bin_type=True)
    return opening * depth + innermost


def test_a_justification_holds_only_round_changes() -> None:
    with pytest.raises(MessageError, match="unexpected message kind"):
        decode_signed(nested_proposals(1))  # a Prepare where a RoundChange belongs
    with pytest.raises(MessageError, match="unexpected message kind"):
        decode_signed(nested_proposals(3))  # proposals inside proposals


def test_a_prepared_certificate_holds_only_prepares() -> None:
    commit = signed_by(KEYS[2], Commit(1, 0, A, KEYS[2].sign(seal_bytes(A))))
    change = signed_by(KEYS[2], RoundChange(1, 1, PreparedCertificate(0, BLOCK_A, A, (commit,))))
    with pytest.raises(MessageError, match="unexpected message kind"):
        decode_signed(encode_signed(change))
    proposal = signed_by(KEYS[2], Proposal(1, 1, BLOCK_A, A, (change,)))
    with pytest.raises(MessageError, match="unexpected message kind"):
        decode_signed(encode_signed(proposal))


def test_a_boolean_is_not_a_message_kind() -> None:
    data = msgpack.packb([b"k" * 32, b"s" * 64, [True, 0, 0, b"b", b"h" * 32, []]], use_bin_type=True)
    with pytest.raises(MessageError):
        decode_signed(data)


@pytest.mark.parametrize("depth", [340, 1000, 5000])
def test_deeply_nested_justifications_give_message_error(depth: int) -> None:
    """Deeper than Python's recursion limit or msgpack's nesting limit: a typed error, not a crash."""
    data = nested_proposals(depth)
    decodes_or_message_error(decode_signed, data)
    decodes_or_message_error(decode_safety, b"\x94\x01\x00\xc0\x91" + data)  # [1, 0, nil, [data]]
