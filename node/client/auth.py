"""How a client proves itself to a node and checks the node: a bearer token, the CA of the node's TLS
certificate, and a client certificate (docs/sdk.md, "TLS and tokens"); and the errors of refused access."""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path

from node.client.errors import AccessDenied, Forbidden, InvalidInput, NodeUnreachable, Unauthenticated


@dataclass(frozen=True)
class Credentials:
    token: str | None = None  # sent as Authorization: Bearer
    ca_file: str | Path | None = None  # PEM CA(s) of the node's certificate; None: the system's
    client_cert: str | Path | None = None  # PEM, for a node that asks for client certificates
    client_key: str | Path | None = None  # its key, if not in client_cert

    def __post_init__(self) -> None:
        # A newline or other control character would end the header (or fail deep in http.client).
        if self.token and not all("!" <= c <= "~" for c in self.token):
            raise InvalidInput("a token is printable ASCII without spaces, as 'alliance token new' prints it")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def ssl_context(self) -> ssl.SSLContext:
        """The context of an https or wss connection; InvalidInput for a file that cannot be used."""
        for path in (self.ca_file, self.client_cert, self.client_key):  # ssl does not say which one is missing
            if path is not None and not Path(path).exists():
                raise InvalidInput(f"TLS file {path} does not exist")
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file is not None else None)
            if self.client_cert is not None:
                key = str(self.client_key) if self.client_key is not None else None
                context.load_cert_chain(str(self.client_cert), key)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidInput(f"cannot use the TLS files (ca {self.ca_file}, client certificate "
                               f"{self.client_cert}): {getattr(exc, 'reason', None) or exc}") from None
        if self.client_key is not None and self.client_cert is None:
            raise InvalidInput("a client key needs its client certificate (client_cert)")
        return context


HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH
CLIENT_CERT_HINT = "; a node that asks for client certificates needs one (client_cert, --client-cert)"


def unreachable(url: str, exc: BaseException) -> NodeUnreachable:
    """The one-line error of a connection that failed, saying so plainly when the node's certificate is not trusted."""
    causes = _causes(exc)
    text = "; ".join(str(cause) for cause in causes if str(cause))
    verify = [cause for cause in causes if isinstance(cause, ssl.SSLCertVerificationError)]
    if verify and verify[0].verify_code == HOSTNAME_MISMATCH:  # trusted, but for another name: no CA helps
        why = verify[0].verify_message.rstrip(".")
        return NodeUnreachable(f"cannot reach node at {url}: {why}; use a name or address the node's certificate "
                               "lists (its subjectAltName)")
    if verify or "CERTIFICATE_VERIFY_FAILED" in text:
        detail = (verify[0].verify_message if verify else None) or "certificate verify failed"
        return NodeUnreachable(f"cannot reach node at {url}: its TLS certificate is not trusted ({detail}); "
                               "give the CA that signed it (ca_file, --ca)")
    if any(isinstance(cause, ssl.SSLError) for cause in causes) or "SSL" in text or "TLS" in text:
        first = text.splitlines()[0] if text else repr(exc)
        return NodeUnreachable(f"cannot reach node at {url}: TLS handshake failed ({first}){CLIENT_CERT_HINT}")
    if url.startswith(("https:", "wss:")) and isinstance(exc, (ConnectionError, http.client.RemoteDisconnected)) \
            and not isinstance(exc, ConnectionRefusedError):  # refused: nothing listens, no TLS session was had
        # TLS 1.3: a node that asks for a client certificate closes the connection after the handshake.
        return NodeUnreachable(f"cannot reach node at {url}: {exc}{CLIENT_CERT_HINT}")
    return NodeUnreachable(f"cannot reach node at {url}: {text or repr(exc)}")


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it was raised from (httpx and trio wrap the ssl module's errors)."""
    found = [exc]
    while len(found) < 8 and (inner := found[-1].__cause__ or found[-1].__context__) is not None:
        found.append(inner)
    return found


def access_denied(url: str, status: int, body: bytes) -> AccessDenied | None:
    """The typed error of an HTTP 401 or 403 answer (no, or an unknown, token; a token without the role)."""
    if status not in (401, 403):
        return None
    try:
        message = json.loads(body)
    except ValueError:
        message = None
    reason = message.get("error") if isinstance(message, dict) else None
    text = f"the node at {url} refused access: {reason if isinstance(reason, str) else repr(body[:200])}"
    return Unauthenticated(text) if status == 401 else Forbidden(text)
