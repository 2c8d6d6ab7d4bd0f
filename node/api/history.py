"""The record-history method of the client protocol (get_history): every committed transaction
that touched a kv key or a notary digest, newest first, paged by height."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from node.api.jsonrpc import INVALID_PARAMS, Params, RpcError, is_text
from node.api.params import HEIGHT_MAX, check_names, hash_param
from node.chain.execution import KV_KEY_BYTES_MAX, kv_key, notary_key
from node.chain.history import HistoryCorrupt, page
from node.chain.ledger import Ledger
from storage.kv import StoreCorrupt

Method = Callable[[Params], Awaitable[Any]]
LIMIT_DEFAULT = 100
LIMIT_MAX = 1000


class HistoryMethods:
    """get_history over the index the ledger writes with each block."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def methods(self) -> dict[str, Method]:
        return {"get_history": self._get_history}

    async def _get_history(self, params: Params) -> Any:
        check_names(params, ("family", "key"), ("limit", "before_height"))
        state_key = _state_key(params)
        limit = _int_param(params, "limit", LIMIT_DEFAULT, 1, LIMIT_MAX)
        before = _int_param(params, "before_height", None, 1, HEIGHT_MAX)
        if state_key is None:  # a kv key no put could have named: it has no history
            return {"entries": [], "next_before_height": None}
        try:
            entries, next_before = page(self.ledger.history(state_key, before), limit)
        except HistoryCorrupt as exc:
            raise StoreCorrupt(str(exc)) from exc  # the node's damage path stops it
        return {"entries": [entry.to_json() for entry in entries], "next_before_height": next_before}


def _state_key(params: Params) -> bytes | None:
    family, key = params["family"], params["key"]
    if family == "kv":
        if not is_text(key):
            raise RpcError(INVALID_PARAMS, "kv key must be a string of valid Unicode (no lone surrogates)")
        return kv_key(key) if 1 <= len(key.encode()) <= KV_KEY_BYTES_MAX else None
    if family == "notary":
        return notary_key(hash_param(params, "key"))
    raise RpcError(INVALID_PARAMS, 'family must be "kv" or "notary"')


def _int_param(params: Params, name: str, default: int | None, low: int, high: int) -> Any:
    if params.get(name) is None:  # absent or null: the default
        return default
    value = params[name]
    if type(value) is not int or not low <= value <= high:  # type(): True is an int too
        raise RpcError(INVALID_PARAMS, f"{name} must be an integer in {low}..{high}")
    return value
