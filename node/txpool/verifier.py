"""Client signatures verified off the event loop, many per worker-thread call.

Verifying an Ed25519 signature costs about as much as everything else a node
does for a transaction. Doing it in the event loop would hold up consensus
messages behind every burst of submissions, so callers await the verdict while
worker threads check whole batches: libsodium releases the GIL, so a batch
split over one thread per core is checked on every core. A small batch (a
lightly loaded chain's) is checked on the loop instead: there the hand-off to
a worker and back would cost more than its signatures. The workers also ask
the store whether a transaction was committed long ago: a read that would
otherwise wait for the GIL on the event loop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import trio

from node.chain.ledger import Ledger
from node.chain.tx import Transaction
from node.txpool.mempool import Mempool

BATCH_TXS_MAX = 1024
THREADS = os.cpu_count() or 1
PART_TXS_MIN = 32  # a smaller batch is not worth a second thread's hand-off
# A batch this small is checked on the event loop when nothing waits for the workers: on a busy machine
# a worker thread's hand-off and wake-up cost more than its signatures, on the path of its latency
# (at 1,000 tx/s, 20 per batch, about 1 ms per hop).
INLINE_TXS_MAX = 32


OK, BAD_SIGNATURE, DUPLICATE = "ok", "bad_signature", "duplicate"


class _Pending:
    __slots__ = ("txs", "verdicts", "done")

    def __init__(self, txs: Sequence[Transaction]) -> None:
        self.txs = txs
        self.verdicts: list[str] = []
        self.done = trio.Event()


class Verifier:
    def __init__(self, ledger: Ledger, mempool: Mempool, threads: int = THREADS) -> None:
        self.ledger = ledger
        self.mempool = mempool
        self.threads = threads
        self._queue: list[_Pending] = []
        self._wake = trio.Event()
        self._limiter = trio.CapacityLimiter(threads)

    def _verdict(self, tx: Transaction) -> str:
        # Verified meanwhile: a block brought it while it waited here (it is pending, or committed already).
        if self.mempool.seen(tx.hash) or self.ledger.committed_recently(tx.hash):
            return DUPLICATE
        if not tx.verify_signature():
            return BAD_SIGNATURE
        return DUPLICATE if self.ledger.has_tx(tx.hash) else OK

    def _verdicts(self, txs: Sequence[Transaction]) -> list[str]:
        return [self._verdict(tx) for tx in txs]

    async def verify(self, txs: Sequence[Transaction]) -> list[str]:
        """One verdict per transaction, in order: OK, BAD_SIGNATURE or DUPLICATE."""
        if not txs:
            return []
        if len(txs) <= INLINE_TXS_MAX and not self._queue:
            return self._verdicts(txs)
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
                verdicts = await self._spread([tx for pending in batch for tx in pending.txs])
                start = 0
                for pending in batch:
                    pending.verdicts = verdicts[start:start + len(pending.txs)]
                    start += len(pending.txs)
                    pending.done.set()

    async def _spread(self, txs: list[Transaction]) -> list[str]:
        """The verdicts of `txs`, checked in as many parts at once as there are threads and work for them."""
        parts = max(1, min(self.threads, len(txs) // PART_TXS_MIN))
        if parts == 1:
            return await trio.to_thread.run_sync(self._verdicts, txs, limiter=self._limiter)
        step = -(-len(txs) // parts)
        results: list[list[str]] = [[] for _ in range(parts)]

        async def check(i: int) -> None:
            results[i] = await trio.to_thread.run_sync(self._verdicts, txs[i * step:(i + 1) * step],
                                                       limiter=self._limiter)

        async with trio.open_nursery() as nursery:
            for i in range(parts):
                nursery.start_soon(check, i)
        return [verdict for part in results for verdict in part]
