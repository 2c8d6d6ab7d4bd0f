"""Fixtures shared by the storage tests: every store kind, opened fresh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.kv import KeyValueStore
from storage.leveldb import LevelDBStore
from storage.memory import MemoryStore


@pytest.fixture(params=["memory", "leveldb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValueStore]:
    """A fresh, empty store of each kind; closed after the test."""
    kv: KeyValueStore = MemoryStore() if request.param == "memory" else LevelDBStore.open(tmp_path / "db")
    yield kv
    kv.close()
