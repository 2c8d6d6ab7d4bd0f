"""The get_block and get_tx objects of the client protocol, read from the ledger and the pending transactions.

RPC answers with them, and the WebSocket subscriptions render each committed block and watched
transaction with them.
"""

from __future__ import annotations

from typing import Any

from node.api.jsonrpc import NOT_FOUND, RpcError
from node.chain.ledger import Ledger
from node.chain.tx import tx_hash_of, tx_json
from node.txpool.admission import Admission


class ChainLookup:
    def __init__(self, ledger: Ledger, admission: Admission) -> None:
        self.ledger = ledger
        self.admission = admission  # what is pending

    def tx(self, tx_hash: bytes) -> dict[str, Any]:
        """The get_tx object of a transaction hash."""
        result: dict[str, Any] = {
            "tx_hash": tx_hash.hex(), "status": "unknown",
            "height": None, "index": None, "code": None, "log": None, "tx": None,
        }
        entry = self.ledger.tx_entry(tx_hash)
        if entry is not None:
            result.update(status="committed", height=entry.height, index=entry.index,
                          code=entry.receipt.code, log=entry.receipt.log, tx=tx_json(entry.tx))
            return result
        pending = self.admission.pending_tx(tx_hash)
        if pending is not None:
            result.update(status="pending", tx=tx_json(pending))
        return result

    def block(self, height: int) -> dict[str, Any]:
        """The get_block object of a committed height; RpcError NOT_FOUND otherwise."""
        block = self.ledger.block(height) if height >= 1 else None
        certificate = self.ledger.certificate(height) if block is not None else None
        if block is None or certificate is None:
            raise RpcError(NOT_FOUND, f"no block at height {height}")
        h = block.header
        block_hash = h.hash().hex()
        return {
            "height": h.height, "hash": block_hash, "prev_hash": h.prev_hash.hex(), "time": h.time_ms,
            "proposer": h.proposer.hex(), "tx_root": h.tx_root.hex(), "state_root": h.state_root.hex(),
            "txs": [tx_hash_of(raw).hex() for raw in block.txs],
            "commit": {
                "height": h.height, "block_hash": block_hash,
                "signatures": [{"validator": v.hex(), "signature": s.hex()} for v, s in certificate],
            },
        }
