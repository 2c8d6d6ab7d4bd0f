"""Acceptance test: a client written from docs/spec/client-protocol.md alone.

Everything in this module (key parsing, canonical MessagePack, signing bytes,
transaction hashes, the JSON-RPC client, the checks on results and errors)
comes from the normative client-facing contract, version 1. Nothing here
imports the project's packages: the node is driven only through its console
script, its JSON-RPC address and its operations endpoints, like any outside
client would.

Points where the contract leaves a choice open and this module had to assume
something are marked ``ASSUMPTION``.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import msgpack
import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from tests.e2e.nodeproc import free_base_port

ROOT = Path(__file__).resolve().parents[2]
ALLIANCE = ROOT / ".venv" / "bin" / "alliance"
PROMTOOL = "/usr/bin/promtool"

CHAIN_ID = "spec-acceptance-chain"

# Section 1: PKCS#8 DER of an Ed25519 private key = this prefix + 32-byte seed.
PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
# Section 2.
SIGNING_PREFIX = b"alliance-tx-v1\x00"
MAX_TX_BYTES = 64 * 1024
MAX_HTTP_BODY = 1024 * 1024

HEX32 = re.compile(r"^[0-9a-f]{64}$")
HEX64 = re.compile(r"^[0-9a-f]{128}$")

START_DEADLINE_S = 60.0
STOP_DEADLINE_S = 30.0
COMMIT_DEADLINE_S = 30.0
HTTP_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------
# Section 1: keys
# --------------------------------------------------------------------------


def read_private_key(path: Path) -> SigningKey:
    """Parse a PKCS#8 PEM Ed25519 private key exactly as section 1 describes."""
    text = path.read_text(encoding="ascii")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    assert lines[0] == "-----BEGIN PRIVATE KEY-----", lines[0]
    assert lines[-1] == "-----END PRIVATE KEY-----", lines[-1]
    der = base64.b64decode("".join(lines[1:-1]), validate=True)
    assert len(der) == 48, f"DER is {len(der)} bytes, expected 16 + 32"
    assert der[:16] == PKCS8_PREFIX, der[:16].hex()
    return SigningKey(der[16:])


def pubkey_hex(sk: SigningKey) -> str:
    return bytes(sk.verify_key).hex()


def openssl_key(path: Path) -> SigningKey:
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return read_private_key(path)


# --------------------------------------------------------------------------
# Section 2: canonical MessagePack, transactions
# --------------------------------------------------------------------------


def canon(obj: Any) -> Any:
    """Rebuild obj so that msgpack.packb writes its canonical encoding."""
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"map key {k!r} is not a str")
            items.append((k, canon(v)))
        items.sort(key=lambda kv: kv[0].encode("utf-8"))
        return dict(items)
    if isinstance(obj, (list, tuple)):
        return [canon(v) for v in obj]
    if isinstance(obj, float):
        raise TypeError("floats are not canonical")
    if obj is None or isinstance(obj, (bool, int, str, bytes)):
        return obj
    raise TypeError(f"type {type(obj).__name__} is not allowed")


def packc(obj: Any) -> bytes:
    out: bytes = msgpack.packb(canon(obj), use_bin_type=True)
    return out


@dataclass
class Tx:
    raw: bytes
    hash: str
    body: list[Any]
    signature: bytes

    @property
    def hex(self) -> str:
        return self.raw.hex()


def fresh_nonce() -> int:
    return secrets.randbits(64)


def make_tx(
    sk: SigningKey,
    family: str,
    op: str,
    args: dict[str, Any],
    *,
    chain_id: str = CHAIN_ID,
    nonce: int | None = None,
    version: int = 1,
) -> Tx:
    sender = bytes(sk.verify_key)
    body = [version, chain_id, sender, fresh_nonce() if nonce is None else nonce, family, op, args]
    signing_bytes = SIGNING_PREFIX + packc(body)
    signature = sk.sign(signing_bytes).signature
    raw = packc(body + [signature])
    return Tx(raw=raw, hash=hashlib.sha256(signing_bytes).hexdigest(), body=body, signature=signature)


# --------------------------------------------------------------------------
# Section 3: JSON-RPC client
# --------------------------------------------------------------------------


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')} data={error.get('data')!r}")
        self.code = error.get("code")
        self.message = error.get("message")
        self.data = error.get("data")
        self.error = error


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT_S,
) -> HttpReply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return HttpReply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


class Node:
    def __init__(self, home: Path, rpc_port: int, metrics_port: int, chain_id: str) -> None:
        self.home = home
        self.rpc_port = rpc_port
        self.metrics_port = metrics_port
        self.chain_id = chain_id
        self.client_key_path = home / "client.key"
        self.client = read_private_key(self.client_key_path)
        self.node_key = read_private_key(home / "node0" / "node.key")
        self._ids = 0

    # raw transport -----------------------------------------------------
    def post_raw(self, body: bytes, *, path: str = "/", content_type: str = "application/json") -> HttpReply:
        return http_request(self.rpc_port, "POST", path, body, {"Content-Type": content_type})

    def post_json(self, payload: Any) -> Any:
        reply = self.post_raw(json.dumps(payload).encode())
        assert reply.status == 200, (reply.status, reply.body[:500])
        assert reply.headers.get("content-type", "").startswith("application/json"), reply.headers
        return reply.json()

    # one call ----------------------------------------------------------
    def request(self, method: str, params: Any = None, *, include_params: bool = True) -> dict[str, Any]:
        self._ids += 1
        req: dict[str, Any] = {"jsonrpc": "2.0", "id": self._ids, "method": method}
        if include_params and params is not None:
            req["params"] = params
        resp = self.post_json(req)
        assert isinstance(resp, dict), resp
        assert resp.get("jsonrpc") == "2.0", resp
        assert resp.get("id") == self._ids, resp
        assert ("result" in resp) != ("error" in resp), resp
        return resp

    def call(self, method: str, **params: Any) -> Any:
        resp = self.request(method, params)
        if "error" in resp:
            raise RpcError(resp["error"])
        return resp["result"]

    def error(self, method: str, params: Any = None) -> RpcError:
        resp = self.request(method, params)
        assert "error" in resp, f"expected an error, got {resp}"
        err = resp["error"]
        assert isinstance(err.get("code"), int), err
        assert isinstance(err.get("message"), str), err
        return RpcError(err)

    # helpers -----------------------------------------------------------
    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = self.call("status")
        return st

    def send(self, tx: Tx, **kw: Any) -> Any:
        return self.call("send_tx", tx=tx.hex, **kw)

    def send_wait(self, tx: Tx, timeout: float = 10) -> dict[str, Any]:
        res: dict[str, Any] = self.call("send_tx", tx=tx.hex, wait=True, timeout=timeout)
        assert res["status"] == "committed", res
        return res

    def wait_committed(self, tx_hash: str) -> dict[str, Any]:
        deadline = time.monotonic() + COMMIT_DEADLINE_S
        while True:
            res: dict[str, Any] = self.call("get_tx", tx_hash=tx_hash)
            if res["status"] == "committed":
                return res
            assert res["status"] == "pending", res
            assert time.monotonic() < deadline, f"{tx_hash} not committed in time: {res}"
            time.sleep(0.02)

    def put(self, key: str, value: bytes, sk: SigningKey | None = None) -> dict[str, Any]:
        return self.send_wait(make_tx(sk or self.client, "kv", "put", {"key": key, "value": value}))

    def refused(self, tx_hex: str) -> RpcError:
        return self.error("send_tx", {"tx": tx_hex})


# --------------------------------------------------------------------------
# Fixture: a one-validator testnet run by the console script
# --------------------------------------------------------------------------


def _log_tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "<no log>"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("spec_client")
    home = tmp / "testnet"
    base = free_base_port(3)
    gen = subprocess.run(
        [str(ALLIANCE), "testnet", "--nodes", "1", "--out", str(home),
         "--chain-id", CHAIN_ID, "--base-port", str(base)],
        capture_output=True, text=True, timeout=60,
    )
    assert gen.returncode == 0, gen.stderr
    log_path = tmp / "node0.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(ALLIANCE), "run", "--home", str(home / "node0")],
            stdout=log, stderr=subprocess.STDOUT,
        )
    n = Node(home, rpc_port=base, metrics_port=base + 2, chain_id=CHAIN_ID)
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            rc = proc.poll()
            assert rc is None, f"node exited early with {rc}:\n{_log_tail(log_path)}"
            try:
                st = n.call("status")
                if isinstance(st, dict) and st.get("chain_id") == CHAIN_ID:
                    break
            except (OSError, http.client.HTTPException, ValueError, AssertionError):
                pass
            assert time.monotonic() < deadline, f"status never answered:\n{_log_tail(log_path)}"
            time.sleep(0.05)
        yield n
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                pytest.fail(f"node did not exit within {STOP_DEADLINE_S}s of SIGTERM:\n{_log_tail(log_path)}")
        else:
            rc = proc.returncode
        assert rc == 0, f"node exited with {rc} after SIGTERM:\n{_log_tail(log_path)}"


@pytest.fixture
def stranger(tmp_path: Path) -> SigningKey:
    """A key made by openssl: valid, but not authorised by the genesis."""
    return openssl_key(tmp_path / "stranger.key")


# --------------------------------------------------------------------------
# Section 1: keys
# --------------------------------------------------------------------------


def test_cli_client_key_is_pkcs8_pem_mode_0600(node: Node) -> None:
    path = node.client_key_path
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o600, oct(mode)
    text = path.read_text()
    assert text.startswith("-----BEGIN PRIVATE KEY-----\n"), text
    assert text.rstrip().endswith("-----END PRIVATE KEY-----"), text
    der = base64.b64decode("".join(text.strip().splitlines()[1:-1]))
    assert der[:16] == PKCS8_PREFIX and len(der) == 48


def test_openssl_key_parses_per_spec(tmp_path: Path) -> None:
    sk = openssl_key(tmp_path / "k.pem")
    # Cross-check the seed-derived public key against openssl's own view.
    out = subprocess.run(
        ["openssl", "pkey", "-in", str(tmp_path / "k.pem"), "-pubout", "-outform", "DER"],
        check=True, capture_output=True, timeout=30,
    ).stdout
    assert out[-32:] == bytes(sk.verify_key)
    assert HEX32.match(pubkey_hex(sk))


# --------------------------------------------------------------------------
# Section 2: local encoding sanity (the client itself)
# --------------------------------------------------------------------------


def test_local_canonical_encoding() -> None:
    assert packc({"b": 1, "a": 2}) == b"\x82\xa1a\x02\xa1b\x01"
    assert packc({"é": 1, "z": 2}) == packc({"z": 2, "é": 1})  # UTF-8 byte order: "z" < "é"
    assert packc({"z": 2, "é": 1}).index(b"z") < packc({"z": 2, "é": 1}).index("é".encode())
    assert packc(5) == b"\x05" and packc(2**64 - 1)[:1] == b"\xcf"
    assert packc(b"\x00")[:1] == b"\xc4"  # bin type
    with pytest.raises(TypeError):
        packc({"x": 1.5})


# --------------------------------------------------------------------------
# Section 3: status
# --------------------------------------------------------------------------


def test_status_fields(node: Node) -> None:
    st = node.status()
    me = pubkey_hex(node.node_key)
    assert st["chain_id"] == CHAIN_ID
    assert st["node"]["name"] == "node0" and st["node"]["pubkey"] == me, st["node"]
    assert isinstance(st["height"], int) and not isinstance(st["height"], bool) and st["height"] >= 0
    # ASSUMPTION: before the first block last_block_hash may be null.
    assert st["last_block_hash"] is None or HEX32.match(st["last_block_hash"]), st
    assert isinstance(st["view"], int) and st["view"] >= 0
    assert st["leader"] == me, "single validator must lead every height/view"
    assert st["validators"] == [me]
    assert isinstance(st["peers"], list)
    for p in st["peers"]:
        assert isinstance(p["name"], str) and HEX32.match(p["pubkey"]) and isinstance(p["connected"], bool)
    assert st["syncing"] is False


def test_status_last_block_hash_matches_block(node: Node) -> None:
    node.put("status-probe", b"x")
    deadline = time.monotonic() + COMMIT_DEADLINE_S
    while True:
        st1 = node.status()
        blk = node.call("get_block", height=st1["height"])
        st2 = node.status()
        if st1["height"] == st2["height"]:
            break
        assert time.monotonic() < deadline, "chain never stood still long enough to compare"
    assert st1["height"] >= 1
    assert blk["height"] == st1["height"]
    assert st1["last_block_hash"] == blk["hash"]


# --------------------------------------------------------------------------
# Section 3: send_tx / get_tx
# --------------------------------------------------------------------------


def test_send_tx_without_wait_returns_own_hash(node: Node) -> None:
    tx = make_tx(node.client, "kv", "put", {"key": "nowait", "value": b"\x01\x02"})
    res = node.send(tx)
    assert res == {"tx_hash": tx.hash}
    res2 = node.send(make_tx(node.client, "kv", "put", {"key": "nowait", "value": b"\x03"}), wait=False)
    assert set(res2) == {"tx_hash"} and HEX32.match(res2["tx_hash"])
    node.wait_committed(tx.hash)
    node.wait_committed(res2["tx_hash"])


def test_send_tx_wait_returns_committed_get_tx_object(node: Node) -> None:
    args = {"key": "waited", "value": b"\xde\xad\xbe\xef"}
    tx = make_tx(node.client, "kv", "put", args)
    res = node.call("send_tx", tx=tx.hex, wait=True)
    assert res["tx_hash"] == tx.hash
    assert res["status"] == "committed"
    assert isinstance(res["height"], int) and res["height"] >= 1
    assert isinstance(res["index"], int) and res["index"] >= 0
    assert res["code"] == 0
    assert isinstance(res["log"], str)
    assert res == node.call("get_tx", tx_hash=tx.hash)


def test_get_tx_committed_echoes_transaction(node: Node) -> None:
    nonce = fresh_nonce()
    args = {"key": "echo", "value": b"\x00\xff"}
    tx = make_tx(node.client, "kv", "put", args, nonce=nonce)
    node.send_wait(tx)
    got = node.call("get_tx", tx_hash=tx.hash)
    assert set(got) == {"tx_hash", "status", "height", "index", "code", "log", "tx"}, got
    assert got["status"] == "committed" and got["code"] == 0
    assert got["tx"] == {
        "chain_id": CHAIN_ID,
        "sender": pubkey_hex(node.client),
        "nonce": nonce,
        "family": "kv",
        "op": "put",
        "args": {"key": "echo", "value": "00ff"},  # bin args as hex
    }
    blk = node.call("get_block", height=got["height"])
    assert blk["txs"][got["index"]] == tx.hash


def test_get_tx_pending_shape(node: Node) -> None:
    """A tx just sent is pending or (if the node was quick) already committed."""
    seen: set[str] = set()
    for i in range(20):
        tx = make_tx(node.client, "kv", "put", {"key": f"pending-{i}", "value": b"p"})
        node.send(tx)
        got = node.call("get_tx", tx_hash=tx.hash)
        assert got["tx_hash"] == tx.hash
        assert got["status"] in ("pending", "committed"), got
        assert got["tx"]["nonce"] == tx.body[3] and got["tx"]["family"] == "kv"
        seen.add(got["status"])
        if got["status"] == "pending":
            assert got["height"] is None and got["index"] is None
            assert got["code"] is None and got["log"] is None
            break
    node.wait_committed(tx.hash)
    if "pending" not in seen:
        pytest.skip("never caught a transaction in the pending state (node too fast)")


def test_get_tx_unknown(node: Node) -> None:
    h = secrets.token_hex(32)
    got = node.call("get_tx", tx_hash=h)
    assert got["tx_hash"] == h
    assert got["status"] == "unknown"
    assert got["height"] is None and got["index"] is None
    assert got["code"] is None and got["log"] is None
    # ASSUMPTION: nothing is known about the transaction, so tx is null.
    assert got.get("tx") is None


def test_nonce_extremes_accepted(node: Node) -> None:
    for nonce in (0, 2**64 - 1):
        tx = make_tx(node.client, "kv", "put", {"key": f"nonce-{nonce}", "value": b"n"}, nonce=nonce)
        res = node.send_wait(tx)
        assert res["tx"]["nonce"] == nonce and res["code"] == 0


def test_send_tx_wait_tiny_timeout(node: Node) -> None:
    tx = make_tx(node.client, "kv", "put", {"key": "tiny-timeout", "value": b"t"})
    resp = node.request("send_tx", {"tx": tx.hex, "wait": True, "timeout": 0.001})
    if "error" in resp:
        assert resp["error"]["code"] == -32006, resp
        # "the transaction may still commit"
        node.wait_committed(tx.hash)
    else:
        assert resp["result"]["status"] == "committed" and resp["result"]["tx_hash"] == tx.hash


# --------------------------------------------------------------------------
# Section 3: get_block
# --------------------------------------------------------------------------

BLOCK_FIELDS = {"height", "hash", "prev_hash", "time", "proposer", "tx_root", "state_root", "txs", "commit"}


def check_block(node: Node, blk: dict[str, Any]) -> None:
    me = pubkey_hex(node.node_key)
    assert set(blk) == BLOCK_FIELDS, set(blk) ^ BLOCK_FIELDS
    assert isinstance(blk["height"], int) and blk["height"] >= 1
    for f in ("hash", "prev_hash", "tx_root", "state_root"):
        assert isinstance(blk[f], str) and HEX32.match(blk[f]), (f, blk[f])
    assert blk["proposer"] == me
    now_ms = time.time() * 1000
    assert isinstance(blk["time"], int) and now_ms - 3_600_000 < blk["time"] < now_ms + 60_000, blk["time"]
    assert isinstance(blk["txs"], list) and all(HEX32.match(h) for h in blk["txs"])
    assert len(set(blk["txs"])) == len(blk["txs"])
    c = blk["commit"]
    assert set(c) == {"height", "block_hash", "signatures"}, c
    assert c["height"] == blk["height"]
    assert c["block_hash"] == blk["hash"]
    assert len(c["signatures"]) >= 1  # 2f+1 of 1 validator
    validators = [s["validator"] for s in c["signatures"]]
    assert me in validators and len(set(validators)) == len(validators)
    for s in c["signatures"]:
        assert HEX64.match(s["signature"]), s


def test_get_block_by_height_and_latest(node: Node) -> None:
    tx = make_tx(node.client, "kv", "put", {"key": "block-probe", "value": b"b"})
    res = node.send_wait(tx)
    blk = node.call("get_block", height=res["height"])
    check_block(node, blk)
    assert blk["height"] == res["height"]
    assert blk["txs"][res["index"]] == tx.hash
    if blk["height"] >= 2:
        prev = node.call("get_block", height=blk["height"] - 1)
        check_block(node, prev)
        assert blk["prev_hash"] == prev["hash"]
        assert blk["time"] >= prev["time"]
    st = node.status()
    latest = node.call("get_block", height="latest")
    check_block(node, latest)
    assert latest["height"] >= max(st["height"], blk["height"])
    again = node.call("get_block", height=latest["height"])
    assert again == latest


def test_commit_signature_verifies_over_block_hash(node: Node) -> None:
    """Section 3: commit signatures are "over the block hash".

    ASSUMPTION: the spec names no signed message beyond "over the block hash".
    The literal reading is the 32 raw bytes of the hash. The node actually
    signs ``b"alliance-commit-v1\\x00" + hash`` (found by guessing, by analogy
    with the transaction domain prefix ``alliance-tx-v1\\x00``); the spec
    must say so for an outside client to check a commit certificate. Either
    message is accepted here, and at least one must verify.
    """
    node.put("sig-probe", b"s")
    blk = node.call("get_block", height="latest")
    h = bytes.fromhex(blk["hash"])
    candidates = {"raw hash": h, "alliance-commit-v1 prefix": b"alliance-commit-v1\x00" + h}
    for s in blk["commit"]["signatures"]:
        vk = VerifyKey(bytes.fromhex(s["validator"]))
        sig = bytes.fromhex(s["signature"])
        matched = []
        for name, msg in candidates.items():
            try:
                vk.verify(msg, sig)
                matched.append(name)
            except BadSignatureError:
                pass
        assert matched, (
            f"commit signature of {s['validator']} verifies over none of {list(candidates)} "
            f"for block hash {blk['hash']}"
        )


def test_get_block_not_reached(node: Node) -> None:
    h = node.status()["height"] + 1000
    err = node.error("get_block", {"height": h})
    assert err.code == -32005, err.error


# --------------------------------------------------------------------------
# Section 2.1 + 3: families and query
# --------------------------------------------------------------------------


def test_query_kv_value_owner_height(node: Node) -> None:
    key = f"kv-{secrets.token_hex(4)}"
    assert node.call("query", family="kv", key=key) is None
    r1 = node.put(key, b"\x01\x02\x03")
    assert r1["code"] == 0
    q = node.call("query", family="kv", key=key)
    assert q == {"value": "010203", "owner": pubkey_hex(node.client), "height": r1["height"]}
    # The owner may overwrite.
    r2 = node.put(key, b"\x04")
    assert r2["code"] == 0
    q2 = node.call("query", family="kv", key=key)
    assert q2["value"] == "04" and q2["owner"] == pubkey_hex(node.client)
    # ASSUMPTION: height is that of the last write (the spec does not say).
    assert q2["height"] in (r1["height"], r2["height"])


def test_kv_delete_and_code_3(node: Node) -> None:
    key = f"del-{secrets.token_hex(4)}"
    node.put(key, b"v")
    r = node.send_wait(make_tx(node.client, "kv", "delete", {"key": key}))
    assert r["code"] == 0
    assert node.call("query", family="kv", key=key) is None
    r3 = node.send_wait(make_tx(node.client, "kv", "delete", {"key": key}))
    assert r3["status"] == "committed" and r3["code"] == 3 and isinstance(r3["log"], str), r3
    assert node.call("query", family="kv", key=key) is None


@pytest.mark.parametrize(
    "op,args",
    [
        ("put", {"key": "", "value": b"v"}),  # key 0 bytes
        ("put", {"key": "k" * 257, "value": b"v"}),  # key > 256 bytes
        ("put", {"key": "big-value", "value": b"x" * (16 * 1024 + 1)}),  # value > 16 KiB
        ("put", {"key": "str-value", "value": "not bin"}),  # value must be bin
        ("put", {"value": b"v"}),  # missing key
        ("put", {"key": 7, "value": b"v"}),  # key not a str
        ("delete", {}),  # missing key
    ],
    ids=["empty-key", "long-key", "big-value", "str-value", "no-key", "int-key", "delete-no-key"],
)
def test_kv_code_1_bad_args(node: Node, op: str, args: dict[str, Any]) -> None:
    r = node.send_wait(make_tx(node.client, "kv", op, args))
    assert r["status"] == "committed" and r["code"] == 1, r
    key = args.get("key")
    if isinstance(key, str) and key:
        assert node.call("query", family="kv", key=key) is None


def test_kv_limits_accepted(node: Node) -> None:
    key = "é" * 128  # exactly 256 bytes of UTF-8
    r = node.put(key, b"y" * (16 * 1024))
    assert r["code"] == 0, r
    assert node.call("query", family="kv", key=key)["value"] == ("79" * 16 * 1024)


def test_kv_code_2_not_owner(node: Node) -> None:
    pytest.skip(
        "code 2 needs a second authorised sender; the testnet authorises only DIR/client.key "
        "and the spec defines no way (governance ops) to authorise another"
    )


def test_notary_record_query_and_code_4(node: Node) -> None:
    digest = hashlib.sha256(secrets.token_bytes(32)).digest()
    assert node.call("query", family="notary", key=digest.hex()) is None
    tx = make_tx(node.client, "notary", "record", {"digest": digest, "meta": "contract v1"})
    r = node.send_wait(tx)
    assert r["code"] == 0, r
    q = node.call("query", family="notary", key=digest.hex())
    blk = node.call("get_block", height=r["height"])
    assert q == {
        "recorder": pubkey_hex(node.client),
        "height": r["height"],
        "time": blk["time"],
        "tx_hash": tx.hash,
        "meta": "contract v1",
    }
    again = node.send_wait(make_tx(node.client, "notary", "record", {"digest": digest}))
    assert again["status"] == "committed" and again["code"] == 4, again
    assert node.call("query", family="notary", key=digest.hex()) == q


def test_notary_without_meta(node: Node) -> None:
    digest = hashlib.sha256(secrets.token_bytes(32)).digest()
    r = node.send_wait(make_tx(node.client, "notary", "record", {"digest": digest}))
    assert r["code"] == 0, r
    q = node.call("query", family="notary", key=digest.hex())
    assert q["recorder"] == pubkey_hex(node.client) and q["height"] == r["height"]
    # ASSUMPTION: absent meta reads back as null or "".
    assert q["meta"] in (None, ""), q


@pytest.mark.parametrize(
    "args",
    [
        {"digest": b"\x00" * 31},
        {"digest": b"\x00" * 33},
        {"digest": "00" * 32},  # hex str instead of bin
        {},
        {"digest": b"\x01" * 32, "meta": "m" * 1025},
        {"digest": b"\x02" * 32, "meta": b"bin meta"},
    ],
    ids=["digest-31", "digest-33", "digest-str", "no-digest", "meta-too-long", "meta-bin"],
)
def test_notary_code_1_bad_args(node: Node, args: dict[str, Any]) -> None:
    r = node.send_wait(make_tx(node.client, "notary", "record", args))
    assert r["status"] == "committed" and r["code"] == 1, r
    d = args.get("digest")
    if isinstance(d, bytes) and len(d) == 32:
        assert node.call("query", family="notary", key=d.hex()) is None


# --------------------------------------------------------------------------
# Section 3: -32001 refusals
# --------------------------------------------------------------------------


def _reason(err: RpcError) -> str:
    assert err.code == -32001, err.error
    assert isinstance(err.data, dict) and isinstance(err.data.get("reason"), str) and err.data["reason"], err.error
    return str(err.data["reason"])


def _noncanonical_variants(node: Node) -> dict[str, bytes]:
    """Transactions whose only defect is a non-canonical encoding.

    Each is signed over the canonical signing bytes of the same body, so a node
    that re-encodes what it decodes sees a valid signature but different bytes.
    """
    sk = node.client
    sender = bytes(sk.verify_key)
    out: dict[str, bytes] = {}

    def signed(nonce: int, args: dict[str, Any]) -> bytes:
        body = [1, CHAIN_ID, sender, nonce, "kv", "put", args]
        return sk.sign(SIGNING_PREFIX + packc(body)).signature

    def pk(o: Any) -> bytes:
        out: bytes = msgpack.packb(o, use_bin_type=True)
        return out

    # 1. args keys not sorted ("value" before "key").
    n = fresh_nonce()
    args = {"key": "nc-unsorted", "value": b"v"}
    sig = signed(n, args)
    unsorted = {"value": b"v", "key": "nc-unsorted"}
    out["unsorted-keys"] = pk([1, CHAIN_ID, sender, n, "kv", "put", unsorted, sig])
    assert out["unsorted-keys"] != packc([1, CHAIN_ID, sender, n, "kv", "put", args, sig])

    # 2. nonce as uint64 although it fits in a positive fixint.
    n = 5 + secrets.randbelow(100)
    args = {"key": "nc-int", "value": b"v"}
    sig = signed(n, args)
    out["long-int"] = (
        b"\x98" + pk(1) + pk(CHAIN_ID) + pk(sender) + b"\xcf" + n.to_bytes(8, "big")
        + pk("kv") + pk("put") + pk(args) + pk(sig)
    )

    # 3. a str written as str16 although str8/fixstr suffices.
    n = fresh_nonce()
    args = {"key": "nc-str", "value": b"v"}
    sig = signed(n, args)
    out["long-str"] = (
        b"\x98" + pk(1) + pk(CHAIN_ID) + pk(sender) + pk(n)
        + b"\xda\x00\x02kv" + pk("put") + pk(args) + pk(sig)
    )

    # 4. a float in args (canonical MessagePack has no floats).
    n = fresh_nonce()
    float_args: dict[str, Any] = {"key": "nc-float", "value": 1.5}
    body = [1, CHAIN_ID, sender, n, "kv", "put", float_args]
    sig = sk.sign(SIGNING_PREFIX + pk(body)).signature
    out["float"] = pk(body + [sig])
    return out


@pytest.fixture
def refusal_reasons(node: Node) -> dict[str, str]:
    reasons: dict[str, str] = {}
    # malformed bytes
    reasons["malformed"] = _reason(node.refused("c1"))
    good = make_tx(node.client, "kv", "put", {"key": "bad-sig", "value": b"v"})
    # bad signature: flip one bit of the signature
    body = good.body
    bad_sig = bytearray(good.signature)
    bad_sig[0] ^= 1
    reasons["signature"] = _reason(node.refused(packc(body + [bytes(bad_sig)]).hex()))
    # wrong chain id (correctly signed)
    reasons["chain"] = _reason(node.refused(make_tx(node.client, "kv", "put", {"key": "c", "value": b"v"},
                                                    chain_id="some-other-chain").hex))
    # over size, otherwise perfectly valid
    big = make_tx(node.client, "kv", "put", {"key": "huge", "value": b"z" * (MAX_TX_BYTES + 100)})
    reasons["size"] = _reason(node.refused(big.hex))
    # not canonical
    reasons["canonical"] = _reason(node.refused(_noncanonical_variants(node)["unsorted-keys"].hex()))
    return reasons


def test_refusal_reasons_say_which(refusal_reasons: dict[str, str]) -> None:
    """data.reason "says which": the five kinds are told apart."""
    values = list(refusal_reasons.values())
    assert len(set(values)) == len(values), refusal_reasons


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc1",  # never-used MessagePack byte
        msgpack.packb("hello"),
        msgpack.packb([1, 2, 3]),
        b"",
    ],
    ids=["c1", "str", "short-array", "empty"],
)
def test_refused_malformed_bytes(node: Node, raw: bytes) -> None:
    _reason(node.refused(raw.hex()))


def test_refused_malformed_structure(node: Node) -> None:
    sk = node.client
    good = make_tx(sk, "kv", "put", {"key": "trunc", "value": b"v"})
    _reason(node.refused(good.raw[:-1].hex()))  # truncated
    _reason(node.refused((good.raw + b"\x00").hex()))  # trailing byte
    # wrong version, negative nonce, short sender
    _reason(node.refused(make_tx(sk, "kv", "put", {"key": "v", "value": b"v"}, version=2).hex))
    _reason(node.refused(make_tx(sk, "kv", "put", {"key": "v", "value": b"v"}, nonce=-1).hex))
    body = [1, CHAIN_ID, bytes(sk.verify_key)[:31], fresh_nonce(), "kv", "put", {"key": "s", "value": b"v"}]
    sig = sk.sign(SIGNING_PREFIX + packc(body)).signature
    _reason(node.refused(packc(body + [sig]).hex()))
    # signature of the wrong length
    body = [1, CHAIN_ID, bytes(sk.verify_key), fresh_nonce(), "kv", "put", {"key": "s", "value": b"v"}]
    _reason(node.refused(packc(body + [b"\x00" * 63]).hex()))


def test_refused_bad_signature(node: Node) -> None:
    good = make_tx(node.client, "kv", "put", {"key": "bad-sig-2", "value": b"v"})
    sig = bytearray(good.signature)
    sig[-1] ^= 0x80
    _reason(node.refused(packc(good.body + [bytes(sig)]).hex()))
    # a signature by another key over the right bytes
    other = SigningKey.generate()
    sig2 = other.sign(SIGNING_PREFIX + packc(good.body)).signature
    _reason(node.refused(packc(good.body + [sig2]).hex()))
    assert node.call("get_tx", tx_hash=good.hash)["status"] == "unknown"


def test_refused_wrong_chain_id(node: Node) -> None:
    tx = make_tx(node.client, "kv", "put", {"key": "wc", "value": b"v"}, chain_id=CHAIN_ID + "-x")
    _reason(node.refused(tx.hex))


def _tx_of_size(node: Node, size: int) -> Tx:
    pad = size - 200
    for _ in range(10):
        # nonces >= 2**63 always take the 9-byte uint64 form, so the size is stable
        tx = make_tx(node.client, "kv", "put", {"key": "size-edge", "value": b"q" * pad},
                     nonce=2**63 + secrets.randbits(63))
        diff = size - len(tx.raw)
        if diff == 0:
            return tx
        pad += diff
    raise AssertionError("could not hit the exact size")


def test_refused_oversize_boundary(node: Node) -> None:
    over = _tx_of_size(node, MAX_TX_BYTES + 1)
    assert len(over.raw) == MAX_TX_BYTES + 1
    _reason(node.refused(over.hex))
    exact = _tx_of_size(node, MAX_TX_BYTES)
    assert len(exact.raw) == MAX_TX_BYTES
    # At most 64 KiB: accepted at send_tx (the value breaks kv's 16 KiB limit -> code 1).
    r = node.send_wait(exact)
    assert r["code"] == 1, r


@pytest.mark.parametrize("variant", ["unsorted-keys", "long-int", "long-str", "float"])
def test_refused_not_canonical(node: Node, variant: str) -> None:
    raw = _noncanonical_variants(node)[variant]
    err = node.refused(raw.hex())
    _reason(err)


def test_refused_unauthorised_sender(node: Node, stranger: SigningKey) -> None:
    tx = make_tx(stranger, "kv", "put", {"key": "stranger", "value": b"v"})
    err = node.refused(tx.hex)
    assert err.code == -32002, err.error
    assert node.call("get_tx", tx_hash=tx.hash)["status"] == "unknown"
    assert node.call("query", family="kv", key="stranger") is None


def test_duplicate_pending_and_committed(node: Node) -> None:
    tx = make_tx(node.client, "kv", "put", {"key": "dup", "value": b"d"})
    assert node.send(tx) == {"tx_hash": tx.hash}
    err = node.refused(tx.hex)  # pending (or already committed)
    assert err.code == -32003, err.error
    node.wait_committed(tx.hash)
    err = node.refused(tx.hex)  # committed
    assert err.code == -32003, err.error
    err = node.error("send_tx", {"tx": tx.hex, "wait": True})
    assert err.code == -32003, err.error


# --------------------------------------------------------------------------
# Section 3: JSON-RPC protocol errors and batches
# --------------------------------------------------------------------------


def test_parse_error(node: Node) -> None:
    for body in (b'{"jsonrpc": "2.0", "method": "status", "id": 1', b"\xff\xfe", b""):
        reply = node.post_raw(body)
        assert reply.status < 500, reply
        resp = reply.json()
        assert resp["jsonrpc"] == "2.0" and resp["id"] is None, resp
        assert resp["error"]["code"] == -32700, resp


@pytest.mark.parametrize(
    "payload",
    [
        {"id": 1, "method": "status"},  # missing jsonrpc
        {"jsonrpc": "1.0", "id": 1, "method": "status"},
        {"jsonrpc": "2.0", "id": 1},  # missing method
        {"jsonrpc": "2.0", "id": 1, "method": 5},
        1,
        "status",
    ],
    ids=["no-jsonrpc", "jsonrpc-1.0", "no-method", "method-int", "number", "string"],
)
def test_invalid_request(node: Node, payload: Any) -> None:
    reply = node.post_raw(json.dumps(payload).encode())
    assert reply.status < 500
    resp = reply.json()
    assert isinstance(resp, dict), resp
    assert resp["error"]["code"] == -32600, resp


def test_invalid_request_empty_batch(node: Node) -> None:
    resp = node.post_json([])
    assert isinstance(resp, dict), resp  # JSON-RPC 2.0: one error object, not an array
    assert resp["error"]["code"] == -32600 and resp["id"] is None, resp


def test_invalid_request_in_batch(node: Node) -> None:
    resp = node.post_json([1, {"jsonrpc": "2.0", "id": 7, "method": "status"}])
    assert isinstance(resp, list) and len(resp) == 2, resp
    by_id = {json.dumps(r["id"]): r for r in resp}
    assert by_id["null"]["error"]["code"] == -32600
    assert by_id["7"]["result"]["chain_id"] == CHAIN_ID


def test_method_not_found(node: Node) -> None:
    err = node.error("no_such_method", {})
    assert err.code == -32601, err.error


@pytest.mark.parametrize(
    "method,params",
    [
        ("get_block", [1]),  # positional
        ("send_tx", ["00"]),
        ("get_tx", {}),  # missing tx_hash
        ("send_tx", {}),  # missing tx
        ("send_tx", {"wait": True}),
        ("send_tx", {"tx": 5}),
        ("get_tx", {"tx_hash": "xyz"}),
        ("get_block", {"height": "first"}),
        ("get_block", {}),
        ("query", {"family": "kv"}),
    ],
    ids=["block-array", "send-array", "get_tx-missing", "send-missing", "send-only-wait",
         "send-int", "get_tx-bad-hex", "block-word", "block-missing", "query-no-key"],
)
def test_invalid_params(node: Node, method: str, params: Any) -> None:
    err = node.error(method, params)
    assert err.code == -32602, err.error


def test_send_tx_not_hex(node: Node) -> None:
    """ASSUMPTION: a tx param that is a string but not hex is either invalid
    params (-32602) or a malformed transaction (-32001); the spec allows both
    readings."""
    for bad in ("zz", "0", "0xc1", "C1"):
        err = node.error("send_tx", {"tx": bad})
        if err.code == -32001:
            _reason(err)
        else:
            assert err.code == -32602, (bad, err.error)


def test_get_block_negative_height(node: Node) -> None:
    """ASSUMPTION: a negative height is invalid params (-32602) or simply a
    block that is not found (-32005)."""
    err = node.error("get_block", {"height": -1})
    assert err.code in (-32602, -32005), err.error


def test_batch_answered_in_one_array(node: Node) -> None:
    tx = make_tx(node.client, "kv", "put", {"key": "batch", "value": b"b"})
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "status"},
        {"jsonrpc": "2.0", "id": "two", "method": "get_block", "params": {"height": "latest"}},
        {"jsonrpc": "2.0", "id": 3, "method": "nope"},
        {"jsonrpc": "2.0", "id": 4, "method": "get_tx", "params": {"tx_hash": tx.hash}},
        {"jsonrpc": "2.0", "id": 5, "method": "send_tx", "params": {"tx": tx.hex}},
        {"jsonrpc": "2.0", "id": 6, "method": "query", "params": {"family": "kv", "key": "no-such-key"}},
    ]
    resp = node.post_json(batch)
    assert isinstance(resp, list) and len(resp) == len(batch), resp
    by_id = {r["id"]: r for r in resp}
    assert set(by_id) == {1, "two", 3, 4, 5, 6}
    assert all(r["jsonrpc"] == "2.0" for r in resp)
    assert by_id[1]["result"]["chain_id"] == CHAIN_ID
    assert by_id["two"]["result"]["height"] >= 1
    assert by_id[3]["error"]["code"] == -32601
    assert by_id[4]["result"]["status"] in ("unknown", "pending", "committed")
    assert by_id[5]["result"] == {"tx_hash": tx.hash}
    assert by_id[6]["result"] is None
    node.wait_committed(tx.hash)


def test_batch_notifications_not_answered(node: Node) -> None:
    """JSON-RPC 2.0: a call without id is a notification and gets no answer."""
    resp = node.post_json([
        {"jsonrpc": "2.0", "method": "status"},
        {"jsonrpc": "2.0", "id": 9, "method": "status"},
    ])
    assert isinstance(resp, list) and [r["id"] for r in resp] == [9], resp


# --------------------------------------------------------------------------
# HTTP level
# --------------------------------------------------------------------------


def raw_post_status(port: int, body: bytes, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, bytes]:
    """POST a body over a plain socket; tolerate the server closing early.

    A server may answer 413 as soon as it sees too much and stop reading, so
    the client keeps going after a send error and still reads the answer.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        head = (
            f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            s.sendall(head)
            for i in range(0, len(body), 65536):
                s.sendall(body[i:i + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    assert data.startswith(b"HTTP/1."), f"no HTTP answer, got {data[:200]!r}"
    status = int(data.split(b" ", 2)[1])
    return status, data


def test_http_body_over_1mib_is_413(node: Node) -> None:
    over = b'{"jsonrpc":"2.0","id":1,"method":"status","params":{"pad":"' + b"0" * MAX_HTTP_BODY + b'"}}'
    assert len(over) > MAX_HTTP_BODY
    status, data = raw_post_status(node.rpc_port, over)
    assert status == 413, data[:300]
    # Exactly 1 MiB is not "over": it is read and answered as JSON-RPC.
    head = b'{"jsonrpc":"2.0","id":1,"method":"status","params":{"pad":"'
    tail = b'"}}'
    exact = head + b"0" * (MAX_HTTP_BODY - len(head) - len(tail)) + tail
    assert len(exact) == MAX_HTTP_BODY
    status, data = raw_post_status(node.rpc_port, exact)
    assert status != 413, data[:300]
    assert node.status()["chain_id"] == CHAIN_ID  # still serving


@pytest.mark.parametrize(
    "method,path,body",
    [("GET", "/", None), ("POST", "/other", b'{"jsonrpc":"2.0","id":1,"method":"status"}'),
     ("PUT", "/", b"{}"), ("GET", "/other", None)],
    ids=["GET-root", "POST-other", "PUT-root", "GET-other"],
)
def test_http_wrong_method_or_path_is_clean_4xx(node: Node, method: str, path: str, body: bytes | None) -> None:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    reply = http_request(node.rpc_port, method, path, body, headers, timeout=10)
    assert 400 <= reply.status < 500, (reply.status, reply.body[:300])


# --------------------------------------------------------------------------
# Section 4: operations endpoints
# --------------------------------------------------------------------------

METRIC_TYPES = {
    "alliance_chain_height": "gauge",
    "alliance_txs_committed_total": "counter",
    "alliance_txs_rejected_total": "counter",
    "alliance_mempool_txs": "gauge",
    "alliance_consensus_view": "gauge",
    "alliance_consensus_view_changes_total": "counter",
    "alliance_peers_connected": "gauge",
    "alliance_block_commit_seconds": "histogram",
    "alliance_rpc_requests_total": "counter",
}


def _scrape(node: Node) -> str:
    reply = http_request(node.metrics_port, "GET", "/metrics")
    assert reply.status == 200, reply
    assert reply.headers.get("content-type", "").startswith("text/plain"), reply.headers
    return reply.body.decode()


def _samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        assert m, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.append((m.group(1), labels, float(m.group(4))))
    return out


@pytest.fixture
def metrics_text(node: Node) -> str:
    # Make every series have samples: a commit, a refusal, an RPC call.
    node.put("metrics-probe", b"m")
    assert node.refused("c1").code == -32001
    node.status()
    return _scrape(node)


def test_metrics_series_present_with_types(node: Node, metrics_text: str) -> None:
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", metrics_text, re.M))
    names = {s[0] for s in _samples(metrics_text)}
    for name, kind in METRIC_TYPES.items():
        # A counter "x_total" may carry its TYPE line under "x" (OpenMetrics style).
        declared = types.get(name) or (types.get(name[: -len("_total")]) if name.endswith("_total") else None)
        assert declared == kind, (name, declared)
        if kind == "histogram":
            for suffix in ("_bucket", "_sum", "_count"):
                assert name + suffix in names, name + suffix
        else:
            assert name in names, name


def test_metrics_values_and_labels(node: Node, metrics_text: str) -> None:
    samples = _samples(metrics_text)
    height = node.status()["height"]
    chain_height = [v for n, _, v in samples if n == "alliance_chain_height"]
    assert chain_height and 1 <= chain_height[0] <= height
    committed = sum(v for n, _, v in samples if n == "alliance_txs_committed_total")
    assert committed >= 1
    rejected = [lab for n, lab, _ in samples if n == "alliance_txs_rejected_total"]
    assert rejected and all("reason" in lab for lab in rejected), rejected
    rpc = [lab for n, lab, _ in samples if n == "alliance_rpc_requests_total"]
    assert any(lab.get("method") == "status" and "outcome" in lab for lab in rpc), rpc
    assert any(lab.get("method") == "send_tx" for lab in rpc), rpc
    count = [v for n, _, v in samples if n == "alliance_block_commit_seconds_count"]
    assert count and count[0] >= 1


def test_metrics_pass_promtool(metrics_text: str) -> None:
    if not shutil.which(PROMTOOL) and not os.path.exists(PROMTOOL):
        pytest.skip("promtool not installed")
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=metrics_text, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "" and p.stderr == "", (p.returncode, p.stdout, p.stderr)


def test_healthz(node: Node) -> None:
    reply = http_request(node.metrics_port, "GET", "/healthz")
    assert reply.status == 200, reply


def test_readyz_single_validator(node: Node) -> None:
    reply = http_request(node.metrics_port, "GET", "/readyz")
    assert reply.status == 200, (reply.status, reply.body)
