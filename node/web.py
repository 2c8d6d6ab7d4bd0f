"""Minimal ASGI apps for the RPC and operations endpoints, served by Hypercorn on trio."""

from __future__ import annotations

import json
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.utils import wrap_app

from node.config import Address
from node.errors import AllianceError

RPC_BODY_BYTES_MAX = 1024 * 1024
WS_FRAME_BYTES_MAX = 1024 * 1024  # Hypercorn closes a connection with a larger message with code 1009
RESET = "reset_connection"  # key in an ASGI scope's state: resets that TCP connection

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(Exception):
    pass


async def respond(send: Send, status: int, body: bytes, content_type: str = "application/json") -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, obj: Any) -> None:
    await respond(send, status, json.dumps(obj, separators=(",", ":")).encode())


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body; BodyTooLarge as soon as it exceeds `limit` bytes."""
    declared = _declared_length(scope)
    if declared is not None and declared > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise trio.Cancelled  # type: ignore[call-arg]  # the client is gone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def refuse_websocket(send: Send, status: int, obj: Any) -> None:
    """Answers a WebSocket handshake with a plain HTTP response instead of accepting it."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


def route(http: App, websocket: App | None) -> App:
    """HTTP requests to `http`, WebSocket handshakes to `websocket` (404 without one)."""

    async def routed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await http(scope, receive, send)
        elif websocket is not None:
            await websocket(scope, receive, send)
        else:
            await refuse_websocket(send, 404, {"error": "no WebSocket endpoint here"})

    return routed


def bind(address: Address, what: str) -> socket.socket:
    """Binds a listening socket now, so that a busy port is a clear start-up error."""
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(1024)
    except socket.gaierror as exc:
        raise AllianceError(f"{what} {address}: cannot resolve host ({exc.strerror})") from None
    except OSError as exc:
        sock.close()
        raise AllianceError(f"{what} {address}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def reset(stream: trio.SocketStream) -> None:
    """Closes a connection at once with a TCP reset, dropping unsent data and waking a write blocked on it."""
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass  # already closed
    stream.socket.close()


async def serve_http(
    app: App, sock: socket.socket, *, websocket: App | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serves `app` over HTTP (and WebSocket handshakes with `websocket`) until cancelled.

    Hypercorn shields its socket writes from cancellation, so a peer that stops reading
    would hold a write, its connection and the node's shutdown forever. Each connection
    can therefore be reset: its ASGI scope's state holds a RESET callable, and
    cancellation resets every connection still open.
    """
    config = Config()
    config.accesslog = None
    config.errorlog = logging.getLogger("alliance.http")
    config.keep_alive_timeout = 75
    config.websocket_max_message_size = WS_FRAME_BYTES_MAX
    asgi = wrap_app(route(app, websocket), config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)
    streams: set[trio.SocketStream] = set()

    async def connection(stream: trio.SocketStream) -> None:
        streams.add(stream)
        try:
            state = {RESET: partial(reset, stream)}
            await TCPServer(asgi, config, context, state, stream)  # type: ignore[arg-type]  # plain TCP is fine
        finally:
            streams.discard(stream)

    async def reset_all_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            for stream in list(streams):
                reset(stream)

    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reset_all_when_cancelled)
        await nursery.start(trio.serve_listeners, connection, [listener])
        task_status.started()
