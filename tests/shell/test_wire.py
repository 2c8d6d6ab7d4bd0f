"""The peer frames: their bytes as docs/peer-protocol.md gives them, round trips, and malformed input."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.messages import Commit, Prepare, Signed, encode_signed
from node.p2p.wire import (
    BLOCKS, CONSENSUS, FOUND_TXS, GET_BLOCKS, GET_TXS, GET_TXS_HASHES_MAX, STATUS, TXS,
    Blocks, Consensus, FoundTxs, FrameError, GetBlocks, GetTxs, Message, Status, Txs, decode, encode,
)

SIGNED = Signed(b"s" * 32, Prepare(3, 1, b"h" * 32), b"g" * 64)


def _packed(kind: int, *fields: Any) -> bytes:
    """How frames were written before they were typed: [kind, *fields], MessagePack with bin types."""
    return msgpack.packb([kind, *fields], use_bin_type=True)  # type: ignore[no-any-return]


# ---- the bytes --------------------------------------------------------------------------------


@pytest.mark.parametrize(("message", "expected"), [
    (Status(7), bytes.fromhex("920007")),
    (Status(300), bytes.fromhex("9200cd012c")),
    (GetBlocks(1, 64), bytes.fromhex("93030140")),
    (Txs((b"ab",)), bytes.fromhex("920291c4026162")),
    (Txs(()), bytes.fromhex("920290")),
    (Blocks(((b"b", b"c"),)), bytes.fromhex("92049192c40162c40163")),
    (GetTxs((b"\x01" * 32,)), bytes.fromhex("920591c420" + "01" * 32)),
    (FoundTxs((b"t",)), bytes.fromhex("920691c40174")),
])
def test_frames_have_the_documented_bytes(message: Message, expected: bytes) -> None:
    assert encode(message) == expected
    assert decode(expected) == message


def test_a_consensus_frame_carries_the_encoded_signed_message() -> None:
    inner = encode_signed(SIGNED)
    assert encode(Consensus(SIGNED)) == _packed(CONSENSUS, inner)
    assert len(inner) < 256 and encode(Consensus(SIGNED)) == bytes.fromhex("9201c4") + bytes([len(inner)]) + inner
    assert decode(_packed(CONSENSUS, inner)) == Consensus(SIGNED)


# ---- round trips ------------------------------------------------------------------------------

_ints = st.integers(-(2**63), 2**64 - 1)
_uints = st.integers(0, 2**63 - 1)
_raws = st.lists(st.binary(max_size=40), max_size=5).map(tuple)
_signed = st.builds(
    Signed,
    st.binary(min_size=32, max_size=32),
    st.builds(Prepare, _uints, _uints, st.binary(min_size=32, max_size=32))
    | st.builds(Commit, _uints, _uints, st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64)),
    st.binary(min_size=64, max_size=64),
)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Status, _ints),
    st.builds(Consensus, _signed),
    st.builds(Txs, _raws),
    st.builds(GetBlocks, _ints, _ints),
    st.builds(Blocks, st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=40)), max_size=4).map(tuple)),
    st.builds(GetTxs, st.lists(st.binary(min_size=32, max_size=32), max_size=4).map(tuple)),
    st.builds(FoundTxs, _raws),
)


def _old_fields(message: Message) -> list[Any]:
    """The fields as the handlers used to build them, by hand."""
    if isinstance(message, Status):
        return [message.height]
    if isinstance(message, Consensus):
        return [encode_signed(message.signed)]
    if isinstance(message, GetBlocks):
        return [message.start, message.count]
    if isinstance(message, Blocks):
        return [[list(item) for item in message.blocks]]
    if isinstance(message, GetTxs):
        return [list(message.hashes)]
    return [list(message.txs)]


@settings(max_examples=300, deadline=None)
@given(messages)
def test_every_message_round_trips_in_the_bytes_it_always_had(message: Message) -> None:
    frame = encode(message)
    assert frame == _packed(message.KIND, *_old_fields(message))
    assert decode(frame) == message


# ---- malformed frames -------------------------------------------------------------------------


@pytest.mark.parametrize(("frame", "kind"), [
    (b"", None),
    (b"\xc1", None),
    (b"\x91\x00extra", None),  # trailing bytes
    (msgpack.packb(5), None),
    (msgpack.packb([]), None),
    (msgpack.packb(["status", 1]), None),
    (msgpack.packb([True, 1]), None),
    (msgpack.packb({"0": 1}), None),
    (_packed(99, []), None),  # unknown kind
    (_packed(-1, 0), None),
    (_packed(STATUS), STATUS),
    (_packed(STATUS, 1, 2), STATUS),
    (_packed(STATUS, "1"), STATUS),
    (_packed(STATUS, True), STATUS),
    (_packed(STATUS, 1.0), STATUS),
    (_packed(CONSENSUS, "x"), CONSENSUS),
    (_packed(CONSENSUS, b"junk"), CONSENSUS),
    (_packed(CONSENSUS), CONSENSUS),
    (_packed(CONSENSUS, encode_signed(SIGNED), b""), CONSENSUS),
    (_packed(TXS, b"raw"), TXS),
    (_packed(TXS, None), TXS),
    (_packed(GET_BLOCKS, 1), GET_BLOCKS),
    (_packed(GET_BLOCKS, "x", 1), GET_BLOCKS),
    (_packed(GET_BLOCKS, 1, None), GET_BLOCKS),
    (_packed(BLOCKS, [[b"b"]]), BLOCKS),
    (_packed(BLOCKS, [[b"b", b"c", b"d"]]), BLOCKS),
    (_packed(BLOCKS, [[b"b", 1]]), BLOCKS),
    (_packed(BLOCKS, [[b"b", b"c"], "x"]), BLOCKS),
    (_packed(BLOCKS, b""), BLOCKS),
    (_packed(GET_TXS, {"a": 1}), GET_TXS),
    (_packed(FOUND_TXS, 42), FOUND_TXS),
])
def test_malformed_frames_raise_frame_error_naming_the_kind(frame: bytes, kind: int | None) -> None:
    with pytest.raises(FrameError) as raised:
        decode(frame)
    assert raised.value.kind == kind


def test_entries_of_a_batch_that_are_not_bytes_are_skipped() -> None:
    assert decode(_packed(TXS, [b"a", "x", 7, None, [b"b"], b"c"])) == Txs((b"a", b"c"))
    assert decode(_packed(FOUND_TXS, [b"a", {"b": 1}])) == FoundTxs((b"a",))
    good = b"\x01" * 32
    assert decode(_packed(GET_TXS, [good, b"short", "x", good])) == GetTxs((good, good))


def test_a_request_for_transactions_is_read_up_to_its_bound() -> None:
    hashes = [i.to_bytes(32, "big") for i in range(GET_TXS_HASHES_MAX + 5)]
    decoded = decode(_packed(GET_TXS, hashes))
    assert isinstance(decoded, GetTxs) and decoded.hashes == tuple(hashes[:GET_TXS_HASHES_MAX])


_objects = st.recursive(
    st.none() | st.booleans() | _ints | st.floats() | st.binary(max_size=40) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=16,
)


def _decodes_or_refuses(frame: bytes) -> None:
    try:
        message = decode(frame)
    except FrameError:
        return
    assert decode(encode(message)) == message


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(range(-1, 8)), st.lists(_objects, max_size=3))
def test_any_fields_decode_to_a_message_or_raise_frame_error(kind: int, fields: list[Any]) -> None:
    _decodes_or_refuses(_packed(kind, *fields))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_to_a_message_or_raise_frame_error(frame: bytes) -> None:
    _decodes_or_refuses(frame)


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_a_truncated_frame_raises_frame_error(message: Message, data: st.DataObject) -> None:
    frame = encode(message)
    cut = data.draw(st.integers(0, len(frame) - 1))
    with pytest.raises(FrameError):
        decode(frame[:cut])
