"""The genesis: chain id and the first membership (validators, observers, clients, admins, threshold)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from node.chain.canonical import pack
from node.chain.membership import Member, Membership, default_threshold
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
    admin_threshold: int | None = None  # None: a majority of the admins (0 when there is none)

    def __post_init__(self) -> None:
        if self.admin_threshold is None:
            default = default_threshold(len(self.admins)) if self.admins else 0
            object.__setattr__(self, "admin_threshold", default)

    def hash(self) -> bytes:
        """SHA-256 of the canonical encoding; equal genesis files give equal hashes."""
        return hashlib.sha256(pack(self.to_dict())).digest()

    @property
    def validator_keys(self) -> tuple[bytes, ...]:
        return tuple(m.pubkey for m in self.validators)

    @property
    def threshold(self) -> int:
        assert self.admin_threshold is not None  # set by __post_init__
        return self.admin_threshold

    @property
    def members(self) -> Membership:
        """The membership in force from block 1 until governance changes it."""
        return Membership(self.validators, self.observers, self.clients, self.admins, self.threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "genesis_time_ms": self.genesis_time_ms,
            "validators": [_member_dict(m, with_address=True) for m in self.validators],
            "observers": [_member_dict(m, with_address=True) for m in self.observers],
            "clients": [_member_dict(m) for m in self.clients],
            "admins": [_member_dict(m) for m in self.admins],
            "admin_threshold": self.threshold,
        }


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
    validators = _members(data, "validators", with_address=True)
    if complete and not validators:
        raise ConfigError("at least one validator is required")
    admins = _members(data, "admins")
    threshold = data.get("admin_threshold")
    if threshold is not None and (type(threshold) is not int or not (1 if admins else 0) <= threshold <= len(admins)):
        raise ConfigError(f"admin_threshold must be an integer from 1 to the number of admins ({len(admins)})")
    genesis = Genesis(chain_id, time_ms, validators, _members(data, "clients"), admins,
                      _members(data, "observers", with_address=True), threshold)
    _check_unique(genesis.validators + genesis.observers, "validator or observer")
    _check_unique(genesis.clients + genesis.admins, "client or admin")
    _check_one_role(genesis)
    return genesis


def _check_one_role(genesis: Genesis) -> None:
    peers = {m.pubkey for m in genesis.validators + genesis.observers}
    if any(m.pubkey in peers for m in genesis.clients + genesis.admins):
        raise ConfigError("a public key is both a validator or observer and a client or admin; a key holds one role")


def _members(data: dict[str, Any], field: str, with_address: bool = False) -> tuple[Member, ...]:
    entries = data.get(field, [])
    if not isinstance(entries, list):
        raise ConfigError(f"{field} must be an array of tables")
    members = []
    for i, entry in enumerate(entries):
        where = f"{field}[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where} needs a string 'name'")
        unknown = [k for k in entry if k not in MEMBER_FIELDS[: 3 if with_address else 2]]
        if unknown:
            raise ConfigError(f"{where}: unknown field {unknown[0]!r}")
        pubkey = parse_pubkey(str(entry.get("pubkey", "")), f"{where}.pubkey")
        address = entry.get("address", "") if with_address else ""
        if with_address:
            parse_address(address if isinstance(address, str) else "", f"{where}.address")
        members.append(Member(entry["name"], pubkey, address))
    return tuple(members)


def _check_unique(members: tuple[Member, ...], what: str = "validator") -> None:
    if len({m.pubkey for m in members}) != len(members):
        raise ConfigError(f"a {what} public key is listed twice")
    if len({m.name for m in members}) != len(members):
        raise ConfigError(f"a {what} name is listed twice")
