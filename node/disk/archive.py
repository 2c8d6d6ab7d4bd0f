"""The block archive: committed blocks written to hash-linked segment files, to keep what pruning removes.

An archive directory holds `manifest.json` and segment files `segment-<first>-<last>.seg` (heights as
12 digits). A segment is a sequence of records, each `length (u32 BE) | payload`:

    record 0   = canonical [ "alliance-segment", 1, chain_id, genesis_hash, first, last, prev_hash ]
    records 1.. = canonical [ block, certificate, [[code, log], ...] ]   (one per height, first..last)

`block` and `certificate` are the bytes the node stores (node/chain/block.py), the list their
transactions' receipts in block order (what a proof needs and the block does not hold); `prev_hash` is
the hash of block first - 1: the genesis hash for the first segment of a chain, the last block of the
previous segment otherwise. The manifest names the chain and lists the segments in height order, each with
its first and last height, its size and the SHA-256 of its file. Checking an archive is archive_check.py's.

Beside each segment, `segment-<first>-<last>.idx` lists its transactions for lookups (`find_tx`): records
of tx_hash (32 bytes) || height (8-byte BE), sorted. It is derived from the segment and not checked: a
lookup always reads the block from the segment and checks the transaction is in it.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from node.chain.block import BlockError, decode_block
from node.chain.canonical import CodecError, pack, unpack
from node.chain.execution import Receipt
from node.chain.genesis import Genesis
from node.chain.tx import tx_hash_of
from node.errors import AllianceError
from storage.chain import ChainStore

MANIFEST = "manifest.json"
SEGMENT_MAGIC = "alliance-segment"
FORMAT_VERSION = 1
SEGMENT_BLOCKS = 1000
# A record holds one block: far more than a block of txs_max transactions of the largest size is damage.
RECORD_BYTES_MAX = 256 * 1024 * 1024
_LENGTH = struct.Struct(">I")


class ArchiveError(AllianceError):
    """An archive that cannot be written or read."""


@dataclass(frozen=True)
class SegmentEntry:
    """A segment as the manifest lists it."""

    file: str
    first: int
    last: int
    size: int
    sha256: str

    def wire(self) -> dict[str, Any]:
        return {"file": self.file, "first": self.first, "last": self.last, "bytes": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Manifest:
    chain_id: str
    genesis_hash: bytes
    segments: tuple[SegmentEntry, ...]

    @property
    def last(self) -> int:
        """The highest archived height; 0 when none."""
        return self.segments[-1].last if self.segments else 0


@dataclass(frozen=True)
class Record:
    """One archived height, as read back (not yet checked)."""

    block: bytes
    certificate: bytes
    receipts: list[Receipt]


def segment_name(first: int, last: int) -> str:
    return f"segment-{first:012d}-{last:012d}.seg"


def load_manifest(directory: Path) -> Manifest | None:
    """The archive's manifest; None when the directory holds none; ArchiveError when it is malformed."""
    path = directory / MANIFEST
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ArchiveError(f"cannot read the manifest {path}: {exc}") from None
    try:
        segments = tuple(SegmentEntry(s["file"], s["first"], s["last"], s["bytes"], s["sha256"])
                         for s in obj["segments"])
        manifest = Manifest(obj["chain_id"], bytes.fromhex(obj["genesis_hash"]), segments)
        ok = (obj["format"] == "alliance-archive" and obj["version"] == FORMAT_VERSION
              and isinstance(manifest.chain_id, str)
              and all(type(s.first) is int and type(s.last) is int and isinstance(s.file, str)
                      and isinstance(s.sha256, str) and type(s.size) is int for s in segments))
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise ArchiveError(f"the manifest {path} is not an alliance archive manifest of version {FORMAT_VERSION}")
    return manifest


def _save_manifest(directory: Path, manifest: Manifest) -> None:
    obj = {"format": "alliance-archive", "version": FORMAT_VERSION, "chain_id": manifest.chain_id,
           "genesis_hash": manifest.genesis_hash.hex(), "segments": [s.wire() for s in manifest.segments]}
    _write_durably(directory / MANIFEST, (json.dumps(obj, indent=1) + "\n").encode())


def _write_durably(path: Path, data: bytes) -> None:
    """Writes `path` whole or not at all: a temporary file, synced, renamed over it, the directory synced."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export(store: ChainStore, genesis: Genesis, directory: Path, first: int | None, last: int | None,
           segment_blocks: int = SEGMENT_BLOCKS) -> tuple[int, int]:
    """Appends blocks first..last of `store` to the archive in `directory` (created if missing), in segments
    of `segment_blocks`; by default from the archive's next height (or the store's base) to the store's tip.
    Returns the heights written (first, last); (first, first - 1) when there was nothing to write."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(directory) or Manifest(genesis.chain_id, genesis.hash(), ())
    if manifest.chain_id != genesis.chain_id or manifest.genesis_hash != genesis.hash():
        raise ArchiveError(f"{directory} archives chain {manifest.chain_id!r} of another genesis")
    start = first if first is not None else manifest.last + 1 if manifest.segments else store.base()
    end = store.height() if last is None else last
    if manifest.segments and start != manifest.last + 1:
        raise ArchiveError(f"{directory} holds blocks up to {manifest.last}: the next export starts at "
                           f"{manifest.last + 1}, not {start}")
    if start < store.base() or end > store.height() or start < 1:
        raise ArchiveError(f"the store holds blocks {store.base()}..{store.height()}, not {start}..{end}")
    prev_hash = genesis.hash() if start == 1 else _archived_hash(directory, manifest) if manifest.segments \
        else _prev_hash(store, start)
    segments = list(manifest.segments)
    for low in range(start, end + 1, segment_blocks):
        high = min(low + segment_blocks - 1, end)
        entry, prev_hash = _write_segment(store, genesis, directory, low, high, prev_hash)
        segments.append(entry)
        _save_manifest(directory, Manifest(manifest.chain_id, manifest.genesis_hash, tuple(segments)))
    return start, end


def _prev_hash(store: ChainStore, height: int) -> bytes:
    raw = store.load_block(height - 1)
    if raw is None:
        raise ArchiveError(f"block {height - 1} is pruned here, so block {height} cannot be linked to it: "
                           f"export from block {height + 1} on")
    return decode_block(raw).header.hash()


def _archived_hash(directory: Path, manifest: Manifest) -> bytes:
    """The hash of the archive's last block (the store may have pruned it since)."""
    last = None
    try:
        for last in read_segment(directory / manifest.segments[-1].file)[1]:
            pass
        if last is None:
            raise SegmentFault("it holds no block")
        return decode_block(last.block).header.hash()
    except (SegmentFault, BlockError, OSError) as exc:
        raise ArchiveError(f"cannot read the last block of {directory}: {exc}") from None


def _write_segment(store: ChainStore, genesis: Genesis, directory: Path, first: int, last: int,
                   prev_hash: bytes) -> tuple[SegmentEntry, bytes]:
    """Writes one segment; its manifest entry and the hash of its last block."""
    index: list[bytes] = []
    parts = [_frame(pack([SEGMENT_MAGIC, FORMAT_VERSION, genesis.chain_id, genesis.hash(), first, last, prev_hash]))]
    for height in range(first, last + 1):
        block, certificate = store.load_block(height), store.load_certificate(height)
        if block is None or certificate is None:
            raise ArchiveError(f"block {height} or its certificate is not in the store")
        decoded = decode_block(block)
        receipts = [_receipt(store, tx) for tx in decoded.txs]
        parts.append(_frame(pack([block, certificate, receipts])))
        index += [tx_hash_of(tx) + height.to_bytes(8, "big") for tx in decoded.txs]
        prev_hash = decoded.header.hash()
    data = b"".join(parts)
    name = segment_name(first, last)
    _write_durably(directory / name, data)
    _write_durably((directory / name).with_suffix(".idx"), b"".join(sorted(index)))
    return SegmentEntry(name, first, last, len(data), hashlib.sha256(data).hexdigest()), prev_hash


def _receipt(store: ChainStore, raw_tx: bytes) -> list[Any]:
    tx_hash = tx_hash_of(raw_tx)
    raw = store.load_tx(tx_hash)
    entry = None if raw is None else unpack(raw)
    if not (type(entry) is list and len(entry) == 4):
        raise ArchiveError(f"transaction {tx_hash.hex()} has no entry in the store")
    return [entry[2], entry[3]]


def _frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


class SegmentFault(Exception):
    """A segment's bytes are not records of the format: cut short, a length out of bounds, not decoding."""


def read_segment(path: Path) -> tuple[list[Any], Iterator[Record]]:
    """A segment's header record (decoded, unchecked) and an iterator of its records; both raise SegmentFault."""
    stream = open(path, "rb")
    try:
        header = unpack(_read_record(stream) or b"")
    except (SegmentFault, CodecError) as exc:
        stream.close()
        raise SegmentFault(f"its header record is damaged: {exc}") from None
    if not isinstance(header, list) or len(header) != 7 or header[0] != SEGMENT_MAGIC:
        stream.close()
        raise SegmentFault(f"it does not start with an {SEGMENT_MAGIC} header record")
    return header, _records(stream)


def _records(stream: BinaryIO) -> Iterator[Record]:
    with stream:
        while (payload := _read_record(stream, end_ok=True)) is not None:
            try:
                obj = unpack(payload)
            except CodecError as exc:
                raise SegmentFault(f"a record does not decode: {exc}") from None
            yield _record(obj)


def _record(obj: Any) -> Record:
    ok = (isinstance(obj, list) and len(obj) == 3 and isinstance(obj[0], bytes) and isinstance(obj[1], bytes)
          and isinstance(obj[2], list)
          and all(isinstance(r, list) and len(r) == 2 and type(r[0]) is int and isinstance(r[1], str) for r in obj[2]))
    if not ok:
        raise SegmentFault("a record is not [block, certificate, [[code, log], ...]]")
    return Record(obj[0], obj[1], [Receipt(code, log) for code, log in obj[2]])


def _read_record(stream: BinaryIO, end_ok: bool = False) -> bytes | None:
    """The next record's payload; None at the end of the file when `end_ok`."""
    prefix = stream.read(_LENGTH.size)
    if not prefix and end_ok:
        return None
    if len(prefix) != _LENGTH.size:
        raise SegmentFault("the file is cut short")
    (length,) = _LENGTH.unpack(prefix)
    if length > RECORD_BYTES_MAX:
        raise SegmentFault(f"a record claims {length} bytes, more than {RECORD_BYTES_MAX}")
    payload = stream.read(length)
    if len(payload) != length:
        raise SegmentFault("the file is cut short")
    return payload


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_INDEX_RECORD = 40


def find_tx(directory: Path, manifest: Manifest, tx_hash: bytes) -> tuple[Record, int] | None:
    """The archived block holding `tx_hash` and the transaction's index in it; None when not archived.
    A binary search in each segment's index, then one segment read up to the block: bounded by the archive's
    segments and SEGMENT_BLOCKS. Raises SegmentFault or OSError when the archive cannot be read."""
    for entry in reversed(manifest.segments):
        height = _indexed_height((directory / entry.file).with_suffix(".idx"), tx_hash)
        if height is None or not entry.first <= height <= entry.last:
            continue
        _, records = read_segment(directory / entry.file)
        for offset, record in enumerate(records):
            if entry.first + offset == height:
                for index, raw in enumerate(decode_block(record.block).txs):
                    if tx_hash_of(raw) == tx_hash:
                        return record, index
                return None
    return None


def _indexed_height(path: Path, tx_hash: bytes) -> int | None:
    try:
        stream = open(path, "rb")
    except FileNotFoundError:
        return None
    with stream:
        low, high = 0, os.fstat(stream.fileno()).st_size // _INDEX_RECORD
        while low < high:
            middle = (low + high) // 2
            stream.seek(middle * _INDEX_RECORD)
            record = stream.read(_INDEX_RECORD)
            if record[:32] < tx_hash:
                low = middle + 1
            elif record[:32] > tx_hash:
                high = middle
            else:
                return int.from_bytes(record[32:], "big")
    return None
