"""The SDK's governance operations in the sans-I/O core: get_members, get_proposal, propose, approve."""

from __future__ import annotations

from typing import Any

import pytest

from node.chain.tx import decode_tx
from node.client import BadAnswer, InvalidInput, NotFound, generate_key
from node.client.core import Core, run
from tests.client.test_core import COMMITTED, answering, error

MEMBERS = {
    "height": 4,
    "validators": [{"name": "node0", "pubkey": "aa" * 32, "address": "127.0.0.1:26601"}],
    "observers": [],
    "clients": [{"name": "client", "pubkey": "bb" * 32}],
    "admins": [{"name": "admin0", "pubkey": "cc" * 32}, {"name": "admin1", "pubkey": "dd" * 32}],
    "admin_threshold": 2,
    "pending": [{"proposal": "ee" * 32, "change": {"kind": "remove_client", "pubkey": "bb" * 32},
                 "approvals": ["cc" * 32], "activation": None}],
}
PROPOSAL = {
    "proposal": "ee" * 32, "proposer": "cc" * 32, "change": {"kind": "remove_client", "pubkey": "bb" * 32},
    "approvals": ["cc" * 32, "dd" * 32], "status": "passed", "height": 3, "activation": 6,
}


def signing_core() -> Core:
    core = Core(generate_key())
    core.chain_id = "test-chain"
    return core


def test_get_members_decodes_and_passes_the_height_only_when_given() -> None:
    members, posted = answering(Core().get_members(), MEMBERS)
    assert posted[0]["method"] == "get_members" and posted[0]["params"] == {}
    assert members.height == 4 and members.validators[0].address == "127.0.0.1:26601"
    assert [a.name for a in members.admins] == ["admin0", "admin1"] and members.clients[0].address == ""
    assert members.admin_threshold == 2 and members.pending[0].activation is None
    assert members.pending[0].change == {"kind": "remove_client", "pubkey": "bb" * 32}
    assert answering(Core().get_members(0), MEMBERS)[1][0]["params"] == {"height": 0}


def test_get_proposal_decodes_its_status() -> None:
    proposal, posted = answering(Core().get_proposal(b"\xee" * 32), PROPOSAL)
    assert posted[0]["params"] == {"proposal": "ee" * 32}
    assert (proposal.status, proposal.activation, proposal.approvals) == ("passed", 6, ("cc" * 32, "dd" * 32))


def test_an_unknown_proposal_is_not_found() -> None:
    with pytest.raises(NotFound):
        answering(Core().get_proposal("ee" * 32), error(-32005))


@pytest.mark.parametrize("answer", [
    {**PROPOSAL, "status": "rejected"}, {**PROPOSAL, "activation": "6"}, {**PROPOSAL, "change": "add"},
])
def test_a_proposal_of_the_wrong_shape_is_a_bad_answer(answer: Any) -> None:
    with pytest.raises(BadAnswer):
        answering(Core().get_proposal("ee" * 32), answer)


@pytest.mark.parametrize("answer", [
    {**MEMBERS, "pending": None}, {**MEMBERS, "admin_threshold": True},
    {**MEMBERS, "validators": [{"name": "node0", "pubkey": "aa" * 32}]},
])
def test_members_of_the_wrong_shape_are_a_bad_answer(answer: Any) -> None:
    with pytest.raises(BadAnswer):
        answering(Core().get_members(), answer)


def test_propose_sends_the_change_with_its_keys_as_bytes() -> None:
    change = {"kind": "add_client", "name": "newcomer", "pubkey": "AB" * 32}
    info, posted = answering(signing_core().propose(change, expires=9), [COMMITTED])
    tx = decode_tx(bytes.fromhex(posted[0][0]["params"]["tx"]))
    assert (tx.family, tx.op) == ("gov", "propose") and posted[0][0]["params"]["wait"] is True
    assert tx.args == {"change": {"kind": "add_client", "name": "newcomer", "pubkey": b"\xab" * 32}, "expires": 9}
    assert info.ok


def test_approve_sends_the_proposal_as_bytes() -> None:
    core = signing_core()
    posted_payloads: list[Any] = []

    def post(payload: Any) -> Any:
        posted_payloads.append(payload)
        tx = decode_tx(bytes.fromhex(payload[0]["params"]["tx"]))
        return [{"jsonrpc": "2.0", "result": {"tx_hash": tx.hash.hex()}, "id": payload[0]["id"]}]

    info = run(core.approve("ee" * 32, wait=False), post)
    tx = decode_tx(bytes.fromhex(posted_payloads[0][0]["params"]["tx"]))
    assert (tx.family, tx.op, tx.args) == ("gov", "approve", {"proposal": b"\xee" * 32})
    assert info.status == "pending" and info.tx_hash == tx.hash.hex()


@pytest.mark.parametrize("op", [
    lambda c: c.propose({"kind": "add_client", "pubkey": "ab" * 32}),  # no name
    lambda c: c.propose({"kind": "add_client", "name": "n", "pubkey": "ab" * 32, "address": "h:1"}),  # extra
    lambda c: c.propose({"kind": "promote", "pubkey": "ab" * 32}),
    lambda c: c.propose({"kind": "remove_client", "pubkey": "ab" * 31}),
    lambda c: c.propose({"kind": "set_admin_threshold", "threshold": "2"}),
    lambda c: c.propose({"kind": "remove_client", "pubkey": "ab" * 32}, expires=-1),
    lambda c: c.propose("add_client"),  # type: ignore[arg-type]
    lambda c: c.approve("ee" * 31), lambda c: c.get_proposal("xyz"), lambda c: c.get_members(-1),
    lambda c: c.get_members(True),
])
def test_gov_inputs_refused_before_anything_is_sent(op: Any) -> None:
    with pytest.raises(InvalidInput):
        run(op(signing_core()), lambda payload: pytest.fail("nothing may be sent"))
