"""The snapshot frames (kinds 7 to 12): their bytes as docs/peer-protocol.md gives them, and malformed ones."""

from __future__ import annotations

import msgpack
import pytest

from node.p2p.wire import (
    SNAPSHOT_HEIGHTS_MAX, Chunk, FrameError, GetChunk, GetManifest, GetSnapshots, ManifestFrame, Snapshots, decode,
    encode,
)


def test_the_documented_bytes() -> None:
    assert encode(GetSnapshots()).hex() == "9107"
    assert encode(Snapshots((2000, 1000))).hex() == "920892cd07d0cd03e8"
    assert encode(GetChunk(1000, 3)).hex() == "930bcd03e803"
    assert encode(Chunk(1000, 3, None)).hex() == "940ccd03e803c0"


@pytest.mark.parametrize("message", [
    GetSnapshots(), Snapshots(()), Snapshots((5, 3)), GetManifest(7), ManifestFrame(7, b"m"), ManifestFrame(7, None),
    GetChunk(7, 255), Chunk(7, 0, b""), Chunk(7, 1, b"\x90"), Chunk(7, 2, None),
])
def test_round_trips(message: object) -> None:
    assert decode(encode(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize("frame", [
    [7, 1], [8, [1] * (SNAPSHOT_HEIGHTS_MAX + 1)], [8, ["1"]], [8, 5], [9, b"1"], [10, 1, "m"], [10, 1],
    [11, 1], [11, 1, None], [12, 1, 2, 3], [12, 1, 2],
])
def test_malformed_frames_are_refused(frame: list[object]) -> None:
    with pytest.raises(FrameError):
        decode(msgpack.packb(frame))
