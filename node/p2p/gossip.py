"""Transaction gossip: what a client submits to one node reaches every validator.

Validators are fully connected, so a node sends the transactions its clients
submitted to every validator of its next height, in batches (at most one frame
per GOSSIP_INTERVAL_S), and never relays what it received. Observers decide
nothing: they are sent none.
Received batches wait in a bounded queue for the admission task, so that a
burst of transactions never holds up the consensus messages behind it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import trio

from node.chain.tx import Transaction
from node.ops.metrics import Metrics
from node.p2p.outbox import PeerOutbox
from node.p2p.wire import Txs, encode
from node.txpool.admission import Admission, Refused
from node.txpool.mempool import MempoolFull

GOSSIP_INTERVAL_S = 0.02
GOSSIP_BATCH_TXS_MAX = 512
INCOMING_BATCHES_MAX = 256


class TxGossip:
    def __init__(self, outbox: PeerOutbox, admission: Admission, metrics: Metrics) -> None:
        self.outbox = outbox
        self.admission = admission
        self.metrics = metrics
        self._outgoing: list[Transaction] = []
        self._unsent: set[bytes] = set()
        self._wake = trio.Event()
        self._incoming_in, self._incoming_out = trio.open_memory_channel[tuple[bytes, ...]](INCOMING_BATCHES_MAX)

    def announce(self, tx: Transaction) -> None:
        """Queues a transaction this node admitted from a client."""
        self._outgoing.append(tx)
        self._unsent.add(tx.hash)
        self._wake.set()

    def greet(self, peer: bytes) -> None:
        """Sends a validator that just connected what this node acknowledged and is not committed yet.

        After either of the two restarted, those transactions would otherwise
        be this node's alone, and wait for one of its turns to propose.
        """
        if not self.outbox.is_validator(peer):
            return
        txlog = self.admission.txlog
        raws = txlog.pending() if txlog is not None else []
        for start in range(0, len(raws), GOSSIP_BATCH_TXS_MAX):
            self.outbox.send(peer, encode(Txs(tuple(raws[start:start + GOSSIP_BATCH_TXS_MAX]))))

    def unsent(self, tx_hash: bytes) -> bool:
        """Admitted from a client and not yet sent to the peers: a proposal must carry it whole."""
        return tx_hash in self._unsent

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_loop)
            nursery.start_soon(self._admit_loop)

    async def _send_loop(self) -> None:
        sent_at = -math.inf
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            # After a quiet spell what came goes at once (the latency of a lightly loaded chain); while
            # submissions keep coming, one frame per interval carries them (the cost of a loaded one).
            await trio.sleep_until(sent_at + GOSSIP_INTERVAL_S)
            sent_at = trio.current_time()
            while self._outgoing:
                batch, self._outgoing = self._outgoing[:GOSSIP_BATCH_TXS_MAX], self._outgoing[GOSSIP_BATCH_TXS_MAX:]
                self.outbox.broadcast_to_validators(encode(Txs(tuple(tx.raw for tx in batch))))
                self._unsent.difference_update(tx.hash for tx in batch)

    def on_txs(self, peer: bytes, batch: Txs) -> None:
        """Queues a batch a peer received from its clients; drops it when the queue is full."""
        try:
            self._incoming_in.send_nowait(batch.txs)
        except trio.WouldBlock:
            self.metrics.p2p_frames_dropped.inc()

    async def _admit_loop(self) -> None:
        async for raws in self._incoming_out:
            await self.admit(raws)

    async def admit(self, raws: Sequence[bytes]) -> None:
        """Admits a peer's batch through admission, whose verifier checks each signature once."""
        checked: list[Transaction] = []
        full = False
        try:
            for raw in raws:
                tx = self._checked(raw)
                if tx is not None:
                    checked.append(tx)
        except MempoolFull:
            full = True  # what was checked so far is still admitted, as far as it fits
        outcomes = await self.admission.admit(checked, from_peer=True)
        if full or any(isinstance(outcome, MempoolFull) for outcome in outcomes):
            self.metrics.txs_rejected.labels("mempool_full").inc()

    def _checked(self, raw: bytes) -> Transaction | None:
        try:
            return self.admission.check(raw, from_peer=True)
        except Refused:
            return None
