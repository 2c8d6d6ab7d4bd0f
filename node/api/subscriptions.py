"""Live events for WebSocket subscribers (docs/events.md): who follows what, and each connection's outbox.

Publishing a committed block never waits on a subscriber: the block's JSON (and
that of each watched transaction) is rendered once and queued, by reference, on
the outbox of every subscriber; a subscriber whose outbox already holds
NOTIFICATIONS_QUEUED_MAX unsent notifications is dropped instead. The connection's
writer task (node/api/ws.py) drains the outbox.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from node.api.jsonrpc import INVALID_PARAMS, NOT_FOUND, OVERLOADED, RpcError
from node.ops.metrics import Metrics

log = logging.getLogger("alliance.events")

BLOCKS, TX = "blocks", "tx"
CONNECTIONS_MAX = 256
SUBSCRIPTIONS_PER_CONNECTION_MAX = 64
NOTIFICATIONS_QUEUED_MAX = 1024
DROP_REASON = f"too slow: {NOTIFICATIONS_QUEUED_MAX} notifications were waiting to be sent"

Params = dict[str, Any]


def compact_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


@dataclass(frozen=True)
class Notification:
    subscription: str
    topic: str
    result: str  # JSON text, shared by every subscriber of the same event

    def text(self) -> str:
        subscription, topic = compact_json(self.subscription), compact_json(self.topic)
        return ('{"jsonrpc":"2.0","method":"subscription","params":'
                f'{{"subscription":{subscription},"topic":{topic},"result":{self.result}}}}}')


def dropped_text(reason: str) -> str:
    return compact_json({"jsonrpc": "2.0", "method": "subscription_dropped", "params": {"reason": reason}})


class Outbox:
    """One connection's unsent frames, in order: answers (JSON text) and notifications."""

    def __init__(self) -> None:
        self._frames: deque[str | Notification] = deque()
        self._notifications = 0
        self._wake = trio.Event()
        self.dropped: str | None = None  # why, once dropped
        self.ended = trio.Event()  # set once dropped or disconnected: what is left to send is on a deadline

    def __len__(self) -> int:
        return len(self._frames)

    def answer(self, text: str) -> None:
        if self.dropped is None:
            self._frames.append(text)
            self._wake.set()

    def notify(self, notification: Notification) -> bool:
        """Queues a notification; False, queueing nothing, when NOTIFICATIONS_QUEUED_MAX are unsent already."""
        if self._notifications >= NOTIFICATIONS_QUEUED_MAX:
            return False
        self._frames.append(notification)
        self._notifications += 1
        self._wake.set()
        return True

    def drop(self, reason: str) -> None:
        self._frames.clear()
        self._notifications = 0
        self.dropped = reason
        self._wake.set()
        self.ended.set()

    async def next(self) -> str | Notification | None:
        """The next frame to send, waiting for one; None once the connection is dropped."""
        while not self._frames and self.dropped is None:
            self._wake = trio.Event()
            await self._wake.wait()
        if self.dropped is not None:
            return None
        frame = self._frames.popleft()
        if isinstance(frame, Notification):
            self._notifications -= 1
        return frame


class Subscriber:
    """One WebSocket connection: its subscriptions and its outbox."""

    def __init__(self) -> None:
        self.outbox = Outbox()
        self.subscriptions: dict[str, Subscription] = {}


@dataclass(eq=False)
class Subscription:
    id: str
    topic: str
    tx_hash: str | None  # hex, for the tx topic
    subscriber: Subscriber


def _subscribe_params(params: Params) -> tuple[str, str | None]:
    """(topic, tx_hash hex or None) of subscribe's params; RpcError INVALID_PARAMS otherwise."""
    topic = params.get("topic")
    if topic not in (BLOCKS, TX):
        raise RpcError(INVALID_PARAMS, 'invalid params: topic must be "blocks" or "tx"')
    expected = {"topic"} if topic == BLOCKS else {"topic", "tx_hash"}
    _exact_params(params, expected)
    if topic == BLOCKS:
        return topic, None
    tx_hash = params["tx_hash"]
    if not isinstance(tx_hash, str) or len(tx_hash) != 64 or not _is_hex(tx_hash):
        raise RpcError(INVALID_PARAMS, "invalid params: tx_hash must be 64 hex characters")
    return topic, tx_hash.lower()


def _exact_params(params: Params, expected: set[str]) -> None:
    missing, unknown = sorted(expected - params.keys()), sorted(params.keys() - expected)
    if missing or unknown:
        raise RpcError(INVALID_PARAMS, f"invalid params: {f'missing {missing}' if missing else f'unknown {unknown}'}")


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


class Hub:
    """Every connection's subscriptions; `publish` feeds them each committed block.

    `block(height)` and `tx(hash)` give the get_block and get_tx objects.
    """

    def __init__(self, block: Callable[[int], dict[str, Any]], tx: Callable[[bytes], dict[str, Any]],
                 metrics: Metrics) -> None:
        self._block = block
        self._tx = tx
        self.metrics = metrics
        self._subscribers: set[Subscriber] = set()
        self._blocks: dict[str, Subscription] = {}
        self._txs: dict[str, dict[str, Subscription]] = {}  # tx hash hex -> subscriptions waiting for it
        for topic in (BLOCKS, TX):
            metrics.ws_subscriptions.labels(topic).set(0)

    # ---- connections --------------------------------------------------------------

    def connect(self) -> Subscriber | None:
        """A new connection's subscriber; None when CONNECTIONS_MAX are open."""
        if len(self._subscribers) >= CONNECTIONS_MAX:
            return None
        subscriber = Subscriber()
        self._subscribers.add(subscriber)
        self.metrics.ws_connections.set(len(self._subscribers))
        return subscriber

    def disconnect(self, subscriber: Subscriber) -> None:
        for subscription in list(subscriber.subscriptions.values()):
            self._end(subscription)
        self._subscribers.discard(subscriber)
        self.metrics.ws_connections.set(len(self._subscribers))

    # ---- the subscribe and unsubscribe methods -------------------------------------

    def subscribe(self, subscriber: Subscriber, params: Params) -> Subscription:
        """A new subscription, counted and cancellable at once; it is notified only once `start`ed,
        which the connection does after queueing the answer that tells the client its id."""
        topic, tx_hash = _subscribe_params(params)
        if len(subscriber.subscriptions) >= SUBSCRIPTIONS_PER_CONNECTION_MAX:
            raise RpcError(OVERLOADED, f"too many subscriptions: at most {SUBSCRIPTIONS_PER_CONNECTION_MAX} "
                                       "per connection")
        subscription = Subscription(secrets.token_hex(8), topic, tx_hash, subscriber)
        subscriber.subscriptions[subscription.id] = subscription
        self.metrics.ws_subscriptions.labels(topic).inc()
        return subscription

    def start(self, subscription: Subscription) -> None:
        if subscription.subscriber.subscriptions.get(subscription.id) is not subscription:
            return  # unsubscribed or dropped before its answer went out
        if subscription.tx_hash is None:
            self._blocks[subscription.id] = subscription
            return
        tx = self._tx(bytes.fromhex(subscription.tx_hash))
        if tx["status"] == "committed":
            self._notify(subscription, compact_json(tx))
            self._end(subscription)
        else:
            self._txs.setdefault(subscription.tx_hash, {})[subscription.id] = subscription

    def unsubscribe(self, subscriber: Subscriber, params: Params) -> bool:
        _exact_params(params, {"subscription"})
        if not isinstance(params["subscription"], str):
            raise RpcError(INVALID_PARAMS, "invalid params: subscription must be a string")
        subscription = subscriber.subscriptions.get(params["subscription"])
        if subscription is None:
            raise RpcError(NOT_FOUND, "not found: no such subscription on this connection")
        self._end(subscription)
        return True

    # ---- publishing ---------------------------------------------------------------

    def publish(self, height: int) -> None:
        """Queues the notifications of a committed block; never waits."""
        if not self._blocks and not self._txs:
            return
        block = self._block(height)
        if self._blocks:
            text = compact_json(block)
            for subscription in list(self._blocks.values()):
                self._notify(subscription, text)
        for tx_hash in block["txs"]:
            waiting = self._txs.get(tx_hash)
            if waiting:
                text = compact_json(self._tx(bytes.fromhex(tx_hash)))
                for subscription in list(waiting.values()):
                    self._notify(subscription, text)
                    self._end(subscription)

    def _notify(self, subscription: Subscription, result: str) -> None:
        subscriber = subscription.subscriber
        if subscriber.outbox.dropped is not None:
            return
        if not subscriber.outbox.notify(Notification(subscription.id, subscription.topic, result)):
            self.drop(subscriber, DROP_REASON)

    def drop(self, subscriber: Subscriber, reason: str) -> None:
        """Ends every subscription of a connection and empties its outbox, which then ends; once only."""
        if subscriber.outbox.dropped is not None:
            return
        for subscription in list(subscriber.subscriptions.values()):
            self._end(subscription)
        subscriber.outbox.drop(reason)
        self.metrics.ws_subscribers_dropped.inc()
        log.warning("event=ws_subscriber_dropped reason=%r", reason)

    def _end(self, subscription: Subscription) -> None:
        if subscription.subscriber.subscriptions.pop(subscription.id, None) is None:
            return
        self.metrics.ws_subscriptions.labels(subscription.topic).dec()
        self._blocks.pop(subscription.id, None)
        if subscription.tx_hash is not None:
            waiting = self._txs.get(subscription.tx_hash, {})
            waiting.pop(subscription.id, None)
            if not waiting:
                self._txs.pop(subscription.tx_hash, None)
