"""Hypothesis strategies for JSON-RPC request bodies that a hostile or careless client may send, written
as raw text (NaN, Infinity, 1e400, lone surrogate escapes, deep nesting), and the strict checks every
answer must pass: the node's RpcService and a real node process are fuzzed with the same ones."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import msgpack
from hypothesis import strategies as st

INTERNAL_ERROR = -32603
# Section 3 of the client protocol, the project's get_proof, and methods of later versions of the spec.
METHODS = ("status", "send_tx", "get_tx", "get_block", "get_proof", "query",
           "get_members", "get_proposal", "get_history", "consensus_state")
PARAM_NAMES = {
    "status": (), "send_tx": ("tx", "wait", "timeout"), "get_tx": ("tx_hash",), "get_block": ("height",),
    "get_proof": ("tx_hash",), "query": ("family", "key"), "get_members": ("height",),
    "get_proposal": ("proposal",), "get_history": ("family", "key", "limit", "before_height"),
    "consensus_state": (),
}
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Raw:
    """JSON text written as is: what json.dumps would not write (NaN, 1e400) or would change."""
    text: str


def dump(value: Any) -> str:
    """JSON text of `value`, with Raw pieces verbatim; strings keep lone surrogates as \\uXXXX escapes."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


NON_JSON_NUMBERS = st.sampled_from([Raw(t) for t in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1E999")])
BIG_INTS = st.sampled_from([2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**64 + 1, -(2**63), -(2**64), 10**30, 10**300])
INTS = st.one_of(st.integers(), BIG_INTS, st.integers(-3, 70))
SURROGATE_TEXT = st.builds(lambda a, s, b: a + s + b, st.text(max_size=5),
                           st.sampled_from(["\ud800", "\udfff", "\udc00\ud800"]), st.text(max_size=5))
TEXT = st.one_of(st.text(max_size=20), SURROGATE_TEXT)
HEX = st.one_of(
    st.binary(max_size=40).map(bytes.hex),
    st.binary(min_size=32, max_size=32).map(lambda b: b.hex().upper()),
    st.binary(min_size=32, max_size=32).map(lambda b: b.hex()[:-1]),
    st.just("00" * 32), st.just("0" * 65), st.just("ff" * 10_000),
)
_PACKABLE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=10) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)
TX_HEX = st.lists(_PACKABLE, min_size=7, max_size=9).map(lambda body: msgpack.packb(body, use_bin_type=True).hex())
SCALARS = st.one_of(
    st.none(), st.booleans(), INTS, st.floats(allow_nan=False, allow_infinity=False), NON_JSON_NUMBERS, TEXT,
    HEX, st.sampled_from(["latest", "kv", "notary", "blocks", "tx", ""]),
)


def deep(depth: int, kind: str) -> Raw:
    return Raw("[" * depth + "]" * depth if kind == "[" else '{"a":' * depth + "1" + "}" * depth)


# Not near the parser's recursion limit (~1,000 less the stack in use), where test and node may differ.
DEEP = st.builds(deep, st.one_of(st.integers(1, 200), st.integers(2000, 5000)), st.sampled_from("[{"))
VALUES = st.recursive(
    st.one_of(SCALARS, TX_HEX),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10,
) | DEEP


@st.composite
def named_params(draw: st.DrawFn, method: str) -> dict[str, Any]:
    names = PARAM_NAMES.get(method, ())
    params = {name: draw(VALUES) for name in names if draw(st.booleans()) or draw(st.booleans())}
    if draw(st.integers(0, 4)) == 0:
        params[draw(TEXT)] = draw(VALUES)  # a name no method has
    return params


IDS = st.one_of(
    st.none(), st.integers(), BIG_INTS, st.floats(allow_nan=False, allow_infinity=False), TEXT,
    NON_JSON_NUMBERS, st.booleans(), st.just([]), st.just([1]), st.just({}), st.just({"id": 1}),
)


@st.composite
def calls(draw: st.DrawFn) -> Any:
    """One call: mostly well formed with odd params, sometimes a broken envelope."""
    method = draw(st.sampled_from(METHODS)) if draw(st.integers(0, 3)) else draw(TEXT)
    call: dict[str, Any] = {"jsonrpc": draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0", 2]))
                            if draw(st.integers(0, 9)) else None, "method": method}
    if call["jsonrpc"] is None:
        del call["jsonrpc"]
    kind = draw(st.integers(0, 9))
    if kind == 0:
        call["params"] = draw(VALUES)  # an array, a string, null, ...
    elif kind > 1:
        call["params"] = draw(named_params(method))
    if draw(st.integers(0, 5)):
        call["id"] = draw(IDS)
    if draw(st.integers(0, 30)) == 0:
        return draw(VALUES)  # not a call at all
    return call


BATCHES = st.lists(calls(), min_size=0, max_size=12)


def body_of(request: Any) -> bytes:
    return dump(request).encode()


# ---- the checks -------------------------------------------------------------------------------------------


def strict_json(body: bytes) -> Any:
    """Parses an answer as strict JSON: UTF-8, no NaN or Infinity, no number that overflows a float."""
    def refuse(text: str) -> Any:
        raise AssertionError(f"answer holds {text}, which is not JSON: {body[:300]!r}")

    def finite(text: str) -> float:
        value = float(text)
        assert math.isfinite(value), f"answer holds {text}, which overflows: {body[:300]!r}"
        return value

    return json.loads(body.decode("utf-8"), parse_constant=refuse, parse_float=finite)


def valid_id(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is None
    return value is None or (type(value) in (int, float) and math.isfinite(value))


def answered(call: Any) -> bool:
    """Whether JSON-RPC 2.0 has an answer for `call`: not for a notification (a call without an id)."""
    return not isinstance(call, dict) or "id" in call or not isinstance(call.get("method"), str)


def check_answer(call: Any, answer: Any) -> None:
    """One response object: JSON-RPC 2.0 shape, no internal error, the right id."""
    assert isinstance(answer, dict), answer
    assert answer.get("jsonrpc") == "2.0" and "id" in answer, answer
    assert ("result" in answer) != ("error" in answer), answer
    assert set(answer) <= {"jsonrpc", "id", "result", "error"}, answer
    if "error" in answer:
        error = answer["error"]
        assert type(error.get("code")) is int and isinstance(error.get("message"), str), answer
        assert error["code"] != INTERNAL_ERROR, (call, answer)
        assert set(error) <= {"code", "message", "data"}, answer
    if isinstance(call, dict) and "id" in call and not isinstance(call["id"], Raw) and valid_id(call["id"]):
        if answer["id"] is not None or call["id"] is not None:
            assert answer["id"] == call["id"] and type(answer["id"]) is type(call["id"]), (call, answer)
    elif isinstance(call, dict) and "id" in call:
        assert answer["id"] is None and "error" in answer and answer["error"]["code"] == -32600, (call, answer)


class _TooDeep:
    pass


def check_body(request: Any, body: bytes, status: int) -> None:
    """The whole HTTP answer to `request`: strict JSON, one answer per call that has one, in order."""
    assert status in (200, 204), (status, body[:300])
    try:
        parsed = json.loads(body_of(request))  # as Python reads it: to it NaN and 1e400 are numbers
    except RecursionError:
        parsed = _TooDeep()
    calls_ = parsed if isinstance(parsed, list) else [parsed]
    if status == 204:
        assert body == b"" and calls_ and not any(answered(c) for c in calls_), request
        return
    answer = strict_json(body)
    if isinstance(parsed, _TooDeep) or parsed == []:
        code = -32700 if isinstance(parsed, _TooDeep) else -32600
        assert answer["error"]["code"] == code and answer["id"] is None, answer
        check_answer(None, answer)
    elif isinstance(parsed, list):
        sent = request if isinstance(request, list) else parsed
        originals = [c for c, p in zip(sent, parsed) if answered(p)]
        assert isinstance(answer, list) and len(answer) == len(originals), (request, answer)
        for call, one in zip(originals, answer):
            check_answer(call, one)
    else:
        check_answer(request, answer)
