"""Transactions: encoding, hash, signing bytes and refusals (client protocol, section 2)."""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey, VerifyKey

from node.chain.canonical import CodecError
from node.chain.tx import Transaction, TxError, decode_tx, sign_tx, tx_hash_of

CHAIN = "test-chain"
KEY = SigningKey(bytes(range(32)))
SENDER = bytes(KEY.verify_key)
PREFIX = b"alliance-tx-v1\x00"


def body(nonce: int = 7, args: dict[str, Any] | None = None, **changes: Any) -> list[Any]:
    """A transaction body with its fields in order; `changes` replace fields by name."""
    fields = {"version": 1, "chain_id": CHAIN, "sender": SENDER, "nonce": nonce,
              "family": "kv", "op": "put", "args": {"key": "k", "value": b"v"} if args is None else args}
    fields.update(changes)
    return list(fields.values())


def encode(fields: list[Any]) -> bytes:
    """Plain msgpack, exactly as the spec writes it (keys must already be in order)."""
    return msgpack.packb(fields, use_bin_type=True)


def signed_raw(fields: list[Any], key: SigningKey = KEY) -> bytes:
    signature = key.sign(PREFIX + encode(fields)).signature
    return encode(fields + [signature])


def reason(raw: bytes) -> str:
    with pytest.raises(TxError) as info:
        decode_tx(raw)
    return info.value.reason


# --- round trip, hash, signature -----------------------------------------------


def test_sign_then_decode_round_trip() -> None:
    args = {"key": "greeting", "value": b"\x00hello"}
    tx = sign_tx(KEY, CHAIN, "kv", "put", args, nonce=2**64 - 1)
    again = decode_tx(tx.raw)
    assert again == tx
    assert (tx.chain_id, tx.sender, tx.nonce, tx.family, tx.op, tx.args) == (
        CHAIN, SENDER, 2**64 - 1, "kv", "put", args)
    assert len(tx.signature) == 64


def test_encoding_hash_and_signing_bytes_match_an_independent_computation() -> None:
    args = {"value": b"v", "key": "k", "Zeta": [1, None, {"b": True, "a": -1}]}
    tx = sign_tx(KEY, CHAIN, "kv", "put", args, nonce=12345)
    sorted_args = {"Zeta": [1, None, {"a": -1, "b": True}], "key": "k", "value": b"v"}
    packed_body = msgpack.packb([1, CHAIN, SENDER, 12345, "kv", "put", sorted_args], use_bin_type=True)
    signing_bytes = b"alliance-tx-v1\x00" + packed_body
    assert tx.signing_bytes == signing_bytes
    assert tx.hash == hashlib.sha256(signing_bytes).digest()
    assert tx.raw == msgpack.packb(
        [1, CHAIN, SENDER, 12345, "kv", "put", sorted_args, tx.signature], use_bin_type=True)
    VerifyKey(SENDER).verify(signing_bytes, tx.signature)  # raises if not a valid signature
    assert tx.verify_signature()


def test_hand_built_transaction_decodes_and_verifies() -> None:
    raw = signed_raw(body())
    tx = decode_tx(raw)
    assert tx.verify_signature()
    assert tx.hash == hashlib.sha256(PREFIX + encode(body())).digest()
    assert tx_hash_of(raw) == tx.hash


@settings(max_examples=50)
@given(
    nonce=st.integers(0, 2**64 - 1),
    key=st.text(min_size=1, max_size=20),
    value=st.binary(max_size=300),
    chain=st.text(max_size=20),
)
def test_tx_hash_of_equals_decoded_hash(nonce: int, key: str, value: bytes, chain: str) -> None:
    tx = sign_tx(KEY, chain, "kv", "put", {"key": key, "value": value}, nonce)
    assert tx_hash_of(tx.raw) == tx.hash
    assert tx.hash == hashlib.sha256(tx.signing_bytes).digest()
    assert tx.verify_signature()


def test_signature_over_another_body_fails() -> None:
    signature = KEY.sign(PREFIX + encode(body(nonce=1))).signature
    tx = decode_tx(encode(body(nonce=2) + [signature]))
    assert not tx.verify_signature()


def test_signature_by_another_key_fails() -> None:
    other = SigningKey(bytes(32))
    tx = decode_tx(signed_raw(body(), key=other))  # sender field still says KEY
    assert not tx.verify_signature()


def test_signature_without_the_domain_prefix_fails() -> None:
    signature = KEY.sign(encode(body())).signature
    assert not decode_tx(encode(body() + [signature])).verify_signature()


def test_flipped_signature_bit_fails_and_keeps_the_hash() -> None:
    good = decode_tx(signed_raw(body()))
    bad_signature = bytes([good.signature[0] ^ 1]) + good.signature[1:]
    bad = decode_tx(encode(body() + [bad_signature]))
    assert not bad.verify_signature()
    assert bad.hash == good.hash  # the hash covers the body, not the signature


@settings(max_examples=100)
@given(sender=st.binary(min_size=32, max_size=32), signature=st.binary(min_size=64, max_size=64))
def test_verify_signature_is_false_never_an_exception_for_random_keys(sender: bytes, signature: bytes) -> None:
    tx = decode_tx(encode(body(sender=sender) + [signature]))
    assert tx.verify_signature() is False


# --- refusals -------------------------------------------------------------------


SIG = bytes(64)


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param(body(), id="7-elements"),
        pytest.param(body() + [SIG, SIG], id="9-elements"),
        pytest.param([], id="empty-array"),
        pytest.param({"version": 1}, id="a-map"),
        pytest.param(b"tx", id="bin"),
        pytest.param(body(version=2) + [SIG], id="version-2"),
        pytest.param(body(version=0) + [SIG], id="version-0"),
        pytest.param(body(version=True) + [SIG], id="version-true"),
        pytest.param(body(version="1") + [SIG], id="version-str"),
        pytest.param(body(chain_id=b"test-chain") + [SIG], id="chain-id-bin"),
        pytest.param(body(sender=SENDER[:31]) + [SIG], id="sender-31"),
        pytest.param(body(sender=SENDER + b"\x00") + [SIG], id="sender-33"),
        pytest.param(body(sender=SENDER.hex()) + [SIG], id="sender-hex-str"),
        pytest.param(body(nonce=-1) + [SIG], id="nonce-minus-1"),
        pytest.param(body(nonce=-(2**63)) + [SIG], id="nonce-int64-min"),
        pytest.param(body(nonce=True) + [SIG], id="nonce-bool"),
        pytest.param(body(nonce=None) + [SIG], id="nonce-nil"),
        pytest.param(body(family=None) + [SIG], id="family-nil"),
        pytest.param(body(op=1) + [SIG], id="op-int"),
        pytest.param(body(args=[1]) + [SIG], id="args-array"),
        pytest.param(body(args="key=k") + [SIG], id="args-str"),
        pytest.param(body(args={"key": "k", "value": 1.5}) + [SIG], id="float-in-args"),
        pytest.param(body(args={"key": "k", "value": [0.5]}) + [SIG], id="nested-float-in-args"),
        pytest.param(body() + [SIG[:63]], id="signature-63"),
        pytest.param(body() + [SIG + b"\x00"], id="signature-65"),
        pytest.param(body() + ["x" * 64], id="signature-str"),
    ],
)
def test_malformed_shapes(fields: Any) -> None:
    assert reason(encode(fields)) == "malformed"


def test_non_string_key_in_args_is_malformed() -> None:
    assert reason(encode(body(args={1: "x"}) + [SIG])) == "malformed"


def test_nonce_2_to_the_64_cannot_be_encoded() -> None:
    # No MessagePack form holds 2**64; the largest uint64 is the largest nonce.
    with pytest.raises(OverflowError):
        encode(body(nonce=2**64) + [SIG])
    with pytest.raises((TxError, CodecError)):
        sign_tx(KEY, CHAIN, "kv", "put", {"key": "k", "value": b""}, nonce=2**64)
    assert decode_tx(encode(body(nonce=2**64 - 1) + [SIG])).nonce == 2**64 - 1


def test_unsorted_args_keys_are_not_canonical() -> None:
    raw = encode(body(args={"value": b"v", "key": "k"}) + [SIG])
    assert reason(raw) == "not_canonical"


def test_longer_headers_are_not_canonical() -> None:
    canonical = encode(body() + [SIG])
    assert reason(b"\xdc\x00\x08" + canonical[1:]) == "not_canonical"  # array 16 for 8 elements
    str8_chain = canonical.replace(b"\xaatest-chain", b"\xd9\x0atest-chain", 1)
    assert str8_chain != canonical
    assert reason(str8_chain) == "not_canonical"


def test_non_shortest_nonce_is_not_canonical() -> None:
    canonical = encode(body(nonce=5) + [SIG])
    assert b"\xa2kv" in canonical
    # nonce 5 is the fixint 0x05 right after the 32-byte sender.
    at = canonical.index(SENDER) + 32
    assert canonical[at] == 5
    raw = canonical[:at] + b"\xcf" + (5).to_bytes(8, "big") + canonical[at + 1 :]
    assert reason(raw) == "not_canonical"


def size_to(total: int) -> bytes:
    """A signed kv put whose encoding is exactly `total` bytes (for totals above a few hundred)."""
    base = len(signed_raw(body(args={"key": "k", "value": bytes(1000)})))
    value_len = 1000 + total - base
    assert 256 <= value_len < 65536  # stays bin 16, so the header size does not change
    raw = signed_raw(body(args={"key": "k", "value": bytes(value_len)}))
    assert len(raw) == total
    return raw


def test_64_kib_is_accepted_and_one_byte_more_is_oversize() -> None:
    assert decode_tx(size_to(64 * 1024)).verify_signature()
    assert reason(size_to(64 * 1024 + 1)) == "oversize"


def test_oversize_is_reported_before_parsing() -> None:
    assert reason(b"\xc1" * (64 * 1024 + 1)) == "oversize"


# --- any bytes ------------------------------------------------------------------


def only_tx_error(raw: bytes) -> None:
    try:
        tx = decode_tx(raw)
    except TxError as exc:
        assert exc.reason in ("malformed", "not_canonical", "oversize")
    else:
        assert isinstance(tx, Transaction)
        assert tx.raw == raw and tx_hash_of(raw) == tx.hash


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_tx_error(raw: bytes) -> None:
    only_tx_error(raw)


@settings(max_examples=500)
@given(st.data())
def test_mutated_transactions_raise_only_tx_error(data: st.DataObject) -> None:
    raw = bytearray(signed_raw(body(args={"key": "k", "n": [1, {"x": None}], "value": b"v"})))
    assert decode_tx(bytes(raw)).verify_signature()
    for _ in range(data.draw(st.integers(1, 3))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    only_tx_error(bytes(raw))
