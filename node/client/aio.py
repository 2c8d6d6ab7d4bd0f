"""The trio client: the same operations as Client, over httpx.AsyncClient."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
import trio
from nacl.signing import SigningKey

from node.chain.tx import Transaction
from node.client.auth import Credentials, access_denied, unreachable
from node.client.core import Core, Op, T
from node.client.errors import NoAnswer, NodeUnreachable, RpcError
from node.client.events import blocks_subscription, tx_subscription, wait_timed_out, ws_url
from node.client.sync import DEFAULT_RPC, is_https, split_url
from node.client.types import Block, History, KvEntry, Members, NotaryRecord, ProposalInfo, Status, TxInfo

if TYPE_CHECKING:
    from node.client.proofs import VerifiedProof
    from node.client.ws_trio import AsyncEventStream


class AsyncClient:
    """A pooled keep-alive HTTP client of one node, for trio; `key` signs transactions."""

    def __init__(self, url: str = DEFAULT_RPC, timeout_s: float = 75.0, key: SigningKey | None = None, *,
                 token: str | None = None, ca_file: str | Path | None = None, client_cert: str | Path | None = None,
                 client_key: str | Path | None = None) -> None:
        split_url(url)  # a malformed URL is refused here, not at the first call
        self.url = url
        self._timeout_s = timeout_s
        self.credentials = Credentials(token, ca_file, client_cert, client_key)
        verify = self.credentials.ssl_context() if is_https(url) else True
        # Proxy settings in the environment are ignored, as by Client and the event streams.
        self._http = httpx.AsyncClient(timeout=timeout_s, trust_env=False, verify=verify,
                                       headers=self.credentials.headers())
        self._core = Core(key)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def key(self) -> SigningKey | None:
        return self._core.key

    # ---- transport ------------------------------------------------------------------------

    async def post(self, payload: Any) -> Any:
        """POSTs a JSON body and returns the decoded JSON answer (None for 204)."""
        try:
            response = await self._http.post(
                self.url, content=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
            )
        except (httpx.ReadTimeout, httpx.WriteTimeout):
            raise NoAnswer(
                f"no answer from node at {self.url} within {self._timeout_s} s; the request may still take effect"
            ) from None
        except httpx.HTTPError as exc:
            raise unreachable(self.url, exc) from None
        if response.status_code == 204:
            return None
        body = response.content
        denied = access_denied(self.url, response.status_code, body)
        if denied is not None:
            raise denied
        if response.status_code != 200:
            raise NodeUnreachable(f"node at {self.url} answered HTTP {response.status_code}: {body[:200]!r}")
        try:
            return json.loads(body)
        except ValueError:
            raise NodeUnreachable(f"node at {self.url} answered with invalid JSON: {body[:200]!r}") from None

    async def _run(self, op: Op[T]) -> T:
        try:
            payload = op.send(None)
            while True:
                payload = op.send(await self.post(payload))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    # ---- raw JSON-RPC: results as the node's JSON -------------------------------------------

    async def call(self, method: str, **params: Any) -> Any:
        return await self._run(self._core.call(method, params))

    async def batch(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Results in call order; a failed call's place holds its RpcError."""
        return await self._run(self._core.batch(calls))

    async def query(self, family: str, key: str, prove: bool = False, height: int | None = None) -> Any:
        """The key's value; with `prove`, its state proof at `height` (default: the tip)."""
        if prove:
            return await self._run(self._core.state_proof(family, key, height))
        return await self.call("query", family=family, key=key)

    # ---- typed queries ----------------------------------------------------------------------

    async def get_status(self) -> Status:
        return await self._run(self._core.status())

    async def get_tx(self, tx_hash: str | bytes) -> TxInfo:
        return await self._run(self._core.get_tx(tx_hash))

    async def get_block(self, height: int | str = "latest") -> Block:
        return await self._run(self._core.get_block(height))

    async def kv_get(self, key: str) -> KvEntry | None:
        return await self._run(self._core.kv_get(key))

    async def notary_lookup(self, digest: str | bytes) -> NotaryRecord | None:
        return await self._run(self._core.notary_lookup(digest))

    async def notary_lookup_file(self, path: str | Path) -> NotaryRecord | None:
        return await self._run(self._core.notary_lookup_file(path))

    async def consensus_state(self) -> dict[str, Any]:
        """This node's view of the round it is deciding: each validator's last messages and what the round lacks."""
        return await self._run(self._core.consensus_state())

    async def get_members(self, height: int | None = None) -> Members:
        """The membership in force at `height` (default: the latest block), with the pending proposals."""
        return await self._run(self._core.get_members(height))

    async def get_history(self, family: str, key: str | bytes, limit: int | None = None,
                    before_height: int | None = None) -> History:
        """A page of a record's history (kv key, or notary digest as hex or bytes), newest first."""
        return await self._run(self._core.get_history(family, key, limit, before_height))

    async def get_proposal(self, proposal: str | bytes) -> ProposalInfo:
        """A governance proposal by its id (the tx_hash of its propose); NotFound if there is none."""
        return await self._run(self._core.get_proposal(proposal))

    # ---- typed transactions -----------------------------------------------------------------

    async def sign(self, family: str, op: str, args: dict[str, Any], nonce: int | None = None) -> Transaction:
        """A transaction signed with this client's key for the node's chain (fresh random nonce)."""
        return await self._run(self._core.sign(family, op, args, nonce))

    async def send(self, tx: Transaction, wait: bool = True, timeout_s: float = 10) -> TxInfo:
        """Submits one transaction; committed TxInfo when waiting, else status "pending"."""
        return await self._run(self._core.send(tx, wait, timeout_s))

    async def send_batch(
        self, txs: list[Transaction], wait: bool = False, timeout_s: float = 10
    ) -> list[TxInfo | RpcError]:
        """Submits all in one JSON-RPC batch; per transaction its TxInfo or its typed RpcError."""
        return await self._run(self._core.send_batch(txs, wait, timeout_s))

    async def kv_put(self, key: str, value: bytes | str, wait: bool = True, timeout_s: float = 10) -> TxInfo:
        return await self._run(self._core.kv_put(key, value, wait, timeout_s))

    async def kv_delete(self, key: str, wait: bool = True, timeout_s: float = 10) -> TxInfo:
        return await self._run(self._core.kv_delete(key, wait, timeout_s))

    async def notarize(self, digest: str | bytes, meta: str = "", wait: bool = True, timeout_s: float = 10) -> TxInfo:
        return await self._run(self._core.notarize(digest, meta, wait, timeout_s))

    async def notarize_file(self, path: str | Path, meta: str = "", wait: bool = True, timeout_s: float = 10) -> TxInfo:
        return await self._run(self._core.notarize_file(path, meta, wait, timeout_s))

    async def propose(self, change: dict[str, Any], expires: int | None = None, wait: bool = True,
                timeout_s: float = 10) -> TxInfo:
        """Proposes a membership change ({"kind": ..., fields}; keys as hex or bytes), signed with an admin's
        key; the proposal id is the returned tx_hash. A committed refusal has a non-zero `code`."""
        return await self._run(self._core.propose(change, expires, wait, timeout_s))

    async def approve(self, proposal: str | bytes, wait: bool = True, timeout_s: float = 10) -> TxInfo:
        """Adds this admin's approval to a proposal; the one that reaches the threshold passes it."""
        return await self._run(self._core.approve(proposal, wait, timeout_s))

    # ---- events -----------------------------------------------------------------------------

    def blocks(self, open_timeout_s: float = 10) -> AsyncEventStream[Block]:
        """Every block the node commits from now on: `async with client.blocks() as blocks: async for ...`."""
        from node.client.ws_trio import AsyncEventStream

        return AsyncEventStream(ws_url(self.url), blocks_subscription(self._core), open_timeout_s,
                                self.credentials)

    async def wait_for_tx(self, tx_hash: str | bytes, timeout_s: float = 30) -> TxInfo:
        """The transaction once committed (at once if it already is); CommitTimeout after `timeout_s`."""
        from node.client.ws_trio import AsyncEventStream

        with trio.move_on_after(timeout_s):
            async with AsyncEventStream(ws_url(self.url), tx_subscription(self._core, tx_hash), timeout_s,
                                         self.credentials) as stream:
                return await stream.next_event()
        raise wait_timed_out(tx_hash, timeout_s)

    # ---- proofs -----------------------------------------------------------------------------

    async def get_proof(self, tx_hash: str | bytes) -> dict[str, Any]:
        """The node's proof of a committed transaction (JSON, checkable offline with verify_proof)."""
        return await self._run(self._core.get_proof(tx_hash))

    async def get_verified_proof(
        self,
        tx_hash: str | bytes,
        genesis: str | Path | None = None,
        *,
        chain_id: str | None = None,
        validators: Sequence[str | bytes] | None = None,
    ) -> VerifiedProof:
        """Fetches a proof and checks it against the genesis (or chain id and validators), not the node."""
        return await self._run(self._core.verified_proof(tx_hash, genesis, chain_id, validators))
