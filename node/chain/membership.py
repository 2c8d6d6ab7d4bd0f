"""Who the chain's members are at a height, and the changes governance may make to them.

A membership is validators and observers (name, pubkey, peer address), clients
and admins (name, pubkey) and the admin threshold. A key holds one role. Its
canonical encoding (in the state and in proofs) is

    [[[name, pubkey, address], ...validators], [...observers],
     [[name, pubkey], ...clients], [...admins], admin_threshold]

and `validators_hash` = SHA-256(canonical [pubkey, ...] of the validators in order).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, cast

from node.chain.canonical import pack, pack_flat

NAME_BYTES_MAX = 64
ADDRESS_BYTES_MAX = 255
KEY_BYTES = 32

PEER_KINDS = ("add_validator", "add_observer")
SENDER_KINDS = ("add_client", "add_admin")
REMOVE_KINDS = ("remove_validator", "remove_observer", "remove_client", "remove_admin")
CHANGE_FIELDS: dict[str, frozenset[str]] = {
    **{kind: frozenset({"kind", "name", "pubkey", "address"}) for kind in PEER_KINDS},
    **{kind: frozenset({"kind", "name", "pubkey"}) for kind in SENDER_KINDS},
    **{kind: frozenset({"kind", "pubkey"}) for kind in REMOVE_KINDS},
    "replace_key": frozenset({"kind", "old", "new"}),
    "set_address": frozenset({"kind", "pubkey", "address"}),
    "set_admin_threshold": frozenset({"kind", "threshold"}),
}
ROLES = ("validators", "observers", "clients", "admins")


class ChangeMalformed(ValueError):
    """A `change` map that is not one of the kinds the protocol defines (receipt code 1)."""


class ChangeRefused(ValueError):
    """A well-formed change that would break the chain or clash with its members (receipt code 7)."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    pubkey: bytes
    address: str = ""  # host:port of the peer listener; validators and observers only


@dataclass(frozen=True)
class Membership:
    validators: tuple[Member, ...]
    observers: tuple[Member, ...]
    clients: tuple[Member, ...]
    admins: tuple[Member, ...]
    admin_threshold: int

    # Cached: admission asks for every transaction.
    @cached_property
    def validator_keys(self) -> tuple[bytes, ...]:
        return tuple(m.pubkey for m in self.validators)

    @cached_property
    def peer_keys(self) -> frozenset[bytes]:
        """Who may connect to the peer port: validators and observers."""
        return frozenset(m.pubkey for m in self.validators + self.observers)

    @cached_property
    def authorised_senders(self) -> frozenset[bytes]:
        return frozenset(m.pubkey for m in self.clients + self.admins)

    @cached_property
    def admin_keys(self) -> frozenset[bytes]:
        return frozenset(m.pubkey for m in self.admins)

    def role_of(self, pubkey: bytes) -> str | None:
        for role in ROLES:
            if any(m.pubkey == pubkey for m in getattr(self, role)):
                return role
        return None

    def validators_hash(self) -> bytes:
        return validators_hash(self.validator_keys)

    def wire(self) -> list[Any]:
        return [
            [[m.name, m.pubkey, m.address] for m in self.validators],
            [[m.name, m.pubkey, m.address] for m in self.observers],
            [[m.name, m.pubkey] for m in self.clients],
            [[m.name, m.pubkey] for m in self.admins],
            self.admin_threshold,
        ]

    def encode(self) -> bytes:
        return pack_flat(self.wire())

    def to_json(self) -> dict[str, Any]:
        def peers(members: tuple[Member, ...]) -> list[dict[str, str]]:
            return [{"name": m.name, "pubkey": m.pubkey.hex(), "address": m.address} for m in members]

        def senders(members: tuple[Member, ...]) -> list[dict[str, str]]:
            return [{"name": m.name, "pubkey": m.pubkey.hex()} for m in members]

        return {
            "validators": peers(self.validators), "observers": peers(self.observers),
            "clients": senders(self.clients), "admins": senders(self.admins),
            "admin_threshold": self.admin_threshold,
        }


def validators_hash(keys: tuple[bytes, ...]) -> bytes:
    return hashlib.sha256(pack(list(keys))).digest()


def default_threshold(admins: int) -> int:
    """A majority of the admins."""
    return admins // 2 + 1


def membership_from_wire(obj: Any) -> Membership:
    """The membership `wire()` encoded; ValueError if `obj` is not one."""
    if not (isinstance(obj, list) and len(obj) == 5 and type(obj[4]) is int):
        raise ValueError("membership must be [validators, observers, clients, admins, admin_threshold]")
    lists = [_members_from_wire(obj[i], with_address=i < 2) for i in range(4)]
    return Membership(lists[0], lists[1], lists[2], lists[3], obj[4])


def _members_from_wire(entries: Any, with_address: bool) -> tuple[Member, ...]:
    width = 3 if with_address else 2
    if not isinstance(entries, list):
        raise ValueError("membership lists must be arrays")
    members = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == width and isinstance(entry[0], str)
                and isinstance(entry[1], bytes) and len(entry[1]) == KEY_BYTES
                and (not with_address or isinstance(entry[2], str))):
            raise ValueError(f"a member must be [name, pubkey{', address' if with_address else ''}]")
        members.append(Member(entry[0], entry[1], entry[2] if with_address else ""))
    return tuple(members)


# ---- changes ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """One change to a membership: `kind` and the fields that kind takes (the others stay empty)."""

    kind: str
    name: str = ""
    pubkey: bytes = b""
    address: str = ""
    old: bytes = b""
    new: bytes = b""
    threshold: int = 0

    def wire(self) -> dict[str, Any]:
        """The `change` map as a transaction carries it (and get_proposal shows it)."""
        fields = CHANGE_FIELDS[self.kind]
        return {name: getattr(self, name) for name in sorted(fields)}

    def to_json(self) -> dict[str, Any]:
        return {k: v.hex() if isinstance(v, bytes) else v for k, v in self.wire().items()}


def parse_change(obj: Any) -> Change:
    """The change a `propose` carries; ChangeMalformed names what is wrong with it."""
    if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str) or obj["kind"] not in CHANGE_FIELDS:
        raise ChangeMalformed(f"change needs a kind, one of {', '.join(CHANGE_FIELDS)}")
    kind = obj["kind"]
    if set(obj) != CHANGE_FIELDS[kind]:
        raise ChangeMalformed(f"{kind} takes exactly {', '.join(sorted(CHANGE_FIELDS[kind]))}")
    for field in ("pubkey", "old", "new"):
        if field in obj and not (isinstance(obj[field], bytes) and len(obj[field]) == KEY_BYTES):
            raise ChangeMalformed(f"{field} must be a 32-byte public key")
    if "name" in obj and not (isinstance(obj["name"], str) and 1 <= len(obj["name"].encode()) <= NAME_BYTES_MAX):
        raise ChangeMalformed(f"name must be a string of 1..{NAME_BYTES_MAX} bytes")
    if "address" in obj and not _is_address(obj["address"]):
        raise ChangeMalformed("address must be host:port")
    if "threshold" in obj and type(obj["threshold"]) is not int:
        raise ChangeMalformed("threshold must be an integer")
    return Change(**{k: v for k, v in obj.items()})


def _is_address(value: Any) -> bool:
    if not isinstance(value, str) or not 3 <= len(value.encode()) <= ADDRESS_BYTES_MAX:
        return False
    host, sep, port = value.rpartition(":")
    host_ok = host.isascii() and host.isprintable() and " " not in host
    return bool(sep and host and host_ok and port.isascii() and port.isdigit() and 0 < int(port) <= 65535)


def apply_change(m: Membership, c: Change) -> Membership:
    """The membership after `c`; ChangeRefused if it would break the chain or clash with a member."""
    if c.kind in PEER_KINDS or c.kind in SENDER_KINDS:
        result = _add(m, c)
    elif c.kind in REMOVE_KINDS:
        result = _remove(m, c.kind.removeprefix("remove_") + "s", c.pubkey)
    elif c.kind == "replace_key":
        result = _replace_key(m, c.old, c.new)
    elif c.kind == "set_address":
        result = _set_address(m, c.pubkey, c.address)
    else:
        result = replace(m, admin_threshold=c.threshold)
    check_membership(result)
    return result


def check_membership(m: Membership) -> None:
    """What every membership must hold: a validator, an admin, a threshold they can meet, unique keys."""
    if not m.validators:
        raise ChangeRefused("the change would leave no validator")
    if not m.admins:
        raise ChangeRefused("the change would leave no admin")
    if not 1 <= m.admin_threshold <= len(m.admins):
        raise ChangeRefused(f"admin_threshold {m.admin_threshold} must be 1..{len(m.admins)} (the admins); "
                            "to remove an admin the threshold needs, lower the threshold first")
    keys = [x.pubkey for role in ROLES for x in getattr(m, role)]
    if len(set(keys)) != len(keys):
        raise ChangeRefused("a key would hold two roles")
    for group in (m.validators + m.observers, m.clients + m.admins):
        names = [x.name for x in group]
        if len(set(names)) != len(names):
            raise ChangeRefused("a name would be used twice")


def _add(m: Membership, c: Change) -> Membership:
    role = c.kind.removeprefix("add_") + "s"
    current = m.role_of(c.pubkey)
    if current == "observers" and role == "validators":
        m = replace(m, observers=tuple(x for x in m.observers if x.pubkey != c.pubkey))  # a promotion
    elif current is not None:
        raise ChangeRefused(f"key {c.pubkey.hex()} is already a member ({current[:-1]})")
    return _with_role(m, role, getattr(m, role) + (Member(c.name, c.pubkey, c.address),))


def _remove(m: Membership, role: str, pubkey: bytes) -> Membership:
    members = getattr(m, role)
    if not any(x.pubkey == pubkey for x in members):
        raise ChangeRefused(f"key {pubkey.hex()} is not one of the {role}")
    return _with_role(m, role, tuple(x for x in members if x.pubkey != pubkey))


def _replace_key(m: Membership, old: bytes, new: bytes) -> Membership:
    role = m.role_of(old)
    if role is None:
        raise ChangeRefused(f"key {old.hex()} is not a member")
    if m.role_of(new) is not None:
        raise ChangeRefused(f"key {new.hex()} is already a member")
    return _with_role(m, role, tuple(replace(x, pubkey=new) if x.pubkey == old else x for x in getattr(m, role)))


def _set_address(m: Membership, pubkey: bytes, address: str) -> Membership:
    role = m.role_of(pubkey)
    if role not in ("validators", "observers"):
        raise ChangeRefused(f"key {pubkey.hex()} is not a validator or observer")
    return _with_role(m, role, tuple(replace(x, address=address) if x.pubkey == pubkey else x for x in getattr(m, role)))


def _with_role(m: Membership, role: str, members: tuple[Member, ...]) -> Membership:
    """`m` with the members of `role` (one of ROLES) replaced."""
    return replace(m, **cast(dict[str, Any], {role: members}))
