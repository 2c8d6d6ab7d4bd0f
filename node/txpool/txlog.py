"""The mempool log: what a client's `send_tx` was told is accepted survives a crash of this node.

Transactions admitted from clients are appended to a segment file and synced
before their `send_tx` is answered. All the calls that arrive while one sync
runs share the next one (group commit). A small write is synced on the event
loop, as the safety file's are: a worker thread's hand-off would cost more, on
the path of every acknowledgement; a large one in a worker thread, so the
event loop goes on serving. Gossip and blocks bring no records: the node that
answered a client keeps that client's transactions.

A record is `length (u32) | crc32 (u32) | the transaction's bytes`. Committed
transactions are forgotten in memory; once the newest segment has grown past
its bound the log starts a new one holding only the live (uncommitted)
records and deletes the older ones, so the files stay within a few MiB plus
about four times the size of the live records. At start the node reads every
segment back, re-admits what is not committed yet (with every admission
check, signature included) and starts a fresh segment with it.

A record cut short at the end of the newest segment is a write a crash
interrupted: that tail is cut off. Any other bad record is damage, and the
node refuses to start, naming the file (see docs/architecture.md).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import trio

from node.chain.tx import TX_BYTES_MAX, Transaction
from node.disk.filesync import sync_directory, write_all
from node.errors import AllianceError

log = logging.getLogger("alliance.txlog")
SEGMENT_BYTES = 4 * 1024 * 1024
INLINE_WRITE_BYTES_MAX = 16 * 1024  # a larger write is synced in a worker thread
_HEADER = struct.Struct(">II")
_SUFFIX = ".txlog"


class TxLogError(AllianceError):
    """The mempool log cannot be read or written."""


class TxLogDamaged(TxLogError):
    """A segment of the mempool log holds a bad record before its end."""


def record(raw: bytes) -> bytes:
    return _HEADER.pack(len(raw), zlib.crc32(raw)) + raw


def read_segment(path: Path, newest: bool) -> list[bytes]:
    """The transactions a segment holds; cuts off a torn tail of the newest, raises TxLogDamaged for other damage."""
    data = path.read_bytes()
    raws, offset = [], 0
    while offset < len(data):
        raw, why = _record_at(data, offset)
        if raw is None:
            if newest and _torn_tail(data, offset):
                _truncate(path, offset)  # so that the tail is not in the middle once a newer segment exists
                break
            raise TxLogDamaged(
                f"mempool log {path} is damaged at byte {offset} ({why}); it may hold acknowledged "
                "transactions that are not committed yet: move the file away to start without them"
            )
        raws.append(raw)
        offset += _HEADER.size + len(raw)
    return raws


def _truncate(path: Path, size: int) -> None:
    with path.open("r+b") as f:
        f.truncate(size)
        os.fsync(f.fileno())


def _record_at(data: bytes, offset: int) -> tuple[bytes | None, str]:
    if offset + _HEADER.size > len(data):
        return None, "record header cut short"
    length, crc = _HEADER.unpack_from(data, offset)
    if not 0 < length <= TX_BYTES_MAX:
        return None, f"record length {length}"
    raw = data[offset + _HEADER.size:offset + _HEADER.size + length]
    if len(raw) < length:
        return None, "record cut short"
    if zlib.crc32(raw) != crc:
        return None, "checksum mismatch"
    return raw, ""


def _torn_tail(data: bytes, offset: int) -> bool:
    """The bad record at `offset` is the last write, cut short by a crash: nothing but zeros follows it.

    A kill leaves a prefix of the last write; a power loss may also leave the
    file's end zero-filled.
    """
    end = offset + _HEADER.size
    if len(data) >= end:
        length, _ = _HEADER.unpack_from(data, offset)
        if 0 < length <= TX_BYTES_MAX:
            end += length
    return not data[end:].strip(b"\0")


class _Sync:
    """One group commit: every append that waits for it shares its outcome."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: OSError | None = None


class TxLog:
    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._live: dict[bytes, bytes] = {}  # tx hash -> bytes: appended and not committed
        self._records: list[bytes] = []  # appended, waiting for the next sync
        self._next = _Sync()
        self._wake = trio.Event()
        self._limiter = trio.CapacityLimiter(1)
        self._failing: OSError | None = None
        self._fd = -1
        self._index = 0
        self._segment_bytes_written = 0
        self._segment_start_bytes = 0  # the live records a segment started with

    def __len__(self) -> int:
        return len(self._live)

    # ---- start ----------------------------------------------------------------------

    def recover(self) -> list[bytes]:
        """The transactions of every segment, oldest first (duplicates possible); creates the directory."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            segments = self._segments()
            raws = [raw for i, path in enumerate(segments) for raw in read_segment(path, i == len(segments) - 1)]
        except OSError as exc:
            raise TxLogError(f"cannot read mempool log {self.directory}: {exc}") from None
        self._index = int(segments[-1].stem) if segments else 0
        return raws

    async def start(self, recovered: Sequence[Transaction]) -> None:
        """Keeps the re-admitted transactions in a fresh segment and deletes the segments they came from."""
        self._live.update((tx.hash, tx.raw) for tx in recovered)
        try:
            await trio.to_thread.run_sync(self._rotate, list(self._live.values()), limiter=self._limiter)
        except OSError as exc:
            raise TxLogError(f"cannot write mempool log {self.directory}: {exc}") from None

    def _segments(self) -> list[Path]:
        found = [p for p in self.directory.iterdir() if p.suffix == _SUFFIX and p.stem.isdigit()]
        return sorted(found, key=lambda p: int(p.stem))

    # ---- appending --------------------------------------------------------------------

    async def append(self, txs: Sequence[Transaction]) -> None:
        """Returns once `txs` are synced to disk; raises TxLogError if they could not be."""
        if not txs:
            return
        for tx in txs:
            self._live[tx.hash] = tx.raw
            self._records.append(record(tx.raw))
        sync = self._next
        self._wake.set()
        await sync.done.wait()
        if sync.error is not None:
            self.forget(tx.hash for tx in txs)  # not acknowledged
            raise TxLogError(f"cannot write mempool log {self.directory}: {sync.error}")

    def pending(self) -> list[bytes]:
        """The transactions appended and not committed, oldest first."""
        return list(self._live.values())

    def forget(self, tx_hashes: Iterable[bytes]) -> None:
        """Committed (or refused after all): a rotation no longer keeps them."""
        for tx_hash in tx_hashes:
            self._live.pop(tx_hash, None)

    async def run(self) -> None:
        """The writer: one write and one sync for all the records appended since the last one."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._records:
                sync, self._next = self._next, _Sync()
                data, self._records = b"".join(self._records), []
                try:
                    if len(data) <= INLINE_WRITE_BYTES_MAX:
                        self._write(data)
                    else:
                        await trio.to_thread.run_sync(self._write, data, limiter=self._limiter)
                except OSError as exc:
                    sync.error = exc
                self._report(sync.error)
                sync.done.set()
                if self._segment_bytes_written >= self.segment_bytes + 2 * self._segment_start_bytes:
                    await self._rotate_now()

    def _report(self, error: OSError | None) -> None:
        """Logs when writing starts failing and when it works again, not once per sync."""
        if (error is None) == (self._failing is None):
            return
        if error is not None:
            log.error("event=txlog_write_failed dir=%s error=%r", self.directory, str(error))
        else:
            log.warning("event=txlog_write_recovered dir=%s", self.directory)
        self._failing = error

    async def _rotate_now(self) -> None:
        try:
            await trio.to_thread.run_sync(self._rotate, list(self._live.values()), limiter=self._limiter)
        except OSError as exc:  # the current segment goes on growing; the next sync tries again
            log.warning("event=txlog_rotate_failed dir=%s error=%r", self.directory, str(exc))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # ---- in the worker thread ------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        try:
            write_all(self._fd, data)
            os.fdatasync(self._fd)
        except OSError:
            # A part written (the disk full, say) would be a bad record before the next ones: cut it off.
            os.ftruncate(self._fd, self._segment_bytes_written)
            raise
        self._segment_bytes_written += len(data)

    def _rotate(self, live: list[bytes]) -> None:
        """A new segment with the live records, synced, then the older segments deleted."""
        older = self._segments()
        path = self.directory / f"{self._index + 1:08d}{_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            data = b"".join(record(raw) for raw in live)
            write_all(fd, data)
            os.fsync(fd)
            sync_directory(self.directory)
        except BaseException:
            os.close(fd)
            raise
        self.close()
        self._fd, self._index = fd, self._index + 1
        self._segment_bytes_written = self._segment_start_bytes = len(data)
        for old in older:
            old.unlink()
        sync_directory(self.directory)
