"""Checks of JSON-RPC method parameters shared by the methods: names, heights, hashes (-32602 otherwise)."""

from __future__ import annotations

import re
from typing import Any

from node.api.jsonrpc import INVALID_PARAMS, Params, RpcError

HEIGHT_MAX = 2**63 - 1  # heights are stored as 8 bytes; none is ever near this
_HASH_HEX = re.compile("[0-9a-fA-F]{64}")  # written lowercase; read in either case, as before


def check_names(params: Params, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    missing = [p for p in required if p not in params]
    unknown = [p for p in params if p not in required + optional]
    if missing or unknown:
        detail = f"missing {missing}" if missing else f"unknown {_names(unknown)}"
        raise RpcError(INVALID_PARAMS, f"invalid params: {detail}")


def _names(names: list[str]) -> str:
    """Names a client sent, shown safely: a few, each cut short, in ASCII."""
    shown = ", ".join(ascii(name[:20]) for name in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def hash_param(params: Params, name: str) -> bytes:
    value = params[name]
    if not isinstance(value, str) or _HASH_HEX.fullmatch(value) is None:
        raise RpcError(INVALID_PARAMS, f"{name} must be 64 hex characters")
    return bytes.fromhex(value)


def height_param(value: Any, latest: int) -> int:
    """A height: an integer 0 .. HEIGHT_MAX, or "latest" (the tip, `latest`)."""
    if value == "latest":
        return latest
    if type(value) is not int or not 0 <= value <= HEIGHT_MAX:  # type(): True is an int too
        raise RpcError(INVALID_PARAMS, f'height must be an integer in 0..{HEIGHT_MAX} or "latest"')
    return value
