"""`alliance genesis`: assemble a consortium's genesis from what each organisation sends in.

Every member generates its keys itself (`alliance keygen`) and sends only
public keys, names and peer addresses; one member assembles the file, and
every member checks the copy it receives with `alliance genesis show`,
comparing the printed hash with the others' over a separate channel.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from node.chain.genesis import Genesis, check_genesis, load_genesis, write_genesis
from node.chain.membership import Member
from node.config import parse_address
from node.errors import AllianceError
from node.keys import parse_pubkey


def cmd_new(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if out.exists():
        raise AllianceError(f"{out} already exists; refusing to overwrite a genesis")
    if not args.chain_id:
        raise AllianceError("--chain-id must not be empty")
    time_ms = args.genesis_time_ms if args.genesis_time_ms is not None else time.time_ns() // 1_000_000
    write_genesis(out, Genesis(args.chain_id, time_ms, (), (), ()))
    print(f"wrote {out}; next: alliance genesis add-validator {out} --name NAME --pubkey HEX --address HOST:PORT")


def _member(args: argparse.Namespace, address: str = "") -> Member:
    if not args.name:
        raise AllianceError("--name must not be empty")
    return Member(args.name, parse_pubkey(args.pubkey, "--pubkey"), address)


def _save(path: Path, genesis: Genesis) -> None:
    check_genesis(genesis, complete=False)  # duplicates, addresses: refused before the file changes
    write_genesis(path, genesis)


def _add_node(args: argparse.Namespace, role: str) -> None:
    path = Path(args.genesis)
    genesis = load_genesis(path, complete=False)
    parse_address(args.address, "--address")
    member = _member(args, args.address)
    members = getattr(genesis, role) + (member,)
    _save(path, dataclasses.replace(genesis, **{role: members}))
    print(f"added {role[:-1]} {member.name} ({len(members)} in all)")


def cmd_add_validator(args: argparse.Namespace) -> None:
    _add_node(args, "validators")


def cmd_add_observer(args: argparse.Namespace) -> None:
    _add_node(args, "observers")


def cmd_add_client(args: argparse.Namespace) -> None:
    path = Path(args.genesis)
    genesis = load_genesis(path, complete=False)
    member = _member(args)
    if args.admin:
        genesis = dataclasses.replace(genesis, admins=genesis.admins + (member,))
    else:
        genesis = dataclasses.replace(genesis, clients=genesis.clients + (member,))
    _save(path, genesis)
    print(f"added {'admin' if args.admin else 'client'} {member.name}")


def cmd_add_admin(args: argparse.Namespace) -> None:
    args.admin = True
    cmd_add_client(args)


def cmd_set_threshold(args: argparse.Namespace) -> None:
    path = Path(args.genesis)
    genesis = load_genesis(path, complete=False)
    if not 1 <= args.threshold <= len(genesis.admins):
        raise AllianceError(f"admin_threshold must be 1 .. {len(genesis.admins)} (the admins so far); "
                            "add the admins first")
    _save(path, dataclasses.replace(genesis, admin_threshold=args.threshold))
    print(f"admin_threshold {args.threshold} of {len(genesis.admins)} admins")


def cmd_show(args: argparse.Namespace) -> None:
    genesis = load_genesis(Path(args.genesis))
    n = len(genesis.validators)
    print(f"chain_id      {genesis.chain_id}")
    print(f"genesis hash  {genesis.hash().hex()}")
    print(f"validators    {n} (tolerates {(n - 1) // 3} faulty)")
    for m in genesis.validators:
        print(f"  {m.name:<16} {m.pubkey.hex()}  {m.address}")
    for m in genesis.observers:
        print(f"  observer {m.name:<7} {m.pubkey.hex()}  {m.address}")
    for kind, members in (("client", genesis.clients), ("admin", genesis.admins)):
        for m in members:
            print(f"  {kind:<6} {m.name:<9} {m.pubkey.hex()}")
    print(f"admin_threshold {genesis.threshold} of {len(genesis.admins)} admins")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "genesis", help="assemble a genesis from members' public keys, names and addresses",
        description=__doc__,
    )
    commands = parser.add_subparsers(title="genesis commands", metavar="COMMAND", required=True)

    p = commands.add_parser("new", help="start a genesis file for a new chain")
    p.add_argument("--chain-id", required=True, help="the chain's id")
    p.add_argument("--out", default="genesis.toml", help="file to create (default: %(default)s)")
    p.add_argument("--genesis-time-ms", type=int, help="milliseconds since the Unix epoch (default: now)")
    p.set_defaults(handler=cmd_new)

    p = commands.add_parser("add-validator", help="add a member's validator node")
    p.add_argument("genesis", metavar="FILE")
    p.add_argument("--name", required=True, help="the node's name, e.g. org1-node0")
    p.add_argument("--pubkey", required=True, help="its public key, 64 hex characters (from alliance keygen)")
    p.add_argument("--address", required=True, help="HOST:PORT where other members reach its peer port")
    p.set_defaults(handler=cmd_add_validator)

    p = commands.add_parser("add-observer", help="add a member's observer node (follows the chain, never votes)")
    p.add_argument("genesis", metavar="FILE")
    p.add_argument("--name", required=True, help="the node's name, e.g. org5-node0")
    p.add_argument("--pubkey", required=True, help="its public key, 64 hex characters (from alliance keygen)")
    p.add_argument("--address", required=True, help="HOST:PORT where other members reach its peer port")
    p.set_defaults(handler=cmd_add_observer)

    p = commands.add_parser("add-client", help="authorise a client (or, with --admin, an admin) to submit")
    p.add_argument("genesis", metavar="FILE")
    p.add_argument("--name", required=True)
    p.add_argument("--pubkey", required=True, help="64 hex characters")
    p.add_argument("--admin", action="store_true", help="add as an admin")
    p.set_defaults(handler=cmd_add_client)

    p = commands.add_parser("add-admin", help="add an admin: it may submit, and propose and approve gov changes")
    p.add_argument("genesis", metavar="FILE")
    p.add_argument("--name", required=True)
    p.add_argument("--pubkey", required=True, help="64 hex characters")
    p.set_defaults(handler=cmd_add_admin)

    p = commands.add_parser("set-threshold", help="how many admins must approve a gov change "
                            "(default: a majority of the admins)")
    p.add_argument("genesis", metavar="FILE")
    p.add_argument("--threshold", type=int, required=True, help="1 .. the number of admins")
    p.set_defaults(handler=cmd_set_threshold)

    p = commands.add_parser("show", help="check a complete genesis and print its hash for members to compare")
    p.add_argument("genesis", metavar="FILE")
    p.set_defaults(handler=cmd_show)
