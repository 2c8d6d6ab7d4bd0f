"""The alliance client SDK: Client (synchronous) and AsyncClient (trio) over one sans-I/O core."""

from typing import TYPE_CHECKING, Any

from node.client.core import build_tx, file_digest, generate_key, load_key, public_key_hex, save_key
from node.client.errors import (
    BadAnswer, CommitTimeout, DuplicateTx, InvalidInput, NodeUnreachable, NotAuthorised, NotFound, Overloaded,
    RpcError, SubscriptionDropped, TxRefused,
)
from node.client.sync import DEFAULT_RPC, Client
from node.client.types import Block, Commit, KvEntry, NotaryRecord, Peer, Signature, Status, TxBody, TxInfo

if TYPE_CHECKING:
    from node.client.aio import AsyncClient


def __getattr__(name: str) -> Any:
    # The trio client pulls in httpx; importing it only when asked keeps the CLI quick to start.
    if name == "AsyncClient":
        from node.client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_RPC", "AsyncClient", "BadAnswer", "Block", "Client", "Commit", "CommitTimeout", "DuplicateTx",
    "InvalidInput", "KvEntry", "NodeUnreachable", "NotAuthorised", "NotFound", "NotaryRecord", "Overloaded", "Peer",
    "RpcError", "Signature", "Status", "SubscriptionDropped", "TxBody", "TxInfo", "TxRefused", "build_tx",
    "file_digest", "generate_key", "load_key", "public_key_hex", "save_key",
]
