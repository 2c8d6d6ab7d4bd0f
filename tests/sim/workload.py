"""The chain a simulation runs: its genesis, and the client and admin transactions fed to its nodes.

The transactions are real (Ed25519-signed kv and notary operations by one
authorised client, gov proposals and approvals by three admins of whom two
pass a change) and the client's are signed once per process: every seed draws
from the same sequence, so hundreds of seeds cost no signing. Validators' and
observers' keys are the keyring's; only their seals and messages use the keyed hash.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

from nacl.signing import SigningKey

from node.chain.genesis import Genesis
from node.chain.membership import Member
from node.chain.tx import Transaction, sign_tx

CHAIN_ID = "sim-chain"
CLIENT_TXS = 1500  # more than any run submits
KV_KEYS = 40  # puts and deletes overwrite a small key set, so state changes, not only grows
_CLIENT = SigningKey(hashlib.sha256(b"alliance-sim-client").digest())
ADMINS = tuple(SigningKey(hashlib.sha256(b"alliance-sim-admin:%d" % i).digest()) for i in range(3))
ADMIN_THRESHOLD = 2


def genesis(validators: tuple[bytes, ...], observers: tuple[bytes, ...] = ()) -> Genesis:
    members = tuple(Member(f"v{i}", pubkey, f"sim:{i}") for i, pubkey in enumerate(validators))
    watchers = tuple(Member(observer_name(i), pubkey, f"sim:{100 + i}") for i, pubkey in enumerate(observers))
    admins = tuple(Member(f"admin{i}", bytes(key.verify_key)) for i, key in enumerate(ADMINS))
    client = (Member("client", bytes(_CLIENT.verify_key)),)
    return Genesis(CHAIN_ID, 0, members, client, admins, watchers, ADMIN_THRESHOLD)


def observer_name(i: int) -> str:
    return f"o{i}"


@lru_cache(maxsize=1)
def client_txs() -> tuple[Transaction, ...]:
    """The client's transactions in submission order, their signatures checked once here (as admission does)."""
    txs = tuple(_client_tx(i) for i in range(CLIENT_TXS))
    assert all(tx.verify_signature() for tx in txs)
    return txs


def _client_tx(i: int) -> Transaction:
    nonce = i + 1
    if i % 5 == 4:
        digest = hashlib.sha256(b"document %d" % i).digest()
        return sign_tx(_CLIENT, CHAIN_ID, "notary", "record", {"digest": digest, "meta": f"doc {i}"}, nonce)
    key = f"k{i % KV_KEYS}"
    if i % 7 == 6:
        return sign_tx(_CLIENT, CHAIN_ID, "kv", "delete", {"key": key}, nonce)
    return sign_tx(_CLIENT, CHAIN_ID, "kv", "put", {"key": key, "value": b"v%d" % i}, nonce)


def gov_txs(change: dict[str, Any], proposer: int, approver: int, nonce: int) -> tuple[Transaction, Transaction]:
    """An admin's `propose` of `change` and another admin's `approve` of it (the second approval passes it)."""
    assert proposer != approver
    propose = sign_tx(ADMINS[proposer], CHAIN_ID, "gov", "propose", {"change": change}, nonce)
    approve = sign_tx(ADMINS[approver], CHAIN_ID, "gov", "approve", {"proposal": propose.hash}, nonce)
    return propose, approve
