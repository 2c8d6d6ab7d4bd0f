"""`alliance check` verifies a stopped node's whole store; `alliance resync` moves a damaged one aside."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from node.chain.genesis import Genesis, load_genesis
from node.config import NodeConfig, load_config
from node.disk.integrity import ReplayImpossible, check_store
from node.disk.safety_file import UNKNOWN, SafetyFile, SafetyFileError, safety_path
from node.disk.store_guard import SAFETY_FILE_META, damage_marker, marked_damage, resync_record
from node.errors import AllianceError, VerificationFailed
from storage.chain import ChainStore
from storage.kv import StorageError, StoreLocked
from storage.leveldb import LevelDBStore


def add_parsers(sub: Any, command: Any) -> None:
    p = command(sub, "check", cmd_check, "verify a stopped node's whole store; exit 6 if it is damaged",
                "Checks every block of the node in DIR (from its base, the lowest block a pruned node holds): "
                "its link to the previous block, its commit certificate "
                "against the genesis validators, its transaction root and entries, the height pointer and the "
                "safety file; with --state, also re-executes the chain from the genesis against each state root "
                "(impossible on a pruned node). "
                "Prints one JSON object naming the first bad height.")
    p.add_argument("--home", required=True, help="node directory holding node.toml")
    p.add_argument("--state", action="store_true", help="also replay every block and compare its state root")
    p = command(sub, "resync", cmd_resync, "move a stopped node's damaged store aside, to be rebuilt from peers",
                "Renames the data directory to DATA.damaged-<UTC time> (kept) and marks the safety file so that "
                "the next `alliance run` catches up from the peers and signs nothing at a height it may have "
                "signed before (docs/operations.md, \"When a store is damaged\"). A chain of one validator has no peers "
                "to rebuild from: restore its data directory from a copy instead.")
    p.add_argument("--home", required=True, help="node directory holding node.toml")


def cmd_check(args: argparse.Namespace) -> None:
    config = load_config(Path(args.home))
    genesis = load_genesis(config.genesis_file)
    report: dict[str, Any] = {"data_dir": str(config.data_dir), "state_replayed": bool(args.state)}
    store = _open_stopped(config, report)
    readable = store is not None
    if store is not None:
        try:
            _check_open(config, genesis, ChainStore(store), args.state, report)
        except StorageError as exc:  # LevelDB could not read its own files: a copy says where
            report.update(first_bad_height=None, finding=str(exc))
            readable = False
        finally:
            store.close()
    if not readable:
        _check_copy(config, genesis, report)
    report.setdefault("safety_file", _safety_file_summary(config))
    marked = marked_damage(config.data_dir)
    if marked is not None:
        report["found_while_running"] = marked
        report.setdefault("finding", f"the running node found the store damaged: {marked}")
    report.setdefault("first_bad_height", None)
    report.setdefault("height", None)
    report.setdefault("blocks_checked", 0)
    report["ok"] = "finding" not in report
    print(json.dumps(report))
    if not report["ok"]:
        raise VerificationFailed(f"{config.data_dir}: {report['finding']}; {_way_out(config, genesis)}")


def _way_out(config: NodeConfig, genesis: Genesis) -> str:
    if len(genesis.validators) == 1:
        return "restore the data directory from a copy (docs/operations.md section 8)"
    return f"`alliance resync --home {config.home}` rebuilds the store from peers"


def _check_open(config: NodeConfig, genesis: Genesis, chain: ChainStore, state: bool, report: dict[str, Any]) -> None:
    try:
        checked, fault = check_store(chain, genesis, replay=state)
    except ReplayImpossible as exc:
        raise AllianceError(f"{config.data_dir}: --state is impossible here: {exc}; check without --state") from None
    report.update(height=chain.height(), base=chain.base(), blocks_checked=checked)
    if fault is not None:
        report.update(first_bad_height=fault.height, finding=str(fault))
    _check_safety_file(config, chain, report)


def _safety_file_summary(config: NodeConfig) -> Any:
    """The safety file as the report shows it, where the chain could not be read to compare it with."""
    path = safety_path(config.data_dir)
    try:
        safety_file = SafetyFile.load(path)
    except SafetyFileError as exc:
        return str(exc)
    if safety_file is None:
        return f"{path} is missing"
    return {"committed": safety_file.record.committed_floor, "sign_from": safety_file.record.sign_from}


def open_stopped_store(data_dir: Path, must_exist: bool = True) -> LevelDBStore:
    """The store of a node that is not running; AllianceError if it runs, or has none and `must_exist`."""
    if must_exist and not data_dir.is_dir():
        raise AllianceError(f"{data_dir}: no data directory (has this node ever run?)")
    try:
        return LevelDBStore.open(data_dir)
    except StoreLocked:
        raise AllianceError(f"{data_dir} is in use by a running node; stop it first") from None


def _open_stopped(config: NodeConfig, report: dict[str, Any]) -> LevelDBStore | None:
    """The store, or None (with the finding in `report`) when LevelDB finds it damaged; refuses a running node's."""
    try:
        return open_stopped_store(config.data_dir)
    except StorageError as exc:
        report.update(first_bad_height=None, finding=str(exc))
        return None


def _check_copy(config: NodeConfig, genesis: Genesis, report: dict[str, Any]) -> None:
    """Where a store LevelDB refuses has its first hole: read a copy without LevelDB's checks.

    LevelDB then skips what it cannot read and rewrites the copy, never the store.
    """
    with tempfile.TemporaryDirectory(prefix="alliance-check-") as tmp:
        copy = Path(tmp) / "data"
        try:
            shutil.copytree(config.data_dir, copy, ignore=shutil.ignore_patterns("LOCK"))
            store = LevelDBStore.open(copy, paranoid=False)
        except (OSError, StorageError) as exc:
            report["copy_read"] = f"could not read a copy either: {exc}"
            return
        try:
            chain = ChainStore(store)
            checked, fault = check_store(chain, genesis, replay=False)
        except StorageError as exc:  # the damage holds the height pointer itself
            report["copy_read"] = f"a copy read without LevelDB's checks cannot be read either: {exc}"
            return
        finally:
            store.close()
    report.update(height=chain.height(), blocks_checked=checked)
    if fault is not None:
        report.update(first_bad_height=fault.height)
        report["finding"] += f"; read without LevelDB's checks, {fault}"


def _check_safety_file(config: NodeConfig, chain: ChainStore, report: dict[str, Any]) -> None:
    path, height = safety_path(config.data_dir), chain.height()
    try:
        safety_file = SafetyFile.load(path)
    except SafetyFileError as exc:
        report["safety_file"] = str(exc)
        report.setdefault("finding", str(exc))
        return
    if safety_file is None:
        report["safety_file"] = f"{path} is missing"
        if chain.load_meta(SAFETY_FILE_META) is not None:  # it existed: a node would refuse to start
            report.setdefault("finding", f"the safety file {path} is missing")
        return
    floor = safety_file.record.committed_floor
    report["safety_file"] = _safety_file_summary(config)
    if height < floor:
        report.setdefault("first_bad_height", height + 1)
        report.setdefault("finding", f"the store holds {height} blocks but {floor} were committed "
                                     f"(says {path}): committed blocks were lost")


def cmd_resync(args: argparse.Namespace) -> None:
    config = load_config(Path(args.home))
    if len(load_genesis(config.genesis_file).validators) == 1:
        raise AllianceError("a chain of one validator has no peers to rebuild from: restore the data directory "
                            "from a copy (docs/operations.md section 8)")
    data_dir, path = config.data_dir, safety_path(config.data_dir)
    if data_dir.is_dir():
        store = _open_stopped(config, {})  # refuses a running node's
        if store is not None:
            store.close()
    try:
        old = SafetyFile.load(path)
    except SafetyFileError:
        old = None  # damaged: the floor is learnt from the peers
    record = resync_record(old)
    aside = data_dir.with_name(f"{data_dir.name}.damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    if path.exists():
        _copy(path, aside.with_name(aside.name + ".safety"))
    # The safety file first: should this stop half-way, the old store is still there, now signing later only.
    SafetyFile.create(path, record)
    moved = "no data directory to move aside"
    if data_dir.is_dir():
        data_dir.rename(aside)
        moved = f"moved the damaged data directory to {aside} (kept)"
    marker = damage_marker(data_dir)
    if marker.exists():  # it marked the store just moved aside: the new one starts unmarked
        marker.rename(aside.with_name(aside.name + ".corrupt"))
    signs = ("once its peers have told their heights, above the highest" if record.sign_from == UNKNOWN
             else f"from height {record.sign_from}")
    print(f"{moved}; `alliance run --home {config.home}` now rebuilds the chain from the peers, and the "
          f"validator signs only {signs}")


def _copy(source: Path, target: Path) -> None:
    try:
        target.write_bytes(source.read_bytes())
    except OSError as exc:
        raise AllianceError(f"cannot keep a copy of {source} as {target}: {exc.strerror}") from None
