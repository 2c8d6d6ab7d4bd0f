"""`alliance init`, `alliance testnet --admins` and the change `alliance gov propose` builds, without a node."""

from __future__ import annotations

import re
import stat
import tomllib
from pathlib import Path

import pytest

from node.chain.genesis import load_genesis
from node.disk.safety_file import UNKNOWN, SafetyFile, safety_path
from node.keys import load_key, pubkey_hex
from tests.e2e.nodeproc import alliance, set_mode

GOV_COMMANDS = [["init"], ["gov"], ["gov", "propose"], ["gov", "approve"], ["gov", "members"], ["gov", "show"]]
PUBKEY = "ab" * 32


def _fails(result: object, status: int, pattern: str) -> None:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == status, stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr and re.search(pattern, stderr), stderr


@pytest.mark.parametrize("command", GOV_COMMANDS, ids=" ".join)
def test_every_new_command_has_help(command: list[str]) -> None:
    assert alliance(*command, "--help").stdout.startswith("usage: alliance")


@pytest.fixture
def net(tmp_path: Path) -> Path:
    out = tmp_path / "net"
    alliance("testnet", "--nodes", "2", "--out", str(out), "--base-port", "21000", "--admins", "3")
    return out


def test_testnet_writes_the_admin_keys_and_a_majority_threshold(net: Path) -> None:
    genesis = load_genesis(net / "genesis.toml")
    keys = [load_key(net / f"admin{i}.key") for i in range(3)]
    assert all(stat.S_IMODE((net / f"admin{i}.key").stat().st_mode) == 0o600 for i in range(3))
    assert not (net / "admin3.key").exists()
    assert [m.pubkey for m in genesis.admins] == [bytes(k.verify_key) for k in keys]
    assert genesis.admin_threshold == 2


@pytest.mark.parametrize("admins,threshold", [(None, 1), ("1", 1), ("4", 3), ("5", 3)])
def test_testnet_admins_default_to_one(tmp_path: Path, admins: str | None, threshold: int) -> None:
    extra = [] if admins is None else ["--admins", admins]
    alliance("testnet", "--nodes", "1", "--out", str(tmp_path / "n"), "--base-port", "21000", *extra)
    genesis = load_genesis(tmp_path / "n" / "genesis.toml")
    assert len(genesis.admins) == int(admins or 1) and genesis.admin_threshold == threshold
    assert sorted(p.name for p in tmp_path.joinpath("n").glob("admin*.key")) == \
        sorted(f"admin{i}.key" for i in range(int(admins or 1)))


def test_init_writes_a_node_home_with_a_new_key(net: Path, tmp_path: Path) -> None:
    home = tmp_path / "joiner"
    result = alliance("init", "--out", str(home), "--genesis", str(net / "genesis.toml"), "--base-port", "23400")
    assert {p.name for p in home.iterdir()} == {"node.toml", "genesis.toml", "node.key"}
    key = load_key(home / "node.key")
    assert result.stdout == pubkey_hex(key) + "\n"
    assert stat.S_IMODE((home / "node.key").stat().st_mode) == 0o600
    assert (home / "genesis.toml").read_bytes() == (net / "genesis.toml").read_bytes()
    config = tomllib.loads((home / "node.toml").read_text())
    assert (config["rpc"]["listen"], config["p2p"]["listen"], config["metrics"]["listen"]) == (
        "127.0.0.1:23400", "127.0.0.1:23401", "127.0.0.1:23402")
    assert (config["key_file"], config["genesis_file"]) == ("node.key", "genesis.toml")


def test_init_ports_default_to_26600(net: Path, tmp_path: Path) -> None:
    alliance("init", "--out", str(tmp_path / "j"), "--genesis", str(net / "genesis.toml"))
    assert tomllib.loads((tmp_path / "j" / "node.toml").read_text())["rpc"]["listen"] == "127.0.0.1:26600"


def test_init_copies_a_given_key_with_mode_0600(net: Path, tmp_path: Path) -> None:
    source = tmp_path / "mine.key"
    pubkey = alliance("keygen", "--out", str(source)).stdout.strip()
    home = tmp_path / "joiner"
    result = alliance("init", "--out", str(home), "--genesis", str(net / "genesis.toml"), "--key", str(source))
    assert result.stdout.strip() == pubkey and pubkey_hex(load_key(home / "node.key")) == pubkey
    assert stat.S_IMODE((home / "node.key").stat().st_mode) == 0o600
    # The key may have signed elsewhere: the node starts signing nothing until its peers report their heights.
    assert SafetyFile.load(safety_path(home / "data")).record.sign_from == UNKNOWN
    assert "signs nothing until its peers" in result.stderr


def test_init_names_the_node_as_the_genesis_does(net: Path, tmp_path: Path) -> None:
    home = tmp_path / "again"
    alliance("init", "--out", str(home), "--genesis", str(net / "genesis.toml"), "--key", str(net / "node1/node.key"))
    assert tomllib.loads((home / "node.toml").read_text())["name"] == "node1"


def test_init_refuses_a_key_others_can_read(net: Path, tmp_path: Path) -> None:
    source = tmp_path / "loose.key"
    alliance("keygen", "--out", str(source))
    set_mode(source, 0o644)
    home = tmp_path / "joiner"
    result = alliance("init", "--out", str(home), "--genesis", str(net / "genesis.toml"), "--key", str(source),
                      check=False)
    _fails(result, 1, "accessible by group or others")
    assert not (home / "node.key").exists()


def test_init_refuses_an_existing_node_home(net: Path, tmp_path: Path) -> None:
    result = alliance("init", "--out", str(net / "node0"), "--genesis", str(net / "genesis.toml"), check=False)
    _fails(result, 1, "node home already")
    home = tmp_path / "half"
    home.mkdir()
    (home / "node.key").write_text("")
    _fails(alliance("init", "--out", str(home), "--genesis", str(net / "genesis.toml"), check=False), 1, "node.key")


def test_init_refuses_a_missing_genesis(tmp_path: Path) -> None:
    result = alliance("init", "--out", str(tmp_path / "j"), "--genesis", str(tmp_path / "none.toml"), check=False)
    _fails(result, 1, "none.toml")
    assert not (tmp_path / "j").exists()


@pytest.mark.parametrize("args,pattern", [
    (["add_client", "--pubkey", PUBKEY], "add_client needs --name"),
    (["add_client", "--name", "c", "--pubkey", PUBKEY, "--address", "h:1"], "add_client takes no --address"),
    (["add_validator", "--name", "v", "--pubkey", PUBKEY], "needs --address"),
    (["remove_client", "--pubkey", PUBKEY, "--name", "c"], "takes no --name"),
    (["replace_key", "--old", PUBKEY], "needs --new"),
    (["set_admin_threshold"], "needs --threshold"),
    (["set_admin_threshold", "--threshold", "2", "--pubkey", PUBKEY], "takes no --pubkey"),
    (["remove_client", "--pubkey", "abc"], "pubkey must be 64 hex"),
    (["set_address", "--pubkey", PUBKEY, "--address", "nowhere"], "host:port"),
    (["add_client", "--name", "x" * 65, "--pubkey", PUBKEY], "name must be"),
    (["promote", "--pubkey", PUBKEY], "invalid choice"),
    (["remove_client", "--pubkey", PUBKEY, "--expires", "-1"], "not a height"),
])
def test_propose_refuses_the_wrong_fields_for_its_kind(tmp_path: Path, args: list[str], pattern: str) -> None:
    # no key file and no node: a usage error is found before either is needed
    result = alliance("gov", "propose", *args, "--key", str(tmp_path / "none.key"), "--rpc", "http://127.0.0.1:1",
                      check=False)
    _fails(result, 2, pattern)


@pytest.mark.parametrize("command", [["approve", "abc"], ["show", "zz" * 32], ["members", "--height", "x"]])
def test_a_malformed_proposal_id_or_height_is_a_usage_error(command: list[str]) -> None:
    _fails(alliance("gov", *command, "--rpc", "http://127.0.0.1:1", check=False), 2, "proposal id|height")
