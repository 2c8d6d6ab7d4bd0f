"""The member handshake and the encrypted session, over trio's in-memory streams."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

import msgpack
import nacl.bindings as sodium
import outcome
import pytest
import trio
import trio.testing
from nacl.signing import SigningKey

from node.p2p import transport
from node.p2p.framing import frame
from node.p2p.handshake import AUTH_PREFIX, HANDSHAKE_FRAME_BYTES_MAX, PROTOCOL, Handshake
from node.p2p.transport import FRAME_BYTES_MAX, HANDSHAKE_TIMEOUT_S, FrameReader, Session, TransportError, handshake

CHAIN = "transport-test"
# Per direction, frames 0..2 are the handshake (hello, auth, stream header); data starts at 3.
FIRST_DATA_FRAME = 3

Tamper = Callable[[int, bytes], list[bytes]]


def _pub(key: SigningKey) -> bytes:
    return bytes(key.verify_key)


def _anyone(peer: bytes) -> bool:
    return True


async def _side(
    stream: trio.abc.Stream, key: SigningKey, initiator: bool, is_member: Callable[[bytes], bool], chain: str
) -> outcome.Outcome[Session]:
    """One side of the handshake; on failure it hangs up, as PeerNetwork does."""
    result = await outcome.acapture(handshake, stream, chain, key, is_member, initiator)
    if isinstance(result, outcome.Error):
        await stream.aclose()
    return result


async def _pair(
    a_stream: trio.abc.Stream,
    b_stream: trio.abc.Stream,
    a: SigningKey,
    b: SigningKey,
    a_member: Callable[[bytes], bool] = _anyone,
    b_member: Callable[[bytes], bool] = _anyone,
    b_chain: str = CHAIN,
) -> tuple[outcome.Outcome[Session], outcome.Outcome[Session]]:
    """Runs initiator `a` and responder `b` concurrently; each side's outcome."""
    results: dict[str, outcome.Outcome[Session]] = {}

    async def run(name: str, *args: object) -> None:
        results[name] = await _side(*args)  # type: ignore[arg-type]

    with trio.fail_after(HANDSHAKE_TIMEOUT_S * 2):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "a", a_stream, a, True, a_member, CHAIN)
            nursery.start_soon(run, "b", b_stream, b, False, b_member, b_chain)
    return results["a"], results["b"]


async def _sessions(a: SigningKey, b: SigningKey) -> tuple[Session, Session]:
    left, right = trio.testing.memory_stream_pair()
    ra, rb = await _pair(left, right, a, b)
    return ra.unwrap(), rb.unwrap()


async def _relay(source: trio.abc.Stream, sink: trio.abc.Stream, tamper: Tamper) -> None:
    """Copies frames from source to sink; tamper(index, body) says what goes out instead."""
    reader = FrameReader(source)
    try:
        for index in itertools.count():
            body = await reader.read(FRAME_BYTES_MAX * 2)
            for out in tamper(index, body):
                await sink.send_all(frame(out))
    except (TransportError, trio.BrokenResourceError, trio.ClosedResourceError):
        await sink.aclose()  # either end hung up: hang up on the other
        await source.aclose()


def _untouched(index: int, body: bytes) -> list[bytes]:
    return [body]


def _flip_last_byte(at: int) -> Tamper:
    def tamper(index: int, body: bytes) -> list[bytes]:
        return [body[:-1] + bytes([body[-1] ^ 1])] if index == at else [body]

    return tamper


def _replay(at: int) -> Tamper:
    return lambda index, body: [body, body] if index == at else [body]


def _drop(at: int) -> Tamper:
    return lambda index, body: [] if index == at else [body]


async def _relayed(
    nursery: trio.Nursery, a: SigningKey, b: SigningKey, a_to_b: Tamper, b_to_a: Tamper = _untouched
) -> tuple[outcome.Outcome[Session], outcome.Outcome[Session]]:
    """a and b handshake through a relay that may rewrite, replay or drop frames."""
    a_stream, relay_a = trio.testing.memory_stream_pair()
    relay_b, b_stream = trio.testing.memory_stream_pair()
    nursery.start_soon(_relay, relay_a, relay_b, a_to_b)
    nursery.start_soon(_relay, relay_b, relay_a, b_to_a)
    return await _pair(a_stream, b_stream, a, b)


def _expect_refused(result: outcome.Outcome[Session], words: str) -> None:
    assert isinstance(result, outcome.Error), result
    with pytest.raises(TransportError, match=words):
        result.unwrap()


# ---- a good handshake and its session ---------------------------------------------------


async def test_members_handshake_and_learn_each_other() -> None:
    a, b = SigningKey.generate(), SigningKey.generate()
    sa, sb = await _sessions(a, b)
    assert sa.peer == _pub(b)
    assert sb.peer == _pub(a)


@pytest.mark.parametrize("size", [0, 1, 1024 * 1024])
async def test_payloads_round_trip_both_ways(size: int) -> None:
    sa, sb = await _sessions(SigningKey.generate(), SigningKey.generate())
    there, back = bytes(range(256)) * (size // 256) + b"x" * (size % 256), b"\x07" * size
    await sa.send(there)
    assert await sb.receive() == there
    await sb.send(back)
    assert await sa.receive() == back


async def test_many_frames_arrive_in_order() -> None:
    sa, sb = await _sessions(SigningKey.generate(), SigningKey.generate())
    payloads = [i.to_bytes(4, "big") * (i % 7) for i in range(500)]
    for payload in payloads:
        await sa.send(payload)
    assert [await sb.receive() for _ in payloads] == payloads


async def test_ciphertext_hides_the_payload() -> None:
    a_stream, relay_a = trio.testing.memory_stream_pair()
    relay_b, b_stream = trio.testing.memory_stream_pair()
    seen: list[bytes] = []

    def record(index: int, body: bytes) -> list[bytes]:
        seen.append(body)
        return [body]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_relay, relay_a, relay_b, record)
        nursery.start_soon(_relay, relay_b, relay_a, _untouched)
        ra, rb = await _pair(a_stream, b_stream, SigningKey.generate(), SigningKey.generate())
        secret = b"the secret payload " * 4
        await ra.unwrap().send(secret)
        assert await rb.unwrap().receive() == secret
        nursery.cancel_scope.cancel()
    assert len(seen) == FIRST_DATA_FRAME + 1
    assert b"the secret" not in seen[FIRST_DATA_FRAME]


# ---- refusals during the handshake ---------------------------------------------------------


async def test_non_member_is_refused_by_the_responder() -> None:
    a, b = SigningKey.generate(), SigningKey.generate()
    left, right = trio.testing.memory_stream_pair()
    ra, rb = await _pair(left, right, a, b, b_member=lambda peer: peer != _pub(a))
    _expect_refused(rb, "not a member")
    assert isinstance(ra, outcome.Error)  # the responder hung up before proving anything


async def test_peer_on_another_chain_is_refused() -> None:
    left, right = trio.testing.memory_stream_pair()
    ra, rb = await _pair(left, right, SigningKey.generate(), SigningKey.generate(), b_chain="other-chain")
    _expect_refused(ra, "chain")
    _expect_refused(rb, "chain")


async def test_initiator_reaching_the_wrong_key_refuses_it() -> None:
    a, expected, reached = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    left, right = trio.testing.memory_stream_pair()
    ra, _ = await _pair(left, right, a, reached, a_member=lambda peer: peer == _pub(expected))
    _expect_refused(ra, "not a member")


async def test_rewritten_kx_key_in_hello_fails_authentication() -> None:
    """A man in the middle who swaps the key-exchange key breaks both signatures."""
    async with trio.open_nursery() as nursery:
        ra, rb = await _relayed(nursery, SigningKey.generate(), SigningKey.generate(), _flip_last_byte(0))
        nursery.cancel_scope.cancel()
    # The hello ends with the kx public key: the last byte is part of it.
    _expect_refused(rb, "failed to prove its identity")
    assert isinstance(ra, outcome.Error)


async def test_forged_auth_signature_fails() -> None:
    async with trio.open_nursery() as nursery:
        ra, rb = await _relayed(nursery, SigningKey.generate(), SigningKey.generate(), _untouched, _flip_last_byte(1))
        nursery.cancel_scope.cancel()
    _expect_refused(ra, "failed to prove its identity")
    assert isinstance(rb, outcome.Error)


async def test_signature_from_another_key_fails() -> None:
    """A peer that claims an identity it does not hold cannot sign for it."""
    victim, impostor, honest = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    stream, raw = trio.testing.memory_stream_pair()
    kx_public, _ = sodium.crypto_kx_keypair()
    hello = msgpack.packb([PROTOCOL, CHAIN, _pub(victim), kx_public], use_bin_type=True)

    async def impostor_side() -> None:
        await raw.send_all(frame(hello))
        reader = FrameReader(raw)
        theirs = await reader.read(HANDSHAKE_FRAME_BYTES_MAX)
        transcript = hashlib.sha256(CHAIN.encode() + b"\x00" + hello + theirs).digest()
        await raw.send_all(frame(impostor.sign(AUTH_PREFIX + b"I" + transcript).signature))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(impostor_side)
        result = await _side(stream, honest, False, _anyone, CHAIN)
    _expect_refused(result, "failed to prove its identity")


@pytest.mark.parametrize(
    "hello",
    [
        b"\xc1",  # never used in msgpack
        msgpack.packb(7),
        msgpack.packb(["alliance-p2p-v0", CHAIN, bytes(32), bytes(32)], use_bin_type=True),
        msgpack.packb([PROTOCOL, CHAIN, bytes(31), bytes(32)], use_bin_type=True),
        msgpack.packb([PROTOCOL, CHAIN, "k" * 32, bytes(32)], use_bin_type=True),
        msgpack.packb([PROTOCOL, CHAIN, bytes(32)], use_bin_type=True),
    ],
)
async def test_malformed_hello_is_a_transport_error(hello: bytes) -> None:
    stream, raw = trio.testing.memory_stream_pair()
    await raw.send_all(frame(hello))
    with trio.fail_after(1):
        result = await _side(stream, SigningKey.generate(), False, _anyone, CHAIN)
    with pytest.raises(TransportError):
        result.unwrap()


async def test_peer_hanging_up_mid_handshake_is_a_transport_error() -> None:
    stream, raw = trio.testing.memory_stream_pair()
    await raw.aclose()
    with trio.fail_after(1), pytest.raises(TransportError):
        await handshake(stream, CHAIN, SigningKey.generate(), _anyone, initiator=True)


async def test_oversized_hello_is_refused_without_reading_it() -> None:
    stream, raw = trio.testing.memory_stream_pair()
    await raw.send_all((HANDSHAKE_FRAME_BYTES_MAX + 1).to_bytes(4, "big"))
    with trio.fail_after(1), pytest.raises(TransportError, match="cap"):
        await handshake(stream, CHAIN, SigningKey.generate(), _anyone, initiator=False)


async def test_member_sending_a_low_order_kx_key_gets_a_transport_error() -> None:
    """A member (say, a Byzantine validator) signs a hello whose kx key is all zeros."""
    evil, honest = SigningKey.generate(), SigningKey.generate()
    stream, raw = trio.testing.memory_stream_pair()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_evil_initiator, raw, evil, bytes(32))
        result = await _side(stream, honest, False, _anyone, CHAIN)
        nursery.cancel_scope.cancel()
    with pytest.raises(TransportError):
        result.unwrap()


async def _evil_initiator(raw: trio.abc.Stream, key: SigningKey, kx_public: bytes) -> None:
    """The first two handshake steps, signed honestly, with a chosen kx key."""
    hello = msgpack.packb([PROTOCOL, CHAIN, _pub(key), kx_public], use_bin_type=True)
    await raw.send_all(frame(hello))
    reader = FrameReader(raw)
    theirs = await reader.read(HANDSHAKE_FRAME_BYTES_MAX)
    transcript = hashlib.sha256(CHAIN.encode() + b"\x00" + hello + theirs).digest()
    await raw.send_all(frame(key.sign(AUTH_PREFIX + b"I" + transcript).signature))
    await trio.sleep_forever()


async def test_handshake_times_out_against_a_silent_peer(autojump_clock: trio.testing.MockClock) -> None:
    stream, _silent = trio.testing.memory_stream_pair()
    started = trio.current_time()
    with pytest.raises((TransportError, trio.TooSlowError)):
        await handshake(stream, CHAIN, SigningKey.generate(), _anyone, initiator=True)
    assert trio.current_time() - started == pytest.approx(HANDSHAKE_TIMEOUT_S)


async def test_handshake_times_out_against_a_peer_that_stalls_after_hello(
    autojump_clock: trio.testing.MockClock,
) -> None:
    stream, raw = trio.testing.memory_stream_pair()
    kx_public, _ = sodium.crypto_kx_keypair()
    await raw.send_all(frame(msgpack.packb([PROTOCOL, CHAIN, bytes(32), kx_public], use_bin_type=True)))
    started = trio.current_time()
    with pytest.raises((TransportError, trio.TooSlowError)):
        await handshake(stream, CHAIN, SigningKey.generate(), _anyone, initiator=False)
    assert trio.current_time() - started == pytest.approx(HANDSHAKE_TIMEOUT_S)


# ---- the session after the handshake: tampering, replay, loss ------------------------------


async def _tampered_receive(tamper: Tamper, sends: int) -> list[bytes | TransportError]:
    """a sends `sends` frames through the relay; what b gets for each, in order."""
    got: list[bytes | TransportError] = []
    async with trio.open_nursery() as nursery:
        ra, rb = await _relayed(nursery, SigningKey.generate(), SigningKey.generate(), tamper)
        sa, sb = ra.unwrap(), rb.unwrap()
        for i in range(sends):
            await sa.send(b"frame %d" % i)
        with trio.fail_after(1):
            for _ in range(sends):
                try:
                    got.append(await sb.receive())
                except TransportError as exc:
                    got.append(exc)
                    break
        nursery.cancel_scope.cancel()
    return got


async def test_untampered_relay_passes_frames() -> None:
    assert await _tampered_receive(_untouched, 3) == [b"frame 0", b"frame 1", b"frame 2"]


async def test_tampered_ciphertext_is_refused() -> None:
    got = await _tampered_receive(_flip_last_byte(FIRST_DATA_FRAME + 1), 3)
    assert got[0] == b"frame 0"
    assert isinstance(got[1], TransportError)


async def test_replayed_frame_is_refused() -> None:
    got = await _tampered_receive(_replay(FIRST_DATA_FRAME), 2)
    assert got[0] == b"frame 0"
    assert isinstance(got[1], TransportError)


async def test_dropped_frame_is_noticed() -> None:
    got = await _tampered_receive(_drop(FIRST_DATA_FRAME + 1), 3)
    assert got[0] == b"frame 0"
    assert isinstance(got[1], TransportError)


async def test_tampered_stream_header_is_refused() -> None:
    got = await _tampered_receive(_flip_last_byte(FIRST_DATA_FRAME - 1), 1)
    assert len(got) == 1 and isinstance(got[0], TransportError)


async def test_closed_peer_is_a_transport_error_on_receive_and_send() -> None:
    sa, sb = await _sessions(SigningKey.generate(), SigningKey.generate())
    await sb.aclose()
    with trio.fail_after(1), pytest.raises(TransportError):
        await sa.receive()
    with pytest.raises(TransportError):
        await sa.send(b"anyone there?")


# ---- FrameReader --------------------------------------------------------------------------


async def test_frame_reader_refuses_an_oversized_prefix_without_waiting_for_the_body() -> None:
    reading, writing = trio.testing.memory_stream_pair()
    await writing.send_all((1000 + 1).to_bytes(4, "big"))  # the prefix only; no body ever comes
    with trio.fail_after(1), pytest.raises(TransportError, match="exceeds"):
        await FrameReader(reading).read(1000)


async def test_session_refuses_a_frame_over_the_cap_without_waiting() -> None:
    sa, sb = await _sessions(SigningKey.generate(), SigningKey.generate())
    await sa.stream.send_all((FRAME_BYTES_MAX + 18).to_bytes(4, "big"))
    with trio.fail_after(1), pytest.raises(TransportError, match="exceeds"):
        await sb.receive()


async def test_frame_reader_reassembles_frames_split_and_joined_arbitrarily() -> None:
    reading, writing = trio.testing.memory_stream_pair()
    bodies = [b"", b"a", b"bc" * 100, b"\x00" * 70000]
    wire = b"".join(frame(body) for body in bodies)
    reader = FrameReader(reading)
    for start in range(0, len(wire), 777):
        await writing.send_all(wire[start : start + 777])
    with trio.fail_after(1):
        assert [await reader.read(1 << 20) for _ in bodies] == bodies


async def test_frame_at_exactly_the_cap_is_accepted() -> None:
    reading, writing = trio.testing.memory_stream_pair()
    await writing.send_all(frame(b"z" * 64))
    assert await FrameReader(reading).read(64) == b"z" * 64


async def test_frame_reader_reports_a_peer_closing_mid_frame() -> None:
    reading, writing = trio.testing.memory_stream_pair()
    await writing.send_all(frame(b"whole")[:-2])
    await writing.aclose()
    with trio.fail_after(1), pytest.raises(TransportError, match="closed"):
        await FrameReader(reading).read(100)



async def test_a_data_frame_arriving_with_the_stream_header_is_not_lost() -> None:
    """The peer's header and its first frame in one segment: the session starts with that frame."""
    stream, raw = trio.testing.memory_stream_pair()
    machine = Handshake(CHAIN, SigningKey.generate(), _anyone, initiator=True)
    reader = FrameReader(raw)

    async def initiator() -> None:
        await raw.send_all(machine.start())
        await raw.send_all(machine.receive_data(frame(await reader.read(HANDSHAKE_FRAME_BYTES_MAX))))
        out = machine.receive_data(frame(await reader.read(HANDSHAKE_FRAME_BYTES_MAX)))
        machine.receive_data(frame(await reader.read(HANDSHAKE_FRAME_BYTES_MAX)))
        assert machine.established is not None
        await raw.send_all(out + machine.established.channel.seal(b"early"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(initiator)
        with trio.fail_after(1):
            session = await handshake(stream, CHAIN, SigningKey.generate(), _anyone, initiator=False)
            assert await session.receive() == b"early"
