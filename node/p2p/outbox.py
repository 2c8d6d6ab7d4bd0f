"""The sessions open now, by peer, and the sending through them.

PeerNetwork registers each session it runs here; the catch-up, the gossip, the fetching and the
driver send through it. Built before all of them, it lets the network be built after them, with
the handlers of what it receives.

Height announcements and blocks go to every peer (validators and observers); consensus
messages go to the validators of the height they are about, and transactions to the
validators of the node's next height: observers take no part in deciding blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import trio

from consensus.messages import Signed
from node.chain.ledger import Ledger
from node.ops.metrics import Metrics
from node.p2p.transport import Session
from node.p2p.wire import Consensus, encode


@dataclass
class Link:
    session: Session
    queue: trio.MemorySendChannel[bytes]
    scope: trio.CancelScope
    dialed_by: bytes  # the key of the side that opened the connection


class PeerOutbox:
    def __init__(self, ledger: Ledger, metrics: Metrics) -> None:
        self.ledger = ledger  # who the validators of a height are
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
        """To every peer connected: validators and observers."""
        for peer in list(self._links):
            self.send(peer, payload)

    def is_validator(self, peer: bytes) -> bool:
        """Whether `peer` is a validator at this node's next height."""
        return peer in self._validators(self.ledger.height + 1)

    def broadcast_to_validators(self, payload: bytes) -> None:
        """To the validators of this node's next height that are connected."""
        self._send_all(self._validators(self.ledger.height + 1), payload)

    def send_consensus(self, peer: bytes, signed: Signed) -> None:
        self.send(peer, encode(Consensus(signed)))

    def broadcast_consensus(self, signed: Signed) -> None:
        """To the validators of the height the message is about."""
        self._send_all(self._validators(signed.message.height), encode(Consensus(signed)))

    def _send_all(self, peers: tuple[bytes, ...], payload: bytes) -> None:
        for peer in peers:
            self.send(peer, payload)

    def _validators(self, height: int) -> tuple[bytes, ...]:
        """The validators of `height`, or of the nearest height the ledger knows them for."""
        known = min(max(height, 1), self.ledger.height + 2)
        return self.ledger.members(known).validator_keys
