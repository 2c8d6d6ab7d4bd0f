"""Who may call what on the RPC listener: the anonymous access mode, bearer tokens and their roles
(docs/configuration.md, "Access control").

A token file holds only the SHA-256 of each token, so reading it gives no one a token. A request's
token is hashed and compared with every stored hash in constant time."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from node.api.jsonrpc import NOT_AUTHORISED, RpcError, expects_answer, parse, response
from node.api.http_server import Headers, Scope, Send, refuse_websocket, respond_json
from node.config import read_toml
from node.errors import ConfigError
from node.ops.metrics import Metrics

READ, SUBMIT, SUBSCRIBE = "read", "submit", "subscribe"
ROLES = (READ, SUBMIT, SUBSCRIBE)
ALL_ROLES = frozenset(ROLES)
ANONYMOUS_ROLES = {"open": ALL_ROLES, "read": frozenset({READ}), "closed": frozenset()}
SUBMIT_METHODS = frozenset({"send_tx"})
SOCKET_METHODS = frozenset({"subscribe", "unsubscribe"})  # the /ws connection's own; /ws needs SUBSCRIBE anyway
TOKENS_MAX = 10_000
TOKEN_BYTES = 32
OK, UNAUTHENTICATED, FORBIDDEN = "ok", "unauthenticated", "forbidden"
REFUSAL_REASONS = (UNAUTHENTICATED, FORBIDDEN)


@dataclass(frozen=True)
class Token:
    name: str
    sha256: bytes
    roles: frozenset[str]


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    """A random bearer token: 43 URL-safe characters (256 bits), never starting with "-" (else
    `--token -x...` reads as an option and a missing token)."""
    while True:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        if not token.startswith("-"):
            return token


def role_needed(method: Any) -> str:
    """The role a JSON-RPC method needs; anything not a submitting method (even unknown, or not a
    string at all) is a read."""
    if not isinstance(method, str):
        return READ  # answered as an invalid request; a list or object would not even hash
    return SUBMIT if method in SUBMIT_METHODS else SUBSCRIBE if method in SOCKET_METHODS else READ


def roles_needed(body: bytes) -> frozenset[str]:
    """The roles every call of a JSON-RPC body (one call or a batch) needs; a body that does not parse
    needs READ (it is answered with an error, which tells nothing of the chain). It is parsed as the
    service parses it, so that every call the service would answer is looked at."""
    try:
        request = parse(body)
    except RpcError:
        return frozenset({READ})
    calls = request if isinstance(request, list) else [request]
    return frozenset(role_needed(call.get("method") if isinstance(call, dict) else None) for call in calls) or \
        frozenset({READ})


class AccessPolicy:
    """The access mode and the tokens of one RPC listener."""

    def __init__(self, mode: str, tokens: Iterable[Token] = ()) -> None:
        self.mode = mode
        self.anonymous = ANONYMOUS_ROLES[mode]
        self.tokens = tuple(tokens)

    @property
    def everything_open(self) -> bool:
        """Whether no request needs a token."""
        return self.anonymous == ALL_ROLES

    def roles_of(self, token: str | None) -> frozenset[str] | None:
        """What a request with `token` (None: none) may do; None for a token that is not known."""
        if token is None:
            return self.anonymous
        digest = token_hash(token)
        found: frozenset[str] | None = None
        for known in self.tokens:  # no early exit: the time taken says nothing of which hash matched
            if hmac.compare_digest(known.sha256, digest):
                found = known.roles | self.anonymous
        return found

    def decide(self, token: str | None, needed: frozenset[str]) -> str:
        """OK, UNAUTHENTICATED (no token where one is needed, or one that is not known: 401) or FORBIDDEN
        (a known token without a role needed: 403)."""
        roles = self.roles_of(token)
        if roles is not None and needed <= roles:
            return OK
        return FORBIDDEN if roles is not None and token is not None else UNAUTHENTICATED


def bearer_token(scope: dict[str, Any], query_too: bool = False) -> str | None:
    """The token of a request: `Authorization: Bearer T`, or (on a WebSocket handshake, which browsers
    cannot give headers) the query parameter access_token. A malformed Authorization is an empty token,
    which no stored hash matches."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    if query_too:
        found = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("access_token")
        if found:
            return str(found[0])
    return None


def _other_site(scope: dict[str, Any]) -> bool:
    """Whether a handshake comes from a browser page of another site than this node: its Origin (which
    browsers always send, and other clients do not) names another host and port than its Host."""
    headers = dict(scope.get("headers", []))
    origin, host = headers.get(b"origin"), headers.get(b"host")
    if origin is None:
        return False
    return host is None or urlsplit(origin.decode("latin-1")).netloc.lower() != host.decode("latin-1").lower()


# ---- the tokens file -------------------------------------------------------------------------------


def _check_mode(path: Path) -> None:
    mode = path.stat().st_mode
    if not stat.S_ISREG(mode):
        raise ConfigError(f"tokens file {path} is not a file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"tokens file {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
                          f"run: chmod 600 {path}")


def _token(entry: Any, path: Path, i: int) -> Token:
    where = f"tokens file {path}: token {i + 1}"
    if not isinstance(entry, dict) or set(entry) - {"name", "sha256", "roles"}:
        raise ConfigError(f"{where} must be a table of name, sha256 and roles")
    name, digest, roles = entry.get("name"), entry.get("sha256"), entry.get("roles")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: name must be a non-empty string")
    try:
        raw = bytes.fromhex(digest) if isinstance(digest, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"{where} ({name}): sha256 must be 64 hex characters (the SHA-256 of the token)")
    if not isinstance(roles, list) or not roles or any(role not in ROLES for role in roles):
        raise ConfigError(f"{where} ({name}): roles must be a non-empty list of {', '.join(ROLES)}")
    return Token(name, raw, frozenset(roles))


def load_tokens(path: Path) -> list[Token]:
    """The tokens of a tokens file (mode 0600, like key files); a ConfigError names the fault."""
    hint = " (create one with 'alliance token new')"
    try:
        _check_mode(path)
    except FileNotFoundError:
        raise ConfigError(f"tokens file {path} does not exist{hint}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read tokens file {path}: {exc}") from None
    data = read_toml(path, "tokens file", hint)
    if set(data) - {"token"} or not isinstance(data.get("token", []), list):
        raise ConfigError(f"tokens file {path} must hold only [[token]] tables")
    entries = data.get("token", [])
    if len(entries) > TOKENS_MAX:
        raise ConfigError(f"tokens file {path} holds {len(entries)} tokens; at most {TOKENS_MAX}")
    tokens = [_token(entry, path, i) for i, entry in enumerate(entries)]
    _check_unique(tokens, path)
    return tokens


def _check_unique(tokens: list[Token], path: Path) -> None:
    """Two entries of one name, or of one hash (whose roles would then depend on the order), are a mistake."""
    for field, values in (("name", [t.name for t in tokens]), ("sha256", [t.sha256.hex() for t in tokens])):
        seen: dict[str, int] = {}
        for i, (token, value) in enumerate(zip(tokens, values), 1):
            first = seen.setdefault(value, i)
            if first != i:
                raise ConfigError(f"tokens file {path}: token {i} ({token.name}): the {field} is also token {first}'s")


def add_token(path: Path, name: str, roles: list[str]) -> str:
    """Appends a new token's hash to the tokens file (created with mode 0600) and returns the token,
    which is stored nowhere."""
    if not name or any(role not in ROLES for role in roles) or not roles:
        raise ConfigError(f"a token needs a name and roles among {', '.join(ROLES)}")
    if not name.isprintable():  # no control character, which TOML would not take raw (nor a lone surrogate)
        raise ConfigError(f"a token name must be printable text, got {name!r}")
    if path.exists() and any(known.name == name for known in load_tokens(path)):
        raise ConfigError(f"tokens file {path} already holds a token named {name!r}")
    token = new_token()
    # Not ASCII-escaped: json.dumps writes a character beyond U+FFFF as a surrogate pair, which TOML refuses.
    entry = (f"\n[[token]]\nname = {json.dumps(name, ensure_ascii=False)}\nsha256 = \"{token_hash(token).hex()}\"\n"
             f"roles = {json.dumps(sorted(set(roles)))}\n")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(entry)
    except OSError as exc:
        raise ConfigError(f"cannot write tokens file {path}: {exc.strerror or exc}") from None
    return token


# ---- the gate in front of JSON-RPC and /ws ----------------------------------------------------------


class AccessGate:
    """Applies a policy to HTTP JSON-RPC requests and /ws handshakes: refusals are answered 401
    (with WWW-Authenticate: Bearer) or 403, and counted by reason."""

    def __init__(self, policy: AccessPolicy, metrics: Metrics) -> None:
        self.policy = policy
        self.metrics = metrics

    def _refusal(self, token: str | None, needed: frozenset[str]) -> tuple[int, dict[str, str], Headers] | None:
        decision = self.policy.decide(token, needed)
        if decision == OK:
            return None
        self.metrics.rpc_refused.labels(decision).inc()
        wanted = ", ".join(sorted(needed))
        if decision == FORBIDDEN:
            return 403, {"error": f"forbidden: this token lacks a role needed ({wanted})"}, ()
        challenge = b'Bearer realm="alliance"' + (b', error="invalid_token"' if token is not None else b"")
        why = "unknown token" if token is not None else f"a token is needed (role {wanted})"
        return 401, {"error": f"unauthenticated: {why}"}, ((b"www-authenticate", challenge),)

    async def admit_call(self, scope: Scope, body: bytes, send: Send) -> bool:
        """Whether a JSON-RPC body (every call of a batch) may be answered; if not, the refusal is sent."""
        token = bearer_token(scope)
        if token is None and self.policy.everything_open:
            return True  # the body need not be looked at
        refusal = self._refusal(token, roles_needed(body))
        if refusal is not None:
            status, obj, extra = refusal
            await respond_json(send, status, obj, extra=extra)
        return refusal is None

    async def admit_socket(self, scope: Scope, send: Send) -> frozenset[str] | None:
        """The roles a /ws connection is granted, or None once its handshake has been refused."""
        token = bearer_token(scope, query_too=True)
        refusal = self._refusal(token, frozenset({SUBSCRIBE}))
        if refusal is None and token is None and _other_site(scope):
            # A browser applies no same-origin rule to a WebSocket: any page could read an open node.
            self.metrics.rpc_refused.labels(FORBIDDEN).inc()
            refusal = 403, {"error": "forbidden: a page of another site opens /ws only with a token"}, ()
        if refusal is not None:
            status, obj, extra = refusal
            await refuse_websocket(send, status, obj, extra)
            return None
        return self.policy.roles_of(token)

    def refuse_frame(self, roles: frozenset[str], body: bytes) -> tuple[bool, Any]:
        """Whether a /ws request needs a role its connection lacks, and if so its answer: an error per
        call that expects one (None when none does)."""
        if roles == ALL_ROLES:
            return False, None  # the frame need not be looked at
        needed = roles_needed(body)
        if needed <= roles:
            return False, None
        self.metrics.rpc_refused.labels(FORBIDDEN).inc()
        lacking = ", ".join(sorted(needed - roles))
        error = RpcError(NOT_AUTHORISED, f"forbidden: this connection lacks a role needed ({lacking})",
                         {"reason": FORBIDDEN})
        try:
            request = parse(body)
        except RpcError:
            return False, None  # answered as a parse error, which tells nothing of the chain
        calls = request if isinstance(request, list) else [request]
        answers = [response(call, error=error) for call in calls if expects_answer(call)]
        return True, answers[0] if answers and not isinstance(request, list) else answers or None
