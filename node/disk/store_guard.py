"""Opening a node's store only when it is whole, and its safety file beside it.

A node refuses to start, in one line naming `alliance check` and `alliance
resync`, when the chain near its tip is damaged, when the store holds fewer
blocks than the safety file says were committed (a rollback), or when the
safety file is damaged or missing on a store that had one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from consensus.messages import MessageError
from node.chain.genesis import Genesis
from node.config import NodeConfig
from node.disk.integrity import Fault, verify_window
from node.disk.safety_file import UNKNOWN, SafetyFile, SafetyFileError, SafetyRecord, safety_path, write_atomic
from node.errors import AllianceError
from storage.chain import ChainStore

log = logging.getLogger("alliance.node")

# Heights above the highest a peer reports that a resynced node without safety state still sits out.
# Set in the chain store once the safety file exists: a store with it and no file lost the file.
SAFETY_FILE_META = "safety_file"


class StoreDamaged(AllianceError):
    """The store or the safety file is damaged: the message names the way out."""


def damaged(config: NodeConfig, problem: str, validators: int = 0) -> StoreDamaged:
    """The one line naming the way out: a resync, or for a chain of one validator (no peers) a restore."""
    home, where = config.home, "" if str(config.data_dir) in problem else f"{config.data_dir}: "
    way_out = (f"and `alliance resync --home {home}` to rebuild it from peers" if validators != 1 else
               "and restore the data directory from a copy (docs/operations.md section 8)")
    return StoreDamaged(
        f"{where}{problem}: the store is damaged; run `alliance check --home {home}` for details {way_out}"
    )


def damage_marker(data_dir: Path) -> Path:
    """`<data_dir>.corrupt`: beside the data directory, written when the running node finds damage."""
    return data_dir.with_name(data_dir.name + ".corrupt")


def marked_damage(data_dir: Path) -> str | None:
    """Why the running node found the store damaged, when it did; a resync moves the marker aside."""
    try:
        return damage_marker(data_dir).read_text("utf-8", "replace").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot read {damage_marker(data_dir)}: {exc.strerror}"


class DamageWatch:
    """Stops the running node the first time a read finds the store damaged, marking it so it starts no more."""

    def __init__(self, config: NodeConfig, validators: int, stop: Callable[[], None]) -> None:
        self.config = config
        self.validators = validators
        self.stop = stop  # cancels every task of the node
        self.found: StoreDamaged | None = None

    def report(self, exc: Exception) -> StoreDamaged:
        if self.found is None:
            marker = damage_marker(self.config.data_dir)
            try:
                write_atomic(marker, f"{exc}\n".encode())
            except SafetyFileError as error:
                log.error("event=damage_marker_failed reason=%r", str(error))
            self.found = damaged(self.config, f"found while running: {exc}", self.validators)
            log.error("event=store_damaged reason=%r", str(self.found))
            self.stop()
        return self.found


@dataclass
class Guarded:
    safety_file: SafetyFile
    sign_from: int  # UNKNOWN: to be learnt from the peers


def open_guarded(config: NodeConfig, store: ChainStore, genesis: Genesis) -> Guarded:
    """Verifies the store and its safety file, migrating an older store's safety state; raises StoreDamaged."""
    validators = len(genesis.validators)
    found = marked_damage(config.data_dir)
    if found is not None:
        raise damaged(config, f"found damaged while running ({found}; noted in {damage_marker(config.data_dir)})",
                      validators)
    try:
        verify_window(store, genesis)
    except Fault as exc:
        raise damaged(config, str(exc), validators) from None
    path = safety_path(config.data_dir)
    try:
        safety_file = SafetyFile.load(path)
    except SafetyFileError as exc:
        raise damaged(config, str(exc), validators) from None
    if safety_file is None:
        safety_file = _first_safety_file(config, store, path, validators)
    record = safety_file.record
    if store.height() < record.committed_floor:
        raise damaged(config, f"the store holds {store.height()} blocks but {record.committed_floor} were "
                              f"committed (says {path}): committed blocks were lost", validators)
    safety_file.save_committed(store.height())
    if store.load_meta(SAFETY_FILE_META) is None:
        store.save_meta(SAFETY_FILE_META, b"1")
    return Guarded(safety_file, record.sign_from)


def _first_safety_file(config: NodeConfig, store: ChainStore, path: Path, validators: int) -> SafetyFile:
    if store.load_meta(SAFETY_FILE_META) is not None:
        raise damaged(config, f"the safety file {path} is missing", validators)
    # A new store, or one from a version that kept the safety state inside it.
    legacy = store.load_safety()
    safety_file = SafetyFile.create(path, SafetyRecord(committed=store.height(), safety_bytes=legacy))
    try:
        safety_file.record.safety  # noqa: B018 - a damaged legacy state is damage like any other
    except MessageError as exc:
        path.unlink()
        raise damaged(config, f"the safety state in the store does not decode: {exc}", validators) from None
    if legacy is not None:
        store.delete_safety()
    return safety_file


def resync_record(old: SafetyFile | None) -> SafetyRecord:
    """The safety file after a resync: no committed floor, and no signature at or below what may have been signed."""
    if old is None or old.record.sign_from == UNKNOWN:
        return SafetyRecord(committed=0, sign_from=UNKNOWN)
    return SafetyRecord(committed=0, sign_from=max(old.record.sign_from, old.record.signed_up_to + 1))
