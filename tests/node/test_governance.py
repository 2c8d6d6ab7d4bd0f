"""The `gov` family (client protocol, section 2.2) executed block after block over a dict state."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from node.chain.canonical import pack
from node.chain.execution import Execution, execute
from node.chain.governance import (
    OPEN_PROPOSALS_PER_ADMIN, GovernanceCorrupt, Proposal, ReadState, load_proposal, open_proposals, past_members,
    proposal_key, scheduled_proposals, upcoming_members,
)
from node.chain.membership import CHANGE_FIELDS, Member, Membership
from node.chain.tx import Transaction, sign_tx

CHAIN, TIME = "gov-test", 1_700_000_000_000
A0, A1, A2 = (SigningKey(bytes([0x40 + i]) * 32) for i in range(3))
V0, V1 = (SigningKey(bytes([0x50 + i]) * 32) for i in range(2))
CLIENT, STRANGER = SigningKey(b"c" * 32), SigningKey(b"s" * 32)
OBSERVER, NEW, NEWER = bytes([0x60]) * 32, bytes([0x61]) * 32, bytes([0x62]) * 32
_nonce = iter(range(10**9))


def key(k: SigningKey) -> bytes:
    return bytes(k.verify_key)


def membership(threshold: int = 2, validators: int = 2) -> Membership:
    return Membership(
        validators=tuple(Member(f"v{i}", key(k), f"10.0.0.{i}:26601") for i, k in enumerate((V0, V1)[:validators])),
        observers=(Member("obs", OBSERVER, "10.0.0.9:26601"),),
        clients=(Member("client", key(CLIENT)),),
        admins=(Member("a0", key(A0)), Member("a1", key(A1)), Member("a2", key(A2))),
        admin_threshold=threshold,
    )


def propose(signer: SigningKey, kind: str, expires: int | None = None, **fields: Any) -> Transaction:
    args: dict[str, Any] = {"change": {"kind": kind, **fields}}
    if expires is not None:
        args["expires"] = expires
    return sign_tx(signer, CHAIN, "gov", "propose", args, next(_nonce))


def approve(signer: SigningKey, proposal: Transaction) -> Transaction:
    return sign_tx(signer, CHAIN, "gov", "approve", {"proposal": proposal.hash}, next(_nonce))


def gov(signer: SigningKey, op: str, args: dict[str, Any]) -> Transaction:
    return sign_tx(signer, CHAIN, "gov", op, args, next(_nonce))


def add_client(signer: SigningKey, pubkey: bytes = NEW, name: str = "new", expires: int | None = None) -> Transaction:
    return propose(signer, "add_client", expires, name=name, pubkey=pubkey)


class Chain:
    """Blocks executed one after another over a dict state, as a ledger writes them."""

    def __init__(self, genesis: Membership | None = None) -> None:
        self.genesis = genesis or membership()
        self.state: dict[bytes, bytes] = {}
        self.height = 0
        self.last = Execution()

    def block(self, *txs: Transaction) -> list[int]:
        """Runs the next block; the receipt codes."""
        self.height += 1
        self.last = execute(list(txs), self.height, TIME + self.height, self.state.get, self.genesis)
        for k, v in self.last.writes.items():
            if v is None:
                self.state.pop(k, None)
            else:
                self.state[k] = v
        return [r.code for r in self.last.receipts]

    def logs(self) -> list[str]:
        return [r.log for r in self.last.receipts]

    def members(self, height: int) -> Membership:
        state = ReadState(self.state.get)
        if height <= self.height:
            return past_members(state, self.genesis, height)
        return upcoming_members(state, self.genesis, height)

    def proposal(self, tx: Transaction) -> Proposal:
        found = load_proposal(ReadState(self.state.get), tx.hash)
        assert found is not None
        return found


# --- who may send, and what --------------------------------------------------------------------------------


@pytest.mark.parametrize("sender", [CLIENT, V0, STRANGER], ids=["client", "validator", "stranger"])
def test_only_an_admin_may_propose_or_approve(sender: SigningKey) -> None:
    chain = Chain()
    p = add_client(A0)
    assert chain.block(p) == [0]
    assert chain.block(add_client(sender, NEWER), approve(sender, p)) == [5, 5]
    assert chain.proposal(p).approvals == (key(A0),)


@pytest.mark.parametrize("args", [
    {}, {"change": {"kind": "add_client", "name": "n", "pubkey": NEW}, "extra": 1},
    {"change": "add_client"}, {"change": {"kind": "add_client", "pubkey": NEW}},
    {"change": {"kind": "set_admin_threshold", "threshold": True}},
    {"change": {"kind": "add_client", "name": "n", "pubkey": NEW}, "expires": 0},
    {"change": {"kind": "add_client", "name": "n", "pubkey": NEW}, "expires": True},
    {"change": {"kind": "add_client", "name": "n", "pubkey": NEW}, "expires": "9"},
], ids=["empty", "extra-arg", "change-str", "missing-field", "bool-threshold", "expires-past", "expires-bool",
        "expires-str"])
def test_propose_with_bad_args_is_code_1(args: dict[str, Any]) -> None:
    chain = Chain()
    chain.block()
    assert chain.block(gov(A0, "propose", args)) == [1]  # height 2: expires 0 is in the past


@pytest.mark.parametrize("args", [{}, {"proposal": "ab" * 32}, {"proposal": b"x" * 31}, {"proposal": b"x" * 32, "y": 1}])
def test_approve_with_bad_args_is_code_1(args: dict[str, Any]) -> None:
    assert Chain().block(gov(A0, "approve", args)) == [1]


def test_an_unknown_gov_op_is_code_1() -> None:
    assert Chain().block(gov(A0, "withdraw", {"proposal": b"x" * 32})) == [1]


@pytest.mark.parametrize(("kind", "fields"), [
    ("add_client", {"name": "c", "pubkey": key(A1)}),
    ("add_admin", {"name": "x", "pubkey": key(CLIENT)}),
    ("add_observer", {"name": "x", "pubkey": key(V0), "address": "h:1"}),
    ("add_validator", {"name": "x", "pubkey": key(A0), "address": "h:1"}),
    ("remove_validator", {"pubkey": OBSERVER}),
    ("remove_client", {"pubkey": NEW}),
    ("replace_key", {"old": key(V0), "new": key(V1)}),
    ("set_address", {"pubkey": key(CLIENT), "address": "h:1"}),
    ("set_admin_threshold", {"threshold": 4}),
    ("set_admin_threshold", {"threshold": 0}),
])
def test_a_change_that_is_not_allowed_is_refused_when_proposed(kind: str, fields: dict[str, Any]) -> None:
    chain = Chain()
    p = propose(A0, kind, **fields)
    assert chain.block(p) == [7]
    assert chain.block(approve(A1, p)) == [6]  # nothing was opened


def test_removing_the_last_validator_or_admin_is_refused_when_proposed() -> None:
    single = Membership((Member("v0", key(V0), "h:1"),), (), (), (Member("a0", key(A0)),), 1)
    chain = Chain(single)
    assert chain.block(propose(A0, "remove_validator", pubkey=key(V0)), propose(A0, "remove_admin", pubkey=key(A0))) \
        == [7, 7]
    assert "no validator" in chain.logs()[0] and "no admin" in chain.logs()[1]


# --- passing -----------------------------------------------------------------------------------------------


def test_with_threshold_1_the_proposers_approval_passes_it() -> None:
    chain = Chain(membership(threshold=1))
    p = add_client(A0)
    assert chain.block(p) == [0] and chain.logs() == ["passed; in force from height 3"]
    assert chain.proposal(p).activation == 3 and chain.proposal(p).status(1) == "passed"
    assert chain.block(approve(A1, p)) == [6]


def test_two_of_three_the_proposer_counts_and_the_second_approval_passes() -> None:
    chain = Chain()
    p = add_client(A0)
    assert chain.block(p) == [0] and chain.logs() == [""]
    opened = chain.proposal(p)
    assert (opened.proposer, opened.approvals, opened.height, opened.activation) == (key(A0), (key(A0),), 1, None)
    assert opened.status(1) == "open" and open_proposals(ReadState(chain.state.get)) == [opened]
    assert chain.block(approve(A1, p)) == [0] and chain.logs() == ["passed; in force from height 4"]
    passed = chain.proposal(p)
    assert passed.approvals == (key(A0), key(A1)) and passed.activation == 4
    assert [passed.status(h) for h in (2, 3, 4, 9)] == ["passed", "passed", "active", "active"]
    assert scheduled_proposals(ReadState(chain.state.get)) == [passed]
    assert open_proposals(ReadState(chain.state.get)) == []
    assert chain.block(approve(A2, p)) == [6]
    assert passed.to_json(3) == {
        "proposal": p.hash.hex(), "proposer": key(A0).hex(),
        "change": {"kind": "add_client", "name": "new", "pubkey": NEW.hex()},
        "approvals": [key(A0).hex(), key(A1).hex()], "status": "passed", "height": 1, "activation": 4,
    }


def test_an_admin_approves_once() -> None:
    chain = Chain(membership(threshold=3))
    p = add_client(A0)
    chain.block(p)
    assert chain.block(approve(A0, p)) == [8]
    assert chain.block(approve(A1, p), approve(A1, p)) == [0, 8]
    assert chain.proposal(p).approvals == (key(A0), key(A1))


def test_an_unknown_proposal_is_code_6() -> None:
    chain = Chain()
    assert chain.block(approve(A0, add_client(A1))) == [6]
    assert "unknown" in chain.logs()[0]


def test_activation_is_two_blocks_after_the_passing_block() -> None:
    chain = Chain()
    p = add_client(A0)
    chain.block(p)
    chain.block(approve(A1, p))  # passes in block 2
    before = membership()
    for height in (1, 2, 3):
        assert chain.members(height) == before
    assert chain.members(4).role_of(NEW) == "clients"
    chain.block()
    assert chain.members(3) == before and chain.members(4).role_of(NEW) == "clients"
    assert not chain.last.writes  # block 3: nothing due yet
    chain.block()
    assert chain.members(4).role_of(NEW) == "clients" and chain.members(3) == before
    assert scheduled_proposals(ReadState(chain.state.get)) == []


def test_a_threshold_change_counts_from_its_activation() -> None:
    chain = Chain()
    t = propose(A0, "set_admin_threshold", threshold=3)
    chain.block(t, approve(A1, t))  # passes at 1, in force from 3
    p, q = add_client(A0), add_client(A1, NEWER, "newer")
    assert chain.block(p, approve(A1, p), q) == [0, 0, 0]  # block 2: still 2 of 3
    assert chain.proposal(p).activation == 4
    chain.block(approve(A0, q))  # block 3: 3 of 3 now
    assert chain.proposal(q).status(3) == "open"
    chain.block(approve(A2, q))
    assert chain.proposal(q).activation == 6


def test_a_lower_threshold_passes_a_proposal_at_its_next_approval() -> None:
    chain = Chain(membership(threshold=3))
    p = add_client(A0)
    t = propose(A0, "set_admin_threshold", threshold=1)
    chain.block(p, t, approve(A1, t), approve(A2, t))  # t passes at 1, in force from 3
    assert chain.block(approve(A1, p)) == [0] and chain.proposal(p).status(2) == "open"  # 2 of 3
    assert chain.block(approve(A2, p)) == [0] and chain.proposal(p).activation == 5  # 3 of 1


# --- several changes ---------------------------------------------------------------------------------------


def test_changes_passing_in_one_block_take_effect_in_order_each_fitted_to_the_one_before() -> None:
    chain = Chain(membership(threshold=1))
    add = add_client(A0)
    replace = propose(A1, "replace_key", old=NEW, new=NEWER)  # fits only once `add` passed
    assert chain.block(add, replace) == [0, 0]
    assert chain.members(2).role_of(NEW) is None
    chain.block()
    after = chain.members(3)
    assert after.clients == (Member("client", key(CLIENT)), Member("new", NEWER))


def test_changes_passing_in_consecutive_blocks_take_effect_in_consecutive_blocks() -> None:
    chain = Chain(membership(threshold=1))
    chain.block(add_client(A0))
    chain.block(propose(A0, "remove_client", pubkey=NEW))
    assert chain.members(3).role_of(NEW) == "clients" and chain.members(4).role_of(NEW) is None
    chain.block()
    assert chain.members(3).role_of(NEW) == "clients" and chain.members(4).role_of(NEW) is None


@pytest.mark.parametrize("same_block", [True, False])
def test_the_second_of_two_removals_of_the_last_validators_is_refused_when_it_would_pass(same_block: bool) -> None:
    chain = Chain()
    r0, r1 = propose(A0, "remove_validator", pubkey=key(V0)), propose(A0, "remove_validator", pubkey=key(V1))
    assert chain.block(r0, r1) == [0, 0]  # each fits the membership alone
    if same_block:
        assert chain.block(approve(A1, r0), approve(A1, r1)) == [0, 7]
    else:
        assert chain.block(approve(A1, r0)) == [0]
        assert chain.block(approve(A1, r1)) == [7]
    assert "no longer fits" in chain.logs()[-1] and "no validator" in chain.logs()[-1]
    assert chain.proposal(r1).status(chain.height) == "open" and chain.proposal(r1).approvals == (key(A0),)
    assert chain.block(propose(A1, "remove_validator", pubkey=key(V1))) == [7]  # the projected membership
    chain.block(), chain.block()
    assert chain.members(chain.height).validator_keys == (key(V1),)


def test_an_observer_is_promoted_to_validator() -> None:
    chain = Chain(membership(threshold=1))
    assert chain.block(propose(A0, "add_validator", name="org9", pubkey=OBSERVER, address="10.1.1.1:1")) == [0]
    chain.block(), chain.block()
    promoted = chain.members(3)
    assert promoted.observers == () and promoted.validators[-1] == Member("org9", OBSERVER, "10.1.1.1:1")
    assert promoted.validators_hash() != membership().validators_hash()


def test_a_removed_admin_acts_until_the_activation_height_and_its_approvals_stop_counting() -> None:
    chain = Chain()
    p = add_client(A2)  # approved by a2, who is removed next
    r = propose(A0, "remove_admin", pubkey=key(A2))
    chain.block(p, r, approve(A1, r))  # r passes at 1, in force from 3
    assert chain.block(add_client(A2, NEWER, "newer")) == [0]  # block 2: still an admin
    assert chain.block(approve(A0, p)) == [0]  # block 3: a2's approval no longer counts: 1 of 2
    assert chain.proposal(p).status(3) == "open"
    assert chain.block(add_client(A2, bytes(32), "x"), approve(A1, p)) == [5, 0]
    assert chain.proposal(p).activation == 6


# --- expiry and the open cap -------------------------------------------------------------------------------


def test_a_proposal_may_be_approved_at_its_expiry_height_and_not_after() -> None:
    chain = Chain(membership(threshold=3))
    p = add_client(A0, expires=3)
    chain.block(p)
    chain.block()
    assert chain.block(approve(A1, p)) == [0]  # at 3
    assert chain.block(approve(A2, p)) == [6] and "expired" in chain.logs()[0]
    assert chain.proposal(p).status(4) == "expired" and chain.proposal(p).status(3) == "open"


def test_a_proposal_may_expire_in_its_own_block() -> None:
    chain = Chain()
    p = add_client(A0, expires=1)
    assert chain.block(p, approve(A1, p)) == [0, 0]
    assert chain.proposal(p).activation == 3


def test_an_admin_holds_a_bounded_number_of_open_proposals() -> None:
    chain = Chain()
    mine = [add_client(A0, bytes([i]) * 32, f"c{i}", expires=2) for i in range(OPEN_PROPOSALS_PER_ADMIN)]
    assert chain.block(*mine) == [0] * OPEN_PROPOSALS_PER_ADMIN
    assert chain.block(add_client(A0, NEWER, "one-more"), add_client(A1, NEWER, "other-admin")) == [7, 0]
    assert "open proposals already" in chain.logs()[0]
    assert chain.block(add_client(A0, NEW, "after-expiry")) == [0]  # height 3: the 16 expired
    assert len(open_proposals(ReadState(chain.state.get))) == 2


# --- what execution guarantees ----------------------------------------------------------------------------


def test_a_failed_gov_tx_writes_nothing() -> None:
    chain = Chain(membership(threshold=3))
    p = add_client(A0, expires=5)
    chain.block(p)
    failing = [
        gov(A0, "propose", {}),  # 1
        add_client(CLIENT),  # 5
        approve(A0, add_client(A1)),  # 6
        propose(A0, "remove_client", pubkey=NEW),  # 7
        approve(A0, p),  # 8
    ]
    assert chain.block(*failing) == [1, 5, 6, 7, 8]
    assert chain.last.writes == {}


def test_execution_is_deterministic() -> None:
    p, q = add_client(A0), propose(A1, "add_observer", name="o2", pubkey=NEWER, address="h:2")
    blocks = [[p, q], [approve(A1, p), approve(A0, q)], [propose(A2, "set_admin_threshold", threshold=3)], [], []]
    runs = []
    for _ in range(2):
        chain, writes = Chain(), []
        for txs in blocks:
            chain.block(*txs)
            writes.append(chain.last.writes)
        runs.append((writes, chain.state, chain.members(chain.height)))
    assert runs[0] == runs[1]
    assert runs[0][2].role_of(NEWER) == "observers"


def test_a_damaged_proposal_in_the_state_is_governance_corruption() -> None:
    chain = Chain()
    p = add_client(A0)
    chain.block(p)
    chain.state[proposal_key(p.hash)] = pack([b"x", {"kind": "nope"}, [], 1, None, None])
    with pytest.raises(GovernanceCorrupt, match="in the state"):
        open_proposals(ReadState(chain.state.get))
    with pytest.raises(TypeError):
        ReadState(chain.state.get).put(b"k", 1)


# --- a property: no sequence of gov transactions breaks the membership ------------------------------------

POOL = [SigningKey(bytes([0x70 + i]) * 32) for i in range(6)]
KINDS = ["add_validator", "add_observer", "add_client", "add_admin", "remove_validator", "remove_observer",
         "remove_client", "remove_admin", "replace_key", "set_address", "set_admin_threshold"]


@st.composite
def gov_blocks(draw: st.DrawFn) -> list[list[tuple[str, int, Any]]]:
    """Blocks of actions: ("propose", signer, change) or ("approve", signer, which earlier proposal)."""
    pick = st.integers(0, len(POOL) - 1)

    def action() -> tuple[str, int, Any]:
        if draw(st.booleans()):
            return "approve", draw(pick), draw(st.integers(0, 100))
        kind = draw(st.sampled_from(KINDS))
        fields: dict[str, Any] = {"name": draw(st.sampled_from("abc")), "pubkey": key(POOL[draw(pick)]),
                                  "address": "h:1", "old": key(POOL[draw(pick)]), "new": key(POOL[draw(pick)]),
                                  "threshold": draw(st.integers(0, 4))}
        return "propose", draw(pick), {"kind": kind, **{f: fields[f] for f in CHANGE_FIELDS[kind] if f != "kind"}}

    return [[action() for _ in range(draw(st.integers(0, 4)))] for _ in range(draw(st.integers(1, 10)))]


def assert_sound(m: Membership) -> None:
    keys = [x.pubkey for x in m.validators + m.observers + m.clients + m.admins]
    assert len(keys) == len(set(keys)) and m.validators and m.admins
    assert 1 <= m.admin_threshold <= len(m.admins)


@settings(max_examples=150, deadline=None)
@given(gov_blocks(), st.integers(1, 2))
def test_no_sequence_of_gov_txs_leaves_a_broken_membership(blocks: list[list[tuple[str, int, Any]]],
                                                         threshold: int) -> None:
    genesis = Membership((Member("v", key(POOL[0]), "h:1"),), (), (),
                         (Member("a", key(POOL[1])), Member("b", key(POOL[2]))), threshold)
    chain, proposals = Chain(genesis), []
    for actions in blocks + [[], []]:  # two empty blocks: what passed last takes effect
        txs = []
        for op, signer, what in actions:
            if op == "propose":
                txs.append(propose(POOL[signer], what["kind"], **{k: v for k, v in what.items() if k != "kind"}))
                proposals.append(txs[-1])
            elif proposals:
                txs.append(approve(POOL[signer], proposals[what % len(proposals)]))
        chain.block(*txs)
        for height in (chain.height, chain.height + 1, chain.height + 2):
            assert_sound(chain.members(height))
