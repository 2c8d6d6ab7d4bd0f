"""Client commands: status, tx put/get, notarize, lookup."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from node.client import Client
from node.errors import AllianceError
from node.keys import load_key


def add_client_options(parser: argparse.ArgumentParser, signing: bool = False) -> None:
    parser.add_argument("--rpc", default=os.environ.get("ALLIANCE_RPC", "http://127.0.0.1:26600"),
                        help="node RPC URL (default: $ALLIANCE_RPC or http://127.0.0.1:26600)")
    if signing:
        parser.add_argument("--key", default=os.environ.get("ALLIANCE_KEY", "client.key"),
                            help="client private key file (default: $ALLIANCE_KEY or ./client.key)")
        parser.add_argument("--no-wait", action="store_true", help="return once accepted, without waiting for commit")


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _submit(args: argparse.Namespace, family: str, op: str, params: dict[str, Any]) -> dict[str, Any]:
    key = load_key(Path(args.key))
    result = Client(args.rpc).submit(key, family, op, params, wait=not args.no_wait)
    _print(result)
    if result.get("code") not in (None, 0):
        raise AllianceError(f"transaction committed with code {result['code']}: {result['log']}")
    return result


def cmd_status(args: argparse.Namespace) -> None:
    _print(Client(args.rpc).status())


def cmd_tx_put(args: argparse.Namespace) -> None:
    _submit(args, "kv", "put", {"key": args.key_name, "value": args.value.encode()})


def cmd_tx_delete(args: argparse.Namespace) -> None:
    _submit(args, "kv", "delete", {"key": args.key_name})


def cmd_tx_get(args: argparse.Namespace) -> None:
    entry = Client(args.rpc).query("kv", args.key_name)
    if entry is None:
        raise AllianceError(f"no such key {args.key_name!r}")
    value = bytes.fromhex(entry["value"])
    try:
        entry["value_text"] = value.decode()
    except UnicodeDecodeError:
        pass
    _print(entry)


def file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise AllianceError(f"cannot read {path}: {exc.strerror}") from None
    return digest.digest()


def cmd_notarize(args: argparse.Namespace) -> None:
    digest = file_digest(Path(args.file))
    params: dict[str, Any] = {"digest": digest}
    if args.meta:
        params["meta"] = args.meta
    _submit(args, "notary", "record", params)


def cmd_lookup(args: argparse.Namespace) -> None:
    digest = file_digest(Path(args.file))
    record = Client(args.rpc).query("notary", digest.hex())
    if record is None:
        raise AllianceError(f"{args.file} (sha256 {digest.hex()}) is not recorded")
    _print({"digest": digest.hex(), **record})
