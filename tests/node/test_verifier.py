"""The verifier: one verdict per transaction, in order, on the event loop or however a batch is spread over threads."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import trio

from node.chain.tx import Transaction
from node.txpool.mempool import Mempool
from node.txpool.verifier import BAD_SIGNATURE, DUPLICATE, INLINE_TXS_MAX, OK, PART_TXS_MIN, Verifier
from tests.shell.chainkit import build, consortium

C = consortium(validators=1, chain_id="verifier-test")


def forged(tx: Transaction) -> Transaction:
    return dataclasses.replace(tx, signature=bytes(64))


@pytest.mark.parametrize("threads", [1, 2, 3])
async def test_verdicts_come_in_order_whatever_the_threads(threads: int) -> None:
    ledger, mempool = C.ledger(), Mempool(1000)
    committed = [C.tx(f"old{i}") for i in range(3)]
    candidate = build(C, ledger, committed)
    ledger.commit(candidate.block, candidate.txs, candidate.execution, C.seal(candidate.block_hash))
    pending = C.tx("pending")
    mempool.add(pending)
    fresh = [C.tx(f"k{i}") for i in range(4 * PART_TXS_MIN)]
    txs = [forged(tx) if i % 7 == 3 else tx for i, tx in enumerate(fresh)]
    txs[10:10] = committed
    txs.append(pending)
    expected = [DUPLICATE if tx in committed or tx is pending else BAD_SIGNATURE if tx.signature == bytes(64)
                else OK for tx in txs]

    verifier = Verifier(ledger, mempool, threads=threads)
    threads_seen: set[int] = set()
    together = threading.Barrier(threads, timeout=10)  # broken unless every part runs at the same time
    real = verifier._verdicts

    def recording(part: list[Transaction]) -> list[str]:
        threads_seen.add(threading.get_ident())
        together.wait()
        return real(part)

    verifier._verdicts = recording  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(verifier.run)
        assert await verifier.verify(txs) == expected
        nursery.cancel_scope.cancel()
    assert len(threads_seen) == threads  # the batch was split over every thread, all at once


async def test_callers_waiting_together_get_their_own_verdicts() -> None:
    ledger, mempool = C.ledger(), Mempool(1000)
    verifier = Verifier(ledger, mempool, threads=2)
    sizes = (("a", INLINE_TXS_MAX + 1), ("b", 2 * PART_TXS_MIN))
    batches = [[C.tx(f"{name}{i}") for i in range(size)] for name, size in sizes]
    batches[0][1] = forged(batches[0][1])
    batches[1][-1] = forged(batches[1][-1])
    results: list[list[str]] = [[], []]

    async def verify(i: int) -> None:
        results[i] = await verifier.verify(batches[i])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(verifier.run)
        async with trio.open_nursery() as callers:
            callers.start_soon(verify, 0)
            callers.start_soon(verify, 1)
        nursery.cancel_scope.cancel()
    assert results == [[OK, BAD_SIGNATURE] + [OK] * (INLINE_TXS_MAX - 1), [OK] * (2 * PART_TXS_MIN - 1) + [BAD_SIGNATURE]]


async def test_a_small_batch_is_checked_on_the_event_loop() -> None:
    ledger, mempool = C.ledger(), Mempool(1000)
    verifier = Verifier(ledger, mempool, threads=2)  # its run() is not started: no worker could answer
    txs = [C.tx(f"s{i}") for i in range(INLINE_TXS_MAX)]
    txs[5] = forged(txs[5])
    mempool.add(txs[7])
    threads_seen: set[int] = set()
    real = verifier._verdicts

    def recording(part: list[Transaction]) -> list[str]:
        threads_seen.add(threading.get_ident())
        return real(part)

    verifier._verdicts = recording  # type: ignore[method-assign]
    expected = [BAD_SIGNATURE if i == 5 else DUPLICATE if i == 7 else OK for i in range(len(txs))]
    assert await verifier.verify(txs) == expected
    assert threads_seen == {threading.get_ident()}
