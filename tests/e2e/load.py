"""Background kv load for end-to-end tests: signed puts sent in batches, what was acknowledged remembered."""

from __future__ import annotations

import secrets
import threading

from nacl.signing import SigningKey

from node.chain.tx import Transaction, sign_tx
from node.client import NodeUnreachable, RpcError
from tests.e2e.nodeproc import NodeProcess


class Load:
    """Submits kv puts to the given nodes in turn from a background thread and remembers what was accepted."""

    def __init__(self, key: SigningKey, chain_id: str, nodes: list[NodeProcess], batch: int = 20) -> None:
        self.key = key
        self.chain_id = chain_id
        self.nodes = nodes
        self.batch = batch
        self.accepted: list[Transaction] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            node = self.nodes[i % len(self.nodes)]
            txs = [self._tx() for _ in range(self.batch)]
            i += 1
            try:
                results = node.client().batch([("send_tx", {"tx": tx.raw.hex()}) for tx in txs])
            except NodeUnreachable:
                continue
            self.accepted += [tx for tx, r in zip(txs, results) if not isinstance(r, RpcError)]
            self._stop.wait(0.02)

    def _tx(self) -> Transaction:
        args = {"key": f"load/{secrets.token_hex(6)}", "value": b"x" * 32}
        return sign_tx(self.key, self.chain_id, "kv", "put", args, secrets.randbits(64))
