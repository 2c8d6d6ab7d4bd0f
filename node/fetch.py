"""Fetching the transactions a proposal names by hash that this node does not hold.

A proposer sends by hash the transactions its gossip brought everyone, so
normally every validator holds them all. One that does not (a gossip frame
dropped under load, a restart, a transaction still waiting for its signature
check here) asks every peer for the missing ones and checks what comes back
like any transaction it had never seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from node.peers import FOUND_TXS, GET_TXS, PeerNetwork, encode_frame
from node.proposal import BLOCK_TX_BYTES_MAX
from node.tx import Transaction, tx_hash_of

log = logging.getLogger("alliance.fetch")

# Hashes in one request: a block holds fewer transactions than this.
GET_TXS_HASHES_MAX = 100_000
FETCH_TIMEOUT_S = 0.5


@dataclass
class _Request:
    wanted: set[bytes]
    found: dict[bytes, bytes] = field(default_factory=dict)
    done: trio.Event = field(default_factory=trio.Event)


class TxFetcher:
    def __init__(self, network: PeerNetwork, lookup: Callable[[bytes], Transaction | None]) -> None:
        self.network = network
        self.lookup = lookup  # what this node holds, to answer peers
        self._requests: list[_Request] = []

    async def fetch(self, hashes: list[bytes], timeout_s: float = FETCH_TIMEOUT_S) -> dict[bytes, bytes]:
        """The encodings of as many of `hashes` as peers answer within `timeout_s`, by hash."""
        if not hashes:
            return {}
        request = _Request(set(hashes))
        self._requests.append(request)
        try:
            self.network.broadcast(encode_frame(GET_TXS, hashes[:GET_TXS_HASHES_MAX]))
            with trio.move_on_after(timeout_s):
                await request.done.wait()
        finally:
            self._requests.remove(request)
        log.info("event=txs_fetched wanted=%d found=%d", len(request.wanted), len(request.found))
        return request.found

    def on_get_txs(self, peer: bytes, fields: list[Any]) -> None:
        """Answers with the asked transactions this node holds, as many as fit a block's size."""
        hashes = fields[0] if fields and isinstance(fields[0], list) else []
        raws, size = [], 0
        for tx_hash in hashes[:GET_TXS_HASHES_MAX]:
            tx = self.lookup(tx_hash) if isinstance(tx_hash, bytes) else None
            if tx is None:
                continue
            size += len(tx.raw)
            if size > BLOCK_TX_BYTES_MAX:
                break
            raws.append(tx.raw)
        if raws:
            self.network.send(peer, encode_frame(FOUND_TXS, raws))

    def on_found_txs(self, peer: bytes, fields: list[Any]) -> None:
        """Keeps the answered transactions that a waiting request asked for: each under its own hash."""
        raws = fields[0] if fields and isinstance(fields[0], list) and self._requests else []
        for raw in raws:
            if not isinstance(raw, bytes):
                continue
            tx_hash = tx_hash_of(raw)
            for request in self._requests:
                if tx_hash in request.wanted:
                    request.found[tx_hash] = raw
                    if len(request.found) == len(request.wanted):
                        request.done.set()
