"""`alliance genesis`: four organisations' public keys assembled into one genesis that nodes run."""

from __future__ import annotations

import re
from pathlib import Path

import tomli_w

from node.chain.genesis import load_genesis
from tests.e2e.nodeproc import NodeProcess, alliance, free_base_port, wait_connected


def _assemble(tmp: Path, base: int) -> tuple[Path, list[Path]]:
    genesis = tmp / "genesis.toml"
    alliance("genesis", "new", "--chain-id", "acme-invoices", "--out", str(genesis))
    keys = []
    for i in range(4):
        key = tmp / f"org{i}.key"
        pubkey = alliance("keygen", "--out", str(key)).stdout.strip()  # stays with its organisation
        alliance("genesis", "add-validator", str(genesis), "--name", f"org{i}", "--pubkey", pubkey,
                 "--address", f"127.0.0.1:{base + 10 * i + 1}")
        keys.append(key)
    client = alliance("keygen", "--out", str(tmp / "app.key")).stdout.strip()
    alliance("genesis", "add-client", str(genesis), "--name", "invoicing-app", "--pubkey", client)
    return genesis, keys


def test_assembled_genesis_is_checked_and_hashed(tmp_path: Path) -> None:
    genesis, _ = _assemble(tmp_path, 27000)
    shown = alliance("genesis", "show", str(genesis)).stdout
    assert re.search(r"genesis hash  ([0-9a-f]{64})", shown).group(1) == load_genesis(genesis).hash().hex()  # type: ignore[union-attr]
    assert "validators    4 (tolerates 1 faulty)" in shown
    pubkey = load_genesis(genesis).validators[0].pubkey.hex()
    again = alliance("genesis", "add-validator", str(genesis), "--name", "org9", "--pubkey", pubkey,
                     "--address", "127.0.0.1:1", check=False)
    assert again.returncode == 1 and "listed twice" in again.stderr and "Traceback" not in again.stderr
    bad_key = alliance("genesis", "add-validator", str(genesis), "--name", "x", "--pubkey", "ab",
                       "--address", "127.0.0.1:1", check=False)
    assert bad_key.returncode == 1 and "64 hex" in bad_key.stderr
    bad_address = alliance("genesis", "add-validator", str(genesis), "--name", "x", "--pubkey", "ab" * 32,
                           "--address", "nowhere", check=False)
    assert bad_address.returncode == 1 and "host:port" in bad_address.stderr
    assert alliance("genesis", "show", str(genesis)).stdout == shown  # refusals left the file alone


def test_observers_admins_and_threshold_are_assembled(tmp_path: Path) -> None:
    genesis, _ = _assemble(tmp_path, 27100)
    observer = alliance("keygen", "--out", str(tmp_path / "obs.key")).stdout.strip()
    alliance("genesis", "add-observer", str(genesis), "--name", "org5", "--pubkey", observer,
             "--address", "127.0.0.1:27151")
    admins = [alliance("keygen", "--out", str(tmp_path / f"admin{i}.key")).stdout.strip() for i in range(3)]
    for i, admin in enumerate(admins):
        alliance("genesis", "add-admin", str(genesis), "--name", f"admin{i}", "--pubkey", admin)
    assert "admin_threshold 2 of 3 admins" in alliance("genesis", "show", str(genesis)).stdout  # a majority
    too_high = alliance("genesis", "set-threshold", str(genesis), "--threshold", "4", check=False)
    assert too_high.returncode == 1 and "admin_threshold" in too_high.stderr and "Traceback" not in too_high.stderr
    alliance("genesis", "set-threshold", str(genesis), "--threshold", "3")
    loaded = load_genesis(genesis)
    assert [m.pubkey.hex() for m in loaded.observers] == [observer]
    assert [m.pubkey.hex() for m in loaded.admins] == admins and loaded.threshold == 3
    as_observer_too = alliance("genesis", "add-observer", str(genesis), "--name", "dup", "--pubkey",
                               loaded.validators[0].pubkey.hex(), "--address", "127.0.0.1:1", check=False)
    assert as_observer_too.returncode == 1 and "Traceback" not in as_observer_too.stderr


def test_incomplete_genesis_is_not_shown_as_valid(tmp_path: Path) -> None:
    genesis = tmp_path / "g.toml"
    alliance("genesis", "new", "--chain-id", "c", "--out", str(genesis))
    result = alliance("genesis", "show", str(genesis), check=False)
    assert result.returncode == 1 and "at least one validator" in result.stderr
    assert alliance("genesis", "new", "--chain-id", "c", "--out", str(genesis), check=False).returncode == 1


def test_nodes_run_from_an_assembled_genesis(tmp_path: Path) -> None:
    base = free_base_port(50)
    genesis, keys = _assemble(tmp_path, base)
    nodes = []
    for i, key in enumerate(keys):
        home = tmp_path / f"org{i}"
        home.mkdir()
        key.rename(home / "node.key")
        (home / "genesis.toml").write_bytes(genesis.read_bytes())
        config = {"name": f"org{i}", "rpc": {"listen": f"127.0.0.1:{base + 10 * i}"},
                  "p2p": {"listen": f"127.0.0.1:{base + 10 * i + 1}"},
                  "metrics": {"listen": f"127.0.0.1:{base + 10 * i + 2}"}}
        (home / "node.toml").write_text(tomli_w.dumps(config))
        nodes.append(NodeProcess(home, base + 10 * i))
    for node in nodes:
        node.start()
    try:
        wait_connected(nodes)  # the four organisations
        status = nodes[2].client().status()
        assert status["chain_id"] == "acme-invoices" and len(status["validators"]) == 4
    finally:
        for node in nodes:
            assert node.stop() == 0
