"""Typed results of the client protocol, decoded (and checked) from the node's JSON answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from node.client.errors import BadAnswer

T = TypeVar("T")
TX_STATUSES = ("pending", "committed", "unknown")


@dataclass(frozen=True)
class Peer:
    name: str
    pubkey: str
    connected: bool


@dataclass(frozen=True)
class Status:
    chain_id: str
    node_name: str
    node_pubkey: str
    height: int
    last_block_hash: str
    view: int
    leader: str
    validators: tuple[str, ...]
    peers: tuple[Peer, ...]
    syncing: bool
    version: str | None = None  # the node's software version; None from a node that does not say


@dataclass(frozen=True)
class TxBody:
    """A transaction as `get_tx` shows it: binary args as hex."""

    chain_id: str
    sender: str
    nonce: int
    family: str
    op: str
    args: dict[str, Any]


@dataclass(frozen=True)
class TxInfo:
    """The `get_tx` object. height/index/code/log are None unless committed."""

    tx_hash: str
    status: str
    height: int | None
    index: int | None
    code: int | None
    log: str | None
    tx: TxBody | None

    @property
    def committed(self) -> bool:
        return self.status == "committed"

    @property
    def ok(self) -> bool:
        """Committed with receipt code 0 (executed and changed state)."""
        return self.committed and self.code == 0


@dataclass(frozen=True)
class Signature:
    validator: str
    signature: str


@dataclass(frozen=True)
class Commit:
    height: int
    block_hash: str
    signatures: tuple[Signature, ...]


@dataclass(frozen=True)
class Block:
    height: int
    hash: str
    prev_hash: str
    time: int
    proposer: str
    tx_root: str
    state_root: str
    txs: tuple[str, ...]
    commit: Commit


@dataclass(frozen=True)
class KvEntry:
    value: bytes
    owner: str
    height: int


@dataclass(frozen=True)
class NotaryRecord:
    recorder: str
    height: int
    time: int
    tx_hash: str
    meta: str


# ---- decoding -----------------------------------------------------------------------------


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadAnswer(f"{what}: expected a JSON object, got {value!r:.100}")
    return value


def _field(obj: dict[str, Any], name: str, kind: type[T], what: str) -> T:
    value = obj.get(name)
    # bool is an int in Python; an int field must not accept true/false.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadAnswer(f"{what}.{name}: expected {kind.__name__}, got {value!r:.100}")
    return value


def _optional(obj: dict[str, Any], name: str, kind: type[T], what: str) -> T | None:
    return None if obj.get(name) is None else _field(obj, name, kind, what)


def _strings(obj: dict[str, Any], name: str, what: str) -> tuple[str, ...]:
    items = _field(obj, name, list, what)
    if not all(isinstance(item, str) for item in items):
        raise BadAnswer(f"{what}.{name}: expected a list of strings")
    return tuple(items)


def status_from(value: Any) -> Status:
    obj = _object(value, "status")
    node = _object(obj.get("node"), "status.node")
    peers = tuple(
        Peer(_field(p, "name", str, "peer"), _field(p, "pubkey", str, "peer"), _field(p, "connected", bool, "peer"))
        for p in (_object(item, "status.peers[]") for item in _field(obj, "peers", list, "status"))
    )
    return Status(
        chain_id=_field(obj, "chain_id", str, "status"),
        node_name=_field(node, "name", str, "status.node"),
        node_pubkey=_field(node, "pubkey", str, "status.node"),
        height=_field(obj, "height", int, "status"),
        last_block_hash=_field(obj, "last_block_hash", str, "status"),
        view=_field(obj, "view", int, "status"),
        leader=_field(obj, "leader", str, "status"),
        validators=_strings(obj, "validators", "status"),
        peers=peers,
        syncing=_field(obj, "syncing", bool, "status"),
        version=_optional(obj, "version", str, "status"),
    )


def tx_body_from(value: Any) -> TxBody:
    obj = _object(value, "tx")
    return TxBody(
        chain_id=_field(obj, "chain_id", str, "tx"),
        sender=_field(obj, "sender", str, "tx"),
        nonce=_field(obj, "nonce", int, "tx"),
        family=_field(obj, "family", str, "tx"),
        op=_field(obj, "op", str, "tx"),
        args=_field(obj, "args", dict, "tx"),
    )


def tx_info_from(value: Any) -> TxInfo:
    obj = _object(value, "get_tx")
    status = _field(obj, "status", str, "get_tx")
    if status not in TX_STATUSES:
        raise BadAnswer(f"get_tx.status: unknown status {status!r}")
    info = TxInfo(
        tx_hash=_field(obj, "tx_hash", str, "get_tx"),
        status=status,
        height=_optional(obj, "height", int, "get_tx"),
        index=_optional(obj, "index", int, "get_tx"),
        code=_optional(obj, "code", int, "get_tx"),
        log=_optional(obj, "log", str, "get_tx"),
        tx=None if obj.get("tx") is None else tx_body_from(obj["tx"]),
    )
    if info.committed and None in (info.height, info.index, info.code, info.log, info.tx):
        raise BadAnswer("get_tx: a committed transaction must have height, index, code, log and tx")
    return info


def commit_from(value: Any) -> Commit:
    obj = _object(value, "commit")
    signatures = tuple(
        Signature(_field(s, "validator", str, "signature"), _field(s, "signature", str, "signature"))
        for s in (_object(item, "commit.signatures[]") for item in _field(obj, "signatures", list, "commit"))
    )
    return Commit(_field(obj, "height", int, "commit"), _field(obj, "block_hash", str, "commit"), signatures)


def block_from(value: Any) -> Block:
    obj = _object(value, "get_block")
    return Block(
        height=_field(obj, "height", int, "get_block"),
        hash=_field(obj, "hash", str, "get_block"),
        prev_hash=_field(obj, "prev_hash", str, "get_block"),
        time=_field(obj, "time", int, "get_block"),
        proposer=_field(obj, "proposer", str, "get_block"),
        tx_root=_field(obj, "tx_root", str, "get_block"),
        state_root=_field(obj, "state_root", str, "get_block"),
        txs=_strings(obj, "txs", "get_block"),
        commit=commit_from(obj.get("commit")),
    )


def kv_entry_from(value: Any) -> KvEntry | None:
    if value is None:
        return None
    obj = _object(value, "kv query")
    try:
        data = bytes.fromhex(_field(obj, "value", str, "kv query"))
    except ValueError:
        raise BadAnswer("kv query.value: not hex") from None
    return KvEntry(data, _field(obj, "owner", str, "kv query"), _field(obj, "height", int, "kv query"))


def notary_record_from(value: Any) -> NotaryRecord | None:
    if value is None:
        return None
    obj = _object(value, "notary query")
    return NotaryRecord(
        recorder=_field(obj, "recorder", str, "notary query"),
        height=_field(obj, "height", int, "notary query"),
        time=_field(obj, "time", int, "notary query"),
        tx_hash=_field(obj, "tx_hash", str, "notary query"),
        meta=_field(obj, "meta", str, "notary query"),
    )


def tx_hash_from(value: Any) -> str:
    """The `{tx_hash}` answer of send_tx without waiting."""
    return _field(_object(value, "send_tx"), "tx_hash", str, "send_tx")


@dataclass(frozen=True)
class MemberInfo:
    """A member as get_members shows it; `address` is empty for clients and admins."""

    name: str
    pubkey: str
    address: str = ""


@dataclass(frozen=True)
class PendingProposal:
    """A proposal still open (`activation` None) or passed but not in force yet."""

    proposal: str
    change: dict[str, Any]
    approvals: tuple[str, ...]
    activation: int | None


@dataclass(frozen=True)
class Members:
    """The membership in force at `height` (get_members); `pending` is the latest block's."""

    height: int
    validators: tuple[MemberInfo, ...]
    observers: tuple[MemberInfo, ...]
    clients: tuple[MemberInfo, ...]
    admins: tuple[MemberInfo, ...]
    admin_threshold: int
    pending: tuple[PendingProposal, ...]


@dataclass(frozen=True)
class ProposalInfo:
    """A governance proposal (get_proposal); its id is the tx_hash of its propose transaction."""

    proposal: str
    proposer: str
    change: dict[str, Any]
    approvals: tuple[str, ...]
    status: str
    height: int
    activation: int | None


PROPOSAL_STATUSES = ("open", "passed", "active", "expired")


def _members_list(obj: dict[str, Any], role: str, with_address: bool) -> tuple[MemberInfo, ...]:
    what = f"get_members.{role}[]"
    return tuple(
        MemberInfo(_field(m, "name", str, what), _field(m, "pubkey", str, what),
                   _field(m, "address", str, what) if with_address else "")
        for m in (_object(item, what) for item in _field(obj, role, list, "get_members"))
    )


def members_from(value: Any) -> Members:
    obj = _object(value, "get_members")
    pending = tuple(
        PendingProposal(
            proposal=_field(p, "proposal", str, "pending"), change=_field(p, "change", dict, "pending"),
            approvals=_strings(p, "approvals", "pending"), activation=_optional(p, "activation", int, "pending"),
        )
        for p in (_object(item, "get_members.pending[]") for item in _field(obj, "pending", list, "get_members"))
    )
    return Members(
        height=_field(obj, "height", int, "get_members"),
        validators=_members_list(obj, "validators", True),
        observers=_members_list(obj, "observers", True),
        clients=_members_list(obj, "clients", False),
        admins=_members_list(obj, "admins", False),
        admin_threshold=_field(obj, "admin_threshold", int, "get_members"),
        pending=pending,
    )


def proposal_from(value: Any) -> ProposalInfo:
    obj = _object(value, "get_proposal")
    status = _field(obj, "status", str, "get_proposal")
    if status not in PROPOSAL_STATUSES:
        raise BadAnswer(f"get_proposal.status: unknown status {status!r}")
    return ProposalInfo(
        proposal=_field(obj, "proposal", str, "get_proposal"),
        proposer=_field(obj, "proposer", str, "get_proposal"),
        change=_field(obj, "change", dict, "get_proposal"),
        approvals=_strings(obj, "approvals", "get_proposal"),
        status=status,
        height=_field(obj, "height", int, "get_proposal"),
        activation=_optional(obj, "activation", int, "get_proposal"),
    )


@dataclass(frozen=True)
class HistoryEntry:
    """One committed transaction that touched a record (get_history)."""

    height: int
    index: int
    tx_hash: str
    sender: str
    op: str
    code: int


@dataclass(frozen=True)
class History:
    """A page of a record's history, newest first; ask again with `before_height=next_before_height`
    while it is not None."""

    entries: tuple[HistoryEntry, ...]
    next_before_height: int | None


def history_from(value: Any) -> History:
    obj = _object(value, "get_history")
    what = "get_history.entries[]"
    entries = tuple(
        HistoryEntry(
            height=_field(e, "height", int, what), index=_field(e, "index", int, what),
            tx_hash=_field(e, "tx_hash", str, what), sender=_field(e, "sender", str, what),
            op=_field(e, "op", str, what), code=_field(e, "code", int, what),
        )
        for e in (_object(item, what) for item in _field(obj, "entries", list, "get_history"))
    )
    return History(entries, _optional(obj, "next_before_height", int, "get_history"))
