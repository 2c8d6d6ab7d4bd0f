"""The safety file's atomic write and damage detection; start-up and whole-store checks on a memory store."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from consensus.safety_state import SafetyState, encode_safety
from node.chain.block import Block, encode_certificate
from node.chain.ledger import Ledger
from node.chain.tx import tx_hash_of
from node.config import NodeConfig
from node.disk.integrity import Fault, check_store, verify_window
from node.disk.safety_file import MAGIC, UNKNOWN, SafetyFile, SafetyFileError, SafetyRecord, encode_record, safety_path
from node.disk.store_guard import (
    SAFETY_FILE_META, DamageWatch, StoreDamaged, damaged, marked_damage, open_guarded, resync_record,
)
from storage.kv import StoreCorrupt
from tests.shell.chainkit import Consortium, consortium, grow


def _state(height: int) -> bytes:
    return encode_safety(SafetyState(height, 0, None, ()))


def test_the_newest_record_holds_and_survives_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "data.safety"
    f = SafetyFile.create(path, SafetyRecord())
    f.save_safety(_state(7))
    f.save_committed(9)
    loaded = SafetyFile.load(path)
    assert loaded is not None and loaded.record == SafetyRecord(9, 0, _state(7))
    assert loaded.record.committed_floor == 9 and loaded.record.signed_up_to == 10
    assert not path.with_name(path.name + ".tmp").exists()


@contextmanager
def no_free_descriptors() -> Iterator[None]:
    """Every file descriptor this process may open is taken, as by a flood of connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    taken: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        while True:
            try:
                taken.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_signing_needs_no_free_descriptor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("node.disk.safety_file.FILE_BYTES_MAX", 400)  # a rewrite falls due meanwhile, and waits
    path = tmp_path / "data.safety"
    SafetyFile.create(path, SafetyRecord()).close()
    f = SafetyFile.load(path)
    assert f is not None
    with no_free_descriptors():
        with pytest.raises(OSError):
            os.open(os.devnull, os.O_RDONLY)
        for height in range(1, 8):
            f.save_safety(_state(height))
    f.close()
    loaded = SafetyFile.load(path)
    assert loaded is not None and loaded.record.safety_bytes == _state(7)
    loaded.close()


def test_a_full_file_is_replaced_by_its_newest_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("node.disk.safety_file.FILE_BYTES_MAX", 400)
    path = tmp_path / "data.safety"
    f = SafetyFile.create(path, SafetyRecord())
    for height in range(1, 30):
        f.save_safety(_state(height))
    assert path.stat().st_size <= 400
    loaded = SafetyFile.load(path)
    assert loaded is not None and loaded.record.safety is not None and loaded.record.safety.height == 29


def test_a_record_cut_short_by_a_crash_leaves_the_one_before(tmp_path: Path) -> None:
    path = tmp_path / "data.safety"
    SafetyFile.create(path, SafetyRecord(committed=5))
    with path.open("ab") as out:
        out.write(encode_record(SafetyRecord(committed=6))[:-3])
    loaded = SafetyFile.load(path)
    assert loaded is not None and loaded.record.committed == 5


@pytest.mark.parametrize("where", [0, len(MAGIC) + 2, len(MAGIC) + 10, -1])
def test_any_damaged_byte_is_detected(tmp_path: Path, where: int) -> None:
    path = tmp_path / "data.safety"
    f = SafetyFile.create(path, SafetyRecord(committed=3))
    f.save_safety(_state(4))
    data = bytearray(path.read_bytes())
    data[where] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(SafetyFileError):
        SafetyFile.load(path)


def test_a_missing_file_loads_as_none(tmp_path: Path) -> None:
    assert SafetyFile.load(tmp_path / "none.safety") is None


def test_resync_forbids_every_height_that_may_have_been_signed(tmp_path: Path) -> None:
    f = SafetyFile.create(tmp_path / "data.safety", SafetyRecord(committed=10, safety_bytes=_state(12)))
    assert resync_record(f) == SafetyRecord(committed=0, sign_from=13)
    assert resync_record(None).sign_from == UNKNOWN


# ---- the chain ------------------------------------------------------------------------


def _chain(blocks: int = 12) -> tuple[Consortium, Ledger]:
    c = consortium()
    ledger = c.ledger()
    grow(c, ledger, blocks)
    return c, ledger


def _block(ledger: Ledger, height: int) -> Block:
    block = ledger.block(height)
    assert block is not None
    return block


def test_a_whole_chain_verifies() -> None:
    c, ledger = _chain()
    verify_window(ledger.store, c.genesis)
    assert check_store(ledger.store, c.genesis, replay=True) == (12, None)


def test_a_missing_block_is_the_first_fault() -> None:
    c, ledger = _chain()
    store = ledger.store
    store.kv.delete(b"b/" + (5).to_bytes(8, "big"))
    with pytest.raises(Fault, match="block 5 is missing"):
        verify_window(store, c.genesis)
    verify_window(store, c.genesis, window=6)  # the window stops above it; the whole check does not
    verify_window(store, c.genesis, txs=14)  # so does the budget of transactions (2 a block)
    checked, fault = check_store(store, c.genesis, replay=False)
    assert checked == 4 and fault is not None and fault.height == 5


@pytest.mark.parametrize("key, reason", [
    (b"c/", "no commit certificate"),
    (b"h/", "not indexed under its hash"),
])
def test_each_part_of_a_block_is_checked(key: bytes, reason: str) -> None:
    c, ledger = _chain()
    store = ledger.store
    if key == b"h/":
        header = _block(ledger, 9).header
        store.kv.delete(b"h/" + header.hash())
    else:
        store.kv.delete(key + (9).to_bytes(8, "big"))
    with pytest.raises(Fault, match=f"block 9 .*{reason}"):
        verify_window(store, c.genesis)


def test_a_missing_tx_entry_and_a_block_above_the_pointer_are_faults() -> None:
    c, ledger = _chain()
    store = ledger.store
    block = _block(ledger, 12)
    store.kv.put(b"b/" + (13).to_bytes(8, "big"), block.encode())
    with pytest.raises(Fault, match="block 13 is stored above the height pointer"):
        verify_window(store, c.genesis)
    store.kv.delete(b"b/" + (13).to_bytes(8, "big"))
    store.kv.delete(b"t/" + tx_hash_of(block.txs[1]))
    with pytest.raises(Fault, match="block 12 transaction 1 .* has no entry"):
        verify_window(store, c.genesis)


def test_a_foreign_certificate_does_not_verify() -> None:
    c, ledger = _chain()
    other = consortium()
    store = ledger.store
    header = _block(ledger, 12).header
    store.kv.put(b"c/" + (12).to_bytes(8, "big"), encode_certificate(other.seal(header.hash())))
    with pytest.raises(Fault, match="block 12 has a commit certificate that does not verify"):
        verify_window(store, c.genesis)


# ---- start-up -------------------------------------------------------------------------


def _config(tmp_path: Path) -> NodeConfig:
    # open_guarded reads only where the node lives and its data directory.
    return SimpleNamespace(home=tmp_path, data_dir=tmp_path / "data")  # type: ignore[return-value]


def test_start_up_refuses_a_rollback_and_a_lost_safety_file(tmp_path: Path) -> None:
    c, ledger = _chain()
    store = ledger.store
    config = _config(tmp_path)
    guarded = open_guarded(config, store, c.genesis)  # first start: the file is made, the store marked
    assert guarded.safety_file.record.committed == 12 and store.load_meta(SAFETY_FILE_META) == b"1"
    guarded.safety_file.save_safety(_state(20))  # signed at 20: blocks up to 19 were committed
    with pytest.raises(StoreDamaged, match="holds 12 blocks but 19 were committed.*alliance resync"):
        open_guarded(config, store, c.genesis)
    safety_path(config.data_dir).unlink()
    with pytest.raises(StoreDamaged, match="safety file .* is missing"):
        open_guarded(config, store, c.genesis)


def test_start_up_moves_an_older_store_s_safety_state_to_the_file(tmp_path: Path) -> None:
    c, ledger = _chain()
    store = ledger.store
    store.save_safety(_state(13))
    guarded = open_guarded(_config(tmp_path), store, c.genesis)
    assert guarded.safety_file.record.safety_bytes == _state(13) and store.load_safety() is None


@pytest.mark.parametrize("damage, found", [
    (lambda kv, key, value: kv.delete(key), "missing from the store"),
    (lambda kv, key, value: kv.put(key, value + b"x"), "different in the store"),
    (lambda kv, key, value: kv.put(b"s/kv/extra", value), "never wrote state key b'kv/extra'"),
], ids=["deleted", "changed", "added"])
def test_the_replayed_state_is_compared_with_the_stored_one(damage: object, found: str) -> None:
    c, ledger = _chain()
    kv = ledger.store.kv
    key, value = next(iter(kv.iterate(b"s/kv/")))
    damage(kv, key, value)  # type: ignore[operator]
    assert check_store(ledger.store, c.genesis, replay=False) == (12, None), "only the replay reads the state"
    checked, fault = check_store(ledger.store, c.genesis, replay=True)
    assert checked == 12 and fault is not None and found in str(fault)
    assert 1 <= fault.height <= 12


def test_damage_found_while_running_is_marked_and_refused_at_the_next_start(tmp_path: Path) -> None:
    c, ledger = _chain()
    config = _config(tmp_path)
    open_guarded(config, ledger.store, c.genesis)
    stopped: list[bool] = []
    watch = DamageWatch(config, len(c.genesis.validators), stop=lambda: stopped.append(True))
    first = watch.report(StoreCorrupt("block 3 is missing from the store"))
    assert watch.report(StoreCorrupt("another")) is first and stopped == [True], "reported and stopped once"
    assert "block 3 is missing" in str(first) and "alliance resync" in str(first)
    assert marked_damage(config.data_dir) == "block 3 is missing from the store"
    with pytest.raises(StoreDamaged, match="found damaged while running .*block 3 is missing.*alliance resync"):
        open_guarded(config, ledger.store, c.genesis)


def test_a_one_validator_chain_is_told_to_restore_not_to_resync(tmp_path: Path) -> None:
    line = str(damaged(_config(tmp_path), "block 3 is missing", validators=1))
    assert "alliance check --home" in line and "restore the data directory from a copy" in line
    assert "resync" not in line
