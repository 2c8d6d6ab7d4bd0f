"""The frames validators exchange once a session is up, decoded and checked in one place.

Each frame is a MessagePack array whose first element is its kind
(docs/peer-protocol.md). `decode` turns a frame into one of the messages below
or raises FrameError; handlers then see only well-formed messages. In a batch
of transactions or hashes an entry that is not one is skipped and the others
stand, since each is judged on its own; any other field of the wrong type or
count makes the whole frame malformed.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, ClassVar, Union

import msgpack

from consensus.messages import HASH_BYTES, MessageError, Signed, decode_signed, encode_signed

STATUS, CONSENSUS, TXS, GET_BLOCKS, BLOCKS, GET_TXS, FOUND_TXS = 0, 1, 2, 3, 4, 5, 6
GET_SNAPSHOTS, SNAPSHOTS, GET_MANIFEST, MANIFEST, GET_CHUNK, CHUNK = 7, 8, 9, 10, 11, 12
# Hashes in one GET_TXS: a block holds fewer transactions than this.
GET_TXS_HASHES_MAX = 100_000
# Heights in one SNAPSHOTS offer: a node keeps a few snapshots (snapshot.keep).
SNAPSHOT_HEIGHTS_MAX = 16


class FrameError(ValueError):
    """A frame that does not decode to a well-formed message; `kind` when the kind was readable."""

    def __init__(self, reason: str, kind: int | None = None) -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class Status:
    """The sender's last committed height."""

    KIND: ClassVar[int] = STATUS
    height: int


@dataclass(frozen=True)
class Consensus:
    """A signed consensus message; its sender must be the session's peer."""

    KIND: ClassVar[int] = CONSENSUS
    signed: Signed


@dataclass(frozen=True)
class Txs:
    """Transactions the sender's clients submitted."""

    KIND: ClassVar[int] = TXS
    txs: tuple[bytes, ...]


@dataclass(frozen=True)
class GetBlocks:
    """A request for up to `count` committed blocks from height `start`."""

    KIND: ClassVar[int] = GET_BLOCKS
    start: int
    count: int


@dataclass(frozen=True)
class Blocks:
    """Committed blocks, each with its commit certificate: (block, certificate)."""

    KIND: ClassVar[int] = BLOCKS
    blocks: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class GetTxs:
    """A request for the transactions with these hashes."""

    KIND: ClassVar[int] = GET_TXS
    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class FoundTxs:
    """Those of the asked transactions the sender holds."""

    KIND: ClassVar[int] = FOUND_TXS
    txs: tuple[bytes, ...]


@dataclass(frozen=True)
class GetSnapshots:
    """A request for the heights of the snapshots the receiver serves."""

    KIND: ClassVar[int] = GET_SNAPSHOTS


@dataclass(frozen=True)
class Snapshots:
    """The heights of the snapshots the sender serves, newest first."""

    KIND: ClassVar[int] = SNAPSHOTS
    heights: tuple[int, ...]


@dataclass(frozen=True)
class GetManifest:
    KIND: ClassVar[int] = GET_MANIFEST
    height: int


@dataclass(frozen=True)
class ManifestFrame:
    """The manifest of the snapshot at `height` (node/chain/snapshot.py); None: the sender has none."""

    KIND: ClassVar[int] = MANIFEST
    height: int
    manifest: bytes | None


@dataclass(frozen=True)
class GetChunk:
    KIND: ClassVar[int] = GET_CHUNK
    height: int
    index: int


@dataclass(frozen=True)
class Chunk:
    """Chunk `index` of the snapshot at `height`; None: the sender has no such chunk."""

    KIND: ClassVar[int] = CHUNK
    height: int
    index: int
    data: bytes | None


Message = Union[Status, Consensus, Txs, GetBlocks, Blocks, GetTxs, FoundTxs, GetSnapshots, Snapshots, GetManifest,
                ManifestFrame, GetChunk, Chunk]


def encode(message: Message) -> bytes:
    return msgpack.packb([message.KIND, *_fields(message)], use_bin_type=True)  # type: ignore[no-any-return]


def _fields(message: Message) -> list[Any]:
    if isinstance(message, Status):
        return [message.height]
    if isinstance(message, Consensus):
        return [encode_signed(message.signed)]
    if isinstance(message, GetBlocks):
        return [message.start, message.count]
    if isinstance(message, Blocks):
        return [list(message.blocks)]
    if isinstance(message, GetTxs):
        return [list(message.hashes)]
    if isinstance(message, (Txs, FoundTxs)):
        return [list(message.txs)]
    return _snapshot_fields(message)


def _snapshot_fields(message: Message) -> list[Any]:
    if isinstance(message, Snapshots):
        return [list(message.heights)]
    if isinstance(message, GetManifest):
        return [message.height]
    if isinstance(message, ManifestFrame):
        return [message.height, message.manifest]
    if isinstance(message, GetChunk):
        return [message.height, message.index]
    if isinstance(message, Chunk):
        return [message.height, message.index, message.data]
    return []  # GetSnapshots


def decode(frame: bytes) -> Message:
    """The message in `frame`; FrameError when it is not a well-formed frame of a known kind."""
    try:
        obj = msgpack.unpackb(frame, raw=False, use_list=True)
    except Exception:  # msgpack raises several types for garbage, extra data or too deep nesting
        raise FrameError("undecodable frame") from None
    if not isinstance(obj, list) or not obj or type(obj[0]) is not int:
        raise FrameError("not a frame: an array whose first element is its kind")
    kind, fields = obj[0], obj[1:]
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise FrameError(f"unknown frame kind {kind}")
    arity, parse = decoder
    if len(fields) != arity:
        raise FrameError(f"frame kind {kind} has {len(fields)} fields, not {arity}", kind)
    return parse(*fields)


def _require(ok: bool, what: str, kind: int) -> None:
    if not ok:
        raise FrameError(what, kind)


def _int(value: Any, what: str, kind: int) -> int:
    _require(type(value) is int, f"{what} is not an integer", kind)
    return int(value)


def _entries(value: Any, what: str, kind: int) -> tuple[bytes, ...]:
    """A batch of independent entries: one that is not bytes is skipped, the others stand."""
    _require(isinstance(value, list), f"{what} is not a list", kind)
    return tuple(x for x in value if isinstance(x, bytes))


def _status(height: Any) -> Status:
    return Status(_int(height, "height", STATUS))


def _consensus(data: Any) -> Consensus:
    _require(isinstance(data, bytes), "consensus message is not bytes", CONSENSUS)
    try:
        return Consensus(decode_signed(data))
    except MessageError as exc:
        raise FrameError(str(exc), CONSENSUS) from None


def _txs(txs: Any) -> Txs:
    return Txs(_entries(txs, "transactions", TXS))


def _get_blocks(start: Any, count: Any) -> GetBlocks:
    return GetBlocks(_int(start, "start height", GET_BLOCKS), _int(count, "count", GET_BLOCKS))


def _blocks(items: Any) -> Blocks:
    _require(isinstance(items, list), "blocks is not a list", BLOCKS)
    for item in items:
        _require(isinstance(item, list) and len(item) == 2 and all(isinstance(x, bytes) for x in item),
                 "a block is not [block, certificate]", BLOCKS)
    return Blocks(tuple((block, certificate) for block, certificate in items))


def _get_txs(hashes: Any) -> GetTxs:
    """The first GET_TXS_HASHES_MAX entries are read, the rest ignored; one that is no hash is skipped."""
    _require(isinstance(hashes, list), "hashes is not a list", GET_TXS)
    return GetTxs(tuple(h for h in hashes[:GET_TXS_HASHES_MAX] if isinstance(h, bytes) and len(h) == HASH_BYTES))


def _found_txs(txs: Any) -> FoundTxs:
    return FoundTxs(_entries(txs, "transactions", FOUND_TXS))


def _optional_bytes(value: Any, what: str, kind: int) -> bytes | None:
    _require(value is None or isinstance(value, bytes), f"{what} is neither bytes nor nil", kind)
    return value  # type: ignore[no-any-return]


def _snapshots(heights: Any) -> Snapshots:
    _require(isinstance(heights, list) and len(heights) <= SNAPSHOT_HEIGHTS_MAX, "heights is not a short list",
             SNAPSHOTS)
    return Snapshots(tuple(_int(h, "a height", SNAPSHOTS) for h in heights))


def _manifest(height: Any, manifest: Any) -> ManifestFrame:
    return ManifestFrame(_int(height, "height", MANIFEST), _optional_bytes(manifest, "manifest", MANIFEST))


def _chunk(height: Any, index: Any, data: Any) -> Chunk:
    return Chunk(_int(height, "height", CHUNK), _int(index, "index", CHUNK), _optional_bytes(data, "chunk", CHUNK))


_DECODERS: dict[int, tuple[int, Callable[..., Message]]] = {
    STATUS: (1, _status), CONSENSUS: (1, _consensus), TXS: (1, _txs), GET_BLOCKS: (2, _get_blocks),
    BLOCKS: (1, _blocks), GET_TXS: (1, _get_txs), FOUND_TXS: (1, _found_txs),
    GET_SNAPSHOTS: (0, GetSnapshots), SNAPSHOTS: (1, _snapshots),
    GET_MANIFEST: (1, lambda height: GetManifest(_int(height, "height", GET_MANIFEST))), MANIFEST: (2, _manifest),
    GET_CHUNK: (2, lambda height, index: GetChunk(_int(height, "height", GET_CHUNK), _int(index, "index", GET_CHUNK))),
    CHUNK: (3, _chunk),
}
