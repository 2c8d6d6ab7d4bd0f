"""`alliance history KEY` and `alliance lookup FILE --history`: a record's committed transactions,
newest first (get_history)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from node.client import Client

PAGES_MAX = 10_000  # --all stops here: a million entries at the largest page


def add_history_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, help="entries per page, 1..1000 (default: the node's, 100)")
    parser.add_argument("--before-height", type=int, metavar="H", help="only transactions below height H "
                        "(the next_before_height of the page before)")
    parser.add_argument("--all", action="store_true", help="follow every page to the first transaction")


def print_history(client: Client, family: str, key: str, args: argparse.Namespace) -> None:
    """Prints {family, key, entries, next_before_height}: one page, or every page with --all."""
    entries: list[dict[str, Any]] = []
    before = args.before_height
    for _ in range(PAGES_MAX if args.all else 1):
        page = client.get_history(family, key, limit=args.limit, before_height=before)
        entries += [_entry(e) for e in page.entries]
        before = page.next_before_height
        if before is None:
            break
    print(json.dumps({"family": family, "key": key, "entries": entries, "next_before_height": before}, indent=2))


def _entry(e: Any) -> dict[str, Any]:
    return {"height": e.height, "index": e.index, "tx_hash": e.tx_hash, "sender": e.sender, "op": e.op,
            "code": e.code}
