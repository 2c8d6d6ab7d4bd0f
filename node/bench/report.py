"""The figures `alliance bench` prints for its window: what was sent, committed, and how fast (docs/performance.md)."""

from __future__ import annotations

import math
from array import array
from pathlib import Path
from typing import Any

from node.bench.load import LoadPlan, LoadResult
from node.bench.settings import Settings
from node.bench.watch import BlockWatcher, percentile
from storage.leveldb import LevelDBStore

HISTORY_PREFIX = b"y/"  # storage/chain.py


def window_figures(settings: Settings, plan: LoadPlan, signing_s: float, result: LoadResult, watcher: BlockWatcher,
                   hashes: list[bytes], accepted_at: array[float], t0: float, end: float) -> dict[str, Any]:
    """The report's fields up to "uncommitted", in their order; commits are those seen in [t0, end)."""
    window = [b for b in watcher.blocks if t0 <= b.seen_at < end]
    committed = sum(b.txs for b in window)
    duration = settings.duration_s if settings.catch_up is None else end - t0
    latencies = sorted(
        1000 * (watcher.committed_at[h] - sent)
        for h, sent in zip(hashes, accepted_at)
        if not math.isnan(sent) and h in watcher.committed_at
    )

    def ms(p: float) -> float | None:
        value = percentile(latencies, p)
        return None if value is None else round(value, 1)

    return {
        "nodes": settings.nodes,
        "duration_s": settings.duration_s if settings.catch_up is None else round(duration, 2),
        "offered_rate": settings.rate or None,
        "batch": plan.batch,
        "connections": plan.connections_per_node * len(plan.urls),
        "presigned": settings.count,
        "signing_s": round(signing_s, 2),
        "sent": result.sent,
        "accepted": result.accepted,
        "rejected": result.rejected,
        "rejected_codes": {str(code): n for code, n in sorted(result.rejected_codes.items())},
        "mempool_full": result.mempool_full,
        "retry_pending": result.retry_pending,
        "load_exhausted": (None if settings.catch_up is not None  # it sends exactly TXS by design
                           else result.exhausted
                           or (settings.rate > 0 and settings.count < settings.rate * settings.duration_s)),
        "committed": committed,
        "committed_tx_per_s": round(committed / duration, 1),
        "blocks": len(window),
        "txs_per_block": round(committed / len(window), 1) if window else 0.0,
        "latency_p50_ms": ms(50),
        "latency_p95_ms": ms(95),
        "latency_p99_ms": ms(99),
        "latency_samples": len(latencies),
        "uncommitted": result.accepted - len(latencies),
    }


def history_index_cost(data_dir: Path) -> dict[str, Any]:
    """What the record-history index holds in one stopped node's store, over the whole chain: its
    entries (one per transaction that touched a record) and their bytes before LevelDB's compression."""
    store = LevelDBStore.open(data_dir)
    try:
        entries = size = 0
        for key, value in store.iterate(HISTORY_PREFIX):
            entries += 1
            size += len(key) + len(value)
    finally:
        store.close()
    return {"entries": entries, "bytes": size, "bytes_per_entry": round(size / entries, 1) if entries else None}
