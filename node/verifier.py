"""Client signatures verified off the event loop, many per worker-thread call.

Verifying an Ed25519 signature costs about as much as everything else a node
does for a transaction. Doing it in the event loop would hold up consensus
messages behind every burst of submissions, so callers await the verdict while
one worker thread checks whole batches (libsodium releases the GIL).
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from node.tx import Transaction

BATCH_TXS_MAX = 1024


class _Pending:
    __slots__ = ("txs", "verdicts", "done")

    def __init__(self, txs: Sequence[Transaction]) -> None:
        self.txs = txs
        self.verdicts: list[bool] = []
        self.done = trio.Event()


def _verify_all(batch: list[_Pending]) -> None:
    for pending in batch:
        pending.verdicts = [tx.verify_signature() for tx in pending.txs]


class Verifier:
    def __init__(self) -> None:
        self._queue: list[_Pending] = []
        self._wake = trio.Event()
        self._limiter = trio.CapacityLimiter(1)

    async def verify(self, txs: Sequence[Transaction]) -> list[bool]:
        """One verdict per transaction, in order."""
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
                await trio.to_thread.run_sync(_verify_all, batch, limiter=self._limiter)
                for pending in batch:
                    pending.done.set()
