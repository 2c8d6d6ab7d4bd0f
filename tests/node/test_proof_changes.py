"""Transaction proofs across validator-set changes: a chain whose validators governance changes
(4 validators, a 5th added, one removed, a key replaced, a client added), proofs of transactions
before, at and after every activation checked with only the genesis, and every step of
`validator_changes` tampered, dropped, reordered or duplicated."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from consensus.quorum import quorum
from node.api.lookup import build_proof
from node.chain.genesis import Genesis
from node.chain.ledger import Ledger
from node.chain.membership import Member, validators_hash
from node.chain.proof import ProofInvalid, VerifiedProof, verify_proof
from node.chain.proposal import build_block
from node.chain.tx import Transaction, sign_tx
from storage.chain import ChainStore
from storage.memory import MemoryStore
from tests.node.proof_example import hex_locations

CHAIN_ID = "proof-changes"
KEYS = [SigningKey(bytes([i + 1]) * 32) for i in range(5)]
NEW_KEY = SigningKey(bytes([9]) * 32)  # replaces validator 1's key
ADMIN = SigningKey(b"a" * 32)
CLIENT = SigningKey(b"c" * 32)
LATE_CLIENT = SigningKey(b"d" * 32)
SIGNING_KEYS = {bytes(k.verify_key): k for k in (*KEYS, NEW_KEY)}


def _pub(key: SigningKey) -> bytes:
    return bytes(key.verify_key)


def _validator(i: int) -> Member:
    return Member(f"v{i}", _pub(KEYS[i]), f"127.0.0.1:{26701 + 10 * i}")


GENESIS = Genesis(
    chain_id=CHAIN_ID,
    genesis_time_ms=1_700_000_000_000,
    validators=tuple(_validator(i) for i in range(4)),
    clients=(Member("client", _pub(CLIENT)),),
    admins=(Member("admin", _pub(ADMIN)),),
    admin_threshold=1,
)


def _change(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": kind, **fields}


# Proposals pass in the block that carries them (one admin, threshold 1) and take effect two blocks on.
GOVERNANCE = {
    1: _change("add_validator", name="v4", pubkey=_pub(KEYS[4]), address="127.0.0.1:26741"),  # in force from 3
    3: _change("remove_validator", pubkey=_pub(KEYS[0])),  # from 5
    5: _change("add_client", name="late", pubkey=_pub(LATE_CLIENT)),  # from 7: the validators stay
    7: _change("replace_key", old=_pub(KEYS[1]), new=_pub(NEW_KEY)),  # from 9
}
HEIGHTS = 11
STEPS_AT = {h: sum(1 for a in (3, 5, 9) if a <= h) for h in range(1, HEIGHTS + 1)}
VALIDATORS_AT = {
    **{h: [_pub(k) for k in KEYS[:4]] for h in (1, 2)},
    **{h: [_pub(k) for k in KEYS] for h in (3, 4)},
    **{h: [_pub(k) for k in KEYS[1:]] for h in range(5, 9)},
    **{h: [_pub(NEW_KEY), *(_pub(k) for k in KEYS[2:])] for h in range(9, HEIGHTS + 1)},
}


def _txs(height: int, nonce: Iterator[int]) -> list[Transaction]:
    txs = [sign_tx(CLIENT, CHAIN_ID, "kv", "put", {"key": f"k{height}-{i}", "value": b"v"}, next(nonce))
           for i in range(1 + height % 3)]
    if height in GOVERNANCE:
        txs.insert(height % 2, sign_tx(ADMIN, CHAIN_ID, "gov", "propose", {"change": GOVERNANCE[height]}, next(nonce)))
    return txs


def seal(key: SigningKey, block_hash: bytes) -> tuple[bytes, bytes]:
    return _pub(key), key.sign(b"alliance-commit-v1\x00" + block_hash).signature


def _build_chain() -> tuple[Ledger, dict[int, list[Transaction]]]:
    """HEIGHTS blocks, each certified by the last quorum of its own validators (so that a removed first
    validator is never what makes a certificate fail)."""
    ledger = Ledger(ChainStore(MemoryStore()), GENESIS)
    nonce, blocks = iter(range(10**6)), {}
    for height in range(1, HEIGHTS + 1):
        candidate = build_block(ledger, _txs(height, nonce), _pub(KEYS[2]), GENESIS.genesis_time_ms + 1000 * height)
        assert all(r.code == 0 for r in candidate.execution.receipts), candidate.execution.receipts
        validators = ledger.members(height).validator_keys
        signers = validators[len(validators) - quorum(len(validators)):]
        certificate = tuple(seal(SIGNING_KEYS[v], candidate.block_hash) for v in signers)
        ledger.commit(candidate.block, candidate.txs, candidate.execution, certificate)
        blocks[height] = candidate.txs
    return ledger, blocks


LEDGER, BLOCKS = _build_chain()


def proof_of(height: int, index: int = 0) -> dict[str, Any]:
    proof = build_proof(LEDGER, BLOCKS[height][index].hash)
    assert proof is not None
    received: dict[str, Any] = json.loads(json.dumps(proof))
    return received


def verify(proof: Any, validators: list[bytes] | None = None) -> VerifiedProof:
    return verify_proof(proof, CHAIN_ID, GENESIS.validator_keys if validators is None else validators)


# ---- the chain is what the tests assume -------------------------------------------------------


def test_the_validators_change_where_governance_says() -> None:
    for height in range(1, HEIGHTS + 1):
        block = LEDGER.block(height)
        assert block is not None
        assert list(LEDGER.members(height).validator_keys) == VALIDATORS_AT[height], height
        assert block.header.validators_hash == validators_hash(tuple(VALIDATORS_AT[height]))
    assert _pub(LATE_CLIENT) in LEDGER.members(7).authorised_senders
    assert _pub(LATE_CLIENT) not in LEDGER.members(6).authorised_senders


# ---- valid proofs -----------------------------------------------------------------------------


@pytest.mark.parametrize("height", range(1, HEIGHTS + 1))
def test_every_transaction_of_every_height_verifies_against_the_genesis(height: int) -> None:
    for index, tx in enumerate(BLOCKS[height]):
        proof = proof_of(height, index)
        verified = verify(proof)
        assert (verified.tx, verified.height, verified.index) == (tx, height, index)
        assert list(verified.validators) == VALIDATORS_AT[height]
        assert verified.validator_changes == len(proof["validator_changes"]) == STEPS_AT[height]
        assert verified.quorum == quorum(len(VALIDATORS_AT[height]))


def test_each_step_is_the_certified_last_block_of_the_old_set() -> None:
    steps = proof_of(HEIGHTS)["validator_changes"]
    assert [s["header"]["height"] for s in steps] == [2, 4, 8]  # activations 3, 5 and 9; not 7 (a client)
    for step in steps:
        height = step["header"]["height"]
        assert step["validators"] == [v.hex() for v in VALIDATORS_AT[height + 1]]
        certificate = LEDGER.certificate(height)
        assert certificate is not None
        assert step["commit"]["signatures"] == [{"validator": v.hex(), "signature": s.hex()} for v, s in certificate]
        assert step["header"]["next_validators_hash"] != step["header"]["validators_hash"]


def test_a_proof_carries_only_the_changes_up_to_its_block() -> None:
    assert proof_of(2)["validator_changes"] == []
    assert proof_of(4)["validator_changes"] == proof_of(HEIGHTS)["validator_changes"][:1]
    assert proof_of(8)["validator_changes"] == proof_of(HEIGHTS)["validator_changes"][:2]


# ---- tampered steps ---------------------------------------------------------------------------

BASE = HEIGHTS  # a proof with three steps
STEP_REASON = r"^validator change: validator_changes\[{i}\] \(block {h}\): "


def _step(proof: dict[str, Any], i: int) -> dict[str, Any]:
    step: dict[str, Any] = proof["validator_changes"][i]
    return step


def _flip(text: str, at: int = -1) -> str:
    at %= len(text)
    return text[:at] + ("1" if text[at] == "0" else "0") + text[at + 1:]


def _reseal(proof: dict[str, Any], i: int, keys: list[bytes]) -> None:
    """Step i's certificate replaced by valid seals of `keys` over its block hash."""
    block_hash = bytes.fromhex(_step(proof, i)["commit"]["block_hash"])
    _step(proof, i)["commit"]["signatures"] = [
        {"validator": v.hex(), "signature": s.hex()} for v, s in (seal(SIGNING_KEYS[k], block_hash) for k in keys)]


Change = Callable[[dict[str, Any]], None]


def _header_field(i: int, name: str) -> Change:
    def change(proof: dict[str, Any]) -> None:
        header = _step(proof, i)["header"]
        header[name] = header[name] + 1 if isinstance(header[name], int) else _flip(header[name])

    return change


def _commit_field(i: int, name: str, value: Callable[[Any], Any]) -> Change:
    return lambda proof: _step(proof, i)["commit"].__setitem__(name, value(_step(proof, i)["commit"][name]))


def _validators(i: int, value: Callable[[list[str]], list[str]]) -> Change:
    return lambda proof: _step(proof, i).__setitem__("validators", value(_step(proof, i)["validators"]))


def _steps(value: Callable[[list[Any]], list[Any]]) -> Change:
    return lambda proof: proof.__setitem__("validator_changes", value(proof["validator_changes"]))


_HEADER_INTS = ("height", "time", "tx_count")
_HEADER_HASHES = ("prev_hash", "proposer", "tx_root", "receipt_root", "state_root", "validators_hash",
                  "next_validators_hash")
STEP_HEIGHTS = (2, 4, 8)


def _per_step(i: int) -> list[tuple[str, Change, str]]:
    at = STEP_REASON.format(i=i, h=STEP_HEIGHTS[i])
    # A step's height is checked first against its neighbours; + 1 keeps it within them.
    cases: list[tuple[str, Change, str]] = [
        *[(f"step {i} header.{f}", _header_field(i, f), at + "the header hashes to ")
          for f in _HEADER_INTS[1:] + _HEADER_HASHES],
        (f"step {i} header.height", _header_field(i, "height"),
         STEP_REASON.format(i=i, h=STEP_HEIGHTS[i] + 1) + "the header hashes to "),
        (f"step {i} header.chain_id", lambda p: _step(p, i)["header"].__setitem__("chain_id", "other"),
         at + "header.chain_id is 'other', not the genesis chain id 'proof-changes'$"),
        (f"step {i} header.version", lambda p: _step(p, i)["header"].__setitem__("version", 2),
         rf"^shape: validator_changes\[{i}\].header.version must be 4$"),
        (f"step {i} commit.block_hash", _commit_field(i, "block_hash", _flip), at + "the header hashes to "),
        (f"step {i} commit.height", _commit_field(i, "height", lambda h: h + 1),
         at + rf"commit.height {STEP_HEIGHTS[i] + 1} is not header.height {STEP_HEIGHTS[i]}$"),
        (f"step {i} a signature byte", _commit_field(i, "signatures", lambda s: [
            *s[:-1], {**s[-1], "signature": _flip(s[-1]["signature"])}]), at + "certificate: signature .* does not verify$"),
        (f"step {i} a signature dropped", _commit_field(i, "signatures", lambda s: s[1:]),
         at + "certificate: .* signatures, below the quorum of "),
        (f"step {i} a signature twice", _commit_field(i, "signatures", lambda s: [*s, s[0]]),
         at + "certificate: validator [0-9a-f]{64} signs more than once$"),
        (f"step {i} a validator key changed", _validators(i, lambda v: [_flip(v[0]), *v[1:]]),
         at + "header.next_validators_hash is not the hash of its validators$"),
        (f"step {i} a validator added", _validators(i, lambda v: [*v, _pub(ADMIN).hex()]),
         at + "header.next_validators_hash is not the hash of its validators$"),
        (f"step {i} a validator dropped", _validators(i, lambda v: v[:-1]),
         at + "header.next_validators_hash is not the hash of its validators$"),
        (f"step {i} validators reordered", _validators(i, lambda v: v[::-1]),
         at + "header.next_validators_hash is not the hash of its validators$"),
        (f"step {i} validators empty", _validators(i, lambda v: []), at + "validators must list at least one key"),
        (f"step {i} a validator twice", _validators(i, lambda v: [*v, v[0]]), at + "validators must list at least "),
        (f"step {i} an extra key", lambda p: _step(p, i).__setitem__("note", ""),
         rf"^shape: validator_changes\[{i}\] has the unknown key 'note'$"),
        (f"step {i} no validators", lambda p: _step(p, i).pop("validators"),
         rf"^shape: validator_changes\[{i}\] lacks the key 'validators'$"),
    ]
    return cases


def _dropped(i: int) -> Change:
    return _steps(lambda s: s[:i] + s[i + 1:])


TAMPERINGS: list[tuple[str, Change, str]] = [
    *[case for i in range(3) for case in _per_step(i)],
    ("first step dropped", _dropped(0), STEP_REASON.format(i=0, h=4) + "header.validators_hash is not the hash of"),
    ("middle step dropped", _dropped(1), STEP_REASON.format(i=1, h=8) + "header.validators_hash is not the hash of"),
    ("last step dropped", _dropped(2), r"^validators: header.validators_hash is not the hash of the 4 validators in "
     r"force after 2 validator changes"),
    ("every step dropped", _steps(lambda s: []), r"^validators: "),
    ("steps reordered", _steps(lambda s: [s[1], s[0], s[2]]),
     STEP_REASON.format(i=0, h=4) + r"header.validators_hash is not the hash of the validators in force"),
    ("last steps swapped", _steps(lambda s: [s[0], s[2], s[1]]),
     STEP_REASON.format(i=1, h=8) + r"header.validators_hash is not the hash of the validators in force"),
    ("a step twice", _steps(lambda s: [s[0], s[0], *s[1:]]), STEP_REASON.format(i=1, h=2) + "its height must be above"),
    ("steps as an object", lambda p: p.__setitem__("validator_changes", {}), r"^shape: validator_changes must be an array$"),
    ("step 0 certified by the new set", lambda p: _reseal(p, 0, VALIDATORS_AT[3][1:]),
     STEP_REASON.format(i=0, h=2) + "certificate: signature 3 is by [0-9a-f]{64}, not a validator of that height$"),
    ("step 2 certified by the new key", lambda p: _reseal(p, 2, VALIDATORS_AT[9][:3]),
     STEP_REASON.format(i=2, h=8) + "certificate: signature 0 is by [0-9a-f]{64}, not a validator of that height$"),
    ("the block certified by the old set", lambda p: p["commit"].__setitem__("signatures", [
        {"validator": v.hex(), "signature": s.hex()}
        for v, s in (seal(SIGNING_KEYS[k], bytes.fromhex(p["commit"]["block_hash"])) for k in VALIDATORS_AT[8])]),
     r"^certificate: signature 0 is by [0-9a-f]{64}, not a validator of that height$"),
    ("the block's validators_hash", lambda p: p["header"].__setitem__("validators_hash", _flip(
        p["header"]["validators_hash"])), r"^block hash: "),
]


@pytest.mark.parametrize(("change", "reason"), [(c, r) for _, c, r in TAMPERINGS], ids=[n for n, _, _ in TAMPERINGS])
def test_a_tampered_step_fails_with_its_reason(change: Change, reason: str) -> None:
    proof = proof_of(BASE)
    verify(proof)
    change(proof)
    with pytest.raises(ProofInvalid, match=reason):
        verify(proof)


def test_a_step_from_after_the_block_is_refused() -> None:
    proof = proof_of(4)
    proof["validator_changes"] = proof_of(BASE)["validator_changes"][:2]
    with pytest.raises(ProofInvalid, match=STEP_REASON.format(i=1, h=4) + r"its height must be above 2 .* and below "
                       r"4 \(the proof's block\)$"):
        verify(proof)


def test_a_block_that_changes_nothing_is_no_step() -> None:
    proof = proof_of(4)
    unchanged = {"header": proof_of(1)["header"], "commit": proof_of(1)["commit"],
                 "validators": [v.hex() for v in VALIDATORS_AT[1]]}
    proof["validator_changes"].insert(0, unchanged)
    with pytest.raises(ProofInvalid, match=STEP_REASON.format(i=0, h=1) + "the validators do not change after "
                       "this block$"):
        verify(proof)


def test_a_proof_without_its_steps_fails_at_the_validators() -> None:
    proof = proof_of(3)
    proof["validator_changes"] = []
    with pytest.raises(ProofInvalid, match=r"^validators: .* of the 4 validators in force after 0 validator changes"):
        verify(proof)


@pytest.mark.parametrize("validators", [
    [_pub(k) for k in KEYS[1:]],  # the set of height 5, not the genesis one
    [_pub(k) for k in KEYS],  # a larger set
    [_pub(k) for k in KEYS[:4]][::-1],  # the genesis keys in another order
], ids=["a later set", "a larger set", "reordered"])
def test_a_wrong_genesis_proves_nothing(validators: list[bytes]) -> None:
    with pytest.raises(ProofInvalid, match=STEP_REASON.format(i=0, h=2) + "header.validators_hash is not the hash of "
                       "the validators in force"):
        verify(proof_of(BASE), validators)


def test_a_wrong_genesis_fails_even_without_steps() -> None:
    with pytest.raises(ProofInvalid, match=r"^validators: "):
        verify(proof_of(1), [_pub(k) for k in KEYS[1:]])


# ---- any one changed hex character ---------------------------------------------------------------


SAMPLE_PROOFS = [proof_of(BASE), proof_of(3, 1), proof_of(9), proof_of(5, 1)]
STEP_LOCATIONS = [(i, loc) for i, p in enumerate(SAMPLE_PROOFS) for loc in hex_locations(p)
                  if loc[0] == "validator_changes"]


def testhex_locations_cover_every_binary_field_of_the_steps() -> None:
    # per step: 7 header hashes, the block hash, 2 x its seals, its validators
    per_step = [7 + 1 + 2 * 3 + 5, 7 + 1 + 2 * 4 + 4, 7 + 1 + 2 * 3 + 4]
    assert sum(1 for i, _ in STEP_LOCATIONS if i == 0) == sum(per_step)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_changing_any_hex_character_of_any_step_breaks_the_proof(data: st.DataObject) -> None:
    sample, path = data.draw(st.sampled_from(STEP_LOCATIONS))
    proof = copy.deepcopy(SAMPLE_PROOFS[sample])
    parent = proof
    for part in path[:-1]:
        parent = parent[part]
    text = parent[path[-1]]
    at = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.sampled_from([c for c in "0123456789abcdefABCDEF" if c != text[at]]))
    parent[path[-1]] = text[:at] + replacement + text[at + 1:]
    with pytest.raises(ProofInvalid):
        verify(proof)
