"""Verified transactions waiting for a block, in arrival order, bounded.

Clients are refused at `txs_max`. Transactions from peers (gossip, or brought
by a block proposal) may fill the pool up to twice that: another validator
accepted them and will propose them, and dropping one after its signature was
checked means checking it again when its block arrives.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from node.chain.tx import Transaction


class MempoolFull(Exception):
    """The mempool holds its maximum; the client should retry later."""


class Mempool:
    def __init__(self, txs_max: int) -> None:
        self.txs_max = txs_max
        self.peer_txs_max = 2 * txs_max
        self._txs: dict[bytes, Transaction] = {}

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._txs

    def get(self, tx_hash: bytes) -> Transaction | None:
        return self._txs.get(tx_hash)

    def full(self, from_peer: bool = False, reserved: int = 0) -> bool:
        """No room left; `reserved` counts transactions admitted that have yet to be added."""
        return len(self._txs) + reserved >= (self.peer_txs_max if from_peer else self.txs_max)

    def add(self, tx: Transaction, from_peer: bool = False) -> None:
        if self.full(from_peer):
            raise MempoolFull(f"mempool holds {len(self._txs)} transactions")
        self._txs[tx.hash] = tx

    def oldest(self, limit: int) -> list[Transaction]:
        return list(itertools.islice(self._txs.values(), limit))

    def remove(self, tx_hashes: Iterable[bytes]) -> None:
        for tx_hash in tx_hashes:
            self._txs.pop(tx_hash, None)
