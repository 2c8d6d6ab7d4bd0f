"""Canonical MessagePack (client protocol, section 2): one value, one encoding."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.chain.canonical import CodecError, pack, pack_flat, unpack

TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=12)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | TEXT
    | st.binary(max_size=40)
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(TEXT, children, max_size=5),
    max_leaves=25,
)


FLAT_VALUES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=5), max_leaves=25)


def map_keys_in_order(encoded: bytes) -> list[str]:
    """The keys of an encoded top-level map, in the order they were written."""
    pairs = msgpack.unpackb(encoded, raw=False, object_pairs_hook=list)
    return [key for key, _ in pairs]


def refused(data: bytes) -> str:
    with pytest.raises(CodecError) as info:
        unpack(data)
    return info.value.reason


# --- round trip and key order -------------------------------------------------


@given(VALUES)
def test_pack_unpack_round_trip(value: Any) -> None:
    encoded = pack(value)
    assert unpack(encoded) == value
    assert pack(unpack(encoded)) == encoded


@given(VALUES)
def test_pack_is_what_msgpack_writes_for_sorted_maps(value: Any) -> None:
    def sort(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: sort(v[k]) for k in sorted(v, key=lambda k: k.encode("utf-8"))}
        if isinstance(v, list):
            return [sort(x) for x in v]
        return v

    assert pack(value) == msgpack.packb(sort(value), use_bin_type=True)


@given(FLAT_VALUES)
def test_pack_flat_is_canonical_for_values_without_maps(value: Any) -> None:
    assert pack_flat(value) == pack(value)
    assert unpack(pack_flat(value)) == value


@given(st.dictionaries(TEXT, st.integers(0, 9), min_size=1, max_size=20))
def test_pack_sorts_map_keys_by_utf8_bytes(mapping: dict[str, int]) -> None:
    keys = map_keys_in_order(pack(mapping))
    assert keys == sorted(mapping, key=lambda k: k.encode("utf-8"))


def test_pack_sorts_mixed_case_and_non_ascii_keys() -> None:
    mapping = {"é": 1, "a": 2, "B": 3, "\U00010000": 4, "\uffff": 5, "z": 6, "": 7}
    # Bytes order: "" < "B" (0x42) < "a" (0x61) < "z" < "é" (c3 a9) < U+FFFF (ef..) < U+10000 (f0..)
    assert map_keys_in_order(pack(mapping)) == ["", "B", "a", "z", "é", "\uffff", "\U00010000"]


def test_pack_sorts_nested_maps() -> None:
    encoded = pack({"b": [{"y": 1, "x": 2}], "a": {"d": None, "c": True}})
    assert encoded == msgpack.packb(
        {"a": {"c": True, "d": None}, "b": [{"x": 2, "y": 1}]}, use_bin_type=True
    )


def test_integer_boundaries_round_trip() -> None:
    for n in (-(2**63), -33, -32, -1, 0, 127, 128, 255, 256, 2**32, 2**63, 2**64 - 1):
        assert unpack(pack(n)) == n


@pytest.mark.parametrize("value", [1.5, 2**64, -(2**63) - 1, {1: "x"}, {b"k": 1}, {"a": 0.0}, object()])
def test_pack_refuses_values_outside_the_canonical_types(value: Any) -> None:
    with pytest.raises(CodecError):
        pack(value)


# --- refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x82\xa1b\x01\xa1a\x02", id="unsorted-keys"),
        pytest.param(b"\x82\xa1a\x01\xa1B\x02", id="unsorted-case"),
        pytest.param(b"\x82\xa2\xc3\xa9\x01\xa1a\x02", id="unsorted-non-ascii"),
        pytest.param(b"\x82\xa1a\x01\xa1a\x02", id="duplicate-keys"),
        pytest.param(b"\xcc\x05", id="uint8-for-fixint"),
        pytest.param(b"\xd0\x05", id="int8-for-fixint"),
        pytest.param(b"\xcd\x00\xff", id="uint16-for-uint8"),
        pytest.param(b"\xd1\xff\xff", id="int16-for-negative-fixint"),
        pytest.param(b"\xcf" + (5).to_bytes(8, "big"), id="uint64-for-fixint"),
        pytest.param(b"\xd9\x01a", id="str8-for-short-string"),
        pytest.param(b"\xc5\x00\x01a", id="bin16-for-short-bin"),
        pytest.param(b"\xdc\x00\x01\xc0", id="array16-for-short-array"),
        pytest.param(b"\xde\x00\x00", id="map16-for-empty-map"),
    ],
)
def test_unpack_refuses_non_canonical_encodings(data: bytes) -> None:
    msgpack.unpackb(data, raw=False)  # plain MessagePack reads it; only canonical form is at stake
    assert refused(data) == "not_canonical"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xca\x3f\xc0\x00\x00", id="float32"),
        pytest.param(b"\xcb" + bytes(8), id="float64"),
        pytest.param(b"\x91\xcb" + bytes(8), id="float-in-array"),
        pytest.param(b"\xd4\x01\x00", id="fixext1"),
        pytest.param(b"\xc7\x02\x05ab", id="ext8"),
        pytest.param(b"\xd6\xff\x00\x00\x00\x00", id="timestamp-ext"),
        pytest.param(b"\xc0\xc0", id="trailing-byte"),
        pytest.param(b"\x01\x00", id="trailing-zero"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x92\x01", id="truncated-array"),
        pytest.param(b"\xa3ab", id="truncated-str"),
        pytest.param(b"\xcd\x01", id="truncated-int"),
        pytest.param(b"\xa2\xff\xfe", id="invalid-utf8"),
        pytest.param(b"\xa3\xed\xa0\x80", id="surrogate-utf8"),
        pytest.param(b"\x81\x01\x01", id="int-key"),
        pytest.param(b"\x81\xc4\x01a\x01", id="bin-key"),
        pytest.param(b"\x81\xc0\x01", id="nil-key"),
        pytest.param(b"\x81\x90\x01", id="array-key"),
        pytest.param(b"\xc1", id="never-used-byte"),
        pytest.param(b"\x91" * 40 + b"\xc0", id="too-deep"),
    ],
)
def test_unpack_refuses_malformed_input(data: bytes) -> None:
    assert refused(data) == "malformed"


def test_unpack_refuses_huge_declared_length_without_allocating() -> None:
    assert refused(b"\xdd\xff\xff\xff\xff") == "malformed"
    assert refused(b"\xc6\xff\xff\xff\xff") == "malformed"


# --- any bytes ------------------------------------------------------------------


def check_any_bytes(data: bytes) -> None:
    try:
        value = unpack(data)
    except CodecError as exc:
        assert exc.reason in ("malformed", "not_canonical")
    else:
        assert pack(value) == data


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_any_bytes_decode_to_their_own_encoding_or_codec_error(data: bytes) -> None:
    check_any_bytes(data)


@settings(max_examples=500)
@given(VALUES, st.data())
def test_mutated_encodings_decode_to_their_own_encoding_or_codec_error(value: Any, data: st.DataObject) -> None:
    encoded = bytearray(pack(value))
    position = data.draw(st.integers(0, len(encoded)))
    action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
    if action == "flip" and position < len(encoded):
        encoded[position] ^= data.draw(st.integers(1, 255))
    elif action == "insert":
        encoded[position:position] = data.draw(st.binary(min_size=1, max_size=3))
    elif action == "delete":
        del encoded[position : position + 1]
    else:
        del encoded[position:]
    check_any_bytes(bytes(encoded))
