"""The sessions open now, by peer, and the sending through them.

PeerNetwork registers each session it runs here; the catch-up, the gossip, the fetching and the
driver send through it. Built before all of them, it lets the network be built after them, with
the handlers of what it receives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import trio

from consensus.messages import Signed
from node.ops.metrics import Metrics
from node.p2p.transport import Session
from node.p2p.wire import Consensus, encode


@dataclass
class Link:
    session: Session
    queue: trio.MemorySendChannel[bytes]
    scope: trio.CancelScope


class PeerOutbox:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics  # frames dropped
        self._links: dict[bytes, Link] = {}

    @property
    def links(self) -> Mapping[bytes, Link]:
        return self._links

    def link(self, peer: bytes) -> Link | None:
        return self._links.get(peer)

    def attach(self, peer: bytes, link: Link) -> None:
        """The newest session with a peer is the one sent through."""
        self._links[peer] = link

    def detach(self, peer: bytes, link: Link) -> bool:
        """Forgets `link` if it is still the peer's; whether it was."""
        if self._links.get(peer) is not link:
            return False
        del self._links[peer]
        return True

    def connected(self, peer: bytes) -> bool:
        return peer in self._links

    def send(self, peer: bytes, payload: bytes) -> None:
        link = self._links.get(peer)
        if link is None:
            return
        try:
            link.queue.send_nowait(payload)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.metrics.p2p_frames_dropped.inc()

    def broadcast(self, payload: bytes) -> None:
        for peer in list(self._links):
            self.send(peer, payload)

    def send_consensus(self, peer: bytes, signed: Signed) -> None:
        self.send(peer, encode(Consensus(signed)))

    def broadcast_consensus(self, signed: Signed) -> None:
        self.broadcast(encode(Consensus(signed)))
