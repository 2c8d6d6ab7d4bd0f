"""The synchronous client: one keep-alive HTTP connection (http.client) to a node's RPC address."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nacl.signing import SigningKey

from node.chain.tx import Transaction
from node.client import core
from node.client.auth import Credentials, access_denied, unreachable
from node.client.core import Core, Op, T
from node.client.errors import NoAnswer, NodeUnreachable, RpcError
from node.client.events import blocks_subscription, tx_subscription, wait_timed_out, ws_url
from node.client.types import Block, History, KvEntry, Members, NotaryRecord, ProposalInfo, Status, TxInfo
from node.errors import AllianceError

if TYPE_CHECKING:
    from node.client.proofs import VerifiedProof
    from node.client.ws_sync import EventStream

DEFAULT_RPC = "http://127.0.0.1:26600"
# What a request on a keep-alive connection meets when the server had closed it while idle.
STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def split_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AllianceError(f"RPC URL {url!r} must look like http://HOST:PORT or https://HOST:PORT")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise AllianceError(f"RPC URL {url!r} has an invalid port; it must look like http://HOST:PORT") from None
    return parts.hostname, port


def is_https(url: str) -> bool:
    """Whether `url` asks for TLS: its scheme, in any case ("HTTPS://" too), is https."""
    return urlsplit(url).scheme == "https"


class Client:
    """One keep-alive connection to a node's RPC address; `key` signs transactions. An https URL is checked
    against `ca_file` (default: the system's CAs); `token` is sent as a bearer token; `client_cert` and
    `client_key` answer a node that asks for client certificates."""

    def __init__(self, url: str = DEFAULT_RPC, timeout_s: float = 75.0, key: SigningKey | None = None, *,
                 token: str | None = None, ca_file: str | Path | None = None, client_cert: str | Path | None = None,
                 client_key: str | Path | None = None) -> None:
        self._host, self._port = split_url(url)
        self.url = url
        self.credentials = Credentials(token, ca_file, client_cert, client_key)
        self._tls = self.credentials.ssl_context() if is_https(url) else None
        self._timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self._core = Core(key)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def key(self) -> SigningKey | None:
        return self._core.key

    # ---- transport ------------------------------------------------------------------------

    def post_raw(self, body: bytes) -> tuple[int, bytes, bool]:
        """POSTs an encoded body: the HTTP status, the answer, and whether it was sent a second time
        because the server had closed the idle keep-alive connection it first went out on.

        Nothing else is sent twice: after a timeout the node may be acting on the request (NoAnswer)."""
        resent = False
        try:
            if self._conn is not None:
                try:
                    return (*self._exchange(self._conn, body), resent)
                except STALE_CONNECTION:
                    resent = True  # the server closed the idle connection as the request went out
            return (*self._exchange(self._connect(), body), resent)
        except TimeoutError:
            raise NoAnswer(
                f"no answer from node at {self.url} within {self._timeout_s} s; the request may still take effect"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise unreachable(self.url, exc) from None

    def _connect(self) -> http.client.HTTPConnection:
        conn = (http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s) if self._tls is None else
                http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout_s, context=self._tls))
        try:
            conn.connect()
        except TimeoutError:  # not a NoAnswer: nothing was sent
            raise NodeUnreachable(f"cannot reach node at {self.url}: connecting timed out") from None
        self._conn = conn
        return conn

    def _exchange(self, conn: http.client.HTTPConnection, body: bytes) -> tuple[int, bytes]:
        """One request and its answer; the connection is dropped if anything goes wrong."""
        try:
            conn.request("POST", "/", body, {"Content-Type": "application/json", **self.credentials.headers()})
            response = conn.getresponse()
            answer = response.status, response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:  # so that a kept connection is always one that answered and stayed open
            self.close()
        return answer

    def post(self, payload: Any) -> Any:
        """POSTs a JSON body and returns the decoded JSON answer (None for 204)."""
        status, data, _ = self.post_raw(json.dumps(payload).encode())
        if status == 204:
            return None
        denied = access_denied(self.url, status, data)
        if denied is not None:
            raise denied
        if status != 200:
            raise NodeUnreachable(f"node at {self.url} answered HTTP {status}: {data[:200]!r}")
        try:
            return json.loads(data)
        except ValueError:
            raise NodeUnreachable(f"node at {self.url} answered with invalid JSON: {data[:200]!r}") from None

    def _run(self, op: Op[T]) -> T:
        return core.run(op, self.post)

    # ---- raw JSON-RPC: results as the node's JSON -------------------------------------------

    def call(self, method: str, **params: Any) -> Any:
        return self._run(self._core.call(method, params))

    def batch(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Results in call order; a failed call's place holds its RpcError."""
        return self._run(self._core.batch(calls))

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("status")
        return result

    def consensus_state(self) -> dict[str, Any]:
        """This node's view of the round it is deciding: each validator's last messages and what the round lacks."""
        return self._run(self._core.consensus_state())

    def send_tx(self, tx: Transaction, wait: bool = False, timeout_s: float = 10) -> dict[str, Any]:
        result: dict[str, Any] = self.call("send_tx", tx=tx.raw.hex(), wait=wait, timeout=timeout_s)
        return result

    def submit(self, key: SigningKey, family: str, op: str, args: dict[str, Any], wait: bool = True,
               timeout_s: float = 10) -> dict[str, Any]:
        """Signs with `key` for this node's chain, submits, and (by default) waits up to `timeout_s` for the commit."""
        tx = core.build_tx(key, self.status()["chain_id"], family, op, args)
        return self.send_tx(tx, wait=wait, timeout_s=timeout_s)

    def query(self, family: str, key: str, prove: bool = False, height: int | None = None) -> Any:
        """The key's value; with `prove`, its state proof at `height` (default: the tip), for
        `verify_state_proof` (node.client.proofs)."""
        if prove:
            return self._run(self._core.state_proof(family, key, height))
        return self.call("query", family=family, key=key)

    # ---- typed queries ----------------------------------------------------------------------

    def get_status(self) -> Status:
        return self._run(self._core.status())

    def get_tx(self, tx_hash: str | bytes) -> TxInfo:
        return self._run(self._core.get_tx(tx_hash))

    def get_block(self, height: int | str = "latest") -> Block:
        return self._run(self._core.get_block(height))

    def kv_get(self, key: str) -> KvEntry | None:
        return self._run(self._core.kv_get(key))

    def notary_lookup(self, digest: str | bytes) -> NotaryRecord | None:
        return self._run(self._core.notary_lookup(digest))

    def notary_lookup_file(self, path: str | Path) -> NotaryRecord | None:
        return self._run(self._core.notary_lookup_file(path))

    def get_members(self, height: int | None = None) -> Members:
        """The membership in force at `height` (default: the latest block), with the pending proposals."""
        return self._run(self._core.get_members(height))

    def get_history(self, family: str, key: str | bytes, limit: int | None = None,
                    before_height: int | None = None) -> History:
        """A page of a record's history (kv key, or notary digest as hex or bytes), newest first."""
        return self._run(self._core.get_history(family, key, limit, before_height))

    def get_proposal(self, proposal: str | bytes) -> ProposalInfo:
        """A governance proposal by its id (the tx_hash of its propose); NotFound if there is none."""
        return self._run(self._core.get_proposal(proposal))

    # ---- typed transactions -----------------------------------------------------------------

    def sign(self, family: str, op: str, args: dict[str, Any], nonce: int | None = None) -> Transaction:
        """A transaction signed with this client's key for the node's chain (fresh random nonce)."""
        return self._run(self._core.sign(family, op, args, nonce))

    def send(self, tx: Transaction, wait: bool = True, timeout_s: float = 10) -> TxInfo:
        """Submits one transaction; committed TxInfo when waiting, else status "pending"."""
        return self._run(self._core.send(tx, wait, timeout_s))

    def send_batch(self, txs: list[Transaction], wait: bool = False, timeout_s: float = 10) -> list[TxInfo | RpcError]:
        """Submits all in one JSON-RPC batch; per transaction its TxInfo or its typed RpcError."""
        return self._run(self._core.send_batch(txs, wait, timeout_s))

    def kv_put(self, key: str, value: bytes | str, wait: bool = True, timeout_s: float = 10) -> TxInfo:
        return self._run(self._core.kv_put(key, value, wait, timeout_s))

    def kv_delete(self, key: str, wait: bool = True, timeout_s: float = 10) -> TxInfo:
        return self._run(self._core.kv_delete(key, wait, timeout_s))

    def notarize(self, digest: str | bytes, meta: str = "", wait: bool = True, timeout_s: float = 10) -> TxInfo:
        return self._run(self._core.notarize(digest, meta, wait, timeout_s))

    def notarize_file(self, path: str | Path, meta: str = "", wait: bool = True, timeout_s: float = 10) -> TxInfo:
        return self._run(self._core.notarize_file(path, meta, wait, timeout_s))

    def propose(self, change: dict[str, Any], expires: int | None = None, wait: bool = True,
                timeout_s: float = 10) -> TxInfo:
        """Proposes a membership change ({"kind": ..., fields}; keys as hex or bytes), signed with an admin's
        key; the proposal id is the returned tx_hash. A committed refusal has a non-zero `code`."""
        return self._run(self._core.propose(change, expires, wait, timeout_s))

    def approve(self, proposal: str | bytes, wait: bool = True, timeout_s: float = 10) -> TxInfo:
        """Adds this admin's approval to a proposal; the one that reaches the threshold passes it."""
        return self._run(self._core.approve(proposal, wait, timeout_s))

    # ---- events -----------------------------------------------------------------------------

    def blocks(self, open_timeout_s: float = 10) -> EventStream[Block]:
        """Every block the node commits from now on: `with client.blocks() as blocks: for block in blocks: ...`."""
        from node.client.ws_sync import EventStream  # imported when used: only events need websockets

        return EventStream(ws_url(self.url), blocks_subscription(self._core), open_timeout_s, self.credentials)

    def wait_for_tx(self, tx_hash: str | bytes, timeout_s: float = 30) -> TxInfo:
        """The transaction once committed (at once if it already is); CommitTimeout after `timeout_s`."""
        from node.client.ws_sync import EventStream

        deadline = time.monotonic() + timeout_s
        with EventStream(ws_url(self.url), tx_subscription(self._core, tx_hash), timeout_s, self.credentials) as stream:
            try:
                return stream.next_event(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise wait_timed_out(tx_hash, timeout_s) from None

    # ---- proofs -----------------------------------------------------------------------------

    def get_proof(self, tx_hash: str | bytes) -> dict[str, Any]:
        """The node's proof of a committed transaction (JSON, checkable offline with verify_proof)."""
        return self._run(self._core.get_proof(tx_hash))

    def get_verified_proof(
        self,
        tx_hash: str | bytes,
        genesis: str | Path | None = None,
        *,
        chain_id: str | None = None,
        validators: Sequence[str | bytes] | None = None,
    ) -> VerifiedProof:
        """Fetches a proof and checks it against the genesis (or chain id and validators), not the node."""
        return self._run(self._core.verified_proof(tx_hash, genesis, chain_id, validators))
