"""The JSON-RPC 2.0 envelope: strict JSON in and out, request ids, error objects, internal faults logged sparingly."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from node.ops.ratelog import RateLog


PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = (
    -32700, -32600, -32601, -32602, -32603,
)
TX_REFUSED, NOT_AUTHORISED, DUPLICATE_TX, OVERLOADED, NOT_FOUND, COMMIT_TIMEOUT = (
    -32001, -32002, -32003, -32004, -32005, -32006,
)
_SURROGATE = re.compile("[\ud800-\udfff]")


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


Params = dict[str, Any]


class NotJson:
    """Stands for what Python's parser takes but JSON has no value for: NaN, Infinity, 1e400, or an
    integer too long to convert. No check accepts it, so it ends as invalid params or an invalid request."""

    def __init__(self, text: str) -> None:
        self.text = text


def _number(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:  # an integer of more digits than Python converts
            return NotJson(text)
        return value if not isinstance(value, float) or math.isfinite(value) else NotJson(text)
    return parse


def parse(body: bytes) -> Any:
    """The request in `body`; RpcError PARSE_ERROR if it is not JSON."""
    try:
        return json.loads(body, parse_constant=NotJson, parse_float=_number(float), parse_int=_number(int))
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: "[[[[..." nested too deeply
        raise RpcError(PARSE_ERROR, "parse error") from None


def is_text(value: Any) -> bool:
    """A str that is valid Unicode: a lone surrogate ("\\ud800") has no UTF-8 encoding."""
    return isinstance(value, str) and _SURROGATE.search(value) is None


def valid_id(value: Any) -> bool:
    """JSON-RPC 2.0: an id is a string, a number or null (never a boolean, an object or an array)."""
    if value is None or is_text(value):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return type(value) is int


def check_call(call: Any) -> tuple[str, Params]:
    """The method and params of one call; RpcError INVALID_REQUEST or INVALID_PARAMS."""
    if not isinstance(call, dict) or call.get("jsonrpc") != "2.0" or not isinstance(call.get("method"), str):
        raise RpcError(INVALID_REQUEST, "invalid request: expected {jsonrpc: \"2.0\", method, params, id}")
    if "id" in call and not valid_id(call["id"]):
        raise RpcError(INVALID_REQUEST, "invalid request: id must be a string, a finite number or null")
    params = call.get("params", {})
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "invalid params: parameters are passed by name (a JSON object)")
    return call["method"], params


def expects_answer(call: Any) -> bool:
    """Notifications (calls without an id) get no answer; invalid requests always do."""
    return not isinstance(call, dict) or "id" in call or not isinstance(call.get("method"), str)


def response(call: Any, result: Any = None, error: RpcError | None = None) -> dict[str, Any]:
    """The response to `call`, echoing its id when it is a valid one, null otherwise."""
    request_id = call.get("id") if isinstance(call, dict) and valid_id(call.get("id")) else None
    if error is not None:
        return {"jsonrpc": "2.0", "error": error.to_json(), "id": request_id}
    return {"jsonrpc": "2.0", "result": result, "id": request_id}


def fault_event(method: str, exc: BaseException) -> str:
    """The rate-limited log event of an internal fault: a request that triggers a bug must not be able to
    fill the log by being repeated."""
    return f"event=rpc_internal_error method={method} error={type(exc).__name__}"


def encode(answer: Any, faults: RateLog) -> bytes:
    """Strict JSON: never NaN or Infinity, ASCII only (escapes keep any text valid)."""
    try:
        return json.dumps(answer, separators=(",", ":"), allow_nan=False).encode()
    except (ValueError, TypeError, RecursionError) as exc:
        faults.log(fault_event("encode", exc), exc)
        internal = response(None, error=RpcError(INTERNAL_ERROR, "internal error"))
        return json.dumps(internal, separators=(",", ":")).encode()
