"""The genesis: chain id and the first membership (validators, observers, clients, admins, threshold)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import tomli_w

from node.chain.canonical import pack
from node.chain.membership import NAME_BYTES_MAX, ROLES, Member, Membership, default_threshold
from node.config import parse_address, read_toml
from node.errors import AllianceError, ConfigError
from node.keys import parse_pubkey


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    genesis_time_ms: int
    validators: tuple[Member, ...]
    clients: tuple[Member, ...]
    admins: tuple[Member, ...]
    observers: tuple[Member, ...] = ()
    admin_threshold: int | None = None  # None: a majority of the admins, whatever they become

    def hash(self) -> bytes:
        """SHA-256 of the canonical encoding, with the threshold in force written out: equal genesis
        files give equal hashes, and so do two that differ only in stating the default threshold."""
        return hashlib.sha256(pack({**self.to_dict(), "admin_threshold": self.threshold})).digest()

    @property
    def validator_keys(self) -> tuple[bytes, ...]:
        return tuple(m.pubkey for m in self.validators)

    @property
    def threshold(self) -> int:
        """The admin threshold in force: the one given, or a majority of the admins (0 when there is none)."""
        if self.admin_threshold is not None:
            return self.admin_threshold
        return default_threshold(len(self.admins)) if self.admins else 0

    @cached_property
    def members(self) -> Membership:
        """The membership in force from block 1 until governance changes it."""
        return Membership(self.validators, self.observers, self.clients, self.admins, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        """What the genesis file holds (the threshold only when it is given)."""
        out: dict[str, Any] = {
            "chain_id": self.chain_id,
            "genesis_time_ms": self.genesis_time_ms,
            "validators": [_member_dict(m, with_address=True) for m in self.validators],
            "observers": [_member_dict(m, with_address=True) for m in self.observers],
            "clients": [_member_dict(m) for m in self.clients],
            "admins": [_member_dict(m) for m in self.admins],
        }
        if self.admin_threshold is not None:
            out["admin_threshold"] = self.admin_threshold
        return out


def _member_dict(m: Member, with_address: bool = False) -> dict[str, str]:
    out = {"name": m.name, "pubkey": m.pubkey.hex()}
    if with_address:
        out["address"] = m.address
    return out


def write_genesis(path: Path, genesis: Genesis) -> None:
    path.write_text(tomli_w.dumps(genesis.to_dict()))


def check_genesis(genesis: Genesis, complete: bool = True) -> None:
    """Raises ConfigError for what load_genesis would refuse in this genesis."""
    _parse(genesis.to_dict(), complete)


def load_genesis(path: Path, complete: bool = True) -> Genesis:
    """The genesis in `path`; `complete=False` accepts one still without validators (being assembled)."""
    data = read_toml(path, "genesis file")
    try:
        return _parse(data, complete)
    except AllianceError as exc:
        raise ConfigError(f"genesis file {path}: {exc}") from None


GENESIS_FIELDS = ("chain_id", "genesis_time_ms", "validators", "observers", "clients", "admins", "admin_threshold")
MEMBER_FIELDS = ("name", "pubkey", "address")


def _parse(data: dict[str, Any], complete: bool) -> Genesis:
    unknown = [k for k in data if k not in GENESIS_FIELDS]
    if unknown:
        raise ConfigError(f"unknown field {unknown[0]!r} (expected {', '.join(GENESIS_FIELDS)})")
    chain_id = data.get("chain_id")
    time_ms = data.get("genesis_time_ms", 0)
    if not isinstance(chain_id, str) or not chain_id:
        raise ConfigError("chain_id must be a non-empty string")
    if type(time_ms) is not int or time_ms < 0:
        raise ConfigError("genesis_time_ms must be a non-negative integer")
    roles = {role: _members(data, role, with_address=role in ("validators", "observers")) for role in ROLES}
    if complete and not roles["validators"]:
        raise ConfigError("at least one validator is required")
    _check_one_role(roles)
    _check_names(roles, ("validators", "observers"))
    _check_names(roles, ("clients", "admins"))
    threshold = data.get("admin_threshold")
    if threshold is not None:
        _check_threshold(threshold, len(roles["admins"]), complete)
    return Genesis(chain_id, time_ms, roles["validators"], roles["clients"], roles["admins"], roles["observers"],
                   threshold)


def _check_threshold(threshold: Any, admins: int, complete: bool) -> None:
    """A threshold the admins can meet (a genesis still being assembled may get its admins later)."""
    if type(threshold) is not int or threshold < 1:
        raise ConfigError(f"admin_threshold must be a positive integer, got {threshold!r}")
    if complete and threshold > admins:
        there = {0: "there are no admins", 1: "there is 1 admin"}.get(admins, f"there are {admins} admins")
        raise ConfigError(f"admin_threshold = {threshold} can never be met: {there}")


def _check_one_role(roles: dict[str, tuple[Member, ...]]) -> None:
    where: dict[bytes, str] = {}
    for role, members in roles.items():
        for i, m in enumerate(members):
            if m.pubkey in where:
                raise ConfigError(f"a public key is listed twice, as {where[m.pubkey]} and {role}[{i}] "
                                  f"({m.pubkey.hex()}): a key holds one role")
            where[m.pubkey] = f"{role}[{i}]"


def _check_names(roles: dict[str, tuple[Member, ...]], group: tuple[str, str]) -> None:
    """Names are unique among the nodes (validators, observers) and among the senders (clients, admins)."""
    where: dict[str, str] = {}
    for role in group:
        for i, m in enumerate(roles[role]):
            if m.name in where:
                raise ConfigError(f"a name is listed twice, as {where[m.name]} and {role}[{i}] ({m.name!r})")
            where[m.name] = f"{role}[{i}]"


def _members(data: dict[str, Any], field: str, with_address: bool = False) -> tuple[Member, ...]:
    entries = data.get(field, [])
    if not isinstance(entries, list):
        raise ConfigError(f"{field} must be an array of tables")
    members = []
    for i, entry in enumerate(entries):
        where = f"{field}[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where} needs a string 'name'")
        if not 1 <= len(entry["name"].encode()) <= NAME_BYTES_MAX:
            raise ConfigError(f"{where}.name must be 1..{NAME_BYTES_MAX} bytes of UTF-8")
        unknown = [k for k in entry if k not in MEMBER_FIELDS[: 3 if with_address else 2]]
        if unknown:
            raise ConfigError(f"{where}: unknown field {unknown[0]!r}")
        pubkey = parse_pubkey(str(entry.get("pubkey", "")), f"{where}.pubkey")
        address = entry.get("address", "") if with_address else ""
        if with_address:
            parse_address(address if isinstance(address, str) else "", f"{where}.address")
        members.append(Member(entry["name"], pubkey, address))
    return tuple(members)
