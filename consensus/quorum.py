"""Quorum arithmetic for n = 3f + 1 validators, shared by the replica and by
anyone checking a commit certificate offline."""

from __future__ import annotations


def fault_tolerance(n: int) -> int:
    """f, the number of faulty validators n tolerates."""
    return (n - 1) // 3


def quorum(n: int) -> int:
    """2f+1 for n = 3f+1; in general the least size whose two sets share f+1 members."""
    return (n + fault_tolerance(n)) // 2 + 1
