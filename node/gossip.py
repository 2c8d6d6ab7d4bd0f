"""Transaction gossip: what a client submits to one node reaches every validator.

Validators are fully connected, so a node sends the transactions its clients
submitted to every peer, in batches, and never relays what it received.
"""

from __future__ import annotations

from typing import Any

import trio

from node.admission import Admission, Refused
from node.driver import Driver
from node.mempool import MempoolFull
from node.metrics import Metrics
from node.peers import TXS, PeerNetwork, encode_frame
from node.tx import Transaction

GOSSIP_INTERVAL_S = 0.005
GOSSIP_BATCH_TXS_MAX = 512


class TxGossip:
    def __init__(self, network: PeerNetwork, admission: Admission, driver: Driver, metrics: Metrics) -> None:
        self.network = network
        self.admission = admission
        self.driver = driver
        self.metrics = metrics
        self._outgoing: list[bytes] = []
        self._wake = trio.Event()

    def announce(self, tx: Transaction) -> None:
        """Queues a transaction this node admitted from a client."""
        self._outgoing.append(tx.raw)
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await trio.sleep(GOSSIP_INTERVAL_S)  # let a burst of submissions share one frame
            while self._outgoing:
                batch, self._outgoing = self._outgoing[:GOSSIP_BATCH_TXS_MAX], self._outgoing[GOSSIP_BATCH_TXS_MAX:]
                self.network.broadcast(encode_frame(TXS, batch))

    def on_txs(self, peer: bytes, fields: list[Any]) -> None:
        """Admits transactions a peer received from its clients; each signature is verified once, here."""
        raws = fields[0] if fields and isinstance(fields[0], list) else []
        for raw in raws:
            if not isinstance(raw, bytes):
                continue
            try:
                self.driver.submit(self.admission.check(raw))
            except Refused:
                continue
            except MempoolFull:
                self.metrics.txs_rejected.labels("mempool_full").inc()
                return
