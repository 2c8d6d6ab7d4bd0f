"""A small synchronous JSON-RPC client for alliance nodes."""

from __future__ import annotations

import http.client
import json
import secrets
from typing import Any
from urllib.parse import urlsplit

from nacl.signing import SigningKey

from node.errors import AllianceError
from node.tx import Transaction, sign_tx

DEFAULT_RPC = "http://127.0.0.1:26600"


class RpcError(Exception):
    """An error answer from the node: `code`, `message` and optional `data`."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


class NodeUnreachable(AllianceError):
    """No HTTP answer from the node's RPC address."""


class Client:
    """One keep-alive connection to a node's RPC address."""

    def __init__(self, url: str = DEFAULT_RPC, timeout_s: float = 75.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise AllianceError(f"RPC URL {url!r} must look like http://HOST:PORT")
        self.url = url
        self._host, self._port = parts.hostname, parts.port or 80
        self._timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self._next_id = 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def post_raw(self, body: bytes) -> tuple[int, bytes, bool]:
        """POSTs an encoded body: the HTTP status, the answer, and whether it had to be sent twice
        (a keep-alive connection the server had closed)."""
        for attempt in (1, 2):
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout_s)
                self._conn.request("POST", "/", body, {"Content-Type": "application/json"})
                response = self._conn.getresponse()
                return response.status, response.read(), attempt == 2
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2:
                    raise NodeUnreachable(f"cannot reach node at {self.url}: {exc}") from None
        raise AssertionError("unreachable")

    def post(self, payload: Any) -> Any:
        """POSTs a JSON body and returns the decoded JSON answer (None for 204)."""
        status, data, _ = self.post_raw(json.dumps(payload).encode())
        if status == 204:
            return None
        if status != 200:
            raise NodeUnreachable(f"node at {self.url} answered HTTP {status}: {data[:200]!r}")
        return json.loads(data)

    def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        return {"jsonrpc": "2.0", "method": method, "params": params, "id": self._next_id}

    def call(self, method: str, **params: Any) -> Any:
        return _result(self.post(self._request(method, params)))

    def batch(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Results in call order; a failed call's place holds its RpcError."""
        requests = [self._request(m, p) for m, p in calls]
        answers = {a["id"]: a for a in self.post(requests) or []}
        out: list[Any] = []
        for r in requests:
            try:
                out.append(_result(answers[r["id"]]))
            except RpcError as exc:
                out.append(exc)
        return out

    # ---- conveniences ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("status")
        return result

    def send_tx(self, tx: Transaction, wait: bool = False, timeout_s: float = 10) -> dict[str, Any]:
        result: dict[str, Any] = self.call("send_tx", tx=tx.raw.hex(), wait=wait, timeout=timeout_s)
        return result

    def submit(self, key: SigningKey, family: str, op: str, args: dict[str, Any], wait: bool = True) -> dict[str, Any]:
        """Signs with `key` for this node's chain, submits, and (by default) waits for the commit."""
        chain_id = self.status()["chain_id"]
        tx = sign_tx(key, chain_id, family, op, args, secrets.randbits(64))
        return self.send_tx(tx, wait=wait)

    def query(self, family: str, key: str) -> Any:
        return self.call("query", family=family, key=key)


def _result(answer: dict[str, Any]) -> Any:
    if "error" in answer:
        error = answer["error"]
        raise RpcError(error.get("code", 0), error.get("message", ""), error.get("data"))
    return answer.get("result")
