"""Shared helpers for the consensus tests: Ed25519 crypto, fixed keys, blocks,
and a small in-memory network that carries out the replicas' actions."""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from nacl.exceptions import CryptoError
from nacl.signing import SigningKey, VerifyKey

from consensus.actions import (
    Action,
    Broadcast,
    BuildBlock,
    CommitBlock,
    PersistSafetyState,
    ValidateBlock,
)
from consensus.events import BlockBuilt, BlockValidated, Event, MessageReceived
from consensus.messages import Message, Signed, sign
from consensus.config import ReplicaConfig
from consensus.replica import Replica
from consensus.safety_state import SafetyState

CHAIN_ID = "test-chain"


class Ed25519:
    """The `Crypto` protocol over PyNaCl; the key comes from a fixed seed."""

    def __init__(self, seed: bytes):
        self._key = SigningKey(seed)
        self.public_key = bytes(self._key.verify_key)

    def sign(self, data: bytes) -> bytes:
        return bytes(self._key.sign(data).signature)

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool:
        try:
            VerifyKey(public_key).verify(data, signature)
            return True
        except (CryptoError, ValueError, TypeError):
            return False


def make_keys(n: int) -> list[Ed25519]:
    return [Ed25519(bytes([i + 1]) * 32) for i in range(n)]


OUTSIDER = Ed25519(b"\xee" * 32)  # a well-formed key that is not a validator


def make_config(n: int, **kwargs: Any) -> ReplicaConfig:
    return ReplicaConfig(CHAIN_ID, tuple(k.public_key for k in make_keys(n)), **kwargs)


def block_for(height: int, round_: int) -> bytes:
    return b"block:%d:%d" % (height, round_)


def hash_of(block: bytes) -> bytes:
    return hashlib.sha256(block).digest()


def signed_by(crypto: Ed25519, message: Message) -> Signed:
    return sign(crypto, CHAIN_ID, message)


def broadcasts(actions: list[Action], kind: type | None = None) -> list[Any]:
    """The messages in `actions`' Broadcasts, optionally only those of one kind."""
    msgs = [a.signed.message for a in actions if isinstance(a, Broadcast)]
    return [m for m in msgs if kind is None or isinstance(m, kind)]


def of_type(actions: list[Action], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def assert_persisted_before_broadcast(actions: list[Action], persisted_earlier: tuple[Signed, ...] = ()) -> None:
    """Every Broadcast message is in a safety state persisted before it (earlier or in `actions`)."""
    saved = set(persisted_earlier)
    for a in actions:
        if isinstance(a, PersistSafetyState):
            saved.update(a.state.sent)
        elif isinstance(a, Broadcast):
            assert a.signed in saved, f"broadcast before persisting: {a.signed.message}"


DropRule = Callable[[int, int, Signed], bool]  # (sender index, receiver index, message) -> drop?


class Network:
    """Delivers Broadcasts to the other replicas through one FIFO queue and answers
    BuildBlock / ValidateBlock at once. Crashed replicas neither run nor send.
    BuildBlock is answered only up to `build_heights_max`, so a run ends by itself.

    `sets` maps heights to the indices of the validators from that height on
    (1 among them), every replica told them all; None: all n, a static chain."""

    def __init__(
        self, n: int, *, crashed: Iterable[int] = (), build_heights_max: int = 1,
        sets: Mapping[int, Sequence[int]] | None = None, **config: Any,
    ):
        self.keys = make_keys(n)
        self.known = None if sets is None else {
            h: tuple(self.keys[i].public_key for i in sets[max(s for s in sets if s <= h)])
            for h in range(1, build_heights_max + 2)
        }
        validators = tuple(k.public_key for k in self.keys) if self.known is None else self.known[1]
        self.config = ReplicaConfig(CHAIN_ID, validators, **config)
        self.replicas = [Replica(self.config, k, 1, known_validators=self.known) for k in self.keys]
        self.crashed = set(crashed)
        self.build_heights_max = build_heights_max
        self.drop: DropRule = lambda sender, receiver, signed: False
        self.valid: Callable[[int, bytes], bool] = lambda index, block: True  # ValidateBlock's answer
        self.queue: deque[tuple[int, Event]] = deque()
        self.actions: list[list[Action]] = [[] for _ in range(n)]  # everything each replica emitted
        self.commits: list[list[CommitBlock]] = [[] for _ in range(n)]
        self.persisted: list[list[SafetyState]] = [[] for _ in range(n)]

    @property
    def live(self) -> list[int]:
        return [i for i in range(len(self.replicas)) if i not in self.crashed]

    def start(self) -> Network:
        for i in self.live:
            self.route(i, self.replicas[i].start())
        return self

    def deliver(self, i: int, event: Event) -> list[Action]:
        actions = self.replicas[i].handle(event)
        self.route(i, actions)
        return actions

    def run(self, steps_max: int = 100_000) -> Network:
        for _ in range(steps_max):
            if not self.queue:
                return self
            i, event = self.queue.popleft()
            if i not in self.crashed:
                self.deliver(i, event)
        raise AssertionError("the network did not go quiet")

    def restart(self, i: int) -> list[Action]:
        """Replaces replica i by a new one resumed from its last persisted safety state."""
        safety = self.persisted[i][-1] if self.persisted[i] else None
        height = len(self.commits[i]) + 1
        config = self.config if self.known is None else replace(self.config, validators=self.known[height])
        self.replicas[i] = Replica(config, self.keys[i], height, safety, known_validators=self.known)
        actions = self.replicas[i].start()
        self.route(i, actions)
        return actions

    def route(self, i: int, actions: list[Action]) -> None:
        self.actions[i].extend(actions)
        for a in actions:
            if isinstance(a, PersistSafetyState):
                self.persisted[i].append(a.state)
            elif isinstance(a, Broadcast):
                self._send(i, a.signed)
            elif isinstance(a, BuildBlock) and a.height <= self.build_heights_max:
                block = block_for(a.height, a.round)
                self.queue.append((i, BlockBuilt(a.height, a.round, block, hash_of(block))))
            elif isinstance(a, ValidateBlock):
                ok = hash_of(a.block) == a.block_hash and self.valid(i, a.block)
                self.queue.append((i, BlockValidated(a.height, a.round, a.block_hash, ok)))
            elif isinstance(a, CommitBlock):
                self.commits[i].append(a)

    def _send(self, i: int, signed: Signed) -> None:
        if i in self.crashed:
            return
        for j in range(len(self.replicas)):
            if j != i and not self.drop(i, j, signed):
                self.queue.append((j, MessageReceived(signed)))

    def committed_blocks(self, i: int) -> list[bytes]:
        return [c.block for c in self.commits[i]]

    def sent_by(self, i: int) -> list[Message]:
        return broadcasts(self.actions[i])
