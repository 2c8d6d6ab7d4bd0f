"""The key-value interface every store implements."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol


class StorageError(Exception):
    """A store could not be opened, read or written."""


class StoreLocked(StorageError):
    """Another process holds the store's lock."""


class StoreCorrupt(StorageError):
    """The store's files are damaged."""


@dataclass
class WriteBatch:
    """Writes applied together, all or nothing. `None` as a value deletes."""

    writes: dict[bytes, bytes | None] = field(default_factory=dict)

    def put(self, key: bytes, value: bytes) -> None:
        self.writes[key] = value

    def delete(self, key: bytes) -> None:
        self.writes[key] = None

    def __len__(self) -> int:
        return len(self.writes)


class ReadView(Protocol):
    """A consistent read-only view of a store as it was when taken; close it when done."""

    def get(self, key: bytes) -> bytes | None: ...

    def iterate(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]: ...

    def close(self) -> None: ...


class KeyValueStore(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None: ...

    def delete(self, key: bytes, *, sync: bool = False) -> None: ...

    def iterate(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Pairs whose key starts with `prefix`, in key order, from the first key >= `start`."""
        ...

    def write_batch(self, batch: WriteBatch, *, sync: bool) -> None:
        """Applies every write of `batch` atomically; durable on return when `sync`."""
        ...

    def snapshot(self) -> ReadView:
        """A view of the store as it is now, unchanged by later writes."""
        ...

    def compact_range(self, start: bytes, stop: bytes) -> None:
        """Rewrites the keys in [start, stop) so that deleted ones no longer take disk space."""
        ...

    def close(self) -> None: ...


def prefix_end(prefix: bytes) -> bytes | None:
    """The least key above every key that starts with `prefix`; None when there is none."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None
