"""The sign floor of a validator whose safety file was lost: learnt from its peers' heights.

Until f+1 peers (so one honest) told their height, such a node signs nothing (SIGN_NOTHING);
then nothing at or below the highest of them plus SIGN_MARGIN, the most it could have signed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

import trio

from consensus.replica import Replica
from node.disk.safety_file import SafetyFile

log = logging.getLogger("alliance.node")

SIGN_MARGIN = 2
SIGN_NOTHING = 2**62  # the replica's sign_from until the peers have told their heights
PEER_POLL_S = 0.2


class PeerHeights(Protocol):
    """What learn_sign_from reads of the catch-up (node.p2p.sync.Syncer): the heights peers told."""

    @property
    def peer_heights(self) -> Mapping[bytes, int]: ...


async def learn_sign_from(syncer: PeerHeights, replica: Replica, safety_file: SafetyFile, reports_needed: int) -> None:
    """After a resync that found no usable safety file: sign nothing until `reports_needed` peers
    (f+1, so one is honest) told their height, then nothing up to the highest of them plus SIGN_MARGIN.

    The node cannot have signed above the height the others had reached plus one;
    the learnt floor is saved, so a restart does not learn a lower one.
    """
    while len(syncer.peer_heights) < reports_needed:
        await trio.sleep(PEER_POLL_S)
    sign_from = max(syncer.peer_heights.values()) + SIGN_MARGIN
    safety_file.write(replace(safety_file.record, sign_from=sign_from))
    replica.learn_sign_floor(sign_from)
    log.info("event=sign_floor_learnt sign_from=%d peers=%d", sign_from, len(syncer.peer_heights))
