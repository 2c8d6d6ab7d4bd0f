"""The client's typed errors: one class per protocol error code, all under RpcError."""

from __future__ import annotations

from typing import Any

from node.errors import AllianceError, ExitCode


class RpcError(Exception):
    """An error answer from the node: `code`, `message` and optional `data`."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


class TxRefused(RpcError):
    """-32001: malformed, bad signature, wrong chain id, over size or not canonical; `reason` says which."""

    @property
    def reason(self) -> str:
        return str(self.data.get("reason", "")) if isinstance(self.data, dict) else ""


class NotAuthorised(RpcError):
    """-32002: the chain does not authorise this sender."""


class DuplicateTx(RpcError):
    """-32003: this transaction is already pending or committed."""


class Overloaded(RpcError):
    """-32004: the node is overloaded (mempool full, too many subscriptions, or every WebSocket connection
    taken: an event stream refused with HTTP 503); retry later."""


class NotFound(RpcError):
    """-32005: no such block, transaction, proof or subscription."""


class CommitTimeout(RpcError):
    """-32006: the node stopped waiting for the commit; the transaction may still commit."""

    @property
    def tx_hash(self) -> str | None:
        return str(self.data["tx_hash"]) if isinstance(self.data, dict) and "tx_hash" in self.data else None


ERROR_CLASSES: dict[int, type[RpcError]] = {
    -32001: TxRefused,
    -32002: NotAuthorised,
    -32003: DuplicateTx,
    -32004: Overloaded,
    -32005: NotFound,
    -32006: CommitTimeout,
}


def rpc_error(error: Any) -> RpcError:
    """The typed exception of a JSON-RPC `error` object."""
    if not isinstance(error, dict) or type(error.get("code")) is not int:
        raise BadAnswer(f"malformed JSON-RPC error object: {error!r:.200}")
    cls = ERROR_CLASSES.get(error["code"], RpcError)
    return cls(error["code"], str(error.get("message", "")), error.get("data"))


class NodeUnreachable(AllianceError):
    """No usable answer from the node's RPC address."""


class NoAnswer(NodeUnreachable):
    """The request went out but no answer came within the client's timeout: it may still take effect
    (a transaction may still be accepted and commit). The client never sends it again by itself."""


class AccessDenied(AllianceError):
    """The node refused access: HTTP 401 or 403 (docs/configuration.md, "Access control")."""

    exit_code = ExitCode.DENIED


class Unauthenticated(AccessDenied):
    """HTTP 401: a token is needed, or the one given is not known to the node."""


class Forbidden(AccessDenied):
    """HTTP 403: the token is known but lacks the role (read, submit, subscribe) the request needs."""


class BadAnswer(AllianceError):
    """The node answered something the client protocol does not allow."""


class InvalidInput(AllianceError, ValueError):
    """An argument the client refuses before sending anything (e.g. a hash that is not 64 hex characters)."""


class SubscriptionDropped(AllianceError):
    """The node dropped this subscriber (it fell too far behind); `reason` is the node's."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"subscription dropped by the node: {reason}")
        self.reason = reason
