"""`python -m node.bench.state_proof --keys N`: the size of state proofs over a state of N keys and the
time to check one, printed as one JSON object (docs/performance.md, "State proofs").

The state is N kv keys (as `alliance bench` writes them) in a StateTree over a dict of buckets; the
header over its root is sealed by four validators, so a check includes the certificate's Ed25519
verifications, as `alliance verify-proof` does them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from nacl.signing import SigningKey

from node.api.lookup import commit_json, header_json
from node.chain.block import Header
from node.chain.canonical import pack_flat
from node.chain.membership import validators_hash
from node.chain.state_proof import STATE_PROOF_VERSION, query_result, state_key, verify_state_proof
from node.chain.state_tree import StateTree, bucket_of, key_hash

CHAIN_ID = "bench-proofs"
BATCH_KEYS = 50_000
SAMPLES = 1_000


def build_state(keys: int) -> tuple[StateTree, dict[bytes, bytes]]:
    blobs: dict[int, bytes] = {}
    tree, values = StateTree(blobs.__getitem__, ()), {}
    owner = bytes(32)
    for start in range(0, keys, BATCH_KEYS):
        writes = {state_key("kv", f"bench/{i}"): pack_flat([os.urandom(64), owner, 1])
                  for i in range(start, min(keys, start + BATCH_KEYS))}
        update = tree.update(writes)
        tree.apply(update, lambda: blobs.update((b, blob) for b, blob in update.buckets.items() if blob))
        values.update(writes)
    return tree, values


def sealed_header(root: bytes, signers: list[SigningKey]) -> tuple[Header, list[tuple[bytes, bytes]]]:
    keys = tuple(bytes(k.verify_key) for k in signers)
    header = Header(CHAIN_ID, 1, bytes(32), 1, keys[0], 0, bytes(32), bytes(32), root, validators_hash(keys),
                    validators_hash(keys))
    seal = b"alliance-commit-v1\x00" + header.hash()
    return header, [(key, signer.sign(seal).signature) for key, signer in zip(keys[:3], signers[:3])]


def proof_of(tree: StateTree, values: dict[bytes, bytes], key: str, header: Header,
             certificate: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    skey = state_key("kv", key)
    blob, siblings = tree.path(bucket_of(key_hash(skey)))
    raw = values.get(skey)
    return {
        "version": STATE_PROOF_VERSION, "family": "kv", "key": key, "value": None if raw is None else raw.hex(),
        "result": query_result("kv", raw), "records": blob.hex(), "siblings": [s.hex() for s in siblings],
        "header": header_json(header), "commit": commit_json(1, header.hash().hex(), certificate),
        "validator_changes": [],
    }


def measure(keys: int) -> dict[str, Any]:
    started = time.perf_counter()
    tree, values = build_state(keys)
    built_s = time.perf_counter() - started
    signers = [SigningKey(bytes([i]) * 32) for i in range(4)]
    header, certificate = sealed_header(tree.root, signers)
    validators = [bytes(k.verify_key) for k in signers]
    out: dict[str, Any] = {"keys": keys, "build_s": round(built_s, 1)}
    for kind, names in (("present", [f"bench/{i * 997 % keys}" for i in range(SAMPLES)]),
                        ("absent", [f"absent/{i}" for i in range(SAMPLES)])):
        proofs = [proof_of(tree, values, name, header, certificate) for name in names]
        state_bytes = [len(p["records"]) // 2 + 32 * len(p["siblings"]) for p in proofs]
        json_bytes = [len(json.dumps(p, separators=(",", ":"))) for p in proofs]
        times = []
        for p in proofs:
            t0 = time.perf_counter()
            verify_state_proof(p, CHAIN_ID, validators)
            times.append(time.perf_counter() - t0)
        times.sort()
        out[kind] = {
            "state_part_bytes_mean": round(statistics.mean(state_bytes)), "state_part_bytes_max": max(state_bytes),
            "json_bytes_mean": round(statistics.mean(json_bytes)), "json_bytes_max": max(json_bytes),
            "check_us_median": round(1e6 * times[len(times) // 2]), "check_us_p99": round(1e6 * times[len(times) * 99 // 100]),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m node.bench.state_proof", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys in the state (default: 1,000,000)")
    print(json.dumps(measure(parser.parse_args().keys)))


if __name__ == "__main__":
    main()
