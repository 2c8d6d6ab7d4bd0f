"""Blocks a Byzantine proposer sends that the real block check must refuse.

Each starts from a block the proposer really built and breaks one thing the
check looks at; its hash is new, so the invariants can tell an honest node
that signs for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random

from node.chain.block import Header
from node.chain.canonical import pack_flat
from node.chain.candidate import Candidate


def bad_block(rng: random.Random, candidate: Candidate) -> tuple[bytes, bytes]:
    """(body, hash) of a proposal no honest validator may prepare."""
    header, txs = candidate.block.header, list(candidate.block.txs)
    kind = rng.randrange(3)
    if kind == 0:  # the bytes do not match the hash
        body = _body(header, txs)
        return body, hashlib.sha256(body + b":forged").digest()
    if kind == 1:  # a state root its transactions do not produce
        header = dataclasses.replace(header, state_root=hashlib.sha256(header.state_root).digest())
    else:  # a transaction whose signature no longer verifies (the header moved on, so the hash is new)
        i = rng.randrange(len(txs))
        txs[i] = txs[i][:-1] + bytes([txs[i][-1] ^ 1])
        header = dataclasses.replace(header, time_ms=header.time_ms + 1)
    return _body(header, txs), header.hash()


def _body(header: Header, txs: list[bytes]) -> bytes:
    return pack_flat([header.wire(), txs])
