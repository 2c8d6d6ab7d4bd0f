"""An in-memory key-value store that can simulate a crash.

It mirrors LevelDB's durability: every write is visible at once, but only a
write with `sync=True` is durable, and because the log is ordered it makes
every earlier write durable too. `crash()` then forgets whatever was never
made durable, which is what a power loss does to a real node.
"""

from __future__ import annotations

from collections.abc import Iterator

from storage.kv import StorageError, WriteBatch

_Write = tuple[bytes, bytes | None]


class MemoryStore:
    """A `KeyValueStore` held in dicts, with `crash()` for simulations."""

    def __init__(self) -> None:
        self._visible: dict[bytes, bytes] = {}
        self._durable: dict[bytes, bytes] = {}
        # Writes not yet durable, in order; replaying them onto `_durable`
        # on the next sync costs the writes, not the size of the store.
        self._unsynced: list[_Write] = []
        self._closed = False

    def get(self, key: bytes) -> bytes | None:
        self._check_open()
        _check_bytes("key", key)
        return self._visible.get(key)

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._apply([(key, value)], sync=sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        self._apply([(key, None)], sync=sync)

    def iterate(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Pairs whose key starts with `prefix`, in key order, from the first key >= `start`.

        The pairs are taken when called, like LevelDB's implicit snapshot.
        """
        self._check_open()
        # bytes order like LevelDB's default bytewise comparator.
        pairs = sorted(kv for kv in self._visible.items() if kv[0].startswith(prefix) and kv[0] >= start)
        return self._yield_while_open(pairs)

    def write_batch(self, batch: WriteBatch, *, sync: bool) -> None:
        self._apply(list(batch.writes.items()), sync=sync)

    def snapshot(self) -> MemoryView:
        self._check_open()
        return MemoryView(dict(self._visible))

    def compact_range(self, start: bytes, stop: bytes) -> None:
        self._check_open()  # nothing takes space once deleted here

    def close(self) -> None:
        self._closed = True

    def crash(self) -> None:
        """Drops every write that was never made durable.

        The store is usable afterwards (even if it was closed), as the disk
        is when the node restarts.
        """
        self._visible = dict(self._durable)
        self._unsynced.clear()
        self._closed = False

    def _apply(self, writes: list[_Write], *, sync: bool) -> None:
        self._check_open()
        for key, value in writes:  # all checked first: a batch is all or nothing
            _check_bytes("key", key)
            _check_bytes("value", b"" if value is None else value)
        for key, value in writes:
            _set(self._visible, key, value)
        self._unsynced.extend(writes)
        if sync:
            self._make_durable()

    def _make_durable(self) -> None:
        for key, value in self._unsynced:
            _set(self._durable, key, value)
        self._unsynced.clear()

    def _yield_while_open(self, pairs: list[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        # A closed LevelDB ends its iterators too; keep the two stores alike.
        for pair in pairs:
            self._check_open()
            yield pair

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("memory store is closed")


class MemoryView:
    """A `ReadView`: a copy of the visible pairs."""

    def __init__(self, pairs: dict[bytes, bytes]) -> None:
        self._pairs = pairs

    def get(self, key: bytes) -> bytes | None:
        return self._pairs.get(key)

    def iterate(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        return iter(sorted(kv for kv in self._pairs.items() if kv[0].startswith(prefix) and kv[0] >= start))

    def close(self) -> None:
        self._pairs = {}


def _check_bytes(what: str, data: object) -> None:
    # plyvel accepts only bytes; the twin must not hide a str key LevelDB rejects.
    if not isinstance(data, bytes):
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")


def _set(contents: dict[bytes, bytes], key: bytes, value: bytes | None) -> None:
    if value is None:
        contents.pop(key, None)
    else:
        contents[key] = value
