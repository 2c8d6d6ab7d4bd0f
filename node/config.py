"""node.toml: every setting, its type and its default (documented in docs/configuration.md)."""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.errors import ConfigError

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("logfmt", "json")
ACCESS_MODES = ("open", "read", "closed")  # what an anonymous RPC request may do (docs/configuration.md)
PORTS = (1, 65535)

# section -> key -> default; "" is the top level. The default's type is the setting's type.
DEFAULTS: dict[str, dict[str, Any]] = {
    "": {
        "name": "node",
        "key_file": "node.key",
        "genesis_file": "genesis.toml",
        "data_dir": "data",
        "log_level": "info",
        "log_format": "logfmt",
    },
    # Paths are relative to the node home; "" is unset. access "" is the default for the listen address.
    "rpc": {"listen": "127.0.0.1:26600", "tls_cert": "", "tls_key": "", "tls_client_ca": "", "access": "",
            "tokens_file": ""},
    "p2p": {"listen": "127.0.0.1:26601"},
    "metrics": {"listen": "127.0.0.1:26602", "tls_cert": "", "tls_key": ""},
    "consensus": {"round_timeout_ms": 1000, "round_timeout_max_ms": 30000},
    "block": {"txs_max": 1000},
    "mempool": {"txs_max": 10000},
    "snapshot": {"interval_blocks": 1000, "keep": 2},
    "sync": {"state_sync": False, "snapshot_timeout_ms": 15000, "state_sync_behind_blocks": 10000},
    "storage": {"retain_blocks": 0, "archive_dir": ""},
}
# Pruning keeps at least this many blocks: twice what catch-up serves in one answer
# (node/p2p/sync.py BLOCKS_PER_REQUEST), so a peer a little behind still finds its next blocks here.
RETAIN_BLOCKS_MIN = 128

# The allowed range of every integer setting, bounds included: a value outside is a typo or would
# exhaust the machine (the mempool holds up to twice txs_max transactions of up to 64 KiB each).
RANGES: dict[str, tuple[int, int]] = {
    "consensus.round_timeout_ms": (10, 600_000),
    "consensus.round_timeout_max_ms": (10, 3_600_000),
    "block.txs_max": (1, 100_000),
    "mempool.txs_max": (1, 1_000_000),
    "snapshot.interval_blocks": (0, 100_000_000),
    "snapshot.keep": (1, 16),  # a peer is offered at most 16 heights
    "sync.snapshot_timeout_ms": (100, 600_000),
    "sync.state_sync_behind_blocks": (1, 2**62),
    "storage.retain_blocks": (0, 2**62),
}


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TlsFiles:
    """A listener's certificate and key, and the CA its clients' certificates must chain to (None: none asked)."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@dataclass(frozen=True)
class NodeConfig:
    home: Path
    name: str
    key_file: Path
    genesis_file: Path
    data_dir: Path
    log_level: str
    log_format: str
    rpc_listen: Address
    p2p_listen: Address
    metrics_listen: Address
    round_timeout_ms: int
    round_timeout_max_ms: int
    block_txs_max: int
    mempool_txs_max: int
    snapshot_interval_blocks: int
    snapshot_keep: int
    state_sync: bool
    snapshot_timeout_ms: int
    state_sync_behind_blocks: int  # a store this far below the newest snapshot offered is replaced by it
    retain_blocks: int  # 0 keeps every block
    archive_dir: Path | None  # where blocks are archived before they are pruned
    rpc_tls: TlsFiles | None = None  # None: plain HTTP
    rpc_access: str = "open"  # one of ACCESS_MODES
    rpc_tokens_file: Path | None = None
    metrics_tls: TlsFiles | None = None


def is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(text: str, what: str) -> Address:
    host, sep, port = text.rpartition(":")
    low, high = PORTS
    if not sep or not host or not (port.isascii() and port.isdigit()) or not low <= int(port) <= high:
        raise ConfigError(f"{what} must be 'host:port' with a port in {low}..{high}, got {text!r}")
    return Address(host.strip("[]"), int(port))


def _shown(value: Any) -> str:
    """A value as it would be written in TOML, cut short."""
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_toml(path: Path, what: str, hint: str = "") -> dict[str, Any]:
    """A TOML file's content, or a ConfigError that names the file and the fault."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))  # TOML is UTF-8 whatever the locale
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
            if type(value) is not type(default):  # so a bool is not an int
                raise ConfigError(f"{path}: {name} must be of type {type(default).__name__}, got {_shown(value)}")
            values[name] = value
    _check_unknown(data, path)
    _check_ranges(values, path)
    return values


def _check_unknown(data: dict[str, Any], path: Path) -> None:
    for key, value in data.items():
        if key and key in DEFAULTS and isinstance(value, dict):
            unknown = [f"{key}.{sub}" for sub in value if sub not in DEFAULTS[key]]
        else:
            unknown = [] if key in DEFAULTS[""] else [key]
        if unknown:
            raise ConfigError(f"{path}: unknown setting {unknown[0]}")


def _check_ranges(values: dict[str, Any], path: Path) -> None:
    for name, (low, high) in RANGES.items():
        if not low <= values[name] <= high:
            raise ConfigError(f"{path}: {name} = {_shown(values[name])} is out of range {low}..{high}")
    first, most = values["consensus.round_timeout_ms"], values["consensus.round_timeout_max_ms"]
    if most < first:
        high = RANGES["consensus.round_timeout_max_ms"][1]
        raise ConfigError(f"{path}: consensus.round_timeout_max_ms = {most} is out of range {first}..{high} "
                          "(at least consensus.round_timeout_ms)")
    retain = values["storage.retain_blocks"]
    if 0 < retain < RETAIN_BLOCKS_MIN:
        raise ConfigError(f"{path}: storage.retain_blocks = {retain} is too few: 0 keeps every block, "
                          f"otherwise at least {RETAIN_BLOCKS_MIN} (peers catching up fetch from the retained blocks)")
    for name, choices in (("log_level", LOG_LEVELS), ("log_format", LOG_FORMATS), ("rpc.access", ACCESS_MODES)):
        if values[name] not in choices and not (name == "rpc.access" and values[name] == ""):
            raise ConfigError(f"{path}: {name} = {_shown(values[name])} must be one of {', '.join(choices)}")
    _check_tls(values, path)


def _check_tls(values: dict[str, Any], path: Path) -> None:
    for section in ("rpc", "metrics"):
        cert, key = values[f"{section}.tls_cert"], values[f"{section}.tls_key"]
        if bool(cert) != bool(key):
            given, missing = ("tls_cert", "tls_key") if cert else ("tls_key", "tls_cert")
            raise ConfigError(f"{path}: {section}.{given} is set without {section}.{missing}: TLS needs both")
    if values["rpc.tls_client_ca"] and not values["rpc.tls_cert"]:
        raise ConfigError(f"{path}: rpc.tls_client_ca needs rpc.tls_cert and rpc.tls_key (client certificates "
                          "are asked for in the TLS handshake)")


def _tls(home: Path, v: dict[str, Any], section: str) -> TlsFiles | None:
    if not v[f"{section}.tls_cert"]:
        return None
    ca = v.get(f"{section}.tls_client_ca", "")
    return TlsFiles(home / v[f"{section}.tls_cert"], home / v[f"{section}.tls_key"], home / ca if ca else None)


def _build(home: Path, v: dict[str, Any]) -> NodeConfig:
    rpc_listen = parse_address(v["rpc.listen"], "rpc.listen")
    access = v["rpc.access"] or ("open" if is_loopback(rpc_listen.host) else "closed")
    return NodeConfig(
        home=home,
        name=v["name"],
        key_file=home / v["key_file"],
        genesis_file=home / v["genesis_file"],
        data_dir=home / v["data_dir"],
        log_level=v["log_level"],
        log_format=v["log_format"],
        rpc_listen=rpc_listen,
        p2p_listen=parse_address(v["p2p.listen"], "p2p.listen"),
        metrics_listen=parse_address(v["metrics.listen"], "metrics.listen"),
        round_timeout_ms=v["consensus.round_timeout_ms"],
        round_timeout_max_ms=v["consensus.round_timeout_max_ms"],
        block_txs_max=v["block.txs_max"],
        mempool_txs_max=v["mempool.txs_max"],
        snapshot_interval_blocks=v["snapshot.interval_blocks"],
        snapshot_keep=v["snapshot.keep"],
        state_sync=v["sync.state_sync"],
        snapshot_timeout_ms=v["sync.snapshot_timeout_ms"],
        state_sync_behind_blocks=v["sync.state_sync_behind_blocks"],
        retain_blocks=v["storage.retain_blocks"],
        archive_dir=home / v["storage.archive_dir"] if v["storage.archive_dir"] else None,
        rpc_tls=_tls(home, v, "rpc"),
        rpc_access=access,
        rpc_tokens_file=home / v["rpc.tokens_file"] if v["rpc.tokens_file"] else None,
        metrics_tls=_tls(home, v, "metrics"),
    )
