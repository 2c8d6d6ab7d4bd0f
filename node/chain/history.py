"""Record history: which committed transactions touched a kv key or a notary digest.

A transaction touches the record its arguments name (kv put and delete: `key`; notary record:
`digest`), whatever its receipt code: a refused put by someone who is not the owner is part of
the record's story. The subject of a record is SHA-256 of its state key (b"kv/" + key, b"nt/" +
digest), so every subject has the same size and no key is a prefix of another's. The entries
are written in the block's batch (storage/chain.py, `y/`), so the index is never ahead of or
behind the chain."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from node.chain.canonical import pack_flat, unpack
from node.chain.execution import KV_KEY_BYTES_MAX, Receipt, kv_key, notary_key
from node.chain.tx import Transaction

DIGEST_BYTES = 32


@dataclass(frozen=True)
class HistoryEntry:
    height: int
    index: int
    tx_hash: bytes
    sender: bytes
    op: str
    code: int

    def to_json(self) -> dict[str, Any]:
        return {"height": self.height, "index": self.index, "tx_hash": self.tx_hash.hex(),
                "sender": self.sender.hex(), "op": self.op, "code": self.code}


class HistoryCorrupt(ValueError):
    """A stored history entry that does not decode."""


def subject_of(state_key: bytes) -> bytes:
    return hashlib.sha256(state_key).digest()


def touched(tx: Transaction) -> bytes | None:
    """The state key of the record a transaction names, or None (other families, bad args)."""
    if tx.family == "kv" and tx.op in ("put", "delete"):
        key = tx.args.get("key")
        if isinstance(key, str):
            try:
                encoded = key.encode()
            except UnicodeEncodeError:
                return None
            return kv_key(key) if 1 <= len(encoded) <= KV_KEY_BYTES_MAX else None
    if tx.family == "notary" and tx.op == "record":
        digest = tx.args.get("digest")
        if isinstance(digest, bytes) and len(digest) == DIGEST_BYTES:
            return notary_key(digest)
    return None


def block_history(txs: Sequence[Transaction], receipts: Sequence[Receipt]) -> list[tuple[bytes, int, bytes]]:
    """(subject, tx index, entry) for every transaction of a block that touched a record."""
    entries = []
    for index, (tx, receipt) in enumerate(zip(txs, receipts)):
        state_key = touched(tx)
        if state_key is not None:
            entries.append((subject_of(state_key), index, pack_flat([tx.hash, tx.sender, tx.op, receipt.code])))
    return entries


def decode_entry(height: int, index: int, raw: bytes) -> HistoryEntry:
    try:
        tx_hash, sender, op, code = unpack(raw)
    except (ValueError, TypeError) as exc:
        raise HistoryCorrupt(f"history entry at height {height}, index {index} does not decode: {exc}") from None
    if not (isinstance(tx_hash, bytes) and isinstance(sender, bytes) and isinstance(op, str)
            and type(code) is int):
        raise HistoryCorrupt(f"history entry at height {height}, index {index} has the wrong fields")
    return HistoryEntry(height, index, tx_hash, sender, op, code)


def page(entries: Iterable[HistoryEntry], limit: int) -> tuple[list[HistoryEntry], int | None]:
    """A page of newest-first entries and the `before_height` of the next page (None: the last).

    A page never splits a height, so that asking again below its last height loses and repeats
    nothing: it ends at the last whole height within `limit` entries, except that a height with
    more entries than `limit` comes whole, alone (at most one block's transactions)."""
    taken: list[HistoryEntry] = []
    for entry in entries:
        if len(taken) >= limit:
            if entry.height != taken[-1].height:
                return taken, taken[-1].height
            if taken[0].height != entry.height:  # the limit falls inside this height: it goes to the next page
                cut = next(i for i, e in enumerate(taken) if e.height == entry.height)
                return taken[:cut], taken[cut - 1].height
        taken.append(entry)
    return taken, None
