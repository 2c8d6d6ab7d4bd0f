"""TLS and access control on a real node: https and wss with a CA, client certificates required, an
anonymous read-only mode, bearer tokens with roles, the refusals as typed errors and one-line CLI
errors, and their count on /metrics (served over TLS too)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from websockets.sync.client import connect

from node.client import AsyncClient, Client, Forbidden, NodeUnreachable, Unauthenticated, load_key
from node.client.errors import ERROR_CLASSES, NotAuthorised
from tests.e2e.nodeproc import ALLIANCE, DEADLINE_S, alliance, wait_for
from tests.e2e.tls_certs import Certs, make_certs

BASE_PORTS = (30100, 30130, 30160)  # this module's share of the ports
NOT_AUTHORISED = next(code for code, cls in ERROR_CLASSES.items() if cls is NotAuthorised)


@dataclass
class TlsNode:
    home: Path
    net: Path
    certs: Certs
    url: str
    metrics_url: str
    tokens: dict[str, str]  # name -> token
    process: subprocess.Popen[bytes]

    def tls_args(self, *, ca: Path | None = None, client_cert: bool = True) -> list[str]:
        args = ["--rpc", self.url, "--ca", str(ca or self.certs.ca)]
        if client_cert:
            args += ["--client-cert", str(self.certs.client_cert), "--client-key", str(self.certs.client_key)]
        return args

    def client(self, token: str | None = None, ca: Path | None = None, client_cert: bool = True) -> Client:
        cert, key = (self.certs.client_cert, self.certs.client_key) if client_cert else (None, None)
        return Client(self.url, timeout_s=20, key=load_key(self.net / "client.key"),
                      token=self.tokens[token] if token else None, ca_file=ca or self.certs.ca, client_cert=cert,
                      client_key=key)

    def refused(self, reason: str) -> float:
        context = ssl.create_default_context(cafile=str(self.certs.ca))
        with urllib.request.urlopen(self.metrics_url + "/metrics", timeout=DEADLINE_S, context=context) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(f'alliance_rpc_refused_total{{reason="{reason}"}} '):
                    return float(line.split()[-1])
        raise AssertionError(f"alliance_rpc_refused_total{{reason={reason!r}}} is not exported")


ROLES = {"reader": "read", "submitter": "read,submit", "watcher": "subscribe", "everything": "read,submit,subscribe"}


def _port_free(port: int) -> bool:
    """Whether the node could bind `port` (it sets SO_REUSEADDR: a port in TIME_WAIT is free to it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _configure(home: Path, certs: Certs) -> dict[str, str]:
    for path in (certs.server_cert, certs.server_key, certs.ca):
        shutil.copy(path, home / path.name)
    tokens = {name: alliance("token", "new", "--name", name, "--roles", roles, "--file",
                             str(home / "tokens.toml")).stdout.strip() for name, roles in ROLES.items()}
    text = (home / "node.toml").read_text()
    rpc_tls = ('tls_cert = "server.pem"\ntls_key = "server.key"\ntls_client_ca = "test-ca.pem"\n'
               'access = "read"\ntokens_file = "tokens.toml"\n')
    text = text.replace("[rpc]\n", "[rpc]\n" + rpc_tls).replace(
        "[metrics]\n", '[metrics]\ntls_cert = "server.pem"\ntls_key = "server.key"\n')
    (home / "node.toml").write_text(text)
    return tokens


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsNode]:
    tmp = tmp_path_factory.mktemp("tls")
    certs = make_certs(tmp / "certs")
    base = next(port for port in BASE_PORTS if all(_port_free(port + i) for i in range(3)))
    alliance("testnet", "--nodes", "1", "--out", str(tmp / "net"), "--base-port", str(base))
    home = tmp / "net" / "node0"
    tokens = _configure(home, certs)
    with (home / "run.log").open("wb") as log:
        process = subprocess.Popen([*ALLIANCE, "run", "--home", str(home)], stdout=log, stderr=subprocess.STDOUT)
    found = TlsNode(home, tmp / "net", certs, f"https://127.0.0.1:{base}", f"https://127.0.0.1:{base + 2}", tokens,
                    process)
    wait_for(lambda: _answers(found), "the node to answer over https")
    yield found
    process.terminate()
    process.wait(timeout=DEADLINE_S)


def _answers(node: TlsNode) -> bool:
    if node.process.poll() is not None:
        raise AssertionError(f"node exited: {(node.home / 'run.log').read_text()}")
    try:
        node.client().get_status()
    except NodeUnreachable:
        return False
    return True


def _one_line_error(result: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("alliance: error: ") and message in line, line


def test_the_node_logs_its_access_mode(node: TlsNode) -> None:
    assert "event=rpc_access mode=read tokens=4 tls=on client_certs=required" in (node.home / "run.log").read_text()


def test_cli_over_https_with_tokens(node: TlsNode) -> None:
    key = ["--key", str(node.net / "client.key")]
    assert json.loads(alliance("status", *node.tls_args()).stdout)["chain_id"]
    _one_line_error(alliance("tx", "put", "cli", "v", *key, *node.tls_args(), check=False), 7,
                    "unauthenticated: a token is needed (role submit)")
    _one_line_error(alliance("tx", "put", "cli", "v", *key, *node.tls_args(), "--token", "wrong", check=False), 7,
                    "unauthenticated: unknown token")
    _one_line_error(alliance("tx", "put", "cli", "v", *key, *node.tls_args(), "--token", node.tokens["reader"],
                             check=False), 7, "forbidden")
    env = {**os.environ, "ALLIANCE_TOKEN": node.tokens["submitter"], "ALLIANCE_CA": str(node.certs.ca)}
    put = subprocess.run([*ALLIANCE, "tx", "put", "cli", "v", *key, *node.tls_args()[:2], *node.tls_args()[4:]],
                         capture_output=True, text=True, env=env, timeout=60)
    assert put.returncode == 0 and json.loads(put.stdout)["status"] == "committed", put.stderr
    assert json.loads(alliance("tx", "get", "cli", *node.tls_args()).stdout)["value"] == b"v".hex()  # anonymous read


def test_an_untrusted_certificate_or_no_client_certificate_is_one_line(node: TlsNode) -> None:
    _one_line_error(alliance("status", *node.tls_args(ca=node.certs.other_ca), check=False), 3,
                    "its TLS certificate is not trusted")
    _one_line_error(alliance("status", *node.tls_args(client_cert=False), check=False), 3,
                    "needs one (client_cert, --client-cert)")
    with pytest.raises(NodeUnreachable, match="not trusted"):
        node.client(ca=node.certs.other_ca).get_status()
    with pytest.raises(NodeUnreachable, match="client_cert"):
        node.client(client_cert=False).get_status()
    with pytest.raises(NodeUnreachable, match="not trusted"):
        node.client("everything", ca=node.certs.other_ca).blocks()
    with pytest.raises(NodeUnreachable, match="client_cert"):
        node.client("everything", client_cert=False).blocks()


def test_sync_client_roles(node: TlsNode) -> None:
    unauthenticated, forbidden = node.refused("unauthenticated"), node.refused("forbidden")
    with node.client() as anonymous:
        assert anonymous.get_status().chain_id
        with pytest.raises(Unauthenticated):
            anonymous.kv_put("sync", "v")
    with node.client("reader") as reader, pytest.raises(Forbidden):
        reader.kv_put("sync", "v")
    with node.client("submitter") as submitter:
        assert submitter.kv_put("sync", "v").code == 0
        entry = submitter.kv_get("sync")
        assert entry is not None and entry.value == b"v"
    assert node.refused("unauthenticated") == unauthenticated + 1
    assert node.refused("forbidden") == forbidden + 1


def test_ws_needs_the_subscribe_role(node: TlsNode) -> None:
    with pytest.raises(Unauthenticated):
        node.client().blocks()
    with pytest.raises(Forbidden):
        node.client("reader").blocks()
    with node.client("everything") as client, client.blocks() as blocks:
        info = client.kv_put("wss", "v")
        assert wait_for(lambda: blocks.next_event(DEADLINE_S).height >= info.height, "the block over wss")
    context = ssl.create_default_context(cafile=str(node.certs.ca))
    context.load_cert_chain(node.certs.client_cert, node.certs.client_key)
    url = node.url.replace("https:", "wss:") + "/ws?access_token=" + node.tokens["watcher"]  # as a browser does
    with connect(url, ssl=context, proxy=None, open_timeout=DEADLINE_S) as ws:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"topic": "blocks"}}))
        assert isinstance(json.loads(ws.recv(timeout=DEADLINE_S))["result"], str)
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "status"}))  # anyone may read, in mode "read"
        assert json.loads(ws.recv(timeout=DEADLINE_S))["result"]["chain_id"]
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "send_tx", "params": {"tx": "00"}}))
        answer = json.loads(ws.recv(timeout=DEADLINE_S))
        assert answer["id"] == 3 and answer["error"]["code"] == NOT_AUTHORISED, answer
        assert answer["error"]["data"] == {"reason": "forbidden"}, answer
        # Beside an integer json.loads refuses (over 4,300 digits), a send_tx is still looked at and refused.
        ws.send('[{"jsonrpc": "2.0", "id": 4, "method": "send_tx", "params": {"tx": "00"}}, {"jsonrpc": "2.0", '
                '"method": "status", "id": ' + "9" * 5000 + '}]')
        answers = json.loads(ws.recv(timeout=DEADLINE_S))
        assert [a["error"]["data"] for a in answers] == [{"reason": "forbidden"}] * 2, answers


def test_trio_client_and_wss_subscription(node: TlsNode) -> None:
    async def main() -> None:
        async with AsyncClient(node.url, timeout_s=20, key=load_key(node.net / "client.key"),
                               token=node.tokens["everything"], ca_file=node.certs.ca,
                               client_cert=node.certs.client_cert, client_key=node.certs.client_key) as client:
            async with client.blocks() as blocks:
                info = await client.kv_put("trio", "v")
                with trio.fail_after(DEADLINE_S):
                    async for block in blocks:
                        if block.height == info.height:
                            break
            entry = await client.kv_get("trio")
            assert entry is not None and entry.value == b"v"
        async with AsyncClient(node.url, key=load_key(node.net / "client.key"), token=node.tokens["reader"],
                               ca_file=node.certs.ca,
                               client_cert=node.certs.client_cert, client_key=node.certs.client_key) as reader:
            with pytest.raises(Forbidden):
                await reader.kv_put("trio", "w")
        async with AsyncClient(node.url, ca_file=node.certs.other_ca, client_cert=node.certs.client_cert,
                               client_key=node.certs.client_key) as untrusting:
            with pytest.raises(NodeUnreachable, match="not trusted"):
                await untrusting.get_status()
            with pytest.raises(NodeUnreachable, match="not trusted"):
                async with untrusting.blocks():
                    pass

    trio.run(main)


@pytest.mark.parametrize("fault", ["key readable by others", "key of another certificate", "no such file"])
def test_a_wrong_tls_file_stops_the_start_in_one_line(node: TlsNode, tmp_path: Path, fault: str) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for name in ("node.toml", "node.key", "genesis.toml", "server.pem", "server.key", "test-ca.pem", "tokens.toml"):
        shutil.copy(node.home / name, home / name)
    if fault == "key readable by others":
        os.chmod(home / "server.key", 0o644)
    elif fault == "key of another certificate":
        shutil.copy(node.certs.client_key, home / "server.key")
    else:
        (home / "server.pem").unlink()
    result = subprocess.run([*ALLIANCE, "run", "--home", str(home)], capture_output=True, text=True, timeout=60)
    expected = {"key readable by others": "accessible by group or others", "no such file": "does not exist",
                "key of another certificate": "the key does not belong to the certificate"}[fault]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert expected in result.stderr and "rpc.tls_" in result.stderr, result.stderr
