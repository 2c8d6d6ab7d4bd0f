"""The LevelDB store: the only module that imports plyvel.

Every plyvel failure leaves here as a typed `StorageError` whose one-line
message names the data directory, so an operator can act on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import plyvel

from storage.kv import StorageError, StoreCorrupt, StoreLocked, WriteBatch, prefix_end

# LevelDB's POSIX env words lock failures as "IO error: lock <dir>/LOCK: ...",
# both when another process holds the lock ("Resource temporarily
# unavailable") and when this process already does ("already held by
# process"). Other errors on the LOCK file ("<dir>/LOCK: Not a directory")
# lack the lowercase "lock " verb, so they are not mistaken for a busy node.
_LOCK_PREFIX = "IO error: lock "

# An IO error reading one of LevelDB's own data files (a table cut short, say) is damage, unless it
# is the machine's (no descriptors, no space, no permission): those pass, and must not mark the store.
_DATA_FILE_ERROR = re.compile(r"IO error: .*(\.ldb|\.sst|\.log|/MANIFEST-\d+|/CURRENT)\b")
_MACHINE_ERRORS = ("Too many open files", "No space left", "Permission denied", "Read-only file system",
                   "Cannot allocate memory")

# plyvel raises RuntimeError when its database or iterator is closed.
_PLYVEL_ERRORS = (plyvel.Error, OSError, RuntimeError)
# A bloom filter makes the frequent lookups of keys that do not exist (new tx hashes) cheap.
BLOOM_FILTER_BITS = 10
CACHE_BYTES = 32 * 1024 * 1024
# A larger memtable (LevelDB's default is 4 MiB) means fewer, larger level-0
# files and so fewer compactions of the tx-hash keys, which land all over the
# key space: under load LevelDB's compaction thread took 10% of a core per
# node with the default, 3% with this.
WRITE_BUFFER_BYTES = 32 * 1024 * 1024


class LevelDBStore:
    """A `KeyValueStore` on a LevelDB directory. Create it with `open()`."""

    def __init__(self, db: Any, path: Path) -> None:
        self._db: Any = db
        self.path = path

    @classmethod
    def open(cls, path: str | Path, *, paranoid: bool = True) -> LevelDBStore:
        """Opens the store at `path`, creating the directory if missing.

        Paranoid checks make LevelDB refuse to open a store whose log or tables
        it finds damaged, instead of skipping what it cannot read (which left
        holes in the chain). Reads verify checksums too: LevelDB checks a table
        block only when it reads it from disk, not when the cache has it, so
        this costs nothing measurable and a damaged table is never served.
        Only a check reading a copy of a damaged store turns `paranoid` off,
        to see what LevelDB can still read.
        """
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            db = plyvel.DB(
                str(path), create_if_missing=True, bloom_filter_bits=BLOOM_FILTER_BITS, lru_cache_size=CACHE_BYTES,
                write_buffer_size=WRITE_BUFFER_BYTES, paranoid_checks=paranoid,
            )
        except (plyvel.Error, OSError) as exc:
            raise _open_error(path, exc) from exc
        return cls(db, path)

    def get(self, key: bytes) -> bytes | None:
        if self._db is None:
            raise StorageError(f"LevelDB store {self.path} is closed")
        try:  # the hottest call: no context manager
            value: bytes | None = self._db.get(key, verify_checksums=True)
        except _PLYVEL_ERRORS as exc:
            raise _error(self.path, "read", exc) from exc
        return value

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        with self._mapped_errors("write"):
            self._live_db().put(key, value, sync=sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        with self._mapped_errors("write"):
            self._live_db().delete(key, sync=sync)

    def iterate(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Pairs whose key starts with `prefix`, in key order, from the first key >= `start`.

        The iterator is created when called, so it reads a snapshot taken now.
        """
        with self._mapped_errors("read"):
            raw = _iterator(self._live_db(), prefix, start)
        return self._pairs(raw)

    def write_batch(self, batch: WriteBatch, *, sync: bool) -> None:
        with self._mapped_errors("write"):
            # One LevelDB batch is one log record: applied all or nothing.
            raw = self._live_db().write_batch(sync=sync)
            put, delete = raw.put, raw.delete
            for key, value in batch.writes.items():
                if value is None:
                    delete(key)
                else:
                    put(key, value)
            raw.write()

    def snapshot(self) -> LevelDBView:
        """A LevelDB snapshot: reads through it see the store as it is now."""
        with self._mapped_errors("read"):
            return LevelDBView(self, self._live_db().snapshot())

    def compact_range(self, start: bytes, stop: bytes) -> None:
        """Flushes the memtable and rewrites the tables holding [start, stop), dropping deleted keys;
        blocks the calling thread (run it off the event loop) while other writes go on."""
        with self._mapped_errors("write"):
            self._live_db().compact_range(start=start, stop=stop)

    def close(self) -> None:
        if self._db is None:
            return
        db, self._db = self._db, None
        with self._mapped_errors("close"):
            db.close()

    def _pairs(self, raw: Any) -> Iterator[tuple[bytes, bytes]]:
        with self._mapped_errors("read"):
            for key, value in raw:
                yield key, value

    def _live_db(self) -> Any:
        if self._db is None:
            raise StorageError(f"LevelDB store {self.path} is closed")
        return self._db

    @contextmanager
    def _mapped_errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except _PLYVEL_ERRORS as exc:
            raise _error(self.path, action, exc) from exc


class LevelDBView:
    """A `ReadView` over a plyvel snapshot, its errors mapped like the store's."""

    def __init__(self, store: LevelDBStore, raw: Any) -> None:
        self._store = store
        self._raw: Any = raw

    def get(self, key: bytes) -> bytes | None:
        with self._store._mapped_errors("read"):
            value: bytes | None = self._raw.get(key, verify_checksums=True)
        return value

    def iterate(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        with self._store._mapped_errors("read"):
            raw = _iterator(self._raw, prefix, start)
        return self._store._pairs(raw)

    def close(self) -> None:
        with self._store._mapped_errors("read"):
            self._raw.close()


def _is_damage(exc: Exception, detail: str, action: str) -> bool:
    if isinstance(exc, plyvel.CorruptionError):
        return True
    return (action in ("read", "open") and _DATA_FILE_ERROR.search(detail) is not None
            and not any(error in detail for error in _MACHINE_ERRORS))


def _error(path: Path, action: str, exc: Exception) -> StorageError:
    detail = _detail(exc)
    if _is_damage(exc, detail, action):
        return StoreCorrupt(f"LevelDB {action} in {path} found corruption: {detail}")
    return StorageError(f"LevelDB {action} failed in {path}: {detail}")


def _open_error(path: Path, exc: Exception) -> StorageError:
    detail = _detail(exc)
    if _is_damage(exc, detail, "open"):
        return StoreCorrupt(f"data directory {path} is corrupt: {detail}")
    if isinstance(exc, plyvel.IOError) and detail.startswith(_LOCK_PREFIX):
        return StoreLocked(f"data directory {path} is in use by another node (LevelDB lock held)")
    return StorageError(f"cannot open data directory {path}: {detail}")


def _detail(exc: BaseException) -> str:
    # plyvel puts LevelDB's status message in args[0] as bytes.
    if isinstance(exc, plyvel.Error) and exc.args and isinstance(exc.args[0], bytes):
        return exc.args[0].decode("utf-8", "replace")
    return str(exc)


def _iterator(db: Any, prefix: bytes, start: bytes) -> Any:
    """plyvel takes a prefix or a range, not both: a start within the prefix becomes a range."""
    if start <= prefix:
        return db.iterator(prefix=prefix, verify_checksums=True)
    if not start.startswith(prefix):
        return iter(())
    return db.iterator(start=start, stop=prefix_end(prefix), verify_checksums=True)
