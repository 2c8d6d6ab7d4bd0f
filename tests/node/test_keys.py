"""Key files: PKCS#8 PEM exactly as openssl writes it, mode 0600 (client protocol, section 1)."""

from __future__ import annotations

import base64
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from node.errors import KeyFileError
from node.keys import decode_pem, encode_pem, load_key, parse_pubkey, pubkey_hex, write_key

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not on PATH")

SEED = bytes(range(1, 33))
PREFIX = bytes.fromhex("302e020100300506032b657004220420")


def openssl(*args: str) -> bytes:
    return subprocess.run(["openssl", *args], check=True, capture_output=True).stdout


def openssl_key(path: Path, algorithm: str = "ed25519") -> Path:
    openssl("genpkey", "-algorithm", algorithm, "-out", str(path))
    path.chmod(0o600)
    return path


def pem_of(der: bytes) -> str:
    return f"-----BEGIN PRIVATE KEY-----\n{base64.b64encode(der).decode()}\n-----END PRIVATE KEY-----\n"


def key_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "bad.key"
    path.write_text(text)
    path.chmod(mode)
    return path


# --- interoperability with openssl ----------------------------------------------


@needs_openssl
def test_openssl_key_loads_with_the_same_public_key(tmp_path: Path) -> None:
    path = openssl_key(tmp_path / "openssl.key")
    key = load_key(path)
    public_der = openssl("pkey", "-in", str(path), "-pubout", "-outform", "DER")
    assert bytes(key.verify_key) == public_der[-32:]
    assert pubkey_hex(key) == public_der[-32:].hex()


@needs_openssl
def test_encode_pem_is_byte_identical_to_openssl(tmp_path: Path) -> None:
    path = openssl_key(tmp_path / "openssl.key")
    private_der = openssl("pkey", "-in", str(path), "-outform", "DER")
    assert len(private_der) == 48 and private_der[:16] == PREFIX
    assert encode_pem(SigningKey(private_der[16:])) == path.read_text()


@needs_openssl
def test_openssl_reads_our_key_file(tmp_path: Path) -> None:
    key = SigningKey(SEED)
    path = tmp_path / "ours.key"
    write_key(path, key)
    result = subprocess.run(["openssl", "pkey", "-in", str(path), "-noout"], capture_output=True)
    assert result.returncode == 0, result.stderr
    public_der = openssl("pkey", "-in", str(path), "-pubout", "-outform", "DER")
    assert public_der[-32:] == bytes(key.verify_key)
    assert openssl("pkey", "-in", str(path), "-outform", "DER") == PREFIX + SEED


@needs_openssl
@pytest.mark.parametrize("algorithm", ["x25519", "ed448"])
def test_other_openssl_key_types_are_refused(tmp_path: Path, algorithm: str) -> None:
    path = openssl_key(tmp_path / f"{algorithm}.key", algorithm)
    with pytest.raises(KeyFileError, match="not an Ed25519 private key"):
        load_key(path)


# --- write_key / load_key ---------------------------------------------------------


def test_write_key_creates_mode_0600_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_key(path, SigningKey(SEED))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == pem_of(PREFIX + SEED)
    assert bytes(load_key(path)) == SEED


def test_write_key_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_key(path, SigningKey(SEED))
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        write_key(path, SigningKey.generate())
    assert path.read_bytes() == before


def test_write_key_into_missing_directory_is_a_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        write_key(tmp_path / "missing" / "node.key", SigningKey(SEED))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_load_key_refuses_group_or_other_readable(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    write_key(path, SigningKey(SEED))
    path.chmod(mode)
    with pytest.raises(KeyFileError, match="chmod 600") as info:
        load_key(path)
    assert f"{mode:04o}" in str(info.value)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_load_key_accepts_owner_only(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    write_key(path, SigningKey(SEED))
    path.chmod(mode)
    assert bytes(load_key(path)) == SEED


def test_load_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        load_key(tmp_path / "absent.key")


def test_decode_pem_tolerates_crlf_and_surrounding_blank_lines() -> None:
    text = "\r\n" + pem_of(PREFIX + SEED).replace("\n", "\r\n") + "\r\n"
    assert bytes(decode_pem(text)) == SEED


RSA_LIKE_DER = bytes.fromhex("30820276020100300d06092a864886f70d0101010500") + bytes(600)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("garbage\n", id="garbage"),
        pytest.param("-----BEGIN PRIVATE KEY-----\n!!!notbase64!!!\n-----END PRIVATE KEY-----\n", id="bad-base64"),
        pytest.param("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n", id="no-body"),
        pytest.param(pem_of(PREFIX + SEED).replace("PRIVATE KEY", "PUBLIC KEY"), id="public-key-armour"),
        pytest.param(pem_of(PREFIX + SEED).replace("BEGIN PRIVATE", "BEGIN RSA PRIVATE"), id="rsa-armour"),
        pytest.param(pem_of(bytes(16) + SEED), id="wrong-prefix"),
        pytest.param(pem_of(PREFIX + SEED[:31]), id="short-seed"),
        pytest.param(pem_of(PREFIX + SEED + b"\x00"), id="long-seed"),
        pytest.param(pem_of(RSA_LIKE_DER), id="rsa-like-der"),
    ],
)
def test_bad_key_files_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(KeyFileError):
        decode_pem(text)
    with pytest.raises(KeyFileError):
        load_key(key_file(tmp_path, text))


def test_invalid_utf8_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bin.key"
    path.write_bytes(b"\xff\xfe" + bytes(48))
    path.chmod(0o600)
    with pytest.raises(KeyFileError):
        load_key(path)


def test_der_key_file_is_refused_as_not_pem(tmp_path: Path) -> None:
    path = tmp_path / "der.key"
    path.write_bytes(PREFIX + SEED)  # every byte ASCII, as DER of a seed can be: the zero bytes tell it
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as info:
        load_key(path)
    assert str(info.value) == (f"{path} is not a PEM file (binary, DER?): convert with "
                               f"`openssl pkey -in {path} -out {path}.pem`")


@needs_openssl
def test_der_conversion_advice_works(tmp_path: Path) -> None:
    pem = openssl_key(tmp_path / "openssl.key")
    der = tmp_path / "key.der"
    der.write_bytes(openssl("pkey", "-in", str(pem), "-outform", "DER"))
    der.chmod(0o600)
    with pytest.raises(KeyFileError, match="is not a PEM file"):
        load_key(der)
    openssl("pkey", "-in", str(der), "-out", f"{der}.pem")  # the advice, followed
    converted = Path(f"{der}.pem")
    converted.chmod(0o600)
    assert bytes(load_key(converted)) == bytes(load_key(pem))


def test_concatenated_pem_blocks_are_refused(tmp_path: Path) -> None:
    text = pem_of(PREFIX + SEED) + pem_of(PREFIX + bytes(32))
    with pytest.raises(KeyFileError, match="bad.key holds more than one PEM block"):
        load_key(key_file(tmp_path, text))
    certificate = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(KeyFileError, match="holds more than one PEM block"):
        decode_pem(pem_of(PREFIX + SEED) + certificate)


@needs_openssl
def test_encrypted_key_is_refused_with_the_command_that_decrypts_it(tmp_path: Path) -> None:
    encrypted = tmp_path / "enc.key"
    openssl("genpkey", "-algorithm", "ed25519", "-aes-256-cbc", "-pass", "pass:x", "-out", str(encrypted))
    encrypted.chmod(0o600)
    assert encrypted.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(KeyFileError) as info:
        load_key(encrypted)
    message = str(info.value)
    assert message.startswith(f"{encrypted} is an encrypted key; the node needs an unencrypted PKCS#8 key")
    assert "\n" not in message
    plain = tmp_path / "enc.key.plain"
    assert f"openssl pkcs8 -in {encrypted} -out {plain}" in message
    openssl("pkcs8", "-in", str(encrypted), "-out", str(plain), "-passin", "pass:x")  # the advice, followed
    public = openssl("pkey", "-in", str(encrypted), "-passin", "pass:x", "-pubout", "-outform", "DER")
    assert bytes(load_key(plain).verify_key) == public[-32:]


def test_legacy_encrypted_pem_is_refused_as_encrypted() -> None:
    text = "-----BEGIN PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END PRIVATE KEY-----\n"
    with pytest.raises(KeyFileError, match="is an encrypted key"):
        decode_pem(text)


def test_non_ascii_pem_body_is_a_key_file_error(tmp_path: Path) -> None:
    text = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIé\n-----END PRIVATE KEY-----\n"
    with pytest.raises(KeyFileError):
        load_key(key_file(tmp_path, text))


# --- public keys ------------------------------------------------------------------


def test_parse_pubkey() -> None:
    public = bytes(SigningKey(SEED).verify_key)
    assert parse_pubkey(public.hex()) == public
    for bad in ["", public.hex()[:62], public.hex() + "00", "zz" * 32, "0x" + public.hex()[2:]]:
        with pytest.raises(KeyFileError, match="64 hex characters"):
            parse_pubkey(bad)
