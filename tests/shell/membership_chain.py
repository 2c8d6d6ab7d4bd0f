"""A consortium with one admin (threshold 1), and sealed blocks that change its membership.

Each change is proposed in a block of its own and passes there (one approval is the
threshold), so it is in force from that block's height + ACTIVATION_DELAY. Every block
is sealed by a quorum of the validators of its own height, as the chain requires.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey

from consensus.messages import seal_bytes
from consensus.quorum import quorum
from node.chain.block_check import check_synced_block
from node.chain.genesis import Genesis
from node.chain.governance import ACTIVATION_DELAY
from node.chain.ledger import Ledger
from node.chain.membership import Member
from node.chain.proposal import build_block
from node.chain.tx import Transaction, sign_tx
from storage.chain import ChainStore
from storage.memory import MemoryStore

_nonces = itertools.count(1)


@dataclass
class Governed:
    chain_id: str
    genesis: Genesis
    admin: SigningKey
    validators: list[SigningKey]  # of the genesis
    observers: list[SigningKey]  # of the genesis
    keys: dict[bytes, SigningKey]  # every key made, by public key: newcomers too

    def ledger(self) -> Ledger:
        return Ledger(ChainStore(MemoryStore()), self.genesis)

    def newcomer(self) -> SigningKey:
        key = SigningKey.generate()
        self.keys[bytes(key.verify_key)] = key
        return key


def governed(validators: int = 4, observers: int = 0, chain_id: str = "membership-test",
             addresses: Sequence[str] = ()) -> Governed:
    """Validators then observers, with `addresses` in that order (empty: none)."""
    val_keys = [SigningKey.generate() for _ in range(validators)]
    obs_keys = [SigningKey.generate() for _ in range(observers)]
    addresses = list(addresses) or [""] * (validators + observers)
    admin = SigningKey.generate()

    def members(keys: list[SigningKey], prefix: str, offset: int) -> tuple[Member, ...]:
        return tuple(Member(f"{prefix}{i}", pub(k), addresses[offset + i]) for i, k in enumerate(keys))

    genesis = Genesis(chain_id, 0, members(val_keys, "v", 0), (), (Member("admin", pub(admin)),),
                      members(obs_keys, "o", validators), 1)
    keys = {pub(k): k for k in val_keys + obs_keys}
    return Governed(chain_id, genesis, admin, val_keys, obs_keys, keys)


def pub(key: SigningKey) -> bytes:
    return bytes(key.verify_key)


def change(g: Governed, ledger: Ledger, *changes: dict[str, Any]) -> int:
    """Commits a block passing `changes`; the height they are in force from."""
    txs = [sign_tx(g.admin, g.chain_id, "gov", "propose", {"change": c}, next(_nonces)) for c in changes]
    receipts = commit(g, ledger, txs)
    assert all(r.code == 0 for r in receipts), receipts
    return ledger.height + ACTIVATION_DELAY


def grow(g: Governed, ledger: Ledger, blocks: int) -> None:
    for _ in range(blocks):
        commit(g, ledger, [])


def commit(g: Governed, ledger: Ledger, txs: list[Transaction]) -> list[Any]:
    """Commits a block of `txs` sealed by a quorum of its height's validators; their receipts."""
    height = ledger.height + 1
    validators = ledger.members(height).validator_keys
    candidate = build_block(ledger, txs, validators[0], ledger.last_time_ms + 1000)
    signers = [g.keys[v] for v in validators[: quorum(len(validators))]]
    seals = tuple((pub(k), k.sign(seal_bytes(candidate.block_hash)).signature) for k in signers)
    ledger.commit(candidate.block, candidate.txs, candidate.execution, seals)
    return list(candidate.execution.receipts)


class Applier:
    """What the Syncer uses of the Driver: applies a synced block as the pipeline does."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def apply_synced(self, raw_block: bytes, raw_certificate: bytes) -> None:
        checked = check_synced_block(self.ledger, raw_block, raw_certificate)
        if checked is not None:
            candidate, seals = checked
            self.ledger.commit(candidate.block, candidate.txs, candidate.execution, seals)
