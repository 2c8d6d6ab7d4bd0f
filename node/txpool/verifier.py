"""Client signatures verified off the event loop, many per worker-thread call.

Verifying an Ed25519 signature costs about as much as everything else a node
does for a transaction. Doing it in the event loop would hold up consensus
messages behind every burst of submissions, so callers await the verdict while
one worker thread checks whole batches (libsodium releases the GIL). The
worker also asks the store whether a transaction was committed long ago: a
read that would otherwise wait for the GIL on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from node.chain.ledger import Ledger
from node.chain.tx import Transaction
from node.txpool.mempool import Mempool

BATCH_TXS_MAX = 1024


OK, BAD_SIGNATURE, DUPLICATE = "ok", "bad_signature", "duplicate"


class _Pending:
    __slots__ = ("txs", "verdicts", "done")

    def __init__(self, txs: Sequence[Transaction]) -> None:
        self.txs = txs
        self.verdicts: list[str] = []
        self.done = trio.Event()


class Verifier:
    def __init__(self, ledger: Ledger, mempool: Mempool) -> None:
        self.ledger = ledger
        self.mempool = mempool
        self._queue: list[_Pending] = []
        self._wake = trio.Event()
        self._limiter = trio.CapacityLimiter(1)

    def _verdict(self, tx: Transaction) -> str:
        # Verified meanwhile: a block brought it while it waited here (it is pending, or committed already).
        if self.mempool.seen(tx.hash) or self.ledger.committed_recently(tx.hash):
            return DUPLICATE
        if not tx.verify_signature():
            return BAD_SIGNATURE
        return DUPLICATE if self.ledger.has_tx(tx.hash) else OK

    def _verify_all(self, batch: list[_Pending]) -> None:
        for pending in batch:
            pending.verdicts = [self._verdict(tx) for tx in pending.txs]

    async def verify(self, txs: Sequence[Transaction]) -> list[str]:
        """One verdict per transaction, in order: OK, BAD_SIGNATURE or DUPLICATE."""
        if not txs:
            return []
        pending = _Pending(txs)
        self._queue.append(pending)
        self._wake.set()
        await pending.done.wait()
        return pending.verdicts

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._queue:
                batch, size = [], 0
                while self._queue and size < BATCH_TXS_MAX:
                    batch.append(self._queue.pop(0))
                    size += len(batch[-1].txs)
                await trio.to_thread.run_sync(self._verify_all, batch, limiter=self._limiter)
                for pending in batch:
                    pending.done.set()
