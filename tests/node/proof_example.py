"""The chain of the worked example of docs/proofs.md section 4, rebuilt deterministically.

Four validators; two admins (threshold 2) add a fifth, node4: proposed in block 1, approved (so
passed) in block 2, in force from block 4. Block 3 is the last the four decide; block 4 holds five
transactions, the third a `notary.record` of an invoice. Every key comes from a fixed seed and every
time is fixed, so the chain, its certificates and its proofs are the same on every run:
`python -m tests.node.proof_example` prints the genesis and the proofs the page shows.

`hex_locations` serves both proof test files: where a tamper test may change a character.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import tomli_w
from nacl.signing import SigningKey

from node.api.lookup import build_proof, build_state_proof
from node.chain.genesis import Genesis
from node.chain.ledger import Ledger
from node.chain.membership import Member
from node.chain.proposal import build_block
from node.chain.tx import Transaction, sign_tx
from storage.chain import ChainStore
from storage.memory import MemoryStore

CHAIN_ID = "acme-invoices"
DOCUMENT = b"%PDF-1.7 invoice 2026-0001 ACME to Globex, EUR 1200.00"
GENESIS_TIME_MS = 1795475921774


def _key(name: str) -> SigningKey:
    return SigningKey(hashlib.sha256(f"{CHAIN_ID} {name}".encode()).digest())


NODES = [_key(f"node{i}") for i in range(5)]
CLIENT, ADMINS = _key("client"), [_key("tax-bureau"), _key("acme-board")]


def _pub(key: SigningKey) -> bytes:
    return bytes(key.verify_key)


def _node(i: int) -> Member:
    return Member(f"node{i}", _pub(NODES[i]), f"127.0.0.1:{22241 + 10 * i}")


GENESIS = Genesis(
    chain_id=CHAIN_ID, genesis_time_ms=GENESIS_TIME_MS, validators=tuple(_node(i) for i in range(4)),
    clients=(Member("client", _pub(CLIENT)),),
    admins=(Member("tax-bureau", _pub(ADMINS[0])), Member("acme-board", _pub(ADMINS[1]))), admin_threshold=2,
)
ADD_NODE4 = {"kind": "add_validator", "name": "node4", "pubkey": _pub(NODES[4]), "address": _node(4).address}
# Who seals each block: a quorum of its validators (3 of the 4, then 4 of the 5), as a node stores them.
SIGNERS = {1: (0, 1, 3), 2: (0, 1, 3), 3: (0, 1, 3), 4: (0, 1, 2, 4)}


def _blocks() -> dict[int, list[Transaction]]:
    propose = sign_tx(ADMINS[0], CHAIN_ID, "gov", "propose", {"change": ADD_NODE4}, 1)

    def client(nonce: int, family: str, op: str, args: dict[str, object]) -> Transaction:
        return sign_tx(CLIENT, CHAIN_ID, family, op, args, nonce)

    return {
        1: [propose, client(10, "kv", "put", {"key": "invoice/2026-0001/status", "value": b"issued"})],
        2: [sign_tx(ADMINS[1], CHAIN_ID, "gov", "approve", {"proposal": propose.hash}, 1)],
        3: [client(11, "kv", "put", {"key": "invoice/2026-0002/status", "value": b"issued"})],
        4: [
            client(12, "kv", "put", {"key": "invoice/2026-0001/status", "value": b"sent"}),
            client(14, "notary", "record", {"digest": hashlib.sha256(b"invoice 2026-0002").digest()}),
            client(13, "notary", "record", {"digest": hashlib.sha256(DOCUMENT).digest(), "meta": "invoice 2026-0001"}),
            client(15, "kv", "delete", {"key": "invoice/2026-0009/status"}),
            client(16, "notary", "record", {"digest": hashlib.sha256(b"invoice 2026-0003").digest(),
                                            "meta": "invoice 2026-0003"}),
        ],
    }


def build_ledger() -> tuple[Ledger, dict[int, list[Transaction]]]:
    ledger = Ledger(ChainStore(MemoryStore()), GENESIS)
    blocks = _blocks()
    for height, txs in blocks.items():
        candidate = build_block(ledger, txs, _pub(NODES[height % 4]), GENESIS_TIME_MS + 4251 * height)
        seals = tuple((_pub(NODES[i]), NODES[i].sign(b"alliance-commit-v1\x00" + candidate.block_hash).signature)
                      for i in SIGNERS[height])
        ledger.commit(candidate.block, candidate.txs, candidate.execution, seals)
    return ledger, blocks


def proofs() -> list[dict[str, object]]:
    """The proofs of the transactions at index 2, 3 and 4 of block 4."""
    ledger, blocks = build_ledger()
    built = [build_proof(ledger, tx.hash) for tx in blocks[4][2:]]
    return [p for p in built if p is not None]


PRESENT_KV_KEY = "invoice/2026-0001/status"
ABSENT_DIGEST = hashlib.sha256(b"invoice 2026-0004").hexdigest()


def state_proofs() -> list[dict[str, Any]]:
    """The state proofs at height 4 of a present kv key and of a notary digest never recorded."""
    ledger, _ = build_ledger()
    built = [build_state_proof(ledger, "kv", PRESENT_KV_KEY), build_state_proof(ledger, "notary", ABSENT_DIGEST)]
    return [p for p in built if p is not None]


def genesis_toml() -> str:
    return tomli_w.dumps(GENESIS.to_dict())


def hex_locations(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths to every string in the proof that is hex."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from hex_locations(item, path + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from hex_locations(item, path + (i,))
    elif isinstance(value, str) and value and all(c in "0123456789abcdef" for c in value):
        yield path


if __name__ == "__main__":
    print(genesis_toml())
    print(json.dumps(proofs(), indent=2))
    print(json.dumps(state_proofs(), indent=2))
