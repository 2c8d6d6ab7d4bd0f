"""systemd's notify protocol, spoken directly: one datagram per message to the unix socket in $NOTIFY_SOCKET.

READY=1 once the node is started, STATUS= with its height, role, view and peers, WATCHDOG=1 while the
consensus loop is alive, STOPPING=1 on shutdown. Without $NOTIFY_SOCKET every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

import trio

log = logging.getLogger("alliance.notify")
STATUS_INTERVAL_S = 2.0


def socket_address(value: str) -> str | None:
    """The address to send to: a path, or "@name" for the abstract namespace (a leading NUL byte)."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def watchdog_s(environ: Mapping[str, str]) -> float | None:
    """The watchdog period systemd expects pings within, or None when there is none for this process."""
    usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


class Notifier:
    """Sends notify messages; a no-op when there is no socket. Send failures are logged, never raised."""

    def __init__(self, address: str | None, watchdog_s: float | None = None):
        self.address = address
        self.watchdog_s = watchdog_s if address is not None else None
        self._sock: socket.socket | None = None
        self._stopping = False
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        value = environ.get("NOTIFY_SOCKET", "")
        address = socket_address(value) if value else None
        if value and address is None:
            log.warning("event=notify_socket_unsupported value=%r", value)
        return cls(address, watchdog_s(environ))

    def send(self, *assignments: str) -> bool:
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            log.warning("event=notify_failed error=%r", str(exc))
            return False
        return True

    def stopping(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.send("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def serve(
        self,
        status: Callable[[], str],
        loop_alive: Callable[[float], bool],
        *,
        status_interval_s: float = STATUS_INTERVAL_S,
    ) -> None:
        """READY=1, then STATUS= every status_interval_s (when it changed) and WATCHDOG=1 every half watchdog
        period while loop_alive(watchdog period) holds; STOPPING=1 when cancelled."""
        if self._sock is None:
            return
        try:
            last_status = status()
            self.send("READY=1", f"STATUS={last_status}")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._report_status, status, last_status, status_interval_s)
                if self.watchdog_s is not None:
                    nursery.start_soon(self._feed_watchdog, loop_alive, self.watchdog_s)
        finally:
            self.stopping()

    async def _report_status(self, status: Callable[[], str], last: str, interval_s: float) -> None:
        while True:
            await trio.sleep(interval_s)
            current = status()
            if current != last:
                self.send(f"STATUS={current}")
                last = current

    async def _feed_watchdog(self, loop_alive: Callable[[float], bool], period_s: float) -> None:
        withheld = False
        while True:
            if loop_alive(period_s):
                self.send("WATCHDOG=1")
                withheld = False
            elif not withheld:
                log.warning("event=watchdog_withheld reason=consensus_loop_stalled period_s=%g", period_s)
                withheld = True
            await trio.sleep(period_s / 2)


def node_status(status: Mapping[str, Any]) -> str:
    """The STATUS= line of a node's status object (RPC `status`): height, role (leader, validator or
    catching_up), view and connected peers."""
    if status["syncing"]:
        role = "catching_up"
    elif status["leader"] == status["node"]["pubkey"]:
        role = "leader"
    else:
        role = "validator"
    peers = sum(p["connected"] for p in status["peers"])
    return f"height={status['height']} role={role} view={status['view']} peers={peers}"


async def serve_node(
    notifier: Notifier, status: Callable[[], Mapping[str, Any]], loop_alive: Callable[[float], bool]
) -> None:
    """The notify task of a started node: its status object, and its consensus loop's heartbeat."""
    await notifier.serve(lambda: node_status(status()), loop_alive)
