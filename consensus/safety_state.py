"""What a replica signed, persisted before anything it signed leaves the node.

After a restart the replica resumes from this state: it re-sends what it
signed and never signs a conflicting message for the same height and round.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from consensus.messages import (
    MessageError,
    PreparedCertificate,
    Signed,
    prepared_from_wire,
    prepared_to_wire,
    signed_from_wire,
    signed_to_wire,
    uint_field,
)


@dataclass(frozen=True)
class SafetyState:
    height: int
    round: int
    prepared: PreparedCertificate | None  # the highest prepared certificate at this height
    sent: tuple[Signed, ...]  # every message signed in `round`


def encode_safety(s: SafetyState) -> bytes:
    wire = [s.height, s.round, prepared_to_wire(s.prepared), [signed_to_wire(m) for m in s.sent]]
    return msgpack.packb(wire, use_bin_type=True)  # type: ignore[no-any-return]


def decode_safety(data: bytes) -> SafetyState:
    try:
        obj: Any = msgpack.unpackb(data, raw=False, use_list=True)
        height, round_, prepared, sent = obj
        return SafetyState(uint_field(height), uint_field(round_), prepared_from_wire(prepared), tuple(signed_from_wire(m) for m in sent))
    except MessageError:
        raise
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as exc:
        raise MessageError(f"malformed safety state ({exc.__class__.__name__})") from None
