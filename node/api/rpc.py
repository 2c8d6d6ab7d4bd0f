"""JSON-RPC 2.0 methods of the client protocol (section 3)."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import trio

from node.api.lookup import ChainLookup, archived_proof, build_proof, build_state_proof, provable_heights
from node.api.history import HistoryMethods
from node.api.members import MemberMethods
from node.api.params import check_names as _params, hash_param as _hash_param, height_param
from node.chain.execution import KV_KEY_BYTES_MAX, kv_key, notary_key
from node.chain.ledger import BlockPruned, Ledger
from node.chain.state_proof import KeyInvalid, query_result
from node.pipeline.driver import BlockingRunner
from node.api.jsonrpc import (
    COMMIT_TIMEOUT, DUPLICATE_TX, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, NOT_AUTHORISED,
    NOT_FOUND, OVERLOADED, TX_REFUSED, Params, RpcError, check_call, encode, expects_answer, is_text,
    fault_event, parse, response,
)
from node.chain.tx import TX_BYTES_MAX, Transaction
from node.disk.archive import ArchiveError, SegmentFault
from node.ops.metrics import Metrics
from node.ops.ratelog import RateLog
from node.txpool.admission import DUPLICATE, UNAUTHORISED, Admission, NotAMember, Refused
from node.txpool.mempool import MempoolFull
from storage.kv import StoreCorrupt

SEND_TX_TIMEOUT_S_DEFAULT = 10
BATCH_CALLS_MAX = 1000  # a 1 MiB body could otherwise hold ~10,000 calls of a second's work each
SEND_TX_TIMEOUT_S_MAX = 60
_BYTES_HEX = re.compile("(?:[0-9a-fA-F]{2})*")

log = logging.getLogger("alliance.rpc")

Method = Callable[[Params], Awaitable[Any]]
NO_METHODS: Mapping[str, Method] = MappingProxyType({})


def _refused(reason: str, detail: str) -> RpcError:
    return RpcError(TX_REFUSED, f"transaction refused: {detail}", {"reason": reason})


def _send_params(params: Params) -> tuple[bool, float]:
    """send_tx's wait and timeout, checked."""
    _params(params, ("tx",), ("wait", "timeout"))
    wait, timeout = params.get("wait", False), params.get("timeout", SEND_TX_TIMEOUT_S_DEFAULT)
    if not isinstance(wait, bool):
        raise RpcError(INVALID_PARAMS, "wait must be a boolean")
    if type(timeout) not in (int, float) or not 0 < timeout <= SEND_TX_TIMEOUT_S_MAX:
        raise RpcError(INVALID_PARAMS, f"timeout must be a number of seconds in (0, {SEND_TX_TIMEOUT_S_MAX}]")
    return wait, float(timeout)


def _outcome_error(outcome: Refused | MempoolFull | NotAMember) -> RpcError:
    if isinstance(outcome, MempoolFull):
        return RpcError(OVERLOADED, "node overloaded: mempool full; retry later")
    if isinstance(outcome, NotAMember):
        return RpcError(OVERLOADED, "this node is not a member of the chain now and cannot pass transactions "
                        "on; send them to a member's node", {"reason": "not_a_member"})
    return _refusal_error(outcome)


def _refusal_error(refused: Refused) -> RpcError:
    if refused.kind == UNAUTHORISED:
        return RpcError(NOT_AUTHORISED, "sender not authorised")
    if refused.kind == DUPLICATE:
        return RpcError(DUPLICATE_TX, "duplicate transaction")
    return _refused(refused.reason, str(refused))


class CommitWaiter(Protocol):
    """Waits until a transaction is committed (the driver)."""

    async def wait_committed(self, tx_hash: bytes, timeout_s: float) -> bool: ...


class RpcService:
    def __init__(
        self,
        ledger: Ledger,
        commits: CommitWaiter,
        admission: Admission,
        lookup: ChainLookup,
        metrics: Metrics,
        status: Callable[[], dict[str, Any]],
        on_admitted: Callable[[Transaction], None],
        on_store_damaged: Callable[[StoreCorrupt], object],
        run_blocking: BlockingRunner = trio.to_thread.run_sync,
        archive: Path | None = None,
        consensus: Mapping[str, Method] = NO_METHODS,
    ) -> None:
        self.ledger = ledger
        self.archive = archive  # get_proof of a pruned transaction looks there (storage.archive_dir)
        self.commits = commits  # send_tx with wait=true
        self.run_blocking = run_blocking  # builds proofs off the event loop
        self.admission = admission
        self.lookup = lookup  # the get_block and get_tx objects
        self.metrics = metrics
        self.status = status
        self.on_admitted = on_admitted  # a client's transaction, to be gossiped
        self.on_store_damaged = on_store_damaged  # stops the node
        self.faults = RateLog(log, logging.ERROR)
        self.methods: dict[str, Method] = {
            "status": self._status,
            "get_tx": self._get_tx,
            "get_block": self._get_block,
            "get_proof": self._get_proof,
            "query": self._query,
            **MemberMethods(ledger).methods(),
            **HistoryMethods(ledger).methods(),
            **consensus,  # consensus_state (node/api/consensus_view.py)
        }

    # ---- envelope ---------------------------------------------------------------------

    async def handle(self, body: bytes, extra: Mapping[str, Method] = NO_METHODS) -> Any:
        """The JSON response for a request body, or None when nothing is to be answered.

        `extra` are methods of the caller's connection (a WebSocket's subscribe and unsubscribe),
        answered with the same envelope, errors and metrics.
        """
        try:
            request = parse(body)
        except RpcError as exc:
            return response(None, error=exc)
        if not isinstance(request, list):
            [answer] = await self._answer([request], extra)
            return answer
        if not request:
            return response(None, error=RpcError(INVALID_REQUEST, "invalid request: empty batch"))
        if len(request) > BATCH_CALLS_MAX:
            detail = f"a batch of {len(request)} calls; at most {BATCH_CALLS_MAX}"
            return response(None, error=RpcError(INVALID_REQUEST, f"invalid request: {detail}"))
        answered = [answer for answer in await self._answer(request, extra) if answer is not None]
        return answered or None

    def encode(self, answer: Any) -> bytes:
        """The body of an answer: strict JSON, whatever it holds."""
        return encode(answer, self.faults)

    async def _answer(self, calls: list[Any], extra: Mapping[str, Method]) -> list[dict[str, Any] | None]:
        """The answers to `calls`, in order: send_tx calls together, so that one worker call checks their signatures."""
        answers: list[dict[str, Any] | None] = [None] * len(calls)
        sends = [i for i, call in enumerate(calls) if _awaits(call)]
        for i, call in enumerate(calls):
            if not _awaits(call):
                answers[i] = await self._call(call, extra)
        if sends:
            try:
                sent = await self._send_txs([calls[i] for i in sends])
            except StoreCorrupt as exc:
                self.on_store_damaged(exc)
                damage = RpcError(INTERNAL_ERROR, "the node's store is damaged; it stops")
                sent = [self._answered(calls[i], "send_tx", error=damage) for i in sends]
            except Exception as exc:
                self.faults.log(fault_event("send_tx", exc), exc)
                sent = [self._answered(calls[i], "send_tx", error=RpcError(INTERNAL_ERROR, "internal error"))
                        for i in sends]
            for i, answer in zip(sends, sent):
                answers[i] = answer
        return answers

    async def _call(self, call: Any, extra: Mapping[str, Method]) -> dict[str, Any] | None:
        method = "invalid"
        try:
            method, params = check_call(call)
            handler = extra.get(method) or self.methods.get(method)
            if handler is None:
                method = "unknown"
                raise RpcError(METHOD_NOT_FOUND, "method not found")
            result = await handler(params)
        except RpcError as exc:
            return self._answered(call, method, error=exc)
        except BlockPruned as exc:
            return self._answered(call, method, error=_pruned(str(exc), exc.base))
        except StoreCorrupt as exc:
            self.on_store_damaged(exc)
            return self._answered(call, method, error=RpcError(INTERNAL_ERROR, "the node's store is damaged; it stops"))
        except Exception as exc:
            self.faults.log(fault_event(method, exc), exc)
            return self._answered(call, method, error=RpcError(INTERNAL_ERROR, "internal error"))
        return self._answered(call, method, result)

    def _answered(
        self, call: Any, method: str, result: Any = None, error: RpcError | None = None
    ) -> dict[str, Any] | None:
        """Counts the call and builds its response: None for a notification, unless an internal error."""
        self.metrics.rpc_requests.labels(method, "ok" if error is None else "error").inc()
        if expects_answer(call) or (error is not None and error.code == INTERNAL_ERROR):
            return response(call, result, error)
        return None

    # ---- methods --------------------------------------------------------------------------

    async def _status(self, params: Params) -> Any:
        _params(params, ())
        return self.status()

    async def _send_txs(self, calls: list[Any]) -> list[dict[str, Any] | None]:
        """Answers send_tx calls: each checked in turn, all their signatures verified in one go."""
        answers: list[dict[str, Any] | None] = [None] * len(calls)
        checked: list[tuple[int, Transaction, bool, float]] = []  # call index, tx, wait, timeout
        for i, call in enumerate(calls):
            try:
                _, params = check_call(call)
            except RpcError as exc:
                counted = self._rejected(exc) if exc.code == INVALID_PARAMS else exc  # a send_tx's params, by position
                answers[i] = self._answered(call, "invalid", error=counted)
                continue
            try:
                wait, timeout = _send_params(params)
            except RpcError as exc:
                answers[i] = self._answered(call, "send_tx", error=self._rejected(exc))
                continue
            try:
                checked.append((i, self._checked_tx(params["tx"]), wait, timeout))
            except RpcError as exc:  # counted by _checked_tx
                answers[i] = self._answered(call, "send_tx", error=exc)
        outcomes = await self.admission.admit([tx for _, tx, _, _ in checked])
        waiting: list[tuple[int, Transaction, float]] = []
        for (i, tx, wait, timeout), outcome in zip(checked, outcomes):
            if not isinstance(outcome, Transaction):
                answers[i] = self._answered(calls[i], "send_tx", error=self._rejected(_outcome_error(outcome)))
                continue
            self.on_admitted(outcome)
            if wait:
                waiting.append((i, tx, timeout))
            else:
                answers[i] = self._answered(calls[i], "send_tx", {"tx_hash": tx.hash.hex()})
        if waiting:
            async with trio.open_nursery() as nursery:
                for i, tx, timeout in waiting:
                    nursery.start_soon(self._answer_when_committed, calls, answers, i, tx, timeout)
        return answers

    async def _answer_when_committed(
        self, calls: list[Any], answers: list[dict[str, Any] | None], i: int, tx: Transaction, timeout: float
    ) -> None:
        if await self.commits.wait_committed(tx.hash, timeout):
            answers[i] = self._answered(calls[i], "send_tx", self.lookup.tx(tx.hash))
        else:
            error = RpcError(COMMIT_TIMEOUT, "timed out waiting for commit; the transaction may still commit",
                             {"tx_hash": tx.hash.hex()})
            answers[i] = self._answered(calls[i], "send_tx", error=error)

    def _checked_tx(self, tx_hex: Any) -> Transaction:
        """The decoded transaction if it passes the checks before its signature; raises RpcError."""
        try:
            if not isinstance(tx_hex, str):
                raise RpcError(INVALID_PARAMS, "tx must be a hex string")
            if len(tx_hex) > 2 * TX_BYTES_MAX:
                raise _refused("oversize", f"transaction is more than {TX_BYTES_MAX} bytes")
            if _BYTES_HEX.fullmatch(tx_hex) is None:
                raise _refused("malformed", "tx is not hex of whole bytes")
            raw = bytes.fromhex(tx_hex)
            try:
                return self.admission.check(raw)
            except (Refused, MempoolFull, NotAMember) as exc:
                raise _outcome_error(exc) from None
        except RpcError as exc:
            raise self._rejected(exc) from None

    def _rejected(self, error: RpcError) -> RpcError:
        self.metrics.txs_rejected.labels(_rejection_reason(error)).inc()
        return error

    async def _get_tx(self, params: Params) -> Any:
        _params(params, ("tx_hash",))
        found = self.lookup.tx(_hash_param(params, "tx_hash"))
        if found["status"] == "unknown":
            self._unknown_pruned()
        return found

    async def _get_block(self, params: Params) -> Any:
        _params(params, ("height",))
        return self.lookup.block(height_param(params["height"], self.ledger.height))

    async def _get_proof(self, params: Params) -> Any:
        _params(params, ("tx_hash",))
        tx_hash = _hash_param(params, "tx_hash")
        # Asked before the ledger: a commit writes the ledger first, then leaves the mempool.
        pending = self.admission.pending_tx(tx_hash) is not None
        proof = await self.run_blocking(build_proof, self.ledger, tx_hash)
        if proof is None and self.archive is not None and self.ledger.base > 1:
            proof = await self.run_blocking(self._from_archive, self.archive, tx_hash)
        if proof is not None:
            return proof
        if pending:
            raise RpcError(NOT_FOUND, "no proof: the transaction is pending, not committed yet", {"status": "pending"})
        self._unknown_pruned()
        raise RpcError(NOT_FOUND, "no proof: unknown transaction", {"status": "unknown"})

    def _from_archive(self, archive: Path, tx_hash: bytes) -> dict[str, Any] | None:
        try:
            return archived_proof(self.ledger, archive, tx_hash)
        except (OSError, ArchiveError, SegmentFault) as exc:  # the node's own store is fine: it answers pruned
            self.faults.log(f"event=archive_unreadable archive={archive}", exc)
            return None

    def _unknown_pruned(self) -> None:
        """A node that pruned blocks deleted their transactions' entries too (docs/operations.md): a hash
        it does not know may be of a pruned block, which it says instead of "unknown"."""
        base = self.ledger.base
        if base > 1:
            raise _pruned(f"unknown transaction: it may be in a block this node pruned (it keeps blocks from {base})",
                          base, status="unknown")

    async def _query(self, params: Params) -> Any:
        _params(params, ("family", "key"), ("prove", "height"))
        family, key = params["family"], params["key"]
        if params.get("prove", False) is not False:
            return await self._state_proof(params)
        height = height_param(params.get("height", "latest"), self.ledger.height)
        if height != self.ledger.height:
            raise RpcError(NOT_FOUND, f"no state at height {height}: this node answers from its latest height",
                           {"reason": "state_not_kept", "heights": provable_heights(self.ledger)})
        if family == "kv":
            if not is_text(key):
                raise RpcError(INVALID_PARAMS, "kv key must be a string of valid Unicode (no lone surrogates)")
            valid = 1 <= len(key.encode()) <= KV_KEY_BYTES_MAX
            return query_result("kv", self.ledger.read_state(kv_key(key))) if valid else None
        if family == "notary":
            return query_result("notary", self.ledger.read_state(notary_key(_hash_param(params, "key"))))
        raise RpcError(INVALID_PARAMS, 'family must be "kv" or "notary"')

    async def _state_proof(self, params: Params) -> Any:
        """This node's addition to `query` (docs/proofs.md): the value with its proof, at a provable height."""
        if params["prove"] is not True:
            raise RpcError(INVALID_PARAMS, "prove must be true or false")
        heights = provable_heights(self.ledger)
        height = height_param(params.get("height", "latest"), self.ledger.height)
        if height not in heights:
            raise RpcError(NOT_FOUND, f"no state proof at height {height}: this node proves state at {heights}",
                           {"reason": "state_not_kept", "heights": heights})
        try:
            key = params["key"]
            if params["family"] == "notary" and isinstance(key, str):
                key = key.lower()  # a digest is read in either case, as everywhere, and proved in lowercase
            proof = await self.run_blocking(build_state_proof, self.ledger, params["family"], key)
        except KeyInvalid as exc:
            raise RpcError(INVALID_PARAMS, str(exc)) from None
        if proof is None or proof["header"]["height"] != height:
            # A block committed between the two reads: the proof is of a newer tip than asked for.
            latest = params.get("height", "latest") == "latest"
            if proof is None or not latest:
                raise RpcError(NOT_FOUND, f"no state proof at height {height}",
                               {"reason": "state_not_kept", "heights": provable_heights(self.ledger)})
        return proof


def _pruned(message: str, base: int, **data: Any) -> RpcError:
    return RpcError(NOT_FOUND, message, {**data, "reason": "pruned", "base": base})


_REJECTION_REASONS = {NOT_AUTHORISED: "unauthorised", DUPLICATE_TX: "duplicate", OVERLOADED: "mempool_full"}


def _rejection_reason(error: RpcError) -> str:
    if error.code in (TX_REFUSED, OVERLOADED) and error.data:
        return str(error.data["reason"])
    return _REJECTION_REASONS.get(error.code, "invalid_params")


def _awaits(call: Any) -> bool:
    return isinstance(call, dict) and call.get("method") == "send_tx"
