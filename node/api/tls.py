"""A listener's TLS files, checked at start so that a wrong one is a one-line error, not a failed handshake later."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

from node.config import TlsFiles
from node.errors import ConfigError


def _readable(path: Path, what: str) -> None:
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


class _Encrypted(Exception):
    """The key asks for a passphrase."""


def _no_passphrase() -> bytes:
    raise _Encrypted  # instead of OpenSSL prompting on the terminal (or failing without one)


def check_tls(files: TlsFiles, section: str) -> None:
    """Checks `files` (the [section] tls_* settings) as Hypercorn will load them: ConfigError for a file
    that is missing, unreadable or not what it should be, a key readable by group or others, or a key
    not of the certificate."""
    _readable(files.cert, f"{section}.tls_cert")
    _readable(files.key, f"{section}.tls_key")
    mode = files.key.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{section}.tls_key {files.key} is accessible by group or others "
                          f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {files.key}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files.cert, files.key, password=_no_passphrase)
    except _Encrypted:
        raise ConfigError(f"{section}.tls_key {files.key} is encrypted with a passphrase, which the node cannot "
                          f"ask for; write it unencrypted (mode 0600): openssl pkey -in KEY -out PLAIN.key") from None
    except ssl.SSLError as exc:
        why = "the key does not belong to the certificate" if "MISMATCH" in str(exc) else \
            "not a PEM certificate and private key"
        raise ConfigError(f"{section}.tls_cert {files.cert} / tls_key {files.key}: {why} ({exc.reason})") from None
    if files.client_ca is not None:
        _readable(files.client_ca, f"{section}.tls_client_ca")
        try:
            context.load_verify_locations(files.client_ca)
        except ssl.SSLError as exc:
            raise ConfigError(f"{section}.tls_client_ca {files.client_ca}: not a PEM CA certificate "
                              f"({exc.reason})") from None
