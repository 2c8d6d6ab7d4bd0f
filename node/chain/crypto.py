"""Ed25519 signing and verification for the consensus core (its `Crypto` protocol)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey


# How a signature is checked: (public_key, data, signature) -> valid. `verify` below is the node's;
# a simulation hands its own to whatever checks commit seals.
Verify = Callable[[bytes, bytes, bytes], bool]


@lru_cache(maxsize=4096)
def _verify_key(public_key: bytes) -> VerifyKey:
    return VerifyKey(public_key)


def verify(public_key: bytes, data: bytes, signature: bytes) -> bool:
    try:
        _verify_key(public_key).verify(data, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


class NodeCrypto:
    def __init__(self, key: SigningKey) -> None:
        self._key = key
        self._public_key = bytes(key.verify_key)

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data).signature

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool:
        return verify(public_key, data, signature)
