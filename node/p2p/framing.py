"""Length-prefixed frames, without I/O: a 4-byte big-endian length, then the body.

The Deframer takes bytes as they arrive and gives whole frames out. A length
over the caller's cap is refused as soon as its prefix is in, before anything
is allocated for the body.
"""

from __future__ import annotations

import struct

PREFIX = struct.Struct(">I")


class FramingError(Exception):
    """A frame's length prefix exceeds the cap."""


def frame(body: bytes) -> bytes:
    return PREFIX.pack(len(body)) + body


class Deframer:
    def __init__(self) -> None:
        self._buffer = bytearray()

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self, max_bytes: int) -> bytes | None:
        """The next whole frame's body, or None until more bytes arrive; FramingError if over `max_bytes`."""
        if len(self._buffer) < PREFIX.size:
            return None
        length = self._length()
        if length > max_bytes:
            raise FramingError(f"frame of {length} bytes exceeds the {max_bytes}-byte cap")
        end = PREFIX.size + length
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[PREFIX.size : end])
        del self._buffer[:end]
        return body

    @property
    def missing(self) -> int:
        """How many more bytes the next frame needs, as far as its prefix tells (at least 1)."""
        if len(self._buffer) < PREFIX.size:
            return PREFIX.size - len(self._buffer)
        return max(1, PREFIX.size + self._length() - len(self._buffer))

    def _length(self) -> int:
        return int(PREFIX.unpack_from(self._buffer)[0])

    @property
    def buffered(self) -> bytes:
        """What arrived and is not yet part of a returned frame."""
        return bytes(self._buffer)
