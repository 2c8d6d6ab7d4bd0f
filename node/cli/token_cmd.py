"""`alliance token new`: a bearer token for the RPC listener, its hash appended to a tokens file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from node.api.access import ROLES, add_token


def _roles(text: str) -> list[str]:
    roles = [role.strip() for role in text.split(",") if role.strip()]
    wrong = [role for role in roles if role not in ROLES]
    if not roles or wrong:
        raise argparse.ArgumentTypeError(f"{text!r}: roles are a comma-separated list of {', '.join(ROLES)}")
    return roles


def add_parser(sub: Any, command: Any) -> None:
    group = sub.add_parser("token", help="bearer tokens of the RPC listener",
                           description="Bearer tokens (docs/configuration.md, \"Access control\").")
    commands = group.add_subparsers(title="commands", metavar="COMMAND", required=True)
    p = command(commands, "new", cmd_new, "make a token, append its SHA-256 to a tokens file, print the token once",
                "Generates a random token, appends its name, SHA-256 and roles to FILE (created with mode 0600; "
                "name it in node.toml [rpc] tokens_file) and prints the token, which is stored nowhere: "
                "restart the node to use it.")
    p.add_argument("--name", required=True, help="who the token is for (unique in the file)")
    p.add_argument("--roles", required=True, type=_roles, help=f"comma-separated, of: {', '.join(ROLES)}")
    p.add_argument("--file", default="tokens.toml", help="the tokens file (default: ./%(default)s)")


def cmd_new(args: argparse.Namespace) -> None:
    token = add_token(Path(args.file), args.name, args.roles)
    print(f"token {args.name!r} ({', '.join(args.roles)}) added to {args.file}; it is shown only now:",
          file=sys.stderr)
    print(token)
