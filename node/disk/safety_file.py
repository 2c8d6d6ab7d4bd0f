"""The consensus safety state in its own small file, next to (not inside) the data directory.

A damaged or rolled-back chain store must not make the validator forget what
it signed, so the safety state lives apart from LevelDB and carries what the
node needs to detect a rollback:

    committed  the chain store must hold at least this many blocks
    sign_from  the replica signs no message for a height below this
               (UNKNOWN: learn it from the peers at run time; set by a resync)
    safety     the last SafetyState persisted before a signature, or none

The file is MAGIC then records, each a 4-byte length, the SHA-256 of the
payload and the payload, canonical [committed, sign_from, safety bytes or nil];
the last record holds. Saving appends one record and syncs (one fdatasync per
signature, as LevelDB's own log costs); past FILE_BYTES_MAX the file is
replaced by one holding only the newest record (temporary file, fsync, rename,
fsync of the directory). A record cut short at the end is a write a crash
interrupted, before anything it covers was sent; any other damage fails the
checksum and the file is refused.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from consensus.messages import MessageError
from consensus.safety_state import SafetyState, decode_safety
from node.chain.canonical import CodecError, pack_flat, unpack
from node.disk.filesync import sync_directory, write_all
from node.errors import AllianceError

MAGIC = b"alliance-safety-v1\n"
FILE_BYTES_MAX = 1024 * 1024  # then the file is rewritten with the newest record only
_LENGTH_BYTES = 4
UNKNOWN = -1  # sign_from after a resync that found no usable safety file
_DIGEST_BYTES = 32


class SafetyFileError(AllianceError):
    """The safety file is missing where it must exist, or damaged."""


@dataclass(frozen=True)
class SafetyRecord:
    committed: int = 0
    sign_from: int = 0
    safety_bytes: bytes | None = None  # an encoded SafetyState, kept as consensus persisted it

    @property
    def safety(self) -> SafetyState | None:
        return None if self.safety_bytes is None else decode_safety(self.safety_bytes)

    @property
    def committed_floor(self) -> int:
        """Blocks the store must hold: a signature at height H came after committing H-1."""
        safety = self.safety
        return max(self.committed, 0 if safety is None else safety.height - 1)

    @property
    def signed_up_to(self) -> int:
        """No message this node signed can be for a height above this."""
        safety = self.safety
        return max(self.committed + 1, 0 if safety is None else safety.height)


def safety_path(data_dir: Path) -> Path:
    """`<data_dir>.safety`: beside the data directory, so moving that aside keeps it."""
    return data_dir.with_name(data_dir.name + ".safety")


def encode_record(r: SafetyRecord) -> bytes:
    payload = pack_flat([r.committed, r.sign_from, r.safety_bytes])
    return len(payload).to_bytes(_LENGTH_BYTES, "big") + hashlib.sha256(payload).digest() + payload


def decode_file(data: bytes, path: Path) -> SafetyRecord:
    """The last record of a safety file's bytes."""
    if not data.startswith(MAGIC):
        raise SafetyFileError(f"{path} is damaged: it does not start as a safety file")
    pos, record = len(MAGIC), None
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + _LENGTH_BYTES], "big")
        start = pos + _LENGTH_BYTES + _DIGEST_BYTES
        if start + length > len(data):
            break  # cut short by a crash while it was written
        payload = data[start:start + length]
        if hashlib.sha256(payload).digest() != data[pos + _LENGTH_BYTES:start]:
            raise SafetyFileError(f"{path} is damaged: a record's checksum does not match")
        record, pos = _decode_payload(payload, path), start + length
    if record is None:
        raise SafetyFileError(f"{path} is damaged: it holds no complete record")
    return record


def _decode_payload(payload: bytes, path: Path) -> SafetyRecord:
    try:
        committed, sign_from, raw = unpack(payload)
        record = SafetyRecord(committed, sign_from, raw)
        record.safety  # noqa: B018 - decodes it, so damage shows now and not at the first signature
    except (CodecError, MessageError, ValueError, TypeError) as exc:
        raise SafetyFileError(f"{path} does not decode: {exc}") from None
    if type(committed) is not int or type(sign_from) is not int or committed < 0 or sign_from < UNKNOWN:
        raise SafetyFileError(f"{path} holds invalid heights")
    return record


class SafetyFile:
    """Reads and appends to one safety file; `save_safety` is on the signing path."""

    def __init__(self, path: Path, record: SafetyRecord, size: int) -> None:
        self.path = path
        self.record = record
        self._size = size
        # Held open, so that signing needs no new descriptor: a flood of connections that
        # takes every free one must not stop the validator at its next signature.
        self._fd: int | None = None

    @classmethod
    def load(cls, path: Path) -> SafetyFile | None:
        """The file's newest record; None when there is no file."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SafetyFileError(f"cannot read {path}: {exc.strerror}") from None
        f = cls(path, decode_file(data, path), len(data))
        f._reopen()
        return f

    @classmethod
    def create(cls, path: Path, record: SafetyRecord) -> SafetyFile:
        f = cls(path, record, 0)
        f.write(record)
        return f

    def save_safety(self, data: bytes) -> None:
        """Stores an encoded SafetyState; durable on return: consensus sends what it signed only after this."""
        self.write(replace(self.record, safety_bytes=data))

    def save_committed(self, height: int) -> None:
        if height > self.record.committed:
            self.write(replace(self.record, committed=height))

    def write(self, record: SafetyRecord) -> None:
        entry = encode_record(record)
        if self._size == 0 or (self._size + len(entry) > FILE_BYTES_MAX and self._rewrite_possible()):
            write_atomic(self.path, MAGIC + entry)
            self._size = len(MAGIC) + len(entry)
            self._reopen()
        else:
            self._append(entry)
            self._size += len(entry)
        self.record = record

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _rewrite_possible(self) -> bool:
        """Whether the file can be rewritten whole now (it needs two descriptors); else it grows a little more."""
        if self._fd is None:
            return True
        try:
            os.close(os.dup(self._fd))
            os.close(os.dup(self._fd))
        except OSError:
            return False
        return True

    def _reopen(self) -> None:
        self.close()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError:
            self._fd = None  # opened again at the next append

    def _append(self, entry: bytes) -> None:
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            write_all(self._fd, entry)
            os.fdatasync(self._fd)
        except OSError as exc:
            raise SafetyFileError(f"cannot write {self.path}: {exc.strerror}") from None


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_all(fd, data)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        sync_directory(path.parent)
    except OSError as exc:
        raise SafetyFileError(f"cannot write {path}: {exc.strerror}") from None
