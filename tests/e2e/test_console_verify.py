"""The console's in-browser verifier (node/console/static/verify.js) in headless Chromium: it accepts
the proofs `alliance verify-proof` accepts, refuses every tampered one the Python tests refuse, at the
same check, and a wrong genesis; over the worked examples of docs/proofs.md, a chain whose validators
change, and a real node's transaction and state proofs."""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import pytest
import tomli_w
from nacl.signing import SigningKey

from node.chain.block import Header
from node.chain.compact_proof import compact_state_proof, is_compact, verify_compact_state_proof
from node.chain.execution import Receipt, receipt_bytes
from node.chain.genesis import load_genesis
from node.chain.membership import validators_hash
from node.chain.merkle import merkle_root
from node.chain.proof import ProofInvalid, verify_proof
from node.chain.state_proof import is_state_proof, verify_state_proof
from node.client.sync import Client
from node.errors import AllianceError
from node.keys import load_key
from tests.e2e.browser import chromium
from tests.e2e.nodeproc import alliance, node_process
from tests.node import proof_example, test_proof, test_proof_changes, test_state_proof
from tests.node.proof_example import hex_locations

if TYPE_CHECKING:  # selenium is imported only where the browser runs
    from selenium.webdriver.remote.webdriver import WebDriver

STATIC = Path(__file__).resolve().parents[2] / "node" / "console" / "static"
HTTP_PORT = 30590  # the testnet below takes 30400..30409
NODE_BASE_PORT = 30400
PAGE = b"""<!doctype html><meta charset="utf-8"><title>verify.js</title>
<script type="module">import * as verifier from "/static/verify.js"; window.verifier = verifier;</script>"""

# Runs every case in the page: {proof (JSON text), genesis object or genesis_toml text} -> result.
RUN = """
const [cases, done] = arguments;
(async () => {
  while (!window.verifier) await new Promise((r) => setTimeout(r, 10));
  const out = [];
  for (const c of cases) {
    let genesis = c.genesis;
    if (c.genesis_toml !== undefined) {
      try { genesis = window.verifier.parseGenesis(c.genesis_toml); } catch (err) { genesis = err; }
    }
    const proof = c.compact_hex === undefined ? c.proof
      : Uint8Array.from(c.compact_hex.match(/../g) || [], (x) => parseInt(x, 16));
    out.push(await window.verifier.verifyProof(proof, genesis));
  }
  done(out);
})().catch((err) => done([{ok: false, reason: "the page threw: " + err}]));
"""


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/":
            body, kind = PAGE, "text/html"
        elif self.path.startswith("/static/") and (STATIC / self.path[8:]).is_file() and "/" not in self.path[8:]:
            body, kind = (STATIC / self.path[8:]).read_bytes(), "text/javascript"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page() -> Iterator["WebDriver"]:
    server = ThreadingHTTPServer(("127.0.0.1", HTTP_PORT), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with chromium() as driver:
            driver.get(f"http://127.0.0.1:{HTTP_PORT}/")
            yield driver
    finally:
        server.shutdown()
        server.server_close()


def _genesis(chain_id: str, validators: list[bytes]) -> dict[str, Any]:
    return {"chain_id": chain_id, "validators": [{"pubkey": v.hex()} for v in validators]}


def _case(name: str, proof: Any, chain_id: str, validators: list[bytes]) -> dict[str, Any]:
    return {"name": name, "proof": json.dumps(proof), "genesis": _genesis(chain_id, list(validators)),
            "python": _python(proof, chain_id, validators)}


def _python(proof: Any, chain_id: str, validators: list[bytes]) -> str | None:
    """The Python verifier's verdict: None when the proof holds, else its reason."""
    try:
        (verify_state_proof if is_state_proof(proof) else verify_proof)(proof, chain_id, validators)
    except ProofInvalid as exc:
        return exc.reason
    return None


def _run(page: "WebDriver", cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sent = [{k: v for k, v in c.items() if k in ("proof", "compact_hex", "genesis", "genesis_toml")} for c in cases]
    results: list[dict[str, Any]] = page.execute_async_script(RUN, sent)
    assert len(results) == len(cases), results
    return results


def _check_agree(page: "WebDriver", cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The browser's verdict on each case is Python's: both accept, or both refuse with the same reason."""
    results = _run(page, cases)
    disagree = [(case["name"], case["python"], got.get("reason")) for case, got in zip(cases, results)
                if got["ok"] is not (case["python"] is None) or got.get("reason") != case["python"]]
    assert not disagree, disagree
    return results


# ---- (a) the worked examples of docs/proofs.md ----------------------------------------------------


def test_the_documented_examples_verify_with_what_they_establish(page: "WebDriver") -> None:
    genesis = proof_example.genesis_toml()
    proofs = [*proof_example.proofs(), *proof_example.state_proofs()]
    results = _run(page, [{"proof": json.dumps(p), "genesis_toml": genesis} for p in proofs])
    assert all(r["ok"] for r in results), results
    keys = proof_example.GENESIS.validator_keys
    for proof, got in zip(proofs, results):
        kind = "state" if is_state_proof(proof) else "transaction"
        verified = (verify_state_proof if kind == "state" else verify_proof)(proof, proof_example.CHAIN_ID, keys)
        assert (got["kind"], got["height"], got["block_hash"]) == (kind, verified.height, verified.block_hash.hex())
        assert got["present"] is (verified.present if kind == "state" else True)  # type: ignore[union-attr]
        assert "4 of 5 validators signed block 4 (quorum 4), each a valid Ed25519 signature of its block hash" \
            in got["checks"]
        assert any(c.startswith("validator change 1: block 3 ") for c in got["checks"])
    assert results[0]["tx"]["args"]["digest"] == hashlib.sha256(proof_example.DOCUMENT).hexdigest()
    assert [r["receipt"]["code"] for r in results[:3]] == [0, 3, 0]
    assert results[3]["result"] == proofs[3]["result"] and results[4]["result"] is None
    assert "the Merkle path from the key's bucket to the block's state_root holds (18 levels)" in results[3]["checks"]


def test_sha256_and_the_genesis_reader_agree_with_python(page: "WebDriver", tmp_path: Path) -> None:
    alliance("testnet", "--nodes", "4", "--out", str(tmp_path / "net"), "--base-port", str(NODE_BASE_PORT + 100))
    unusual = proof_example.GENESIS.to_dict()
    unusual["chain_id"] = 'acme "invoices" \\ \u00e9\U0001f600 # not a comment'
    unusual["clients"][0]["name"] = "cliént 'one'"
    texts = [proof_example.genesis_toml(), (tmp_path / "net" / "genesis.toml").read_text(),
             "# a comment\n" + tomli_w.dumps(unusual).replace("\n[[", "  # trailing\n\n[[", 1)]
    data = [b"", b"abc", proof_example.DOCUMENT, bytes(range(256)) * 5]
    script = """
    const [texts, data, bad, done] = arguments;
    (async () => {
      const v = window.verifier;
      const hashes = [];
      for (const hex of data) {
        hashes.push(await v.sha256Hex(Uint8Array.from(hex.match(/../g) || [], (h) => parseInt(h, 16))));
      }
      const refused = bad.map((t) => { try { v.parseGenesis(t); return null; } catch (err) { return err.message; } });
      done({genesis: texts.map((t) => v.parseGenesis(t)), hashes, refused});
    })();
    """
    member = '[[validators]]\nname = "a"\npubkey = "%s"\naddress = "127.0.0.1:1"\n'
    bad = ['chain_id = 1.5\n', '[table]\nchain_id = "x"\n', 'chain_id = "x"\n', 'chain_id = true\n',
           'chain_id = "x"\n' + member % "zz", 'chain_id = "a"\nchain_id = "b"\n',
           'chain_id = "x"\n' + member % ("ab" * 32) + member % ("ab" * 32),
           'chain_id = "x"\nadmin_threshold = 1\n' + member % ("ab" * 32),
           'chain_id = "x"\n' + (member % ("ab" * 32)).replace(":1\"", ":0\"")]
    for text in bad:  # the node refuses them all too
        (tmp_path / "bad.toml").write_text(text)
        with pytest.raises(AllianceError):
            load_genesis(tmp_path / "bad.toml")
    got = page.execute_async_script(script, texts, [d.hex() for d in data], bad)
    assert got["hashes"] == [hashlib.sha256(d).hexdigest() for d in data]
    for text, parsed in zip(texts, got["genesis"]):
        path = tmp_path / "genesis.toml"
        path.write_text(text)
        expected = load_genesis(path)
        assert parsed["chain_id"] == expected.chain_id
        assert [m["pubkey"] for m in parsed["validators"]] == [k.hex() for k in expected.validator_keys]
        assert [m["name"] for m in parsed["clients"]] == [m.name for m in expected.clients]
    assert all(r is not None and r.startswith("genesis: ") for r in got["refused"]), got["refused"]


# ---- (c) every tampering of the Python tests, (d) wrong genesis, (e) validator changes ---------------


def _tx_proof_tamperings() -> list[dict[str, Any]]:
    cases = []
    for name, tamper, _ in test_proof.TAMPERINGS:
        case = test_proof.Case(test_proof.proof_of(*test_proof.BASE))
        tamper(case)
        cases.append(_case(name, case.proof, case.chain_id, case.validators))
    for name, change, _ in test_proof.DOC_FAILURES:
        proof, chain_id, validators = test_proof._doc_example()
        change(proof)
        cases.append(_case(f"doc: {name}", proof, chain_id, validators))
    proof, chain_id, validators = test_proof._doc_example()
    cases.append(_case("no genesis validators", proof, chain_id, []))
    for other in ("it's", 'say "hi"', "a'b\"c\\\n\t\x01"):
        cases.append(_case(f"genesis chain id {other!r}", proof, other, validators))
    return cases


def _change_tamperings() -> list[dict[str, Any]]:
    keys = list(test_proof_changes.GENESIS.validator_keys)
    chain_id = test_proof_changes.CHAIN_ID
    cases = []
    for name, change, _ in test_proof_changes.TAMPERINGS:
        proof = test_proof_changes.proof_of(test_proof_changes.BASE)
        change(proof)
        cases.append(_case(name, proof, chain_id, keys))
    late = test_proof_changes.proof_of(4)
    late["validator_changes"] = test_proof_changes.proof_of(test_proof_changes.BASE)["validator_changes"][:2]
    cases.append(_case("a step from after the block", late, chain_id, keys))
    for name, validators in [("a later set", keys[1:] + [bytes(test_proof_changes.KEYS[4].verify_key)]),
                             ("reordered", keys[::-1]), ("one fewer", keys[:3])]:
        proof = test_proof_changes.proof_of(test_proof_changes.BASE)
        cases.append(_case(f"genesis: {name}", proof, chain_id, validators))
    return cases


def _state_tamperings() -> list[dict[str, Any]]:
    cases = []
    for name, base, change, _ in test_state_proof.TAMPERINGS:
        proof = copy.deepcopy(base)
        change(proof)
        cases.append(_case(name, proof, proof_example.CHAIN_ID, test_state_proof.GENESIS_KEYS))
    odd: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
        ("kv key with a lone surrogate", lambda p: p.__setitem__("key", "\ud800")),
        ("notary key with spaces", lambda p: p.__setitem__("key", " " + p["key"][1:])),
        ("notary key uppercase", lambda p: p.__setitem__("key", p["key"].upper())),
        ("result height as a float", lambda p: p["result"].__setitem__("height", 4.0)),
        ("result height as true", lambda p: p["result"].__setitem__("height", True)),
        ("result with an extra key", lambda p: p["result"].__setitem__("extra", 1)),
        ("records of another bucket", lambda p: p.__setitem__("records", "00" * 64)),
        ("family other", lambda p: p.__setitem__("family", "gov")),
    ]
    for name, change in odd:
        proof = copy.deepcopy(test_state_proof.ABSENT if "notary" in name else test_state_proof.PRESENT)
        change(proof)
        cases.append(_case(name, proof, proof_example.CHAIN_ID, test_state_proof.GENESIS_KEYS))
    return cases


def _flips(name: str, proof: dict[str, Any], chain_id: str, validators: list[bytes]) -> list[dict[str, Any]]:
    """Every hex string of the proof with its last character, and one in its middle, changed."""
    cases = []
    for path in hex_locations(proof):
        for at in (-1, len(_get(proof, path)) // 2):
            tampered = copy.deepcopy(proof)
            parent, text = _get(tampered, path[:-1]), _get(tampered, path)
            at %= len(text)
            parent[path[-1]] = text[:at] + ("0" if text[at] != "0" else "a") + text[at + 1:]
            cases.append(_case(f"{name} {path} [{at}]", tampered, chain_id, validators))
    return cases


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def test_every_python_tampering_is_refused_at_the_same_check(page: "WebDriver") -> None:
    cases = [*_tx_proof_tamperings(), *_change_tamperings(), *_state_tamperings()]
    assert sum(c["python"] is None for c in cases) == 0
    _check_agree(page, cases)


def test_any_changed_hex_character_is_refused_at_the_same_check(page: "WebDriver") -> None:
    doc, chain_id, validators = test_proof._doc_example()
    cases = _flips("doc", doc, chain_id, validators)
    for state in (test_state_proof.PRESENT, test_state_proof.ABSENT):
        cases += _flips(state["family"], state, proof_example.CHAIN_ID, test_state_proof.GENESIS_KEYS)
    cases += _flips("changes", test_proof_changes.proof_of(test_proof_changes.BASE), test_proof_changes.CHAIN_ID,
                    list(test_proof_changes.GENESIS.validator_keys))
    assert len(cases) > 400 and all(c["python"] is not None for c in cases)
    _check_agree(page, cases)


def _tx_variants(raw: bytes) -> list[tuple[str, bytes]]:
    """The documented notary.record re-encoded in ways a canonical decoder must refuse, or accept."""
    meta = b"\xb1invoice 2026-0001"
    nonce = b"\x0d\xa6notary"
    args = raw[raw.index(b"\x82\xa6digest"):raw.index(meta) + len(meta)]
    swapped = b"\x82" + args[len(args) - len(meta) - 5:] + args[1:len(args) - len(meta) - 5]
    deep = b"\x81\xa4meta" + b"\x91" * 40 + b"\xc0"
    return [
        ("nonce as uint8", raw.replace(nonce, b"\xcc" + nonce)),
        ("nonce as int8", raw.replace(nonce, b"\xd0" + nonce)),
        ("nonce as a float", raw.replace(nonce, b"\xcb" + bytes(8) + nonce[1:])),
        ("nonce as an ext", raw.replace(nonce, b"\xd4\x05\x00" + nonce[1:])),
        ("nonce as a reserved byte", raw.replace(nonce, b"\xc1" + nonce[1:])),
        ("nonce negative", raw.replace(nonce, b"\xff" + nonce[1:])),
        ("meta as str 8", raw.replace(meta, b"\xd9\x11" + meta[1:])),
        ("args keys unsorted", raw.replace(args, swapped)),
        ("args nested 40 deep", raw.replace(args, deep)),
        ("args with a long meta", raw.replace(args, b"\x81\xa4meta\xda\x01\x2c" + b"m" * 300)),
        ("family with invalid UTF-8", raw.replace(b"\xa6notary", b"\xa6not\xffry")),
        ("a trailing byte", raw + b"\x00"),
        ("version 2", raw[:1] + b"\x02" + raw[2:]),
        ("nine elements", b"\x99" + raw[1:] + b"\xc0"),
        ("an integer map key", raw.replace(args, b"\x81\x01\xc0")),
        ("a binary map key", raw.replace(args, b"\x81\xc4\x02a'\xc0")),
        ("unsorted keys, then invalid UTF-8", raw.replace(args, b"\x82\xa1b\xc0\xa1a\xa1\xff")),
        ("a float nested", raw.replace(args, b"\x81\xa1a\x91\xca" + bytes(4))),
        ("a float and a trailing byte", raw.replace(args, b"\x81\xa1a\xca" + bytes(4)) + b"\x00"),
        ("1025 arrays nested", raw.replace(args, b"\x81\xa1a" + b"\x91" * 1030 + b"\xc0")),
        ("a truncated ext", raw.replace(nonce, b"\xd8\x01")),
        ("more than 64 KiB", raw.replace(args, b"\x81\xa4meta\xdb" + (70000).to_bytes(4, "big") + b"m" * 70000)),
    ]


def test_transactions_are_decoded_as_canonically_as_python_decodes_them(page: "WebDriver") -> None:
    doc, chain_id, validators = test_proof._doc_example()
    cases = []
    for name, tx in _tx_variants(bytes.fromhex(doc["tx"])):
        proof = {**doc, "tx": tx.hex()}
        cases.append(_case(name, proof, chain_id, validators))
    assert all(c["python"].startswith("transaction: ") for c in cases), [c["python"] for c in cases]
    _check_agree(page, cases)


# ---- Ed25519 as strict as libsodium (PyNaCl) ------------------------------------------------------

ORDER = 2**252 + 27742317777372353535851937790883648493
IDENTITY = (1).to_bytes(32, "little")


def _seal_with_identity_r(seed: bytes, message: bytes) -> bytes:
    """A signature whose R is the identity point: S = k * a, which satisfies the cofactorless
    equation [S]B = R + [k]A but which libsodium refuses (R of small order)."""
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] = (h[31] & 127) | 64
    public = bytes(SigningKey(seed).verify_key)
    k = int.from_bytes(hashlib.sha512(IDENTITY + public + message).digest(), "little") % ORDER
    return IDENTITY + (k * int.from_bytes(h, "little") % ORDER).to_bytes(32, "little")


def _forged(validator: bytes, sign: Callable[[bytes], bytes]) -> tuple[dict[str, Any], str]:
    """The documented transaction alone in a block 1 decided by the single `validator`, sealed by `sign`."""
    doc, chain_id, _ = test_proof._doc_example()
    tx_hash = bytes.fromhex(doc["tx_hash"])
    hashes = [merkle_root([tx_hash]), merkle_root([receipt_bytes(tx_hash, Receipt(0, ""))]),
              validators_hash((validator,))]
    header = {**doc["header"], "height": 1, "tx_count": 1, "tx_root": hashes[0].hex(), "receipt_root": hashes[1].hex(),
              "validators_hash": hashes[2].hex(), "next_validators_hash": hashes[2].hex()}
    block_hash = _header_of(header).hash()
    seal = sign(b"alliance-commit-v1\x00" + block_hash)
    commit = {"height": 1, "block_hash": block_hash.hex(),
              "signatures": [{"validator": validator.hex(), "signature": seal.hex()}]}
    return {**doc, "index": 0, "tx_path": [], "receipt_path": [], "header": header, "commit": commit,
            "validator_changes": []}, chain_id


def _header_of(h: dict[str, Any]) -> Header:
    def raw(name: str) -> bytes:
        return bytes.fromhex(h[name])

    return Header(h["chain_id"], h["height"], raw("prev_hash"), h["time"], raw("proposer"), h["tx_count"],
                  raw("tx_root"), raw("receipt_root"), raw("state_root"), raw("validators_hash"),
                  raw("next_validators_hash"))


def test_signatures_libsodium_refuses_are_refused(page: "WebDriver") -> None:
    seed = b"v" * 32
    key = SigningKey(seed)
    public = bytes(key.verify_key)
    y_is_p_plus_1 = bytes([0xee]) + b"\xff" * 30 + b"\x7f"  # the identity, encoded with y = p + 1
    forged = [
        ("a valid seal", *_forged(public, lambda m: key.sign(m).signature)),
        ("R the identity", *_forged(public, lambda m: _seal_with_identity_r(seed, m))),
        ("the identity as validator", *_forged(IDENTITY, lambda m: IDENTITY + bytes(32))),
        ("a non-canonical identity", *_forged(y_is_p_plus_1, lambda m: IDENTITY + bytes(32))),
        ("S not below the order", *_forged(public, lambda m: key.sign(m).signature[:32] + (
            int.from_bytes(key.sign(m).signature[32:], "little") + ORDER).to_bytes(32, "little"))),
    ]
    cases = [_case(name, proof, chain_id, [bytes.fromhex(proof["commit"]["signatures"][0]["validator"])])
             for name, proof, chain_id in forged]
    assert cases[0]["python"] is None and all(c["python"].startswith("certificate: ") for c in cases[1:])
    _check_agree(page, cases)


def test_every_proof_across_validator_changes_verifies(page: "WebDriver") -> None:
    keys = list(test_proof_changes.GENESIS.validator_keys)
    cases = [_case(f"height {h} index {i}", test_proof_changes.proof_of(h, i), test_proof_changes.CHAIN_ID, keys)
             for h in range(1, test_proof_changes.HEIGHTS + 1) for i in range(len(test_proof_changes.BLOCKS[h]))]
    cases += [_case(f"sample {i}", p, test_proof.CHAIN_ID, test_proof.VALIDATORS)
              for i, p in enumerate(test_proof.SAMPLE_PROOFS)]
    assert all(c["python"] is None for c in cases)
    results = _check_agree(page, cases)
    for case, got in zip(cases, results):
        proof = json.loads(case["proof"])
        steps = len(proof["validator_changes"])
        assert got["height"] == proof["header"]["height"]
        assert sum(c.startswith("validator change ") for c in got["checks"]) == steps


def test_a_wrong_genesis_is_refused(page: "WebDriver") -> None:
    proof, _, _ = test_proof._doc_example()
    other_chain = {**proof_example.GENESIS.to_dict(), "chain_id": "acme-orders"}
    five = proof_example.GENESIS.to_dict()
    five["validators"].append({"name": "node4", "pubkey": proof_example.NODES[4].verify_key.encode().hex(),
                               "address": "127.0.0.1:22281"})
    cases = [{"proof": json.dumps(proof), "genesis_toml": tomli_w.dumps(g)} for g in (other_chain, five)]
    cases.append({"proof": json.dumps(proof), "genesis_toml": "chain_id = \n"})
    cases.append({"proof": json.dumps(proof), "genesis": "genesis.toml: no such file"})
    reasons = [r.get("reason", "") for r in _run(page, cases)]
    assert reasons[0].startswith("chain id: the proof is for chain 'acme-invoices', the genesis is 'acme-orders'")
    assert reasons[1].startswith("validator change: validator_changes[0] (block 3): header.validators_hash")
    assert reasons[2].startswith("genesis: line 1") and reasons[3] == "genesis: genesis.toml: no such file"


def test_json_text_is_read_strictly(page: "WebDriver") -> None:
    doc, chain_id, validators = test_proof._doc_example()
    text = json.dumps(doc)
    genesis = _genesis(chain_id, validators)
    variants = [
        text.replace('"index": 2', '"index": 2, "index": 2'),  # a key twice
        text.replace('"index": 2', '"index": 2.0'),
        text.replace('"index": 2', '"index": 2e0'),
        text.replace('"index": 2', '"index": 18446744073709551618'),
        text + " x",
        text.replace('"log": ""', '"log": "\\ud800"'),
    ]
    reasons = [str(r.get("reason")) for r in _run(page, [{"proof": t, "genesis": genesis} for t in variants])]
    assert reasons[0].startswith("shape: the proof is not valid JSON: the key \"index\" appears twice")
    assert all(r.startswith("shape: index must be an integer") for r in reasons[1:4]), reasons
    assert reasons[4].startswith("shape: the proof is not valid JSON")
    assert reasons[5] == "shape: receipt.log is not valid Unicode text"
    parsed = page.execute_async_script(
        "const [t, g, done] = arguments; window.verifier.verifyProof(JSON.parse(t), g).then(done);", text, genesis)
    assert parsed["ok"] and parsed["tx_hash"] == doc["tx_hash"]


# ---- (b) a real node's proofs ---------------------------------------------------------------------


def test_a_real_nodes_proofs_verify_and_tampered_ones_do_not(page: "WebDriver", tmp_path: Path) -> None:
    out = tmp_path / "net"
    alliance("testnet", "--nodes", "1", "--out", str(out), "--base-port", str(NODE_BASE_PORT))
    node = node_process(out, NODE_BASE_PORT)
    node.start()
    try:
        client = Client(node.rpc_url, timeout_s=30, key=load_key(out / "client.key"))
        put = client.kv_put("invoice/7/status", "paid")
        digest = hashlib.sha256(b"invoice 7").hexdigest()
        record = client.notarize(digest, meta="invoice 7")
        proofs = {
            "kv put": client.get_proof(put.tx_hash),
            "notary record": client.get_proof(record.tx_hash),
            "present kv": client.query("kv", "invoice/7/status", prove=True),
            "absent kv": client.query("kv", "invoice/8/status", prove=True),
            "present digest": client.query("notary", digest, prove=True),
            "absent digest": client.query("notary", hashlib.sha256(b"never").hexdigest(), prove=True),
        }
        client.close()
    finally:
        node.stop()
    genesis_text = (out / "genesis.toml").read_text()
    genesis = load_genesis(out / "genesis.toml")
    results = _run(page, [{"proof": json.dumps(p), "genesis_toml": genesis_text} for p in proofs.values()])
    assert all(r["ok"] for r in results), results
    assert [r["present"] for r in results] == [True, True, True, False, True, False]
    assert [r["kind"] for r in results] == ["transaction"] * 2 + ["state"] * 4
    assert results[1]["tx"]["args"] == {"digest": digest, "meta": "invoice 7"}
    assert results[4]["result"]["meta"] == "invoice 7" and results[2]["result"]["value"] == b"paid".hex()
    keys = list(genesis.validator_keys)
    cases = [c for name, proof in proofs.items() for c in _flips(name, proof, genesis.chain_id, keys)]
    _check_agree(page, cases)
    other = out.parent / "other"
    alliance("testnet", "--nodes", "1", "--out", str(other), "--base-port", str(NODE_BASE_PORT + 50))
    foreign = (other / "genesis.toml").read_text()
    refused = _run(page, [{"proof": json.dumps(p), "genesis_toml": foreign} for p in proofs.values()])
    assert all(r["reason"].startswith("validators: ") for r in refused), refused


# ---- compact state proofs -------------------------------------------------------------------------


def _compact_case(name: str, data: bytes) -> dict[str, Any]:
    chain_id, keys = proof_example.CHAIN_ID, test_state_proof.GENESIS_KEYS
    try:
        verify_compact_state_proof(data, chain_id, keys)
        python = None
    except ProofInvalid as exc:
        python = exc.reason
    return {"name": name, "compact_hex": data.hex(), "genesis": _genesis(chain_id, keys), "python": python}


def _repacked(data: bytes, edit: Callable[[list[Any]], None]) -> bytes:
    obj = msgpack.unpackb(data)
    edit(obj)
    return msgpack.packb(obj, use_bin_type=True)


def test_compact_proofs_are_read_and_refused_as_python_reads_them(page: "WebDriver") -> None:
    cases = []
    for state in (test_state_proof.PRESENT, test_state_proof.ABSENT):
        data = compact_state_proof(state, proof_example.CHAIN_ID, test_state_proof.GENESIS_KEYS)
        cases.append(_compact_case(f"{state['family']} compact", data))
        for i in range(len(data)):
            cases.append(_compact_case(f"{state['family']} byte {i}", data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]))
        cases += [_compact_case(f"{state['family']} cut at {n}", data[:n]) for n in range(0, len(data), 37)]
        edits: list[tuple[str, Callable[[list[Any]], None]]] = [
            ("index out of range", lambda o: o[6][1][0].__setitem__(0, 9)),
            ("negative index", lambda o: o[6][1][0].__setitem__(0, -1)),
            ("seal of three", lambda o: o[6][1][0].append(1)),
            ("short signature", lambda o: o[6][1][0].__setitem__(1, b"\x01" * 63)),
            ("header height 0", lambda o: o[6][0].__setitem__(2, 0)),
            ("header version 3", lambda o: o[6][0].__setitem__(0, 3)),
            ("header chain id as bin", lambda o: o[6][0].__setitem__(1, b"acme")),
            ("step of two", lambda o: o[7][0].pop()),
            ("step validator short", lambda o: o[7][0][2].__setitem__(0, b"\x01")),
            ("no steps", lambda o: o.__setitem__(7, [])),
            ("version 2", lambda o: o.__setitem__(0, 2)),
            ("family gov", lambda o: o.__setitem__(1, "gov")),
            ("key as bin", lambda o: o.__setitem__(2, b"k")),
            ("siblings short", lambda o: o.__setitem__(5, o[5][:-1])),
            ("a value that is no state value", lambda o: o.__setitem__(3, b"\x01")),
            ("nine fields", lambda o: o.append(None)),
        ]
        cases += [_compact_case(f"{state['family']} {name}", _repacked(data, edit)) for name, edit in edits]
        cases.append(_compact_case(f"{state['family']} trailing byte", data + b"\x00"))
        cases.append(_compact_case(f"{state['family']} not canonical",
                                   data[:1] + b"\xd0\x01" + data[2:]))  # 1 as int8 instead of fixint
    # Bytes that do not start as a compact proof are read as JSON text, as `alliance verify-proof` reads them.
    text = [c for c in cases if not is_compact(bytes.fromhex(c["compact_hex"]))]
    cases = [c for c in cases if c not in text]
    assert sum(c["python"] is None for c in cases) >= 2 and len(cases) > 3000 and len(text) >= 4
    results = _check_agree(page, cases)
    assert results[0]["ok"] and results[0]["kind"] == "state" and results[0]["present"]
    assert all(r["reason"].startswith("shape: the proof is not valid JSON") for r in _run(page, text))

