"""Fake signatures for the simulator: a keyed hash instead of Ed25519.

Ed25519 costs tens of microseconds per signature and the simulator checks
hundreds of thousands of them, so every validator here holds a 32-byte secret
and "signs" with BLAKE2b keyed by it (64 bytes, the size of an Ed25519
signature). The verifier looks the secret up by public key and recomputes the
hash, so a forged or altered message fails exactly as it would with Ed25519.
The bytes that get signed are the real ones (`consensus.messages.signing_bytes`
and `seal_bytes`); only the primitive is replaced. It is not secure against
anyone who can read the keyring, which in a simulation is nobody.
"""

from __future__ import annotations

import hashlib

SIGNATURE_BYTES = 64


class Keyring:
    """The secrets of all validators, shared by every verifier of one simulation."""

    def __init__(self, n: int):
        self._secrets: dict[bytes, bytes] = {}
        self.keys = [self._add(i) for i in range(n)]

    def _add(self, index: int) -> KeyedHashCrypto:
        secret = hashlib.sha256(b"alliance-sim-secret:%d" % index).digest()
        public_key = hashlib.sha256(b"alliance-sim-public:" + secret).digest()
        self._secrets[public_key] = secret
        return KeyedHashCrypto(self, public_key, secret)

    @property
    def public_keys(self) -> tuple[bytes, ...]:
        return tuple(k.public_key for k in self.keys)

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool:
        secret = self._secrets.get(public_key)
        return secret is not None and signature == _mac(secret, data)


class KeyedHashCrypto:
    """The consensus `Crypto` protocol with a keyed-hash "signature"."""

    def __init__(self, keyring: Keyring, public_key: bytes, secret: bytes):
        self._keyring = keyring
        self._secret = secret
        self.public_key = public_key

    def sign(self, data: bytes) -> bytes:
        return _mac(self._secret, data)

    def verify(self, public_key: bytes, data: bytes, signature: bytes) -> bool:
        return self._keyring.verify(public_key, data, signature)


def _mac(secret: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(data, key=secret, digest_size=SIGNATURE_BYTES).digest()
