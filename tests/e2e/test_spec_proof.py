"""Acceptance test: a transaction-proof verifier written from docs/proofs.md alone.

The verifier below (`verify_proof`) and everything the tests do with it come
from the project's documentation only: docs/proofs.md (the `get_proof` method,
the proof format and the nine checks), docs/encoding.md (header, certificate,
RFC 6962 trees, receipt items) and docs/client-protocol.md (keys, canonical
MessagePack, transactions, JSON-RPC). It uses the standard library, PyNaCl and
msgpack; it imports nothing of the node (node.*, consensus.*, storage.*; the
process helpers of tests/e2e/nodeproc.py, which start the real nodes, do).
Nodes are spoken to over raw JSON-RPC HTTP, and the `alliance` CLI is run as a
subprocess.

The tests check that
* every proof of every committed transaction of several blocks (a block with
  one transaction, a block with several including failed ones, a block made by
  `alliance notarize --proof`), fetched from each of the four nodes, verifies,
  and agrees with `get_block` and `get_tx`;
* `get_proof` errors are those of proofs.md section 1 (unknown, pending, bad params);
* a table of tamperings of one real proof is rejected by this verifier and by
  `alliance verify-proof`, at the same check, with a one-line reason and no
  traceback, while equally valid variants (signatures reordered or gathered
  from several nodes) are accepted by both;
* `alliance lookup --proof` and `verify-proof` behave as proofs.md section 5 says;
* the worked example of proofs.md section 4, a proof across a validator-set change (and its failing
  variants, in the steps of `validator_changes` too), holds.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import nacl.exceptions
import nacl.signing
import pytest

from tests.e2e.nodeproc import make_testnet, node_process, wait_for

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
ALLIANCE_CLI = [sys.executable, "-m", "node.cli"]  # the `alliance` console script, run as a subprocess
DEADLINE_S = 30.0

# --------------------------------------------------------------------------------------------------
# The verifier: docs/proofs.md section 3, step by step.
# --------------------------------------------------------------------------------------------------

U64_MAX = 2**64 - 1
TX_MAX_BYTES = 64 * 1024
COMMIT_SEAL_PREFIX = b"alliance-commit-v1\x00"  # 18 ASCII characters and one zero byte
TX_SIGNING_PREFIX = b"alliance-tx-v1\x00"  # 14 ASCII characters and one zero byte

PROOF_KEYS = {"version", "tx_hash", "tx", "receipt", "index", "tx_path", "receipt_path", "header", "commit",
              "validator_changes"}
RECEIPT_KEYS = {"code", "log"}
HEADER_KEYS = {
    "version", "chain_id", "height", "prev_hash", "time", "proposer",
    "tx_count", "tx_root", "receipt_root", "state_root", "validators_hash", "next_validators_hash",
}  # fmt: skip
HEADER_HASHES = ("prev_hash", "proposer", "tx_root", "receipt_root", "state_root", "validators_hash",
                 "next_validators_hash")
COMMIT_KEYS = {"height", "block_hash", "signatures"}
SIGNATURE_KEYS = {"validator", "signature"}
STEP_KEYS = {"header", "commit", "validators"}

CHECKS = ("shape", "chain id", "block hash", "commit height", "validator change", "validators", "certificate",
          "transaction", "index", "tx path", "receipt path")  # fmt: skip


class ProofInvalid(Exception):
    def __init__(self, check: str, detail: str) -> None:
        assert check in CHECKS
        super().__init__(f"{check}: {detail}")
        self.check = check
        self.detail = detail


def quorum(n: int) -> int:
    f = (n - 1) // 3
    return (n + f) // 2 + 1


def verify_proof(proof: Any, chain_id: str, validators: list[str]) -> str:
    """Returns "ok" if `proof` holds for this genesis, else "<check>: <detail>" for the first failing check."""
    try:
        _verify(proof, chain_id, [bytes.fromhex(v) for v in validators])
    except ProofInvalid as e:
        return str(e)
    return "ok"


def failed_check(verdict: str) -> str | None:
    """The check a verdict of `verify_proof` names, None for "ok"."""
    if verdict == "ok":
        return None
    return next(c for c in sorted(CHECKS, key=len, reverse=True) if verdict.startswith(c + ":"))


# Step 1: shape.

_HEX = re.compile(r"[0-9a-f]*")


def _is_int(x: Any) -> bool:
    return type(x) is int and 0 <= x <= U64_MAX  # type() is int: rejects True/False, and 1.0 is a float


def _is_hex(x: Any, nbytes: int | None) -> bool:
    if type(x) is not str or _HEX.fullmatch(x) is None:
        return False
    if nbytes is None:  # `tx`: a non-empty even number of hex digits
        return len(x) > 0 and len(x) % 2 == 0
    return len(x) == 2 * nbytes


def _closed(obj: Any, keys: set[str], where: str) -> None:
    if type(obj) is not dict:
        raise ProofInvalid("shape", f"{where} is not an object")
    if set(obj) != keys:
        extra, missing = sorted(set(obj) - keys), sorted(keys - set(obj))
        raise ProofInvalid("shape", f"{where}: unexpected keys {extra}, missing keys {missing}")


def _field(obj: dict[str, Any], key: str, ok: bool, what: str, where: str) -> None:
    if not ok:
        raise ProofInvalid("shape", f"{where}.{key} is not {what}: {obj[key]!r:.80}")


def _check_shape(p: Any) -> None:
    _closed(p, PROOF_KEYS, "proof")
    _field(p, "version", _is_int(p["version"]) and p["version"] == 2, "2", "proof")
    _field(p, "tx_hash", _is_hex(p["tx_hash"], 32), "hex 32", "proof")
    _field(p, "tx", _is_hex(p["tx"], None), "non-empty hex", "proof")
    _closed(p["receipt"], RECEIPT_KEYS, "receipt")
    _field(p["receipt"], "code", _is_int(p["receipt"]["code"]), "an int", "receipt")
    _field(p["receipt"], "log", type(p["receipt"]["log"]) is str, "a str", "receipt")
    _field(p, "index", _is_int(p["index"]), "an int", "proof")
    for key in ("tx_path", "receipt_path"):
        path = p[key]
        _field(p, key, type(path) is list and all(_is_hex(h, 32) for h in path), "a list of hex 32", "proof")
    _check_header_shape(p["header"], "header")
    _check_commit_shape(p["commit"], "commit")
    _field(p, "validator_changes", type(p["validator_changes"]) is list, "a list", "proof")
    for i, step in enumerate(p["validator_changes"]):
        where = f"validator_changes[{i}]"
        _closed(step, STEP_KEYS, where)
        _check_header_shape(step["header"], f"{where}.header")
        _check_commit_shape(step["commit"], f"{where}.commit")
        keys = step["validators"]
        _field(step, "validators", type(keys) is list and all(_is_hex(k, 32) for k in keys), "a list of hex 32", where)


def _check_header_shape(h: Any, where: str) -> None:
    _closed(h, HEADER_KEYS, where)
    _field(h, "version", _is_int(h["version"]) and h["version"] == 4, "4", where)
    _field(h, "chain_id", type(h["chain_id"]) is str, "a str", where)
    for key in ("height", "time", "tx_count"):
        _field(h, key, _is_int(h[key]), "an int", where)
    for key in HEADER_HASHES:
        _field(h, key, _is_hex(h[key], 32), "hex 32", where)


def _check_commit_shape(c: Any, where: str) -> None:
    _closed(c, COMMIT_KEYS, where)
    _field(c, "height", _is_int(c["height"]), "an int", where)
    _field(c, "block_hash", _is_hex(c["block_hash"], 32), "hex 32", where)
    _field(c, "signatures", type(c["signatures"]) is list, "a list", where)
    for i, s in enumerate(c["signatures"]):
        _closed(s, SIGNATURE_KEYS, f"{where}.signatures[{i}]")
        _field(s, "validator", _is_hex(s["validator"], 32), "hex 32", f"{where}.signatures[{i}]")
        _field(s, "signature", _is_hex(s["signature"], 64), "hex 64", f"{where}.signatures[{i}]")


# Canonical MessagePack (client protocol section 2; encoding.md).


def _sorted_maps(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _sorted_maps(obj[k]) for k in sorted(obj, key=lambda k: k.encode("utf-8"))}
    if isinstance(obj, list):
        return [_sorted_maps(x) for x in obj]
    return obj


def packb(obj: Any) -> bytes:
    """Canonical MessagePack: msgpack.packb with use_bin_type=True and every map's keys sorted by UTF-8 bytes."""
    return bytes(msgpack.packb(_sorted_maps(obj), use_bin_type=True))


def _ed25519_ok(pubkey: bytes, message: bytes, signature: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(pubkey).verify(message, signature)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


def _arg_value_ok(v: Any) -> bool:
    """args values: nil/bool/int/str/bin/array/map (str keys), recursively; no floats, no extension types."""
    if v is None or type(v) in (bool, int, str, bytes):
        return True
    if type(v) is list:
        return all(_arg_value_ok(x) for x in v)
    if type(v) is dict:
        return all(type(k) is str and _arg_value_ok(x) for k, x in v.items())
    return False


def _check_transaction(p: dict[str, Any], chain_id: str) -> None:
    tx = bytes.fromhex(p["tx"])
    if len(tx) > TX_MAX_BYTES:
        raise ProofInvalid("transaction", f"{len(tx)} bytes, over 64 KiB")
    try:
        decoded = msgpack.unpackb(tx, raw=False, use_list=True, strict_map_key=False)
    except Exception as e:  # any decoding failure: truncated, extra data, invalid UTF-8, ...
        raise ProofInvalid("transaction", f"not MessagePack: {e}") from None
    if type(decoded) is not list or len(decoded) != 8:
        raise ProofInvalid("transaction", "not an array of 8")
    version, tx_chain_id, sender, nonce, family, op, args, signature = decoded
    types_ok = (
        type(version) is int and version == 1
        and type(tx_chain_id) is str
        and type(sender) is bytes and len(sender) == 32
        and _is_int(nonce)
        and type(family) is str
        and type(op) is str
        and type(args) is dict and _arg_value_ok(args)
        and type(signature) is bytes and len(signature) == 64
    )  # fmt: skip
    if not types_ok:
        raise ProofInvalid("transaction", "elements of the wrong types")
    if packb(decoded) != tx:
        raise ProofInvalid("transaction", "not the canonical encoding")
    if tx_chain_id != chain_id:
        raise ProofInvalid("transaction", f"chain id {tx_chain_id!r} is not the genesis chain id")
    # The 15-byte prefix, then tx with its first byte 0x98 made 0x97 and its last 66 bytes (c4 40 + signature) cut.
    assert tx[0] == 0x98 and tx[-66:-64] == b"\xc4\x40"
    signing_bytes = TX_SIGNING_PREFIX + b"\x97" + tx[1:-66]
    assert signing_bytes == TX_SIGNING_PREFIX + packb(decoded[:7])
    if not _ed25519_ok(sender, signing_bytes, signature):
        raise ProofInvalid("transaction", "the signature does not verify with the sender key")
    if hashlib.sha256(signing_bytes).hexdigest() != p["tx_hash"]:
        raise ProofInvalid("transaction", "tx_hash is not SHA-256 of the signing bytes")


# RFC 6962 inclusion paths (steps 8 and 9).


def leaf(x: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + x).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def path_ok(item: bytes, index: int, size: int, path: list[str], root: bytes) -> bool:
    pending = [bytes.fromhex(h) for h in path]
    digest = leaf(item)
    width = size
    while width > 1:
        if index ^ 1 < width:  # the sibling exists at this level
            if not pending:
                return False
            sibling = pending.pop(0)
            digest = node(sibling, digest) if index % 2 == 1 else node(digest, sibling)
        # else: the last node of an odd level moves up unchanged, using no path element
        index //= 2
        width = (width + 1) // 2
    return not pending and digest == root


def receipt_item(tx_hash: bytes, code: int, log: str) -> bytes:
    return bytes(msgpack.packb([tx_hash, code, log], use_bin_type=True))


def header_hash(h: dict[str, Any]) -> bytes:
    """Step 3: SHA-256 of the canonical array of the twelve header fields."""
    header = [
        4, h["chain_id"], h["height"], bytes.fromhex(h["prev_hash"]), h["time"], bytes.fromhex(h["proposer"]),
        h["tx_count"], *(bytes.fromhex(h[k]) for k in HEADER_HASHES[2:]),
    ]  # fmt: skip
    return hashlib.sha256(msgpack.packb(header, use_bin_type=True)).digest()


def keys_hash(keys: list[bytes]) -> bytes:
    """hash(V): SHA-256 of packb of the list of validator keys as bin."""
    return hashlib.sha256(msgpack.packb(keys, use_bin_type=True)).digest()


def _certificate_fault(c: dict[str, Any], block_hash: bytes, validators: list[bytes]) -> str | None:
    """Step 6 for a commit and a validator set: None if it holds, else what is wrong."""
    seal_bytes = COMMIT_SEAL_PREFIX + block_hash
    assert len(seal_bytes) == 51
    members = set(validators)
    seen: set[bytes] = set()
    for i, s in enumerate(c["signatures"]):
        validator = bytes.fromhex(s["validator"])
        if validator not in members:
            return f"signature {i}: {s['validator']} is not a validator in force"
        if validator in seen:
            return f"signature {i}: {s['validator']} signs twice"
        seen.add(validator)
        if not _ed25519_ok(validator, seal_bytes, bytes.fromhex(s["signature"])):
            return f"signature {i}: invalid seal by {s['validator']}"
    q = quorum(len(validators))
    if len(c["signatures"]) < q:
        return f"{len(c['signatures'])} signatures, quorum is {q}"
    return None


def _walk_changes(p: dict[str, Any], chain_id: str, validators: list[bytes]) -> list[bytes]:
    """Step 4: the validators of the proof's block, from the genesis ones through every step."""
    in_force, previous = validators, 0
    for i, step in enumerate(p["validator_changes"]):
        h, c = step["header"], step["commit"]
        new = [bytes.fromhex(k) for k in step["validators"]]

        def fail(detail: str) -> ProofInvalid:
            return ProofInvalid("validator change", f"step {i}: {detail}")  # noqa: B023

        if h["chain_id"] != chain_id:
            raise fail("another chain id")
        if not previous < h["height"] < p["header"]["height"]:
            raise fail(f"height {h['height']} not above {previous} and below the proof's block")
        block_hash = header_hash(h)
        if block_hash.hex() != c["block_hash"] or c["height"] != h["height"]:
            raise fail("the header is not the one the commit is of")
        if h["validators_hash"] != keys_hash(in_force).hex():
            raise fail("validators_hash is not hash(V)")
        fault = _certificate_fault(c, block_hash, in_force)
        if fault is not None:
            raise fail(f"certificate: {fault}")
        if not new or len(set(new)) != len(new):
            raise fail("validators empty or with a key twice")
        if h["next_validators_hash"] != keys_hash(new).hex() or h["next_validators_hash"] == h["validators_hash"]:
            raise fail("next_validators_hash is not hash(validators), or no change")
        in_force, previous = new, h["height"]
    return in_force


def _verify(p: Any, chain_id: str, validators: list[bytes]) -> None:
    # 1. Shape.
    _check_shape(p)
    h, c = p["header"], p["commit"]
    # 2. Chain.
    if h["chain_id"] != chain_id:
        raise ProofInvalid("chain id", f"{h['chain_id']!r:.80} is not the genesis chain id {chain_id!r}")
    # 3. Block hash, then commit height.
    block_hash = header_hash(h)
    if block_hash.hex() != c["block_hash"]:
        raise ProofInvalid("block hash", "SHA-256 of the header is not commit.block_hash")
    if c["height"] != h["height"]:
        raise ProofInvalid("commit height", f"{c['height']} is not the header height {h['height']}")
    # 4. Validator changes.
    in_force = _walk_changes(p, chain_id, validators)
    # 5. Validators.
    if h["validators_hash"] != keys_hash(in_force).hex():
        raise ProofInvalid("validators", "header.validators_hash is not hash(V)")
    # 6. Certificate.
    fault = _certificate_fault(c, block_hash, in_force)
    if fault is not None:
        raise ProofInvalid("certificate", fault)
    # 7. Transaction.
    _check_transaction(p, chain_id)
    # 8. Transaction path.
    index, size = p["index"], h["tx_count"]
    if not index < size:
        raise ProofInvalid("index", f"{index} is not below tx_count {size}")
    tx_hash = bytes.fromhex(p["tx_hash"])
    if not path_ok(tx_hash, index, size, p["tx_path"], bytes.fromhex(h["tx_root"])):
        raise ProofInvalid("tx path", "tx_path does not prove tx_hash at index under tx_root")
    # 9. Receipt path.
    try:
        item = receipt_item(tx_hash, p["receipt"]["code"], p["receipt"]["log"])
    except UnicodeEncodeError:  # a log JSON can hold (a lone surrogate) but no MessagePack str can
        raise ProofInvalid("receipt path", "the receipt log is not encodable as UTF-8") from None
    if not path_ok(item, index, size, p["receipt_path"], bytes.fromhex(h["receipt_root"])):
        raise ProofInvalid("receipt path", "receipt_path does not prove the receipt at index under receipt_root")


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    validators: list[str]


def read_genesis(text: str) -> Genesis:
    g = tomllib.loads(text)
    return Genesis(g["chain_id"], [v["pubkey"] for v in g["validators"]])


# --------------------------------------------------------------------------------------------------
# A client from docs/client-protocol.md: keys, transactions, JSON-RPC over HTTP.
# --------------------------------------------------------------------------------------------------

PKCS8_ED25519_PREFIX = bytes.fromhex("302e020100300506032b657004220420")


def read_private_key(path: Path) -> nacl.signing.SigningKey:
    pem = path.read_text()
    body = pem.split("-----BEGIN PRIVATE KEY-----")[1].split("-----END PRIVATE KEY-----")[0]
    der = base64.b64decode("".join(body.split()))
    assert len(der) == 48 and der[:16] == PKCS8_ED25519_PREFIX, "not an Ed25519 PKCS#8 key"
    return nacl.signing.SigningKey(der[16:])


def make_tx(key: nacl.signing.SigningKey, chain_id: str, family: str, op: str, args: dict[str, Any]) -> tuple[str, str]:
    """(tx hex, tx_hash hex) of a fresh transaction with a random nonce."""
    body = [1, chain_id, bytes(key.verify_key), secrets.randbelow(2**64), family, op, args]
    signing_bytes = TX_SIGNING_PREFIX + packb(body)
    signature = key.sign(signing_bytes).signature
    return packb([*body, signature]).hex(), hashlib.sha256(signing_bytes).hexdigest()


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.message = error.get("message")
        self.data = error.get("data")


def post(url: str, payload: Any, timeout: float = DEADLINE_S) -> Any:
    request = urllib.request.Request(
        url + "/", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


_ids = iter(range(1, 10**9))


def rpc(url: str, method: str, **params: Any) -> Any:
    answer = post(url, {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params})
    if "error" in answer:
        raise RpcError(answer["error"])
    return answer["result"]


def rpc_error(url: str, method: str, params: Any) -> RpcError:
    answer = post(url, {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params})
    assert "error" in answer, f"{method} {params} answered {answer}"
    return RpcError(answer["error"])


def send_batch(url: str, txs: list[str]) -> None:
    """All transactions in one JSON-RPC batch (client protocol section 3), without waiting for commits."""
    calls = [{"jsonrpc": "2.0", "id": next(_ids), "method": "send_tx", "params": {"tx": tx}} for tx in txs]
    answers = post(url, calls)
    assert isinstance(answers, list) and len(answers) == len(txs), answers
    for answer in answers:
        assert "result" in answer, answer


def committed(url: str, tx_hash: str) -> dict[str, Any] | None:
    result: dict[str, Any] = rpc(url, "get_tx", tx_hash=tx_hash)
    return result if result["status"] == "committed" else None


def _committed_on(urls: list[str], tx_hash: str) -> Callable[[], dict[str, Any] | None]:
    """For wait_for: the get_tx result of the first node once every node in `urls` has committed tx_hash."""

    def check() -> dict[str, Any] | None:
        results = [committed(u, tx_hash) for u in urls]
        return results[0] if all(results) else None

    return check


# --------------------------------------------------------------------------------------------------
# The consortium: four validators, started once for the module.
# --------------------------------------------------------------------------------------------------


@dataclass
class Chain:
    net: Path
    urls: list[str]
    genesis: Genesis
    key: nacl.signing.SigningKey
    txs: dict[str, dict[str, Any]]  # tx_hash -> {"tx": hex, "what": str, "get_tx": committed get_tx result}
    multi_block: int  # a height holding several transactions, failed ones among them
    notarize_proof: dict[str, Any]  # the proof `alliance notarize --proof` wrote
    notarize_out: Path  # where it wrote it
    notarize_stdout: str
    document: Path  # the file it notarized


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    tmp = tmp_path_factory.mktemp("spec_proof")
    net, base = make_testnet(tmp, nodes=4)
    nodes = [node_process(net, base, i) for i in range(4)]
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:  # each start waits (with a deadline) for its RPC
            for started in [pool.submit(n.start) for n in nodes]:
                started.result()
        yield _populate(net, [n.rpc_url for n in nodes])
    finally:
        for n in nodes:
            if n.process is not None:
                n.stop()


def _populate(net: Path, urls: list[str]) -> Chain:
    genesis = read_genesis((net / "genesis.toml").read_text())
    key = read_private_key(net / "client.key")
    txs: dict[str, dict[str, Any]] = {}

    def new(what: str, family: str, op: str, args: dict[str, Any]) -> str:
        tx, tx_hash = make_tx(key, genesis.chain_id, family, op, args)
        txs[tx_hash] = {"tx": tx, "what": what}
        return tx_hash

    # A block with one transaction (empty paths), submitted with send_tx wait: true.
    single = new("kv put", "kv", "put", {"key": f"spec-proof/{secrets.token_hex(4)}", "value": b"v1"})
    result = rpc(urls[1], "send_tx", tx=txs[single]["tx"], wait=True, timeout=DEADLINE_S)
    assert result["status"] == "committed" and result["code"] == 0, result

    # A block with several transactions, failed ones among them: five sent in one JSON-RPC batch. Whether
    # they share a block is up to the proposer, so try again with fresh ones until a block holds at least
    # five of them with the kv delete of a missing key.
    multi_block = 0
    deadline = time.monotonic() + DEADLINE_S
    while not multi_block:
        assert time.monotonic() < deadline, "no block with five transactions of one batch"
        batch = [
            new("kv put", "kv", "put", {"key": f"spec-proof/{secrets.token_hex(4)}", "value": b"\x00\xff" * 3}),
            new("notary record", "notary", "record", {"digest": secrets.token_bytes(32), "meta": "spec ünïcode"}),
            new("kv delete missing", "kv", "delete", {"key": f"spec-proof/missing/{secrets.token_hex(4)}"}),
            new("kv put bad args", "kv", "put", {"key": f"spec-proof/{secrets.token_hex(4)}", "value": "not bin"}),
            new("notary record", "notary", "record", {"digest": secrets.token_bytes(32)}),
        ]
        send_batch(urls[2], [txs[h]["tx"] for h in batch])
        results = [wait_for(_committed_on(urls[2:3], h), f"commit of {txs[h]['what']}") for h in batch]
        heights = [r["height"] for r in results]
        for height in set(heights):
            if heights.count(height) >= 5:
                multi_block = height
    # Everything committed on every node before proofs are asked of them.
    for tx_hash in txs:
        txs[tx_hash]["get_tx"] = wait_for(_committed_on(urls, tx_hash), "every commit on every node")

    # A third kind of block: `alliance notarize FILE --wait --proof OUT.json`, the documented CLI path.
    document = net / "invoice.pdf"
    document.write_bytes(b"%PDF-1.7 spec-proof " + secrets.token_bytes(16))
    out = net / "invoice.proof.json"
    run = subprocess.run(
        [*ALLIANCE_CLI, "notarize", str(document), "--meta", "spec proof", "--wait", "--proof", str(out),
         "--rpc", urls[3], "--key", str(net / "client.key")],
        capture_output=True, text=True, timeout=DEADLINE_S,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    notarize_proof = json.loads(out.read_text())
    tx_hash = notarize_proof["tx_hash"]
    txs[tx_hash] = {"tx": notarize_proof["tx"], "what": "notarize CLI"}
    txs[tx_hash]["get_tx"] = wait_for(_committed_on(urls, tx_hash), "the notarize CLI commit on every node")
    return Chain(net, urls, genesis, key, txs, multi_block, notarize_proof, out, run.stdout, document)


# --------------------------------------------------------------------------------------------------
# Real proofs verify.
# --------------------------------------------------------------------------------------------------


def test_every_proof_from_every_node_verifies(chain: Chain) -> None:
    g = chain.genesis
    heights = set()
    for tx_hash, info in chain.txs.items():
        for url in chain.urls:
            proof = rpc(url, "get_proof", tx_hash=tx_hash)
            assert verify_proof(proof, g.chain_id, g.validators) == "ok", (info["what"], url, proof)
            # What the proof says is what the node says elsewhere.
            got = info["get_tx"]
            assert proof["tx_hash"] == tx_hash and proof["tx"] == info["tx"]
            assert proof["index"] == got["index"] and proof["header"]["height"] == got["height"]
            assert proof["receipt"] == {"code": got["code"], "log": got["log"]}
            block = rpc(url, "get_block", height=got["height"])
            assert block["hash"] == proof["commit"]["block_hash"]
            for field in ("prev_hash", "time", "proposer", "tx_root", "state_root"):
                assert block[field] == proof["header"][field], field
            assert block["txs"][proof["index"]] == tx_hash and len(block["txs"]) == proof["header"]["tx_count"]
            heights.add(got["height"])
    assert len(heights) >= 3


def test_receipts_prove_failures(chain: Chain) -> None:
    """A failed transaction is committed with a non-zero code, and its proof (of a failure) still holds."""
    by_what = {info["what"]: info["get_tx"] for info in chain.txs.values()}
    assert by_what["kv delete missing"]["code"] == 3
    assert by_what["kv put bad args"]["code"] == 1
    assert by_what["notary record"]["code"] == 0 and by_what["kv put"]["code"] == 0
    in_block = [info for info in chain.txs.values() if info["get_tx"]["height"] == chain.multi_block]
    assert len(in_block) >= 5
    assert {info["get_tx"]["code"] for info in in_block} >= {0, 1, 3}


def test_notarize_cli_proof_verifies(chain: Chain) -> None:
    """proofs.md section 5: the issuer's `notarize --proof` file holds, and the recipient's `lookup --proof`."""
    g = chain.genesis
    proof = chain.notarize_proof
    assert verify_proof(proof, g.chain_id, g.validators) == "ok"
    tx = msgpack.unpackb(bytes.fromhex(proof["tx"]), raw=False)
    digest = hashlib.sha256(chain.document.read_bytes()).digest()
    assert tx[4:7] == ["notary", "record", {"digest": digest, "meta": "spec proof"}]
    assert proof["receipt"]["code"] == 0
    assert json.loads(chain.notarize_stdout)["proof"] == str(chain.notarize_out)

    other = chain.document.with_name("other.pdf")
    other.write_bytes(chain.document.read_bytes() + b" ")
    genesis_file = str(chain.net / "genesis.toml")
    commands = [
        [*ALLIANCE_CLI, "lookup", str(f), "--proof", str(chain.notarize_out), "--genesis", genesis_file]
        for f in (chain.document, other)
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        found, not_shown = pool.map(
            lambda c: subprocess.run(c, capture_output=True, text=True, timeout=DEADLINE_S), commands
        )
    assert found.returncode == 0 and found.stderr == "", found.stderr
    record = json.loads(found.stdout)
    assert record["digest"] == digest.hex() and record["recorder"] == tx[2].hex() and record["verified"] is True
    assert record["tx_hash"] == proof["tx_hash"] and record["meta"] == "spec proof"
    assert record["height"] == proof["header"]["height"] and record["time"] == proof["header"]["time"]
    assert record["block_hash"] == proof["commit"]["block_hash"]
    assert not_shown.returncode == 6 and len(not_shown.stderr.splitlines()) == 1, not_shown.stderr
    assert not_shown.stderr.startswith("alliance: error: the proof does not show "), not_shown.stderr


def test_get_proof_errors(chain: Chain) -> None:
    url = chain.urls[0]
    unknown = hashlib.sha256(b"never submitted").hexdigest()
    e = rpc_error(url, "get_proof", {"tx_hash": unknown})
    assert e.code == -32005 and e.data == {"status": "unknown"}, e.__dict__
    assert "unknown" in str(e.message)
    some = next(iter(chain.txs))
    for params in ({}, {"tx_hash": 5}, {"tx_hash": None}, {"tx_hash": unknown[:-1]}, {"tx_hash": unknown + "00"},
                   {"tx_hash": "zz" * 32}, {"tx_hash": some, "extra": 1}):  # fmt: skip
        e = rpc_error(url, "get_proof", params)
        assert e.code == -32602 and e.data is None, (params, e.__dict__)


# --------------------------------------------------------------------------------------------------
# Tampered proofs: rejected by this verifier and by `alliance verify-proof`, at the same check.
# --------------------------------------------------------------------------------------------------

Proof = dict[str, Any]
FOREIGN_KEY = nacl.signing.SigningKey(hashlib.sha256(b"not a validator").digest())


def _flip_hex(h: str, at: int = -1) -> str:
    i = at % len(h)
    return h[:i] + ("0" if h[i] != "0" else "1") + h[i + 1 :]


def _set(path: str, value: Any) -> Callable[[Proof], None]:
    def apply(p: Proof) -> None:
        *parents, last = path.split(".")
        obj: Any = p
        for k in parents:
            obj = obj[int(k)] if isinstance(obj, list) else obj[k]
        if callable(value):
            obj[int(last) if isinstance(obj, list) else last] = value(obj[int(last) if isinstance(obj, list) else last])
        else:
            obj[int(last) if isinstance(obj, list) else last] = value

    return apply


def _del(path: str) -> Callable[[Proof], None]:
    def apply(p: Proof) -> None:
        *parents, last = path.split(".")
        obj: Any = p
        for k in parents:
            obj = obj[int(k)] if isinstance(obj, list) else obj[k]
        del obj[last]

    return apply


@dataclass(frozen=True)
class Resign:
    """A transaction body edited, then signed again (by the client key unless `signer`), with tx and tx_hash set
    to match: only the checks on the transaction itself, or the tx path, can catch it."""

    edit: Callable[[list[Any]], None]
    signer: nacl.signing.SigningKey | None = None
    encode: Callable[[Any], bytes] = packb  # msgpack.packb without sorting writes a map's keys as given

    def apply(self, p: Proof, client_key: nacl.signing.SigningKey) -> None:
        body = msgpack.unpackb(bytes.fromhex(p["tx"]), raw=False)[:7]
        self.edit(body)
        signing_bytes = TX_SIGNING_PREFIX + self.encode(body)
        signature = (self.signer or client_key).sign(signing_bytes).signature
        p["tx"] = self.encode([*body, signature]).hex()
        p["tx_hash"] = hashlib.sha256(signing_bytes).hexdigest()


def _element(i: int, value: Any) -> Callable[[list[Any]], None]:
    return lambda body: body.__setitem__(i, value(body[i]) if callable(value) else value)


def _unsorted_pack(obj: Any) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True))


def _tx_offsets(tx: bytes) -> tuple[int, int]:
    """(offset of the chain_id, offset of the nonce) in an encoded transaction."""
    chain_id = msgpack.unpackb(tx, raw=False)[1]
    at_chain_id = 2  # fixarray 8, version 1
    return at_chain_id, at_chain_id + len(msgpack.packb(chain_id)) + 34  # then c4 20 + the sender


def _non_canonical_tx(p: Proof) -> None:
    """The same transaction with its chain id as a str 8 (d9 len) instead of the shortest fixstr."""
    tx = bytes.fromhex(p["tx"])
    at, _ = _tx_offsets(tx)
    assert 0xA0 <= tx[at] <= 0xBF, "the chain id is a fixstr"
    p["tx"] = (tx[:at] + bytes([0xD9, tx[at] & 0x1F]) + tx[at + 1 :]).hex()


def _nonce_byte(p: Proof) -> None:
    tx = bytes.fromhex(p["tx"])
    _, at = _tx_offsets(tx)
    assert tx[at - 34 : at - 32] == b"\xc4\x20"
    at += 1 if tx[at] >= 0x80 else 0  # past the cc/cd/ce/cf marker, into the integer's bytes
    p["tx"] = (tx[:at] + bytes([tx[at] ^ 0x01]) + tx[at + 1 :]).hex()


def _swap_validators(p: Proof) -> None:
    sigs = p["commit"]["signatures"]
    sigs[0]["validator"], sigs[1]["validator"] = sigs[1]["validator"], sigs[0]["validator"]


def _index_past_the_end(p: Proof) -> None:
    p["index"] = p["header"]["tx_count"]


def _index_moved(p: Proof) -> None:
    p["index"] += 1 if p["index"] + 1 < p["header"]["tx_count"] else -1


def _receipt_path_is_tx_path(p: Proof) -> None:
    p["receipt_path"] = list(p["tx_path"])


def _drop_to_below_quorum(p: Proof) -> None:
    p["commit"]["signatures"] = p["commit"]["signatures"][: quorum(4) - 1]


def _duplicate_first_in_place_of_second(p: Proof) -> None:
    sigs = p["commit"]["signatures"]
    sigs[1] = copy.deepcopy(sigs[0])


def _append_duplicate(p: Proof) -> None:
    sigs = p["commit"]["signatures"]
    sigs.append(copy.deepcopy(sigs[0]))


def _foreign_validator(p: Proof) -> None:
    """A signature entry by a key that is not in the genesis, validly sealing the block hash."""
    seal = COMMIT_SEAL_PREFIX + bytes.fromhex(p["commit"]["block_hash"])
    p["commit"]["signatures"][0] = {
        "validator": bytes(FOREIGN_KEY.verify_key).hex(),
        "signature": FOREIGN_KEY.sign(seal).signature.hex(),
    }


def _block_as_a_step(p: Proof) -> None:
    """The proof's own certified header as a step to a new set: its height is not below the proof's block."""
    keys = [s["validator"] for s in p["commit"]["signatures"]]
    p["validator_changes"] = [{"header": copy.deepcopy(p["header"]), "commit": copy.deepcopy(p["commit"]),
                               "validators": keys}]


def _extra_foreign_signature(p: Proof) -> None:
    """A quorum of good seals plus one by a foreign key: every byte of a proof is bound."""
    seal = COMMIT_SEAL_PREFIX + bytes.fromhex(p["commit"]["block_hash"])
    p["commit"]["signatures"].append(
        {"validator": bytes(FOREIGN_KEY.verify_key).hex(), "signature": FOREIGN_KEY.sign(seal).signature.hex()}
    )


# (name, tampering, the check that must catch it). `genesis:` names tamper the genesis instead of the proof.
TAMPERINGS: list[tuple[str, Callable[[Proof], None] | Resign | None, str]] = [
    # Shape: keys at every level, JSON types, hex.
    ("extra key at top", _set("extra", 1), "shape"),
    ("extra key in header", _set("header.extra", 1), "shape"),
    ("extra key in commit", _set("commit.extra", 1), "shape"),
    ("extra key in a signature", _set("commit.signatures.0.extra", 1), "shape"),
    ("extra key in receipt", _set("receipt.extra", 1), "shape"),
    ("missing version", _del("version"), "shape"),
    ("missing tx_path", _del("tx_path"), "shape"),
    ("missing receipt_path", _del("receipt_path"), "shape"),
    ("missing header.state_root", _del("header.state_root"), "shape"),
    ("missing commit.signatures", _del("commit.signatures"), "shape"),
    ("missing signature.signature", _del("commit.signatures.0.signature"), "shape"),
    ("missing receipt.log", _del("receipt.log"), "shape"),
    ("version 1", _set("version", 1), "shape"),
    ("header.version 2", _set("header.version", 2), "shape"),
    ("missing validator_changes", _del("validator_changes"), "shape"),
    ("validator_changes not a list", _set("validator_changes", {}), "shape"),
    ("a step that is not an object", _set("validator_changes", [[]]), "shape"),
    ("index true", _set("index", True), "shape"),
    ("index as 1.0", _set("index", lambda i: float(i)), "shape"),
    ("index negative", _set("index", -1), "shape"),
    ("receipt.code 2^64", _set("receipt.code", 2**64), "shape"),
    ("receipt.code as string", _set("receipt.code", lambda c: str(c)), "shape"),
    ("header.time null", _set("header.time", None), "shape"),
    ("tx_hash uppercase", _set("tx_hash", lambda h: h.upper()), "shape"),
    ("block_hash with 0x", _set("commit.block_hash", lambda h: "0x" + h[2:]), "shape"),
    ("tx odd length", _set("tx", lambda h: h[:-1]), "shape"),
    ("tx empty", _set("tx", ""), "shape"),
    ("signature 63 bytes", _set("commit.signatures.0.signature", lambda h: h[:-2]), "shape"),
    ("tx_path not a list", _set("tx_path", lambda path: ",".join(path)), "shape"),
    ("header not an object", _set("header", lambda h: list(h.values())), "shape"),
    # Chain.
    ("header.chain_id", _set("header.chain_id", lambda c: c + "-x"), "chain id"),
    ("genesis: another chain id", None, "chain id"),
    # Block hash: every other header field, and the hash itself; then the commit height.
    ("header.height", _set("header.height", lambda v: v + 1), "block hash"),
    ("header.prev_hash", _set("header.prev_hash", _flip_hex), "block hash"),
    ("header.time + 1", _set("header.time", lambda v: v + 1), "block hash"),
    ("header.proposer", _set("header.proposer", _flip_hex), "block hash"),
    ("header.tx_count", _set("header.tx_count", lambda v: v + 1), "block hash"),
    ("header.tx_root", _set("header.tx_root", _flip_hex), "block hash"),
    ("header.receipt_root", _set("header.receipt_root", _flip_hex), "block hash"),
    ("header.state_root", _set("header.state_root", _flip_hex), "block hash"),
    ("header.validators_hash", _set("header.validators_hash", _flip_hex), "block hash"),
    ("header.next_validators_hash", _set("header.next_validators_hash", _flip_hex), "block hash"),
    ("commit.block_hash", _set("commit.block_hash", _flip_hex), "block hash"),
    ("commit.height + 1", _set("commit.height", lambda v: v + 1), "commit height"),
    # Validator changes: none happened on this chain, so any step is out of place.
    ("the block itself as a step", _block_as_a_step, "validator change"),
    ("genesis: a signer replaced", None, "validators"),
    # Certificate.
    ("signature 0", _set("commit.signatures.0.signature", _flip_hex), "certificate"),
    ("signature 1", _set("commit.signatures.1.signature", _flip_hex), "certificate"),
    ("signature 2", _set("commit.signatures.2.signature", _flip_hex), "certificate"),
    ("signature last, first digit", _set("commit.signatures.-1.signature", lambda h: _flip_hex(h, 0)), "certificate"),
    ("validator key of signature 0", _set("commit.signatures.0.validator", _flip_hex), "certificate"),
    ("validator keys 0 and 1 swapped", _swap_validators, "certificate"),
    ("foreign validator, valid seal", _foreign_validator, "certificate"),
    ("extra foreign signature", _extra_foreign_signature, "certificate"),
    ("signatures below quorum", _drop_to_below_quorum, "certificate"),
    ("no signatures", _set("commit.signatures", []), "certificate"),
    ("first signature in place of second", _duplicate_first_in_place_of_second, "certificate"),
    ("first signature appended again", _append_duplicate, "certificate"),
    # Transaction.
    ("tx last byte (signature)", _set("tx", _flip_hex), "transaction"),
    ("tx nonce byte", _nonce_byte, "transaction"),
    ("tx_hash", _set("tx_hash", _flip_hex), "transaction"),
    ("tx non-canonical chain id str", _non_canonical_tx, "transaction"),
    ("tx truncated", _set("tx", lambda h: h[:-2]), "transaction"),
    ("tx trailing byte", _set("tx", lambda h: h + "c0"), "transaction"),
    ("tx for another chain, validly signed", Resign(_element(1, lambda c: c + "-other")), "transaction"),
    ("tx version 2, validly signed", Resign(_element(0, 2)), "transaction"),
    ("tx over 64 KiB, validly signed", Resign(_element(6, {"key": "k", "value": bytes(65_536)})), "transaction"),
    ("tx args keys unsorted, validly signed", Resign(_element(6, {"z": 1, "a": 2}), encode=_unsorted_pack),
     "transaction"),
    ("tx float arg, validly signed", Resign(_element(6, {"key": 1.5})), "transaction"),
    ("tx int map key, validly signed", Resign(_element(6, {1: 2}), encode=_unsorted_pack), "transaction"),
    ("tx sender of 31 bytes, validly signed", Resign(_element(2, lambda k: k[:31])), "transaction"),
    ("tx signed by another key", Resign(lambda body: None, signer=FOREIGN_KEY), "transaction"),
    ("tx of an unknown family, validly signed", Resign(_element(4, "nosuch")), "tx path"),
    # Index and paths.
    ("index = tx_count", _index_past_the_end, "index"),
    ("index + 1 (or - 1 if last)", _index_moved, "tx path"),
    ("tx_path 0", _set("tx_path.0", _flip_hex), "tx path"),
    ("tx_path 1", _set("tx_path.1", _flip_hex), "tx path"),
    ("tx_path 2", _set("tx_path.2", _flip_hex), "tx path"),
    ("tx_path element dropped", _set("tx_path", lambda path: path[:-1]), "tx path"),
    ("tx_path element added", _set("tx_path", lambda path: [*path, path[0]]), "tx path"),
    ("tx_path reversed", _set("tx_path", lambda path: path[::-1]), "tx path"),
    ("receipt_path 0", _set("receipt_path.0", _flip_hex), "receipt path"),
    ("receipt_path 1", _set("receipt_path.1", _flip_hex), "receipt path"),
    ("receipt_path 2", _set("receipt_path.2", _flip_hex), "receipt path"),
    ("receipt_path element dropped", _set("receipt_path", lambda path: path[:-1]), "receipt path"),
    ("receipt_path element added", _set("receipt_path", lambda path: [*path, path[0]]), "receipt path"),
    ("receipt_path = tx_path", _receipt_path_is_tx_path, "receipt path"),
    # Receipt.
    ("receipt.code + 1", _set("receipt.code", lambda c: c + 1), "receipt path"),
    ("receipt.code 0 <-> 1", _set("receipt.code", lambda c: 0 if c else 1), "receipt path"),
    ("receipt.log", _set("receipt.log", lambda s: s + "!"), "receipt path"),
    ("receipt.log emptied or set", _set("receipt.log", lambda s: "" if s else "x"), "receipt path"),
    ("receipt.log lone surrogate", _set("receipt.log", "\ud800"), "receipt path"),
]  # fmt: skip

TAMPER_IDS = [name for name, _, _ in TAMPERINGS]

# `alliance verify-proof` is a fresh Python process of about half a CPU second, so it runs on the cases the
# table exists for (every header field, the block hash, each signature, a validator key, quorum, a duplicate,
# the tx bytes, tx_hash, receipt code and log, index, each path element, keys added and missing); these
# further variants of the same checks are put to this verifier only.
VERIFIER_ONLY = {
    "extra key in commit", "missing tx_path", "missing receipt_path", "missing commit.signatures", "version 1",
    "validator_changes not a list", "a step that is not an object",
    "index negative", "receipt.code 2^64", "receipt.code as string", "header.time null", "block_hash with 0x",
    "tx odd length", "tx empty", "signature 63 bytes", "tx_path not a list", "header not an object",
    "signature last, first digit", "validator keys 0 and 1 swapped", "extra foreign signature", "no signatures",
    "first signature appended again", "genesis: a signer replaced", "tx nonce byte", "tx truncated",
    "tx trailing byte", "tx_path element added", "tx_path reversed", "receipt_path element dropped",
    "receipt_path = tx_path", "receipt.code 0 <-> 1", "receipt.log emptied or set", "tx float arg, validly signed",
    "tx int map key, validly signed", "tx sender of 31 bytes, validly signed", "tx signed by another key",
    "extra key in header", "extra key in receipt", "missing version", "missing signature.signature",
    "tx version 2, validly signed", "tx_path element dropped", "receipt_path element added",
}  # fmt: skip

# A JSON string may hold a lone surrogate (json.dumps writes it as \ud800), which is no MessagePack str: the docs
# do not say whether that fails the shape ("log: str") or the receipt path (no receipt item encodes it).
CLI_MAY_NAME = {"receipt.log lone surrogate": {"shape", "receipt path"}}


@dataclass
class TamperCase:
    proof: Any
    genesis: Genesis
    genesis_file: Path
    proof_file: Path


@pytest.fixture(scope="module")
def base_proof(chain: Chain) -> dict[str, Any]:
    """A real proof from the block of several transactions with three elements in each path: the failed kv
    delete's unless the proposer placed it last in an odd tree (then its paths are shorter)."""
    in_block = [h for h, info in chain.txs.items() if info["get_tx"]["height"] == chain.multi_block]
    proofs = [rpc(chain.urls[0], "get_proof", tx_hash=h) for h in in_block]
    proof: dict[str, Any] = max(proofs, key=lambda p: (len(p["tx_path"]), p["receipt"]["code"] == 3))
    assert proof["header"]["tx_count"] >= 5 and len(proof["tx_path"]) >= 3, proof
    assert len(proof["commit"]["signatures"]) >= quorum(4)
    return proof


@pytest.fixture(scope="module")
def tamper_cases(
    chain: Chain, base_proof: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, TamperCase]:
    tmp = tmp_path_factory.mktemp("tampered")
    genesis_text = (chain.net / "genesis.toml").read_text()
    genesis_file = chain.net / "genesis.toml"
    g = chain.genesis
    cases: dict[str, TamperCase] = {}
    for i, (name, tamper, _) in enumerate(TAMPERINGS):
        p = copy.deepcopy(base_proof)
        case_genesis, case_genesis_file = g, genesis_file
        if name == "genesis: another chain id":
            text = genesis_text.replace(f'chain_id = "{g.chain_id}"', f'chain_id = "{g.chain_id}-other"')
            case_genesis = read_genesis(text)
            assert case_genesis.chain_id == g.chain_id + "-other"
            case_genesis_file = tmp / f"genesis{i}.toml"
            case_genesis_file.write_text(text)
        elif name == "genesis: a signer replaced":
            signer = p["commit"]["signatures"][0]["validator"]
            text = genesis_text.replace(signer, bytes(FOREIGN_KEY.verify_key).hex())
            case_genesis = read_genesis(text)
            assert signer not in case_genesis.validators and len(case_genesis.validators) == 4
            case_genesis_file = tmp / f"genesis{i}.toml"
            case_genesis_file.write_text(text)
        elif isinstance(tamper, Resign):
            tamper.apply(p, chain.key)
        else:
            assert tamper is not None
            tamper(p)
        assert json.dumps(p, sort_keys=True) != json.dumps(base_proof, sort_keys=True) or case_genesis != g, name
        proof_file = tmp / f"proof{i}.json"
        proof_file.write_text(json.dumps(p))
        cases[name] = TamperCase(p, case_genesis, case_genesis_file, proof_file)
    return cases


def verify_proof_cli(proof_file: Path, genesis_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ALLIANCE_CLI, "verify-proof", str(proof_file), "--genesis", str(genesis_file)],
        capture_output=True, text=True, timeout=DEADLINE_S, env={**os.environ, "ALLIANCE_GENESIS": "/nonexistent"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def cli_verdicts(tamper_cases: dict[str, TamperCase]) -> dict[str, subprocess.CompletedProcess[str]]:
    """`alliance verify-proof` on every tampered proof, a few at a time (each run is a fresh process)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            name: pool.submit(verify_proof_cli, c.proof_file, c.genesis_file)
            for name, c in tamper_cases.items()
            if name not in VERIFIER_ONLY
        }
        return {name: f.result() for name, f in futures.items()}


def test_untampered_proof_accepted_by_both(chain: Chain, base_proof: dict[str, Any], tmp_path: Path) -> None:
    g = chain.genesis
    assert verify_proof(base_proof, g.chain_id, g.validators) == "ok"
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(base_proof))
    run = verify_proof_cli(proof_file, chain.net / "genesis.toml")
    assert run.returncode == 0 and run.stderr == "", run.stderr
    shown = json.loads(run.stdout)
    tx = msgpack.unpackb(bytes.fromhex(base_proof["tx"]), raw=False)
    assert shown["tx_hash"] == base_proof["tx_hash"] and shown["chain_id"] == g.chain_id
    assert shown["height"] == base_proof["header"]["height"] and shown["index"] == base_proof["index"]
    assert shown["block_hash"] == base_proof["commit"]["block_hash"] and shown["time"] == base_proof["header"]["time"]
    assert shown["sender"] == tx[2].hex() and shown["family"] == tx[4] and shown["op"] == tx[5]
    assert shown["code"] == base_proof["receipt"]["code"] and shown["log"] == base_proof["receipt"]["log"]
    assert shown["signatures"] == len(base_proof["commit"]["signatures"]) and shown["quorum"] == 3
    hex_args = {k: v.hex() if isinstance(v, bytes) else v for k, v in tx[6].items()}  # "binary values as hex"
    assert "time_utc" in shown and shown["args"] == hex_args


@pytest.mark.parametrize(("name", "expected"), [(n, e) for n, _, e in TAMPERINGS], ids=TAMPER_IDS)
def test_tampered_proof_rejected(
    name: str,
    expected: str,
    tamper_cases: dict[str, TamperCase],
    cli_verdicts: dict[str, subprocess.CompletedProcess[str]],
) -> None:
    case = tamper_cases[name]
    verdict = verify_proof(case.proof, case.genesis.chain_id, case.genesis.validators)
    assert failed_check(verdict) == expected, verdict
    if name in VERIFIER_ONLY:
        return
    run = cli_verdicts[name]
    assert run.returncode != 0, f"alliance verify-proof accepted it: {run.stdout}"
    assert "Traceback" not in run.stderr, run.stderr[-400:]
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert run.returncode == 6, run.stderr  # proofs.md section 5: "the proof fails a check | 6"
    prefixes = [f"alliance: proof invalid: {check}: " for check in CLI_MAY_NAME.get(name, {expected})]
    assert any(lines[0].startswith(prefix) for prefix in prefixes), f"{lines[0]!r}, expected check {expected!r}"


def test_equally_valid_variants_accepted_by_both(chain: Chain, base_proof: dict[str, Any], tmp_path: Path) -> None:
    """Proofs that differ from a node's answer and still hold: signatures in another order, and a certificate
    gathered from the proofs several nodes gave of the same transaction (every seal valid, none twice)."""
    g = chain.genesis
    seals: dict[str, dict[str, str]] = {}
    for url in chain.urls:
        for s in rpc(url, "get_proof", tx_hash=base_proof["tx_hash"])["commit"]["signatures"]:
            seals[s["validator"]] = s
    reordered = copy.deepcopy(base_proof)
    reordered["commit"]["signatures"].reverse()
    gathered = copy.deepcopy(base_proof)
    gathered["commit"]["signatures"] = [seals[v] for v in reversed(g.validators) if v in seals]
    for name, proof in (("reordered", reordered), ("gathered", gathered)):
        assert verify_proof(proof, g.chain_id, g.validators) == "ok", name
        proof_file = tmp_path / f"{name}.json"
        proof_file.write_text(json.dumps(proof, indent=1))
        run = verify_proof_cli(proof_file, chain.net / "genesis.toml")
        assert run.returncode == 0 and run.stderr == "", (name, run.stderr)
        assert json.loads(run.stdout)["signatures"] == len(proof["commit"]["signatures"])


def test_proof_of_a_pending_transaction(chain: Chain) -> None:
    """get_proof right after send_tx: -32005 with status pending until committed, then a proof that holds."""
    g = chain.genesis
    url = chain.urls[1]
    args = {"key": f"spec-proof/{secrets.token_hex(4)}", "value": b""}
    tx, tx_hash = make_tx(chain.key, g.chain_id, "kv", "put", args)
    rpc(url, "send_tx", tx=tx)

    def proof_or_pending() -> dict[str, Any] | None:
        try:
            return rpc(url, "get_proof", tx_hash=tx_hash)  # type: ignore[no-any-return]
        except RpcError as e:
            assert e.code == -32005 and e.data == {"status": "pending"}, e.__dict__
            assert "pending" in str(e.message)
            return None

    proof = wait_for(proof_or_pending, "the proof of a new transaction")
    assert proof["tx"] == tx and verify_proof(proof, g.chain_id, g.validators) == "ok"


def test_verify_proof_cli_unusable_files(chain: Chain, base_proof: dict[str, Any], tmp_path: Path) -> None:
    """proofs.md section 5: a missing proof file, invalid JSON, a missing genesis: exit 1, one line naming the
    file, never a traceback."""
    genesis_file = chain.net / "genesis.toml"
    good = tmp_path / "good.json"
    good.write_text(json.dumps(base_proof))
    not_json = tmp_path / "not-json.json"
    not_json.write_text(json.dumps(base_proof)[:-1])
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)  # valid JSON, nested deeper than a recursive parser goes
    cases = [
        (tmp_path / "absent.json", genesis_file, "absent.json"),
        (not_json, genesis_file, "not-json.json"),
        (deep, genesis_file, "deep.json"),
        (good, tmp_path / "absent.toml", "absent.toml"),
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda c: verify_proof_cli(c[0], c[1]), cases))
    for (_, _, named), run in zip(cases, runs):
        assert "Traceback" not in run.stderr, (named, run.stderr[-400:])
        lines = run.stderr.splitlines()
        assert run.returncode == 1 and len(lines) == 1, (named, run.returncode, run.stderr)
        assert lines[0].startswith("alliance: error: ") and named in lines[0], lines[0]


# --------------------------------------------------------------------------------------------------
# The worked example of docs/proofs.md section 4.
# --------------------------------------------------------------------------------------------------


def _code_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", markdown, flags=re.M | re.S)


@dataclass
class Example:
    genesis: Genesis
    genesis_text: str
    proofs: dict[int, dict[str, Any]]  # index -> proof


@pytest.fixture(scope="module")
def example() -> Example:
    doc = (DOCS / "proofs.md").read_text()
    section = doc[doc.index("## 4. Worked example") : doc.index("## 5.")]
    (genesis_text,) = _code_blocks(section, "toml")
    proof_block, more_block = _code_blocks(section, "json")
    proof = json.loads(proof_block)
    proofs = {proof["index"]: proof}
    for fields in json.loads(more_block):  # the same version, header, commit and validator_changes as index 2
        shared = {k: proof[k] for k in ("version", "header", "commit", "validator_changes")}
        more = {**shared, **fields}
        proofs[more["index"]] = more
    return Example(read_genesis(genesis_text), genesis_text, proofs)


def test_worked_example_verifies(example: Example) -> None:
    g = example.genesis
    assert g.chain_id == "acme-invoices" and len(g.validators) == 4 and quorum(4) == 3
    assert sorted(example.proofs) == [2, 3, 4]
    for index, proof in example.proofs.items():
        assert verify_proof(proof, g.chain_id, g.validators) == "ok", index
        assert len(proof["validator_changes"]) == 1 and len(proof["validator_changes"][0]["validators"]) == 5
    assert example.proofs[3]["receipt"]["code"] == 3 and len(example.proofs[4]["tx_path"]) == 1


def test_worked_example_intermediate_values(example: Example) -> None:
    """The byte counts and digests the walk-through of section 4 states."""
    p = example.proofs[2]
    h, step = p["header"], p["validator_changes"][0]
    header = msgpack.packb(
        [4, h["chain_id"], h["height"], bytes.fromhex(h["prev_hash"]), h["time"], bytes.fromhex(h["proposer"]),
         h["tx_count"], *(bytes.fromhex(h[k]) for k in HEADER_HASHES[2:])],
        use_bin_type=True,
    )  # fmt: skip
    assert len(header) == 265 and header[:1] == b"\x9c"
    assert header.hex().startswith("9c04ad61636d652d696e766f6963657304c4207c1f5f51")
    assert "cf000001a20ab49dda" in header.hex()
    assert hashlib.sha256(header).hexdigest() == p["commit"]["block_hash"] == header_hash(h).hex()
    assert p["commit"]["block_hash"] == "c809872c0baa549e15c88e8fd4b83c365b8437fc61d6b28d90a0bf6ba409c30e"
    # The step: block 3, the last of the four genesis validators, announcing the five.
    assert step["header"]["height"] == 3 and header_hash(step["header"]).hex() == step["commit"]["block_hash"]
    assert step["commit"]["block_hash"] == "7c1f5f510e385b3d05a6ad8f23415d4851927d19aa9c3a256bd69bd5324f8936"
    genesis_keys = [bytes.fromhex(v) for v in example.genesis.validators]
    new_keys = [bytes.fromhex(v) for v in step["validators"]]
    assert len(msgpack.packb(genesis_keys, use_bin_type=True)) == 137 and new_keys[:4] == genesis_keys
    assert len(msgpack.packb(new_keys, use_bin_type=True)) == 171
    assert keys_hash(genesis_keys).hex() == step["header"]["validators_hash"] == (
        "4f28da73acde6e7da9a43dbceb932198d3739ec93240ab44190c10b2de9aea15")
    assert keys_hash(new_keys).hex() == step["header"]["next_validators_hash"] == h["validators_hash"] == (
        "b42bd21420a941fec81d86153e53817721275e495f398d8941b0c82a8465ea52")
    assert [s["validator"] for s in p["commit"]["signatures"]][-1] == step["validators"][4]  # node4 signs
    tx = bytes.fromhex(p["tx"])
    signing_bytes = TX_SIGNING_PREFIX + b"\x97" + tx[1:-66]
    assert len(signing_bytes) == 145 and hashlib.sha256(signing_bytes).hexdigest() == p["tx_hash"]
    assert msgpack.unpackb(tx, raw=False)[3:6] == [13, "notary", "record"]
    assert leaf(bytes.fromhex(p["tx_hash"])).hex() == "994affd144d5294ca334ff6669558e637c3e2fc476e7e37565164d6f0596437a"
    item = receipt_item(bytes.fromhex(p["tx_hash"]), 0, "")
    assert len(item) == 37
    assert item.hex() == "93c420e653ada355477b9e689f08840a5d052cbd59638eb6ef7bbc35b8a557d3e060a700a0"
    assert leaf(item).hex() == "e7402d63475532f812c141eb56d92c587fb0c64f346c684b37fb09669e175ba2"
    # The file's SHA-256 is the recorded digest.
    document = b"%PDF-1.7 invoice 2026-0001 ACME to Globex, EUR 1200.00"
    assert len(document) == 54
    assert msgpack.unpackb(tx, raw=False)[6]["digest"] == hashlib.sha256(document).digest()


def _example_variant(p: dict[str, Any], change: str, other: dict[int, dict[str, Any]]) -> None:
    sigs, step = p["commit"]["signatures"], p["validator_changes"][0]
    if change == "time + 1":
        p["header"]["time"] += 1
    elif change == "commit.height = 3":
        p["commit"]["height"] = 3
    elif change == "validator_changes = []":
        p["validator_changes"] = []
    elif change == "the step repeated":
        p["validator_changes"].append(copy.deepcopy(step))
    elif change == "the step's header.time + 1":
        step["header"]["time"] += 1
    elif change == "the step's validators without node4":
        step["validators"] = step["validators"][:4]
    elif change == "node3 and node4 swapped in the step":
        step["validators"][3], step["validators"][4] = step["validators"][4], step["validators"][3]
    elif change == "the step's last signature dropped":
        step["commit"]["signatures"].pop()
    elif change == "drop the last signature":
        sigs.pop()
    elif change == "first signature in place of the second":
        sigs[1] = copy.deepcopy(sigs[0])
    elif change == "last hex digit of the last signature":
        sigs[-1]["signature"] = _flip_hex(sigs[-1]["signature"])
    elif change == "tx_hash of index 3":
        p["tx_hash"] = other[3]["tx_hash"]
    elif change == "receipt.code = 4":
        p["receipt"]["code"] = 4
    elif change == "index = 3":
        p["index"] = 3
    elif change == "index = 5":
        p["index"] = 5
    elif change == "a key added":
        p["commit"]["signatures"][0]["note"] = ""
    elif change == "version = 1":
        p["version"] = 1
    elif not change.startswith("genesis"):
        raise AssertionError(change)


EXAMPLE_FAILURES = [
    ("time + 1", "block hash"),
    ("commit.height = 3", "commit height"),
    ("validator_changes = []", "validators"),
    ("the step repeated", "validator change"),
    ("the step's header.time + 1", "validator change"),
    ("the step's validators without node4", "validator change"),
    ("node3 and node4 swapped in the step", "validator change"),
    ("the step's last signature dropped", "validator change"),
    ("drop the last signature", "certificate"),
    ("first signature in place of the second", "certificate"),
    ("last hex digit of the last signature", "certificate"),
    ("tx_hash of index 3", "transaction"),
    ("receipt.code = 4", "receipt path"),
    ("index = 3", "tx path"),
    ("index = 5", "index"),
    ("a key added", "shape"),
    ("version = 1", "shape"),
    ("genesis chain id acme-orders", "chain id"),
    ("genesis listing node4 as a fifth validator", "validator change"),
]


@pytest.mark.parametrize(("change", "expected"), EXAMPLE_FAILURES, ids=[c for c, _ in EXAMPLE_FAILURES])
def test_worked_example_failures(example: Example, change: str, expected: str) -> None:
    """The table "some that must fail" of section 4, each against the index 2 proof."""
    p = copy.deepcopy(example.proofs[2])
    _example_variant(p, change, example.proofs)
    chain_id = "acme-orders" if change == "genesis chain id acme-orders" else example.genesis.chain_id
    validators = example.genesis.validators
    if change == "genesis listing node4 as a fifth validator":
        validators = [*validators, p["validator_changes"][0]["validators"][4]]
    assert failed_check(verify_proof(p, chain_id, validators)) == expected


def test_worked_example_accepted_by_cli(example: Example, tmp_path: Path) -> None:
    """The documented example, and one failing variant, through `alliance verify-proof` too."""
    genesis_file = tmp_path / "genesis.toml"
    genesis_file.write_text(example.genesis_text)
    proof_file = tmp_path / "proof.json"
    proof_file.write_text(json.dumps(example.proofs[2]))
    run = verify_proof_cli(proof_file, genesis_file)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    shown = json.loads(run.stdout)
    assert shown["block_hash"] == "c809872c0baa549e15c88e8fd4b83c365b8437fc61d6b28d90a0bf6ba409c30e"
    assert shown["height"] == 4 and shown["index"] == 2 and shown["quorum"] == 4 and shown["signatures"] == 4
    assert shown["validators"] == 5 and shown["validator_changes"] == 1
    dropped = copy.deepcopy(example.proofs[2])
    dropped["validator_changes"] = []
    proof_file.write_text(json.dumps(dropped))
    run = verify_proof_cli(proof_file, genesis_file)
    assert run.returncode == 6 and run.stderr.startswith("alliance: proof invalid: validators: "), run.stderr
