"""The membership data model: parsing changes, applying them, and the rules every membership keeps."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.chain.membership import (
    CHANGE_FIELDS, Change, ChangeMalformed, ChangeRefused, Member, Membership, apply_change, default_threshold,
    membership_from_wire, parse_change, validators_hash,
)


def key(n: int) -> bytes:
    return bytes([n]) * 32


V1, V2, O1, C1, A1, A2, A3, NEW = (key(n) for n in (1, 2, 3, 4, 5, 6, 7, 9))
BASE = Membership(
    validators=(Member("v1", V1, "10.0.0.1:26601"), Member("v2", V2, "10.0.0.2:26601")),
    observers=(Member("o1", O1, "10.0.0.3:26601"),),
    clients=(Member("c1", C1),),
    admins=(Member("a1", A1), Member("a2", A2), Member("a3", A3)),
    admin_threshold=2,
)


def change(kind: str, **fields: Any) -> Change:
    return parse_change({"kind": kind, **fields})


def refused(c: Change, match: str, m: Membership = BASE) -> None:
    with pytest.raises(ChangeRefused, match=match):
        apply_change(m, c)


# --- parse_change ------------------------------------------------------------------------------------------


VALID_CHANGES: list[dict[str, Any]] = [
    {"kind": "add_validator", "name": "n", "pubkey": NEW, "address": "h:1"},
    {"kind": "add_observer", "name": "n", "pubkey": NEW, "address": "[::1]:65535"},
    {"kind": "add_client", "name": "n", "pubkey": NEW},
    {"kind": "add_admin", "name": "n", "pubkey": NEW},
    {"kind": "remove_validator", "pubkey": V1},
    {"kind": "remove_observer", "pubkey": O1},
    {"kind": "remove_client", "pubkey": C1},
    {"kind": "remove_admin", "pubkey": A1},
    {"kind": "replace_key", "old": V1, "new": NEW},
    {"kind": "set_address", "pubkey": V1, "address": "example.org:26601"},
    {"kind": "set_admin_threshold", "threshold": 3},
]


def test_every_kind_of_the_protocol_is_parsed() -> None:
    assert sorted(c["kind"] for c in VALID_CHANGES) == sorted(CHANGE_FIELDS)


@pytest.mark.parametrize("obj", VALID_CHANGES, ids=[c["kind"] for c in VALID_CHANGES])
def test_a_change_round_trips_through_its_wire_form(obj: dict[str, Any]) -> None:
    parsed = parse_change(obj)
    assert parsed.wire() == obj
    assert parse_change(parsed.wire()) == parsed
    assert parsed.to_json() == {k: v.hex() if isinstance(v, bytes) else v for k, v in obj.items()}


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        pytest.param("add_client", "needs a kind", id="not-a-map"),
        pytest.param({"name": "n", "pubkey": NEW}, "needs a kind", id="no-kind"),
        pytest.param({"kind": "add_member", "pubkey": NEW}, "needs a kind", id="unknown-kind"),
        pytest.param({"kind": 7}, "needs a kind", id="int-kind"),
        pytest.param({"kind": "add_client", "pubkey": NEW}, "takes exactly", id="missing-field"),
        pytest.param({"kind": "add_client", "name": "n", "pubkey": NEW, "address": "h:1"}, "takes exactly",
                     id="extra-field"),
        pytest.param({"kind": "remove_client", "pubkey": NEW[:31]}, "32-byte public key", id="short-key"),
        pytest.param({"kind": "remove_client", "pubkey": NEW.hex()}, "32-byte public key", id="hex-key"),
        pytest.param({"kind": "replace_key", "old": V1, "new": b""}, "new must be a 32-byte", id="empty-new"),
        pytest.param({"kind": "add_client", "name": "", "pubkey": NEW}, "name must be", id="empty-name"),
        pytest.param({"kind": "add_client", "name": "x" * 65, "pubkey": NEW}, "name must be", id="long-name"),
        pytest.param({"kind": "add_client", "name": 3, "pubkey": NEW}, "name must be", id="int-name"),
        pytest.param({"kind": "set_address", "pubkey": V1, "address": "host"}, "host:port", id="no-port"),
        pytest.param({"kind": "set_address", "pubkey": V1, "address": ":80"}, "host:port", id="no-host"),
        pytest.param({"kind": "set_address", "pubkey": V1, "address": "h:0"}, "host:port", id="port-0"),
        pytest.param({"kind": "set_address", "pubkey": V1, "address": "h:65536"}, "host:port", id="port-high"),
        pytest.param({"kind": "set_address", "pubkey": V1, "address": "h:\u00b2"}, "host:port", id="unicode-digit"),
        pytest.param({"kind": "set_address", "pubkey": V1, "address": "h" * 250 + ":26601"}, "host:port",
                     id="long-address"),
        pytest.param({"kind": "set_admin_threshold", "threshold": True}, "threshold must be", id="bool-threshold"),
        pytest.param({"kind": "set_admin_threshold", "threshold": "2"}, "threshold must be", id="str-threshold"),
    ],
)
def test_a_malformed_change_is_refused_with_its_reason(obj: Any, match: str) -> None:
    with pytest.raises(ChangeMalformed, match=match):
        parse_change(obj)


# --- apply_change -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["validators", "observers", "clients", "admins"])
def test_an_add_appends_to_its_role(role: str) -> None:
    fields: dict[str, Any] = {"name": "new", "pubkey": NEW}
    if role in ("validators", "observers"):
        fields["address"] = "10.0.0.9:26601"
    after = apply_change(BASE, change("add_" + role[:-1], **fields))
    assert getattr(after, role) == getattr(BASE, role) + (Member("new", NEW, fields.get("address", "")),)
    assert after.role_of(NEW) == role


@pytest.mark.parametrize("existing", [V1, O1, C1, A1], ids=["validator", "observer", "client", "admin"])
@pytest.mark.parametrize("kind", ["add_client", "add_admin", "add_observer"])
def test_adding_a_key_that_is_a_member_is_refused(kind: str, existing: bytes) -> None:
    fields: dict[str, Any] = {"name": "new", "pubkey": existing}
    if kind == "add_observer":
        fields["address"] = "h:1"
    refused(change(kind, **fields), "already a member")


@pytest.mark.parametrize("existing", [V1, C1, A1], ids=["validator", "client", "admin"])
def test_add_validator_of_a_key_that_is_not_an_observer_is_refused(existing: bytes) -> None:
    refused(change("add_validator", name="new", pubkey=existing, address="h:1"), "already a member")


def test_add_validator_of_an_observer_promotes_it_with_its_name_and_address_restated() -> None:
    after = apply_change(BASE, change("add_validator", name="org3", pubkey=O1, address="10.9.9.9:1"))
    assert after.observers == ()
    assert after.validators == BASE.validators + (Member("org3", O1, "10.9.9.9:1"),)
    assert after.peer_keys == BASE.peer_keys  # it stays a peer throughout


@pytest.mark.parametrize(("kind", "pubkey", "role"), [
    ("remove_validator", V1, "validators"), ("remove_observer", O1, "observers"),
    ("remove_client", C1, "clients"), ("remove_admin", A3, "admins"),
])
def test_a_remove_takes_the_key_out_of_its_role(kind: str, pubkey: bytes, role: str) -> None:
    after = apply_change(BASE, change(kind, pubkey=pubkey))
    assert after.role_of(pubkey) is None
    assert getattr(after, role) == tuple(m for m in getattr(BASE, role) if m.pubkey != pubkey)


@pytest.mark.parametrize(("kind", "pubkey"), [
    ("remove_validator", O1), ("remove_observer", V1), ("remove_client", A1), ("remove_admin", C1),
    ("remove_client", NEW),
])
def test_removing_a_key_that_does_not_hold_that_role_is_refused(kind: str, pubkey: bytes) -> None:
    refused(change(kind, pubkey=pubkey), "is not one of the")


def test_removing_the_last_validator_is_refused() -> None:
    one = apply_change(BASE, change("remove_validator", pubkey=V2))
    refused(change("remove_validator", pubkey=V1), "no validator", one)


def test_removing_the_last_admin_is_refused() -> None:
    one = Membership(BASE.validators, (), (), (Member("a1", A1),), 1)
    refused(change("remove_admin", pubkey=A1), "no admin", one)


def test_removing_an_admin_the_threshold_needs_is_refused() -> None:
    tight = Membership(BASE.validators, (), (), BASE.admins[:2], 2)
    refused(change("remove_admin", pubkey=A1), "admin_threshold 2 must be 1..1", tight)
    assert apply_change(BASE, change("remove_admin", pubkey=A1)).admin_threshold == 2  # 2 of 2 still meets it


@pytest.mark.parametrize("old", [V2, O1, C1, A2], ids=["validator", "observer", "client", "admin"])
def test_replace_key_keeps_name_role_address_and_place(old: bytes) -> None:
    role = BASE.role_of(old)
    assert role is not None
    after = apply_change(BASE, change("replace_key", old=old, new=NEW))
    assert after.role_of(old) is None and after.role_of(NEW) == role
    before = getattr(BASE, role)
    assert getattr(after, role) == tuple(Member(m.name, NEW, m.address) if m.pubkey == old else m for m in before)


def test_replace_key_refusals() -> None:
    refused(change("replace_key", old=NEW, new=key(10)), "is not a member")
    refused(change("replace_key", old=V1, new=A1), "already a member")
    refused(change("replace_key", old=V1, new=V1), "already a member")


@pytest.mark.parametrize("pubkey", [V1, O1])
def test_set_address_of_a_validator_or_observer(pubkey: bytes) -> None:
    after = apply_change(BASE, change("set_address", pubkey=pubkey, address="new.example:7"))
    assert [m.address for m in after.validators + after.observers if m.pubkey == pubkey] == ["new.example:7"]


@pytest.mark.parametrize("pubkey", [C1, A1, NEW])
def test_set_address_of_a_sender_or_a_stranger_is_refused(pubkey: bytes) -> None:
    refused(change("set_address", pubkey=pubkey, address="h:1"), "not a validator or observer")


def test_set_admin_threshold_must_be_met_by_the_admins() -> None:
    assert apply_change(BASE, change("set_admin_threshold", threshold=3)).admin_threshold == 3
    assert apply_change(BASE, change("set_admin_threshold", threshold=1)).admin_threshold == 1
    refused(change("set_admin_threshold", threshold=4), "must be 1..3")
    refused(change("set_admin_threshold", threshold=0), "must be 1..3")
    refused(change("set_admin_threshold", threshold=-1), "must be 1..3")


def test_a_name_is_not_given_twice_among_nodes_nor_among_senders() -> None:
    refused(change("add_observer", name="v1", pubkey=NEW, address="h:1"), "name would be used twice")
    refused(change("add_admin", name="c1", pubkey=NEW), "name would be used twice")
    assert apply_change(BASE, change("add_client", name="v1", pubkey=NEW)).role_of(NEW) == "clients"


# --- the membership itself ----------------------------------------------------------------------------------


def test_the_key_sets_of_each_role() -> None:
    assert BASE.validator_keys == (V1, V2)
    assert BASE.peer_keys == {V1, V2, O1}
    assert BASE.authorised_senders == {C1, A1, A2, A3}
    assert BASE.admin_keys == {A1, A2, A3}
    assert [BASE.role_of(k) for k in (V1, O1, C1, A1, NEW)] == ["validators", "observers", "clients", "admins", None]


def test_validators_hash_is_sha256_of_the_canonical_list_of_keys_in_order() -> None:
    expected = hashlib.sha256(msgpack.packb([V1, V2], use_bin_type=True)).digest()
    assert BASE.validators_hash() == validators_hash((V1, V2)) == expected
    assert validators_hash((V2, V1)) != expected


def test_the_wire_form_round_trips_and_is_canonical() -> None:
    assert membership_from_wire(BASE.wire()) == BASE
    assert msgpack.unpackb(BASE.encode(), raw=False) == BASE.wire()
    assert BASE.wire()[0][0] == ["v1", V1, "10.0.0.1:26601"] and BASE.wire()[2][0] == ["c1", C1]


@pytest.mark.parametrize("wire", [
    None, [], [[], [], [], [], "2"], [[["v", V1]], [], [], [], 1], [[], [], [["c", V1[:5]]], [], 1],
    [[], [], [["c", V1, "h:1"]], [], 1], [{}, [], [], [], 1],
])
def test_a_damaged_wire_form_is_a_value_error(wire: Any) -> None:
    with pytest.raises(ValueError):
        membership_from_wire(wire)


def test_to_json_shows_each_role() -> None:
    shown = BASE.to_json()
    assert shown["validators"][0] == {"name": "v1", "pubkey": V1.hex(), "address": "10.0.0.1:26601"}
    assert shown["clients"] == [{"name": "c1", "pubkey": C1.hex()}]
    assert [a["name"] for a in shown["admins"]] == ["a1", "a2", "a3"] and shown["admin_threshold"] == 2


@pytest.mark.parametrize(("admins", "threshold"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_the_default_threshold_is_a_majority(admins: int, threshold: int) -> None:
    assert default_threshold(admins) == threshold


# --- a property: no sequence of changes breaks a membership -------------------------------------------------

POOL = [key(n) for n in range(1, 9)]
KINDS = sorted(CHANGE_FIELDS)


@st.composite
def changes(draw: st.DrawFn) -> Change:
    kind = draw(st.sampled_from(KINDS))
    pick = st.sampled_from(POOL)
    values: dict[str, Any] = {
        "name": draw(st.sampled_from(["a", "b", "c", "d"])), "pubkey": draw(pick), "address": "h:1",
        "old": draw(pick), "new": draw(pick), "threshold": draw(st.integers(-1, 6)),
    }
    return parse_change({field: kind if field == "kind" else values[field] for field in CHANGE_FIELDS[kind]})


def assert_sound(m: Membership) -> None:
    keys = [x.pubkey for x in m.validators + m.observers + m.clients + m.admins]
    assert len(keys) == len(set(keys))
    assert m.validators and m.admins
    assert 1 <= m.admin_threshold <= len(m.admins)


@settings(max_examples=300, deadline=None)
@given(st.lists(changes(), max_size=30))
def test_no_sequence_of_changes_leaves_a_broken_membership(sequence: list[Change]) -> None:
    m = Membership((Member("v", POOL[0], "h:1"),), (), (), (Member("a", POOL[1]),), 1)
    for c in sequence:
        try:
            after = apply_change(m, c)
        except ChangeRefused:
            continue
        assert_sound(after)
        assert after != m or c.kind in ("set_address", "set_admin_threshold")
        m = after
