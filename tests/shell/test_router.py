"""Router: each message kind reaches its handler; consensus messages are checked on the way to the driver."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from consensus.events import MessageReceived
from consensus.messages import Prepare, Signed
from node.ops.metrics import Metrics
from node.p2p.router import Router
from node.p2p.wire import Blocks, Consensus, FoundTxs, GetBlocks, GetTxs, Message, Status, Txs

PEER = b"p" * 32


@dataclass
class Recorder:
    """Stands in for the syncer, gossip, fetcher and driver: records every call."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    syncing: bool = False
    best_height: int = 0

    def __getattr__(self, name: str) -> Any:
        if not name.startswith(("on_", "feed")):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))


def _router(syncing: bool = False, best_height: int = 0) -> tuple[Router, Recorder, Metrics]:
    parts, metrics = Recorder(syncing=syncing, best_height=best_height), Metrics()
    return Router(parts, parts, parts, parts, metrics, parts), parts, metrics  # type: ignore[arg-type]


def _signed(height: int, sender: bytes = PEER) -> Signed:
    return Signed(sender, Prepare(height, 0, b"h" * 32), b"g" * 64)


def _dropped(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("alliance_consensus_messages_dropped_total", {"reason": reason})
    return value or 0.0


@pytest.mark.parametrize(("message", "handler"), [
    (Status(3), "on_status"),
    (Txs((b"t",)), "on_txs"),
    (GetBlocks(1, 64), "on_get_blocks"),
    (Blocks(((b"b", b"c"),)), "on_blocks"),
    (GetTxs((b"h" * 32,)), "on_get_txs"),
    (FoundTxs((b"t",)), "on_found_txs"),
])
def test_each_kind_reaches_its_handler(message: Message, handler: str) -> None:
    router, parts, _ = _router()
    router.route(PEER, message)
    assert parts.calls == [(handler, (PEER, message))]


def test_a_consensus_message_from_its_sender_is_fed_to_the_driver() -> None:
    router, parts, metrics = _router()
    signed = _signed(5)
    router.route(PEER, Consensus(signed))
    assert parts.calls == [("feed", (MessageReceived(signed),))]


def test_a_consensus_message_signed_by_another_than_the_peer_is_dropped() -> None:
    router, parts, metrics = _router()
    router.route(PEER, Consensus(_signed(5, sender=b"o" * 32)))
    assert parts.calls == [] and _dropped(metrics, "sender_mismatch") == 1


def test_while_catching_up_messages_for_decided_heights_are_dropped() -> None:
    router, parts, metrics = _router(syncing=True, best_height=10)
    router.route(PEER, Consensus(_signed(10)))
    assert parts.calls == [] and _dropped(metrics, "decided") == 1
    router.route(PEER, Consensus(_signed(11)))
    assert [name for name, _ in parts.calls] == ["feed"]


def test_when_not_catching_up_old_heights_go_to_the_driver() -> None:
    router, parts, metrics = _router(syncing=False, best_height=10)
    router.route(PEER, Consensus(_signed(3)))
    assert [name for name, _ in parts.calls] == ["feed"] and _dropped(metrics, "decided") == 0
