"""Benchmark of state proofs (docs/performance.md, "State proofs"): their size and the time to check one.

Builds a LevelDB-backed state of N kv keys directly through StateTree.update/apply in big batches (no
consensus, no transactions), certifies a header over its root with 4 validators, then proves sampled
present and absent keys and checks each proof (parse + fold + certificate). Prints JSON.

    python -m node.bench.state_proof --keys 1000000 [--samples 2000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from consensus.messages import COMMIT_SEAL_PREFIX
from node.chain.block import Header
from node.chain.canonical import pack
from node.chain.compact_proof import compact_state_proof, verify_compact_state_proof
from node.chain.execution import kv_key
from node.chain.membership import validators_hash
from node.chain.proof import commit_json, header_json
from node.chain.state_proof import STATE_PROOF_VERSION, query_result, verify_state_proof
from node.chain.state_tree import StateTree, bucket_of, key_hash
from storage.chain import ChainStore
from storage.kv import WriteBatch
from storage.leveldb import LevelDBStore

CHAIN_ID = "bench-state-proofs"
BATCH = 100_000
VALIDATORS = [SigningKey(hashlib.sha256(f"bench validator {i}".encode()).digest()) for i in range(4)]


def _value(i: int) -> bytes:
    return pack([f"value {i}".encode(), bytes(32), 1])


def build_state(store: ChainStore, keys: int) -> StateTree:
    """N keys `bench/<i>` written in batches, buckets and values in LevelDB."""
    tree = StateTree(store.load_bucket, {})
    for start in range(0, keys, BATCH):
        writes: dict[bytes, bytes | None] = {kv_key(f"bench/{i}"): _value(i) for i in range(start, min(keys, start + BATCH))}
        update = tree.update(writes)
        batch = WriteBatch()
        for bucket, blob in update.buckets.items():
            batch.put(b"z/" + bucket.to_bytes(4, "big"), blob)
        for key, value in writes.items():
            assert value is not None
            batch.put(b"s/" + key, value)
        tree.apply(update, lambda: store.kv.write_batch(batch, sync=False))
    return tree


def _certified(root: bytes) -> tuple[Header, list[tuple[bytes, bytes]]]:
    keys = tuple(bytes(k.verify_key) for k in VALIDATORS)
    header = Header(CHAIN_ID, 1, bytes(32), 1_800_000_000_000, keys[0], 0, bytes(32), bytes(32), root,
                    validators_hash(keys), validators_hash(keys))
    block_hash = header.hash()
    return header, [(bytes(k.verify_key), k.sign(COMMIT_SEAL_PREFIX + block_hash).signature) for k in VALIDATORS]


def prove(store: ChainStore, tree: StateTree, header: Header, certificate: list[tuple[bytes, bytes]],
          key: str) -> dict[str, Any]:
    """The state proof the node builds (node/api/lookup.py), over this bench's certified header."""
    state_key = kv_key(key)
    blob, siblings = tree.path(bucket_of(key_hash(state_key)))
    value = store.kv.get(b"s/" + state_key)
    return {
        "version": STATE_PROOF_VERSION, "family": "kv", "key": key, "state_key": state_key.hex(),
        "state_value": None if value is None else value.hex(), "result": query_result("kv", value),
        "bucket": bucket_of(key_hash(state_key)), "records": blob.hex(), "siblings": [s.hex() for s in siblings],
        "header": header_json(header), "commit": commit_json(1, header.hash().hex(), certificate),
        "validator_changes": [],
    }


def measure(proofs: list[dict[str, Any]]) -> dict[str, Any]:
    texts = [json.dumps(p, separators=(",", ":")) for p in proofs]
    state_parts = [len(p["records"]) // 2 + 32 * len(p["siblings"]) for p in proofs]
    keys = [bytes(k.verify_key) for k in VALIDATORS]
    times = []
    for text in texts:
        start = time.perf_counter()
        verify_state_proof(json.loads(text), CHAIN_ID, keys)
        times.append((time.perf_counter() - start) * 1e6)
    times.sort()
    compact = [compact_state_proof(p, CHAIN_ID, keys) for p in proofs]
    compact_times = []
    for data in compact:
        start = time.perf_counter()
        verify_compact_state_proof(data, CHAIN_ID, keys)
        compact_times.append((time.perf_counter() - start) * 1e6)
    compact_times.sort()
    return {
        "proofs": len(proofs),
        "json_bytes": {"mean": round(statistics.mean(map(len, texts))), "max": max(map(len, texts))},
        "compact_bytes": {"mean": round(statistics.mean(map(len, compact))), "max": max(map(len, compact))},
        "state_part_bytes": {"mean": round(statistics.mean(state_parts)), "max": max(state_parts)},
        "records_per_bucket": {"mean": round(statistics.mean(len(p["records"]) // 128 for p in proofs), 2),
                               "max": max(len(p["records"]) // 128 for p in proofs)},
        "verify_us": {"median": round(times[len(times) // 2]), "p99": round(times[int(len(times) * 0.99)])},
        "verify_compact_us": {"median": round(compact_times[len(compact_times) // 2]),
                              "p99": round(compact_times[int(len(compact_times) * 0.99)])},
    }


def run(keys: int, samples: int, directory: Path) -> dict[str, Any]:
    store = ChainStore(LevelDBStore.open(directory / "db"))
    try:
        start = time.perf_counter()
        tree = build_state(store, keys)
        build_s = time.perf_counter() - start
        header, certificate = _certified(tree.root)
        step = max(1, keys // samples)
        present = [prove(store, tree, header, certificate, f"bench/{i}") for i in range(0, keys, step)][:samples]
        absent = [prove(store, tree, header, certificate, f"absent/{i}") for i in range(samples)]
        return {"keys": keys, "build_s": round(build_s, 1), "validators": len(VALIDATORS),
                "present": measure(present), "absent": measure(absent)}
    finally:
        store.kv.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="size of state proofs and time to check one")
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--dir", type=Path, help="where to build the LevelDB state (default: a temporary directory)")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(run(args.keys, args.samples, args.dir), indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="alliance-bench-") as temp:
        print(json.dumps(run(args.keys, args.samples, Path(temp)), indent=2))


if __name__ == "__main__":
    main()
