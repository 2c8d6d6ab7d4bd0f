"""`alliance consensus`: what a node sees of the round it is deciding (consensus_state), for a person."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from node.cli.client_cmds import connect
from node.client import BadAnswer

COLUMNS = ("NAME", "CONNECTED", "HEIGHT/VIEW", "LAST PROPOSAL", "LAST PREPARE", "LAST COMMIT")


def cmd_consensus(args: argparse.Namespace) -> None:
    state = connect(args, args.timeout).consensus_state()
    print(json.dumps(state, indent=2) if args.json else render(state, time.time() * 1000))


def render(state: dict[str, Any], now_ms: float) -> str:
    """The answer as a few lines: the round, what it lacks, then one row per validator."""
    try:
        names = {v["pubkey"]: v["name"] or v["pubkey"][:16] for v in state["validators"]}
        leader = state["leader"]
        rows = [COLUMNS] + [_row(v, now_ms) for v in state["validators"]]
        head = (f"height {state['height']}, view {state['view']}, leader "
                f"{names.get(leader, leader[:16]) if leader else 'unknown'}\n{state['waiting_for']}\n")
        if not all(isinstance(cell, str) for row in rows for cell in row):
            raise TypeError("a name that is not a string")
    except (KeyError, TypeError) as exc:
        raise BadAnswer(f"consensus_state: not the answer the protocol specifies ({exc!r})") from None
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return head + "\n" + "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _row(v: dict[str, Any], now_ms: float) -> tuple[str, ...]:
    at = "-" if v["height"] is None else f"{v['height']}/{v['view']}"
    lasts = tuple(_last(v[f"last_{kind}"], now_ms) for kind in ("proposal", "prepare", "commit"))
    return (v["name"] or v["pubkey"][:16], "yes" if v["connected"] else "NO", at, *lasts)


def _last(seen: dict[str, int] | None, now_ms: float) -> str:
    if seen is None:
        return "-"
    return f"{seen['height']}/{seen['view']} {max(0.0, (now_ms - seen['at']) / 1000):.1f}s ago"
