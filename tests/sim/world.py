"""A deterministic simulation of a validator network running the node's real code.

One seed drives everything (tigerbeetle's VOPR is the model): a `random.Random`
picks every delay, loss, duplicate, partition, crash and block, and an event
heap keyed by (virtual time in ms, sequence number) decides what happens next.
Nothing reads a clock or depends on hash order, so a seed replays exactly.

Each node runs what a real node runs, over a `MemoryStore`: the consensus
`Replica`, a `Ledger` from the chain's genesis, a `Mempool` and the sans-I/O
`CommitPipeline`. The simulator plays only the Driver and the network: it
carries out the replica's actions in the Driver's order (PersistSafetyState a
synced write; BuildBlock -> `pipeline.build` -> BlockBuilt with the proposal
body; ValidateBlock -> `pipeline.validate` -> BlockValidated; CommitBlock ->
`pipeline.commit`, the ledger's one synced batch), answers missing-transaction
fetches from peers' `held_tx`, and catches a lagging node up from a peer's
stored blocks through `pipeline.apply_synced`. A client submits real signed
kv and notary transactions (workload.py) to one node, which logs them durably,
and gossip brings them to the others. A crash drops the node's memory and every
unsynced write, possibly in the middle of one `handle()` output; a restart
rebuilds replica, ledger, pool and pipeline from what the store kept.

Byzantine validators are Diem's Twins: two nodes run honest code with one key,
each linked to a different part of the honest network and each building its
own block (other transactions, another order), which gives real equivocation
without writing any attacker. A Byzantine proposer may also send a block the
real block check refuses (forgery.py), or forge a round change's certificate.

Membership changes are real too (membership.py): admins propose and approve
`gov` changes, and the simulator is the shell the node is around its replica:
after each commit of block h it tells the replica the validators of h + 2, a
(re)started replica gets those of its height and the next, messages go to the
validators of their height, and a node whose key is not a validator follows
by catch-up. An observer is promoted, validators are removed (one crashed, one
the proposer of the activation height) and keys replaced (the process restarts
with its new key); a Byzantine node whose key was removed or replaced keeps the
old key in its sets and signs on with it, which honest nodes must refuse.

Consensus signatures and commit seals are a keyed hash over the real signing
bytes (keyring.py), given to the pipeline as its seal verifier, so that
hundreds of seeds fit in a CI run; transactions are signed with Ed25519.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

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
from consensus.config import ReplicaConfig
from consensus.events import BlockBuilt, BlockSynced, BlockValidated, Event, MessageReceived, TimeoutFired, TransactionsPending
from consensus.events import ValidatorSetKnown
from consensus.messages import RoundChange, Signed, decode_signed, encode_signed, sign
from consensus.quorum import fault_tolerance, quorum
from consensus.replica import Replica
from consensus.safety_state import decode_safety, encode_safety
from node.chain.candidate import BlockInvalid, Candidate
from node.chain.ledger import Ledger
from node.chain.proposal import proposal_body
from node.chain.tx import Transaction
from node.pipeline.commit import AlreadyStored, CommitPipeline, Committed, Deferred, Fetched
from node.txpool.mempool import Mempool
from storage.chain import ChainStore
from tests.sim.forgery import bad_block
from tests.sim.invariants import Invariants, InvariantViolated
from tests.sim.keyring import Keyring
from tests.sim.membership import PROMOTE, Governor, draw_plan, keys_needed
from tests.sim.operators import Operators
from tests.sim.process import Node
from tests.sim.scenario import SCENARIOS, Faults, Network, Scenario
from tests.sim.verdict import check_end, silent_new_validators
from tests.sim.workload import CHAIN_ID, client_txs, genesis

__all__ = ["SCENARIOS", "Scenario", "Simulation", "run"]

MEMPOOL_TXS_MAX = 200
BLOCK_TXS_MAX = 16
BY_HASH = 0.3  # chance a proposal carries a transaction by its hash (the proposer expects gossip brought it)
CLIENT_GAP_MS = (150, 450)  # between two client submissions
SYNC_TICK_MS = 1000  # how often peers announce their heights to a node that follows


class Simulation:
    def __init__(self, scenario: Scenario, seed: int):
        self.scenario = scenario
        self.seed = seed
        self.rng = random.Random(seed)
        self.now_ms = 0
        self._heap: list[tuple[int, int, Callable[..., object], tuple[Any, ...]]] = []
        self._seq = 0
        n, observers = scenario.validators, scenario.changes.count(PROMOTE)
        self.keyring = Keyring(keys_needed(n, scenario.changes))
        keys = self.keyring.public_keys
        self.config = ReplicaConfig(  # each replica gets its ledger's validators (see boot)
            CHAIN_ID,
            keys[:n],
            round_timeout_ms=scenario.round_timeout_ms,
            round_timeout_max_ms=scenario.round_timeout_max_ms,
        )
        assert scenario.byzantine <= fault_tolerance(n), "more Byzantine validators than the network tolerates"
        self.genesis = genesis(keys[:n], keys[n:n + observers])
        self.invariants = Invariants(self.keyring, quorum)
        self._next_tx = 0
        self.nodes = self._make_nodes(observers)
        self.plan = draw_plan(self.rng, scenario.changes, keys, n, [nd.key for nd in self.nodes if not nd.honest])
        self.operators = Operators(self)
        self.governor = Governor(self.plan, self.operators.passed)
        self.healed = False
        self.faults = Faults.draw(self.rng, scenario, len(self.nodes))
        self.net = replace(self.faults.network)
        self._built: dict[tuple[int, int, int], bytes] = {}  # (validator, height, round) -> good block hash
        self.target_height: int | None = None
        self.stats: dict[str, int] = {"events": 0, "messages": 0, "crashes": 0, "partitions": 0, "syncs": 0}
        self.heal_ms = self.live_ms = 0

    # ---- setup ------------------------------------------------------------------------

    def _make_nodes(self, observers: int) -> list[Node]:
        """The validators (Byzantine ones chosen by the seed), the observers, then the twins."""
        n = self.scenario.validators
        byzantine = sorted(self.rng.sample(range(n), self.scenario.byzantine))
        nodes = [Node(i, i, i not in byzantine) for i in range(n + observers)]
        if self.scenario.twins:
            nodes += [Node(n + observers + k, v, False) for k, v in enumerate(byzantine)]
        return nodes

    @property
    def honest(self) -> list[Node]:
        return [node for node in self.nodes if node.honest]

    def _split_twins(self) -> None:
        """Links each twin of a Byzantine validator to its own part of the honest nodes."""
        honest_ids = [node.id for node in self.honest]
        for node in self.nodes:
            if not node.honest and self.scenario.twins and node.id < self.scenario.validators:
                twin = next(t for t in self.nodes if t.key == node.key and t is not node)
                node.links, twin.links = self._twin_links(honest_ids)

    def _twin_links(self, honest_ids: list[int]) -> tuple[frozenset[int], frozenset[int]]:
        """Each honest node hears one twin or (less often) both; each twin reaches someone."""
        while True:
            sides = [self.rng.choices("ABX", (2, 2, 1))[0] for _ in honest_ids]
            a = frozenset(i for i, side in zip(honest_ids, sides) if side != "B")
            b = frozenset(i for i, side in zip(honest_ids, sides) if side != "A")
            if a and b:
                return a, b

    # ---- the event heap ---------------------------------------------------------------

    def at(self, time_ms: int, fn: Callable[..., object], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_ms, self._seq, fn, args))

    def after(self, delay_ms: int, fn: Callable[..., object], *args: Any) -> None:
        self.at(self.now_ms + delay_ms, fn, *args)

    def run_until(self, end_ms: int, done: Callable[[], bool] = lambda: False) -> None:
        heap = self._heap
        while heap and heap[0][0] <= end_ms and not done():
            time_ms, _, fn, args = heapq.heappop(heap)
            self.now_ms = time_ms
            self.stats["events"] += 1
            fn(*args)
        self.now_ms = max(self.now_ms, end_ms) if not done() else self.now_ms

    # ---- the run ----------------------------------------------------------------------

    def run(self) -> None:
        """The fault phase, then heal everything and demand progress within the bound."""
        self._split_twins()
        fault_end_ms = self.rng.randint(*self.scenario.fault_phase_ms)
        for node in self.nodes:
            if node.key < self.scenario.validators:
                self.boot(node)
            else:  # an observer starts later and catches up
                self.at(self.rng.randint(0, fault_end_ms // 2), self.restart, node, node.incarnation)
        self.after(0, self._client_tick)
        self.after(0, self._fault_tick, fault_end_ms)
        self.after(0, self._sync_tick)
        if self.plan:
            self.at(self.rng.randint(0, fault_end_ms // 2), self.operators.governor_tick)
        self.run_until(fault_end_ms)
        self._heal()
        self.target_height = max(node.height() for node in self.honest) + self.scenario.heights_after_heal
        deadline_ms = self.now_ms + self.scenario.liveness_bound_ms
        self.heal_ms = self.now_ms
        self.run_until(deadline_ms, self.live)
        self.live_ms = self.now_ms
        check_end(self)

    def target(self) -> int:
        """Past the heal and past the last activation, `heights_after_heal` heights."""
        assert self.target_height is not None
        return max(self.target_height, self.governor.last_activation() + self.scenario.heights_after_heal)

    def live(self) -> bool:
        """Every change passed, every honest node at the target, and every key a change made a validator
        has signed for a height of its set: the new set decides."""
        if not self.governor.done or any(node.height() < self.target() for node in self.honest):
            return False
        return not silent_new_validators(self)

    # ---- faults -----------------------------------------------------------------------

    def _fault_tick(self, fault_end_ms: int) -> None:
        if self.now_ms >= fault_end_ms:
            return
        s, rng = self.scenario, self.rng
        if self.net.groups is None and rng.random() < self.faults.partition_chance:
            self._partition(rng.randint(500, 8000))
        if rng.random() < self.faults.crash_chance:
            self.crash_some_node()
        if s.twins and s.byzantine and rng.random() < 0.05:
            self._split_twins()
        self.after(500, self._fault_tick, fault_end_ms)

    def _partition(self, duration_ms: int) -> None:
        groups = self.rng.randint(2, 3)
        self.net.groups = {node.id: self.rng.randrange(groups) for node in self.nodes}
        self.stats["partitions"] += 1
        self.after(duration_ms, self._end_partition, self.net.groups)

    def _end_partition(self, groups: dict[int, int]) -> None:
        if self.net.groups is groups:
            self.net.groups = None

    def crash_some_node(self) -> None:
        up = [node for node in self.nodes if node.up]
        crashing = sum(node.crash_mid_output for node in up)
        if len(self.nodes) - len(up) + crashing >= self.faults.crashed_max or not up:
            return
        node = self.rng.choice(up)
        if self.rng.random() < 0.5:
            node.crash_mid_output = True  # within its next output with two or more actions
        else:
            self.crash(node)

    def crash(self, node: Node) -> None:
        self.stats["crashes"] += 1
        node.lose_memory()
        self.after(self.rng.randint(300, 8000), self.restart, node, node.incarnation)

    def restart(self, node: Node, incarnation: int) -> None:
        if node.incarnation == incarnation and not node.up and not node.held_down:
            self.boot(node)

    def _heal(self) -> None:
        self.net = Network((5, 50), 0.0, 0.0)
        self.healed = True
        self.operators.on_heal()
        for node in self.nodes:
            node.crash_mid_output = False
            if not node.up and not node.held_down:
                self.boot(node)

    # ---- a node's life ----------------------------------------------------------------

    def boot(self, node: Node) -> None:
        """Starts or restarts `node` from what its store holds, as the node's composition root does: its
        replica knows the validators of the height after the ledger's and of the one after that."""
        if node.rekey_to is not None:
            node.key, node.rekey_to = node.rekey_to, None
        node.ledger = Ledger(ChainStore(node.store), self.genesis)
        me = self.keyring.public_keys[node.key]
        node.pipeline = CommitPipeline(node.ledger, Mempool(MEMPOOL_TXS_MAX), me, BLOCK_TXS_MAX, self.keyring.verify)
        tip = node.height()
        if node.honest:
            self.invariants.on_height(node.id, tip)
        for tx in node.txlog.values():  # the mempool log brings back what clients submitted here
            node.pipeline.pool.add(tx)
        saved = node.ledger.store.load_safety()
        safety = decode_safety(saved) if saved is not None else None
        config = replace(self.config, validators=self._validators(node, tip + 1))
        known = {tip + 2: self._validators(node, tip + 2)}
        node.replica = Replica(config, self.keyring.keys[node.key], tip + 1, safety, known_validators=known)
        self._perform(node, node.replica.start())
        if len(node.pipeline.pool):
            self._feed_later(node, 0, TransactionsPending())

    def _feed_later(self, node: Node, delay_ms: int, event: Event) -> None:
        self.after(delay_ms, self._feed, node, node.incarnation, event)

    def _feed(self, node: Node, incarnation: int, event: Event) -> None:
        if node.replica is not None and node.incarnation == incarnation:
            self._perform(node, node.replica.handle(event))

    def _fire_timer(self, node: Node, incarnation: int, timer: int, event: TimeoutFired) -> None:
        if node.timer == timer:
            self._feed(node, incarnation, event)

    def _perform(self, node: Node, actions: list[Action]) -> None:
        """Carries out `actions` in order, each follow-up event's actions after them, as the Driver
        does; a crash may cut them short."""
        queue = deque(actions)
        cut = self.rng.randrange(1, len(actions)) if node.crash_mid_output and len(actions) >= 2 else -1
        done = 0
        while queue and node.replica is not None:
            if done == cut:
                self.stats["crashes_mid_output"] = self.stats.get("crashes_mid_output", 0) + 1
                self.crash(node)
                return
            follow_ups = self._carry_out(node, queue.popleft())
            done += 1
            for event in follow_ups:
                if node.replica is not None:
                    queue.extend(node.replica.handle(event))
        self._check_heights(node)

    def _check_heights(self, node: Node) -> None:
        """The replica works on the height after the ledger's, unless a commit waits for catch-up."""
        if node.replica is None:
            return
        replica, stored = node.replica.height, node.height()
        if replica != stored + 1 and not (node.deferred > stored and replica > stored):
            raise InvariantViolated(f"node {node.id}'s replica is at height {replica} with {stored} blocks stored")

    def _carry_out(self, node: Node, action: Action) -> list[Event]:
        assert node.ledger is not None
        if isinstance(action, PersistSafetyState):
            node.ledger.store.save_safety(encode_safety(action.state))
        elif isinstance(action, Broadcast):
            self._broadcast(node, action.signed)
        elif isinstance(action, SendTo):
            self._send_to(node, action)
        elif isinstance(action, ScheduleTimeout):
            node.timer += 1
            event = TimeoutFired(action.height, action.round)
            self.after(action.delay_ms, self._fire_timer, node, node.incarnation, node.timer, event)
        elif isinstance(action, BuildBlock):
            node.build_wanted = (action.height, action.round)
            self.after(self.rng.randint(*self.scenario.build_delay_ms), self._try_build, node, node.incarnation)
        elif isinstance(action, ValidateBlock):
            if node.replica is not None and action.height < node.replica.height:
                self.stats["validations_of_left_heights"] = self.stats.get("validations_of_left_heights", 0) + 1
                return []  # decided later in the same output, as the Driver skips it
            verdict = self._validate(node, action)
            return [] if verdict is None else [verdict]
        elif isinstance(action, CommitBlock):
            return self._commit(node, action)
        elif isinstance(action, RequestSync):
            self._request_sync(node)
        return []

    # ---- transactions -----------------------------------------------------------------

    def _client_tick(self) -> None:
        """The client submits its next transaction."""
        txs = client_txs()
        if self._next_tx < len(txs) and self.submit(txs[self._next_tx]):
            self._next_tx += 1
        self.after(self.rng.randint(*CLIENT_GAP_MS), self._client_tick)

    def submit(self, tx: Transaction) -> bool:
        """`tx` goes to an honest node that is up, which logs it durably; gossip brings it to each
        other node, or loses it. False when no honest node is up."""
        up = [node for node in self.honest if node.up]
        if not up:
            return False
        self.invariants.submitted.add(tx.hash)
        entry = self.rng.choice(up)
        if self._admit(entry, entry.incarnation, tx):
            entry.txlog[tx.hash] = tx
        for node in self.nodes:
            if node is not entry and not self._lost():
                self.after(self._hop_ms(), self._admit, node, node.incarnation, tx)
        return True

    def _admit(self, node: Node, incarnation: int, tx: Transaction) -> bool:
        """What admission does with a verified transaction: into the pool unless held, committed or full."""
        pipeline = node.pipeline
        if node.incarnation != incarnation or pipeline is None or node.ledger is None:
            return False
        pool = pipeline.pool
        if tx.hash in pool or node.ledger.has_tx(tx.hash) or pool.full():
            return False
        pool.add(tx)
        if node.build_wanted is not None:
            self.after(0, self._try_build, node, incarnation)
        if len(pool) == 1:
            self._feed(node, incarnation, TransactionsPending())
        return True

    def _fetch(self, node: Node, tx_hashes: list[bytes]) -> dict[bytes, Transaction]:
        """What a fetch brings: the transactions linked peers hold, each peer's answer possibly lost."""
        self.stats["fetches"] = self.stats.get("fetches", 0) + 1
        fetched: dict[bytes, Transaction] = {}
        for peer in self.nodes:
            if peer.pipeline is None or peer is node or not self.linked(node, peer) or self._lost():
                continue
            for tx_hash in tx_hashes:
                tx = peer.pipeline.held_tx(tx_hash)
                if tx is not None:
                    fetched[tx_hash] = tx
        return fetched

    # ---- blocks -----------------------------------------------------------------------

    def _try_build(self, node: Node, incarnation: int) -> None:
        """Builds the block asked for once the pool has transactions, as the Driver's build loop does."""
        pipeline = node.pipeline
        if node.incarnation != incarnation or pipeline is None or node.build_wanted is None or not len(pipeline.pool):
            return
        (height, round_), node.build_wanted = node.build_wanted, None
        txs = pipeline.block_txs()
        if not node.honest:  # a twin builds its own block: other transactions, in another order
            txs = self.rng.sample(txs, self.rng.randint(1, len(txs)))
        candidate = pipeline.build(height, txs, self.now_ms)
        if candidate is None:
            return
        pipeline.remember(candidate, self.now_ms / 1000)
        body = proposal_body(candidate, lambda tx_hash: self.rng.random() >= BY_HASH)
        block_hash = candidate.block_hash
        if not node.honest and self.rng.random() < self.scenario.bad_blocks:
            body, block_hash = self._bad_block(node, height, round_, candidate)
        else:
            self._built.setdefault((node.key, height, round_), block_hash)
        self._feed(node, incarnation, BlockBuilt(height, round_, body, block_hash))

    def _bad_block(self, node: Node, height: int, round_: int, candidate: Candidate) -> tuple[bytes, bytes]:
        """Its twin's hash over this block's bytes if it built one, else a block the check refuses."""
        twin_hash = self._built.get((node.key, height, round_))
        body = proposal_body(candidate, lambda tx_hash: True)
        if twin_hash is not None:
            return body, twin_hash  # half the network gets the block, the other half other bytes under its hash
        body, block_hash = bad_block(self.rng, candidate)
        self.invariants.bad_hashes.add(block_hash)
        return body, block_hash

    def _validate(self, node: Node, action: ValidateBlock) -> BlockValidated | None:
        """As the Driver does: the proposers of the rounds so far, taken when the action comes, then the
        missing transactions fetched, then the check."""
        assert node.pipeline is not None and node.replica is not None
        proposers = frozenset(node.replica.proposer(action.height, r) for r in range(action.round + 1))
        node.pipeline.proposed(action.block_hash, self.now_ms / 1000)
        missing = node.pipeline.missing_txs(action.block)
        if not missing:
            return self._verdict(node, action, proposers, {})
        fetched = self._fetch(node, missing)  # the answer comes back a hop later
        self.after(2 * self._hop_ms(), self._validate_fetched, node, node.incarnation, action, proposers, fetched)
        return None

    def _validate_fetched(
        self, node: Node, incarnation: int, action: ValidateBlock, proposers: frozenset[bytes], fetched: Fetched
    ) -> None:
        if node.replica is not None and node.incarnation == incarnation:
            self._perform(node, node.replica.handle(self._verdict(node, action, proposers, fetched)))

    def _verdict(self, node: Node, action: ValidateBlock, proposers: frozenset[bytes], fetched: Fetched) -> BlockValidated:
        """The real block check, then (rarely, for honest nodes) a wrong refusal."""
        assert node.pipeline is not None
        try:
            candidate = node.pipeline.validate(action, proposers, fetched, self.now_ms)
        except BlockInvalid:
            self.stats["blocks_invalid"] = self.stats.get("blocks_invalid", 0) + 1
            return BlockValidated(action.height, action.round, action.block_hash, False)
        if node.honest and self.rng.random() < self.scenario.flaky_validation:
            return BlockValidated(action.height, action.round, action.block_hash, False)
        node.pipeline.validated(candidate, self.now_ms / 1000)
        return BlockValidated(action.height, action.round, action.block_hash, True)

    def _commit(self, node: Node, action: CommitBlock) -> list[Event]:
        pipeline = node.pipeline
        assert pipeline is not None
        if node.honest:
            self.invariants.check_certificate(node.id, action.height, action.block_hash, action.certificate)
        if action.height > node.height() + 1:  # an earlier decided block waits for catch-up: so does this one
            return []
        missing = pipeline.missing_for_commit(action)
        outcome = pipeline.commit(action, self._fetch(node, missing) if missing else {})
        if isinstance(outcome, AlreadyStored):
            if outcome.forked and node.honest:
                raise InvariantViolated(f"node {node.id} committed a block other than the one it stored at {action.height}")
            return []
        if isinstance(outcome, Deferred):
            self.stats["commits_deferred"] = self.stats.get("commits_deferred", 0) + 1
            node.deferred = action.height
            self._request_sync(node)
            return []
        if node.honest and outcome.candidate.block_hash != action.block_hash:
            raise InvariantViolated(f"node {node.id} stored other bytes than consensus decided at {action.height}")
        known = self._committed(node, outcome)
        return [known, TransactionsPending()] if len(pipeline.pool) else [known]

    def _committed(self, node: Node, committed: Committed) -> ValidatorSetKnown:
        """Settles a stored block; the validators it makes known (those of two heights on) for the replica."""
        assert node.pipeline is not None and node.ledger is not None
        header = committed.candidate.block.header
        known = ValidatorSetKnown(header.height + 2, self._validators(node, header.height + 2))
        if node.honest:
            self.invariants.on_members(node.id, header.height, node.ledger.members(header.height))
            self.invariants.check_header_validators(node.id, header)
            certificate = node.ledger.certificate(header.height)
            assert certificate is not None
            self.invariants.check_certificate(node.id, header.height, header.hash(), certificate)
            self.invariants.on_stored(node.id, header.height, header.hash(), header.state_root, committed.tx_hashes)
            self.invariants.check_state(node.id, header, committed.candidate.execution, node.ledger)
        node.pipeline.settle(committed)
        for tx_hash in committed.tx_hashes:
            node.txlog.pop(tx_hash, None)  # the mempool log forgets what is committed
        if node.build_wanted is not None:
            self.after(0, self._try_build, node, node.incarnation)
        self.operators.near_activation(header.height)
        return known

    # ---- the network ------------------------------------------------------------------

    def linked(self, a: Node, b: Node) -> bool:
        """Whether messages from `a` can reach `b` now (whether `b` is up is checked on arrival)."""
        if a.key == b.key:
            return False  # twins do not talk to each other
        if a.links is not None and b.honest and b.id not in a.links:
            return False
        if b.links is not None and a.honest and a.id not in b.links:
            return False
        groups = self.net.groups
        return groups is None or groups.get(a.id, 0) == groups.get(b.id, 0)  # a node started since: group 0

    def _broadcast(self, node: Node, signed: Signed) -> None:
        """To the validators of the message's height (a Byzantine node sends to everyone)."""
        wanted = None
        if node.honest:
            self.invariants.on_broadcast(node.id, signed)
            wanted = self._validators_known(node, signed.message.height)
        elif self.scenario.forged_certificates:
            signed = self._forge_certificate(node, signed)
        wire, keys = encode_signed(signed), self.keyring.public_keys
        for peer in self.nodes:
            if peer is not node and (wanted is None or keys[peer.key] in wanted):
                self._send(node, peer, wire)

    def _validators_known(self, node: Node, height: int) -> tuple[bytes, ...] | None:
        assert node.ledger is not None
        if not 1 <= height <= node.height() + 2:
            return None  # a decided height whose commit waits for catch-up: its set is not known here
        return node.ledger.members(height).validator_keys

    def _forge_certificate(self, node: Node, signed: Signed) -> Signed:
        """The one attack written by hand: a round change whose prepared certificate holds real
        prepares but other bytes, to make the next proposer propose a block nobody can validate."""
        m = signed.message
        if not isinstance(m, RoundChange) or m.prepared is None:
            return signed
        forged = replace(m.prepared, block=b"forged:" + m.prepared.block)
        return sign(self.keyring.keys[node.key], CHAIN_ID, replace(m, prepared=forged))

    def _send_to(self, node: Node, action: SendTo) -> None:
        wire = encode_signed(action.signed)
        for peer in self.nodes:
            if peer is not node and self.keyring.public_keys[peer.key] == action.peer:
                self._send(node, peer, wire)

    def _send(self, node: Node, peer: Node, wire: bytes) -> None:
        if not self.linked(node, peer):
            return
        rng, net = self.rng, self.net
        if net.loss and rng.random() < net.loss:
            return
        self.stats["messages"] += 1
        self.after(rng.randint(*net.delay_ms), self._deliver, peer, wire)
        if net.duplicate and rng.random() < net.duplicate:
            self.after(rng.randint(*net.delay_ms), self._deliver, peer, wire)

    def _deliver(self, peer: Node, wire: bytes) -> None:
        if peer.replica is None:
            return
        signed = decode_signed(wire)
        if signed.sender not in self.invariants.validators.get(signed.message.height, ()):
            peer.foreign += 1  # signed with a key that is not a validator there: to be refused
        self._perform(peer, peer.replica.handle(MessageReceived(signed)))

    # ---- membership -------------------------------------------------------------------

    def _validators(self, node: Node, height: int) -> tuple[bytes, ...]:
        """The validators `node`'s shell gives its replica for `height`: its ledger's. A Byzantine node
        whose key was removed or replaced keeps that key in its sets, and so goes on signing with it."""
        assert node.ledger is not None
        members = node.ledger.members(height)
        validators = members.validator_keys
        if node.honest:
            self.invariants.on_members(node.id, height, members)
            return validators
        me = self.keyring.public_keys[node.key]
        if me in validators or me not in self.genesis.validator_keys:
            return validators
        new = self.operators.replaced.get(me)
        return tuple(me if key == new else key for key in validators) if new in validators else validators + (me,)

    def _sync_tick(self) -> None:
        """What each node's syncer does with the heights its peers announce: a node two blocks behind asks
        an ahead peer for blocks, as does one behind at all that is not a validator of its height (it
        follows: no messages come to it) or whose decided block waits."""
        for node in self.nodes:
            if node.replica is not None:
                following = not node.replica.is_validator or node.deferred > node.height()
                self._request_sync(node, 1 if following else 2)
        self.operators.release_if_stalled()
        self.after(SYNC_TICK_MS, self._sync_tick)

    # ---- catch-up ---------------------------------------------------------------------

    def _request_sync(self, node: Node, behind: int = 1) -> None:
        """Asks a random linked peer that is ahead (peers announce their heights) for the blocks
        after ours; one request at a time."""
        if node.syncing:
            return
        peers = [peer for peer in self.nodes if peer is not node and peer.up and self.linked(node, peer)]
        peers = [peer for peer in peers if peer.height() >= node.height() + behind]
        if not peers:
            return
        self.stats["syncs"] += 1
        node.syncing = self.stats["syncs"]
        peer = self.rng.choice(peers)
        self.after(self._hop_ms(), self._serve_sync, peer, node, node.incarnation, node.height() + 1)
        self.after(2000, self._sync_expired, node, node.syncing)

    def _hop_ms(self) -> int:
        return self.rng.randint(*self.net.delay_ms)

    def _sync_expired(self, node: Node, request: int) -> None:
        if node.syncing == request:
            node.syncing = 0

    def _serve_sync(self, peer: Node, node: Node, incarnation: int, first: int) -> None:
        """What a peer's sync server sends: stored blocks with their certificates, as they are on disk."""
        if peer.ledger is None or not self.linked(peer, node) or self._lost():
            return
        store, blocks = peer.ledger.store, []
        for height in range(first, min(peer.height(), first + 63) + 1):
            block, cert = store.load_block(height), store.load_certificate(height)
            assert block is not None and cert is not None
            blocks.append((block, cert))
        self.after(self._hop_ms(), self._receive_sync, node, incarnation, blocks)

    def _lost(self) -> bool:
        return bool(self.net.loss) and self.rng.random() < self.net.loss

    def _receive_sync(self, node: Node, incarnation: int, blocks: list[tuple[bytes, bytes]]) -> None:
        """Applies each block through the pipeline (certificate and execution checked), then tells the replica."""
        if node.incarnation != incarnation or node.replica is None:
            return
        node.syncing = 0
        for block, cert in blocks:
            if node.pipeline is None or node.replica is None:
                return  # crashed while telling the replica
            try:
                committed = node.pipeline.apply_synced(block, cert)
            except BlockInvalid:
                self.stats["bad_blocks_served"] = self.stats.get("bad_blocks_served", 0) + 1
                break  # e.g. a twin that committed its own forged bytes: keep what checked out
            if committed is None:
                continue  # consensus stored that height meanwhile
            known = self._committed(node, committed)
            self._perform(node, node.replica.handle(BlockSynced(committed.height)))
            if node.replica is not None:
                self._perform(node, node.replica.handle(known))
        if node.pipeline is not None and len(node.pipeline.pool):
            self._feed(node, incarnation, TransactionsPending())




def run(scenario: Scenario, seed: int) -> Simulation:
    sim = Simulation(scenario, seed)
    sim.run()
    return sim
