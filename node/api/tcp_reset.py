"""Resetting TCP connections that Hypercorn accepted, found by their addresses.

Hypercorn's public API hands the application a connection's addresses, never its
socket, and shields its socket writes from cancellation: a client that stops
reading would hold a write, its connection and the node's shutdown forever. The
node finds the connection's file descriptor among its own (Linux /proc/self/fd)
by its local and peer address, which name one TCP connection at a time, and shuts
it down with SO_LINGER 0: the blocked write wakes with an error at once, and
Hypercorn's close then sends a reset, dropping unsent data.
"""

from __future__ import annotations

import os
import resource
import socket
import struct
from collections.abc import Iterator
from typing import Any

Address = tuple[Any, ...]  # (host, port) as in an ASGI scope's "client" and "server"


def _address(raw: Any) -> Address | None:
    return tuple(raw[:2]) if isinstance(raw, tuple) else None


def _descriptors() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # out of descriptors itself, or no /proc: try every number below the limit
        return list(range(resource.getrlimit(resource.RLIMIT_NOFILE)[0]))


def _connections(local: Address) -> Iterator[tuple[socket.socket, Address | None]]:
    """Each open TCP socket whose local address is `local`, with its peer address (None for a listener).

    Every socket yielded wraps a descriptor owned elsewhere: it is only borrowed, and detached after."""
    for fd in _descriptors():
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            continue  # not a socket, or closed since it was listed
        try:
            if _address(sock.getsockname()) != local:
                continue
            try:
                peer = _address(sock.getpeername())
            except OSError:
                peer = None
            yield sock, peer
        except OSError:
            continue
        finally:
            sock.detach()


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed meanwhile


def reset_connection(local: Address, peer: Address) -> None:
    """Resets the connection from `peer` to `local`, if it is still open."""
    for sock, address in _connections(local):
        if address == peer:
            _reset(sock)
            return


def reset_all(local: Address) -> None:
    """Resets every connection accepted on `local`; the listener itself is left alone."""
    for sock, address in _connections(local):
        if address is not None:
            _reset(sock)
