"""Verified transactions waiting for a block, in arrival order, bounded: the one place they are kept.

Clients are refused at `txs_max`. Transactions from peers (gossip, or brought
by a block proposal) may fill the pool up to twice that: another validator
accepted them and will propose them, and dropping one after its signature was
checked means checking it again when its block arrives. Room can be reserved
for a transaction admitted but not added yet (a client's, while it is logged).
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
        self._reserved: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._txs

    def get(self, tx_hash: bytes) -> Transaction | None:
        return self._txs.get(tx_hash)

    def seen(self, tx_hash: bytes) -> bool:
        """Pending, or admitted with its room reserved."""
        return tx_hash in self._txs or tx_hash in self._reserved

    def full(self, from_peer: bool = False) -> bool:
        """No room left for another admission: pending and reserved transactions fill the share."""
        return len(self._txs) + len(self._reserved) >= self._share(from_peer)

    def reserve(self, tx_hash: bytes) -> None:
        """Keeps room for an admitted transaction until `release`; a second copy is seen meanwhile."""
        self._reserved.add(tx_hash)

    def release(self, tx_hashes: Iterable[bytes]) -> None:
        self._reserved.difference_update(tx_hashes)

    def add(self, tx: Transaction, from_peer: bool = False) -> None:
        """Raises MempoolFull when pending transactions fill the share (its reserved room was its own)."""
        if len(self._txs) >= self._share(from_peer):
            raise MempoolFull(f"mempool holds {len(self._txs)} transactions")
        self._txs[tx.hash] = tx

    def keep(self, txs: Iterable[Transaction]) -> None:
        """Transactions a block brought before their gossip, as a peer's, while there is room."""
        for tx in txs:
            if tx.hash not in self._txs:
                try:
                    self.add(tx, from_peer=True)
                except MempoolFull:
                    return

    def oldest(self, limit: int) -> list[Transaction]:
        return list(itertools.islice(self._txs.values(), limit))

    def drop_senders_outside(self, authorised: frozenset[bytes]) -> list[bytes]:
        """Removes the transactions of senders no longer authorised; returns their hashes."""
        dropped = [h for h, tx in self._txs.items() if tx.sender not in authorised]
        self.remove(dropped)
        return dropped

    def remove(self, tx_hashes: Iterable[bytes]) -> None:
        for tx_hash in tx_hashes:
            self._txs.pop(tx_hash, None)

    def _share(self, from_peer: bool) -> int:
        return self.peer_txs_max if from_peer else self.txs_max
