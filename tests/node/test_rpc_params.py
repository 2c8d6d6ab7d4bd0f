"""The RPC service without a node process: fuzzed requests always get strict JSON-RPC 2.0 answers and never
-32603, parameter checks give -32602, and a genuine internal fault is logged once with a count."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from nacl.signing import SigningKey

from node.api.jsonrpc import INTERNAL_ERROR, encode
from node.api.lookup import ChainLookup
from node.api.rpc import RpcService
from node.chain.genesis import Genesis
from node.chain.ledger import Ledger
from node.chain.membership import Member
from node.chain.tx import Transaction, sign_tx
from node.ops.metrics import Metrics
from node.ops.ratelog import RateLog
from node.txpool.admission import Admission
from node.txpool.mempool import Mempool
from node.txpool.verifier import BAD_SIGNATURE
from storage.chain import ChainStore
from storage.memory import MemoryStore
from tests.jsonrpc_fuzz import BATCHES, Raw, body_of, calls, check_body, strict_json

CLIENT = SigningKey(b"c" * 32)
GENESIS = Genesis(
    chain_id="rpc-params", genesis_time_ms=1_700_000_000_000,
    validators=(Member("v0", bytes(SigningKey(b"v" * 32).verify_key), "127.0.0.1:26601"),),
    clients=(Member("client", bytes(CLIENT.verify_key)),), admins=(),
)


class _Verifier:
    async def verify(self, txs: Sequence[Transaction]) -> list[str]:
        return [BAD_SIGNATURE] * len(txs)


async def _run_here(function: Any, *args: Any) -> Any:
    return function(*args)


async def _never_committed(tx_hash: bytes, timeout: float) -> bool:
    return False


def _service() -> RpcService:
    ledger = Ledger(ChainStore(MemoryStore()), GENESIS)
    mempool = Mempool(100)
    driver: Any = SimpleNamespace(ledger=ledger, wait_committed=_never_committed, transactions_pending=lambda: None)
    admission = Admission(GENESIS, ledger, mempool, _Verifier(), driver)  # type: ignore[arg-type]
    lookup = ChainLookup(ledger, admission)
    return RpcService(ledger, driver, admission, lookup, Metrics(), lambda: {"chain_id": GENESIS.chain_id},
                      on_admitted=lambda tx: None, on_store_damaged=lambda exc: None, run_blocking=_run_here)


SERVICE = _service()


def _answer(service: RpcService, request: Any) -> tuple[int, bytes]:
    answer = trio.run(service.handle, body_of(request))
    return (204, b"") if answer is None else (200, service.encode(answer))


def _error(service: RpcService, method: str, params: Any) -> dict[str, Any]:
    status, body = _answer(service, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    error: dict[str, Any] = strict_json(body)["error"]
    return error


UNIT_FUZZ = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@UNIT_FUZZ
@given(calls())
def test_fuzzed_call_gets_a_strict_answer(call: Any) -> None:
    status, body = _answer(SERVICE, call)
    check_body(call, body, status)


@settings(UNIT_FUZZ, max_examples=200)
@given(BATCHES)
def test_fuzzed_batch_gets_a_strict_answer(batch: list[Any]) -> None:
    status, body = _answer(SERVICE, batch)
    check_body(batch, body, status)


@pytest.mark.parametrize("method,params", [
    ("get_block", {"height": 2**64}), ("get_block", {"height": -1}), ("get_block", {"height": False}),
    ("get_block", {"height": Raw("Infinity")}), ("get_block", {"height": 1.0}),
    ("query", {"family": "kv", "key": "\ud800"}), ("query", {"family": "kv", "key": 5}),
    ("query", {"family": "notary", "key": "ag" * 32}), ("query", {"family": "notary", "key": "ab" * 31 + "a"}),
    ("query", {"family": Raw("NaN"), "key": "k"}), ("get_tx", {"tx_hash": "0" * 10_000}),
    ("get_proof", {"tx_hash": "\udfff" * 64}), ("send_tx", {"tx": "00", "timeout": Raw("NaN")}),
    ("send_tx", {"tx": "00", "timeout": 10**400}), ("send_tx", {"tx": "00", "timeout": True}),
    ("send_tx", {"tx": "00", "timeout": -1}), ("send_tx", {"tx": "00", "wait": 1}),
    ("status", {"verbose": True}), ("status", []), ("get_tx", None),
])
def test_bad_params_are_invalid_params(method: str, params: Any) -> None:
    assert _error(SERVICE, method, params)["code"] == -32602


@pytest.mark.parametrize("tx", ["0", "C1", "c1 c2", "\ud800\ud800", "0x00", "ff" * 70_000])
def test_tx_that_is_not_lowercase_hex_is_refused(tx: str) -> None:
    error = _error(SERVICE, "send_tx", {"tx": tx})
    assert error["code"] == -32001 and error["data"]["reason"] in ("malformed", "oversize"), error


def test_unknown_param_names_are_shown_safely() -> None:
    error = _error(SERVICE, "get_block", {"height": 1, "\ud800" * 1000: 1, **{f"p{i}": i for i in range(9)}})
    assert error["message"].isascii() and len(error["message"]) < 300 and "and 5 more" in error["message"], error


def test_an_integer_too_long_to_convert_is_no_id() -> None:
    body = b'{"jsonrpc":"2.0","method":"status","id":' + b"9" * 5000 + b"}"
    answer = strict_json(SERVICE.encode(trio.run(SERVICE.handle, body)))
    assert answer["id"] is None and answer["error"]["code"] == -32600


def test_a_surrogate_id_is_no_id() -> None:
    status, body = _answer(SERVICE, {"jsonrpc": "2.0", "id": "a\ud800", "method": "status"})
    answer = strict_json(body)
    assert answer["id"] is None and answer["error"]["code"] == -32600


def test_an_internal_fault_is_logged_once_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    service = _service()

    async def broken(params: dict[str, Any]) -> Any:
        raise KeyError("a bug")

    service.methods["status"] = broken
    batch = [{"jsonrpc": "2.0", "id": i, "method": "status"} for i in range(1000)]
    with caplog.at_level(logging.ERROR, "alliance.rpc"):
        answers = strict_json(service.encode(trio.run(service.handle, body_of(batch))))
        assert {a["error"]["code"] for a in answers} == {INTERNAL_ERROR}
        service.faults.clock = lambda: 1e12  # as if an interval passed
        trio.run(service.handle, body_of(batch[0]))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["event=rpc_internal_error method=status error=KeyError count=1",
                     "event=rpc_internal_error method=status error=KeyError count=1000"]
    assert caplog.records[0].exc_info is not None and caplog.records[1].exc_info is None


def test_an_answer_that_is_not_strict_json_becomes_an_internal_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "alliance.rpc"):
        body = encode({"jsonrpc": "2.0", "result": float("nan"), "id": 1}, RateLog(logging.getLogger("alliance.rpc"), logging.ERROR))
    assert json.loads(body)["error"]["code"] == INTERNAL_ERROR and len(caplog.records) == 1


def test_a_signed_transaction_still_reaches_admission() -> None:
    tx = sign_tx(CLIENT, GENESIS.chain_id, "kv", "put", {"key": "k", "value": b"v"}, 7)
    error = _error(SERVICE, "send_tx", {"tx": tx.raw.hex(), "timeout": 1})
    assert error["code"] == -32001 and error["data"]["reason"] == "bad_signature"


def test_hex_params_are_read_in_either_case() -> None:
    status, body = _answer(SERVICE, {"jsonrpc": "2.0", "id": 1, "method": "get_tx", "params": {"tx_hash": "AB" * 32}})
    assert status == 200 and json.loads(body)["result"]["status"] == "unknown"


@pytest.mark.parametrize("params", [
    {"tx": 5}, {"tx": "00", "timeout": -1}, {"tx": "00", "wait": 1}, {"tx": "00", "colour": "red"}, {},
    ["00"],
])
def test_every_send_tx_refused_for_its_params_is_counted_once(params: Any) -> None:
    service = _service()
    assert _error(service, "send_tx", params)["code"] == -32602
    counted = service.metrics.registry.get_sample_value("alliance_txs_rejected_total", {"reason": "invalid_params"})
    assert counted == 1
