"""The sans-I/O side of event subscriptions over the node's WebSocket (`ws://HOST:PORT/ws`).

One subscription per socket: the stream sends `subscribe_frame`, then hands every text frame it
receives to `feed`, which returns the decoded event (a Block or a TxInfo) or None.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

from node.client.auth import access_denied
from node.client.core import Core, hash_hex, result_of
from node.client.errors import AccessDenied, BadAnswer, CommitTimeout, NodeUnreachable, Overloaded, SubscriptionDropped
from node.client.types import Block, TxInfo, block_from, tx_info_from

# A block of many transactions makes a large notification; far above the node's own 1 MiB inbound limit.
MAX_FRAME_BYTES = 64 * 1024 * 1024
E = TypeVar("E")


def ws_url(rpc_url: str) -> str:
    """The event endpoint of a node's http://HOST:PORT (or https) RPC address."""
    parts = urlsplit(rpc_url)
    return urlunsplit(("wss" if parts.scheme == "https" else "ws", parts.netloc, "/ws", "", ""))


class Subscription(Generic[E]):
    """One subscription: its request, its id once the node answered, and the decoding of its events."""

    def __init__(self, core: Core, params: dict[str, Any], decode: Callable[[Any], E]) -> None:
        self.topic = params["topic"]
        self.id: str | None = None
        self._decode: Callable[[Any], E] = decode
        self._request = core.request("subscribe", params)

    def subscribe_frame(self) -> str:
        return json.dumps(self._request)

    @property
    def confirmed(self) -> bool:
        return self.id is not None

    def feed(self, frame: str | bytes) -> E | None:
        """The event a frame carries, if any (None for the answer to subscribe); raises the typed error
        of a refused subscription or of a drop."""
        try:
            message = json.loads(frame)
        except ValueError:
            raise BadAnswer(f"event stream: not JSON: {frame[:200]!r}") from None
        if not isinstance(message, dict):
            raise BadAnswer(f"event stream: not a JSON-RPC message: {message!r:.200}")
        method = message.get("method")
        if method == "subscription_dropped":
            params = message.get("params")
            raise SubscriptionDropped(str(params.get("reason", "")) if isinstance(params, dict) else "")
        if method == "subscription":
            return self._event(message.get("params"))
        if message.get("id") == self._request["id"]:
            self._confirm(result_of(message))
            return None
        raise BadAnswer(f"event stream: unexpected message {message!r:.200}")

    def _confirm(self, subscription_id: Any) -> None:
        if not isinstance(subscription_id, str):
            raise BadAnswer(f"subscribe: expected a subscription id string, got {subscription_id!r:.100}")
        self.id = subscription_id

    def _event(self, params: Any) -> E | None:
        if not isinstance(params, dict) or "result" not in params:
            raise BadAnswer(f"event stream: malformed notification {params!r:.200}")
        # The node may notify before its answer to subscribe arrives; the socket holds only this subscription.
        if params.get("topic") != self.topic or self.id not in (None, params.get("subscription")):
            raise BadAnswer(f"event stream: notification of another subscription {params!r:.200}")
        return self._decode(params["result"])


def blocks_subscription(core: Core) -> Subscription[Block]:
    """Every block the node commits from now on, in height order."""
    return Subscription(core, {"topic": "blocks"}, block_from)


def tx_subscription(core: Core, tx_hash: str | bytes) -> Subscription[TxInfo]:
    """One event: the transaction as committed (at once if it already is)."""
    return Subscription(core, {"topic": "tx", "tx_hash": hash_hex(tx_hash, "tx_hash")}, tx_info_from)


def wait_timed_out(tx_hash: str | bytes, timeout_s: float) -> CommitTimeout:
    """The error of a wait for a commit that did not come in time (the same as the node's own)."""
    return CommitTimeout(
        -32006, f"timed out after {timeout_s} s waiting for commit; the transaction may still commit",
        {"tx_hash": hash_hex(tx_hash, "tx_hash")},
    )


def handshake_refused(url: str, status: int, body: bytes | None) -> Overloaded | NodeUnreachable | AccessDenied:
    """The error of a WebSocket handshake the node answered with plain HTTP: Overloaded for 503 (all its
    WebSocket connections are taken; retry later), AccessDenied for 401/403, NodeUnreachable otherwise."""
    denied = access_denied(url, status, body or b"")
    if denied is not None:
        return denied
    reason = _refusal_reason(body or b"")
    if status == 503:
        return Overloaded(-32004, f"the node refused the event stream {url}: {reason}", {"http_status": status})
    return NodeUnreachable(f"the node refused the event stream {url} with HTTP {status}: {reason}")


def _refusal_reason(body: bytes) -> str:
    """The node's `{"error": REASON}` body, else the body as it came."""
    try:
        message = json.loads(body)
    except ValueError:
        message = None
    error = message.get("error") if isinstance(message, dict) else None
    return error if isinstance(error, str) else repr(body[:200])
