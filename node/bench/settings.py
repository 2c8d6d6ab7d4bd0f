"""What one `alliance bench` run was asked for, once its flags are checked."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    nodes: int
    rate: float  # offered transactions per second; 0 means as fast as possible
    duration_s: float  # the measured window; math.inf with catch_up: until the count is committed
    catch_up: int | None  # transactions to commit with catch_up_node stopped, then time its catch-up
    catch_up_node: int
    join: bool  # with catch_up: then time catch_up_node joining from an empty store, by state and by block sync
    join_runs: int  # how many times each
    count: int  # transactions pre-signed
    batch: int
    connections: int  # per node
    signers: int
    poll_s: float  # with catch_up, how often the restarted node is asked for its height
