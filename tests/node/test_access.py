"""The access decision (modes x roles x methods), the tokens file, the gate's answers and counts, the
new [rpc]/[metrics] settings and the start-up check of TLS files: no node process."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from node.api.access import (
    FORBIDDEN, OK, ROLES, UNAUTHENTICATED, AccessGate, AccessPolicy, Token, add_token, bearer_token, load_tokens,
    new_token, roles_needed, token_hash,
)
from node.api.tls import check_tls
from node.config import TlsFiles, load_config
from node.errors import ConfigError
from node.ops.metrics import Metrics
from node.server import access_policy, log_access
from tests.e2e.tls_certs import make_certs

TOKENS = {"reader": ("read",), "submitter": ("read", "submit"), "watcher": ("subscribe",)}
POLICY_TOKENS = [Token(name, token_hash(f"secret-{name}"), frozenset(roles)) for name, roles in TOKENS.items()]


def call(method: str, i: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": i, "method": method, "params": {}}


def body(*methods: str) -> bytes:
    calls = [call(m, i) for i, m in enumerate(methods)]
    return json.dumps(calls[0] if len(calls) == 1 else calls).encode()


@pytest.mark.parametrize("mode, token, methods, expected", [
    ("open", None, ("send_tx",), OK),
    ("open", "nobody", ("status",), UNAUTHENTICATED),  # an unknown token is refused even where none is needed
    ("read", None, ("status", "get_block", "query"), OK),
    ("read", None, ("send_tx",), UNAUTHENTICATED),
    ("read", None, ("status", "send_tx"), UNAUTHENTICATED),  # every call of a batch must be allowed
    ("read", "reader", ("send_tx",), FORBIDDEN),
    ("read", "submitter", ("status", "send_tx"), OK),
    ("read", "watcher", ("status",), OK),  # the anonymous read adds to a token's roles
    ("closed", None, ("status",), UNAUTHENTICATED),
    ("closed", None, ("no_such_method",), UNAUTHENTICATED),  # an unknown method is a read
    ("closed", "reader", ("get_tx", "get_proof"), OK),
    ("closed", "watcher", ("status",), FORBIDDEN),
    ("closed", "submitter", ("send_tx",), OK),
])
def test_decision(mode: str, token: str | None, methods: tuple[str, ...], expected: str) -> None:
    policy = AccessPolicy(mode, POLICY_TOKENS)
    presented = None if token is None else f"secret-{token}"
    assert policy.decide(presented, roles_needed(body(*methods))) == expected


def test_roles_needed() -> None:
    assert roles_needed(body("status")) == {"read"}
    assert roles_needed(body("send_tx", "get_tx")) == {"read", "submit"}
    assert roles_needed(body("subscribe")) == {"subscribe"}
    assert roles_needed(b"not json") == {"read"}
    assert roles_needed(b"[]") == {"read"}
    assert roles_needed(b"[1, 2]") == {"read"}
    # A method that is not a string (answered -32600) is a read, not an unhashable crash.
    assert roles_needed(b'{"method": []}') == {"read"}
    assert roles_needed(b'[{"method": {}}, {"method": "send_tx"}]') == {"read", "submit"}


@pytest.mark.parametrize("mode, anonymous", [("open", set(ROLES)), ("read", {"read"}), ("closed", set())])
def test_anonymous_roles(mode: str, anonymous: set[str]) -> None:
    policy = AccessPolicy(mode)
    assert policy.roles_of(None) == anonymous
    assert policy.roles_of("anything") is None


def test_bearer_token_from_header_or_query() -> None:
    assert bearer_token({"headers": [(b"authorization", b"Bearer abc")]}) == "abc"
    assert bearer_token({"headers": [(b"authorization", b"Basic abc")]}) == ""  # matches no hash
    assert bearer_token({"headers": [], "query_string": b"access_token=q"}) is None  # only on /ws
    assert bearer_token({"headers": [], "query_string": b"x=1&access_token=q"}, query_too=True) == "q"
    assert bearer_token({"headers": []}, query_too=True) is None


def test_tokens_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    first = add_token(path, "alice", ["read", "submit"])
    second = add_token(path, "bob", ["subscribe"])
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert first not in path.read_text() and second not in path.read_text()  # only hashes are stored
    tokens = load_tokens(path)
    assert [(t.name, t.roles) for t in tokens] == [("alice", {"read", "submit"}), ("bob", {"subscribe"})]
    policy = AccessPolicy("closed", tokens)
    assert policy.decide(first, frozenset({"submit"})) == OK
    assert policy.decide(second, frozenset({"submit"})) == FORBIDDEN
    with pytest.raises(ConfigError, match="already holds a token named 'alice'"):
        add_token(path, "alice", ["read"])
    add_token(path, 'app 😀 "billing" \\ ü', ["read"])  # any printable name, written as valid TOML
    assert load_tokens(path)[-1].name == 'app 😀 "billing" \\ ü'
    for name in ("a\nb", "del\x7f", "\udcff"):
        with pytest.raises(ConfigError, match="printable"):
            add_token(path, name, ["read"])
    assert len(load_tokens(path)) == 3


@pytest.mark.parametrize("text, message", [
    ('[[token]]\nname = "a"\nsha256 = "00"\nroles = ["read"]\n', "sha256 must be 64 hex"),
    (f'[[token]]\nname = "a"\nsha256 = "{"0" * 64}"\nroles = ["admin"]\n', "roles must be a non-empty list"),
    (f'[[token]]\nsha256 = "{"0" * 64}"\nroles = ["read"]\n', "name must be"),
    ('[token]\nname = "a"\n', "must hold only [[token]] tables"),
    ("not toml [", "is not valid TOML"),
    (f'[[token]]\nname = "a"\nsha256 = "{"0" * 64}"\nroles = ["read"]\n'
     f'[[token]]\nname = "a"\nsha256 = "{"1" * 64}"\nroles = ["submit"]\n', "token 2 .a.: the name is also token 1's"),
    (f'[[token]]\nname = "a"\nsha256 = "{"0" * 64}"\nroles = ["read"]\n'
     f'[[token]]\nname = "b"\nsha256 = "{"0" * 64}"\nroles = ["submit"]\n', "token 2 .b.: the sha256 is also token 1's"),
])
def test_tokens_file_faults(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_tokens(path)


def test_tokens_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    add_token(path, "a", ["read"])
    path.chmod(0o640)
    with pytest.raises(ConfigError, match="accessible by group or others"):
        load_tokens(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_tokens(tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="is not a file") as refused:  # not "run: chmod 600" on a directory
        load_tokens(tmp_path)
    assert "chmod" not in str(refused.value)


class Sent:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])


def refused(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value("alliance_rpc_refused_total", {"reason": reason})
    assert value is not None
    return value


def test_gate_answers_401_and_403_and_counts() -> None:
    metrics = Metrics()
    gate = AccessGate(AccessPolicy("read", POLICY_TOKENS), metrics)
    assert refused(metrics, "unauthenticated") == refused(metrics, "forbidden") == 0

    async def main() -> None:
        anonymous, reader = Sent(), Sent()
        assert not await gate.admit_call({"headers": []}, body("send_tx"), anonymous)
        assert anonymous.messages[0]["status"] == 401 and anonymous.headers()[b"www-authenticate"].startswith(b"Bearer")
        headers = {"headers": [(b"authorization", b"Bearer secret-reader")]}
        assert not await gate.admit_call(headers, body("send_tx"), reader)
        assert reader.messages[0]["status"] == 403
        assert await gate.admit_call({"headers": []}, body("status"), Sent())
        socket = Sent()
        assert await gate.admit_socket({"headers": []}, socket) is None
        assert socket.messages[0]["type"] == "websocket.http.response.start" and socket.messages[0]["status"] == 401
        watcher = await gate.admit_socket({"headers": [], "query_string": b"access_token=secret-watcher"}, Sent())
        assert watcher == {"read", "subscribe"}
        assert gate.refuse_frame(watcher, body("get_tx")) == (False, None)
        refused_frame, answer = gate.refuse_frame(watcher, body("send_tx"))
        assert refused_frame and answer["id"] == 0 and answer["error"]["data"] == {"reason": "forbidden"}
        notification = json.dumps({"jsonrpc": "2.0", "method": "send_tx", "params": {}}).encode()
        assert gate.refuse_frame(watcher, notification) == (True, None)  # refused, and nothing to answer

    trio.run(main)
    assert refused(metrics, "unauthenticated") == 2
    assert refused(metrics, "forbidden") == 3


def _home(tmp_path: Path, rpc: str, metrics: str = "") -> Path:
    (tmp_path / "node.toml").write_text(f'[rpc]\n{rpc}\n[metrics]\n{metrics}\n')
    return tmp_path


@pytest.mark.parametrize("listen, access", [("127.0.0.1:1", "open"), ("[::1]:1", "open"), ("localhost:1", "open"),
                                            ("0.0.0.0:1", "closed"), ("10.0.0.5:1", "closed")])
def test_access_defaults_by_listen_address(tmp_path: Path, listen: str, access: str) -> None:
    assert load_config(_home(tmp_path, f'listen = "{listen}"')).rpc_access == access


def test_tls_and_access_settings(tmp_path: Path) -> None:
    rpc = 'tls_cert = "c.pem"\ntls_key = "k.pem"\ntls_client_ca = "ca.pem"\naccess = "read"\ntokens_file = "t.toml"'
    config = load_config(_home(tmp_path, rpc, 'tls_cert = "m.pem"\ntls_key = "mk.pem"'))
    assert config.rpc_tls == TlsFiles(tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem")
    assert config.metrics_tls == TlsFiles(tmp_path / "m.pem", tmp_path / "mk.pem")
    assert config.rpc_access == "read" and config.rpc_tokens_file == tmp_path / "t.toml"


@pytest.mark.parametrize("rpc, message", [
    ('access = "public"', "rpc.access = 'public' must be one of open, read, closed"),
    ('tls_cert = "c.pem"', "rpc.tls_cert is set without rpc.tls_key"),
    ('tls_client_ca = "ca.pem"', "rpc.tls_client_ca needs rpc.tls_cert"),
])
def test_setting_faults(tmp_path: Path, rpc: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_home(tmp_path, rpc))


def test_tls_files_checked_at_start(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    check_tls(TlsFiles(certs.server_cert, certs.server_key, certs.ca), "rpc")
    with pytest.raises(ConfigError, match="does not belong to the certificate"):
        check_tls(TlsFiles(certs.server_cert, certs.client_key), "rpc")
    with pytest.raises(ConfigError, match="rpc.tls_client_ca .* does not exist"):
        check_tls(TlsFiles(certs.server_cert, certs.server_key, tmp_path / "none.pem"), "rpc")
    with pytest.raises(ConfigError, match="not a PEM CA certificate"):
        check_tls(TlsFiles(certs.server_cert, certs.server_key, certs.server_key), "rpc")
    encrypted = tmp_path / "encrypted.key"  # the node cannot ask for a passphrase: refused, never prompted for
    subprocess.run(["openssl", "pkey", "-in", str(certs.server_key), "-aes256", "-passout", "pass:secret",
                    "-out", str(encrypted)], check=True, capture_output=True, timeout=30)
    encrypted.chmod(0o600)
    with pytest.raises(ConfigError, match="rpc.tls_key .* is encrypted with a passphrase"):
        check_tls(TlsFiles(certs.server_cert, encrypted), "rpc")
    certs.server_key.chmod(0o640)
    with pytest.raises(ConfigError, match="metrics.tls_key .* accessible by group or others"):
        check_tls(TlsFiles(certs.server_cert, certs.server_key), "metrics")


def test_the_start_logs_the_mode_and_warns_of_tokens_in_clear(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    add_token(tmp_path / "tokens.toml", "app", ["read"])
    config = load_config(_home(tmp_path, 'listen = "0.0.0.0:1"\ntokens_file = "tokens.toml"'))
    with caplog.at_level(logging.INFO, logger="alliance.node"):
        policy = access_policy(config)
        log_access(config, policy)
    assert policy.mode == "closed" and len(policy.tokens) == 1
    assert "event=rpc_access mode=closed tokens=1 tls=off" in caplog.text
    assert "event=rpc_tokens_in_clear" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="alliance.node"):
        (tmp_path / "other").mkdir()
        closed = load_config(_home(tmp_path / "other", 'listen = "0.0.0.0:1"'))
        log_access(closed, access_policy(closed))
    assert "event=rpc_closed_without_tokens" in caplog.text and "rpc_tokens_in_clear" not in caplog.text


def test_an_unknown_token_is_refused_even_when_open() -> None:
    gate = AccessGate(AccessPolicy("open"), Metrics())
    sent = Sent()
    assert trio.run(gate.admit_call, {"headers": []}, body("send_tx"), Sent())
    assert not trio.run(gate.admit_call, {"headers": [(b"authorization", b"Bearer revoked")]}, body("status"), sent)
    assert sent.messages[0]["status"] == 401


# A body the service parses must be read the same way by the gate: Python's json.loads refuses an integer
# of more than 4,300 digits, which the service reads (as an invalid id) and answers.
HUGE_ID_BATCH = ('[{"jsonrpc": "2.0", "method": "send_tx", "params": {"tx": "00"}, "id": 1},'
                 '{"jsonrpc": "2.0", "method": "status", "id": ' + "9" * 5000 + '}]').encode()


def test_a_send_tx_beside_an_integer_python_json_refuses_still_needs_submit() -> None:
    assert roles_needed(HUGE_ID_BATCH) == {"read", "submit"}
    assert AccessPolicy("read").decide(None, roles_needed(HUGE_ID_BATCH)) == UNAUTHENTICATED
    gate = AccessGate(AccessPolicy("read", POLICY_TOKENS), Metrics())
    refused_frame, answers = gate.refuse_frame(frozenset({"read", "subscribe"}), HUGE_ID_BATCH)
    assert refused_frame and [a["id"] for a in answers] == [1, None]
    assert gate.refuse_frame(frozenset({"subscribe"}), b"not json") == (False, None)  # answered as a parse error


def test_a_page_of_another_site_opens_ws_only_with_a_token() -> None:
    # Browsers send Origin on every WebSocket handshake and apply no same-origin rule to the socket: without
    # this check any web page its operator visits could read an open node on 127.0.0.1 through /ws.
    metrics = Metrics()
    gate = AccessGate(AccessPolicy("open", POLICY_TOKENS), metrics)

    def handshake(origin: bytes | None, query: bytes = b"") -> dict[str, Any]:
        headers = [(b"host", b"127.0.0.1:26600")] + ([(b"origin", origin)] if origin is not None else [])
        return {"headers": headers, "query_string": query}

    async def main() -> None:
        assert await gate.admit_socket(handshake(None), Sent()) == set(ROLES)  # not a browser
        assert await gate.admit_socket(handshake(b"http://127.0.0.1:26600"), Sent()) == set(ROLES)  # the console
        for origin in (b"https://evil.example", b"http://127.0.0.1:8080", b"null"):
            refused_socket = Sent()
            assert await gate.admit_socket(handshake(origin), refused_socket) is None
            assert refused_socket.messages[0]["status"] == 403
        watcher = handshake(b"https://evil.example", b"access_token=secret-watcher")  # a token says who it is
        assert await gate.admit_socket(watcher, Sent()) == set(ROLES)

    trio.run(main)
    assert refused(metrics, "forbidden") == 3


def test_a_new_token_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = iter(["-looks-like-an-option", "-again", "fine-token"])
    monkeypatch.setattr("secrets.token_urlsafe", lambda n: next(drawn))
    assert new_token() == "fine-token"
