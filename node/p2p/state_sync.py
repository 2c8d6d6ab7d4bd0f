"""State sync: a node with an empty store (or one far behind the newest snapshot: node/server.py)
restores the state of a certified snapshot from its peers in place of what it holds, then catches
up by blocks from the height above it (docs/operations.md, "State sync").

It asks every peer it connects to for the snapshots it serves, takes the newest height offered,
fetches that snapshot's manifest and checks it against the genesis (node/chain/snapshot.py), then
fetches each non-empty chunk from the peers offering the height in turn, checking each against the
manifest's subtree root as it arrives. A peer that sends an invalid manifest or chunk is asked
nothing more; a chunk it lacks is asked of the next peer. FETCHERS chunks are asked at once (of
different peers), checked in worker processes (the check is pure and CPU-bound: the other cores do
it while this one writes), and written as they are checked, under a restoring marker; the height
pointer moves only once all of it is there.

It runs before the node's other parts exist, on a network of its own over the p2p listener, and
raises StateSyncFailed when no snapshot is offered within the timeout or none can be restored:
the node then catches up by blocks (from the genesis if the store was emptied for the restore).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio
from nacl.signing import SigningKey

from consensus.quorum import fault_tolerance
from node.chain.block import Header, header_from_wire
from node.chain.canonical import unpack
from node.chain.genesis import Genesis
from node.chain.ledger import Ledger
from node.chain.snapshot import (
    Manifest, SnapshotInvalid, VerifiedChunk, decode_manifest, verify_chunk, verify_manifest,
)
from node.chain.state_tree import EMPTY
from node.ops.metrics import Metrics
from node.p2p.outbox import PeerOutbox
from node.p2p.peers import RECONNECT_MAX_S, PeerNetwork
from node.p2p.wire import Chunk, GetChunk, GetManifest, GetSnapshots, ManifestFrame, Message, Snapshots, encode

log = logging.getLogger("alliance.sync")

# After the first offer, how long other peers have to make theirs (a newer height, say), unless all
# of them have: a peer redials a node that was down at least every RECONNECT_MAX_S.
OFFER_GRACE_S = RECONNECT_MAX_S + 1.0
# A chunk is asked of every peer offering it up to ROUNDS times, ROUND_PAUSE_S apart: a peer busy
# sending answers "don't have" (node/p2p/snapshot_server.py).
ROUNDS = 3
ROUND_PAUSE_S = 0.5
# Chunks asked and checked at once: at most this many (8 MiB at most each) are held.
FETCHERS = 4
CHECKER_IDLE_S = 10.0  # the worker processes stop this long after the last chunk


class StateSyncFailed(Exception):
    """No snapshot could be restored; the message says why."""


class _Reply:
    """A request's answer, once it came: None is "don't have" (or none in time)."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.data: bytes | None = None


class SnapshotClient:
    """Asks peers for a snapshot and restores it into the ledger's empty store."""

    def __init__(self, genesis: Genesis, ledger: Ledger, outbox: PeerOutbox, metrics: Metrics, timeout_s: float,
                 run_blocking: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync,
                 run_check: Callable[..., Awaitable[Any]] | None = None, above: int = 0,
                 before_replace: Callable[[], None] = lambda: None) -> None:
        self.genesis = genesis
        self.store = ledger.store  # restored into (what it holds is deleted first)
        self.above = above  # only snapshots of greater heights are restored
        self.before_replace = before_replace  # called before a store holding blocks is emptied
        self.outbox = outbox
        self.metrics = metrics  # chunks refused
        self.timeout_s = timeout_s  # for the first offer, and for each answer
        self.run_blocking = run_blocking  # the manifest's check and the writes, off the event loop
        self.run_check = run_check  # chunks' checks; None: in worker processes
        self.offers: dict[bytes, tuple[int, ...]] = {}
        self.banned: set[bytes] = set()  # sent an invalid manifest or chunk
        # Enough peers said they have none (f+1 of the genesis validators' count): there is no snapshot
        # to wait for, as when a new chain starts with every node empty.
        self.answers_enough = fault_tolerance(len(genesis.validators)) + 1
        self._offered = trio.Event()  # an offer came, or enough peers said they have none
        # Every other genesis validator answered: no need to wait out the grace for a newer offer.
        self.answers_all = max(1, len(genesis.validators) - 1)
        self._all_answered = trio.Event()
        self._asked: dict[tuple[bytes, int, int, int], _Reply] = {}  # (peer, kind, height, index)
        self.leaves: dict[int, bytes] = {}  # of the restored buckets: the ledger's tree is built from them

    # ---- frames ----------------------------------------------------------------------

    def on_connect(self, peer: bytes) -> None:
        self.outbox.send(peer, encode(GetSnapshots()))

    def handle(self, peer: bytes, message: Message) -> None:
        if isinstance(message, GetSnapshots):
            self.outbox.send(peer, encode(Snapshots(())))  # another empty node: it need not wait for us
        elif isinstance(message, Snapshots):
            self.offers[peer] = tuple(h for h in message.heights if h > 0)
            if self.offers[peer] or len(self.offers) >= self.answers_enough:
                self._offered.set()
            if len(self.offers) >= self.answers_all:
                self._all_answered.set()
        elif isinstance(message, ManifestFrame):
            self._answer(peer, ManifestFrame.KIND, message.height, 0, message.manifest)
        elif isinstance(message, Chunk):
            self._answer(peer, Chunk.KIND, message.height, message.index, message.data)

    def _answer(self, peer: bytes, kind: int, height: int, index: int, data: bytes | None) -> None:
        reply = self._asked.pop((peer, kind, height, index), None)  # one answer per request
        if reply is not None:
            reply.data = data
            reply.done.set()

    async def _ask(self, peer: bytes, request: GetManifest | GetChunk) -> bytes | None:
        index = request.index if isinstance(request, GetChunk) else 0
        kind = Chunk.KIND if isinstance(request, GetChunk) else ManifestFrame.KIND
        asked, reply = (peer, kind, request.height, index), _Reply()
        self._asked[asked] = reply
        self.outbox.send(peer, encode(request))
        with trio.move_on_after(self.timeout_s):
            await reply.done.wait()
        self._asked.pop(asked, None)
        return reply.data

    # ---- restoring ---------------------------------------------------------------------

    async def run(self) -> int:
        """Restores the newest snapshot it can; the restored height. Raises StateSyncFailed."""
        with trio.move_on_after(self.timeout_s):
            await self._offered.wait()
        if not self._offered.is_set():
            raise StateSyncFailed(f"no peer offered a snapshot within {self.timeout_s:g} s")
        if not any(self.offers.values()):
            raise StateSyncFailed(f"no peer offered a snapshot ({len(self.offers)} peers answered they have none)")
        with trio.move_on_after(OFFER_GRACE_S):
            await self._all_answered.wait()
        heights = sorted({h for offered in self.offers.values() for h in offered if h > self.above}, reverse=True)
        if not heights:
            raise StateSyncFailed(f"no snapshot offered above height {self.above}")
        reasons = []
        for height in heights:
            try:
                return await self._restore(height)
            except StateSyncFailed as exc:
                reasons.append(str(exc))
                log.warning("event=state_sync_snapshot_failed height=%d reason=%r", height, str(exc))
        raise StateSyncFailed("; ".join(reasons))

    def _peers(self, height: int) -> list[bytes]:
        return [p for p, heights in self.offers.items() if height in heights and p not in self.banned]

    async def _restore(self, height: int) -> int:
        manifest, header = await self._manifest(height)
        log.info("event=state_sync_manifest height=%d chunks=%d", height, sum(r != EMPTY for r in manifest.roots))
        held = self.store.height()
        if held:
            await self.run_blocking(self.before_replace)
        await self.run_blocking(functools.partial(self.store.begin_restore, replace=True))
        log.info("event=state_sync_restoring height=%d replaced_height=%d", height, held)
        try:
            await self._chunks(manifest)
            headers = [(height, manifest.header, manifest.certificate)] + [
                (_height_of(c.header), c.header, c.certificate) for c in manifest.changes]
            await self.run_blocking(self.store.finish_restore, height, header.hash(), headers)
        except BaseException:
            self.leaves.clear()
            with trio.CancelScope(shield=True):
                await self.run_blocking(self.store.abandon_restore)
            raise
        return height

    async def _chunks(self, manifest: Manifest) -> None:
        """Fetches, checks and writes every non-empty chunk of the manifest; raises StateSyncFailed."""
        indices = iter([i for i, root in enumerate(manifest.roots) if root != EMPTY])
        failed: list[StateSyncFailed] = []
        checked, to_write = trio.open_memory_channel[VerifiedChunk](0)
        async with contextlib.AsyncExitStack() as stack:
            run_check = self.run_check
            if run_check is None:
                import trio_parallel  # here: a node that never state-syncs loads no multiprocessing machinery

                context = trio_parallel.open_worker_context(idle_timeout=CHECKER_IDLE_S)
                workers = await stack.enter_async_context(context)

                async def run_check(fn: Callable[..., Any], *args: Any) -> Any:
                    try:
                        return await workers.run_sync(fn, *args, kill_on_cancel=True)
                    except trio_parallel.BrokenWorkerError as exc:  # killed (out of memory, say): no restore
                        raise StateSyncFailed(f"a worker process checking chunks died: {exc}") from None
            async with trio.open_nursery() as nursery:
                for turn in range(FETCHERS):
                    nursery.start_soon(self._fetch, manifest, indices, turn, run_check, checked.clone(), failed,
                                       nursery.cancel_scope)
                checked.close()
                async with to_write:
                    async for chunk in to_write:
                        await self.run_blocking(self.store.restore_state, chunk.pairs, chunk.buckets)
                        self.leaves.update(chunk.leaves)
        if failed:
            raise failed[0]

    async def _fetch(self, manifest: Manifest, indices: Iterator[int], turn: int,
                     run_check: Callable[..., Awaitable[Any]], checked: trio.MemorySendChannel[VerifiedChunk],
                     failed: list[StateSyncFailed], scope: trio.CancelScope) -> None:
        """Takes chunks from `indices` until none is left, each to `checked`; on a chunk no peer gives,
        notes the failure and cancels `scope` (the other fetchers and the writer)."""
        async with checked:
            for index in indices:
                try:
                    chunk, turn = await self._chunk(manifest, index, turn, run_check)
                except StateSyncFailed as exc:
                    failed.append(exc)
                    scope.cancel()
                    return
                await checked.send(chunk)

    async def _manifest(self, height: int) -> tuple[Manifest, Header]:
        for peer in self._peers(height):
            data = await self._ask(peer, GetManifest(height))
            if data is None:
                continue
            try:
                manifest = decode_manifest(data)
                if manifest.height != height:
                    raise SnapshotInvalid(f"the manifest is of height {manifest.height}, not {height}")
                header = await self.run_blocking(verify_manifest, manifest, self.genesis.chain_id,
                                                 self.genesis.validator_keys)
            except SnapshotInvalid as exc:
                self._ban(peer, f"manifest: {exc}")
                continue
            return manifest, header
        raise StateSyncFailed(f"no peer gave a valid manifest of the snapshot at {height}")

    async def _chunk(self, manifest: Manifest, index: int, turn: int,
                     run_check: Callable[..., Awaitable[Any]]) -> tuple[VerifiedChunk, int]:
        """Chunk `index` fetched and checked, asking the peers in turn from `turn`; and the next turn."""
        peers = self._peers(manifest.height)
        for attempt in range(ROUNDS * len(peers)):
            peer = peers[(turn + attempt) % len(peers)]
            if peer in self.banned:
                continue
            if attempt and attempt % len(peers) == 0:
                await trio.sleep(ROUND_PAUSE_S)  # every peer said "don't have": busy, perhaps
            data = await self._ask(peer, GetChunk(manifest.height, index))
            if data is None:
                self.metrics.snapshot_chunks_refused.labels("missing").inc()
                continue
            try:
                chunk = await run_check(verify_chunk, index, data, manifest.roots[index])
            except SnapshotInvalid as exc:
                self.metrics.snapshot_chunks_refused.labels("invalid").inc()
                self._ban(peer, str(exc))
                continue
            return chunk, turn + attempt + 1
        raise StateSyncFailed(f"no peer gave a valid chunk {index} of the snapshot at {manifest.height}")

    def _ban(self, peer: bytes, reason: str) -> None:
        self.banned.add(peer)
        log.warning("event=snapshot_chunk_refused peer=%s reason=%r", peer.hex()[:16], reason)


def _height_of(header: bytes) -> int:
    """The height of a header that verify_manifest decoded already."""
    return int(header_from_wire(unpack(header)).height)


async def state_sync(genesis: Genesis, key: SigningKey, ledger: Ledger, metrics: Metrics, sock: socket.socket,
                     timeout_s: float, above: int = 0,
                     before_replace: Callable[[], None] = lambda: None) -> tuple[int, dict[int, bytes]]:
    """Restores a snapshot above height `above` from the genesis' peers over the p2p listener `sock`, in
    place of what the store holds: the restored height and the leaf hashes of its state tree. Raises
    StateSyncFailed: the store is then as it was when no snapshot was fetched, or empty.
    `before_replace` runs before a store that holds blocks is emptied."""
    outbox = PeerOutbox(ledger, metrics)
    client = SnapshotClient(genesis, ledger, outbox, metrics, timeout_s, above=above, before_replace=before_replace)
    network = PeerNetwork(genesis.chain_id, key, ledger.members(1), metrics, outbox, handler=client.handle,
                          on_connect=client.on_connect)
    outcome: int | StateSyncFailed = StateSyncFailed("stopped")
    async with trio.open_nursery() as nursery:
        await nursery.start(network.serve, sock)
        try:
            outcome = await client.run()
        except StateSyncFailed as exc:  # raised outside the nursery, not inside its exception group
            outcome = exc
        nursery.cancel_scope.cancel()
    if isinstance(outcome, StateSyncFailed):
        raise outcome
    return outcome, client.leaves
