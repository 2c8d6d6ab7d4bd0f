"""The HTTP server: binding listeners, the limits on what one client may hold, reading bodies, and serving
ASGI apps with Hypercorn on trio (its public API)."""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import hypercorn.trio
import hypercorn.trio.tcp_server
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H2ProtocolAssumedError

from node.api.tcp_reset import reset_all, reset_connection
from node.config import Address, TlsFiles
from node.errors import AllianceError
from node.ops.ratelog import RateLog

RPC_BODY_BYTES_MAX = 1024 * 1024
HEAD_BYTES_MAX = 16 * 1024  # an unfinished request head over this is answered 431 (by h11)
WS_FRAME_BYTES_MAX = 1024 * 1024  # Hypercorn closes a connection with a larger message with code 1009
BACKLOG = 1024
RESET = "reset_connection"  # key in an ASGI scope's state: resets that TCP connection
YIELD = "yield_connection"  # key in a scope's state: YIELD(idle, give_up) lets the connection make room

log = logging.getLogger("alliance.http")
repeated = RateLog(log)
_hypercorn_log = logging.getLogger("alliance.http.server")
_hypercorn_log.addFilter(lambda record: record.levelno >= logging.WARNING)  # not its "Running on ..."

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """What one listener lets clients hold (docs/operations.md, "Limits").

    A connection counts towards the caps while a request on it is being read or
    answered, and for as long as it is a WebSocket; between requests it only has
    keep_alive_timeout_s before it is closed, and so has a new connection to send
    its first request head."""

    connections_max: int = 512  # the 256 WebSockets the hub allows leave as many for HTTP requests
    per_address_max: int = 32  # one client host cannot take more than a small share
    body_timeout_s: float = 10.0  # a 1 MiB body needs 100 KiB/s; a stalled one is answered 408
    # Short: Hypercorn keeps the descriptor of an idle connection its client closed until this ends.
    keep_alive_timeout_s: float = 5.0
    read_timeout_s: int = 75  # silence that closes any connection: above send_tx's longest wait (60 s)
    ws_ping_interval_s: float = 25.0  # pings a WebSocket peer must answer within read_timeout_s
    tls_handshake_timeout_s: float = 5.0  # as for a request head: a connection not yet counted in the caps


class BodyTooLarge(Exception):
    pass


class BodyTimeout(Exception):
    """The request body did not arrive within the listener's body_timeout_s."""


class ClientGone(Exception):
    """The client disconnected before its request body was read."""


Headers = tuple[tuple[bytes, bytes], ...]


async def respond(send: Send, status: int, body: bytes, content_type: str = "application/json",
                  close: bool = False, extra: Headers = ()) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()), *extra]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_json(send: Send, status: int, obj: Any, close: bool = False, extra: Headers = ()) -> None:
    await respond(send, status, json.dumps(obj, separators=(",", ":")).encode(), close=close, extra=extra)


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
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def refuse_websocket(send: Send, status: int, obj: Any, extra: Headers = ()) -> None:
    """Answers a WebSocket handshake with a plain HTTP response instead of accepting it."""
    body = json.dumps(obj, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
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
        sock.listen(BACKLOG)
    except socket.gaierror as exc:
        raise AllianceError(f"{what} {address}: cannot resolve host ({exc.strerror})") from None
    except OSError as exc:
        sock.close()
        raise AllianceError(f"{what} {address}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


class _AcceptFailures(logging.Filter):
    """trio.serve_listeners logs, with a traceback, every failed accept (out of file descriptors, say),
    retrying each 0.1 s: counted here and logged once a minute instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        reason = record.args[0] if isinstance(record.args, tuple) and record.args else "unknown"
        repeated.log(f"event=http_accept_failed reason={reason}")
        return False


_accept_failures = _AcceptFailures()


class _Body:
    """The deadline of one HTTP request's body, which a newer request from the same address may cut short."""

    def __init__(self, receive: Receive, deadline: float) -> None:
        self._receive = receive
        self.deadline = deadline
        self.done = False
        self.cut = False
        self._waiting: trio.CancelScope | None = None

    async def receive(self) -> dict[str, Any]:
        """The next message; BodyTimeout once the body is not complete by the deadline or is cut."""
        if self.done:
            return await self._receive()
        with trio.CancelScope(deadline=self.deadline) as self._waiting:
            message = await self._receive()
            self.done = message["type"] != "http.request" or not message.get("more_body", False)
            return message
        raise BodyTimeout

    def cut_short(self) -> None:
        self.cut = True
        self.deadline = -math.inf
        if self._waiting is not None:
            self._waiting.cancel()


@dataclass
class _Slot:
    """One connection's place in its address's share: whether it may give it up, and how."""

    idle: Callable[[], bool] = lambda: False
    give_up: Callable[[], None] = lambda: None


class _Guard:
    """ASGI middleware that enforces a listener's Limits on every request and WebSocket.

    An address at its cap gets 503, unless one of its connections is idle: a request
    still sending its body (cut short with 408), or a WebSocket with nothing to do (which
    registers itself through its scope state's YIELD callable). The oldest such makes
    room, so a client with prompt requests is served next to stalled ones from its host."""

    def __init__(self, app: App, limits: Limits, local: tuple[Any, ...]) -> None:
        self.app = app
        self.limits = limits
        self.local = local
        self.slots: dict[str, list[_Slot]] = {}  # per address, oldest first
        self.total = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await _lifespan(receive, send)
        client = tuple(scope.get("client") or ("", 0))
        host, limits = client[0], self.limits
        slots = self.slots.setdefault(host, [])
        if len(slots) >= limits.per_address_max and not _make_room(slots):
            return await _refuse(scope, send, "per_address", f"over {limits.per_address_max} connections from {host}")
        if self.total >= limits.connections_max and not _make_room([s for ss in self.slots.values() for s in ss]):
            return await _refuse(scope, send, "total", f"over {limits.connections_max} connections")
        body = _Body(receive, trio.current_time() + limits.body_timeout_s)
        slot = _Slot(lambda: not body.done and not body.cut, body.cut_short) if scope["type"] == "http" else _Slot()
        slots.append(slot)
        self.total += 1
        state = {**scope.get("state", {}), RESET: partial(reset_connection, self.local, client),
                 YIELD: partial(_offer, slot)}
        try:
            await self.app({**scope, "state": state}, body.receive if scope["type"] == "http" else receive, send)
        except ClientGone:
            pass
        except BodyTimeout:
            await self._body_timeout(send, body, host)
        finally:
            self.total -= 1
            slots.remove(slot)
            if not slots:
                self.slots.pop(host, None)

    async def _body_timeout(self, send: Send, body: _Body, host: str) -> None:
        repeated.log("event=http_body_cut" if body.cut else "event=http_body_timeout")
        why = (f"request body cut short: over {self.limits.per_address_max} connections from {host}" if body.cut
               else f"request body not received within {self.limits.body_timeout_s:g} s")
        await respond_json(send, 408, {"error": why}, close=True)


def _offer(slot: _Slot, idle: Callable[[], bool], give_up: Callable[[], None]) -> None:
    slot.idle, slot.give_up = idle, give_up


def _make_room(slots: list[_Slot]) -> bool:
    """Has the oldest idle connection give up its place; False when none is idle."""
    for slot in slots:
        if slot.idle():
            slot.give_up()
            slot.idle = lambda: False  # once
            return True
    return False


async def _refuse(scope: Scope, send: Send, cap: str, why: str) -> None:
    repeated.log(f"event=http_connection_refused cap={cap}")
    if scope["type"] == "http":
        await respond_json(send, 503, {"error": why}, close=True)
    else:
        await refuse_websocket(send, 503, {"error": why})


async def _lifespan(receive: Receive, send: Send) -> None:
    while (await receive())["type"] == "lifespan.startup":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


def _config(sock: socket.socket, limits: Limits, tls: TlsFiles | None) -> Config:
    config = Config()
    if tls is not None:  # Hypercorn serves an fd:// bind over TLS once a certificate and key are set
        config.certfile, config.keyfile = str(tls.cert), str(tls.key)
        config.alpn_protocols = ["http/1.1"]  # the limits above are those of HTTP/1.1 (h11), not of HTTP/2
        config.ssl_handshake_timeout = limits.tls_handshake_timeout_s
        if tls.client_ca is not None:
            config.ca_certs = str(tls.client_ca)
            config.verify_mode = ssl.CERT_REQUIRED
    config.bind = [f"fd://{os.dup(sock.fileno())}"]  # the socket bound at start-up; Hypercorn owns the copy
    config.backlog = BACKLOG
    config.accesslog = None
    config.errorlog = _hypercorn_log
    config.h11_max_incomplete_size = HEAD_BYTES_MAX
    config.keep_alive_timeout = limits.keep_alive_timeout_s
    config.read_timeout = limits.read_timeout_s
    config.websocket_ping_interval = limits.ws_ping_interval_s
    config.websocket_max_message_size = WS_FRAME_BYTES_MAX
    return config


async def serve_http(
    app: App, sock: socket.socket, *, websocket: App | None = None, limits: Limits = Limits(),
    tls: TlsFiles | None = None, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serves `app` over HTTP, or HTTPS with `tls` (and WebSocket handshakes with `websocket`), on `sock`
    until cancelled.

    Hypercorn shields its socket writes from cancellation, so a peer that stops reading
    would hold a write, its connection and the node's shutdown forever. Each request's
    ASGI scope state therefore holds a RESET callable for its connection, and
    cancellation resets every connection still open.
    """
    logging.getLogger("trio.serve_listeners").addFilter(_accept_failures)
    local = tuple(sock.getsockname()[:2])
    limits = replace(limits, connections_max=min(limits.connections_max, descriptor_share()))
    guarded = _Guard(route(app, websocket), limits, local)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_reset_all_when_cancelled, local)
        config = _config(sock, limits, tls)
        serve = partial(hypercorn.trio.serve, guarded, config, mode="asgi")  # type: ignore[arg-type]
        await nursery.start(serve)
        task_status.started()


class _NoPriorKnowledgeHttp2(ProtocolWrapper):
    """Closes a connection that opens with the HTTP/2 preface instead of switching it to HTTP/2.

    The node speaks HTTP/1.1 (over TLS too: ALPN offers nothing else), whose limits above are the
    ones it enforces; and Hypercorn stops a connection's idle timer at the preface, so one that then
    sends nothing was held until read_timeout_s (75 s) rather than keep_alive_timeout_s. An h2c
    upgrade still carries a request, after which the idle timer runs as usual.
    """

    async def handle(self, event: Event) -> None:
        try:
            await self.protocol.handle(event)
        except H2ProtocolAssumedError:
            await self.send(Closed())


hypercorn.trio.tcp_server.ProtocolWrapper = _NoPriorKnowledgeHttp2  # type: ignore[misc]


def descriptor_share() -> int:
    """The connections one listener may hold: a quarter of the process's file descriptors, so that
    its cap, not the descriptor limit, is what a flood of stalled requests meets first."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, soft // 4) if soft != resource.RLIM_INFINITY else 2**31


async def _reset_all_when_cancelled(local: tuple[Any, ...]) -> None:
    try:
        await trio.sleep_forever()
    finally:
        reset_all(local)
