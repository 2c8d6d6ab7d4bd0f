"""The /ws endpoint: JSON-RPC over a WebSocket, plus subscribe and unsubscribe (docs/events.md).

Each connection runs a reader (requests, answered concurrently up to
REQUESTS_IN_FLIGHT_MAX) and a writer (the only task that sends, draining the
connection's outbox in order). Hypercorn's writes cannot be cancelled, so once a
connection ends (dropped or disconnected) what is left to send gets CLOSE_GRACE_S
before the TCP connection is reset.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from node.events import CONNECTIONS_MAX, Hub, Notification, Subscriber, Subscription, compact_json, dropped_text
from node.rpc import RpcService
from node.web import RESET, Receive, Scope, Send, refuse_websocket

log = logging.getLogger("alliance.ws")

REQUESTS_IN_FLIGHT_MAX = 16  # read but not yet answered on one connection; reading waits beyond
CLOSE_GRACE_S = 5.0
POLICY_VIOLATION = 1008


class EventSocket:
    """The ASGI WebSocket app of /ws."""

    def __init__(self, hub: Hub, rpc: RpcService) -> None:
        self.hub = hub
        self.rpc = rpc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/ws":
            return await refuse_websocket(send, 404, {"error": "not found; events are served at /ws"})
        subscriber = self.hub.connect()
        if subscriber is None:
            return await refuse_websocket(send, 503, {"error": f"over {CONNECTIONS_MAX} WebSocket connections"})
        try:
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                await _Session(self.hub, self.rpc, subscriber, receive, send, scope["state"][RESET]).run()
        finally:
            self.hub.disconnect(subscriber)


class _Session:
    """One accepted connection: a reader, a writer, and a reset deadline once it ends."""

    def __init__(self, hub: Hub, rpc: RpcService, subscriber: Subscriber, receive: Receive, send: Send,
                 reset: Callable[[], None]) -> None:
        self.hub = hub
        self.rpc = rpc
        self.subscriber = subscriber
        self.receive = receive
        self.send = send
        self.reset = reset
        self.slots = trio.Semaphore(REQUESTS_IN_FLIGHT_MAX)  # released once a request's answer is sent
        self.disconnected = False

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reset_if_stuck)
            async with trio.open_nursery() as serving:
                serving.start_soon(self._read, serving)
                await self._write()  # returns once dropped; cancelled when the client disconnects
                serving.cancel_scope.cancel()
            reason = self.subscriber.outbox.dropped
            if reason is not None:
                async with trio.open_nursery() as closing:
                    closing.start_soon(self._say_dropped, reason)
                    if not self.disconnected:
                        await self._until_disconnect()  # also keeps Hypercorn from blocking on a full queue
            nursery.cancel_scope.cancel()

    async def _read(self, serving: trio.Nursery) -> None:
        while True:
            await self.slots.acquire()
            message = await self.receive()
            if message["type"] == "websocket.disconnect":
                self.disconnected = True
                self.subscriber.outbox.ended.set()
                serving.cancel_scope.cancel()
                return
            text = message.get("text")
            body = text.encode() if text is not None else message.get("bytes") or b""
            serving.start_soon(self._answer, body)

    async def _answer(self, body: bytes) -> None:
        created: list[Subscription] = []

        async def subscribe(params: dict[str, Any]) -> str:
            subscription = self.hub.subscribe(self.subscriber, params)
            created.append(subscription)
            return subscription.id

        async def unsubscribe(params: dict[str, Any]) -> bool:
            return self.hub.unsubscribe(self.subscriber, params)

        answer = await _with_methods(self.rpc, {"subscribe": subscribe, "unsubscribe": unsubscribe}).handle(body)
        if answer is None:
            self.slots.release()
        else:
            self.subscriber.outbox.answer(compact_json(answer))
        for subscription in created:
            self.hub.start(subscription)  # after the answer, so the client knows the id of what follows

    async def _write(self) -> None:
        while (frame := await self.subscriber.outbox.next()) is not None:
            if isinstance(frame, Notification):
                await self._send_text(frame.text())
            else:
                await self._send_text(frame)
                self.slots.release()

    async def _send_text(self, text: str) -> None:
        await self.send({"type": "websocket.send", "text": text})

    async def _say_dropped(self, reason: str) -> None:
        await self._send_text(dropped_text(reason))
        await self.send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": "subscriber dropped"})

    async def _until_disconnect(self) -> None:
        while (await self.receive())["type"] != "websocket.disconnect":
            pass  # requests after a drop go unanswered

    async def _reset_if_stuck(self) -> None:
        await self.subscriber.outbox.ended.wait()
        await trio.sleep(CLOSE_GRACE_S)
        log.info("event=ws_connection_reset reason=%s", "dropped" if self.subscriber.outbox.dropped else "closed")
        self.reset()


Method = Callable[[dict[str, Any]], Awaitable[Any]]


def _with_methods(rpc: RpcService, methods: dict[str, Method]) -> RpcService:
    """The node's RPC service with this request's extra methods: the same envelope, errors and metrics."""
    service = copy.copy(rpc)
    service.methods = {**rpc.methods, **methods}
    return service
