"""A deterministic simulation of a validator network running the real consensus core.

One seed drives everything (tigerbeetle's VOPR is the model): a `random.Random`
picks every delay, loss, duplicate, partition, crash and block, and an event
heap keyed by (virtual time in ms, sequence number) decides what happens next.
Nothing reads a clock or depends on hash order, so a seed replays exactly.

Each node is one `Replica` with its own `MemoryStore` under a `ChainStore`, and
the simulator plays the node's shell: it carries out the replica's actions in
order (PersistSafetyState is a synced write, CommitBlock a synced batch),
answers BuildBlock and ValidateBlock after a short delay, runs one round timer
per node, and catches a lagging node up from a random peer. A crash drops the
replica and every unsynced write, possibly in the middle of one `handle()`
output; a restart rebuilds the replica from what the store kept.

Byzantine validators are Diem's Twins: two nodes run honest code with one key,
each linked to a different part of the honest network and each building its
own blocks, which gives real equivocation without writing any attacker.

Signatures are a keyed hash over the real signing bytes (see keyring.py), not
Ed25519, so that hundreds of seeds fit in a CI run.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

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
from consensus.events import BlockBuilt, BlockSynced, BlockValidated, Event, MessageReceived, TimeoutFired, TransactionsPending
from consensus.messages import RoundChange, Signed, decode_signed, encode_signed, sign
from consensus.quorum import fault_tolerance, quorum
from consensus.config import ReplicaConfig
from consensus.replica import Replica
from consensus.safety import decode_safety, encode_safety
from storage.chain import BlockWrite, ChainStore
from storage.memory import MemoryStore
from tests.sim.invariants import Invariants, InvariantViolated, certificate_ok
from tests.sim.keyring import Keyring
from tests.sim.scenario import SCENARIOS, Faults, Network, Scenario

__all__ = ["SCENARIOS", "Scenario", "Simulation", "run"]

CHAIN_ID = "sim-chain"


@dataclass
class Node:
    """One process: a replica (None while crashed) over a store that survives crashes."""

    id: int
    validator: int
    honest: bool
    store: MemoryStore = field(default_factory=MemoryStore)
    replica: Replica | None = None
    chain: ChainStore | None = None
    incarnation: int = 0  # bumped by every crash; stale timers and answers are dropped
    timer: int = 0  # the current round timer; a new ScheduleTimeout replaces it
    syncing: int = 0  # nonzero while a catch-up request is out
    crash_mid_output: bool = False
    links: frozenset[int] | None = None  # for twins: the only honest nodes it talks to
    dropped: Counter[str] = field(default_factory=Counter)  # what earlier incarnations dropped

    @property
    def up(self) -> bool:
        return self.replica is not None

    def height(self) -> int:
        assert self.chain is not None
        return self.chain.height()


class Simulation:
    def __init__(self, scenario: Scenario, seed: int):
        self.scenario = scenario
        self.seed = seed
        self.rng = random.Random(seed)
        self.now_ms = 0
        self._heap: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.keyring = Keyring(scenario.validators)
        self.config = ReplicaConfig(
            CHAIN_ID,
            self.keyring.public_keys,
            round_timeout_ms=scenario.round_timeout_ms,
            round_timeout_max_ms=scenario.round_timeout_max_ms,
        )
        self.f = fault_tolerance(scenario.validators)
        self.quorum = quorum(scenario.validators)
        assert scenario.byzantine <= self.f, "more Byzantine validators than the network tolerates"
        self.invariants = Invariants(self.keyring, self.quorum)
        self.nodes = self._make_nodes()
        self.faults = Faults.draw(self.rng, scenario, len(self.nodes))
        self.net = replace(self.faults.network)
        self._built: dict[tuple[int, int, int], bytes] = {}  # (validator, height, round) -> good block hash
        self.target_height: int | None = None
        self.stats: dict[str, int] = {"events": 0, "messages": 0, "crashes": 0, "partitions": 0, "syncs": 0}
        self.heal_ms = self.live_ms = 0

    # ---- setup ------------------------------------------------------------------------

    def _make_nodes(self) -> list[Node]:
        n = self.scenario.validators
        byzantine = sorted(self.rng.sample(range(n), self.scenario.byzantine))
        nodes = [Node(i, i, i not in byzantine) for i in range(n)]
        if self.scenario.twins:
            nodes += [Node(n + k, v, False) for k, v in enumerate(byzantine)]
        return nodes

    @property
    def honest(self) -> list[Node]:
        return [node for node in self.nodes if node.honest]

    def _split_twins(self) -> None:
        """Links each twin of a Byzantine validator to its own part of the honest nodes."""
        honest_ids = [node.id for node in self.honest]
        for node in self.nodes:
            if not node.honest and self.scenario.twins and node.id < self.scenario.validators:
                twin = next(t for t in self.nodes if t.validator == node.validator and t is not node)
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

    def at(self, time_ms: int, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time_ms, self._seq, fn, args))

    def after(self, delay_ms: int, fn: Callable[..., None], *args: Any) -> None:
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
        for node in self.nodes:
            self._boot(node)
        fault_end_ms = self.rng.randint(*self.scenario.fault_phase_ms)
        self.after(0, self._fault_tick, fault_end_ms)
        self.run_until(fault_end_ms)
        self._heal()
        self.target_height = max(node.height() for node in self.honest) + self.scenario.heights_after_heal
        deadline_ms = self.now_ms + self.scenario.liveness_bound_ms
        self.heal_ms = self.now_ms
        self.run_until(deadline_ms, self._live)
        self.live_ms = self.now_ms
        self._check_end()

    def _live(self) -> bool:
        assert self.target_height is not None
        return all(node.height() >= self.target_height for node in self.honest)

    def _check_end(self) -> None:
        if not self._live():
            heights = {node.id: (node.height(), node.replica and node.replica.round) for node in self.honest}
            raise InvariantViolated(
                f"no liveness: {self.scenario.heights_after_heal} heights past the heal were not reached "
                f"by every honest node within {self.scenario.liveness_bound_ms} ms; "
                f"target {self.target_height}, (height, round) by node {heights}"
            )
        self._check_chains()
        self._check_drops()

    def _check_drops(self) -> None:
        """Every message here is validly signed by a member: an honest replica that rejects one
        as forged or unjustified rejects what honest code produced."""
        for node in self.honest:
            assert node.replica is not None
            dropped = node.dropped + node.replica.dropped
            wrong = {reason: dropped[reason] for reason in UNEXPECTED_DROPS if dropped[reason]}
            if wrong:
                raise InvariantViolated(f"honest node {node.id} dropped well-formed messages: {wrong}")

    def _check_chains(self) -> None:
        """Every honest store holds a prefix of one chain, re-read from the stores themselves."""
        for node in self.honest:
            assert node.chain is not None
            for height in range(1, node.height() + 1):
                block = node.chain.load_block(height)
                assert block is not None
                self.invariants.check_block(node.id, height, block, hashlib.sha256(block).digest())

    # ---- faults -----------------------------------------------------------------------

    def _fault_tick(self, fault_end_ms: int) -> None:
        if self.now_ms >= fault_end_ms:
            return
        s, rng = self.scenario, self.rng
        if self.net.groups is None and rng.random() < self.faults.partition_chance:
            self._partition(rng.randint(500, 8000))
        if rng.random() < self.faults.crash_chance:
            self._crash_some_node()
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

    def _crash_some_node(self) -> None:
        up = [node for node in self.nodes if node.up]
        crashing = sum(node.crash_mid_output for node in up)
        if len(self.nodes) - len(up) + crashing >= self.faults.crashed_max or not up:
            return
        node = self.rng.choice(up)
        if self.rng.random() < 0.5:
            node.crash_mid_output = True  # within its next output with two or more actions
        else:
            self._crash(node)

    def _crash(self, node: Node) -> None:
        self.stats["crashes"] += 1
        assert node.replica is not None
        node.dropped.update(node.replica.dropped)
        node.replica = node.chain = None
        node.incarnation += 1
        node.crash_mid_output = False
        node.syncing = 0
        node.store.crash()
        self.after(self.rng.randint(300, 8000), self._restart, node, node.incarnation)

    def _restart(self, node: Node, incarnation: int) -> None:
        if node.incarnation == incarnation and not node.up:
            self._boot(node)

    def _heal(self) -> None:
        self.net = Network((5, 50), 0.0, 0.0)
        for node in self.nodes:
            node.crash_mid_output = False
            if not node.up:
                self._boot(node)

    # ---- a node's life ----------------------------------------------------------------

    def _boot(self, node: Node) -> None:
        """Starts or restarts `node` from what its store holds."""
        node.chain = ChainStore(node.store)
        if node.honest:
            self.invariants.on_height(node.id, node.height())
        saved = node.chain.load_safety()
        safety = decode_safety(saved) if saved is not None else None
        node.replica = Replica(self.config, self.keyring.keys[node.validator], node.height() + 1, safety)
        self._perform(node, node.replica.start())
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
        """Carries out `actions` in order, as the node's driver does; a crash may cut them short."""
        cut = len(actions)
        if node.crash_mid_output and len(actions) >= 2:
            cut = self.rng.randrange(1, len(actions))
            self.stats["crashes_mid_output"] = self.stats.get("crashes_mid_output", 0) + 1
        for action in actions[:cut]:
            self._carry_out(node, action)
        if cut < len(actions):
            self._crash(node)
        elif node.replica is not None and node.replica.height != node.height() + 1:
            raise InvariantViolated(f"node {node.id}'s replica is at height {node.replica.height} "
                                    f"with {node.height()} blocks stored")

    def _carry_out(self, node: Node, action: Action) -> None:
        assert node.chain is not None
        if isinstance(action, PersistSafetyState):
            node.chain.save_safety(encode_safety(action.state))
        elif isinstance(action, Broadcast):
            self._broadcast(node, action.signed)
        elif isinstance(action, SendTo):
            self._send_to(node, action)
        elif isinstance(action, ScheduleTimeout):
            node.timer += 1
            event = TimeoutFired(action.height, action.round)
            self.after(action.delay_ms, self._fire_timer, node, node.incarnation, node.timer, event)
        elif isinstance(action, BuildBlock):
            self._build(node, action)
        elif isinstance(action, ValidateBlock):
            self._validate(node, action)
        elif isinstance(action, CommitBlock):
            self._commit(node, action)
        elif isinstance(action, RequestSync):
            self._request_sync(node)

    # ---- blocks -----------------------------------------------------------------------

    def _build(self, node: Node, action: BuildBlock) -> None:
        nonce = self.rng.getrandbits(32)
        block = b"block:%d:%d:%d:%d" % (action.height, action.round, node.validator, nonce)
        block_hash = hashlib.sha256(block).digest()
        if not node.honest and self.rng.random() < self.scenario.bad_blocks:
            block_hash = self._forged_hash(node, action, block)
        else:
            self._built.setdefault((node.validator, action.height, action.round), block_hash)
        built = BlockBuilt(action.height, action.round, block, block_hash)
        self._feed_later(node, self.rng.randint(*self.scenario.build_delay_ms), built)

    def _forged_hash(self, node: Node, action: BuildBlock, block: bytes) -> bytes:
        """A hash the block's bytes do not match: its twin's block's hash if it built one."""
        twin_hash = self._built.get((node.validator, action.height, action.round))
        if twin_hash is not None:
            return twin_hash  # half the network gets the block, the other half other bytes under its hash
        forged = hashlib.sha256(block + b":forged").digest()
        self.invariants.bad_hashes.add(forged)
        return forged

    def _validate(self, node: Node, action: ValidateBlock) -> None:
        valid = block_ok(action.height, action.block, action.block_hash)
        if valid and node.honest and self.rng.random() < self.scenario.flaky_validation:
            valid = False  # e.g. a transaction this node has not seen yet
        verdict = BlockValidated(action.height, action.round, action.block_hash, valid)
        self._feed_later(node, self.rng.randint(0, 30), verdict)

    def _commit(self, node: Node, action: CommitBlock) -> None:
        if node.honest:
            self.invariants.on_commit_certificate(node.id, action.height, action.block_hash, list(action.certificate))
        stored = node.height()
        if action.height <= stored:  # catch-up stored it first
            if node.honest and self.invariants.chain.get(action.height) != action.block_hash:
                raise InvariantViolated(f"node {node.id} committed a block other than the one it stored at {action.height}")
            return
        if action.height != stored + 1:
            raise InvariantViolated(f"node {node.id} committed height {action.height} with only {stored} stored")
        self._store(node, action.height, action.block, action.block_hash, action.certificate)
        self._feed_later(node, 0, TransactionsPending())

    def _store(self, node: Node, height: int, block: bytes, block_hash: bytes, certificate: Any) -> None:
        assert node.chain is not None
        cert = msgpack.packb([list(pair) for pair in certificate], use_bin_type=True)
        node.chain.write_block(BlockWrite(height, block_hash, block, cert, [], {}))
        if node.honest:
            self.invariants.on_stored(node.id, height, block, block_hash)

    # ---- the network ------------------------------------------------------------------

    def linked(self, a: Node, b: Node) -> bool:
        """Whether messages from `a` can reach `b` now (whether `b` is up is checked on arrival)."""
        if a.validator == b.validator:
            return False  # twins do not talk to each other
        if a.links is not None and b.honest and b.id not in a.links:
            return False
        if b.links is not None and a.honest and a.id not in b.links:
            return False
        groups = self.net.groups
        return groups is None or groups[a.id] == groups[b.id]

    def _broadcast(self, node: Node, signed: Signed) -> None:
        if node.honest:
            self.invariants.on_broadcast(node.id, signed)
        elif self.scenario.forged_certificates:
            signed = self._forge_certificate(node, signed)
        wire = encode_signed(signed)
        for peer in self.nodes:
            if peer is not node:
                self._send(node, peer, wire)

    def _forge_certificate(self, node: Node, signed: Signed) -> Signed:
        """The one attack written by hand: a round change whose prepared certificate holds real
        prepares but other bytes, to make the next proposer propose a block nobody can validate."""
        m = signed.message
        if not isinstance(m, RoundChange) or m.prepared is None:
            return signed
        forged = replace(m.prepared, block=b"forged:" + m.prepared.block)
        return sign(self.keyring.keys[node.validator], CHAIN_ID, replace(m, prepared=forged))

    def _send_to(self, node: Node, action: SendTo) -> None:
        wire = encode_signed(action.signed)
        for peer in self.nodes:
            if peer is not node and self.keyring.public_keys[peer.validator] == action.peer:
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
        if peer.replica is not None:
            self._perform(peer, peer.replica.handle(MessageReceived(decode_signed(wire))))

    # ---- catch-up ---------------------------------------------------------------------

    def _request_sync(self, node: Node) -> None:
        """Asks a random linked peer that is ahead (peers announce their heights) for the blocks
        after ours; one request at a time."""
        if node.syncing:
            return
        peers = [peer for peer in self.nodes if peer is not node and peer.up and self.linked(node, peer)]
        peers = [peer for peer in peers if peer.height() > node.height()]
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
        if peer.chain is None or not self.linked(peer, node) or self._lost():
            return
        blocks = []
        for height in range(first, min(peer.height(), first + 63) + 1):
            block, cert = peer.chain.load_block(height), peer.chain.load_certificate(height)
            assert block is not None and cert is not None
            blocks.append((height, block, cert))
        self.after(self._hop_ms(), self._receive_sync, node, incarnation, blocks)

    def _lost(self) -> bool:
        return bool(self.net.loss) and self.rng.random() < self.net.loss

    def _receive_sync(self, node: Node, incarnation: int, blocks: list[tuple[int, bytes, bytes]]) -> None:
        if node.incarnation != incarnation or node.replica is None:
            return
        node.syncing = 0
        stored = node.height()
        for height, block, cert in blocks:
            if height != node.height() + 1:
                continue
            block_hash = hashlib.sha256(block).digest()
            certificate = [(bytes(v), bytes(s)) for v, s in msgpack.unpackb(cert)]
            if not certificate_ok(self.keyring, self.quorum, block_hash, certificate):
                self.stats["bad_blocks_served"] = self.stats.get("bad_blocks_served", 0) + 1
                break  # e.g. a twin that committed its own forged bytes: keep what checked out
            self._store(node, height, block, block_hash, certificate)
        if node.height() > stored:
            self._perform(node, node.replica.handle(BlockSynced(node.height())))
            self._feed_later(node, 0, TransactionsPending())


UNEXPECTED_DROPS = (
    "non_member", "bad_signature", "bad_seal", "unjustified_proposal", "invalid_round_change", "sender_over_limit"
)


def block_ok(height: int, block: bytes, block_hash: bytes) -> bool:
    """What ValidateBlock checks here: the bytes match the hash and belong to this height."""
    return hashlib.sha256(block).digest() == block_hash and block.startswith(b"block:%d:" % height)


def run(scenario: Scenario, seed: int) -> Simulation:
    sim = Simulation(scenario, seed)
    sim.run()
    return sim
