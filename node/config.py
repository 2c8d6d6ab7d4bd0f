"""node.toml: every setting, its type and its default (documented in docs/configuration.md)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")

# section -> key -> default; "" is the top level. The default's type is the setting's type.
DEFAULTS: dict[str, dict[str, Any]] = {
    "": {
        "name": "node",
        "key_file": "node.key",
        "genesis_file": "genesis.toml",
        "data_dir": "data",
        "log_level": "info",
    },
    "rpc": {"listen": "127.0.0.1:26600"},
    "p2p": {"listen": "127.0.0.1:26601"},
    "metrics": {"listen": "127.0.0.1:26602"},
    "consensus": {"round_timeout_ms": 1000, "round_timeout_max_ms": 30000},
    "block": {"txs_max": 1000},
    "mempool": {"txs_max": 10000},
}


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeConfig:
    home: Path
    name: str
    key_file: Path
    genesis_file: Path
    data_dir: Path
    log_level: str
    rpc_listen: Address
    p2p_listen: Address
    metrics_listen: Address
    round_timeout_ms: int
    round_timeout_max_ms: int
    block_txs_max: int
    mempool_txs_max: int


def parse_address(text: str, what: str) -> Address:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} must be 'host:port', got {text!r}")
    return Address(host.strip("[]"), int(port))


def read_toml(path: Path, what: str, hint: str = "") -> dict[str, Any]:
    """A TOML file's content, or a ConfigError that names the file and the fault."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist{hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


def load_config(home: Path) -> NodeConfig:
    path = home / "node.toml"
    data = read_toml(path, "config file", " (create one with 'alliance testnet')")
    values = _merge(data, path)
    return _build(home, values)


def _merge(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Settings as flat 'section.key' names, defaults filled in, types and names checked."""
    values: dict[str, Any] = {}
    for section, defaults in DEFAULTS.items():
        given = data if section == "" else data.get(section, {})
        if not isinstance(given, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key, default in defaults.items():
            name = f"{section}.{key}" if section else key
            value = given.get(key, default)
            if type(value) is not type(default):
                raise ConfigError(f"{path}: {name} must be of type {type(default).__name__}")
            values[name] = value
    _check_unknown(data, path)
    return values


def _check_unknown(data: dict[str, Any], path: Path) -> None:
    for key, value in data.items():
        if key and key in DEFAULTS and isinstance(value, dict):
            unknown = [f"{key}.{sub}" for sub in value if sub not in DEFAULTS[key]]
        else:
            unknown = [] if key in DEFAULTS[""] else [key]
        if unknown:
            raise ConfigError(f"{path}: unknown setting {unknown[0]}")


def _positive(values: dict[str, Any], name: str) -> int:
    value: int = values[name]
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def _build(home: Path, v: dict[str, Any]) -> NodeConfig:
    if v["log_level"] not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    return NodeConfig(
        home=home,
        name=v["name"],
        key_file=home / v["key_file"],
        genesis_file=home / v["genesis_file"],
        data_dir=home / v["data_dir"],
        log_level=v["log_level"],
        rpc_listen=parse_address(v["rpc.listen"], "rpc.listen"),
        p2p_listen=parse_address(v["p2p.listen"], "p2p.listen"),
        metrics_listen=parse_address(v["metrics.listen"], "metrics.listen"),
        round_timeout_ms=_positive(v, "consensus.round_timeout_ms"),
        round_timeout_max_ms=_positive(v, "consensus.round_timeout_max_ms"),
        block_txs_max=_positive(v, "block.txs_max"),
        mempool_txs_max=_positive(v, "mempool.txs_max"),
    )
