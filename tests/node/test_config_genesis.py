"""node.toml and genesis.toml: defaults, validation and clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from node.chain.genesis import Genesis, load_genesis, write_genesis
from node.chain.membership import Member
from node.config import Address, load_config
from node.errors import ConfigError


def config_in(tmp_path: Path, text: str) -> Path:
    (tmp_path / "node.toml").write_text(text)
    return tmp_path


def config_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(config_in(tmp_path, text))
    return str(info.value)


# --- node.toml ----------------------------------------------------------------------


def test_empty_config_gets_every_default(tmp_path: Path) -> None:
    config = load_config(config_in(tmp_path, ""))
    assert config.home == tmp_path
    assert config.name == "node"
    assert config.key_file == tmp_path / "node.key"
    assert config.genesis_file == tmp_path / "genesis.toml"
    assert config.data_dir == tmp_path / "data"
    assert config.log_level == "info" and config.log_format == "logfmt"
    assert config.rpc_listen == Address("127.0.0.1", 26600)
    assert config.p2p_listen == Address("127.0.0.1", 26601)
    assert config.metrics_listen == Address("127.0.0.1", 26602)
    assert (config.round_timeout_ms, config.round_timeout_max_ms) == (1000, 30000)
    assert (config.block_txs_max, config.mempool_txs_max) == (1000, 10000)


def test_given_settings_override_defaults(tmp_path: Path) -> None:
    config = load_config(config_in(tmp_path, """
name = "alpha"
log_level = "debug"
data_dir = "/var/lib/alliance"
[rpc]
listen = "0.0.0.0:8545"
[p2p]
listen = "[::1]:9000"
[consensus]
round_timeout_ms = 500
[mempool]
txs_max = 10
"""))
    assert config.name == "alpha" and config.log_level == "debug"
    assert config.data_dir == Path("/var/lib/alliance")
    assert config.rpc_listen == Address("0.0.0.0", 8545)
    assert config.p2p_listen == Address("::1", 9000)
    assert config.round_timeout_ms == 500 and config.round_timeout_max_ms == 30000
    assert config.mempool_txs_max == 10 and config.block_txs_max == 1000


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path)


def test_invalid_toml(tmp_path: Path) -> None:
    assert "not valid TOML" in config_error(tmp_path, "name = \n")


@pytest.mark.parametrize(
    ("text", "setting"),
    [
        ("nmae = 'x'\n", "nmae"),
        ("[rpc]\nlisten = '127.0.0.1:1'\nlsten = 'x'\n", "rpc.lsten"),
        ("[block]\ntx_max = 5\n", "block.tx_max"),
        ("[storage]\npath = 'x'\n", "storage"),
    ],
)
def test_unknown_setting_is_named(tmp_path: Path, text: str, setting: str) -> None:
    assert f"unknown setting {setting}" in config_error(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "setting", "type_name"),
    [
        ("name = 5\n", "name", "str"),
        ("log_level = true\n", "log_level", "str"),
        ("[block]\ntxs_max = '10'\n", "block.txs_max", "int"),
        ("[block]\ntxs_max = true\n", "block.txs_max", "int"),
        ("[consensus]\nround_timeout_ms = 1.5\n", "consensus.round_timeout_ms", "int"),
        ("[rpc]\nlisten = 26600\n", "rpc.listen", "str"),
    ],
)
def test_wrong_type_is_named(tmp_path: Path, text: str, setting: str, type_name: str) -> None:
    assert f"{setting} must be of type {type_name}" in config_error(tmp_path, text)


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert "[rpc] must be a table" in config_error(tmp_path, "rpc = '127.0.0.1:1'\n")


@pytest.mark.parametrize(
    "address", ["localhost", "localhost:", ":26600", "localhost:0", "localhost:65536", "localhost:http", "host:-1"]
)
def test_bad_address(tmp_path: Path, address: str) -> None:
    message = config_error(tmp_path, f"[metrics]\nlisten = '{address}'\n")
    assert "metrics.listen must be 'host:port' with a port in 1..65535" in message and repr(address) in message


def test_superscript_port_is_a_config_error(tmp_path: Path) -> None:
    config_error(tmp_path, "[rpc]\nlisten = 'localhost:²'\n")


@pytest.mark.parametrize(
    ("text", "shown", "allowed"),
    [
        ("[consensus]\nround_timeout_ms = 0\n", "consensus.round_timeout_ms = 0", "10..600000"),
        ("[consensus]\nround_timeout_ms = 600001\n", "consensus.round_timeout_ms = 600001", "10..600000"),
        ("[consensus]\nround_timeout_max_ms = -1\n", "consensus.round_timeout_max_ms = -1", "10..3600000"),
        ("[consensus]\nround_timeout_ms = 5000\nround_timeout_max_ms = 4999\n",
         "consensus.round_timeout_max_ms = 4999", "5000..3600000"),
        ("[block]\ntxs_max = 0\n", "block.txs_max = 0", "1..100000"),
        ("[block]\ntxs_max = 100001\n", "block.txs_max = 100001", "1..100000"),
        ("[mempool]\ntxs_max = -5\n", "mempool.txs_max = -5", "1..1000000"),
        ("[mempool]\ntxs_max = 100000000000000000000\n", "mempool.txs_max = 100000000000000000000", "1..1000000"),
        ("[rpc]\nlisten = '127.0.0.1:0'\n", "rpc.listen must be 'host:port'", "1..65535, got '127.0.0.1:0'"),
        ("[p2p]\nlisten = '127.0.0.1:65536'\n", "p2p.listen must be 'host:port'", "1..65535, got '127.0.0.1:65536'"),
    ],
)
def test_out_of_range_value_is_one_line_naming_setting_value_and_range(
    tmp_path: Path, text: str, shown: str, allowed: str
) -> None:
    message = config_error(tmp_path, text)
    assert shown in message and allowed in message, message
    assert "\n" not in message


def test_the_bounds_themselves_are_allowed(tmp_path: Path) -> None:
    config = load_config(config_in(tmp_path, """
[consensus]
round_timeout_ms = 10
round_timeout_max_ms = 10
[block]
txs_max = 100000
[mempool]
txs_max = 1
[rpc]
listen = "127.0.0.1:65535"
[p2p]
listen = "127.0.0.1:1"
"""))
    assert (config.round_timeout_ms, config.round_timeout_max_ms) == (10, 10)
    assert (config.block_txs_max, config.mempool_txs_max) == (100000, 1)


def test_a_bool_is_not_an_int(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[mempool]\ntxs_max = true\n")
    assert "mempool.txs_max must be of type int, got true" in message


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_log_format(tmp_path: Path, fmt: str) -> None:
    assert load_config(config_in(tmp_path, f"log_format = '{fmt}'\n")).log_format == fmt


def test_bad_log_format(tmp_path: Path) -> None:
    assert "log_format = 'text' must be one of logfmt, json" in config_error(tmp_path, "log_format = 'text'\n")


@pytest.mark.parametrize("level", ["INFO", "trace", "", "warn"])
def test_bad_log_level(tmp_path: Path, level: str) -> None:
    message = config_error(tmp_path, f"log_level = '{level}'\n")
    assert f"log_level = {level!r} must be one of debug, info, warning, error" in message


# --- genesis.toml -------------------------------------------------------------------


def pubkey(n: int) -> bytes:
    return bytes([n]) * 32


GENESIS = Genesis(
    chain_id="alliance-test",
    genesis_time_ms=1_700_000_000_000,
    validators=(Member("v0", pubkey(1), "127.0.0.1:26601"), Member("v1", pubkey(2), "10.0.0.2:26611")),
    clients=(Member("client", pubkey(3)),),
    admins=(Member("admin", pubkey(4)),),
)


def genesis_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "genesis.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_genesis(path)
    assert str(path) in str(info.value)
    return str(info.value)


def validator(n: int, name: str | None = None) -> str:
    return f"[[validators]]\nname = '{name or f'v{n}'}'\npubkey = '{pubkey(n).hex()}'\naddress = '127.0.0.1:{26600 + n}'\n"


def test_genesis_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "genesis.toml"
    write_genesis(path, GENESIS)
    loaded = load_genesis(path)
    assert loaded == GENESIS
    assert loaded.hash() == GENESIS.hash()
    assert loaded.members.authorised_senders == {pubkey(3), pubkey(4)}


def test_genesis_hash_is_stable_across_a_rewrite(tmp_path: Path) -> None:
    first, second = tmp_path / "a.toml", tmp_path / "b.toml"
    write_genesis(first, GENESIS)
    write_genesis(second, load_genesis(first))
    assert first.read_bytes() == second.read_bytes()
    assert load_genesis(second).hash() == GENESIS.hash()


def test_genesis_hash_changes_with_content() -> None:
    other = Genesis(GENESIS.chain_id + "x", GENESIS.genesis_time_ms, GENESIS.validators, GENESIS.clients, GENESIS.admins)
    assert other.hash() != GENESIS.hash()
    later = Genesis(GENESIS.chain_id, GENESIS.genesis_time_ms + 1, GENESIS.validators, GENESIS.clients, GENESIS.admins)
    assert later.hash() != GENESIS.hash()


def test_minimal_genesis_defaults(tmp_path: Path) -> None:
    path = tmp_path / "genesis.toml"
    path.write_text("chain_id = 'c'\n" + validator(1))
    genesis = load_genesis(path)
    assert genesis.genesis_time_ms == 0 and genesis.clients == () and genesis.admins == ()
    assert genesis.validators == (Member("v1", pubkey(1), "127.0.0.1:26601"),)


def test_missing_genesis_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_genesis(tmp_path / "genesis.toml")


def test_genesis_invalid_toml(tmp_path: Path) -> None:
    assert "not valid TOML" in genesis_error(tmp_path, "chain_id = [\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(validator(1), "chain_id must be a non-empty string", id="missing-chain-id"),
        pytest.param("chain_id = ''\n" + validator(1), "chain_id must be a non-empty string", id="empty-chain-id"),
        pytest.param("chain_id = 7\n" + validator(1), "chain_id must be a non-empty string", id="int-chain-id"),
        pytest.param("chain_id = 'c'\n", "at least one validator", id="no-validators"),
        pytest.param("chain_id = 'c'\nvalidators = []\n", "at least one validator", id="empty-validators"),
        pytest.param("chain_id = 'c'\ngenesis_time_ms = -1\n" + validator(1), "genesis_time_ms", id="negative-time"),
        pytest.param("chain_id = 'c'\n" + validator(1) + validator(1, "other"), "public key is listed twice",
                     id="duplicate-validator-key"),
        pytest.param("chain_id = 'c'\n" + validator(1) + validator(2, "v1"), "name is listed twice",
                     id="duplicate-validator-name"),
        pytest.param("chain_id = 'c'\n" + validator(1).replace(pubkey(1).hex(), "zz" * 32),
                     "validators[0].pubkey", id="bad-pubkey-hex"),
        pytest.param("chain_id = 'c'\n" + validator(1).replace(pubkey(1).hex(), pubkey(1).hex()[:60]),
                     "validators[0].pubkey", id="short-pubkey"),
        pytest.param("chain_id = 'c'\n" + validator(1) + "[[clients]]\nname = 'c'\npubkey = 'nope'\n",
                     "clients[0].pubkey", id="bad-client-pubkey"),
        pytest.param("chain_id = 'c'\n" + validator(1).replace("name = 'v1'\n", ""), "validators[0] needs a string 'name'",
                     id="validator-without-name"),
        pytest.param("chain_id = 'c'\nvalidators = 'v1'\n", "validators must be an array of tables", id="validators-str"),
        pytest.param("chain_id = 'c'\n" + validator(1).replace("'127.0.0.1:26601'", "26601"), "validators[0].address",
                     id="int-address"),
    ],
)
def test_genesis_errors(tmp_path: Path, text: str, message: str) -> None:
    assert message in genesis_error(tmp_path, text)


# --- observers, admins and their threshold --------------------------------------------------------------


def observer(n: int, name: str | None = None) -> str:
    return f"[[observers]]\nname = '{name or f'o{n}'}'\npubkey = '{pubkey(n).hex()}'\naddress = '127.0.0.1:{27600 + n}'\n"


def sender(role: str, n: int, name: str | None = None) -> str:
    return f"[[{role}]]\nname = '{name or f'{role[0]}{n}'}'\npubkey = '{pubkey(n).hex()}'\n"


def test_observers_and_an_admin_threshold_are_read(tmp_path: Path) -> None:
    path = tmp_path / "genesis.toml"
    admins = sender("admins", 5) + sender("admins", 6) + sender("admins", 7)
    path.write_text("chain_id = 'c'\nadmin_threshold = 3\n" + validator(1) + observer(2) + sender("clients", 4) + admins)
    genesis = load_genesis(path)
    assert genesis.observers == (Member("o2", pubkey(2), "127.0.0.1:27602"),)
    members = genesis.members
    assert members.admin_threshold == 3 and members.peer_keys == {pubkey(1), pubkey(2)}
    assert members.validator_keys == (pubkey(1),) and members.authorised_senders == {pubkey(n) for n in (4, 5, 6, 7)}
    write_genesis(tmp_path / "again.toml", genesis)
    assert load_genesis(tmp_path / "again.toml") == genesis


@pytest.mark.parametrize(("admins", "threshold"), [(0, 0), (1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_the_threshold_defaults_to_a_majority_of_the_admins(tmp_path: Path, admins: int, threshold: int) -> None:
    path = tmp_path / "genesis.toml"
    path.write_text("chain_id = 'c'\n" + validator(1) + "".join(sender("admins", 10 + i) for i in range(admins)))
    genesis = load_genesis(path)
    assert genesis.admin_threshold is None and genesis.threshold == genesis.members.admin_threshold == threshold


def test_an_unstated_threshold_follows_the_admins_as_the_genesis_is_assembled(tmp_path: Path) -> None:
    path = tmp_path / "genesis.toml"
    write_genesis(path, Genesis("c", 0, GENESIS.validators, (), ()))
    assert "admin_threshold" not in path.read_text()
    for n, threshold in enumerate([1, 2, 2]):  # as `alliance genesis add-client --admin` grows it
        grown = load_genesis(path, complete=False)
        write_genesis(path, dataclasses.replace(grown, admins=grown.admins + (Member(f"a{n}", pubkey(10 + n)),)))
        assert load_genesis(path).threshold == threshold


def test_stating_the_default_threshold_leaves_the_hash_unchanged() -> None:
    stated = Genesis(GENESIS.chain_id, GENESIS.genesis_time_ms, GENESIS.validators, GENESIS.clients, GENESIS.admins,
                     admin_threshold=1)
    assert stated.hash() == GENESIS.hash()
    assert stated.to_dict()["admin_threshold"] == 1 and "admin_threshold" not in GENESIS.to_dict()
    with_observer = Genesis(GENESIS.chain_id, GENESIS.genesis_time_ms, GENESIS.validators, GENESIS.clients,
                            GENESIS.admins, observers=(Member("o", pubkey(9), "h:1"),))
    assert with_observer.hash() != GENESIS.hash()


ONE_ADMIN = "chain_id = 'c'\n" + validator(1) + sender("admins", 5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("admin_threshold = 2\n" + ONE_ADMIN, "admin_threshold = 2 can never be met: there is 1 admin",
                     id="threshold-above-admins"),
        pytest.param("chain_id = 'c'\nadmin_threshold = 1\n" + validator(1), "there are no admins",
                     id="threshold-without-admins"),
        pytest.param("admin_threshold = 0\n" + ONE_ADMIN, "admin_threshold must be a positive integer, got 0",
                     id="threshold-0"),
        pytest.param("admin_threshold = true\n" + ONE_ADMIN, "admin_threshold must be a positive integer, got True",
                     id="threshold-bool"),
        pytest.param("admin_threshold = '1'\n" + ONE_ADMIN, "admin_threshold must be a positive integer",
                     id="threshold-str"),
        pytest.param("chain_id = 'c'\n" + validator(1) + observer(1), "listed twice, as validators[0] and observers[0]",
                     id="validator-and-observer"),
        pytest.param("chain_id = 'c'\n" + validator(1) + sender("admins", 1), "as validators[0] and admins[0]",
                     id="validator-and-admin"),
        pytest.param(ONE_ADMIN + sender("clients", 5), "as clients[0] and admins[0]", id="client-and-admin"),
        pytest.param("chain_id = 'c'\n" + validator(1) + observer(2, "v1"), "name is listed twice, as validators[0] "
                     "and observers[0]", id="observer-named-as-a-validator"),
        pytest.param(ONE_ADMIN + sender("clients", 4, "a5"), "name is listed twice", id="client-named-as-an-admin"),
        pytest.param("chain_id = 'c'\n" + validator(1, "x" * 65), "validators[0].name must be 1..64 bytes",
                     id="long-name"),
        pytest.param("chain_id = 'c'\n" + validator(1).replace("'v1'", "''"), "validators[0].name must be 1..64 bytes",
                     id="empty-name"),
        pytest.param("chain_id = 'c'\n" + validator(1) + observer(2).replace("127.0.0.1:27602", "nowhere"),
                     "observers[0].address", id="observer-address"),
        pytest.param("chain_id = 'c'\nobservers = 3\n" + validator(1), "observers must be an array of tables",
                     id="observers-int"),
    ],
)
def test_genesis_membership_errors(tmp_path: Path, text: str, message: str) -> None:
    assert message in genesis_error(tmp_path, text)


def test_a_name_may_be_both_a_nodes_and_a_senders(tmp_path: Path) -> None:
    path = tmp_path / "genesis.toml"
    path.write_text("chain_id = 'c'\n" + validator(1, "org1") + sender("clients", 2, "org1"))
    assert load_genesis(path).clients[0].name == "org1"
