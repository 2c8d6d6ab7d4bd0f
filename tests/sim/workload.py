"""The chain a simulation runs: its genesis, and the client transactions fed to its nodes.

The transactions are real (Ed25519-signed kv and notary operations by one
authorised client) and signed once per process: every seed draws from the same
sequence, so hundreds of seeds cost no signing. Validators' keys are the
keyring's; only their seals and messages use the keyed hash.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

from nacl.signing import SigningKey

from node.chain.genesis import Genesis
from node.chain.membership import Member
from node.chain.tx import Transaction, sign_tx

CHAIN_ID = "sim-chain"
CLIENT_TXS = 1500  # more than any run submits
KV_KEYS = 40  # puts and deletes overwrite a small key set, so state changes, not only grows
_CLIENT = SigningKey(hashlib.sha256(b"alliance-sim-client").digest())


def genesis(validators: tuple[bytes, ...]) -> Genesis:
    members = tuple(Member(f"v{i}", pubkey) for i, pubkey in enumerate(validators))
    return Genesis(CHAIN_ID, 0, members, (Member("client", bytes(_CLIENT.verify_key)),), ())


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
