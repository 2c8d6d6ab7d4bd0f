"""The genesis: chain id, the member validators and the authorised clients and admins."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from node.chain.canonical import pack
from node.config import parse_address, read_toml
from node.errors import AllianceError, ConfigError
from node.keys import parse_pubkey


@dataclass(frozen=True)
class Member:
    name: str
    pubkey: bytes
    address: str = ""  # host:port of the peer listener; validators only


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    genesis_time_ms: int
    validators: tuple[Member, ...]
    clients: tuple[Member, ...]
    admins: tuple[Member, ...]

    def hash(self) -> bytes:
        """SHA-256 of the canonical encoding; equal genesis files give equal hashes."""
        return hashlib.sha256(pack(self.to_dict())).digest()

    @property
    def validator_keys(self) -> tuple[bytes, ...]:
        return tuple(m.pubkey for m in self.validators)

    def authorised_senders(self) -> frozenset[bytes]:
        return frozenset(m.pubkey for m in self.clients + self.admins)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "genesis_time_ms": self.genesis_time_ms,
            "validators": [_member_dict(m, with_address=True) for m in self.validators],
            "clients": [_member_dict(m) for m in self.clients],
            "admins": [_member_dict(m) for m in self.admins],
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


GENESIS_FIELDS = ("chain_id", "genesis_time_ms", "validators", "clients", "admins")
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
    genesis = Genesis(chain_id, time_ms, validators, _members(data, "clients"), _members(data, "admins"))
    _check_unique(genesis.validators)
    _check_unique(genesis.clients + genesis.admins, "client or admin")
    return genesis


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
