"""The trio shell around the consensus core: feeds it events and carries out its actions in order."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from consensus.actions import (
    Action,
    Broadcast,
    BuildBlock,
    CommitBlock,
    PersistSafetyState,
    RequestSync,
    ScheduleTimeout,
    SendTo,
    ValidateBlock,
)
from consensus.events import (
    BlockBuilt,
    BlockSynced,
    BlockValidated,
    Event,
    MessageReceived,
    TimeoutFired,
    TransactionsPending,
)
from consensus.replica import Replica
from consensus.safety import encode_safety
from node.chain.ledger import Ledger
from node.chain.candidate import BlockInvalid
from node.chain.proposal import proposal_body
from node.chain.tx import Transaction
from node.ops.metrics import Metrics
from node.pipeline.commit import AlreadyStored, CommitPipeline, Committed, Deferred
from node.txpool.mempool import Mempool

log = logging.getLogger("alliance.driver")
PEER_EVENTS_QUEUED_MAX = 4096

# Runs a blocking storage call without stalling the event loop; tests over the memory store run it inline.
BlockingRunner = Callable[..., Awaitable[Any]]


async def _fetch_nothing(tx_hashes: list[bytes]) -> dict[bytes, Transaction]:
    return {}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Driver:
    def __init__(
        self,
        replica: Replica,
        ledger: Ledger,
        mempool: Mempool,
        metrics: Metrics,
        block_txs_max: int,
        run_blocking: BlockingRunner = trio.to_thread.run_sync,
    ):
        self.run_blocking = run_blocking
        self.replica = replica
        self.ledger = ledger
        self.mempool = mempool
        self.metrics = metrics
        self.pipeline = CommitPipeline(ledger, mempool, replica.me, block_txs_max)
        self.broadcast: Callable[[Any], None] = lambda signed: None
        self.send_to: Callable[[bytes, Any], None] = lambda peer, signed: None
        self.request_sync: Callable[[int], None] = lambda height: None
        self.on_committed: Callable[[int], None] = lambda height: None
        # Where the encoded safety state goes, durably, before what it covers is sent.
        self.save_safety: Callable[[bytes], None] = ledger.store.save_safety
        self.on_txs_committed: Callable[[list[bytes]], None] = lambda tx_hashes: None  # the mempool log forgets them
        # Which transactions a proposal carries whole (the rest by hash), and how missing ones are fetched.
        self.inline: Callable[[bytes], bool] = lambda tx_hash: True
        self.fetch_txs: Callable[[list[bytes]], Awaitable[dict[bytes, Transaction]]] = _fetch_nothing
        self._commit_lock = trio.Lock()
        self._events_in, self._events_out = trio.open_memory_channel[Event](math.inf)
        self._build_wanted: tuple[int, int] | None = None
        self._work = trio.Event()
        self._timer: trio.CancelScope | None = None
        self._committed: dict[bytes, trio.Event] = {}
        self._view = (replica.height, replica.round)
        self._dropped_seen: dict[str, int] = {}
        self.last_loop_s = -math.inf  # trio time the consensus loop last took an event (the watchdog's heartbeat)

    # ---- what the rest of the node calls -----------------------------------------

    def submit(self, tx: Transaction, from_peer: bool = False) -> None:
        """Adds a verified transaction to the mempool; raises MempoolFull."""
        self.mempool.add(tx, from_peer)
        self.transactions_pending()

    def transactions_pending(self) -> None:
        """A transaction entered the mempool: a block is worth building, a round timer worth running."""
        self.metrics.mempool_txs.set(len(self.mempool))
        self._work.set()
        if len(self.mempool) == 1:
            self.feed(TransactionsPending())

    def feed(self, event: Event) -> None:
        """Queues an event for the core. Peers' messages are dropped (counted) beyond a bound;
        the node's own events (timers, built and synced blocks) never are."""
        queued = self._events_in.statistics().current_buffer_used
        if isinstance(event, MessageReceived) and queued >= PEER_EVENTS_QUEUED_MAX:
            self.metrics.messages_dropped.labels("queue_full").inc()
            return
        self._events_in.send_nowait(event)

    async def wait_committed(self, tx_hash: bytes, timeout_s: float) -> bool:
        if self.ledger.has_tx(tx_hash):
            return True
        event = self._committed.setdefault(tx_hash, trio.Event())
        with trio.move_on_after(timeout_s):
            await event.wait()
        if not event.is_set() and self._committed.get(tx_hash) is event and not event.statistics().tasks_waiting:
            del self._committed[tx_hash]
        return self.ledger.has_tx(tx_hash)

    def held_tx(self, tx_hash: bytes) -> Transaction | None:
        """A transaction this node holds: pending, or in one of the last blocks it committed (for peers' fetches)."""
        return self.pipeline.held_tx(tx_hash)

    def loop_alive(self, stall_s: float) -> bool:
        """The consensus loop is waiting for events, or took the one it works on less than stall_s ago."""
        idle = self._events_out.statistics().tasks_waiting_receive > 0
        return idle or trio.current_time() - self.last_loop_s < stall_s

    # ---- the loop -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._build_loop)
            await self._perform(self.replica.start())
            task_status.started()
            async for event in self._events_out:
                self.last_loop_s = trio.current_time()
                await self._perform(self.replica.handle(event))

    async def _perform(self, actions: list[Action]) -> None:
        queue = deque(actions)
        while queue:
            follow_up = await self._carry_out(queue.popleft())
            if follow_up is not None:
                queue.extend(self.replica.handle(follow_up))
        self._observe_replica()

    async def _carry_out(self, action: Action) -> Event | None:
        if isinstance(action, PersistSafetyState):
            data = encode_safety(action.state)
            await self.run_blocking(self.save_safety, data)
        elif isinstance(action, Broadcast):
            self.broadcast(action.signed)
        elif isinstance(action, SendTo):
            self.send_to(action.peer, action.signed)
        elif isinstance(action, ScheduleTimeout):
            self._schedule_timeout(action)
        elif isinstance(action, BuildBlock):
            self._build_wanted = (action.height, action.round)
            self._work.set()
        elif isinstance(action, ValidateBlock):
            return await self._validate(action)
        elif isinstance(action, CommitBlock):
            return await self._commit(action)
        elif isinstance(action, RequestSync):
            self.request_sync(action.height)
        return None

    # ---- timers -----------------------------------------------------------------------

    def _schedule_timeout(self, action: ScheduleTimeout) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = trio.CancelScope()
        self._nursery.start_soon(self._fire_after, self._timer, action)

    async def _fire_after(self, scope: trio.CancelScope, action: ScheduleTimeout) -> None:
        with scope:
            await trio.sleep(action.delay_ms / 1000)
            self.feed(TimeoutFired(action.height, action.round))

    # ---- blocks -----------------------------------------------------------------------

    async def _build_loop(self) -> None:
        """Builds the block the core asked for as soon as there are transactions for it."""
        while True:
            await self._work.wait()
            self._work = trio.Event()
            wanted = self._build_wanted
            if wanted is None or not len(self.mempool):
                continue
            self._build_wanted = None
            height, round_ = wanted
            async with self._commit_lock:
                txs = self.pipeline.block_txs()
                candidate = await self.run_blocking(self.pipeline.build, height, txs, now_ms())
            if candidate is None:
                continue  # that height is committed already
            self.pipeline.remember(candidate, trio.current_time())
            self.feed(BlockBuilt(height, round_, proposal_body(candidate, self.inline), candidate.block_hash))

    async def _validate(self, action: ValidateBlock) -> BlockValidated:
        proposers = frozenset(self.replica.proposer(action.height, r) for r in range(action.round + 1))
        self.pipeline.proposed(action.block_hash, trio.current_time())
        fetched = await self.fetch_txs(self.pipeline.missing_txs(action.block))
        try:
            async with self._commit_lock:  # the ledger must not move while the block is checked
                candidate = await self.run_blocking(self.pipeline.validate, action, proposers, fetched, now_ms())
        except BlockInvalid as exc:
            log.warning("event=block_invalid height=%d round=%d reason=%r", action.height, action.round, str(exc))
            return BlockValidated(action.height, action.round, action.block_hash, False)
        self.pipeline.validated(candidate, trio.current_time())
        return BlockValidated(action.height, action.round, action.block_hash, True)

    async def _commit(self, action: CommitBlock) -> Event | None:
        fetched = await self.fetch_txs(self.pipeline.missing_for_commit(action))
        async with self._commit_lock:
            outcome = await self.run_blocking(self.pipeline.commit, action, fetched)
            if isinstance(outcome, AlreadyStored):
                if outcome.forked:
                    log.critical("event=fork_detected height=%d consensus=%s", action.height, action.block_hash.hex())
                return None
            if isinstance(outcome, Deferred):
                log.warning("event=commit_deferred height=%d reason=%r", action.height, outcome.reason)
                self.request_sync(action.height)
                return None
            self._after_commit(outcome)
        return TransactionsPending() if len(self.mempool) else None

    async def apply_synced(self, raw_block: bytes, raw_certificate: bytes) -> None:
        """Commits a block fetched by catch-up once it checks against the current ledger; raises BlockInvalid."""
        async with self._commit_lock:
            committed = await self.run_blocking(self.pipeline.apply_synced, raw_block, raw_certificate)
            if committed is None:
                return  # consensus committed that height meanwhile
            self._after_commit(committed)
        self.feed(BlockSynced(committed.candidate.block.header.height))

    def _after_commit(self, committed: Committed) -> None:
        candidate, hashes = committed.candidate, committed.tx_hashes
        height = candidate.block.header.height
        started = self.pipeline.settle(committed)
        if started is not None:
            self.metrics.block_commit_seconds.observe(trio.current_time() - started)
        self.on_txs_committed(hashes)
        for tx_hash in hashes:
            waiter = self._committed.pop(tx_hash, None)
            if waiter is not None:
                waiter.set()
        self.metrics.chain_height.set(height)
        self.metrics.txs_committed.inc(len(hashes))
        self.metrics.mempool_txs.set(len(self.mempool))
        self._work.set()
        self.on_committed(height)
        log.info("event=block_committed height=%d txs=%d hash=%s", height, len(hashes), candidate.block_hash.hex())

    def _observe_replica(self) -> None:
        view = (self.replica.height, self.replica.round)
        if view[0] == self._view[0] and view[1] > self._view[1]:
            self.metrics.view_changes.inc(view[1] - self._view[1])
            log.info("event=view_change height=%d round=%d leader=%s", view[0], view[1],
                     self.replica.proposer(*view).hex()[:16])
        self._view = view
        self.metrics.consensus_view.set(self.replica.round)
        for reason, count in self.replica.dropped.items():
            seen = self._dropped_seen.get(reason, 0)
            if count > seen:
                self.metrics.messages_dropped.labels(reason).inc(count - seen)
                self._dropped_seen[reason] = count
