"""Ed25519 identities in PKCS#8 PEM files, exactly as `openssl genpkey -algorithm ed25519` writes them."""

from __future__ import annotations

import base64
import contextlib
import os
import stat
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

from node.errors import KeyFileError

PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
PEM_BEGIN = "-----BEGIN PRIVATE KEY-----"
PEM_END = "-----END PRIVATE KEY-----"
ENCRYPTED_BEGIN = "-----BEGIN ENCRYPTED PRIVATE KEY-----"


def encode_pem(key: SigningKey) -> str:
    der = PKCS8_PREFIX + bytes(key)
    return f"{PEM_BEGIN}\n{base64.b64encode(der).decode()}\n{PEM_END}\n"


def decode_pem(text: str, source: str = "key") -> SigningKey:
    lines = [line.strip() for line in text.strip().splitlines()]
    if sum(line.startswith("-----BEGIN ") for line in lines) > 1:
        raise KeyFileError(f"{source} holds more than one PEM block; the node needs a file with its private key only")
    if lines[:1] == [ENCRYPTED_BEGIN] or "Proc-Type: 4,ENCRYPTED" in lines:
        raise KeyFileError(
            f"{source} is an encrypted key; the node needs an unencrypted PKCS#8 key: "
            f"openssl pkcs8 -in {source} -out {source}.plain (it asks for the passphrase)"
        )
    if len(lines) < 3 or lines[0] != PEM_BEGIN or lines[-1] != PEM_END:
        raise KeyFileError(f"{source} is not a PKCS#8 PEM private key ({PEM_BEGIN} ... {PEM_END})")
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:  # binascii.Error, or non-ASCII characters
        raise KeyFileError(f"{source}: PEM body is not valid base64") from None
    if len(der) != 48 or not der.startswith(PKCS8_PREFIX):
        raise KeyFileError(f"{source} is not an Ed25519 private key")
    return SigningKey(der[len(PKCS8_PREFIX):])


def write_key(path: Path, key: SigningKey) -> None:
    """Writes `key` to a new file with mode 0600; refuses to overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as out:
        out.write(encode_pem(key))


def load_key(path: Path) -> SigningKey:
    """Reads a private key, refusing files that group or others can read."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"key file {path} is accessible by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )
    return decode_pem(_pem_text(data, path), str(path))


def _pem_text(data: bytes, path: Path) -> str:
    """The file as text; DER (always holding a zero byte) or other binary is refused with its conversion."""
    if b"\x00" not in data:
        with contextlib.suppress(UnicodeDecodeError):
            return data.decode()
    raise KeyFileError(f"{path} is not a PEM file (binary, DER?): "
                       f"convert with `openssl pkey -in {path} -out {path}.pem`")


def pubkey_hex(key: SigningKey | VerifyKey) -> str:
    verify = key.verify_key if isinstance(key, SigningKey) else key
    return bytes(verify).hex()


def parse_pubkey(text: str, what: str = "public key") -> bytes:
    """64 hex characters to 32 bytes, with a clear error otherwise."""
    try:
        raw = bytes.fromhex(text)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32 or len(text) != 64:
        raise KeyFileError(f"{what} {text!r} is not 64 hex characters")
    return raw
