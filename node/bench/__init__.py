"""`alliance bench` machinery: the consortium's processes, pre-signing, the load process, the block watcher,
the measured window, the catch-up timing, the report's figures and the profiles' summary.

The command itself (`node/cli/bench.py`) checks its flags and puts these together; see docs/performance.md
for what is measured and how. It sits at the top beside cli and may import any room below; nothing imports it.
"""
