"""Event streams for the trio AsyncClient, on trio_websocket."""

from __future__ import annotations

import collections
import contextlib
import ssl
from types import TracebackType
from typing import Generic
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed, ConnectionRejected, HandshakeError, WebSocketConnection, open_websocket_url,
)

from node.client.auth import Credentials, unreachable
from node.client.errors import NodeUnreachable
from node.client.events import MAX_FRAME_BYTES, E, Subscription, handshake_refused


class AsyncEventStream(Generic[E]):
    """A subscription on a socket of its own, used as `async with stream: async for event in stream`."""

    def __init__(self, url: str, subscription: Subscription[E], open_timeout_s: float,
                 credentials: Credentials = Credentials()) -> None:
        self.url = url
        self._credentials = credentials
        self._subscription: Subscription[E] = subscription
        self._open_timeout_s = open_timeout_s
        self._pending: collections.deque[E] = collections.deque()
        self._stack = contextlib.AsyncExitStack()
        self._ws: WebSocketConnection | None = None

    async def __aenter__(self) -> AsyncEventStream[E]:
        try:
            tls = self._credentials.ssl_context() if self.url.startswith("wss:") else None
            if tls is not None:
                await self._check_tls(tls)
            headers = [(name.lower().encode(), value.encode()) for name, value in self._credentials.headers().items()]
            self._ws = await self._stack.enter_async_context(open_websocket_url(
                self.url, tls, max_message_size=MAX_FRAME_BYTES, connect_timeout=self._open_timeout_s,
                extra_headers=headers,
            ))
        except ConnectionRejected as exc:
            raise handshake_refused(self.url, exc.status_code, exc.body) from None
        except OSError as exc:  # refused, or a TLS failure (an untrusted certificate, say)
            raise unreachable(self.url, exc) from None
        except HandshakeError as exc:
            raise NodeUnreachable(f"cannot open the event stream {self.url}: {exc!r}") from None
        try:
            await self._subscribe()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _check_tls(self, tls: ssl.SSLContext) -> None:
        """A TLS handshake of its own first: trio_websocket turns a failed one (an untrusted certificate)
        into a timeout, which would not say what is wrong."""
        parts = urlsplit(self.url)
        with trio.move_on_after(self._open_timeout_s):
            stream = await trio.open_ssl_over_tcp_stream(parts.hostname or "", parts.port or 443, ssl_context=tls)
            try:
                await stream.do_handshake()
            except trio.BrokenResourceError as exc:  # the ssl module's error is its cause
                raise unreachable(self.url, exc) from None
            finally:
                await trio.aclose_forcefully(stream)

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self._stack.aclose()

    async def _subscribe(self) -> None:
        """Subscribes and waits for the node's answer, so that no event after this call is missed."""
        try:
            await self._connection().send_message(self._subscription.subscribe_frame())
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        try:
            with trio.fail_after(self._open_timeout_s):
                while not self._subscription.confirmed:
                    event = self._subscription.feed(await self._recv())
                    if event is not None:
                        self._pending.append(event)
        except trio.TooSlowError:
            raise NodeUnreachable(f"no answer to subscribe from {self.url} within {self._open_timeout_s} s") from None

    def _connection(self) -> WebSocketConnection:
        if self._ws is None:
            raise RuntimeError("use the event stream as `async with client.blocks() as blocks:`")
        return self._ws

    async def _recv(self) -> str | bytes:
        try:
            return await self._connection().get_message()
        except ConnectionClosed as exc:
            raise self._closed(exc) from None

    def _closed(self, exc: ConnectionClosed) -> NodeUnreachable:
        return NodeUnreachable(f"the node closed the event stream {self.url}: {exc.reason}")

    async def next_event(self) -> E:
        while not self._pending:
            event = self._subscription.feed(await self._recv())
            if event is not None:
                return event
        return self._pending.popleft()

    def __aiter__(self) -> AsyncEventStream[E]:
        return self

    async def __anext__(self) -> E:
        return await self.next_event()
