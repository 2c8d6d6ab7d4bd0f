"""The handshake machine, fed bytes by hand: no sockets, no trio."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import msgpack
import nacl.bindings as sodium
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from node.chain.crypto import verify
from node.p2p.framing import Deframer, frame
from node.p2p.handshake import (
    AUTH_PREFIX, HANDSHAKE_FRAME_BYTES_MAX, PROTOCOL, Channel, ChannelError, Established, Handshake,
    HandshakeRefused, Refusal, hello, transcript,
)

CHAIN = "handshake-test"
A, B = SigningKey(b"a" * 32), SigningKey(b"b" * 32)


def _pub(key: SigningKey) -> bytes:
    return bytes(key.verify_key)


def _anyone(peer: bytes) -> bool:
    return True


def _pair(a_member: Callable[[bytes], bool] = _anyone, b_member: Callable[[bytes], bool] = _anyone,
          b_chain: str = CHAIN) -> tuple[Handshake, Handshake]:
    return Handshake(CHAIN, A, a_member, initiator=True), Handshake(b_chain, B, b_member, initiator=False)


def _run(a: Handshake, b: Handshake, chunk: int = 1 << 20, cut: int = 0) -> tuple[bytes, bytes]:
    """Both sides to the end, each side's bytes delivered `chunk` bytes at a time; what each sent.

    What a sends is also split where its byte number `cut` begins.
    """
    a_sent, b_sent = a.start(), b.start()
    to_b, to_a = a_sent, b_sent
    while to_a or to_b:
        replies_a = b"".join(a.receive_data(piece) for piece in _pieces(to_a, chunk))
        offset = len(a_sent) - len(to_b)
        replies_b = b"".join(b.receive_data(piece) for piece in _pieces(to_b, chunk, cut - offset))
        a_sent, b_sent = a_sent + replies_a, b_sent + replies_b
        to_a, to_b = replies_b, replies_a
    return a_sent, b_sent


def _pieces(data: bytes, chunk: int, cut: int = 0) -> list[bytes]:
    if 0 < cut < len(data):
        return _pieces(data[:cut], chunk) + _pieces(data[cut:], chunk)
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def _established(machine: Handshake) -> Established:
    assert machine.established is not None
    return machine.established


def _refused(run: Callable[[], object], refusal: Refusal, words: str) -> None:
    with pytest.raises(HandshakeRefused, match=words) as raised:
        run()
    assert raised.value.refusal == refusal


def _frames(data: bytes) -> list[bytes]:
    deframer, frames = Deframer(), []
    deframer.receive_data(data)
    while (body := deframer.next_frame(1 << 20)) is not None:
        frames.append(body)
    return frames


# ---- a good handshake, byte by byte ----------------------------------------------------------


def test_both_sides_establish_and_learn_each_other() -> None:
    a, b = _pair()
    _run(a, b)
    assert _established(a).peer == _pub(B) and _established(b).peer == _pub(A)
    assert _established(a).rest == b"" and _established(b).rest == b""


def test_the_handshake_sends_the_documented_frames() -> None:
    a, b = _pair()
    a_sent, b_sent = _run(a, b)
    (a_hello, a_auth, a_header), (b_hello, b_auth, b_header) = _frames(a_sent), _frames(b_sent)
    assert a_sent == frame(a_hello) + frame(a_auth) + frame(a_header)
    protocol, chain, identity, kx_public = msgpack.unpackb(a_hello)
    assert (protocol, chain, identity, len(kx_public)) == (PROTOCOL, CHAIN, _pub(A), 32)
    assert a_hello == hello(CHAIN, _pub(A), kx_public)
    assert a_hello == msgpack.packb([PROTOCOL, CHAIN, _pub(A), kx_public], use_bin_type=True)
    digest = transcript(CHAIN, a_hello, b_hello)
    assert digest == hashlib.sha256(CHAIN.encode() + b"\x00" + a_hello + b_hello).digest()
    assert verify(_pub(A), AUTH_PREFIX + b"I" + digest, a_auth)
    assert verify(_pub(B), AUTH_PREFIX + b"R" + digest, b_auth)
    assert len(a_header) == len(b_header) == sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 31, 64])
def test_bytes_split_anywhere_give_the_same_handshake(chunk: int) -> None:
    a, b = _pair()
    _run(a, b, chunk=chunk)
    assert _established(a).peer == _pub(B) and _established(b).peer == _pub(A)


def test_a_split_at_every_offset_of_either_sides_bytes() -> None:
    a, b = _pair()
    a_sent, b_sent = _run(a, b)
    for cut in range(len(a_sent) + 1):
        a, b = _pair()
        _run(a, b, cut=cut)
        assert _established(b).peer == _pub(A), cut
    for cut in range(len(b_sent) + 1):
        a, b = _pair()
        _run(b, a, cut=cut)  # the responder's bytes split, the initiator receiving
        assert _established(a).peer == _pub(B), cut


def test_channels_carry_frames_both_ways() -> None:
    a, b = _pair()
    _run(a, b)
    ca, cb = _established(a).channel, _established(b).channel
    assert _frames_opened(cb, ca.seal(b"there") + ca.seal(b"")) == [b"there", b""]
    assert _frames_opened(ca, cb.seal(b"back")) == [b"back"]


def _frames_opened(channel: Channel, data: bytes) -> list[bytes]:
    return [channel.open(body) for body in _frames(data)]


def test_a_tampered_replayed_or_dropped_frame_fails_to_open() -> None:
    a, b = _pair()
    _run(a, b)
    ca, cb = _established(a).channel, _established(b).channel
    first, second = _frames(ca.seal(b"one")), _frames(ca.seal(b"two"))
    assert cb.open(first[0]) == b"one"
    with pytest.raises(ChannelError):
        cb.open(first[0])  # replayed
    with pytest.raises(ChannelError):
        cb.open(second[0][:-1] + bytes([second[0][-1] ^ 1]))
    _, dropped_then = _frames(ca.seal(b"lost")), _frames(ca.seal(b"next"))
    with pytest.raises(ChannelError):
        cb.open(dropped_then[0])


def test_bytes_after_the_stream_header_are_handed_over() -> None:
    a, b = _pair()
    to_b = a.start()
    to_a = b.start()
    to_b += a.receive_data(to_a)
    to_a = b.receive_data(to_b)
    to_b = a.receive_data(to_a)
    assert _established(a).rest == b""
    early = _established(a).channel.seal(b"first data")
    assert b.receive_data(to_b + early[:7]) == b""
    assert _established(b).rest == early[:7]


# ---- refusals -----------------------------------------------------------------------------------


def test_a_peer_on_another_chain_is_refused() -> None:
    a, b = _pair(b_chain="other-chain")
    _refused(lambda: a.receive_data(b.start()), Refusal.WRONG_CHAIN, "chain")
    _refused(lambda: b.receive_data(a.start()), Refusal.WRONG_CHAIN, "chain")


def test_a_non_member_is_refused() -> None:
    a, b = _pair(b_member=lambda peer: peer != _pub(A))
    _refused(lambda: b.receive_data(a.start()), Refusal.NOT_MEMBER, "not a member")


def test_the_initiator_reaching_the_wrong_key_refuses_it() -> None:
    a, b = _pair(a_member=lambda peer: peer == _pub(SigningKey.generate()))
    _refused(lambda: a.receive_data(b.start()), Refusal.NOT_MEMBER, "not a member")


def test_a_rewritten_kx_key_breaks_the_signature() -> None:
    a, b = _pair()
    a_hello = a.start()
    tampered = a_hello[:-1] + bytes([a_hello[-1] ^ 1])  # the hello ends with the kx public key
    b_hello, b_auth = b.start(), b.receive_data(tampered)
    a_auth = a.receive_data(b_hello)
    _refused(lambda: b.receive_data(a_auth), Refusal.BAD_SIGNATURE, "failed to prove its identity")
    _refused(lambda: a.receive_data(b_auth), Refusal.BAD_SIGNATURE, "failed to prove its identity")


def test_a_forged_signature_is_refused() -> None:
    a, b = _pair()
    to_a = b.start() + b.receive_data(a.start())
    forged = to_a[:-1] + bytes([to_a[-1] ^ 1])  # the last byte of b's signature
    _refused(lambda: a.receive_data(forged), Refusal.BAD_SIGNATURE, "failed to prove its identity")


def test_a_signature_from_another_key_is_refused() -> None:
    honest = Handshake(CHAIN, B, _anyone, initiator=False)
    kx_public, _ = sodium.crypto_kx_keypair()
    claimed = hello(CHAIN, _pub(A), kx_public)  # A's identity, without A's key
    theirs = _frames(honest.start())[0]
    honest.receive_data(frame(claimed))
    signature = SigningKey.generate().sign(AUTH_PREFIX + b"I" + transcript(CHAIN, claimed, theirs)).signature
    _refused(lambda: honest.receive_data(frame(signature)), Refusal.BAD_SIGNATURE, "failed to prove")


def test_a_member_with_a_low_order_kx_key_is_refused() -> None:
    honest = Handshake(CHAIN, B, _anyone, initiator=False)
    evil_hello = hello(CHAIN, _pub(A), bytes(32))
    theirs = _frames(honest.start())[0]
    honest.receive_data(frame(evil_hello))
    signature = A.sign(AUTH_PREFIX + b"I" + transcript(CHAIN, evil_hello, theirs)).signature
    _refused(lambda: honest.receive_data(frame(signature)), Refusal.BAD_KX_KEY, "key-exchange")


def test_a_malformed_stream_header_is_refused() -> None:
    a, b = _pair()
    to_a = b.start() + b.receive_data(a.start())
    a.receive_data(to_a)
    _refused(lambda: a.receive_data(frame(b"short")), Refusal.BAD_STREAM_HEADER, "stream header")


@pytest.mark.parametrize(("data", "refusal"), [
    (frame(b"\xc1"), Refusal.MALFORMED_HELLO),
    (frame(msgpack.packb(7)), Refusal.MALFORMED_HELLO),
    (frame(msgpack.packb([PROTOCOL, CHAIN, bytes(32)], use_bin_type=True)), Refusal.MALFORMED_HELLO),
    (frame(msgpack.packb([PROTOCOL, CHAIN, bytes(31), bytes(32)], use_bin_type=True)), Refusal.MALFORMED_HELLO),
    (frame(msgpack.packb([PROTOCOL, CHAIN, "k" * 32, bytes(32)], use_bin_type=True)), Refusal.MALFORMED_HELLO),
    (frame(msgpack.packb(["alliance-p2p-v0", CHAIN, bytes(32), bytes(32)], use_bin_type=True)),
     Refusal.WRONG_PROTOCOL),
    ((HANDSHAKE_FRAME_BYTES_MAX + 1).to_bytes(4, "big"), Refusal.FRAME_TOO_LARGE),
])
def test_a_malformed_hello_is_refused(data: bytes, refusal: Refusal) -> None:
    machine = Handshake(CHAIN, B, _anyone, initiator=False)
    machine.start()
    with pytest.raises(HandshakeRefused) as raised:
        machine.receive_data(data)
    assert raised.value.refusal == refusal


def test_a_truncated_handshake_waits_without_sending() -> None:
    a, b = _pair()
    a_hello = a.start()
    b.start()
    for cut in range(len(a_hello)):
        fresh = Handshake(CHAIN, B, _anyone, initiator=False)
        fresh.start()
        assert fresh.receive_data(a_hello[:cut]) == b"" and fresh.established is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_garbage_is_refused_or_waited_on_never_an_other_error(data: bytes) -> None:
    machine = Handshake(CHAIN, B, _anyone, initiator=False)
    machine.start()
    try:
        machine.receive_data(data)
    except HandshakeRefused:
        return
    assert machine.established is None
