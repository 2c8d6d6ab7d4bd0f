"""`alliance gov`: membership changes through RPC, signed with an admin's key.

`propose` and `approve` wait for their transaction to commit; a gov transaction the chain refused
(a non-zero receipt code) ends with the refused exit status and the receipt's log. `propose` prints
the proposal id, `approve` the proposal's status; with --wait, propose prints the status too, and
if the proposal passed both wait for the block at its activation height and print "active".
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from node.chain.membership import CHANGE_FIELDS
from node.cli.client_cmds import COMMIT_MARGIN_S, COMMIT_WAIT_MAX_S, TxFailed, UsageError, add_client_options, connect
from node.client import Client, InvalidInput, TxInfo
from node.client.core import propose_args
from node.errors import AllianceError, ExitCode
from node.keys import load_key

POLL_S = 0.2  # how often --wait asks the node for its height
OPTION_FIELDS = ("name", "pubkey", "address", "old", "new", "threshold")  # the change fields, one option each


class WaitTimedOut(AllianceError):
    """--wait gave up before the activation height was committed."""

    exit_code = ExitCode.UNREACHABLE


def change_of(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """The `change` map of `kind` from the options given; UsageError for a missing, an extra or a malformed one."""
    wanted = CHANGE_FIELDS[kind] - {"kind"}
    given = {name for name in OPTION_FIELDS if options.get(name) is not None}
    missing, extra = sorted(wanted - given), sorted(given - wanted)
    if missing or extra:
        takes = " ".join(f"--{name}" for name in sorted(wanted))
        problem = f"needs --{missing[0]}" if missing else f"takes no --{extra[0]}"
        raise UsageError(f"{kind} {problem} (it takes {takes})")
    try:  # the chain's own checks, before anything is signed
        return dict(propose_args({"kind": kind, **{name: options[name] for name in wanted}})["change"])
    except InvalidInput as exc:
        raise UsageError(str(exc)) from None


def _client(args: argparse.Namespace) -> Client:
    return connect(args, args.timeout + COMMIT_MARGIN_S, load_key(Path(args.key)))


def _committed(info: TxInfo, op: str) -> TxInfo:
    if info.code != 0:
        raise TxFailed(f"gov {op} committed with code {info.code}: {info.log}")
    return info


def _print_status(client: Client, proposal: str, args: argparse.Namespace, started: float) -> None:
    """Prints the proposal's status; with --wait and a passed proposal, once more when it is in force."""
    found = client.get_proposal(proposal)
    if not args.wait or found.activation is None:
        print(found.status, flush=True)
        return
    print("passed", flush=True)  # even if it is in force already: the blocks to its activation come at once
    deadline = started + args.timeout
    while client.get_status().height < found.activation:
        if time.monotonic() > deadline:
            raise WaitTimedOut(f"proposal {proposal} passed, but block {found.activation}, from which it is in "
                               f"force, was not committed within {args.timeout:g} s")
        time.sleep(POLL_S)
    print(client.get_proposal(proposal).status)


def cmd_propose(args: argparse.Namespace) -> None:
    change = change_of(args.kind, vars(args))
    started = time.monotonic()
    with _client(args) as client:
        info = client.propose(change, args.expires, wait=True, timeout_s=min(args.timeout, COMMIT_WAIT_MAX_S))
        print(_committed(info, "propose").tx_hash, flush=True)
        if args.wait:
            _print_status(client, info.tx_hash, args, started)


def cmd_approve(args: argparse.Namespace) -> None:
    started = time.monotonic()
    with _client(args) as client:
        info = client.approve(args.proposal, wait=True, timeout_s=min(args.timeout, COMMIT_WAIT_MAX_S))
        _committed(info, "approve")
        _print_status(client, args.proposal, args, started)


def cmd_members(args: argparse.Namespace) -> None:
    params = {} if args.height is None else {"height": args.height}
    with connect(args, args.timeout) as client:
        print(json.dumps(client.call("get_members", **params), indent=2))


def cmd_show(args: argparse.Namespace) -> None:
    with connect(args, args.timeout) as client:
        print(json.dumps(client.call("get_proposal", proposal=args.proposal), indent=2))


def _height(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a height (an integer >= 0)")
    return value


def _proposal_id(text: str) -> str:
    try:
        ok = len(text) == 64 and len(bytes.fromhex(text)) == 32
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"{text!r:.80} is not a proposal id (64 hex characters)")
    return text.lower()


def _signing_options(parser: argparse.ArgumentParser) -> None:
    add_client_options(parser)
    parser.add_argument("--key", default=os.environ.get("ALLIANCE_KEY", "admin.key"),
                        help="an admin's private key file (default: $ALLIANCE_KEY or ./admin.key)")
    parser.add_argument("--wait", action="store_true",
                        help="print the proposal's status once committed and, if it passed, wait (up to --timeout) "
                        "for the block from which it is in force, then print its status again (active)")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("gov", help="governance: propose and approve membership changes, show members",
                            description=__doc__)
    commands = parser.add_subparsers(title="gov commands", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "propose", help="propose a membership change; prints the proposal id",
        description="Proposes a change of KIND, approved by the proposer at once; prints the proposal id (the "
        "tx_hash of the propose). The fields each KIND takes: add_validator, add_observer: --name --pubkey "
        "--address; add_client, add_admin: --name --pubkey; remove_*: --pubkey; replace_key: --old --new; "
        "set_address: --pubkey --address; set_admin_threshold: --threshold.")
    p.add_argument("kind", metavar="KIND", choices=sorted(CHANGE_FIELDS), help=", ".join(sorted(CHANGE_FIELDS)))
    p.add_argument("--name", help="the member's name")
    p.add_argument("--pubkey", help="the member's public key, 64 hex characters")
    p.add_argument("--address", help="HOST:PORT of a validator's or observer's peer port")
    p.add_argument("--old", help="replace_key: the key replaced, 64 hex characters")
    p.add_argument("--new", help="replace_key: the new key, 64 hex characters")
    p.add_argument("--threshold", type=int, help="set_admin_threshold: approvals needed to pass a proposal")
    p.add_argument("--expires", type=_height, metavar="H", help="the last height at which it may be approved")
    _signing_options(p)
    p.set_defaults(handler=cmd_propose)

    p = commands.add_parser("approve", help="approve a proposal; prints its status",
                            description="Adds this admin's approval to PROPOSAL; prints the proposal's status "
                            "(open or passed; with --wait, once passed, then active when in force).")
    p.add_argument("proposal", metavar="PROPOSAL", type=_proposal_id, help="the proposal id, 64 hex characters")
    _signing_options(p)
    p.set_defaults(handler=cmd_approve)

    p = commands.add_parser("members", help="print the membership in force and the pending proposals",
                            description="Prints get_members: validators, observers, clients, admins, "
                            "admin_threshold, and the proposals open or passed but not in force yet.")
    p.add_argument("--height", type=_height, metavar="H", help="the membership at this height (default: the latest)")
    add_client_options(p)
    p.set_defaults(handler=cmd_members)

    p = commands.add_parser("show", help="print a proposal: its change, approvals and status",
                            description="Prints get_proposal: proposer, change, approvals, status (open, passed, "
                            "active, expired), height and activation height.")
    p.add_argument("proposal", metavar="PROPOSAL", type=_proposal_id, help="the proposal id, 64 hex characters")
    add_client_options(p)
    p.set_defaults(handler=cmd_show)
