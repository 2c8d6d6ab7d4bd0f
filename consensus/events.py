"""Events: past-tense facts the shell feeds to the replica."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from consensus.messages import Signed


@dataclass(frozen=True)
class MessageReceived:
    """A decoded message from a peer; its signatures are not yet checked."""

    signed: Signed


@dataclass(frozen=True)
class TransactionsPending:
    """The mempool holds transactions: a round timer is worth running."""


@dataclass(frozen=True)
class BlockBuilt:
    """The shell built the block asked for by BuildBlock."""

    height: int
    round: int
    block: bytes
    block_hash: bytes


@dataclass(frozen=True)
class BlockValidated:
    """The outcome of ValidateBlock: structure, hash, signatures and execution."""

    height: int
    round: int
    block_hash: bytes
    valid: bool


@dataclass(frozen=True)
class TimeoutFired:
    height: int
    round: int


@dataclass(frozen=True)
class BlockSynced:
    """Catch-up stored blocks up to `height` with verified certificates."""

    height: int


@dataclass(frozen=True)
class ValidatorSetKnown:
    """The validators that decide `height` are these, in proposer order.

    Sent once per height, in increasing order, as soon as the shell knows it
    (a change decided in block p takes effect at p + 2).
    """

    height: int
    validators: tuple[bytes, ...]


Event = Union[
    MessageReceived, TransactionsPending, BlockBuilt, BlockValidated, TimeoutFired, BlockSynced, ValidatorSetKnown
]
