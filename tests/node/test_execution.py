"""The kv and notary families (client protocol, section 2.1), state roots and RFC 6962 Merkle trees."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from nacl.signing import SigningKey

from node.chain.canonical import pack, unpack
from node.chain.execution import Execution, execute, kv_key, notary_key
from node.chain.membership import Member, Membership
from node.chain.merkle import merkle_path, merkle_root, verify_path
from node.chain.tx import Transaction, sign_tx

ALICE = SigningKey(b"a" * 32)
BOB = SigningKey(b"b" * 32)
HEIGHT, TIME = 5, 1_700_000_123_456
DIGEST = hashlib.sha256(b"document").digest()
_nonce = iter(range(10**9))
MEMBERS = Membership((Member("v", b"v" * 32, "127.0.0.1:1"),), (), (Member("alice", bytes(ALICE.verify_key)),),
                     (Member("bob", bytes(BOB.verify_key)),), 1)


def tx(signer: SigningKey, family: str, op: str, /, **args: Any) -> Transaction:
    return sign_tx(signer, "chain", family, op, args, next(_nonce))


def put(key: SigningKey, k: Any, v: Any = b"value") -> Transaction:
    return tx(key, "kv", "put", key=k, value=v)


def delete(key: SigningKey, k: Any) -> Transaction:
    return tx(key, "kv", "delete", key=k)


def record(key: SigningKey, digest: Any = DIGEST, **meta: Any) -> Transaction:
    return tx(key, "notary", "record", digest=digest, **meta)


def run(*txs: Transaction, state: dict[bytes, bytes] | None = None) -> Execution:
    return execute(list(txs), HEIGHT, TIME, (state or {}).get, MEMBERS)


def codes(*txs: Transaction, state: dict[bytes, bytes] | None = None) -> list[int]:
    return [r.code for r in run(*txs, state=state).receipts]


def owned_by(key: SigningKey, k: str = "k", value: bytes = b"old") -> dict[bytes, bytes]:
    return {kv_key(k): pack([value, bytes(key.verify_key), 1])}


# --- kv -------------------------------------------------------------------------------


def test_kv_put_sets_the_key_and_first_writer_owns_it() -> None:
    result = run(put(ALICE, "k", b"v1"))
    assert [(r.code, r.log) for r in result.receipts] == [(0, "")]
    assert result.writes == {b"kv/k": pack([b"v1", bytes(ALICE.verify_key), HEIGHT])}


def test_kv_put_by_owner_overwrites_and_keeps_owner() -> None:
    result = run(put(ALICE, "k", b"new"), state=owned_by(ALICE))
    assert result.receipts[0].code == 0
    assert unpack(result.writes[b"kv/k"]) == [b"new", bytes(ALICE.verify_key), HEIGHT]


def test_kv_put_by_someone_else_is_not_owner() -> None:
    result = run(put(BOB, "k", b"mine"), state=owned_by(ALICE))
    assert result.receipts[0].code == 2 and result.writes == {}


@pytest.mark.parametrize(
    "args",
    [
        pytest.param({"key": "", "value": b"v"}, id="empty-key"),
        pytest.param({"key": "x" * 257, "value": b"v"}, id="key-257-bytes"),
        pytest.param({"key": "é" * 129, "value": b"v"}, id="key-258-utf8-bytes"),
        pytest.param({"key": b"k", "value": b"v"}, id="bin-key"),
        pytest.param({"key": "k", "value": "v"}, id="str-value"),
        pytest.param({"key": "k", "value": bytes(16 * 1024 + 1)}, id="value-over-16k"),
        pytest.param({"key": "k"}, id="no-value"),
        pytest.param({"value": b"v"}, id="no-key"),
        pytest.param({"key": "k", "value": b"v", "extra": 1}, id="extra-arg"),
    ],
)
def test_kv_put_bad_args(args: dict[str, Any]) -> None:
    result = run(tx(ALICE, "kv", "put", **args))
    assert result.receipts[0].code == 1 and result.writes == {}


def test_kv_put_limits_are_inclusive() -> None:
    assert codes(put(ALICE, "x" * 256, bytes(16 * 1024)), put(ALICE, "é" * 128, b"")) == [0, 0]


def test_kv_delete() -> None:
    result = run(delete(ALICE, "k"), state=owned_by(ALICE))
    assert result.receipts[0].code == 0 and result.writes == {b"kv/k": None}
    assert codes(delete(ALICE, "k")) == [3]
    assert codes(delete(BOB, "k"), state=owned_by(ALICE)) == [2]
    assert codes(tx(ALICE, "kv", "delete", key=""), state=owned_by(ALICE)) == [1]
    assert codes(tx(ALICE, "kv", "delete"), state=owned_by(ALICE)) == [1]
    assert codes(tx(ALICE, "kv", "delete", key="k", value=b""), state=owned_by(ALICE)) == [1]


def test_deleted_key_can_be_claimed_by_another_writer() -> None:
    result = run(delete(ALICE, "k"), put(BOB, "k", b"bob"), state=owned_by(ALICE))
    assert [r.code for r in result.receipts] == [0, 0]
    assert unpack(result.writes[b"kv/k"])[1] == bytes(BOB.verify_key)


# --- notary ---------------------------------------------------------------------------


def test_notary_record_stores_recorder_height_time_hash_and_meta() -> None:
    t = record(ALICE, meta="contract v2")
    result = run(t)
    assert result.receipts[0].code == 0
    assert unpack(result.writes[notary_key(DIGEST)]) == [bytes(ALICE.verify_key), HEIGHT, TIME, t.hash, "contract v2"]


def test_notary_meta_is_optional_and_limited_to_1_kib() -> None:
    assert unpack(run(record(ALICE)).writes[b"nt/" + DIGEST])[4] == ""
    assert codes(record(ALICE, meta="m" * 1024)) == [0]
    assert codes(record(ALICE, meta="m" * 1025)) == [1]
    assert codes(record(ALICE, meta="é" * 513)) == [1]  # 1026 bytes


@pytest.mark.parametrize(
    "args",
    [
        pytest.param({"digest": DIGEST[:31]}, id="digest-31"),
        pytest.param({"digest": DIGEST + b"\x00"}, id="digest-33"),
        pytest.param({"digest": DIGEST.hex()}, id="digest-hex-str"),
        pytest.param({}, id="no-digest"),
        pytest.param({"digest": DIGEST, "meta": b"bin"}, id="bin-meta"),
        pytest.param({"digest": DIGEST, "meta": "x" * 1025}, id="meta-over-1k"),
        pytest.param({"digest": DIGEST, "note": "x"}, id="extra-arg"),
    ],
)
def test_notary_bad_args(args: dict[str, Any]) -> None:
    result = run(tx(ALICE, "notary", "record", **args))
    assert result.receipts[0].code == 1 and result.writes == {}


def test_notary_digest_already_recorded() -> None:
    state = {notary_key(DIGEST): pack([bytes(BOB.verify_key), 1, 0, bytes(32), ""])}
    assert codes(record(ALICE), state=state) == [4]
    assert codes(record(ALICE), record(BOB)) == [0, 4]


# --- blocks -----------------------------------------------------------------------------


def test_unknown_family_or_op_is_code_1() -> None:
    result = run(tx(ALICE, "bank", "transfer", to="bob"), tx(ALICE, "kv", "get", key="k"))
    assert [r.code for r in result.receipts] == [1, 1] and result.writes == {}


def test_failed_tx_writes_nothing_and_later_txs_see_earlier_writes() -> None:
    result = run(
        put(ALICE, "k", b"1"),        # 0: Alice owns k
        put(BOB, "k", b"2"),          # 2: Bob sees Alice's write
        put(ALICE, "k", b"3"),        # 0
        delete(BOB, "k"),             # 2
        delete(ALICE, "k"),           # 0
        delete(ALICE, "k"),           # 3: sees the delete
        put(BOB, "k", b"4"),          # 0: Bob owns it now
        record(ALICE), record(BOB),   # 0, 4
    )
    assert [r.code for r in result.receipts] == [0, 2, 0, 2, 0, 3, 0, 0, 4]
    assert unpack(result.writes[b"kv/k"]) == [b"4", bytes(BOB.verify_key), HEIGHT]
    assert unpack(result.writes[notary_key(DIGEST)])[0] == bytes(ALICE.verify_key)


def test_execution_leaves_the_read_state_untouched() -> None:
    state = owned_by(ALICE)
    run(put(ALICE, "k", b"new"), delete(ALICE, "k"), state=state)
    assert state == owned_by(ALICE)  # execution only reads


# --- Merkle trees, against an independent RFC 6962 implementation ---------------------------


def rfc_hash(data: list[bytes]) -> bytes:
    """MTH from RFC 6962, section 2.1."""
    if not data:
        return hashlib.sha256(b"").digest()
    if len(data) == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1 << ((len(data) - 1).bit_length() - 1)  # largest power of two < n
    return hashlib.sha256(b"\x01" + rfc_hash(data[:k]) + rfc_hash(data[k:])).digest()


def rfc_path(m: int, data: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) from RFC 6962, section 2.1.1."""
    if len(data) <= 1:
        return []
    k = 1 << ((len(data) - 1).bit_length() - 1)
    if m < k:
        return rfc_path(m, data[:k]) + [rfc_hash(data[k:])]
    return rfc_path(m - k, data[k:]) + [rfc_hash(data[:k])]


ITEMS = [hashlib.sha256(bytes([i])).digest() for i in range(40)]


@pytest.mark.parametrize("size", range(41))
def test_merkle_root_and_paths_match_rfc_6962(size: int) -> None:
    items = ITEMS[:size]
    root = merkle_root(items)
    assert root == rfc_hash(items)
    for index in range(size):
        path = merkle_path(items, index)
        assert path == rfc_path(index, items)
        assert verify_path(items[index], index, size, path, root)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 40])
def test_tampered_proofs_fail(size: int) -> None:
    items = ITEMS[:size]
    root = merkle_root(items)
    for index in range(size):
        path = merkle_path(items, index)
        assert not verify_path(b"\xff" * 32, index, size, path, root)
        assert not verify_path(items[index], index, size, path, bytes(32))
        assert not verify_path(items[index], index, size, path + [bytes(32)], root)
        assert not verify_path(items[index], size, size, path, root)
        assert not verify_path(items[index], -1, size, path, root)
        if index ^ 1 < size:
            assert not verify_path(items[index], index ^ 1, size, path, root)
        for i in range(len(path)):
            bad = list(path)
            bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
            assert not verify_path(items[index], index, size, bad, root)
            assert not verify_path(items[index], index, size, path[:i] + path[i + 1 :], root)


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = ITEMS[0], ITEMS[1]
    # A 64-byte "leaf" made of two child hashes must not collide with their parent.
    parent = merkle_root([a, b])
    forged = hashlib.sha256(b"\x00" + a).digest() + hashlib.sha256(b"\x00" + b).digest()
    assert merkle_root([forged]) != parent
    assert merkle_root([]) == hashlib.sha256(b"").digest()
