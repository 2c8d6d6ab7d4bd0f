"""The Deframer, fed bytes by hand: whole, split at every offset, truncated, oversized."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.p2p.framing import Deframer, FramingError, frame

BODIES = [b"", b"a", b"bc" * 100, b"\x00" * 700]
WIRE = b"".join(frame(body) for body in BODIES)


def _drain(deframer: Deframer, max_bytes: int = 1 << 20) -> list[bytes]:
    frames = []
    while (body := deframer.next_frame(max_bytes)) is not None:
        frames.append(body)
    return frames


def test_a_frame_is_its_big_endian_length_then_its_body() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert frame(b"") == b"\x00\x00\x00\x00"
    assert frame(b"x" * 300) == b"\x00\x00\x01\x2c" + b"x" * 300


def test_frames_arriving_together_come_out_one_by_one() -> None:
    deframer = Deframer()
    deframer.receive_data(WIRE)
    assert _drain(deframer) == BODIES
    assert deframer.buffered == b""


def test_frames_split_at_any_offset_come_out_whole() -> None:
    for cut in range(len(WIRE) + 1):
        deframer = Deframer()
        deframer.receive_data(WIRE[:cut])
        first = _drain(deframer)
        deframer.receive_data(WIRE[cut:])
        assert first + _drain(deframer) == BODIES, cut


def test_frames_fed_byte_by_byte_come_out_whole() -> None:
    deframer, frames = Deframer(), []
    for i in range(len(WIRE)):
        deframer.receive_data(WIRE[i : i + 1])
        frames += _drain(deframer)
    assert frames == BODIES


def test_a_truncated_frame_waits_for_the_rest_and_says_how_much_is_missing() -> None:
    deframer = Deframer()
    deframer.receive_data(b"\x00\x00")
    assert deframer.next_frame(100) is None and deframer.missing == 2
    deframer.receive_data(b"\x00\x05ab")
    assert deframer.next_frame(100) is None and deframer.missing == 3
    assert deframer.buffered == b"\x00\x00\x00\x05ab"
    deframer.receive_data(b"cde")
    assert deframer.next_frame(100) == b"abcde"


def test_an_oversized_length_is_refused_as_soon_as_its_prefix_is_in() -> None:
    deframer = Deframer()
    deframer.receive_data((1001).to_bytes(4, "big"))  # no body ever comes
    with pytest.raises(FramingError, match="exceeds the 1000-byte cap"):
        deframer.next_frame(1000)


def test_a_frame_of_exactly_the_cap_is_accepted() -> None:
    deframer = Deframer()
    deframer.receive_data(frame(b"z" * 64) + frame(b"y" * 65))
    assert deframer.next_frame(64) == b"z" * 64
    with pytest.raises(FramingError):
        deframer.next_frame(64)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.lists(st.integers(1, 50), min_size=1, max_size=40))
def test_any_chunking_gives_the_same_frames(bodies: list[bytes], sizes: list[int]) -> None:
    wire = b"".join(frame(body) for body in bodies)
    deframer, frames, at, i = Deframer(), [], 0, 0
    while at < len(wire):
        size = sizes[i % len(sizes)]
        deframer.receive_data(wire[at : at + size])
        at, i = at + size, i + 1
        frames += _drain(deframer)
    assert frames == bodies


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 64))
def test_garbage_gives_frames_none_or_framing_error(data: bytes, max_bytes: int) -> None:
    deframer = Deframer()
    deframer.receive_data(data)
    try:
        frames = _drain(deframer, max_bytes)
    except FramingError:
        return
    assert all(len(body) <= max_bytes for body in frames)
    assert b"".join(frame(body) for body in frames) + deframer.buffered == data
