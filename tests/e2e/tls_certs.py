"""Certificates for the TLS tests, made by `openssl`: a CA, a server certificate for 127.0.0.1 (by
subjectAltName), a client certificate, and a second CA that signed none of them."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"
EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def _ca(out: Path, name: str) -> tuple[Path, Path]:
    cert, key = out / f"{name}.pem", out / f"{name}.key"
    _openssl("req", "-x509", *EC, "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}", "-days", DAYS)
    return cert, key


def _signed(out: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, request, ext = (out / f"{name}.pem", out / f"{name}.key", out / f"{name}.csr", out / f"{name}.ext")
    ext.write_text(extensions)
    _openssl("req", *EC, "-keyout", str(key), "-out", str(request), "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-out", str(cert), "-days", DAYS, "-extfile", str(ext))
    os.chmod(key, 0o600)
    return cert, key


def make_certs(out: Path) -> Certs:
    out.mkdir(parents=True, exist_ok=True)
    ca = _ca(out, "test-ca")
    server = _signed(out, "server", ca, "subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n")
    client = _signed(out, "client", ca, "extendedKeyUsage = clientAuth\n")
    other, _ = _ca(out, "other-ca")
    return Certs(ca[0], *server, *client, other)
