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

from consensus.messages import Signed, seal_bytes
from consensus.quorum import quorum
from consensus.config import ReplicaConfig
from consensus.replica import Replica
from node.chain.block import Block, encode_certificate
from node.chain.candidate import Candidate
from node.chain.crypto import NodeCrypto
from node.chain.genesis import Genesis
from node.chain.ledger import Ledger
from node.chain.membership import Member
from node.chain.proposal import build_block
from node.chain.tx import Transaction, sign_tx
from node.ops.metrics import Metrics
from node.pipeline.commit import CommitPipeline
from node.pipeline.driver import BlockingRunner, Driver, Inbox, Wakeup
from node.txpool.mempool import Mempool
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


class Peers:
    """Where a test driver's consensus messages go: kept, in order."""

    def __init__(self) -> None:
        self.broadcasts: list[Signed] = []
        self.sent: list[tuple[bytes, Signed]] = []

    def broadcast_consensus(self, signed: Signed) -> None:
        self.broadcasts.append(signed)

    def send_consensus(self, peer: bytes, signed: Signed) -> None:
        self.sent.append((peer, signed))


class Fetcher:
    """Peers that hold `holds` (add to it as a test goes on) and record what they were asked."""

    def __init__(self, holds: Sequence[Transaction] = ()) -> None:
        self.holds = {tx.hash: tx for tx in holds}
        self.asked: list[list[bytes]] = []

    async def fetch(self, hashes: list[bytes]) -> dict[bytes, Transaction]:
        if hashes:
            self.asked.append(hashes)
        return {h: self.holds[h] for h in hashes if h in self.holds}


class AllInline:
    """No gossip: a proposal carries every transaction whole."""

    def unsent(self, tx_hash: bytes) -> bool:
        return True


class NoTxLog:
    def forget(self, tx_hashes: list[bytes]) -> None:
        pass


def driver_over(
    replica: Replica,
    ledger: Ledger,
    *,
    mempool_txs_max: int = 100,
    block_txs_max: int = 10,
    peers: Peers | None = None,
    fetcher: Fetcher | None = None,
    sync_wanted: Wakeup | None = None,
    run_blocking: BlockingRunner = run_inline,
) -> Driver:
    """A Driver over `ledger`, its safety state in the ledger's store, without peers unless given some."""
    mempool, metrics = Mempool(mempool_txs_max), Metrics()
    pipeline = CommitPipeline(ledger, mempool, replica.me, block_txs_max)
    return Driver(replica, pipeline, mempool, Inbox(mempool, metrics), metrics, peers or Peers(), ledger.store,
                  fetcher or Fetcher(), AllInline(), NoTxLog(), sync_wanted or Wakeup(), on_committed=(),
                  run_blocking=run_blocking)


def driver_for(c: Consortium, ledger: Ledger, index: int, mempool_txs_max: int = 100,
               sync_wanted: Wakeup | None = None) -> Driver:
    """A Driver for validator `index` over `ledger`, running storage calls inline."""
    config = ReplicaConfig(c.chain_id, c.validators, round_timeout_ms=1000)
    replica = Replica(config, NodeCrypto(c.keys[index]), ledger.height + 1)
    return driver_over(replica, ledger, mempool_txs_max=mempool_txs_max, sync_wanted=sync_wanted)


def submit(driver: Driver, tx: Transaction) -> None:
    """Puts a verified transaction in the driver's mempool, as admission does; raises MempoolFull."""
    driver.mempool.add(tx)
    driver.inbox.transactions_pending()


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0, poll_s: float = 0.01) -> None:
    """Polls `condition` until it holds; TooSlowError after `timeout_s`."""
    with trio.fail_after(timeout_s):
        while not condition():
            await trio.sleep(poll_s)
