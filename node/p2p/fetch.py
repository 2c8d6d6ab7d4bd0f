"""Fetching the transactions a proposal names by hash that this node does not hold.

A proposer sends by hash the transactions its gossip brought everyone, so
normally every validator holds them all. One that does not (a gossip frame
dropped under load, a restart, a transaction still waiting for its signature
check here) asks every validator for the missing ones and checks what comes back
like any transaction it had never seen. Every copy is checked before it is
kept, so a peer that answers first with a broken copy cannot stop a good one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from node.chain.proposal import BLOCK_TX_BYTES_MAX
from node.chain.tx import Transaction, TxError, tx_hash_of, verified_tx
from node.p2p.outbox import PeerOutbox
from node.p2p.wire import GET_TXS_HASHES_MAX, FoundTxs, GetTxs, encode

log = logging.getLogger("alliance.fetch")

FETCH_TIMEOUT_S = 0.5


@dataclass
class _Request:
    wanted: set[bytes]
    found: dict[bytes, Transaction] = field(default_factory=dict)
    arrived: list[tuple[bytes, bytes]] = field(default_factory=list)  # (tx hash, copy) not checked yet
    wake: trio.Event = field(default_factory=trio.Event)


class TxFetcher:
    def __init__(
        self,
        outbox: PeerOutbox,
        lookup: Callable[[bytes], Transaction | None],
        chain_id: str,
        run_blocking: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync,
    ) -> None:
        self.outbox = outbox
        self.lookup = lookup  # what this node holds, to answer peers
        self.chain_id = chain_id
        self.run_blocking = run_blocking  # signature checks off the event loop
        self._requests: list[_Request] = []

    async def fetch(self, hashes: list[bytes], timeout_s: float = FETCH_TIMEOUT_S) -> dict[bytes, Transaction]:
        """As many of `hashes` as peers send within `timeout_s`, checked (signature included), by hash."""
        if not hashes:
            return {}
        request = _Request(set(hashes))
        self._requests.append(request)
        try:
            self.outbox.broadcast_to_validators(encode(GetTxs(tuple(hashes[:GET_TXS_HASHES_MAX]))))
            with trio.move_on_after(timeout_s):
                while len(request.found) < len(request.wanted):
                    await request.wake.wait()
                    request.wake = trio.Event()
                    await self._check_arrived(request)
        finally:
            self._requests.remove(request)
        log.info("event=txs_fetched wanted=%d found=%d", len(request.wanted), len(request.found))
        return request.found

    async def _check_arrived(self, request: _Request) -> None:
        """Checks one arrived copy per transaction still lacking; other copies wait in case it fails."""
        first: dict[bytes, bytes] = {}
        spare: list[tuple[bytes, bytes]] = []
        for tx_hash, raw in request.arrived:
            if tx_hash in request.found:
                continue
            if tx_hash in first:
                spare.append((tx_hash, raw))
            else:
                first[tx_hash] = raw
        request.arrived = []
        for tx in await self.run_blocking(self._check_all, list(first.values())):
            if tx is not None and tx.hash in request.wanted:
                request.found.setdefault(tx.hash, tx)
        request.arrived = [(h, raw) for h, raw in spare if h not in request.found] + request.arrived
        if request.arrived:
            request.wake.set()

    def _check_all(self, raws: list[bytes]) -> list[Transaction | None]:
        checked: list[Transaction | None] = []
        for raw in raws:
            try:
                checked.append(verified_tx(raw, self.chain_id))
            except TxError:
                checked.append(None)
        return checked

    def on_get_txs(self, peer: bytes, request: GetTxs) -> None:
        """Answers with the asked transactions this node holds, as many as fit a block's size."""
        raws, size = [], 0
        for tx_hash in request.hashes:
            tx = self.lookup(tx_hash)
            if tx is None:
                continue
            size += len(tx.raw)
            if size > BLOCK_TX_BYTES_MAX:
                break
            raws.append(tx.raw)
        if raws:
            self.outbox.send(peer, encode(FoundTxs(tuple(raws))))

    def on_found_txs(self, peer: bytes, found: FoundTxs) -> None:
        """Hands the answered copies that a waiting request still lacks to it, to be checked there."""
        for raw in found.txs if self._requests else ():
            tx_hash = tx_hash_of(raw)
            for request in self._requests:
                if tx_hash in request.wanted and tx_hash not in request.found:
                    request.arrived.append((tx_hash, raw))
                    request.wake.set()
