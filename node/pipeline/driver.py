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
from node.chain.execution import execute
from node.chain.ledger import Ledger
from node.txpool.mempool import Mempool, MempoolFull
from node.ops.metrics import Metrics
from node.chain.proposal import BlockInvalid, Candidate, block_of, build_block, check_block, missing_txs, proposal_body
from node.chain.tx import Transaction

log = logging.getLogger("alliance.driver")
PEER_EVENTS_QUEUED_MAX = 4096
# Blocks whose transactions stay at hand after their commit: a slower validator may still fetch them.
HELD_COMMITTED_BLOCKS = 4

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
        self.block_txs_max = block_txs_max
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
        self._candidates: dict[bytes, Candidate] = {}
        self._proposed_at: dict[bytes, float] = {}
        self._build_wanted: tuple[int, int] | None = None
        self._work = trio.Event()
        self._timer: trio.CancelScope | None = None
        self._committed: dict[bytes, trio.Event] = {}
        self._held_committed: deque[list[Transaction]] = deque(maxlen=HELD_COMMITTED_BLOCKS)
        self._held_by_hash: dict[bytes, Transaction] = {}
        self._view = (replica.height, replica.round)
        self._dropped_seen: dict[str, int] = {}
        self.last_loop_s = -math.inf  # trio time the consensus loop last took an event (the watchdog's heartbeat)

    # ---- what the rest of the node calls -----------------------------------------

    def submit(self, tx: Transaction, from_peer: bool = False) -> None:
        """Adds a verified transaction to the mempool; raises MempoolFull."""
        self.mempool.add(tx, from_peer)
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
        return self.mempool.get(tx_hash) or self._held_by_hash.get(tx_hash)

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
                if height != self.ledger.height + 1:
                    continue
                txs = self.mempool.oldest(self.block_txs_max)
                candidate = await self.run_blocking(build_block, self.ledger, txs, self.replica.me, now_ms())
            self._remember(candidate)
            self.feed(BlockBuilt(height, round_, proposal_body(candidate, self.inline), candidate.block_hash))

    def _remember(self, candidate: Candidate) -> None:
        self._candidates[candidate.block_hash] = candidate
        self._proposed_at.setdefault(candidate.block_hash, trio.current_time())

    async def _validate(self, action: ValidateBlock) -> BlockValidated:
        proposers = frozenset(self.replica.proposer(action.height, r) for r in range(action.round + 1))
        self._proposed_at.setdefault(action.block_hash, trio.current_time())
        fetched = await self.fetch_txs(missing_txs(action.block, self.mempool.get))
        try:
            async with self._commit_lock:  # the ledger must not move while the block is checked
                candidate = await self.run_blocking(
                    check_block, self.ledger, action.block, action.block_hash, proposers, now_ms(), self.mempool.get,
                    fetched,
                )
        except BlockInvalid as exc:
            log.warning("event=block_invalid height=%d round=%d reason=%r", action.height, action.round, str(exc))
            return BlockValidated(action.height, action.round, action.block_hash, False)
        self._remember(candidate)
        self._keep_verified(candidate.txs)
        return BlockValidated(action.height, action.round, action.block_hash, True)

    def _keep_verified(self, txs: list[Transaction]) -> None:
        """Transactions a block brought before their gossip: kept, so their gossip copy is not verified again."""
        for tx in txs:
            if tx.hash not in self.mempool:
                try:
                    self.mempool.add(tx, from_peer=True)
                except MempoolFull:
                    return

    def _candidate_for_commit(self, action: CommitBlock, fetched: dict[bytes, Transaction]) -> Candidate | None:
        candidate = self._candidates.get(action.block_hash)
        if candidate is not None:
            return candidate
        # 2f+1 validators committed a block we did not validate: at least f+1 honest ones did.
        try:
            block, txs = block_of(action.block, self.mempool.get, fetched)
        except BlockInvalid as exc:  # transactions nobody sent us: catch-up brings the whole block
            log.warning("event=commit_deferred height=%d reason=%r", action.height, str(exc))
            self.request_sync(action.height)
            return None
        execution = execute(txs, block.header.height, block.header.time_ms, self.ledger.read_state)
        return Candidate(block, action.block_hash, txs, execution)

    async def _commit(self, action: CommitBlock) -> Event | None:
        fetched: dict[bytes, Transaction] = {}
        if action.block_hash not in self._candidates and action.height > self.ledger.height:
            fetched = await self.fetch_txs(missing_txs(action.block, self.mempool.get))
        async with self._commit_lock:
            if action.height <= self.ledger.height:
                self._check_already_stored(action)
                return None
            candidate = self._candidate_for_commit(action, fetched)
            if candidate is None:
                return None
            await self.run_blocking(
                self.ledger.commit, candidate.block, candidate.txs, candidate.execution, action.certificate
            )
            self._after_commit(candidate)
        return TransactionsPending() if len(self.mempool) else None

    def _check_already_stored(self, action: CommitBlock) -> None:
        """Catch-up stored this height first; consensus must have decided the same block."""
        block = self.ledger.block(action.height)
        if block is None or block.header.hash() != action.block_hash:
            log.critical("event=fork_detected height=%d consensus=%s", action.height, action.block_hash.hex())

    async def apply_synced(
        self, check: Callable[[], tuple[Candidate, tuple[tuple[bytes, bytes], ...]] | None]
    ) -> None:
        """Commits a block fetched by catch-up; `check` verifies it against the current ledger."""
        async with self._commit_lock:
            checked = await self.run_blocking(check)
            if checked is None:
                return  # consensus committed that height meanwhile
            candidate, certificate = checked
            await self.run_blocking(
                self.ledger.commit, candidate.block, candidate.txs, candidate.execution, certificate
            )
            self._after_commit(candidate)
        self.feed(BlockSynced(candidate.block.header.height))

    def _after_commit(self, candidate: Candidate) -> None:
        height = candidate.block.header.height
        self._candidates = {h: c for h, c in self._candidates.items() if c.block.header.height > height}
        started = self._proposed_at.pop(candidate.block_hash, None)
        if started is not None:
            self.metrics.block_commit_seconds.observe(trio.current_time() - started)
        self._proposed_at = {h: t for h, t in self._proposed_at.items() if h in self._candidates}
        hashes = [tx.hash for tx in candidate.txs]
        self.mempool.remove(hashes)
        self.on_txs_committed(hashes)
        self._hold_committed(candidate.txs)
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

    def _hold_committed(self, txs: list[Transaction]) -> None:
        if len(self._held_committed) == HELD_COMMITTED_BLOCKS:
            for tx in self._held_committed[0]:
                self._held_by_hash.pop(tx.hash, None)
        self._held_committed.append(txs)
        self._held_by_hash.update((tx.hash, tx) for tx in txs)

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
