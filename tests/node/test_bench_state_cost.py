"""node/bench/state_cost.py: each mode writes what it says on a real LevelDB store."""

from __future__ import annotations

from pathlib import Path

from node.bench import state_cost


def test_each_mode_writes_its_blocks_and_counts_its_bucket_reads(tmp_path: Path) -> None:
    found = {mode: state_cost.run(mode, 3, str(tmp_path / mode)) for mode in state_cost.MODES}
    assert all(r["keys"] == 3 * state_cost.BLOCK_TXS and r["process_us_per_key"] > 0 for r in found.values())
    assert found["none"]["bucket_reads_per_key"] == 0  # no tree, no bucket
    assert found["tree"]["bucket_reads_per_key"] > 0  # a later block's key shares a bucket
