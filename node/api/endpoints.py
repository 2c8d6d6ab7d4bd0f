"""The node's two HTTP apps: JSON-RPC at POST / (beside /ws) and the web console at GET /, and the
operations endpoints."""

from __future__ import annotations

from node.api.access import AccessGate
from node.api.console_files import ConsoleFiles, load_static
from node.api.http_server import RPC_BODY_BYTES_MAX, BodyTooLarge, Receive, Scope, Send, read_body, respond, respond_json
from node.api.rpc import RpcService
from node.api.status import NodeStatus
from node.ops.metrics import Metrics


class RpcApp:
    """The ASGI app of the RPC listener's HTTP requests: JSON-RPC, and the console's static files."""

    def __init__(self, rpc: RpcService, gate: AccessGate, console: ConsoleFiles | None = None) -> None:
        self.rpc = rpc
        self.gate = gate  # who may call what
        self.console = console if console is not None else ConsoleFiles(load_static())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.console.serves(scope):
            return await self.console(scope, receive, send)
        if scope["path"] != "/":
            return await respond_json(send, 404, {"error": "not found; JSON-RPC is served at POST /"})
        if scope["method"] != "POST":
            return await respond_json(send, 405, {"error": "method not allowed; use POST / (the console is at GET /)"})
        try:
            body = await read_body(scope, receive, RPC_BODY_BYTES_MAX)
        except BodyTooLarge:
            return await respond_json(send, 413, {"error": f"request body over {RPC_BODY_BYTES_MAX} bytes"})
        if not await self.gate.admit_call(scope, body, send):
            return
        answer = await self.rpc.handle(body)
        if answer is None:
            return await respond(send, 204, b"")
        await respond(send, 200, self.rpc.encode(answer))


class OpsApp:
    """The ASGI app of the metrics listener: /metrics, /healthz and /readyz."""

    def __init__(self, metrics: Metrics, status: NodeStatus) -> None:
        self.metrics = metrics
        self.status = status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            return await respond_json(send, 405, {"error": "method not allowed; use GET"})
        path = scope["path"]
        if path == "/metrics":
            return await respond(send, 200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        if path == "/healthz":
            ok = self.status.storage_open
            return await respond_json(send, 200 if ok else 503, {"ok": ok})
        if path == "/readyz":
            reasons = self.status.readiness()
            return await respond_json(send, 503 if reasons else 200, {"ready": not reasons, "reasons": reasons,
                                                                     "sync": self.status.sync()})
        await respond_json(send, 404, {"error": "not found; try /metrics, /healthz or /readyz"})
