"""`alliance snapshot restore`: a stopped node's empty store restored from a snapshot directory, offline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from node.chain.genesis import load_genesis
from node.chain.ledger import Ledger
from node.chain.snapshot import SnapshotInvalid
from node.cli.check import open_stopped_store
from node.config import load_config
from node.disk.safety_file import SafetyFile, SafetyRecord, safety_path
from node.disk.snapshot_files import restore_directory, restored_record
from node.errors import AllianceError
from storage.chain import ChainStore


def add_parser(sub: Any, command: Any) -> None:
    group = sub.add_parser("snapshot", help="restore a stopped node from a snapshot",
                           description="State snapshots (docs/operations.md, \"State sync and snapshots\").")
    commands = group.add_subparsers(title="commands", metavar="COMMAND", required=True)
    p = command(commands, "restore", cmd_restore, "restore a stopped node's empty store from a snapshot directory",
                "Checks the snapshot in DIR (a DATA.snapshots/<height>/ directory) against the genesis, writes it "
                "into the node's empty data directory and raises its safety file's sign floor above the height; "
                "the node then catches up by blocks from the height above.")
    p.add_argument("--home", required=True, help="node directory holding node.toml")
    p.add_argument("--from", dest="source", required=True, metavar="DIR", help="the snapshot directory")


def cmd_restore(args: argparse.Namespace) -> None:
    config = load_config(Path(args.home))
    genesis = load_genesis(config.genesis_file)
    source = Path(args.source)
    if not (source / "manifest").is_file():
        raise AllianceError(f"{source} is not a snapshot directory (it has no manifest)")
    kv = open_stopped_store(config.data_dir, must_exist=False)
    try:
        store = ChainStore(kv)
        if store.restoring():
            store.abandon_restore()
        if store.height() > 0:
            raise AllianceError(f"{config.data_dir} holds {store.height()} blocks: a snapshot is restored into an "
                                f"empty store only (`alliance resync --home {config.home}` moves it aside)")
        try:
            height = restore_directory(source, store, genesis)
        except (SnapshotInvalid, OSError) as exc:
            raise AllianceError(f"{source}: {exc}") from None
        Ledger(store, genesis)  # the restored tree's root is checked against the header's
    finally:
        kv.close()
    path = safety_path(config.data_dir)
    safety_file = SafetyFile.load(path)
    record = restored_record(SafetyRecord() if safety_file is None else safety_file.record, height)
    if safety_file is None:
        safety_file = SafetyFile.create(path, record)
    else:
        safety_file.write(record)
    safety_file.close()
    print(f"restored the state at height {height} into {config.data_dir}; `alliance run --home {config.home}` "
          f"catches up from {height + 1} and the validator signs only from {record.sign_from}")
