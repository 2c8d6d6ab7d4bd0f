"""One simulated process: its store, which survives crashes, and what a crash loses."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from consensus.replica import Replica
from node.chain.ledger import Ledger
from node.chain.tx import Transaction
from node.pipeline.commit import CommitPipeline
from storage.chain import ChainStore
from storage.memory import MemoryStore


@dataclass
class Node:
    """A replica, ledger and commit pipeline (all None while down) over a store that survives crashes.

    `key` is the keyring index of the key it runs with: a validator's, an observer's,
    or (after its operator replaced it) a new one; twins share one.
    """

    id: int
    key: int
    honest: bool
    store: MemoryStore = field(default_factory=MemoryStore)
    txlog: dict[bytes, Transaction] = field(default_factory=dict)  # durable: the client transactions admitted here
    replica: Replica | None = None
    ledger: Ledger | None = None
    pipeline: CommitPipeline | None = None
    incarnation: int = 0  # bumped by every crash; stale timers and answers are dropped
    timer: int = 0  # the current round timer; a new ScheduleTimeout replaces it
    syncing: int = 0  # nonzero while a catch-up request is out
    build_wanted: tuple[int, int] | None = None  # (height, round) of a BuildBlock waiting for transactions
    deferred: int = 0  # a height consensus decided whose commit waits for catch-up (its transactions were missing)
    crash_mid_output: bool = False
    links: frozenset[int] | None = None  # for twins: the only honest nodes it talks to
    dropped: Counter[str] = field(default_factory=Counter)  # what earlier incarnations dropped
    rekey_to: int | None = None  # the key its next start runs with (its operator replaced its key)
    held_down: bool = False  # kept crashed (a validator removed while down), released by the simulation
    foreign: int = 0  # messages delivered here from keys that are not validators of the message's height

    @property
    def up(self) -> bool:
        return self.replica is not None

    def height(self) -> int:
        return ChainStore(self.store).height() if self.ledger is None else self.ledger.height

    def lose_memory(self) -> None:
        """A crash: everything but the store goes."""
        if self.replica is not None:
            self.dropped.update(self.replica.dropped)
        self.replica = self.ledger = self.pipeline = None
        self.incarnation += 1
        self.crash_mid_output = False
        self.syncing = self.deferred = 0
        self.build_wanted = None
        self.store.crash()
