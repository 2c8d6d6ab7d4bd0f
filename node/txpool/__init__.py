"""Transactions waiting for a block: admission checks, signature verification off the event loop, the bounded
mempool and its crash-safe log. Above disk, below the pipeline; it knows nothing of peers or the API."""
