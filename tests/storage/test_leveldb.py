"""LevelDBStore: persistence, the lock, and typed errors for damaged or odd paths."""

from __future__ import annotations

import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plyvel
import pytest

from storage.kv import StorageError, StoreCorrupt, StoreLocked, WriteBatch
from storage.leveldb import LevelDBStore

READY_TIMEOUT_S = 30.0

# Opens the store with plyvel, says so, and holds it until stdin closes.
HOLDER = """
import sys, plyvel
db = plyvel.DB(sys.argv[1], create_if_missing=True)
print("ready", flush=True)
sys.stdin.read()
db.close()
"""


def test_open_creates_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "db"
    kv = LevelDBStore.open(str(path))
    kv.put(b"k", b"v")
    kv.close()
    assert path.is_dir()


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    kv = LevelDBStore.open(tmp_path)
    kv.put(b"synced", b"1", sync=True)
    kv.put(b"unsynced", b"2")  # the OS still has it: the process did not die
    kv.write_batch(WriteBatch({b"batch": b"3", b"synced": None}), sync=True)
    kv.close()
    kv = LevelDBStore.open(tmp_path)
    assert list(kv.iterate(b"")) == [(b"batch", b"3"), (b"unsynced", b"2")]
    kv.close()


def test_second_open_in_same_process_is_locked(tmp_path: Path) -> None:
    kv = LevelDBStore.open(tmp_path)
    with pytest.raises(StoreLocked) as raised:
        LevelDBStore.open(tmp_path)
    assert str(raised.value) == f"data directory {tmp_path} is in use by another node (LevelDB lock held)"
    kv.close()
    LevelDBStore.open(tmp_path).close()  # closing released the lock


@pytest.fixture
def held_by_other_process(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert read_line(holder, READY_TIMEOUT_S) == "ready"
        yield path
    finally:
        stop(holder)


def read_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The next stdout line of `proc`, failing after `timeout_s` seconds."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            raise AssertionError(f"no line from pid {proc.pid} within {timeout_s} s")
    return proc.stdout.readline().strip()


def stop(proc: subprocess.Popen[Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(timeout=READY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_open_held_by_another_process_is_locked(held_by_other_process: Path) -> None:
    path = held_by_other_process
    with pytest.raises(StoreLocked, match="is in use by another node"):
        LevelDBStore.open(path)


def test_lock_is_released_when_the_other_process_exits(tmp_path: Path) -> None:
    path = tmp_path / "db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert read_line(holder, READY_TIMEOUT_S) == "ready"
    stop(holder)
    assert holder.returncode == 0
    LevelDBStore.open(path).close()


def corrupt_files(path: Path) -> list[Path]:
    damaged = [p for pattern in ("*.ldb", "*.log", "MANIFEST-*") for p in path.glob(pattern)]
    for file in damaged:
        file.write_bytes(b"\xde\xad\xbe\xef" * max(16, file.stat().st_size // 4))
    return damaged


def test_corrupt_store_raises_typed_error(tmp_path: Path) -> None:
    kv = LevelDBStore.open(tmp_path)
    for i in range(1000):
        kv.put(b"key-%d" % i, b"value" * 20)
    kv.close()
    assert corrupt_files(tmp_path)
    with pytest.raises(StorageError) as raised:
        LevelDBStore.open(tmp_path)
    assert isinstance(raised.value, StoreCorrupt)  # what LevelDB 1.22 reports here
    assert str(tmp_path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_path_that_is_a_file_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("not a directory")
    with pytest.raises(StorageError) as raised:
        LevelDBStore.open(path)
    assert not isinstance(raised.value, StoreLocked)
    assert str(path) in str(raised.value)


def test_lock_file_that_is_a_directory_is_not_reported_as_locked(tmp_path: Path) -> None:
    # LevelDB says "IO error: <dir>/LOCK: Is a directory": it names LOCK but no lock is held.
    (tmp_path / "LOCK").mkdir()
    with pytest.raises(StorageError) as raised:
        LevelDBStore.open(tmp_path)
    assert type(raised.value) is StorageError
    assert str(tmp_path) in str(raised.value)


class FailingDB:
    """Stands in for plyvel.DB to fail the way a full or damaged disk does."""

    def get(self, key: bytes, verify_checksums: bool = False) -> bytes | None:
        raise plyvel.CorruptionError(b"Corruption: block checksum mismatch")

    def put(self, key: bytes, value: bytes, sync: bool = False) -> None:
        raise plyvel.IOError(b"IO error: 000005.log: No space left on device")

    def write_batch(self, sync: bool = False) -> Any:
        raise plyvel.IOError(b"IO error: 000005.log: No space left on device")

    def close(self) -> None:
        pass


def test_read_and_write_failures_are_typed(tmp_path: Path) -> None:
    kv = LevelDBStore(FailingDB(), tmp_path)
    with pytest.raises(StoreCorrupt, match="block checksum mismatch"):
        kv.get(b"k")
    with pytest.raises(StorageError, match="No space left on device") as raised:
        kv.put(b"k", b"v", sync=True)
    assert str(tmp_path) in str(raised.value)
    with pytest.raises(StorageError, match="No space left on device"):
        kv.write_batch(WriteBatch({b"k": b"v"}), sync=True)


class RecordingDB:
    """Stands in for plyvel.DB to record what reaches LevelDB; `sync` cannot
    be observed otherwise without cutting the power."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def put(self, key: bytes, value: bytes, sync: bool = False) -> None:
        self.calls.append(("put", key, sync))

    def delete(self, key: bytes, sync: bool = False) -> None:
        self.calls.append(("delete", key, sync))

    def write_batch(self, sync: bool = False) -> RecordingDB:
        self.calls.append(("batch", sync))
        return self

    def write(self) -> None:
        self.calls.append(("write",))


@pytest.mark.parametrize("sync", [True, False])
def test_sync_reaches_leveldb(tmp_path: Path, sync: bool) -> None:
    db = RecordingDB()
    kv = LevelDBStore(db, tmp_path)
    kv.put(b"p", b"v", sync=sync)
    kv.delete(b"d", sync=sync)
    kv.write_batch(WriteBatch({b"a": b"1", b"b": None}), sync=sync)
    assert db.calls == [
        ("put", b"p", sync),
        ("delete", b"d", sync),
        ("batch", sync),  # one LevelDB batch for the whole WriteBatch
        ("put", b"a", False),
        ("delete", b"b", False),
        ("write",),
    ]


def _damaged_log_store(tmp_path: Path) -> Path:
    kv = LevelDBStore.open(tmp_path / "db")
    for i in range(2000):
        kv.put(b"k%05d" % i, b"v" * 100, sync=False)
    kv.close()
    log = next((tmp_path / "db").glob("*.log"))
    with log.open("r+b") as f:  # a record in the middle of the write-ahead log overwritten
        f.seek(log.stat().st_size // 2)
        f.write(b"\x00\xff" * 2048)
    return tmp_path / "db"


def test_a_damaged_log_is_refused_at_open_not_skipped(tmp_path: Path) -> None:
    path = _damaged_log_store(tmp_path)
    with pytest.raises(StoreCorrupt, match="is corrupt"):
        LevelDBStore.open(path)
    # Without paranoid checks LevelDB skips the damaged records: the holes the node must never serve.
    kv = LevelDBStore.open(path, paranoid=False)
    assert sum(1 for _ in kv.iterate(b"k")) < 2000
    kv.close()


def test_a_table_cut_short_is_damage(tmp_path: Path) -> None:
    kv = LevelDBStore.open(tmp_path / "db")
    for i in range(2000):
        kv.put(b"k%05d" % i, b"v" * 100)
    kv.close()
    LevelDBStore.open(tmp_path / "db").close()  # the log moves into a table
    table = max((tmp_path / "db").glob("*.ldb"), key=lambda p: p.stat().st_size)
    with table.open("r+b") as f:
        f.truncate(table.stat().st_size // 2)
    with pytest.raises(StoreCorrupt, match=r"\.ldb"):
        kv = LevelDBStore.open(tmp_path / "db")
        try:
            for i in range(2000):
                kv.get(b"k%05d" % i)
        finally:
            kv.close()


class MachineFailingDB(FailingDB):
    def get(self, key: bytes, verify_checksums: bool = False) -> bytes | None:
        raise plyvel.IOError(b"IO error: db/000005.ldb: Too many open files")


def test_the_machine_s_io_errors_are_not_damage(tmp_path: Path) -> None:
    kv = LevelDBStore(MachineFailingDB(), tmp_path)
    with pytest.raises(StorageError, match="Too many open files") as raised:
        kv.get(b"k")
    assert not isinstance(raised.value, StoreCorrupt), "running out of descriptors must not mark the store damaged"
    with pytest.raises(StorageError) as written:
        kv.put(b"k", b"v")  # a full disk on the write-ahead log
    assert not isinstance(written.value, StoreCorrupt)
