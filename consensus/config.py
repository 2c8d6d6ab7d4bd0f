"""A replica's settings: the chain, its validators, round timeouts and the bounds on what it keeps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReplicaConfig:
    chain_id: str
    validators: tuple[bytes, ...]
    round_timeout_ms: int = 2000
    round_timeout_max_ms: int = 60000
    future_heights_max: int = 4  # heights ahead whose messages are kept for later
    future_messages_max: int = 1024  # messages kept for later heights, in all
    future_rounds_max: int = 64  # rounds ahead whose votes are tallied

    def round_timeout(self, round_: int) -> int:
        """Milliseconds a round lasts: doubling from round_timeout_ms, capped at round_timeout_max_ms."""
        return min(self.round_timeout_ms << min(round_, 30), self.round_timeout_max_ms)
