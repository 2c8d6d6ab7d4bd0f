"""Transaction proofs: built from a Ledger, verified with only the genesis, and refused when any
part of them is changed."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from node.api.lookup import build_proof
from node.chain.block import Sealed, verify_certificate
from node.chain.canonical import pack
from node.chain.execution import NO_SUCH_KEY
from node.chain.genesis import Genesis
from node.chain.ledger import Ledger
from node.chain.membership import Member, validators_hash
from node.chain.proof import ProofInvalid, VerifiedProof, verify_proof
from node.chain.proposal import build_block
from node.chain.tx import Transaction, sign_tx
from node.cli.client_cmds import recorded_file
from storage.chain import ChainStore
from storage.memory import MemoryStore
from tests.node import proof_example
from tests.node.proof_example import hex_locations

VALIDATOR_KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(4)]
VALIDATORS = [bytes(k.verify_key) for k in VALIDATOR_KEYS]
SIGNERS = VALIDATOR_KEYS[:3]  # a quorum of 4, as a node stores the first quorum it collects
CLIENT = SigningKey(b"c" * 32)
STRANGER = SigningKey(b"s" * 32)
CHAIN_ID = "proof-test"
GENESIS = Genesis(
    chain_id=CHAIN_ID,
    genesis_time_ms=1_700_000_000_000,
    validators=tuple(Member(f"v{i}", pk, f"127.0.0.1:{26601 + 10 * i}") for i, pk in enumerate(VALIDATORS)),
    clients=(Member("client", bytes(CLIENT.verify_key)),),
    admins=(),
)
BLOCK_SIZES = (1, 2, 3, 5, 8, 13)
FAILED_AT = (5, 1)  # (block size, index): a kv delete of a key nobody wrote
_nonce = iter(range(10**9))


def _tx(size: int, index: int) -> Transaction:
    if (size, index) == FAILED_AT:
        return sign_tx(CLIENT, CHAIN_ID, "kv", "delete", {"key": "never-written"}, next(_nonce))
    return sign_tx(CLIENT, CHAIN_ID, "kv", "put", {"key": f"k{size}-{index}", "value": b"value"}, next(_nonce))


def _seal(key: SigningKey, block_hash: bytes) -> tuple[bytes, bytes]:
    return bytes(key.verify_key), key.sign(b"alliance-commit-v1\x00" + block_hash).signature


def _build_chain() -> tuple[Ledger, dict[int, list[Transaction]]]:
    """One block per size in BLOCK_SIZES, committed with a certificate of three of the four validators."""
    ledger = Ledger(ChainStore(MemoryStore()), GENESIS)
    blocks = {}
    for size in BLOCK_SIZES:
        txs = [_tx(size, i) for i in range(size)]
        candidate = build_block(ledger, txs, VALIDATORS[0], GENESIS.genesis_time_ms + 1000 * size)
        certificate = tuple(_seal(k, candidate.block_hash) for k in SIGNERS)
        ledger.commit(candidate.block, candidate.txs, candidate.execution, certificate)
        blocks[size] = txs
    return ledger, blocks


LEDGER, BLOCKS = _build_chain()


def proof_of(size: int, index: int) -> dict[str, Any]:
    proof = build_proof(LEDGER, BLOCKS[size][index].hash)
    assert proof is not None
    received: dict[str, Any] = json.loads(json.dumps(proof))  # what a client receives
    return received


def verify(proof: Any, chain_id: str = CHAIN_ID, validators: list[bytes] = VALIDATORS) -> VerifiedProof:
    return verify_proof(proof, chain_id, validators)


def _every_tx() -> Iterator[tuple[int, int]]:
    for size in BLOCK_SIZES:
        for index in range(size):
            yield size, index


# ---- valid proofs --------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "index"), list(_every_tx()))
def test_proof_of_every_transaction_verifies(size: int, index: int) -> None:
    tx = BLOCKS[size][index]
    verified = verify(proof_of(size, index))
    assert verified.tx == tx
    assert (verified.height, verified.index) == (BLOCK_SIZES.index(size) + 1, index)
    block = LEDGER.block(verified.height)
    assert block is not None
    assert verified.block_hash == block.header.hash()
    assert verified.time_ms == block.header.time_ms
    assert (verified.signatures, verified.quorum) == (3, 3)
    expected_code = NO_SUCH_KEY if (size, index) == FAILED_AT else 0
    assert verified.code == expected_code
    assert (verified.log != "") == (expected_code != 0)


def test_proof_of_a_failed_transaction_proves_its_failure() -> None:
    proof = proof_of(*FAILED_AT)
    assert proof["receipt"] == {"code": NO_SUCH_KEY, "log": "no such key 'never-written'"}
    assert verify(proof).code == NO_SUCH_KEY


def test_proof_matches_the_stored_block_and_certificate() -> None:
    proof = proof_of(8, 5)
    block, certificate = LEDGER.block(5), LEDGER.certificate(5)
    assert block is not None and certificate is not None
    assert proof["tx"] == block.txs[5].hex()
    assert proof["commit"]["signatures"] == [{"validator": v.hex(), "signature": s.hex()} for v, s in certificate]
    assert len(proof["tx_path"]) == len(proof["receipt_path"]) == 3


def test_no_proof_of_an_uncommitted_transaction() -> None:
    assert build_proof(LEDGER, _tx(99, 0).hash) is None


def test_a_certificate_of_every_validator_verifies() -> None:
    proof = proof_of(3, 2)
    proof["commit"]["signatures"].append(_signature_json(VALIDATOR_KEYS[3], proof))
    assert (verify(proof).signatures, verify(proof).quorum) == (4, 3)


# ---- tampered proofs -----------------------------------------------------------------------

BASE = (5, 3)  # a block of five: index 3 has a path of three elements in both trees


def _flip(hex_text: str, at: int = 0) -> str:
    """The hex string with the character at `at` changed."""
    return hex_text[:at] + ("1" if hex_text[at] == "0" else "0") + hex_text[at + 1:]


def _signature_json(key: SigningKey, proof: dict[str, Any]) -> dict[str, str]:
    validator, seal = _seal(key, bytes.fromhex(proof["commit"]["block_hash"]))
    return {"validator": validator.hex(), "signature": seal.hex()}


@dataclass
class Case:
    """A proof and the genesis it is checked against, for a tampering to change."""

    proof: Any
    chain_id: str = CHAIN_ID
    validators: list[bytes] = field(default_factory=lambda: list(VALIDATORS))


Tamper = Callable[[Case], None]


def _set(path: str, value: Any) -> Tamper:
    """A tampering that sets the field at dotted `path` (list indexes as numbers); a callable
    `value` maps the old value to the new."""
    *parents, last = path.split(".")

    def tamper(case: Case) -> None:
        target: Any = case.proof
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value(target[int(last)]) if callable(value) else value
        else:
            target[last] = value(target[last]) if callable(value) else value

    return tamper


def _delete(path: str) -> Tamper:
    *parents, last = path.split(".")

    def tamper(case: Case) -> None:
        target: Any = case.proof
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        del target[last]

    return tamper


def _tx_byte(find: Callable[[bytes], int]) -> Tamper:
    def tamper(case: Case) -> None:
        raw = bytearray(bytes.fromhex(case.proof["tx"]))
        raw[find(bytes(raw))] ^= 0x01
        case.proof["tx"] = raw.hex()

    return tamper


def _other_tx(case: Case) -> None:
    case.proof["tx"] = _tx(5, 0).raw.hex()


def _foreign_signature(case: Case) -> None:
    case.proof["commit"]["signatures"][1] = _signature_json(STRANGER, case.proof)


def _signature_twice(case: Case) -> None:
    signatures = case.proof["commit"]["signatures"]
    signatures[2] = dict(signatures[0])


def _signature_added_twice(case: Case) -> None:
    signatures = case.proof["commit"]["signatures"]
    signatures.append(dict(signatures[0]))


def _signature_removed(case: Case) -> None:
    case.proof["commit"]["signatures"].pop()


def _path_added(name: str) -> Tamper:
    return lambda case: case.proof[name].append("ab" * 32)


def _path_removed(name: str) -> Tamper:
    def tamper(case: Case) -> None:
        del case.proof[name][-1]

    return tamper


def _outsiders(count: int) -> list[bytes]:
    return [bytes(SigningKey(bytes([i + 100]) * 32).verify_key) for i in range(count)]


def _other_chain(case: Case) -> None:
    case.chain_id = "another-chain"


def _other_validators(case: Case) -> None:
    case.validators = _outsiders(4)


def _larger_validator_set(case: Case) -> None:
    case.validators = VALIDATORS + _outsiders(3)


def _wrapped_in_a_list(case: Case) -> None:
    case.proof = [case.proof]


def _tx_path_of_another_index(case: Case) -> None:
    case.proof["tx_path"] = proof_of(5, 2)["tx_path"]


_HEADER_HEX = ("prev_hash", "proposer", "tx_root", "receipt_root", "state_root", "validators_hash",
               "next_validators_hash")
TAMPERINGS: list[tuple[str, Tamper, str]] = [
    # the header: every field is bound by the block hash
    ("header.version", _set("header.version", 2), r"^shape: header.version must be 4$"),
    ("header.chain_id", _set("header.chain_id", "another-chain"), r"^chain id: the proof is for chain 'another-chain'"),
    ("header.height", _set("header.height", lambda h: h + 1), r"^block hash: "),
    ("header.time", _set("header.time", lambda t: t + 1), r"^block hash: "),
    ("header.tx_count", _set("header.tx_count", lambda n: n + 1), r"^block hash: "),
    *[(f"header.{f}", _set(f"header.{f}", _flip), r"^block hash: ") for f in _HEADER_HEX],
    # the commit
    ("commit.block_hash", _set("commit.block_hash", _flip), r"^block hash: the header hashes to "),
    ("commit.height", _set("commit.height", lambda h: h + 1), r"^commit height: commit.height 5 is not header.height 4$"),
    ("signature byte", _set("commit.signatures.1.signature", lambda s: _flip(s, 70)),
     r"^certificate: signature 1 by [0-9a-f]{64} does not verify$"),
    ("validator of a signature", _set("commit.signatures.0.validator", _flip), r"^certificate: signature 0 is by .*, "
     r"not a validator of that height$"),
    ("signature by a non-member", _foreign_signature, r"^certificate: signature 1 is by [0-9a-f]{64}, not a validator "),
    ("duplicated signature", _signature_twice, r"^certificate: validator [0-9a-f]{64} signs more than once$"),
    ("duplicated extra signature", _signature_added_twice, r"^certificate: validator .* signs more than once$"),
    ("removed signature", _signature_removed, r"^certificate: 2 signatures, below the quorum of 3 of 4 validators$"),
    ("no signatures", _set("commit.signatures", []), r"^certificate: 0 signatures, below the quorum of 3 of 4 "),
    # keys: a proof is closed
    *[(f"extra key in {where}", _set(path, 0), rf"^shape: {re.escape(where)} has the unknown key 'extra'$")
      for path, where in [("extra", "proof"), ("receipt.extra", "receipt"), ("header.extra", "header"),
                          ("commit.extra", "commit"), ("commit.signatures.0.extra", "commit.signatures[0]")]],
    ("a step in validator_changes where none is", _set("validator_changes", [0]),
     r"^shape: validator_changes\[0\] must be an object$"),
    *[(f"missing {path}", _delete(path), rf"^shape: {where} lacks the key '{key}'$")
      for path, where, key in [("tx_path", "proof", "tx_path"), ("receipt.log", "receipt", "log"),
                               ("header.state_root", "header", "state_root"), ("commit.height", "commit", "height"),
                               ("commit.signatures.0.signature", r"commit.signatures\[0\]", "signature"),
                               ("validator_changes", "proof", "validator_changes"),
                               ("header.next_validators_hash", "header", "next_validators_hash")]],
    # types and encodings
    ("proof is a list", _wrapped_in_a_list, r"^shape: proof must be an object$"),
    ("version as a string", _set("version", "2"), r"^shape: version must be 2$"),
    ("version 1", _set("version", 1), r"^shape: version must be 2$"),
    ("index as a string", _set("index", "3"), r"^shape: index must be an integer in 0..2\*\*64-1$"),
    ("negative index", _set("index", -1), r"^shape: index must be an integer"),
    ("height as a float", _set("header.height", 4.0), r"^shape: header.height must be an integer"),
    ("time beyond 64 bits", _set("header.time", 2**64), r"^shape: header.time must be an integer"),
    ("receipt code as a boolean", _set("receipt.code", False), r"^shape: receipt.code must be an integer"),
    ("receipt log as a number", _set("receipt.log", 0), r"^shape: receipt.log must be a string$"),
    ("receipt log with a lone surrogate", _set("receipt.log", "\ud800"), r"^shape: receipt.log is not valid Unicode"),
    ("chain id with a lone surrogate", _set("header.chain_id", "\udfff"), r"^shape: header.chain_id is not valid "),
    ("chain id as null", _set("header.chain_id", None), r"^shape: header.chain_id must be a string$"),
    ("header as null", _set("header", None), r"^shape: header must be an object$"),
    ("tx_path as a string", _set("tx_path", "00" * 32), r"^shape: tx_path must be an array$"),
    ("signatures as an object", _set("commit.signatures", {}), r"^shape: commit.signatures must be an array$"),
    ("signature entry as a list", _set("commit.signatures.0", ["a", "b"]),
     r"^shape: commit.signatures\[0\] must be an object$"),
    ("uppercase hex", _set("tx_hash", str.upper), r"^shape: tx_hash must be 64 lowercase hex characters$"),
    ("0x prefix", _set("commit.block_hash", lambda h: "0x" + h[2:]), r"^shape: commit.block_hash must be 64 "),
    ("short hash", _set("header.tx_root", lambda h: h[:-2]), r"^shape: header.tx_root must be 64 lowercase hex"),
    ("short signature", _set("commit.signatures.2.signature", lambda s: s[:64]),
     r"^shape: commit.signatures\[2\].signature must be 128 lowercase hex characters$"),
    ("odd-length tx", _set("tx", lambda t: t[:-1]), r"^shape: tx must be an even number of lowercase hex "),
    ("empty tx", _set("tx", ""), r"^shape: tx must be an even number of lowercase hex "),
    ("path element not hex", _set("receipt_path.0", "zz" * 32), r"^shape: receipt_path\[0\] must be 64 lowercase"),
    # the transaction
    ("tx byte flipped in the args", _tx_byte(lambda raw: raw.index(b"value")), r"^transaction: the client signature of tx does not verify$"),
    ("tx byte flipped in the signature", _tx_byte(lambda raw: len(raw) - 1), r"^transaction: the client signature of tx does not "),
    ("tx truncated", _set("tx", lambda t: t[:-2]), r"^transaction: tx is not a canonical transaction \(malformed"),
    ("tx replaced by another signed tx", _other_tx, r"^transaction: tx hashes to [0-9a-f]{64}, not tx_hash "),
    ("tx_hash changed", _set("tx_hash", _flip), r"^transaction: tx hashes to [0-9a-f]{64}, not tx_hash "),
    # the receipt
    ("receipt code", _set("receipt.code", 1), r"^receipt path: receipt_path does not prove the receipt at index 3 "),
    ("receipt log", _set("receipt.log", "ok"), r"^receipt path: "),
    # the position and the paths
    ("index changed", _set("index", 2), r"^tx path: tx_path does not prove tx_hash at index 2 under header.tx_root$"),
    ("index past the block", _set("index", 5), r"^index: index 5 is not below header.tx_count 5$"),
    *[(f"tx_path[{i}]", _set(f"tx_path.{i}", _flip), r"^tx path: ") for i in range(3)],
    *[(f"receipt_path[{i}]", _set(f"receipt_path.{i}", _flip), r"^receipt path: ") for i in range(3)],
    ("tx_path element added", _path_added("tx_path"), r"^tx path: "),
    ("tx_path element removed", _path_removed("tx_path"), r"^tx path: "),
    ("receipt_path element added", _path_added("receipt_path"), r"^receipt path: "),
    ("receipt_path element removed", _path_removed("receipt_path"), r"^receipt path: "),
    ("tx_path of another index", _tx_path_of_another_index, r"^tx path: "),
    # the genesis it is checked against
    ("genesis of another chain", _other_chain, r"^chain id: the proof is for chain 'proof-test', the genesis is "
     r"'another-chain'$"),
    ("another validator set", _other_validators, r"^validators: header.validators_hash is not the hash of the 4 "
     r"validators in force after 0 validator changes"),
    ("a larger validator set", _larger_validator_set, r"^validators: .* of the 7 validators in force "),
]


@pytest.mark.parametrize(("tamper", "reason"), [(t, r) for _, t, r in TAMPERINGS], ids=[n for n, _, _ in TAMPERINGS])
def test_tampered_proof_fails_with_its_reason(tamper: Tamper, reason: str) -> None:
    case = Case(proof_of(*BASE))
    verify(case.proof)
    tamper(case)
    with pytest.raises(ProofInvalid, match=reason) as caught:
        verify(case.proof, case.chain_id, case.validators)
    assert caught.value.reason == str(caught.value)


def test_an_empty_validator_set_proves_nothing() -> None:
    with pytest.raises(ProofInvalid, match="^certificate: the genesis lists no validators$"):
        verify(proof_of(*BASE), validators=[])


# ---- any one changed hex character -----------------------------------------------------------

HEX_CHARS = "0123456789abcdefABCDEF"


SAMPLE_PROOFS = [proof_of(1, 0), proof_of(*FAILED_AT), proof_of(*BASE), proof_of(13, 12), proof_of(8, 0)]


def testhex_locations_cover_every_binary_field() -> None:
    # tx_hash, tx, 7 header hashes, block_hash, 3 signatures x 2, and the paths
    proof = proof_of(*BASE)
    assert proof["validator_changes"] == []
    assert len(list(hex_locations(proof))) == 2 + 7 + 1 + 6 + 3 + 3


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_changing_any_hex_character_anywhere_breaks_the_proof(data: st.DataObject) -> None:
    proof = copy.deepcopy(data.draw(st.sampled_from(SAMPLE_PROOFS)))
    path = data.draw(st.sampled_from(list(hex_locations(proof))))
    parent = proof
    for part in path[:-1]:
        parent = parent[part]
    text = parent[path[-1]]
    at = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.sampled_from([c for c in HEX_CHARS if c != text[at]]))
    parent[path[-1]] = text[:at] + replacement + text[at + 1:]
    with pytest.raises(ProofInvalid):
        verify(proof)


# ---- the worked example of docs/proofs.md -------------------------------------------------------

DOC = (Path(__file__).resolve().parents[2] / "docs" / "proofs.md").read_text()


def _fenced(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC, re.DOTALL)


def _doc_example() -> tuple[dict[str, Any], str, list[bytes]]:
    genesis = tomllib.loads(_fenced("toml")[0])
    proof = json.loads(_fenced("json")[0])
    return proof, genesis["chain_id"], [bytes.fromhex(v["pubkey"]) for v in genesis["validators"]]


def test_the_documented_example_is_what_the_node_builds() -> None:
    """The page's genesis and proofs are those its chain, rebuilt from its seeds, gives today."""
    assert _fenced("toml")[0] == proof_example.genesis_toml()
    built = [json.loads(json.dumps(p)) for p in proof_example.proofs()]
    assert json.loads(_fenced("json")[0]) == built[0]
    fields = ("tx_hash", "tx", "receipt", "index", "tx_path", "receipt_path")
    assert json.loads(_fenced("json")[1]) == [{k: p[k] for k in fields} for p in built[1:]]
    assert all({**p, **{k: built[0][k] for k in fields}} == built[0] for p in built[1:])


def test_the_documented_proof_and_its_vectors_verify() -> None:
    proof, chain_id, validators = _doc_example()
    verified = verify_proof(proof, chain_id, validators)
    assert (verified.validator_changes, len(verified.validators), verified.quorum) == (1, 5, 4)
    assert recorded_file(verified, hashlib.sha256(proof_example.DOCUMENT).digest(), "invoice") == json.loads(
        _fenced("json")[2])
    vectors = json.loads(_fenced("json")[1])
    codes = [verify_proof({**proof, **vector}, chain_id, validators).code for vector in vectors]
    assert codes == [3, 0]


def _header_bytes(header: dict[str, Any]) -> bytes:
    return pack([4, header["chain_id"], header["height"], bytes.fromhex(header["prev_hash"]), header["time"],
                 bytes.fromhex(header["proposer"]), header["tx_count"],
                 *(bytes.fromhex(header[k]) for k in ("tx_root", "receipt_root", "state_root", "validators_hash",
                                                      "next_validators_hash"))])


def test_the_documented_intermediate_values_are_those_of_the_proof() -> None:
    proof, _, validators = _doc_example()
    step = proof["validator_changes"][0]
    for header, block_hash in ((proof["header"], proof["commit"]["block_hash"]),
                               (step["header"], step["commit"]["block_hash"])):
        encoded = _header_bytes(header)
        assert f"these {len(encoded)} bytes" in DOC and hashlib.sha256(encoded).hexdigest() == block_hash
        assert f"SHA-256 is `{block_hash}`" in DOC and f"7631 00 {block_hash}" in DOC
    for keys, field in ((validators, "validators_hash"), ([bytes.fromhex(k) for k in step["validators"]],
                                                           "next_validators_hash")):
        encoded = pack(keys)
        assert f"these {len(encoded)} bytes" in DOC and f"{encoded[:1].hex()}  " in DOC
        assert hashlib.sha256(encoded).hexdigest() == step["header"][field]
        assert f"SHA-256 is `{step['header'][field]}`" in DOC
    assert proof["header"]["validators_hash"] == step["header"]["next_validators_hash"]
    tx_hash = bytes.fromhex(proof["tx_hash"])
    item = pack([tx_hash, 0, ""])
    assert f"the {len(item)} bytes\n`{item.hex()}`" in DOC
    for leaf, path in ((tx_hash, proof["tx_path"]), (item, proof["receipt_path"])):
        for digest in _walk(leaf, proof["index"], [bytes.fromhex(h) for h in path]):
            assert f"= {digest.hex()}" in DOC


def _walk(item: bytes, index: int, path: list[bytes]) -> Iterator[bytes]:
    """The digests from the leaf up, for a path whose every level has a sibling (as at index 2 of 5)."""
    digest = hashlib.sha256(b"\x00" + item).digest()
    yield digest
    for sibling in path:
        pair = sibling + digest if index % 2 else digest + sibling
        digest = hashlib.sha256(b"\x01" + pair).digest()
        index //= 2
        yield digest


def _doc_failure(change: Callable[[dict[str, Any]], None], validators: list[bytes] | None = None) -> str:
    proof, chain_id, genesis_validators = _doc_example()
    change(proof)
    with pytest.raises(ProofInvalid) as caught:
        verify_proof(proof, chain_id, genesis_validators if validators is None else validators)
    return caught.value.reason


def _set_in(proof: dict[str, Any], path: str, value: Any) -> None:
    _set(path, value)(Case(proof))


def _swap_last_two(keys: list[str]) -> list[str]:
    return [*keys[:-2], keys[-1], keys[-2]]


STEP = "validator change: validator_changes[0] (block 3): "
DOC_FAILURES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("header.time + 1", lambda p: _set_in(p, "header.time", lambda t: t + 1), "block hash:"),
    ("commit.height = 3", lambda p: _set_in(p, "commit.height", 3), "commit height:"),
    ("validator_changes = []", lambda p: _set_in(p, "validator_changes", []), "validators:"),
    ("the step repeated", lambda p: _set_in(p, "validator_changes", p["validator_changes"] * 2),
     "validator change: validator_changes[1] (block 3): its height must be above 3"),
    ("the step's header.time + 1", lambda p: _set_in(p, "validator_changes.0.header.time", lambda t: t + 1),
     "validator change: validator_changes[0] (block 3): the header hashes to"),
    ("the step's validators without node4", lambda p: _set_in(p, "validator_changes.0.validators",
                                                               lambda v: v[:4]), STEP + "header.next_validators_hash"),
    ("node3 and node4 swapped", lambda p: _set_in(p, "validator_changes.0.validators", _swap_last_two),
     STEP + "header.next_validators_hash"),
    ("the step's last signature dropped", lambda p: _set_in(p, "validator_changes.0.commit.signatures",
                                                             lambda s: s[:2]), STEP + "certificate: 2 signatures"),
    ("drop the last signature", lambda p: _set_in(p, "commit.signatures", p["commit"]["signatures"][:3]),
     "certificate: 3 signatures, below the quorum of 4 of 5"),
    ("first signature repeated", lambda p: _set_in(p, "commit.signatures.1", p["commit"]["signatures"][0]),
     "certificate: validator"),
    ("last hex digit of the last signature", lambda p: _set_in(p, "commit.signatures.3.signature",
                                                               lambda s: s[:-1] + ("0" if s[-1] != "0" else "1")),
     "certificate: signature 3"),
    ("tx_hash of index 3", lambda p: _set_in(p, "tx_hash", json.loads(_fenced("json")[1])[0]["tx_hash"]),
     "transaction:"),
    ("receipt.code = 4", lambda p: _set_in(p, "receipt.code", 4), "receipt path:"),
    ("index = 3", lambda p: _set_in(p, "index", 3), "tx path:"),
    ("index = 5", lambda p: _set_in(p, "index", 5), "index:"),
    ("a key added", lambda p: _set_in(p, "validator_changes.0.commit.signatures.0.extra", 1), "shape:"),
    ("version = 1", lambda p: _set_in(p, "version", 1), "shape:"),
]


@pytest.mark.parametrize(("change", "check"), [(c, k) for _, c, k in DOC_FAILURES], ids=[n for n, _, _ in DOC_FAILURES])
def test_the_documented_failures_fail_where_the_page_says(change: Callable[[dict[str, Any]], None], check: str) -> None:
    assert _doc_failure(change).startswith(check)


def test_the_documented_proof_fails_against_another_chain() -> None:
    proof, _, validators = _doc_example()
    with pytest.raises(ProofInvalid, match="^chain id: "):
        verify_proof(proof, "acme-orders", validators)


def test_the_documented_proof_fails_against_a_genesis_of_the_five() -> None:
    proof, chain_id, validators = _doc_example()
    five = validators + [bytes.fromhex(proof["validator_changes"][0]["validators"][4])]
    assert _doc_failure(lambda p: None, five).startswith(STEP + "header.validators_hash is not the hash")


def test_the_validators_hash_vectors_of_encoding_md_are_those_of_the_example() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "encoding.md").read_text()
    proof, _, validators = _doc_example()
    five = validators + [bytes.fromhex(proof["validator_changes"][0]["validators"][4])]
    for keys in (validators, five):
        encoded = pack(keys)
        assert f"({len(encoded)} bytes)" in page and f"validators_hash         = {validators_hash(tuple(keys)).hex()}" in page
        assert all(k.hex() in page for k in keys)
    for block_hash in (proof["commit"]["block_hash"], proof["validator_changes"][0]["commit"]["block_hash"]):
        assert f"hashes to `{block_hash}`" in page


# ---- the certificate verifier that proofs and catch-up share --------------------------------


def test_a_certificate_counts_distinct_valid_seals_and_names_its_first_fault() -> None:
    block_hash = hashlib.sha256(b"block").digest()
    members = [bytes(k.verify_key) for k in VALIDATOR_KEYS]
    good = [_seal(k, block_hash) for k in VALIDATOR_KEYS[:3]]
    assert verify_certificate(block_hash, good, members) == Sealed(3, 3, None)
    stranger, forged = _seal(STRANGER, block_hash), (members[3], good[0][1])
    sealed = verify_certificate(block_hash, [good[0], stranger, good[0], forged, *good[1:]], members)
    assert sealed.quorate and sealed.sealed == 3  # what catch-up needs: a quorum, whatever else is there
    assert sealed.fault == f"signature 1 is by {stranger[0].hex()}, not a validator of that height"  # a proof refuses it
    assert not verify_certificate(block_hash, [good[0], good[0], good[1]], members).quorate
