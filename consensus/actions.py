"""Actions: imperatives the shell carries out in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from consensus.messages import Signed
from consensus.safety_state import SafetyState


@dataclass(frozen=True)
class PersistSafetyState:
    """Save with a synced write before carrying out any later action."""

    state: SafetyState


@dataclass(frozen=True)
class Broadcast:
    signed: Signed


@dataclass(frozen=True)
class SendTo:
    peer: bytes
    signed: Signed


@dataclass(frozen=True)
class ScheduleTimeout:
    """Feed TimeoutFired(height, round) after `delay_ms`; replaces any earlier timer."""

    height: int
    round: int
    delay_ms: int


@dataclass(frozen=True)
class BuildBlock:
    """Build a block for (height, round) once transactions are pending; answer with BlockBuilt."""

    height: int
    round: int


@dataclass(frozen=True)
class ValidateBlock:
    height: int
    round: int
    block: bytes
    block_hash: bytes


@dataclass(frozen=True)
class CommitBlock:
    """Save the block with its certificate (validator key, seal) in one synced batch."""

    height: int
    block: bytes
    block_hash: bytes
    certificate: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class RequestSync:
    """Peers are at `height` or beyond: fetch committed blocks from them."""

    height: int


Action = Union[
    PersistSafetyState, Broadcast, SendTo, ScheduleTimeout, BuildBlock, ValidateBlock, CommitBlock, RequestSync
]
