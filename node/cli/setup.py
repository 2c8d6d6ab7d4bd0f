"""`alliance keygen` and `alliance testnet`: keys and ready-made local consortia."""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path

import tomli_w
from nacl.signing import SigningKey

from node.chain.genesis import Genesis, write_genesis
from node.chain.membership import Member
from node.errors import AllianceError
from node.keys import pubkey_hex, write_key

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


def write_testnet(out: Path, nodes: int, chain_id: str, base_port: int) -> Genesis:
    if nodes < 1:
        raise AllianceError("--nodes must be at least 1")
    if not 0 < base_port <= 65535 - 10 * nodes:
        raise AllianceError(f"--base-port {base_port} leaves no room for {nodes} nodes")
    if (out / "genesis.toml").exists():
        raise AllianceError(f"{out} already holds a testnet (genesis.toml exists); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    keys = [SigningKey.generate() for _ in range(nodes)]
    client = SigningKey.generate()
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=time.time_ns() // 1_000_000,
        validators=tuple(
            Member(f"node{i}", bytes(k.verify_key), f"127.0.0.1:{node_ports(base_port, i)[1]}")
            for i, k in enumerate(keys)
        ),
        clients=(Member("client", bytes(client.verify_key)),),
        admins=(),
    )
    write_genesis(out / "genesis.toml", genesis)
    write_key(out / "client.key", client)
    for i, key in enumerate(keys):
        _write_node_home(out / f"node{i}", i, key, genesis, base_port)
    return genesis


def _write_node_home(home: Path, index: int, key: SigningKey, genesis: Genesis, base_port: int) -> None:
    home.mkdir(exist_ok=True)
    write_key(home / "node.key", key)
    write_genesis(home / "genesis.toml", genesis)
    rpc, p2p, metrics = node_ports(base_port, index)
    config = {
        "name": f"node{index}",
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
    genesis = write_testnet(out, args.nodes, args.chain_id, args.base_port)
    print(f"wrote a {args.nodes}-node testnet for chain {genesis.chain_id!r} to {out}")
    print(f"  genesis hash {genesis.hash().hex()}")
    for i in range(args.nodes):
        rpc, p2p, metrics = node_ports(args.base_port, i)
        print(f"  node{i}: alliance run --home {out / f'node{i}'}   (rpc {rpc}, peers {p2p}, metrics {metrics})")
    print(f"  client key: {out / 'client.key'}")
