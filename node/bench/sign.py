"""Transactions for a benchmark, signed before the clock starts (signing is client work).

Each transaction is a `kv put` of a unique key, already encoded as one JSON-RPC `send_tx` call whose `id` is
the transaction's index in the run, so that answers of any batch map back to their transactions.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import signal
from collections.abc import Callable

from nacl.signing import SigningKey

from node.chain.canonical import pack
from node.chain.tx import SIGNING_PREFIX, TX_VERSION

CHUNK_TXS = 5_000
VALUE = b"v" * 32


def sign_range(seed: bytes, chain_id: str, run_id: str, start: int, stop: int) -> tuple[list[bytes], bytes]:
    """The `send_tx` calls of transactions `start..stop-1` and their hashes (32 bytes each, concatenated)."""
    key = SigningKey(seed)
    sender = bytes(key.verify_key)
    calls: list[bytes] = []
    hashes = bytearray()
    for i in range(start, stop):
        body = [TX_VERSION, chain_id, sender, i, "kv", "put", {"key": f"bench/{run_id}/{i}", "value": VALUE}]
        signing_bytes = SIGNING_PREFIX + pack(body)
        signature = key.sign(signing_bytes).signature
        raw = pack(body + [signature])
        calls.append(b'{"jsonrpc":"2.0","method":"send_tx","params":{"tx":"%s"},"id":%d}' % (raw.hex().encode(), i))
        hashes += hashlib.sha256(signing_bytes).digest()
    return calls, bytes(hashes)


def _sign_chunk(job: tuple[bytes, str, str, int, int]) -> tuple[list[bytes], bytes]:
    return sign_range(*job)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates the pool


def presign(
    key: SigningKey, chain_id: str, run_id: str, count: int, processes: int,
    progress: Callable[[int], None] = lambda done: None,
) -> tuple[list[bytes], list[bytes]]:
    """`count` signed calls and their hashes, signed by `processes` worker processes."""
    jobs = [(bytes(key), chain_id, run_id, start, min(start + CHUNK_TXS, count)) for start in range(0, count, CHUNK_TXS)]
    calls: list[bytes] = []
    hashes = bytearray()
    if processes <= 1 or len(jobs) <= 1:
        results = map(_sign_chunk, jobs)
        for chunk_calls, chunk_hashes in results:
            calls += chunk_calls
            hashes += chunk_hashes
            progress(len(calls))
    else:
        with multiprocessing.get_context("spawn").Pool(processes, initializer=_ignore_sigint) as pool:
            for chunk_calls, chunk_hashes in pool.imap(_sign_chunk, jobs):
                calls += chunk_calls
                hashes += chunk_hashes
                progress(len(calls))
    return calls, [bytes(hashes[i:i + 32]) for i in range(0, len(hashes), 32)]
