"""The get_block, get_tx and get_proof objects of the client protocol, read from the ledger and the pending
transactions.

RPC answers with them, and the WebSocket subscriptions render each committed block and watched
transaction with them. Proofs are checked by node/chain/proof.py, which the SDK loads without this.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node.api.jsonrpc import NOT_FOUND, RpcError
from node.chain.block import Block, BlockError, decode_block, decode_certificate
from node.chain.execution import Receipt, receipt_bytes
from node.chain.governance import ACTIVATIONS_KEY, ReadState
from node.chain.ledger import Ledger
from node.chain.merkle import merkle_path
from node.chain.proof import PROOF_VERSION, commit_json, header_json
from node.chain.state_proof import STATE_PROOF_VERSION, query_result, state_key_of
from node.chain.state_tree import bucket_of, key_hash
from node.chain.tx import tx_hash_of, tx_json
from node.disk.archive import find_tx, load_manifest
from storage.kv import StoreCorrupt
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
            "commit": commit_json(h.height, block_hash, certificate),
        }


def build_proof(ledger: Ledger, tx_hash: bytes) -> dict[str, Any] | None:
    """The proof of a committed transaction (docs/proofs.md), or None when `tx_hash` is not committed."""
    entry = ledger.tx_entry(tx_hash)
    if entry is None:
        return None
    block, certificate = _certified_block(ledger, entry.height)
    receipts = [_receipt(ledger, tx_hash_of(raw)) for raw in block.txs]
    return proof_in_block(ledger, block, certificate, receipts, entry.index)


def archived_proof(ledger: Ledger, archive: Path, tx_hash: bytes) -> dict[str, Any] | None:
    """The proof of a transaction of a pruned block, from the archive in `archive` (`storage.archive_dir`);
    None when the archive does not hold it. The client checks it as any other: the archive is not trusted."""
    manifest = load_manifest(archive)
    found = None if manifest is None or manifest.genesis_hash != ledger.genesis.hash() else \
        find_tx(archive, manifest, tx_hash)
    if found is None:
        return None
    record, index = found
    try:
        block, certificate = decode_block(record.block), decode_certificate(record.certificate)
    except BlockError:
        return None  # a damaged archive serves nothing; `alliance archive verify` says where
    if len(record.receipts) != len(block.txs):
        return None
    return proof_in_block(ledger, block, certificate, record.receipts, index)


def proof_in_block(ledger: Ledger, block: Block, certificate: tuple[tuple[bytes, bytes], ...],
                   receipts: Sequence[Receipt], index: int) -> dict[str, Any]:
    """The proof of the transaction at `index` of a certified block whose receipts are `receipts` (from the
    store, or from an archive for a pruned block)."""
    hashes = [tx_hash_of(raw) for raw in block.txs]
    leaves = [receipt_bytes(h, r) for h, r in zip(hashes, receipts)]
    header = block.header
    return {
        "version": PROOF_VERSION,
        "tx_hash": hashes[index].hex(),
        "tx": block.txs[index].hex(),
        "receipt": {"code": receipts[index].code, "log": receipts[index].log},
        "index": index,
        "tx_path": [h.hex() for h in merkle_path(hashes, index)],
        "receipt_path": [h.hex() for h in merkle_path(leaves, index)],
        "header": header_json(header),
        "commit": commit_json(header.height, header.hash().hex(), certificate),
        "validator_changes": validator_changes(ledger, header.height),
    }


def provable_heights(ledger: Ledger) -> list[int]:
    """The heights this node can prove state at: its tip (the tree's levels are those of the tip)."""
    return [ledger.height] if ledger.height >= 1 else []


def build_state_proof(ledger: Ledger, family: str, key: Any) -> dict[str, Any] | None:
    """The state proof of a key at the tip (docs/proofs.md), or None before block 1. KeyInvalid
    (node/chain/state_proof.py) for a family or key that names no state key."""
    state_key = state_key_of(family, key)
    kh = key_hash(state_key)
    bucket = bucket_of(kh)
    # Under the tree's lock a commit is either wholly in (blobs, state, tip header) or not at all.
    with ledger.tree.lock:
        header = ledger.last_header
        if header is None:
            return None
        value = ledger.read_state(state_key)
        blob, siblings = ledger.tree.path(bucket)
        certificate = ledger.certificate(header.height)
    if certificate is None:
        raise StoreCorrupt(f"the certificate of block {header.height} is missing from the store")
    return {
        "version": STATE_PROOF_VERSION, "family": family, "key": key, "state_key": state_key.hex(),
        "state_value": None if value is None else value.hex(), "result": query_result(family, value),
        "bucket": bucket, "records": blob.hex(), "siblings": [s.hex() for s in siblings],
        "header": header_json(header),
        "commit": commit_json(header.height, header.hash().hex(), certificate),
        "validator_changes": validator_changes(ledger, header.height),
    }


def validator_changes(ledger: Ledger, height: int) -> list[dict[str, Any]]:
    """The steps that lead a verifier from the genesis validators to those of `height`: for each
    activation up to it that changes the validator list, the certified last block of the old set
    and the new list (an activation that changes only clients, admins or observers has no step)."""
    activations = ReadState(ledger.read_state).get(ACTIVATIONS_KEY) or []
    steps = []
    for activation in activations:
        if activation > height:
            break
        new = ledger.members(activation).validator_keys
        if new == ledger.members(activation - 1).validator_keys:
            continue
        # By its header: a pruned block keeps its header and certificate when an activation follows it.
        last, certificate = ledger.header(activation - 1), ledger.certificate(activation - 1)
        if certificate is None:
            raise StoreCorrupt(f"the certificate of block {activation - 1} is missing from the store")
        steps.append({
            "header": header_json(last),
            "commit": commit_json(last.height, last.hash().hex(), certificate),
            "validators": [key.hex() for key in new],
        })
    return steps


def _certified_block(ledger: Ledger, height: int) -> tuple[Block, tuple[tuple[bytes, bytes], ...]]:
    block, certificate = ledger.block(height), ledger.certificate(height)
    if block is None or certificate is None:
        raise StoreCorrupt(f"block {height} or its certificate is missing from the store")
    return block, certificate


def _receipt(ledger: Ledger, tx_hash: bytes) -> Receipt:
    receipt = ledger.receipt(tx_hash)
    if receipt is None:
        raise StoreCorrupt(f"transaction {tx_hash.hex()} of a stored block has no entry")
    return receipt
