"""Event streams for the synchronous Client, on websockets.sync.client."""

from __future__ import annotations

import collections
import contextlib
from types import TracebackType
from typing import Generic

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from node.client.auth import CLIENT_CERT_HINT, Credentials, unreachable
from node.client.errors import NodeUnreachable
from node.client.events import MAX_FRAME_BYTES, E, Subscription, handshake_refused


class EventStream(Generic[E]):
    """A subscription on a socket of its own; iterate for its events, close (or `with`) when done."""

    def __init__(self, url: str, subscription: Subscription[E], open_timeout_s: float,
                 credentials: Credentials = Credentials()) -> None:
        self.url = url
        self._subscription: Subscription[E] = subscription
        self._pending: collections.deque[E] = collections.deque()
        self._stack = contextlib.ExitStack()
        try:
            self._ws: ClientConnection = self._stack.enter_context(
                connect(url, open_timeout=open_timeout_s, max_size=MAX_FRAME_BYTES, proxy=None,
                        ssl=credentials.ssl_context() if url.startswith("wss:") else None,
                        additional_headers=credentials.headers())
            )
        except InvalidStatus as exc:
            raise handshake_refused(url, exc.response.status_code, bytes(exc.response.body)) from None
        except OSError as exc:  # refused, or a TLS failure (an untrusted certificate, say)
            raise unreachable(url, exc) from None
        except (ConnectionClosed, InvalidHandshake) as exc:
            # TLS 1.3: a node that wants a client certificate closes the connection after the TLS handshake.
            hint = CLIENT_CERT_HINT if url.startswith("wss:") else ""
            raise NodeUnreachable(f"cannot open the event stream {url}: {exc}{hint}") from None
        except (TimeoutError, InvalidURI) as exc:
            raise NodeUnreachable(f"cannot open the event stream {url}: {exc}") from None
        try:
            self._send_subscribe(open_timeout_s)
        except BaseException:
            self.close()
            raise

    def _send_subscribe(self, timeout_s: float) -> None:
        """Subscribes and waits for the node's answer, so that no event after this call is missed."""
        try:
            self._ws.send(self._subscription.subscribe_frame())
        except ConnectionClosed as exc:
            raise self._closed(exc) from None
        while not self._subscription.confirmed:
            try:
                frame = self._recv(timeout_s)
            except TimeoutError:
                raise NodeUnreachable(f"no answer to subscribe from {self.url} within {timeout_s} s") from None
            event = self._subscription.feed(frame)
            if event is not None:
                self._pending.append(event)

    def _recv(self, timeout_s: float | None) -> str | bytes:
        try:
            return self._ws.recv(timeout=timeout_s)
        except ConnectionClosed as exc:
            raise self._closed(exc) from None

    def _closed(self, exc: ConnectionClosed) -> NodeUnreachable:
        return NodeUnreachable(f"the node closed the event stream {self.url}: {exc}")

    def next_event(self, timeout_s: float | None = None) -> E:
        """The next event; TimeoutError if none comes within `timeout_s`."""
        while not self._pending:
            event = self._subscription.feed(self._recv(timeout_s))
            if event is not None:
                return event
        return self._pending.popleft()

    def __iter__(self) -> EventStream[E]:
        return self

    def __next__(self) -> E:
        return self.next_event()

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> EventStream[E]:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
