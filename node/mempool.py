"""Verified transactions waiting for a block, in arrival order, bounded."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from node.tx import Transaction


class MempoolFull(Exception):
    """The mempool holds its maximum; the client should retry later."""


class Mempool:
    def __init__(self, txs_max: int) -> None:
        self.txs_max = txs_max
        self._txs: dict[bytes, Transaction] = {}

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._txs

    def get(self, tx_hash: bytes) -> Transaction | None:
        return self._txs.get(tx_hash)

    def full(self) -> bool:
        return len(self._txs) >= self.txs_max

    def add(self, tx: Transaction) -> None:
        if self.full():
            raise MempoolFull(f"mempool holds {self.txs_max} transactions")
        self._txs[tx.hash] = tx

    def oldest(self, limit: int) -> list[Transaction]:
        return list(itertools.islice(self._txs.values(), limit))

    def remove(self, tx_hashes: Iterable[bytes]) -> None:
        for tx_hash in tx_hashes:
            self._txs.pop(tx_hash, None)
