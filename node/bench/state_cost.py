"""Benchmark of what the state commitment costs a block's write (docs/performance.md, "What the state
commitment costs").

Writes blocks of 1,000 new kv keys to a LevelDB store opened as the node opens it, each block one
synced batch that also holds what a block of `alliance bench` transactions writes besides the state
(per transaction a 250-byte transaction row and a 120-byte history row, per block a 250 KB body).
Two modes, each run in a process of its own and alternated: `none` (no state tree) and `tree` (the
node's: the tree's update and its buckets' blobs in the batch). Reports CPU per key: of the writing
thread, and of the process, LevelDB's compaction thread included; and the bucket reads. Prints JSON.

    python -m node.bench.state_cost [--blocks 250] [--rounds 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from node.chain.state_tree import StateTree
from storage.kv import WriteBatch
from storage.leveldb import LevelDBStore

MODES = ("none", "tree")
BLOCK_TXS = 1000


def run(mode: str, blocks: int, directory: str) -> dict[str, Any]:
    kv = LevelDBStore.open(directory)
    reads = [0]

    def read_bucket(bucket: int) -> bytes | None:
        reads[0] += 1
        return kv.get(b"z/" + bucket.to_bytes(4, "big"))

    tree = None if mode == "none" else StateTree(read_bucket, {})
    process, thread = time.process_time(), time.thread_time()
    for height in range(blocks):
        batch, writes = WriteBatch(), {}
        for i in range(height * BLOCK_TXS, (height + 1) * BLOCK_TXS):
            key = f"kv/bench/run/{i}".encode()
            writes[key] = b"v" * 32
            batch.put(b"t/" + hashlib.sha256(key).digest(), os.urandom(250))
            batch.put(b"s/" + key, b"v" * 32)
            batch.put(b"h/" + key + i.to_bytes(8, "big"), os.urandom(120))
        batch.put(b"b/" + height.to_bytes(8, "big"), os.urandom(250_000))
        if tree is None:
            kv.write_batch(batch, sync=True)
            continue
        update = tree.update(writes)
        for bucket, blob in update.buckets.items():
            batch.put(b"z/" + bucket.to_bytes(4, "big"), blob)
        tree.apply(update, lambda: kv.write_batch(batch, sync=True))
    keys = blocks * BLOCK_TXS
    result = {"mode": mode, "keys": keys, "thread_us_per_key": (time.thread_time() - thread) / keys * 1e6,
              "process_us_per_key": (time.process_time() - process) / keys * 1e6, "bucket_reads_per_key": reads[0] / keys}
    kv.close()
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=250, help="blocks of 1,000 new keys per run (default 250)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each mode, alternated (default 2)")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one run, in this process
    args = parser.parse_args()
    if args.mode:
        with tempfile.TemporaryDirectory(prefix="alliance-state-cost-") as directory:
            print(json.dumps(run(args.mode, args.blocks, directory)))
        return
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            out = subprocess.run([sys.executable, "-m", "node.bench.state_cost", "--mode", mode, "--blocks",
                                  str(args.blocks)], check=True, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(out))
    summary = {mode: {field: statistics.median(r[field] for r in found)
                      for field in ("thread_us_per_key", "process_us_per_key", "bucket_reads_per_key")}
               for mode, found in runs.items()}
    print(json.dumps({"blocks": args.blocks, "block_keys": BLOCK_TXS, "rounds": args.rounds,
                      "median": summary, "runs": runs}))


if __name__ == "__main__":
    main()
