"""`alliance bench` machinery: pre-signing, the load process and the block watcher.

The command itself (`node/cli/bench.py`) starts the consortium and puts these together; see
docs/performance.md for what is measured and how.
"""
