"""The trio shell around the consensus core: feeds it events and carries out its actions in order."""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

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
    ValidatorSetKnown,
)
from consensus.messages import RoundChange, Signed, signing_bytes
from consensus.replica import Replica
from consensus.safety_state import encode_safety
from node.chain.candidate import BlockInvalid
from node.chain.governance import ACTIVATION_DELAY
from node.chain.proposal import proposal_body
from node.chain.tx import Transaction
from node.ops.metrics import Metrics
from node.pipeline.commit import AlreadyStored, CommitPipeline, Committed, Deferred
from node.pipeline.consensus_watch import ConsensusWatch
from node.txpool.mempool import Mempool

log = logging.getLogger("alliance.driver")
PEER_EVENTS_QUEUED_MAX = 4096
# Blocks up to this size are built, checked and committed on the event loop (see Driver._work).
INLINE_TXS_MAX = 32
INLINE_BODY_BYTES_MAX = 4096

T = TypeVar("T")

# Runs a blocking storage call without stalling the event loop; tests over the memory store run it inline.
BlockingRunner = Callable[..., Awaitable[Any]]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Wakeup:
    """Set by one side, waited on by one task; several sets before the wait wake it once."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


class Inbox:
    """What the consensus loop is told, queued: peers' messages, the node's own events, pending transactions.

    Kept apart from the Driver so that admission can be built before it: the gossip and the
    subscriptions hub the driver talks to need admission, which tells this of pending transactions.
    """

    def __init__(self, mempool: Mempool, metrics: Metrics) -> None:
        self.mempool = mempool
        self.metrics = metrics
        self._events_in, self.events = trio.open_memory_channel[Event](math.inf)
        self.work = Wakeup()  # a block may be worth building

    def transactions_pending(self) -> None:
        """A transaction entered the mempool: a block is worth building, a round timer worth running."""
        self.metrics.mempool_txs.set(len(self.mempool))
        self.work.set()
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


class ConsensusOut(Protocol):
    """Where the replica's signed messages go (the peers' outbox)."""

    def broadcast_consensus(self, signed: Signed) -> None: ...

    def send_consensus(self, peer: bytes, signed: Signed) -> None: ...


class SafetyStore(Protocol):
    """Keeps the encoded safety state durably before what it covers is sent."""

    def save_safety(self, data: bytes) -> None: ...


class TxSource(Protocol):
    """Fetches from peers the transactions a proposal names by hash that this node lacks."""

    async def fetch(self, hashes: list[bytes]) -> dict[bytes, Transaction]: ...


class InlinePolicy(Protocol):
    """Which transactions a proposal built here carries whole (the rest go by hash)."""

    def unsent(self, tx_hash: bytes) -> bool: ...


class CommittedTxs(Protocol):
    """Told the transactions of each commit (the mempool log forgets them)."""

    def forget(self, tx_hashes: list[bytes]) -> None: ...


class Driver:
    """Takes the inbox's events one at a time, hands each to the replica and carries out its actions in order."""

    def __init__(
        self,
        replica: Replica,
        pipeline: CommitPipeline,
        mempool: Mempool,
        inbox: Inbox,
        metrics: Metrics,
        peers: ConsensusOut,
        safety: SafetyStore,
        fetcher: TxSource,
        inline: InlinePolicy,
        txlog: CommittedTxs,
        sync_wanted: Wakeup,
        on_committed: Sequence[Callable[[int], None]],
        run_blocking: BlockingRunner = trio.to_thread.run_sync,
        watch: ConsensusWatch | None = None,
    ):
        self.replica = replica
        self.watch = watch if watch is not None else ConsensusWatch(now_ms)  # what each validator last sent
        self.pipeline = pipeline
        self.ledger = pipeline.ledger
        self.mempool = mempool
        self.inbox = inbox
        self.metrics = metrics
        self.peers = peers
        self.safety = safety
        self.fetcher = fetcher
        self.inline = inline
        self.txlog = txlog
        self.sync_wanted = sync_wanted  # catch-up is asked to run
        self.on_committed = on_committed  # told each committed height, in order (subscriptions, peers)
        self.run_blocking = run_blocking
        self._commit_lock = trio.Lock()
        self._build_wanted: tuple[int, int] | None = None
        self._timer: trio.CancelScope | None = None
        self._committed: dict[bytes, trio.Event] = {}
        self._view = (replica.height, replica.round)
        self._dropped_seen: dict[str, int] = {}
        self.last_loop_s = -math.inf  # trio time the consensus loop last took an event (the watchdog's heartbeat)

    # ---- what the rest of the node calls -----------------------------------------

    async def wait_committed(self, tx_hash: bytes, timeout_s: float) -> bool:
        if self.ledger.has_tx(tx_hash):
            return True
        event = self._committed.setdefault(tx_hash, trio.Event())
        with trio.move_on_after(timeout_s):
            await event.wait()
        if not event.is_set() and self._committed.get(tx_hash) is event and not event.statistics().tasks_waiting:
            del self._committed[tx_hash]
        return self.ledger.has_tx(tx_hash)

    def loop_alive(self, stall_s: float) -> bool:
        """The consensus loop is waiting for events, or took the one it works on less than stall_s ago."""
        idle = self.inbox.events.statistics().tasks_waiting_receive > 0
        return idle or trio.current_time() - self.last_loop_s < stall_s

    # ---- the loop -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._build_loop)
            await self._perform(self.replica.start())
            if self.pipeline.work_waiting():  # acknowledged txs read back, or a change to bring in force
                await self._perform(self.replica.handle(TransactionsPending()))
            task_status.started()
            async for event in self.inbox.events:
                self.last_loop_s = trio.current_time()
                await self._perform(self._handle(event), _round_reason(event))

    def _handle(self, event: Event) -> list[Action]:
        """The replica's actions for `event`; a peer's message it accepted (signature checked) is watched,
        and so is a late vote for the height just decided once its signature checks here."""
        dropped, old, height = self.replica.dropped.total(), self.replica.dropped["old"], self.replica.height
        validators = self.replica.validators
        actions = self.replica.handle(event)
        if isinstance(event, MessageReceived):
            signed, replica = event.signed, self.replica
            accepted = replica.dropped.total() == dropped
            late = (replica.dropped["old"] == old + 1 and signed.message.height == height - 1
                    and replica.crypto.verify(signed.sender, signing_bytes(replica.config.chain_id, signed.message),
                                              signed.signature))
            if accepted or late:
                self.watch.record(signed.sender, signed.message, validators)
        return actions

    async def _perform(self, actions: list[Action], reason: str = "resumed") -> None:
        queue = deque(actions)
        while queue:
            for follow_up in await self._carry_out(queue.popleft()):
                queue.extend(self.replica.handle(follow_up))
        self._observe_replica(reason)

    async def _carry_out(self, action: Action) -> list[Event]:
        """Does what `action` says; returns the events it leads to, for the replica at once."""
        if isinstance(action, PersistSafetyState):
            data = encode_safety(action.state)
            self.safety.save_safety(data)  # on the loop: a small synced append, cheaper than a thread's hop
        elif isinstance(action, Broadcast):
            self.watch.record(self.replica.me, action.signed.message, self.replica.validators)
            self.peers.broadcast_consensus(action.signed)
        elif isinstance(action, SendTo):
            self.watch.record(self.replica.me, action.signed.message, self.replica.validators)
            self.peers.send_consensus(action.peer, action.signed)
        elif isinstance(action, ScheduleTimeout):
            self._schedule_timeout(action)
        elif isinstance(action, BuildBlock):
            self._build_wanted = (action.height, action.round)
            self.inbox.work.set()
        elif isinstance(action, ValidateBlock):
            if action.height < self.replica.height:
                return []  # decided later in the same output: no verdict is wanted, its validators are forgotten
            return [await self._validate(action)]
        elif isinstance(action, CommitBlock):
            return await self._commit(action)
        elif isinstance(action, RequestSync):
            self.sync_wanted.set()
        return []

    # ---- timers -----------------------------------------------------------------------

    def _schedule_timeout(self, action: ScheduleTimeout) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = trio.CancelScope()
        self._nursery.start_soon(self._fire_after, self._timer, action)

    async def _fire_after(self, scope: trio.CancelScope, action: ScheduleTimeout) -> None:
        with scope:
            await trio.sleep(action.delay_ms / 1000)
            self.inbox.feed(TimeoutFired(action.height, action.round))

    # ---- blocks -----------------------------------------------------------------------

    async def _build_loop(self) -> None:
        """Builds the block the core asked for as soon as there are transactions for it."""
        while True:
            await self.inbox.work.wait()
            wanted = self._build_wanted
            if wanted is None or not self.pipeline.work_waiting():
                continue
            self._build_wanted = None
            height, round_ = wanted
            async with self._commit_lock:
                txs = self.pipeline.block_txs()
                candidate = await self._work(len(txs) <= INLINE_TXS_MAX, self.pipeline.build, height, txs, now_ms())
            if candidate is None:
                continue  # that height is committed already
            self.pipeline.remember(candidate, trio.current_time())
            body = proposal_body(candidate, self.inline.unsent)
            self.inbox.feed(BlockBuilt(height, round_, body, candidate.block_hash))

    async def _work(self, small: bool, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread, or on the loop when it is small: there, a thread's hop (a wake-up
        on a busy machine) costs more than the work, and it is on the path of every block's latency."""
        if small:
            return fn(*args)
        return await self.run_blocking(fn, *args)

    async def _validate(self, action: ValidateBlock) -> BlockValidated:
        proposers = frozenset(self.replica.proposer(action.height, r) for r in range(action.round + 1))
        self.pipeline.proposed(action.block_hash, trio.current_time())
        fetched = await self.fetcher.fetch(self.pipeline.missing_txs(action.block))
        try:
            async with self._commit_lock:  # the ledger must not move while the block is checked
                candidate = await self._work(len(action.block) <= INLINE_BODY_BYTES_MAX, self.pipeline.validate,
                                             action, proposers, fetched, now_ms())
        except BlockInvalid as exc:
            log.warning("event=block_invalid height=%d round=%d reason=%r", action.height, action.round, str(exc))
            return BlockValidated(action.height, action.round, action.block_hash, False)
        self.pipeline.validated(candidate, trio.current_time())
        return BlockValidated(action.height, action.round, action.block_hash, True)

    async def _commit(self, action: CommitBlock) -> list[Event]:
        fetched = await self.fetcher.fetch(self.pipeline.missing_for_commit(action))
        async with self._commit_lock:
            outcome = await self._work(len(action.block) <= INLINE_BODY_BYTES_MAX, self.pipeline.commit, action, fetched)
            if isinstance(outcome, AlreadyStored):
                if outcome.forked:
                    log.critical("event=fork_detected height=%d consensus=%s", action.height, action.block_hash.hex())
                return []
            if isinstance(outcome, Deferred):
                log.warning("event=commit_deferred height=%d reason=%r", action.height, outcome.reason)
                self.sync_wanted.set()
                return []
            known = self._after_commit(outcome)
        return [known, TransactionsPending()] if self.pipeline.work_waiting() else [known]

    async def apply_synced(self, raw_block: bytes, raw_certificate: bytes) -> None:
        """Commits a block fetched by catch-up once it checks against the current ledger; raises BlockInvalid."""
        async with self._commit_lock:
            committed = await self.run_blocking(self.pipeline.apply_synced, raw_block, raw_certificate)
            if committed is None:
                return  # consensus committed that height meanwhile
            known = self._after_commit(committed)
        self.inbox.feed(known)
        self.inbox.feed(BlockSynced(committed.height))

    def _after_commit(self, committed: Committed) -> ValidatorSetKnown:
        """Tells everyone who follows commits of this one; returns what the replica learns from it:
        the validators of the height two above, fixed by this block (governance.ACTIVATION_DELAY)."""
        candidate, hashes = committed.candidate, committed.tx_hashes
        height = committed.height
        started = self.pipeline.settle(committed)
        self._follow_membership(height)
        if started is not None:
            self.metrics.block_commit_seconds.observe(trio.current_time() - started)
        self.txlog.forget(hashes)
        for tx_hash in hashes:
            waiter = self._committed.pop(tx_hash, None)
            if waiter is not None:
                waiter.set()
        self.metrics.chain_height.set(height)
        self.metrics.txs_committed.inc(len(hashes))
        self.metrics.mempool_txs.set(len(self.mempool))
        self.inbox.work.set()
        for follower in self.on_committed:
            follower(height)
        log.info("event=block_committed height=%d txs=%d hash=%s", height, len(hashes), candidate.block_hash.hex())
        return ValidatorSetKnown(height + ACTIVATION_DELAY, self.ledger.members(height + ACTIVATION_DELAY).validator_keys)

    def _follow_membership(self, height: int) -> None:
        """From the next height on, senders that governance removed may send nothing: their pending txs go."""
        if self.ledger.members(height + 1).authorised_senders == self.ledger.members(height).authorised_senders:
            return
        dropped = self.pipeline.drop_unauthorised()
        self.txlog.forget(dropped)
        if dropped:
            log.info("event=txs_dropped_unauthorised height=%d txs=%d", height + 1, len(dropped))

    def _observe_replica(self, reason: str) -> None:
        view = (self.replica.height, self.replica.round)
        if view[0] == self._view[0] and view[1] > self._view[1] and not self.replica.parked:
            self.metrics.view_changes.labels(reason).inc(view[1] - self._view[1])
            log.info("event=view_change height=%d round=%d leader=%s reason=%s", view[0], view[1],
                     self.replica.proposer(*view).hex()[:16], reason)
        if view[0] != self._view[0] and not self.replica.parked:
            self.watch.keep_only(self.replica.validators)
        self._view = view
        self.metrics.consensus_view.set(self.replica.round)
        for reason, count in self.replica.dropped.items():
            seen = self._dropped_seen.get(reason, 0)
            if count > seen:
                self.metrics.messages_dropped.labels(reason).inc(count - seen)
                self._dropped_seen[reason] = count


def _round_reason(event: Event) -> str:
    """Why a higher round that `event` led to was entered (the view-change counter's `reason`)."""
    if isinstance(event, TimeoutFired):
        return "timeout"
    if isinstance(event, MessageReceived):
        return "round_changes" if isinstance(event.signed.message, RoundChange) else "proposal"
    return "resumed"
