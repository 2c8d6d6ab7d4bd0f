"""The safety kernel alone: every rule it refuses by, each refusal's data, and
the restart path (a state decoded from its bytes refuses what was signed before)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.actions import Broadcast, PersistSafetyState
from consensus.events import BlockBuilt
from consensus.messages import Commit, Prepare, PreparedCertificate, Proposal, RoundChange, Signed, seal_bytes
from consensus.replica import Replica
from consensus.safety_state import SafetyState, decode_safety, encode_safety
from consensus.safety_rules import (
    AlreadySigned,
    BelowSignFloor,
    HeightPassed,
    HiddenCertificate,
    NotPrepared,
    NotProposed,
    RoundPassed,
    SafetyRules,
    ShortCertificate,
    SigningRefused,
    Unsealed,
    phase,
)
from consensus.validator_sets import ValidatorSets
from tests.consensus.harness import CHAIN_ID, OUTSIDER, Ed25519, block_for, hash_of, make_config, make_keys, signed_by

KEYS = make_keys(4)
VALIDATORS = tuple(k.public_key for k in KEYS)
ME = KEYS[0]
A, B = hash_of(b"block a"), hash_of(b"block b")


class CountingCrypto:
    """Ed25519 that counts what it signs, so a refusal can be shown to sign nothing."""

    def __init__(self, key: Ed25519):
        self._key = key
        self.public_key = key.public_key
        self.signed = 0

    def sign(self, data: bytes) -> bytes:
        self.signed += 1
        return self._key.sign(data)

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool:
        return self._key.verify(public_key, data, signature)


def rules(state: SafetyState | None = None, sign_from: int = 0, crypto: CountingCrypto | None = None) -> SafetyRules:
    crypto = crypto or CountingCrypto(ME)
    return SafetyRules(crypto, CHAIN_ID, ValidatorSets(1, VALIDATORS, None), state or SafetyState(1, 0, None, ()), sign_from)


def certificate(height: int, round_: int, block_hash: bytes, keys: list[Ed25519] = KEYS[:3]) -> PreparedCertificate:
    prepares = tuple(signed_by(k, Prepare(height, round_, block_hash)) for k in keys)
    return PreparedCertificate(round_, b"block", block_hash, prepares)


def refusal(kernel: SafetyRules, message: Unsealed) -> SigningRefused:
    before = kernel.state
    with pytest.raises(SigningRefused) as caught:
        kernel.sign(message)
    assert kernel.state == before  # a refusal changes nothing
    return caught.value


def commit_refusal(kernel: SafetyRules, height: int, pc: PreparedCertificate) -> SigningRefused:
    before = kernel.state
    with pytest.raises(SigningRefused) as caught:
        kernel.commit(height, pc)
    assert kernel.state == before
    return caught.value


def test_a_round_signed_through_is_the_state_to_persist() -> None:
    kernel = rules()
    proposal = kernel.sign(Proposal(1, 0, b"block", A, ()))
    prepare = kernel.sign(Prepare(1, 0, A))
    commit = kernel.commit(1, certificate(1, 0, A))
    assert isinstance(commit.message, Commit) and commit.message.seal == ME.sign(seal_bytes(A))
    assert kernel.state == SafetyState(1, 0, certificate(1, 0, A), (proposal, prepare, commit))
    assert decode_safety(encode_safety(kernel.state)) == kernel.state


def test_below_the_sign_floor_nothing_is_signed_until_the_floor_is_lowered() -> None:
    crypto = CountingCrypto(ME)
    kernel = rules(sign_from=3, crypto=crypto)
    assert refusal(kernel, Prepare(1, 0, A)) == BelowSignFloor(1, 0, sign_from=3)
    assert crypto.signed == 0
    kernel.learn_sign_floor(1)
    assert kernel.sign(Prepare(1, 0, A)).message == Prepare(1, 0, A)


def test_no_signature_for_a_height_left_behind() -> None:
    kernel = rules(SafetyState(5, 2, None, ()))
    assert refusal(kernel, RoundChange(4, 7, None)) == HeightPassed(4, 7, signed_height=5)


def test_no_signature_for_a_round_left_behind() -> None:
    kernel = rules()
    kernel.sign(RoundChange(1, 3, None))
    assert refusal(kernel, Prepare(1, 2, A)) == RoundPassed(1, 2, signed_round=3)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (Proposal(1, 0, b"a", A, ()), Proposal(1, 0, b"b", B, ())),
        (Prepare(1, 0, A), Prepare(1, 0, B)),
        (Prepare(1, 0, A), Prepare(1, 0, A)),  # not even the same again: one signature per phase
        (RoundChange(1, 1, None), RoundChange(1, 1, None)),
    ],
)
def test_one_signature_per_height_round_and_phase(first: Unsealed, second: Unsealed) -> None:
    kernel = rules()
    kernel.sign(first)
    assert refusal(kernel, second) == AlreadySigned(second.height, second.round, phase=phase(second))


def test_a_second_commit_in_a_round_is_refused_before_its_seal_is_made() -> None:
    crypto = CountingCrypto(ME)
    kernel = rules(crypto=crypto)
    kernel.sign(Prepare(1, 0, A))
    kernel.commit(1, certificate(1, 0, A))
    signed = crypto.signed
    assert commit_refusal(kernel, 1, certificate(1, 0, A)) == AlreadySigned(1, 0, phase="Commit")
    assert crypto.signed == signed


def test_the_proposer_prepares_only_what_it_proposed() -> None:
    kernel = rules()
    kernel.sign(Proposal(1, 0, b"a", A, ()))
    assert refusal(kernel, Prepare(1, 0, B)) == NotProposed(1, 0, block_hash=B, proposed=A)


def test_no_commit_without_its_own_prepare_for_that_block_in_that_round() -> None:
    kernel = rules()
    assert commit_refusal(kernel, 1, certificate(1, 0, A)) == NotPrepared(1, 0, block_hash=A)
    kernel.sign(Prepare(1, 0, B))
    assert commit_refusal(kernel, 1, certificate(1, 0, A)) == NotPrepared(1, 0, block_hash=A)


@pytest.mark.parametrize(
    ("prepares", "distinct"),
    [
        ([Prepare(1, 0, A)] * 2, 2),  # two validators of three needed
        ([Prepare(1, 0, A)] * 1 + [Prepare(1, 0, B), Prepare(1, 1, A)], 1),  # other block, other round
    ],
)
def test_no_commit_without_a_quorum_of_distinct_validators_prepares(prepares: list[Prepare], distinct: int) -> None:
    kernel = rules()
    kernel.sign(Prepare(1, 0, A))
    pc = PreparedCertificate(0, b"block", A, tuple(signed_by(k, m) for k, m in zip(KEYS, prepares)))
    assert commit_refusal(kernel, 1, pc) == ShortCertificate(1, 0, block_hash=A, prepares=distinct, needed=3)


def test_a_repeated_sender_or_an_outsider_does_not_make_a_quorum() -> None:
    kernel = rules()
    kernel.sign(Prepare(1, 0, A))
    mine = signed_by(KEYS[1], Prepare(1, 0, A))
    pc = PreparedCertificate(0, b"block", A, (mine, mine, signed_by(OUTSIDER, Prepare(1, 0, A))))
    assert commit_refusal(kernel, 1, pc) == ShortCertificate(1, 0, block_hash=A, prepares=1, needed=3)


def test_a_round_change_carries_the_certificate_committed_under() -> None:
    kernel = rules()
    kernel.sign(Prepare(1, 0, A))
    pc = certificate(1, 0, A)
    kernel.commit(1, pc)
    assert refusal(kernel, RoundChange(1, 1, None)) == HiddenCertificate(1, 1, carried=None, prepared=pc)
    other = certificate(1, 0, B)
    assert refusal(kernel, RoundChange(1, 1, other)) == HiddenCertificate(1, 1, carried=other, prepared=pc)
    assert kernel.sign(RoundChange(1, 1, pc)).message == RoundChange(1, 1, pc)
    assert kernel.state.prepared == pc  # kept into the later round
    assert refusal(kernel, RoundChange(2, 0, pc)) == HiddenCertificate(2, 0, carried=pc, prepared=None)


def test_a_refusal_names_its_rule() -> None:
    assert AlreadySigned(1, 0, "Prepare").reason == "refused_already_signed"
    assert BelowSignFloor(1, 0, 3).reason == "refused_below_sign_floor"
    assert "phase='Prepare'" in str(AlreadySigned(1, 0, "Prepare"))


def test_after_a_restart_the_decoded_state_refuses_what_was_signed_before() -> None:
    kernel = rules()
    kernel.sign(Proposal(1, 0, b"a", A, ()))
    kernel.sign(Prepare(1, 0, A))
    kernel.commit(1, certificate(1, 0, A))
    restarted = rules(decode_safety(encode_safety(kernel.state)))
    assert refusal(restarted, Proposal(1, 0, b"b", B, ())) == AlreadySigned(1, 0, phase="Proposal")
    assert refusal(restarted, Prepare(1, 0, B)) == AlreadySigned(1, 0, phase="Prepare")
    assert commit_refusal(restarted, 1, certificate(1, 0, A)) == AlreadySigned(1, 0, phase="Commit")
    assert refusal(restarted, RoundChange(1, 1, None)).reason == "refused_hidden_certificate"


REQUESTS = st.one_of(
    st.builds(lambda r, b: Proposal(1, r, b"x", b, ()), st.integers(0, 2), st.sampled_from([A, B])),
    st.builds(lambda r, b: Prepare(1, r, b), st.integers(0, 2), st.sampled_from([A, B])),
    st.builds(lambda r, b: certificate(1, r, b), st.integers(0, 2), st.sampled_from([A, B])),  # a COMMIT
    st.builds(lambda h, r: RoundChange(h, r, None), st.integers(1, 2), st.integers(0, 2)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(REQUESTS, st.booleans()), max_size=12))
def test_no_two_signatures_for_one_height_round_and_phase_across_restarts(
    steps: list[tuple[Unsealed | PreparedCertificate, bool]],
) -> None:
    kernel = rules()
    given_out: dict[tuple[int, int, str], Signed] = {}
    for request, restart in steps:
        try:
            if isinstance(request, PreparedCertificate):
                signed = kernel.commit(1, request)
            else:
                signed = kernel.sign(request)
        except SigningRefused:
            pass
        else:
            m = signed.message
            assert given_out.setdefault((m.height, m.round, phase(m)), signed) is signed
            assert kernel.state.sent[-1] is signed
        if restart:
            kernel = rules(decode_safety(encode_safety(kernel.state)))


def test_the_replica_signs_nothing_the_kept_later_state_forbids() -> None:
    """A safety state from a later height is kept: the replica follows and counts the refusals."""
    later = SafetyState(2, 0, None, ())
    replica = Replica(make_config(4), KEYS[1], 1, later)  # KEYS[1] proposes height 1, round 0
    replica.start()
    block = block_for(1, 0)
    actions = replica.handle(BlockBuilt(1, 0, block, hash_of(block)))
    assert not [a for a in actions if isinstance(a, (Broadcast, PersistSafetyState))]
    assert replica.dropped["refused_height_passed"] == 1


def test_lowering_the_replicas_floor_lowers_the_kernels() -> None:
    replica = Replica(make_config(4), KEYS[1], 1, sign_from=5)
    replica.start()
    replica.learn_sign_floor(1)
    block = block_for(1, 0)
    actions = replica.handle(BlockBuilt(1, 0, block, hash_of(block)))
    assert [type(a.signed.message) for a in actions if isinstance(a, Broadcast)] == [Proposal, Prepare]


def test_the_kernel_asserts_one_signature_per_phase_even_past_its_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = rules()
    kernel.sign(Prepare(1, 0, A))
    monkeypatch.setattr(SafetyRules, "_check", lambda self, m: None)  # a rule lost in some later change
    with pytest.raises(AssertionError, match="two signatures for one phase"):
        kernel.sign(Prepare(1, 0, B))
