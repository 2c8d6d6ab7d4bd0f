"""`alliance archive export` writes a stopped node's blocks to segment files; `alliance archive verify` checks
an archive offline against the genesis (node/disk/archive.py, archive_check.py; docs/operations.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from node.chain.genesis import load_genesis
from node.cli.check import open_stopped_store
from node.config import load_config
from node.disk.archive import SEGMENT_BLOCKS, ArchiveError, export, load_manifest
from node.disk.archive_check import verify_archive
from node.errors import AllianceError, VerificationFailed
from storage.chain import ChainStore


def add_parser(sub: Any, command: Any) -> None:
    archive: argparse.ArgumentParser = command(sub, "archive", lambda a: archive.print_help(),
                                               "export blocks to segment files; check them",
                      "An archive keeps blocks that a pruning node drops: hash-linked segment files and a manifest "
                      "of their SHA-256 (docs/operations.md, \"Pruning and archive\").")
    commands = archive.add_subparsers(title="archive commands", metavar="COMMAND", required=True)
    p = command(commands, "export", cmd_export, "write a stopped node's blocks to an archive directory",
                "Appends blocks of the node in --home to the archive in --out (created if missing): by default "
                "from the archive's next height, or the node's lowest block, to its tip. Prints one JSON object.")
    p.add_argument("--home", required=True, help="node directory holding node.toml (the node must be stopped)")
    p.add_argument("--out", required=True, metavar="ARCHIVE_DIR", help="archive directory")
    p.add_argument("--from", dest="first", type=int, metavar="H", help="first height to export")
    p.add_argument("--to", dest="last", type=int, metavar="H", help="last height to export (default: the tip)")
    p.add_argument("--segment-blocks", type=int, default=SEGMENT_BLOCKS,
                   help="blocks per segment file (default: %(default)s)")
    p = command(commands, "verify", cmd_verify, "check an archive offline against the genesis; exit 6 if it fails",
                "Checks every segment's SHA-256 and header, every block's link to the one before (the first to the "
                "genesis), its certificate against the validators of its height, its transaction root, and replays "
                "every block from the genesis against its state root. The archive must start at block 1. Prints "
                "one JSON object naming the first bad height.")
    p.add_argument("archive_dir", metavar="ARCHIVE_DIR")
    p.add_argument("--genesis", required=True, metavar="FILE", help="genesis file of the chain")


def cmd_export(args: argparse.Namespace) -> None:
    if args.segment_blocks < 1:
        raise AllianceError("--segment-blocks must be at least 1")
    config = load_config(Path(args.home))
    genesis = load_genesis(config.genesis_file)
    kv = open_stopped_store(config.data_dir)
    try:
        first, last = export(ChainStore(kv), genesis, Path(args.out), args.first, args.last, args.segment_blocks)
    except OSError as exc:
        raise AllianceError(f"cannot write the archive {args.out}: {exc}") from None
    finally:
        kv.close()
    manifest = load_manifest(Path(args.out))
    print(json.dumps({"archive": args.out, "first": first, "last": last,
                      "segments": 0 if manifest is None else len(manifest.segments)}))


def cmd_verify(args: argparse.Namespace) -> None:
    genesis = load_genesis(Path(args.genesis))
    try:
        verified, fault = verify_archive(Path(args.archive_dir), genesis)
    except ArchiveError as exc:
        raise VerificationFailed(str(exc)) from None
    report = {"archive": args.archive_dir, "blocks_verified": verified, "ok": fault is None,
              "first_bad_height": None if fault is None else fault.height,
              "finding": None if fault is None else str(fault)}
    print(json.dumps(report))
    if fault is not None:
        raise VerificationFailed(f"{args.archive_dir}: {fault}")
