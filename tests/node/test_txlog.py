"""The mempool log: synced before an acknowledgement, shared syncs, torn tails, damage, rotation, restart."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack

import pytest
import trio

from node.chain.tx import Transaction, tx_hash_of
from node.p2p.gossip import GOSSIP_BATCH_TXS_MAX, TxGossip
from node.p2p.wire import TXS
from node.txpool.admission import DUPLICATE, Admission, Refused
from node.txpool.mempool import MempoolFull
from node.txpool import txlog
from node.txpool.txlog import INLINE_WRITE_BYTES_MAX, TxLog, TxLogDamaged, read_segment, record
from node.txpool.verifier import Verifier
from tests.shell.chainkit import build, consortium, driver_for, wait_until

C = consortium(validators=1, chain_id="txlog-test")


def txs(n: int, prefix: str = "k") -> list[Transaction]:
    return [C.tx(f"{prefix}{i}") for i in range(n)]


@asynccontextmanager
async def running(directory: Path, segment_bytes: int = 1 << 20) -> AsyncIterator[TxLog]:
    log = TxLog(directory, segment_bytes)
    log.recover()
    await log.start([])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(log.run)
        yield log
        nursery.cancel_scope.cancel()
    log.close()


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.txlog"))


def recovered_hashes(directory: Path) -> set[bytes]:
    return {tx_hash_of(raw) for raw in TxLog(directory).recover()} if segments(directory) else set()


class BlockingSync:
    """os.fdatasync that holds its first call until released, counting every call."""

    def __init__(self, real: Callable[[int], None]) -> None:
        self.real = real
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, fd: int) -> None:
        self.calls += 1
        if self.calls == 1:
            self.entered.set()
            self.release.wait(10)
        self.real(fd)

    async def release_after_cancel(self, scope: trio.CancelScope) -> None:
        """Cancels `scope` while the first sync is held, then lets the sync finish."""
        await wait_until(self.entered.is_set)
        scope.cancel()
        await trio.sleep(0.01)
        self.release.set()


def held_sync(monkeypatch: pytest.MonkeyPatch) -> BlockingSync:
    """os.fdatasync held as BlockingSync holds it, in a worker thread: every write goes to one (as a large
    one does), so the event loop serves meanwhile."""
    sync = BlockingSync(os.fdatasync)
    monkeypatch.setattr(os, "fdatasync", sync)
    monkeypatch.setattr(txlog, "INLINE_WRITE_BYTES_MAX", -1)
    return sync


async def test_a_small_write_is_synced_on_the_event_loop_a_large_one_in_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced_in: list[int] = []
    real = os.fdatasync

    def recording(fd: int) -> None:
        synced_in.append(threading.get_ident())
        real(fd)

    monkeypatch.setattr(os, "fdatasync", recording)
    small, large = txs(1, "small"), txs(1, "large")
    large_bytes = sum(len(record(tx.raw)) for tx in large)
    large = txs(INLINE_WRITE_BYTES_MAX // large_bytes + 1, "large")
    async with running(tmp_path / "log") as log:
        synced_in.clear()  # the start's rotation
        await log.append(small)
        await log.append(large)
    loop = threading.get_ident()
    assert synced_in[0] == loop and len(synced_in) == 2 and synced_in[1] != loop
    assert recovered_hashes(tmp_path / "log") == {tx.hash for tx in small + large}


async def test_appends_waiting_for_one_sync_share_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sync = held_sync(monkeypatch)
    first, rest = txs(1, "first"), txs(10, "rest")
    done: list[str] = []

    async def append(name: str, batch: list[Transaction]) -> None:
        await log.append(batch)
        done.append(name)

    async with running(tmp_path / "log") as log:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(append, "first", first)
            await wait_until(sync.entered.is_set)
            for i, tx in enumerate(rest):
                nursery.start_soon(append, f"rest{i}", [tx])
            await wait_until(lambda: len(log._records) == len(rest))
            assert done == []  # nobody is answered before its records are synced
            sync.release.set()
        assert sync.calls == 2 and len(done) == 11
    assert recovered_hashes(tmp_path / "log") == {tx.hash for tx in first + rest}


async def test_a_failed_sync_is_an_error_for_its_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(fd: int) -> None:
        raise OSError(28, "No space left on device")

    async with running(tmp_path / "log") as log:
        monkeypatch.setattr(os, "fdatasync", failing)
        with pytest.raises(Exception, match="No space left"):
            await log.append(txs(1))


def write_segment(path: Path, raws: list[bytes], tail: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(record(raw) for raw in raws) + tail)


@pytest.mark.parametrize("cut", [1, 7, 8, 20])
def test_a_record_cut_short_at_the_end_of_the_newest_segment_is_ignored(tmp_path: Path, cut: int) -> None:
    batch = txs(3)
    path = tmp_path / "00000001.txlog"
    write_segment(path, [tx.raw for tx in batch[:2]], record(batch[2].raw)[:cut])
    assert read_segment(path, newest=True) == [tx.raw for tx in batch[:2]]
    assert path.stat().st_size == sum(len(record(tx.raw)) for tx in batch[:2])  # cut off


def test_a_torn_tail_stays_harmless_when_a_crash_interrupts_the_next_start_too(tmp_path: Path) -> None:
    batch = txs(3)
    write_segment(tmp_path / "00000001.txlog", [batch[0].raw], record(batch[1].raw)[:10])
    assert TxLog(tmp_path).recover() == [batch[0].raw]
    write_segment(tmp_path / "00000002.txlog", [batch[0].raw], record(batch[2].raw)[:30])  # its fresh segment, torn
    assert TxLog(tmp_path).recover() == [batch[0].raw, batch[0].raw]


def test_a_zero_filled_tail_is_ignored(tmp_path: Path) -> None:
    batch = txs(2)
    path = tmp_path / "00000001.txlog"
    torn = bytearray(record(batch[1].raw))
    torn[20:] = bytes(len(torn) - 20)  # a power loss: the file grew, the last pages never came
    write_segment(path, [batch[0].raw], bytes(torn) + bytes(4096))
    assert read_segment(path, newest=True) == [batch[0].raw]


def test_a_bad_record_before_the_end_refuses_the_log_naming_the_file(tmp_path: Path) -> None:
    batch = txs(3)
    path = tmp_path / "00000001.txlog"
    write_segment(path, [tx.raw for tx in batch])
    data = bytearray(path.read_bytes())
    data[20] ^= 0xFF  # inside the first record
    path.write_bytes(bytes(data))
    with pytest.raises(TxLogDamaged, match=r"00000001\.txlog is damaged at byte 0 \(checksum mismatch\)"):
        read_segment(path, newest=True)


def test_a_torn_tail_in_an_older_segment_is_damage(tmp_path: Path) -> None:
    batch = txs(3)
    write_segment(tmp_path / "00000001.txlog", [batch[0].raw], record(batch[1].raw)[:10])
    write_segment(tmp_path / "00000002.txlog", [batch[2].raw])
    with pytest.raises(TxLogDamaged, match="00000001"):
        TxLog(tmp_path).recover()


async def test_rotation_keeps_only_live_records_and_bounds_the_files(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    live: list[Transaction] = []
    async with running(directory, segment_bytes=4096) as log:
        for round_ in range(40):
            batch = txs(10, f"r{round_}-")
            await log.append(batch)
            log.forget(tx.hash for tx in batch[1:])  # one in ten stays pending
            live.append(batch[0])
            # A rotation keeps what was live when it ran: perhaps the last batch too, committed just after.
            kept = sum(len(record(tx.raw)) for tx in live + batch)
            assert sum(p.stat().st_size for p in segments(directory)) <= 4096 + 4 * kept
        assert len(log) == len(live)
    assert len(segments(directory)) == 1
    recovered = recovered_hashes(directory)
    assert {tx.hash for tx in live} <= recovered
    assert len(recovered) < 400 / 2  # most committed records are gone


async def test_restart_readmits_only_what_is_not_committed_and_starts_a_fresh_segment(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    batch = txs(6)
    async with running(directory) as log:
        await log.append(batch)
    ledger = C.ledger()
    candidate = build(C, ledger, batch[:2])  # committed while the node was down, say by its peers
    ledger.commit(candidate.block, candidate.txs, candidate.execution, C.seal(candidate.block_hash))
    before = segments(directory)

    driver = driver_for(C, ledger, 0)
    log = TxLog(directory)
    admission = Admission(C.genesis, ledger, driver.mempool, Verifier(ledger, driver.mempool), driver.inbox, log)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(admission.verifier.run)
        raws = log.recover()
        pending = await admission.readmit(raws + raws[:1])  # a record twice: kept once
        await log.start(pending)
        nursery.cancel_scope.cancel()
    log.close()
    assert [tx.hash for tx in pending] == [tx.hash for tx in batch[2:]]
    assert [tx.hash for tx in driver.mempool.oldest(100)] == [tx.hash for tx in batch[2:]]
    after = segments(directory)
    assert len(after) == 1 and after[0] not in before
    assert recovered_hashes(directory) == {tx.hash for tx in batch[2:]}


async def test_an_admitted_clients_transaction_is_in_the_log_when_admit_returns(tmp_path: Path) -> None:
    ledger = C.ledger()
    driver = driver_for(C, ledger, 0)
    async with running(tmp_path / "log") as log:
        admission = Admission(C.genesis, ledger, driver.mempool, Verifier(ledger, driver.mempool), driver.inbox, log)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(admission.verifier.run)
            client, peer = txs(2, "who")
            await admission.admit([client])
            assert recovered_hashes(tmp_path / "log") == {client.hash}
            await admission.admit([peer], from_peer=True)  # the peer that answered its client keeps it
            nursery.cancel_scope.cancel()
        assert len(log) == 1


async def test_a_clients_transaction_enters_the_mempool_only_once_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = held_sync(monkeypatch)
    ledger = C.ledger()
    driver = driver_for(C, ledger, 0)
    tx, copy = txs(2, "sync")[0], None
    async with running(tmp_path / "log") as log:
        admission = Admission(C.genesis, ledger, driver.mempool, Verifier(ledger, driver.mempool), driver.inbox, log)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(admission.verifier.run)
            nursery.start_soon(admission.admit, [tx])
            await wait_until(sync.entered.is_set)
            assert tx.hash not in driver.mempool  # a block built now cannot hold it
            [copy] = await admission.admit([tx])  # the same again meanwhile: already on its way
            assert isinstance(copy, Refused) and copy.kind == DUPLICATE
            sync.release.set()
            await wait_until(lambda: tx.hash in driver.mempool)
            nursery.cancel_scope.cancel()


async def test_a_log_that_cannot_be_written_refuses_as_overloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fd: int) -> None:
        raise OSError(28, "No space left on device")

    ledger = C.ledger()
    driver = driver_for(C, ledger, 0)
    async with running(tmp_path / "log") as log:
        admission = Admission(C.genesis, ledger, driver.mempool, Verifier(ledger, driver.mempool), driver.inbox, log)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(admission.verifier.run)
            monkeypatch.setattr(os, "fdatasync", failing)
            [outcome] = await admission.admit(txs(1, "full"))
            assert isinstance(outcome, MempoolFull) and "No space left" in str(outcome)
            assert len(driver.mempool) == 0 and len(log) == 0
            monkeypatch.undo()
            [tx] = txs(1, "after")
            assert await admission.admit([tx]) == [tx]  # writing works again
            nursery.cancel_scope.cancel()


class SentFrames:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, list[Any]]] = []

    def send(self, peer: bytes, payload: bytes) -> None:
        self.sent.append((peer, msgpack.unpackb(payload, raw=False)))

    def is_validator(self, peer: bytes) -> bool:
        return True


async def test_a_peer_that_connects_is_sent_what_the_log_keeps(tmp_path: Path) -> None:
    ledger = C.ledger()
    driver = driver_for(C, ledger, 0)
    network = SentFrames()
    async with running(tmp_path / "log") as log:
        admission = Admission(C.genesis, ledger, driver.mempool, Verifier(ledger, driver.mempool), driver.inbox, log)
        gossip = TxGossip(network, admission, driver.metrics)  # type: ignore[arg-type]
        batch = txs(GOSSIP_BATCH_TXS_MAX + 2, "greet")
        await log.append(batch)
        log.forget([batch[0].hash])  # committed
        gossip.greet(b"p" * 32)
    assert [peer for peer, _ in network.sent] == [b"p" * 32] * 2
    assert [raw for _, frame in network.sent for raw in frame[1]] == [tx.raw for tx in batch[1:]]
    assert all(frame[0] == TXS for _, frame in network.sent)


async def test_a_client_gone_while_its_transaction_is_logged_still_leaves_it_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = held_sync(monkeypatch)
    ledger = C.ledger()
    driver = driver_for(C, ledger, 0)
    [tx] = txs(1, "gone")
    async with running(tmp_path / "log") as log:
        admission = Admission(C.genesis, ledger, driver.mempool, Verifier(ledger, driver.mempool), driver.inbox, log)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(admission.verifier.run)
            with trio.CancelScope() as request:
                nursery.start_soon(sync.release_after_cancel, request)
                await admission.admit([tx])
            assert tx.hash in driver.mempool and len(log) == 1  # logged and pending: it will be forgotten on commit
            nursery.cancel_scope.cancel()


async def test_a_write_that_fails_half_way_leaves_no_bad_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write, calls = os.write, []

    def half_then_full(fd: int, data: Any) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    first, second, third = txs(3, "half")
    async with running(tmp_path / "log") as log:
        await log.append([first])
        monkeypatch.setattr(os, "write", half_then_full)
        with pytest.raises(Exception, match="No space left"):
            await log.append([second])
        monkeypatch.undo()
        await log.append([third])
    [segment] = segments(tmp_path / "log")
    assert read_segment(segment, newest=False) == [first.raw, third.raw]
