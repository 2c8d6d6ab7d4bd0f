"""The /ws endpoint: JSON-RPC over a WebSocket, plus subscribe and unsubscribe (docs/events.md).

Each connection runs a reader (requests, answered concurrently up to
REQUESTS_IN_FLIGHT_MAX) and a writer (the only task that sends, draining the
connection's outbox in order). Hypercorn's writes cannot be cancelled, so a
connection is reset instead: when one write takes over WRITE_TIMEOUT_S, and
CLOSE_GRACE_S after it ends (dropped, idle or disconnected) if it is still open.
A connection with no subscription, no request under way and no frame either way
for IDLE_TIMEOUT_S is closed (code 1000); one whose client answers no ping is
closed by Hypercorn (node/api/http_server.py Limits).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from contextvars import ContextVar
from functools import partial
from typing import Any

import trio

from node.api.access import AccessGate
from node.api.http_server import RESET, YIELD, Receive, Scope, Send, refuse_websocket
from node.api.rpc import RpcService
from node.api.subscriptions import CONNECTIONS_MAX, Hub, Notification, Subscriber, Subscription, compact_json, dropped_text
from node.ops.ratelog import RateLog

log = logging.getLogger("alliance.ws")
resets = RateLog(log, logging.INFO)

REQUESTS_IN_FLIGHT_MAX = 16  # read but not yet answered on one connection; reading waits beyond
WRITE_TIMEOUT_S = 5.0
WRITE_TIMEOUT_REASON = f"too slow: a write was not taken within {WRITE_TIMEOUT_S:g} s"
CLOSE_GRACE_S = 5.0
IDLE_TIMEOUT_S = 20.0  # ample for a client to subscribe, or for one that calls methods now and then
IDLE_REASON = f"idle: no subscription and no request for {IDLE_TIMEOUT_S:g} s"
ROOM_REASON = "idle, and another connection needed its place"
NORMAL_CLOSURE = 1000
POLICY_VIOLATION = 1008
SOCKET_METHODS = ("subscribe", "unsubscribe")

# The subscriptions made by the request being answered: each starts once that answer is queued.
_created: ContextVar[list[Subscription]] = ContextVar("created")


class EventSocket:
    """The ASGI WebSocket app of /ws."""

    def __init__(self, hub: Hub, rpc: RpcService, gate: AccessGate) -> None:
        self.hub = hub
        self.rpc = rpc
        self.gate = gate  # who may open a connection, and call what on it
        self.sessions: list[_Session] = []  # oldest first

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/ws":
            return await refuse_websocket(send, 404, {"error": "not found; events are served at /ws"})
        roles = await self.gate.admit_socket(scope, send)
        if roles is None:
            return
        subscriber = self.hub.connect()
        if subscriber is None and self._make_room():
            subscriber = self.hub.connect()
        if subscriber is None:
            return await refuse_websocket(send, 503, {"error": f"over {CONNECTIONS_MAX} WebSocket connections"})
        session = _Session(self.hub, self.rpc, partial(self.gate.refuse_frame, roles), subscriber, receive, send,
                           scope["state"][RESET])
        scope["state"][YIELD](session.idle, session.give_up)
        self.sessions.append(session)
        try:
            if (await receive())["type"] == "websocket.connect":
                await session.run()
        finally:
            self.sessions.remove(session)
            self.hub.disconnect(subscriber)

    def _make_room(self) -> bool:
        """Has the oldest idle connection give up its place; False when none is idle."""
        for session in self.sessions:
            if session.idle():
                session.give_up()
                return True
        return False


class _Session:
    """One connection: a reader, a writer, and the deadlines that reset it."""

    def __init__(self, hub: Hub, rpc: RpcService, refused: Callable[[bytes], tuple[bool, Any]], subscriber: Subscriber,
                 receive: Receive, send: Send, reset: Callable[[], None]) -> None:
        self.hub = hub
        self.rpc = rpc
        self.refused = refused  # whether this connection may not make a request, and the answer then
        self.methods = {"subscribe": self._subscribe, "unsubscribe": self._unsubscribe}  # this connection's own
        self.subscriber = subscriber
        self.receive = receive
        self.send = send
        self.reset = reset
        self.slots = trio.Semaphore(REQUESTS_IN_FLIGHT_MAX)  # released once a request's answer is sent
        self.write_deadline = trio.CancelScope()  # its deadline is set while a write is under way
        self.disconnected = False
        self.last_frame_at = trio.current_time()  # received or sent
        self.requests = 0  # read and not yet answered

    async def run(self) -> None:
        ended = self.subscriber.outbox.ended
        async with trio.open_nursery() as watchdogs:
            watchdogs.start_soon(self._reset_if_write_stuck)
            watchdogs.start_soon(self._reset_if_open_after_end)
            watchdogs.start_soon(self._close_if_idle)
            async with trio.open_nursery() as writing:
                await self._send({"type": "websocket.accept"})
                writing.start_soon(self._write)
                async with trio.open_nursery() as serving:
                    serving.start_soon(self._read, serving)
                    await ended.wait()
                    serving.cancel_scope.cancel()  # the reader may be waiting for a slot that never frees
                if not self.disconnected:
                    await self._until_disconnect()  # Hypercorn may be blocked queueing messages for us
                writing.cancel_scope.cancel()
            watchdogs.cancel_scope.cancel()

    async def _read(self, serving: trio.Nursery) -> None:
        while True:
            await self.slots.acquire()
            message = await self.receive()
            if message["type"] == "websocket.disconnect":
                self.disconnected = True
                self.subscriber.outbox.ended.set()
                return
            self.last_frame_at = trio.current_time()
            self.requests += 1
            text = message.get("text")
            body = text.encode() if text is not None else message.get("bytes") or b""
            serving.start_soon(self._answer, body)

    async def _answer(self, body: bytes) -> None:
        created: list[Subscription] = []
        _created.set(created)
        request = _without_socket_notifications(body)
        refused, answer = (False, None) if request is None else self.refused(request)
        if request is not None and not refused:
            answer = await self.rpc.handle(request, self.methods)
        self.requests -= 1
        if answer is None:
            self.slots.release()
        else:
            self.subscriber.outbox.answer(compact_json(answer))
        for subscription in created:
            self.hub.start(subscription)  # after the answer, so the client knows the id of what follows

    async def _subscribe(self, params: dict[str, Any]) -> str:
        subscription = self.hub.subscribe(self.subscriber, params)
        _created.get().append(subscription)
        return subscription.id

    async def _unsubscribe(self, params: dict[str, Any]) -> bool:
        return self.hub.unsubscribe(self.subscriber, params)

    async def _write(self) -> None:
        while (frame := await self.subscriber.outbox.next()) is not None:
            if isinstance(frame, Notification):
                await self._send_text(frame.text())
            else:
                await self._send_text(frame)
                self.slots.release()
            self.last_frame_at = trio.current_time()
        reason = self.subscriber.outbox.dropped
        assert reason is not None  # next() gives None only once dropped
        if reason in (IDLE_REASON, ROOM_REASON):
            return await self._send({"type": "websocket.close", "code": NORMAL_CLOSURE, "reason": reason})
        await self._send_text(dropped_text(reason))  # after a write timeout, the reset makes these no-ops
        await self._send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": "subscriber dropped"})

    async def _send_text(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def _send(self, message: dict[str, Any]) -> None:
        self.write_deadline.deadline = trio.current_time() + WRITE_TIMEOUT_S
        await self.send(message)
        self.write_deadline.deadline = math.inf

    async def _until_disconnect(self) -> None:
        while (await self.receive())["type"] != "websocket.disconnect":
            pass  # requests after the end go unanswered

    async def _reset_if_write_stuck(self) -> None:
        with self.write_deadline:
            await trio.sleep_forever()
        self.hub.drop(self.subscriber, WRITE_TIMEOUT_REASON)
        self._reset("write_timeout")

    def idle(self) -> bool:
        """No subscription, no request under way, and not closing already."""
        return not (self.subscriber.subscriptions or self.requests or self.subscriber.outbox.dropped)

    def give_up(self) -> None:
        """Closes the connection (idle, see idle()) to make room for another; it no longer counts at once."""
        self.subscriber.outbox.drop(ROOM_REASON)
        self.hub.disconnect(self.subscriber)

    async def _close_if_idle(self) -> None:
        while True:
            await trio.sleep_until(self.last_frame_at + IDLE_TIMEOUT_S)
            if not self.idle():
                self.last_frame_at = trio.current_time()
            elif trio.current_time() >= self.last_frame_at + IDLE_TIMEOUT_S:
                self.subscriber.outbox.drop(IDLE_REASON)  # the writer closes; no subscription to end
                return

    async def _reset_if_open_after_end(self) -> None:
        await self.subscriber.outbox.ended.wait()
        await trio.sleep(CLOSE_GRACE_S)
        dropped = self.subscriber.outbox.dropped
        self._reset("closed" if dropped is None else "idle" if dropped in (IDLE_REASON, ROOM_REASON) else "dropped")

    def _reset(self, reason: str) -> None:
        resets.log(f"event=ws_connection_reset reason={reason}")
        self.reset()


def _without_socket_notifications(body: bytes) -> bytes | None:
    """The request without subscribe and unsubscribe notifications, which do nothing: a subscription
    made by one would have an id its client never learns. None when no call is left."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return body  # the service answers it as it answers any request it cannot parse
    calls = request if isinstance(request, list) else [request]
    kept = [call for call in calls if not _is_socket_notification(call)]
    if len(kept) == len(calls):
        return body
    if not kept:
        return None
    return compact_json(kept if isinstance(request, list) else kept[0]).encode()


def _is_socket_notification(call: Any) -> bool:
    return isinstance(call, dict) and "id" not in call and call.get("method") in SOCKET_METHODS
