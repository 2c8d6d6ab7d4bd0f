"""Catch-up: a node that is behind fetches committed blocks with their certificates from peers.

Peers announce their height after every commit. A node below the highest
announced height asks one peer at a time for the next blocks and hands each
to the driver, whose pipeline checks its certificate, re-executes it to the
header's state root and commits it (node/chain/block_check.py). It does not
take part in consensus for heights its peers have already decided.

Heights count only as the validators of the node's next height tell them, and
f+1 of them are trusted, f from the size of that set: each block applied may
change it, so a node catching up across membership changes follows them in
order. Blocks are served to any peer, observers included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
import trio

from consensus.quorum import fault_tolerance
from node.chain.candidate import BlockInvalid
from node.chain.ledger import BlockPruned, Ledger
from node.p2p.outbox import PeerOutbox
from node.p2p.wire import Blocks, GetBlocks, Status, encode
from node.pipeline.driver import Driver, Wakeup
from storage.kv import StoreCorrupt

log = logging.getLogger("alliance.sync")

BLOCKS_PER_REQUEST = 64
# One block behind is the normal state of a validator a moment after the others
# committed; fetch that block only if consensus has not delivered it by then.
ONE_BEHIND_GRACE_S = 0.5
RESPONSE_BYTES_MAX = 8 * 1024 * 1024
REQUEST_TIMEOUT_S = 10.0


class HeightAnnouncer:
    """Tells peers this node's height: all of them after each commit, one as its session opens."""

    def __init__(self, ledger: Ledger, outbox: PeerOutbox) -> None:
        self.ledger = ledger
        self.outbox = outbox

    def announce(self, peer: bytes | None = None) -> None:
        """Tells one peer, or all, our height."""
        frame = encode(Status(self.ledger.height))
        if peer is None:
            self.outbox.broadcast(frame)
        else:
            self.outbox.send(peer, frame)


class Syncer:
    def __init__(
        self,
        ledger: Ledger,
        outbox: PeerOutbox,
        driver: Driver,
        wanted: Wakeup,
        on_store_damaged: Callable[[StoreCorrupt], object],
    ) -> None:
        self.ledger = ledger
        self.outbox = outbox
        self.driver = driver  # commits what is fetched
        self.wanted = wanted  # set when a peer is ahead, or by the driver when consensus cannot go on without blocks
        self.on_store_damaged = on_store_damaged  # stops the node
        # Validators' heights. Believed: a peer whose claim was not backed is dropped.
        self.peer_heights: dict[bytes, int] = {}
        self.reported: dict[bytes, int] = {}  # as told, believed or not
        self._waiting_for: bytes | None = None
        self._fetching = False
        self._responses, self._received = trio.open_memory_channel[tuple[tuple[bytes, bytes], ...]](1)

    def _validators(self) -> tuple[bytes, ...]:
        return self.ledger.members(self.ledger.height + 1).validator_keys

    def _counted(self, heights: dict[bytes, int]) -> dict[bytes, int]:
        """The heights of the connected validators of the next height."""
        return {p: heights[p] for p in self._validators() if p in heights and self.outbox.connected(p)}

    @property
    def best_height(self) -> int:
        """The highest height a connected validator has announced."""
        return max(self._counted(self.peer_heights).values(), default=0)

    @property
    def reported_height(self) -> int:
        """The highest height f+1 connected validators each report (so an honest one did), whether or
        not this node could apply their blocks: the gap it shows when it cannot."""
        heights = sorted(self._counted(self.reported).values(), reverse=True)
        needed = fault_tolerance(len(self._validators())) + 1
        return heights[needed - 1] if len(heights) >= needed else 0

    @property
    def peers_height(self) -> int:
        """The height the peers are at, as far as this node can tell: also when it refuses their blocks."""
        return max(self.best_height, self.reported_height)

    @property
    def syncing(self) -> bool:
        return self._fetching or self.best_height > self.ledger.height + 1

    # ---- frames from peers -----------------------------------------------------------

    def on_status(self, peer: bytes, status: Status) -> None:
        if peer not in self._validators():
            return  # an observer's height is no one's to act on
        self.peer_heights[peer] = self.reported[peer] = status.height
        if status.height > self.ledger.height:
            self.wanted.set()

    def on_get_blocks(self, peer: bytes, request: GetBlocks) -> None:
        try:
            items = self._stored_blocks(request.start, min(request.count, BLOCKS_PER_REQUEST))
        except BlockPruned:
            items = ()  # below this node's base (storage.retain_blocks): it has none to give
        except StoreCorrupt as exc:
            self.on_store_damaged(exc)  # a damaged store is not served
            return
        self.outbox.send(peer, encode(Blocks(items)))

    def _stored_blocks(self, start: int, count: int) -> tuple[tuple[bytes, bytes], ...]:
        items: list[tuple[bytes, bytes]] = []
        size = 0
        if max(start, 1) < self.ledger.base:
            return ()  # pruned, or before the snapshot this node started from: "don't have"
        for height in range(max(start, 1), min(start + count, self.ledger.height + 1)):
            block, certificate = self.ledger.stored_block(height)
            size += len(block) + len(certificate) + 16  # with room for framing
            if items and size > RESPONSE_BYTES_MAX:
                break
            items.append((block, certificate))
        return tuple(items)

    def on_blocks(self, peer: bytes, blocks: Blocks) -> None:
        if peer == self._waiting_for:
            self._waiting_for = None  # one answer per request: a second one is stale
            try:
                self._responses.send_nowait(blocks.blocks)
            except trio.WouldBlock:
                pass

    # ---- the catch-up loop -----------------------------------------------------------

    async def run(self) -> None:
        while True:
            await self.wanted.wait()
            if self.best_height == self.ledger.height + 1:
                await trio.sleep(ONE_BEHIND_GRACE_S)
            while self.best_height > self.ledger.height:
                self._fetching = True
                try:
                    fetched = await self._fetch_from(self._best_peer())
                finally:
                    self._fetching = False
                if not fetched and self.best_height > self.ledger.height:
                    continue  # that peer is no longer believed; another one may have the blocks
                if not fetched:
                    break

    def _best_peer(self) -> bytes:
        heights = self._counted(self.peer_heights)
        return max(heights, key=heights.__getitem__)

    async def _fetch_from(self, peer: bytes) -> bool:
        """Fetches and applies one batch from `peer`; False when it gave nothing usable."""
        self._waiting_for = peer
        self.outbox.send(peer, encode(GetBlocks(self.ledger.height + 1, BLOCKS_PER_REQUEST)))
        items: tuple[tuple[bytes, bytes], ...] = ()
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            items = await self._received.receive()
        self._waiting_for = None
        applied = 0
        for raw_block, raw_certificate in items:
            try:
                await self.driver.apply_synced(raw_block, raw_certificate)
            except BlockInvalid as exc:
                log.warning("event=sync_block_refused peer=%s reason=%r", peer.hex()[:16], str(exc))
                self.peer_heights.pop(peer, None)
                break
            applied += 1
        if applied:
            log.info("event=synced height=%d best=%d", self.ledger.height, self.best_height)
        elif self.ledger.height < self.peer_heights.get(peer, 0):
            self.peer_heights.pop(peer, None)  # its claim is not backed by blocks: stop believing it
        return applied > 0
