"""`alliance keygen`, `alliance testnet` and `alliance init`: keys, ready-made local consortia, and the home
of a node that joins a running chain."""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import time
from pathlib import Path

import tomli_w
from nacl.signing import SigningKey

from node.chain.genesis import Genesis, load_genesis, write_genesis
from node.chain.membership import Member, default_threshold
from node.disk.safety_file import UNKNOWN, SafetyFile, SafetyRecord, safety_path
from node.errors import AllianceError
from node.keys import load_key, pubkey_hex, write_key

DEFAULT_BASE_PORT = 26600
DEFAULT_CHAIN_ID = "alliance-local"


def node_ports(base_port: int, index: int) -> tuple[int, int, int]:
    """RPC, peer and metrics ports of node `index`."""
    base = base_port + 10 * index
    return base, base + 1, base + 2


def check_ports_free(base_port: int, nodes: int) -> None:
    """Refuses ports of a local testnet that something else holds, before any node starts on them."""
    for i in range(nodes):
        for port in node_ports(base_port, i):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    raise AllianceError(f"port {port} on 127.0.0.1 is in use; choose another --base-port") from None


def cmd_keygen(args: argparse.Namespace) -> None:
    key = SigningKey.generate()
    write_key(Path(args.out), key)
    print(pubkey_hex(key))


def write_testnet(out: Path, nodes: int, chain_id: str, base_port: int, admins: int = 1) -> Genesis:
    if nodes < 1:
        raise AllianceError("--nodes must be at least 1")
    if admins < 0:
        raise AllianceError("--admins must not be negative")
    if not 0 < base_port <= 65535 - 10 * nodes:
        raise AllianceError(f"--base-port {base_port} leaves no room for {nodes} nodes")
    if (out / "genesis.toml").exists():
        raise AllianceError(f"{out} already holds a testnet (genesis.toml exists); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    keys = [SigningKey.generate() for _ in range(nodes)]
    client = SigningKey.generate()
    admin_keys = [SigningKey.generate() for _ in range(admins)]
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=time.time_ns() // 1_000_000,
        validators=tuple(
            Member(f"node{i}", bytes(k.verify_key), f"127.0.0.1:{node_ports(base_port, i)[1]}")
            for i, k in enumerate(keys)
        ),
        clients=(Member("client", bytes(client.verify_key)),),
        admins=tuple(Member(f"admin{i}", bytes(k.verify_key)) for i, k in enumerate(admin_keys)),
        admin_threshold=default_threshold(admins) if admins else None,  # stated, so the file shows it
    )
    write_genesis(out / "genesis.toml", genesis)
    write_key(out / "client.key", client)
    for i, key in enumerate(admin_keys):
        write_key(out / f"admin{i}.key", key)
    for i, key in enumerate(keys):
        _write_node_home(out / f"node{i}", i, key, genesis, base_port)
    return genesis


def _write_node_home(home: Path, index: int, key: SigningKey, genesis: Genesis, base_port: int) -> None:
    home.mkdir(exist_ok=True)
    write_key(home / "node.key", key)
    write_genesis(home / "genesis.toml", genesis)
    _write_config(home, f"node{index}", node_ports(base_port, index))


def _write_config(home: Path, name: str, ports: tuple[int, int, int]) -> None:
    rpc, p2p, metrics = ports
    config = {
        "name": name,
        "key_file": "node.key",
        "genesis_file": "genesis.toml",
        "data_dir": "data",
        "log_level": "info",
        "rpc": {"listen": f"127.0.0.1:{rpc}"},
        "p2p": {"listen": f"127.0.0.1:{p2p}"},
        "metrics": {"listen": f"127.0.0.1:{metrics}"},
    }
    (home / "node.toml").write_text(tomli_w.dumps(config))


def cmd_testnet(args: argparse.Namespace) -> None:
    out = Path(args.out)
    genesis = write_testnet(out, args.nodes, args.chain_id, args.base_port, args.admins)
    print(f"wrote a {args.nodes}-node testnet for chain {genesis.chain_id!r} to {out}")
    print(f"  genesis hash {genesis.hash().hex()}")
    for i in range(args.nodes):
        rpc, p2p, metrics = node_ports(args.base_port, i)
        print(f"  node{i}: alliance run --home {out / f'node{i}'}   (rpc {rpc}, peers {p2p}, metrics {metrics})")
    print(f"  client key: {out / 'client.key'}")
    if args.admins:
        keys = f"{out / 'admin0.key'}" + (f" .. {out / f'admin{args.admins - 1}.key'}" if args.admins > 1 else "")
        print(f"  admin keys: {keys} (admin_threshold {genesis.threshold})")


HOME_FILES = ("node.toml", "node.key", "genesis.toml")


def write_node_home(out: Path, genesis_file: Path, key_file: Path | None, base_port: int) -> SigningKey:
    """A node home for a member joining a running chain: its config, a copy of the genesis, its key."""
    if not 0 < base_port <= 65535 - 2:
        raise AllianceError(f"--base-port {base_port} must leave room for 3 ports (1..65533)")
    taken = [name for name in HOME_FILES if (out / name).exists()]
    if taken:
        raise AllianceError(f"{out} is a node home already ({', '.join(taken)} exists); choose another --out")
    genesis = load_genesis(genesis_file)
    key = SigningKey.generate() if key_file is None else load_key(key_file)
    try:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(genesis_file, out / "genesis.toml")
    except OSError as exc:
        raise AllianceError(f"cannot write {out}: {exc.strerror}") from None
    write_key(out / "node.key", key)
    named = [m.name for m in genesis.validators + genesis.observers if m.pubkey == bytes(key.verify_key)]
    name = named[0] if named else out.resolve().name or "node"
    _write_config(out, name, (base_port, base_port + 1, base_port + 2))
    if key_file is not None:
        # A key brought from elsewhere may have signed already: as after a resync, the node signs
        # nothing until its peers have told it their heights (docs/operations.md section 12).
        SafetyFile.create(safety_path(out / "data"), SafetyRecord(committed=0, sign_from=UNKNOWN))
    return key


def cmd_init(args: argparse.Namespace) -> None:
    key = write_node_home(Path(args.out), Path(args.genesis), args.key and Path(args.key), args.base_port)
    if args.key:
        print(f"{args.out}: the node signs nothing until its peers have told it their heights; never run two "
              "nodes with one key", file=sys.stderr)
    print(pubkey_hex(key))
