"""Small builders for the shell tests: a consortium's keys and genesis, ledgers, sealed blocks."""

from __future__ import annotations

import dataclasses
import itertools
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from nacl.signing import SigningKey

from consensus.messages import seal_bytes
from consensus.quorum import quorum
from consensus.config import ReplicaConfig
from consensus.replica import Replica
from node.chain.block import Block, encode_certificate
from node.chain.crypto import NodeCrypto
from node.pipeline.driver import Driver
from node.chain.genesis import Genesis, Member
from node.chain.ledger import Ledger
from node.txpool.mempool import Mempool
from node.ops.metrics import Metrics
from node.chain.candidate import Candidate
from node.chain.proposal import build_block
from node.chain.tx import Transaction, sign_tx
from storage.chain import ChainStore
from storage.memory import MemoryStore

Certificate = tuple[tuple[bytes, bytes], ...]
_nonces = itertools.count(1)


@dataclass
class Consortium:
    chain_id: str
    keys: list[SigningKey]
    client: SigningKey
    genesis: Genesis

    @property
    def validators(self) -> tuple[bytes, ...]:
        return tuple(bytes(k.verify_key) for k in self.keys)

    def tx(self, key: str, value: bytes = b"v", *, signer: SigningKey | None = None) -> Transaction:
        return sign_tx(signer or self.client, self.chain_id, "kv", "put", {"key": key, "value": value}, next(_nonces))

    def ledger(self) -> Ledger:
        return Ledger(ChainStore(MemoryStore()), self.genesis)

    def seal(self, block_hash: bytes, signers: Sequence[SigningKey] | None = None) -> Certificate:
        signers = self.keys[: quorum(len(self.keys))] if signers is None else signers
        return tuple((bytes(k.verify_key), k.sign(seal_bytes(block_hash)).signature) for k in signers)


def consortium(validators: int = 4, chain_id: str = "shell-test", addresses: Sequence[str] = ()) -> Consortium:
    keys = [SigningKey.generate() for _ in range(validators)]
    client = SigningKey.generate()
    addresses = list(addresses) or [""] * validators
    members = tuple(Member(f"v{i}", bytes(k.verify_key), addresses[i]) for i, k in enumerate(keys))
    genesis = Genesis(chain_id, 0, members, (Member("client", bytes(client.verify_key)),), ())
    return Consortium(chain_id, keys, client, genesis)


def build(c: Consortium, ledger: Ledger, txs: Sequence[Transaction]) -> Candidate:
    return build_block(ledger, txs, c.validators[0], ledger.last_time_ms + 1000)


def grow(c: Consortium, ledger: Ledger, blocks: int, txs_per_block: int = 2) -> None:
    """Commits `blocks` blocks of kv puts, each sealed by a quorum."""
    for _ in range(blocks):
        candidate = build(c, ledger, [c.tx(secrets.token_hex(4)) for _ in range(txs_per_block)])
        ledger.commit(candidate.block, candidate.txs, candidate.execution, c.seal(candidate.block_hash))


def raw_block(ledger: Ledger, height: int) -> tuple[bytes, bytes]:
    block, certificate = ledger.store.load_block(height), ledger.store.load_certificate(height)
    assert block is not None and certificate is not None
    return block, certificate


def reheader(block: Block, **changes: Any) -> Block:
    return Block(dataclasses.replace(block.header, **changes), block.txs)


def sealed(c: Consortium, block: Block, signers: Sequence[SigningKey] | None = None) -> tuple[bytes, bytes]:
    return block.encode(), encode_certificate(c.seal(block.header.hash(), signers))


async def run_inline(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


def driver_for(c: Consortium, ledger: Ledger, index: int, mempool_txs_max: int = 100) -> Driver:
    """A Driver for validator `index` over `ledger`, running storage calls inline."""
    config = ReplicaConfig(c.chain_id, c.validators, round_timeout_ms=1000)
    replica = Replica(config, NodeCrypto(c.keys[index]), ledger.height + 1)
    return Driver(replica, ledger, Mempool(mempool_txs_max), Metrics(), block_txs_max=10, run_blocking=run_inline)


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, poll_s: float = 0.01) -> None:
    """Polls `condition` until it holds; TooSlowError after `timeout_s`."""
    with trio.fail_after(timeout_s):
        while not condition():
            await trio.sleep(poll_s)
