"""The state tree's root computed from its definition alone (docs/encoding.md), for tests to compare against."""

from __future__ import annotations

import hashlib

DEPTH = 18


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def reference_root(state: dict[bytes, bytes | None]) -> bytes:
    """The root over `state` (key -> value; None values are absent keys), from scratch."""
    buckets: dict[int, list[bytes]] = {}
    for key, value in state.items():
        if value is not None:
            kh = _sha(key)
            buckets.setdefault(int.from_bytes(kh, "big") >> (256 - DEPTH), []).append(kh + _sha(value))
    level = {b: _sha(b"\x00" + b"".join(sorted(records))) for b, records in buckets.items()}
    for _ in range(DEPTH):
        parents: dict[int, bytes] = {}
        for index in {i // 2 for i in level}:
            left, right = level.get(2 * index, bytes(32)), level.get(2 * index + 1, bytes(32))
            parents[index] = _sha(left + right)
        level = parents
    return level.get(0, bytes(32))
