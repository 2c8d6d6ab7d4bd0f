"""Transaction families and the deterministic executor.

State keys: b"kv/" + key (UTF-8) -> [value, owner, height];
b"nt/" + digest -> [recorder, height, time_ms, tx_hash, meta]; b"gv/..." the membership
and its proposals (node/chain/governance.py).
A header's state_root is the root of the state tree after its block (node/chain/state_tree.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from node.chain import governance
from node.chain.canonical import pack_flat, unpack
from node.chain.membership import Membership
from node.chain.state_tree import EMPTY, TreeUpdate
from node.chain.tx import Transaction

OK, BAD_ARGS, NOT_OWNER, NO_SUCH_KEY, ALREADY_RECORDED = 0, 1, 2, 3, 4
KV_KEY_BYTES_MAX = 256
KV_VALUE_BYTES_MAX = 16 * 1024
NOTARY_META_BYTES_MAX = 1024
GENESIS_STATE_ROOT = EMPTY

Reader = Callable[[bytes], bytes | None]


@dataclass(frozen=True, slots=True)
class Receipt:
    code: int
    log: str


def receipt_bytes(tx_hash: bytes, receipt: Receipt) -> bytes:
    """A receipt's leaf in the block's receipt tree: canonical [tx_hash, code, log]."""
    return pack_flat([tx_hash, receipt.code, receipt.log])


@dataclass
class Execution:
    """The outcome of a block: receipts in order and the state it writes."""

    receipts: list[Receipt] = field(default_factory=list)
    writes: dict[bytes, bytes | None] = field(default_factory=dict)
    tree: TreeUpdate | None = None  # what the writes do to the state tree, once the ledger computed it


@dataclass
class _StateView:
    """The state a step of execution sees: its own writes over what `read` gives."""

    read: Reader
    writes: dict[bytes, bytes | None]

    def get(self, key: bytes) -> Any:
        raw = self.writes[key] if key in self.writes else self.read(key)
        return None if raw is None else unpack(raw)

    def put(self, key: bytes, value: Any) -> None:
        self.writes[key] = pack_flat(value)


@dataclass
class _Context(_StateView):
    height: int
    time_ms: int
    tx: Transaction
    genesis: Membership


def kv_key(key: str) -> bytes:
    return b"kv/" + key.encode()


def notary_key(digest: bytes) -> bytes:
    return b"nt/" + digest


def _kv_key_arg(args: dict[str, Any]) -> str | None:
    key = args.get("key")
    if isinstance(key, str) and 1 <= len(key.encode()) <= KV_KEY_BYTES_MAX:
        return key
    return None


def _kv_put(ctx: _Context) -> Receipt:
    args = ctx.tx.args
    key, value = _kv_key_arg(args), args.get("value")
    if key is None or set(args) != {"key", "value"} or not isinstance(value, bytes) or len(value) > KV_VALUE_BYTES_MAX:
        return Receipt(BAD_ARGS, "kv put needs key: str (1..256 bytes) and value: bin (<= 16 KiB)")
    current = ctx.get(kv_key(key))
    if current is not None and current[1] != ctx.tx.sender:
        return Receipt(NOT_OWNER, f"key {key!r} is owned by {current[1].hex()}")
    owner = ctx.tx.sender if current is None else current[1]
    ctx.writes[kv_key(key)] = pack_flat([value, owner, ctx.height])
    return Receipt(OK, "")


def _kv_delete(ctx: _Context) -> Receipt:
    key = _kv_key_arg(ctx.tx.args)
    if key is None or set(ctx.tx.args) != {"key"}:
        return Receipt(BAD_ARGS, "kv delete needs key: str (1..256 bytes)")
    current = ctx.get(kv_key(key))
    if current is None:
        return Receipt(NO_SUCH_KEY, f"no such key {key!r}")
    if current[1] != ctx.tx.sender:
        return Receipt(NOT_OWNER, f"key {key!r} is owned by {current[1].hex()}")
    ctx.writes[kv_key(key)] = None
    return Receipt(OK, "")


def _notary_record(ctx: _Context) -> Receipt:
    args = ctx.tx.args
    digest, meta = args.get("digest"), args.get("meta", "")
    valid_meta = isinstance(meta, str) and len(meta.encode()) <= NOTARY_META_BYTES_MAX
    if not (isinstance(digest, bytes) and len(digest) == 32 and valid_meta and set(args) <= {"digest", "meta"}):
        return Receipt(BAD_ARGS, "notary record needs digest: bin (32 bytes) and optional meta: str (<= 1 KiB)")
    if ctx.get(notary_key(digest)) is not None:
        return Receipt(ALREADY_RECORDED, f"digest {digest.hex()} is already recorded")
    ctx.writes[notary_key(digest)] = pack_flat([ctx.tx.sender, ctx.height, ctx.time_ms, ctx.tx.hash, meta])
    return Receipt(OK, "")


def _gov_propose(ctx: _Context) -> Receipt:
    return Receipt(*governance.propose(ctx, ctx.genesis, ctx.tx, ctx.height))


def _gov_approve(ctx: _Context) -> Receipt:
    return Receipt(*governance.approve(ctx, ctx.genesis, ctx.tx, ctx.height))


OPERATIONS: dict[tuple[str, str], Callable[[_Context], Receipt]] = {
    ("kv", "put"): _kv_put,
    ("kv", "delete"): _kv_delete,
    ("notary", "record"): _notary_record,
    ("gov", "propose"): _gov_propose,
    ("gov", "approve"): _gov_approve,
}


def execute(txs: Sequence[Transaction], height: int, time_ms: int, read: Reader, genesis: Membership) -> Execution:
    """Runs block `height`: puts in force the membership changes due at it, then `txs` in order over
    the state `read` gives; a failed tx writes nothing. `genesis` is the chain's first membership."""
    result = Execution()

    def overlay(key: bytes) -> bytes | None:
        return result.writes[key] if key in result.writes else read(key)

    governance.activate(_StateView(overlay, result.writes), genesis, height)
    for tx in txs:
        operation = OPERATIONS.get((tx.family, tx.op))
        if operation is None:
            result.receipts.append(Receipt(BAD_ARGS, f"unknown operation {tx.family}.{tx.op}"))
            continue
        writes: dict[bytes, bytes | None] = {}
        receipt = operation(_Context(overlay, writes, height, time_ms, tx, genesis))
        if receipt.code == OK:
            result.writes.update(writes)
        result.receipts.append(receipt)
    return result


def validators_hashes(execution: Execution, read: Reader, genesis: Membership, height: int) -> tuple[bytes, bytes]:
    """What the header of block `height` commits to once `execution` is written: the validators hash
    of its own height and of the next."""
    view = _StateView(lambda k: execution.writes[k] if k in execution.writes else read(k), {})
    own, following = (governance.upcoming_members(view, genesis, h).validators_hash() for h in (height, height + 1))
    return own, following
