"""Minimal ASGI apps for the RPC and operations endpoints, served by Hypercorn on trio."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from node.config import Address
from node.errors import AllianceError

RPC_BODY_BYTES_MAX = 1024 * 1024

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


def lifespan_wrapper(app: App) -> App:
    """Answers ASGI lifespan events so Hypercorn starts without complaint."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            await app(scope, receive, send)

    return wrapped


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


async def serve_http(
    app: App, sock: socket.socket, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    config = Config()
    config.accesslog = None
    config.errorlog = logging.getLogger("alliance.http")
    config.keep_alive_timeout = 75
    sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
    await worker_serve(wrap_app(lifespan_wrapper(app), config.wsgi_max_body_size, "asgi"), config,
                       sockets=sockets, task_status=task_status)
