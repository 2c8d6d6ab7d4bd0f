"""The alliance client SDK: Client (synchronous) and AsyncClient (trio) over one sans-I/O core.

It imports only chain, errors and keys, never the server side, so that an application can use it alone."""

import importlib
from typing import TYPE_CHECKING, Any

from node.client.core import build_tx, file_digest, generate_key, load_key, public_key_hex, save_key
from node.client.errors import (
    AccessDenied, BadAnswer, Forbidden, Unauthenticated, CommitTimeout, DuplicateTx, InvalidInput, NoAnswer, NodeUnreachable, NotAuthorised, NotFound, Overloaded,
    RpcError, SubscriptionDropped, TxRefused,
)
from node.client.sync import DEFAULT_RPC, Client
from node.client.types import (
    Block, Commit, History, HistoryEntry, KvEntry, MemberInfo, Members, NotaryRecord, PendingProposal, Peer, ProposalInfo, Signature, Status,
    TxBody, TxInfo,
)

if TYPE_CHECKING:
    from node.client.aio import AsyncClient
    from node.client.proofs import (
        ProofInvalid, VerifiedProof, VerifiedState, compact_state_proof, verify_proof, verify_state_proof,
    )

# Imported when first asked for: httpx and the consensus code would slow every CLI command's start.
_LAZY = {
    "AsyncClient": "node.client.aio",
    "ProofInvalid": "node.client.proofs",
    "VerifiedProof": "node.client.proofs",
    "verify_proof": "node.client.proofs",
    "VerifiedState": "node.client.proofs",
    "verify_state_proof": "node.client.proofs",
    "compact_state_proof": "node.client.proofs",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "DEFAULT_RPC", "AccessDenied", "AsyncClient", "Forbidden", "Unauthenticated", "BadAnswer", "Block", "Client", "Commit", "CommitTimeout", "DuplicateTx",
    "History", "HistoryEntry",
    "InvalidInput", "KvEntry", "MemberInfo", "Members", "NoAnswer", "NodeUnreachable", "NotAuthorised", "NotFound",
    "NotaryRecord", "Overloaded", "Peer", "PendingProposal", "ProofInvalid", "ProposalInfo", "RpcError", "Signature",
    "Status", "SubscriptionDropped", "TxBody", "TxInfo", "TxRefused", "VerifiedProof", "VerifiedState", "build_tx", "compact_state_proof", "file_digest",
    "generate_key", "load_key", "public_key_hex", "save_key", "verify_proof",
    "verify_state_proof",
]
