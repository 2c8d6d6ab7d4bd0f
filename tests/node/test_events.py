"""The subscription hub and outboxes of node/api/subscriptions.py, without a network: a fake chain feeds them."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from node.api.subscriptions import (
    BLOCKS, CONNECTIONS_MAX, DROP_REASON, NOTIFICATIONS_QUEUED_MAX, SUBSCRIPTIONS_PER_CONNECTION_MAX, TX, Hub,
    Notification, Outbox, Subscriber, Subscription, dropped_text,
)
from node.api.jsonrpc import INVALID_PARAMS, NOT_FOUND, OVERLOADED, RpcError
from node.ops.metrics import Metrics

TX_A, TX_B = "aa" * 32, "bb" * 32


class FakeChain:
    """Blocks of given transaction hashes; counts how often each object is rendered."""

    def __init__(self) -> None:
        self.txs_at: dict[int, list[str]] = {}
        self.block_calls = 0
        self.tx_calls = 0

    def commit(self, height: int, *tx_hashes: str) -> None:
        self.txs_at[height] = list(tx_hashes)

    def block(self, height: int) -> dict[str, Any]:
        self.block_calls += 1
        return {"height": height, "hash": f"{height:064x}", "txs": self.txs_at.get(height, [])}

    def tx(self, tx_hash: bytes) -> dict[str, Any]:
        self.tx_calls += 1
        hex_hash = tx_hash.hex()
        heights = [h for h, txs in self.txs_at.items() if hex_hash in txs]
        if not heights:
            return {"tx_hash": hex_hash, "status": "unknown", "height": None}
        return {"tx_hash": hex_hash, "status": "committed", "height": heights[0]}


@pytest.fixture
def chain() -> FakeChain:
    return FakeChain()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def hub(chain: FakeChain, metrics: Metrics) -> Hub:
    return Hub(chain.block, chain.tx, metrics)


async def frames(subscriber: Subscriber) -> list[Any]:
    """Everything queued on the subscriber's outbox, as JSON, emptying it."""
    out = []
    for _ in range(len(subscriber.outbox)):
        frame = await subscriber.outbox.next()
        assert frame is not None
        out.append(json.loads(frame.text() if isinstance(frame, Notification) else frame))
    return out


def subscribed(hub: Hub, subscriber: Subscriber, params: dict[str, Any]) -> Subscription:
    subscription = hub.subscribe(subscriber, params)
    hub.start(subscription)
    return subscription


def error_code(call: Any, *args: Any) -> int:
    with pytest.raises(RpcError) as caught:
        call(*args)
    return caught.value.code


def gauge(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


# ---- blocks ----------------------------------------------------------------------------


async def test_block_notifications_carry_the_block_object_in_height_order(hub: Hub, chain: FakeChain) -> None:
    subscriber = hub.connect()
    assert subscriber is not None
    subscription = subscribed(hub, subscriber, {"topic": "blocks"})
    for height in (1, 2, 3):
        chain.commit(height, TX_A if height == 2 else TX_B)
        hub.publish(height)
    assert await frames(subscriber) == [
        {"jsonrpc": "2.0", "method": "subscription",
         "params": {"subscription": subscription.id, "topic": "blocks", "result": chain.block(height)}}
        for height in (1, 2, 3)
    ]


async def test_a_block_is_rendered_once_for_every_subscriber(hub: Hub, chain: FakeChain) -> None:
    subscribers = [hub.connect() for _ in range(5)]
    for subscriber in subscribers:
        assert subscriber is not None
        subscribed(hub, subscriber, {"topic": "blocks"})
        subscribed(hub, subscriber, {"topic": "blocks"})
    chain.commit(1, TX_A)
    hub.publish(1)
    assert chain.block_calls == 1
    queued = [await s.outbox.next() for s in subscribers if s is not None for _ in range(2)]
    results = {id(f.result) for f in queued if isinstance(f, Notification)}
    assert len(queued) == 10 and len(results) == 1


def test_nothing_is_rendered_without_subscribers(hub: Hub, chain: FakeChain) -> None:
    hub.connect()
    chain.commit(1, TX_A)
    hub.publish(1)
    assert chain.block_calls == 0


async def test_a_subscription_is_silent_until_started(hub: Hub, chain: FakeChain) -> None:
    subscriber = hub.connect()
    assert subscriber is not None
    subscription = hub.subscribe(subscriber, {"topic": "blocks"})
    chain.commit(1)
    hub.publish(1)
    assert await frames(subscriber) == []
    hub.start(subscription)
    chain.commit(2)
    hub.publish(2)
    assert [f["params"]["result"]["height"] for f in await frames(subscriber)] == [2]


# ---- transactions ------------------------------------------------------------------------


async def test_tx_subscription_before_commit_gets_one_notification_then_ends(
    hub: Hub, chain: FakeChain, metrics: Metrics
) -> None:
    subscriber = hub.connect()
    assert subscriber is not None
    subscription = subscribed(hub, subscriber, {"topic": "tx", "tx_hash": TX_A.upper()})
    chain.commit(1, TX_B)
    hub.publish(1)
    assert await frames(subscriber) == []
    chain.commit(2, TX_B, TX_A)
    hub.publish(2)
    chain.commit(3, TX_A)  # the same hash again must not notify an ended subscription
    hub.publish(3)
    assert await frames(subscriber) == [{"jsonrpc": "2.0", "method": "subscription", "params": {
        "subscription": subscription.id, "topic": "tx", "result": chain.tx(bytes.fromhex(TX_A))}}]
    assert subscriber.subscriptions == {}
    assert gauge(metrics, "alliance_ws_subscriptions", topic=TX) == 0


async def test_tx_subscription_after_commit_is_answered_at_once(hub: Hub, chain: FakeChain) -> None:
    chain.commit(1, TX_A)
    subscriber = hub.connect()
    assert subscriber is not None
    subscription = subscribed(hub, subscriber, {"topic": "tx", "tx_hash": TX_A})
    [frame] = await frames(subscriber)
    assert frame["params"] == {"subscription": subscription.id, "topic": "tx",
                               "result": {"tx_hash": TX_A, "status": "committed", "height": 1}}
    assert subscriber.subscriptions == {}


async def test_watchers_of_one_tx_share_its_rendering(hub: Hub, chain: FakeChain) -> None:
    subscribers = [hub.connect() for _ in range(3)]
    for subscriber in subscribers:
        assert subscriber is not None
        subscribed(hub, subscriber, {"topic": "tx", "tx_hash": TX_A})
    calls = chain.tx_calls
    chain.commit(1, TX_A)
    hub.publish(1)
    assert chain.tx_calls == calls + 1
    assert [len(await frames(s)) for s in subscribers if s is not None] == [1, 1, 1]


# ---- unsubscribe, errors, bounds -------------------------------------------------------------


async def test_unsubscribe_stops_notifications(hub: Hub, chain: FakeChain) -> None:
    subscriber = hub.connect()
    assert subscriber is not None
    kept = subscribed(hub, subscriber, {"topic": "blocks"})
    gone = subscribed(hub, subscriber, {"topic": "blocks"})
    watch = subscribed(hub, subscriber, {"topic": "tx", "tx_hash": TX_A})
    assert hub.unsubscribe(subscriber, {"subscription": gone.id}) is True
    assert hub.unsubscribe(subscriber, {"subscription": watch.id}) is True
    chain.commit(1, TX_A)
    hub.publish(1)
    assert [f["params"]["subscription"] for f in await frames(subscriber)] == [kept.id]
    assert error_code(hub.unsubscribe, subscriber, {"subscription": gone.id}) == NOT_FOUND


async def test_unsubscribe_before_start_means_no_notification(hub: Hub, chain: FakeChain) -> None:
    chain.commit(1, TX_A)
    subscriber = hub.connect()
    assert subscriber is not None
    subscription = hub.subscribe(subscriber, {"topic": "tx", "tx_hash": TX_A})
    hub.unsubscribe(subscriber, {"subscription": subscription.id})
    hub.start(subscription)
    assert await frames(subscriber) == []


def test_subscriptions_belong_to_their_connection(hub: Hub) -> None:
    mine, theirs = hub.connect(), hub.connect()
    assert mine is not None and theirs is not None
    subscription = subscribed(hub, theirs, {"topic": "blocks"})
    assert error_code(hub.unsubscribe, mine, {"subscription": subscription.id}) == NOT_FOUND


@pytest.mark.parametrize("params", [
    {}, {"topic": "headers"}, {"topic": 1}, {"topic": "blocks", "tx_hash": TX_A}, {"topic": "blocks", "extra": 1},
    {"topic": "tx"}, {"topic": "tx", "tx_hash": TX_A[:-1]}, {"topic": "tx", "tx_hash": "zz" * 32},
    {"topic": "tx", "tx_hash": 7}, {"topic": "tx", "tx_hash": TX_A, "wait": True},
])
def test_bad_subscribe_params(hub: Hub, params: dict[str, Any]) -> None:
    subscriber = hub.connect()
    assert error_code(hub.subscribe, subscriber, params) == INVALID_PARAMS
    assert subscriber is not None and subscriber.subscriptions == {}


@pytest.mark.parametrize("params", [{}, {"subscription": 5}, {"subscription": "x", "more": 1}])
def test_bad_unsubscribe_params(hub: Hub, params: dict[str, Any]) -> None:
    assert error_code(hub.unsubscribe, hub.connect(), params) == INVALID_PARAMS


def test_at_most_64_subscriptions_per_connection(hub: Hub) -> None:
    subscriber = hub.connect()
    assert subscriber is not None
    first = [subscribed(hub, subscriber, {"topic": "blocks"}) for _ in range(SUBSCRIPTIONS_PER_CONNECTION_MAX)]
    assert error_code(hub.subscribe, subscriber, {"topic": "tx", "tx_hash": TX_A}) == OVERLOADED
    other = hub.connect()
    assert other is not None
    subscribed(hub, other, {"topic": "blocks"})  # the bound is per connection
    hub.unsubscribe(subscriber, {"subscription": first[0].id})
    subscribed(hub, subscriber, {"topic": "blocks"})


def test_at_most_256_connections(hub: Hub, metrics: Metrics) -> None:
    subscribers = [hub.connect() for _ in range(CONNECTIONS_MAX)]
    assert None not in subscribers
    assert hub.connect() is None
    assert gauge(metrics, "alliance_ws_connections") == CONNECTIONS_MAX
    hub.disconnect(subscribers[0])  # type: ignore[arg-type]
    assert hub.connect() is not None


async def test_disconnect_ends_every_subscription(hub: Hub, chain: FakeChain, metrics: Metrics) -> None:
    subscriber = hub.connect()
    assert subscriber is not None
    subscribed(hub, subscriber, {"topic": "blocks"})
    subscribed(hub, subscriber, {"topic": "tx", "tx_hash": TX_A})
    assert gauge(metrics, "alliance_ws_subscriptions", topic=BLOCKS) == 1
    hub.disconnect(subscriber)
    chain.commit(1, TX_A)
    hub.publish(1)
    assert await frames(subscriber) == []
    assert chain.block_calls == 0  # nobody is left to render for
    assert gauge(metrics, "alliance_ws_subscriptions", topic=BLOCKS) == 0
    assert gauge(metrics, "alliance_ws_subscriptions", topic=TX) == 0
    assert gauge(metrics, "alliance_ws_connections") == 0


# ---- a subscriber that falls behind -----------------------------------------------------------


async def test_a_subscriber_that_falls_too_far_behind_is_dropped(hub: Hub, chain: FakeChain, metrics: Metrics) -> None:
    slow, keeping_up = hub.connect(), hub.connect()
    assert slow is not None and keeping_up is not None
    for _ in range(3):
        subscribed(hub, slow, {"topic": "blocks"})
    subscribed(hub, slow, {"topic": "tx", "tx_hash": TX_A})
    subscribed(hub, keeping_up, {"topic": "blocks"})
    heights = NOTIFICATIONS_QUEUED_MAX // 3 + 1
    received = []
    for height in range(1, heights + 1):
        chain.commit(height)
        hub.publish(height)
        received += await frames(keeping_up)
        if height < heights:
            assert slow.outbox.dropped is None
    assert slow.outbox.dropped == DROP_REASON
    assert len(slow.outbox) == 0 and slow.subscriptions == {}
    assert gauge(metrics, "alliance_ws_subscribers_dropped_total") == 1
    assert gauge(metrics, "alliance_ws_subscriptions", topic=TX) == 0
    chain.commit(heights + 1, TX_A)
    hub.publish(heights + 1)
    received += await frames(keeping_up)
    assert [f["params"]["result"]["height"] for f in received] == list(range(1, heights + 2))
    assert len(slow.outbox) == 0


async def test_a_connection_is_dropped_once_with_the_first_reason(hub: Hub, metrics: Metrics) -> None:
    subscriber = hub.connect()
    assert subscriber is not None
    subscribed(hub, subscriber, {"topic": "blocks"})
    subscriber.outbox.answer("unsent")
    hub.drop(subscriber, "a write timed out")
    hub.drop(subscriber, DROP_REASON)
    assert subscriber.outbox.dropped == "a write timed out" and subscriber.outbox.ended.is_set()
    assert subscriber.subscriptions == {} and len(subscriber.outbox) == 0
    assert await subscriber.outbox.next() is None
    assert gauge(metrics, "alliance_ws_subscribers_dropped_total") == 1
    assert gauge(metrics, "alliance_ws_subscriptions", topic=BLOCKS) == 0


def test_answers_do_not_count_towards_the_notification_bound() -> None:
    outbox = Outbox()
    for i in range(NOTIFICATIONS_QUEUED_MAX):
        outbox.answer(f'{{"id":{i}}}')
        assert outbox.notify(Notification("s", BLOCKS, "{}"))
    assert not outbox.notify(Notification("s", BLOCKS, "{}"))
    assert len(outbox) == 2 * NOTIFICATIONS_QUEUED_MAX


async def test_outbox_keeps_order_and_ends_when_dropped() -> None:
    outbox = Outbox()
    got: list[Any] = []

    async def drain() -> None:
        while (frame := await outbox.next()) is not None:
            got.append(frame)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await trio.testing.wait_all_tasks_blocked()
        outbox.answer("answer")
        notification = Notification("s", BLOCKS, "{}")
        outbox.notify(notification)
        await trio.testing.wait_all_tasks_blocked()
        assert got == ["answer", notification]
        assert not outbox.ended.is_set()
        outbox.drop(DROP_REASON)
    assert outbox.ended.is_set()
    outbox.answer("late")
    assert len(outbox) == 0


def test_dropped_and_notification_frames_are_the_protocols_json() -> None:
    assert json.loads(dropped_text("why")) == {
        "jsonrpc": "2.0", "method": "subscription_dropped", "params": {"reason": "why"}}
    assert json.loads(Notification("ab", TX, '{"x":[1]}').text()) == {
        "jsonrpc": "2.0", "method": "subscription",
        "params": {"subscription": "ab", "topic": "tx", "result": {"x": [1]}}}
