"""Pruning (`storage.retain_blocks`): after each commit, the oldest blocks beyond the retained window lose
their bodies, a bounded step at a time, in a worker thread beside the consensus loop.

A step prunes at most PRUNE_BLOCKS_PER_COMMIT blocks in one batch (Ledger.prune), so a node that turns
pruning on over a long chain works its way down over its next commits instead of stalling one. Once a
quarter of the retained window (at least PRUNE_BLOCKS_PER_COMMIT blocks) was pruned since the last time,
it has LevelDB compact the pruned key ranges (ChainStore.compact): deleted keys free their disk space only
when their tables are rewritten, so what was deleted and not yet freed stays under a quarter of the window.

With an archive directory (`storage.archive_dir`), blocks are archived before they are pruned: when the
next blocks to prune are not archived yet, a step first appends a segment of up to SEGMENT_BLOCKS of them
(node/disk/archive.py), and prunes only what the archive holds; an archive it cannot write stops pruning
(logged once a minute) rather than losing blocks.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import trio

from node.chain.ledger import Ledger
from node.disk.archive import SEGMENT_BLOCKS, ArchiveError, export, load_manifest
from node.ops.ratelog import RateLog
from node.pipeline.driver import BlockingRunner, Wakeup

log = logging.getLogger("alliance.prune")

PRUNE_BLOCKS_PER_COMMIT = 64


class Pruner:
    def __init__(self, ledger: Ledger, retain_blocks: int, archive: Path | None,
                 run_blocking: BlockingRunner = trio.to_thread.run_sync) -> None:
        self.ledger = ledger
        self.retain_blocks = retain_blocks  # > 0
        self.archive = archive  # where blocks go before they are pruned
        self.faults = RateLog(log, logging.ERROR)
        self.run_blocking = run_blocking
        self._wanted = Wakeup()
        self.compact_every = max(PRUNE_BLOCKS_PER_COMMIT, retain_blocks // 4)
        self._since_compaction = 0

    def committed(self, height: int) -> None:
        """A follower of the driver's commits: wakes the pruning task."""
        self._wanted.set()

    async def run(self) -> None:
        while True:
            await self._wanted.wait()
            await self.run_blocking(self.step)

    def step(self) -> int:
        """Prunes what lies below the retained window (at most PRUNE_BLOCKS_PER_COMMIT blocks) and compacts
        when due; returns how many blocks it pruned."""
        below = self.ledger.height - self.retain_blocks + 1
        if self.archive is not None and below > self.ledger.base:
            below = min(below, self._archived() + 1)
        pruned = self.ledger.prune(below, PRUNE_BLOCKS_PER_COMMIT)
        self._since_compaction += pruned
        if pruned:
            log.debug("event=blocks_pruned count=%d base=%d", pruned, self.ledger.base)
        if self._since_compaction >= self.compact_every:
            started = time.monotonic()
            self.ledger.store.compact()
            log.info("event=store_compacted base=%d pruned=%d seconds=%.3f", self.ledger.base,
                     self._since_compaction, time.monotonic() - started)
            self._since_compaction = 0
        return pruned

    def _archived(self) -> int:
        """The highest archived height, after appending a segment when the archive is behind the base."""
        assert self.archive is not None
        try:
            manifest = load_manifest(self.archive)
            last = 0 if manifest is None else manifest.last
            if last < self.ledger.base:
                tip = self.ledger.height
                _, last = export(self.ledger.store, self.ledger.genesis, self.archive, None,
                                 min(tip, max(last, self.ledger.base - 1) + SEGMENT_BLOCKS))
                log.info("event=blocks_archived last=%d archive=%s", last, self.archive)
            return last
        except (ArchiveError, OSError) as exc:
            self.faults.log(f"event=archive_failed archive={self.archive} reason={str(exc)!r}")
            return 0
