"""The web console's static files (node/console/static/), served at GET / and GET /console/<file>.

The files are read once, when the RPC app is built, from the installed package: a request can name
only a file of that one directory (no path, no `..`), and nothing it sends is read from disk."""

from __future__ import annotations

from importlib import resources

from node.api.http_server import Receive, Scope, Send, respond_json

PREFIX = "/console/"
FILE_BYTES_MAX = 1 << 20  # a console file over this is a packaging mistake, not something to serve
FILES_MAX = 64
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
# The pages load only their own files, talk only to this node (JSON-RPC and /ws), and cannot be framed.
SECURITY_HEADERS = [
    (b"cache-control", b"no-cache"),
    (b"content-security-policy",
     b"default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; object-src 'none'; "
     b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


def _content_type(name: str) -> str | None:
    dot = name.rfind(".")
    return CONTENT_TYPES.get(name[dot:]) if dot > 0 else None


def _plain_name(name: str) -> bool:
    """A file name of the directory itself: no separator, no parent, no hidden or odd characters."""
    return (0 < len(name) <= 64 and not name.startswith(".")
            and all(c.isascii() and (c.isalnum() or c in "-_.") for c in name) and ".." not in name)


def _accepts_html(scope: Scope) -> bool:
    return any(name == b"accept" and b"text/html" in value.lower() for name, value in scope.get("headers", []))


def load_static() -> dict[str, bytes]:
    """Every servable file of node/console/static, by name; read once."""
    files: dict[str, bytes] = {}
    for entry in resources.files("node").joinpath("console", "static").iterdir():
        name = entry.name
        if entry.is_file() and _plain_name(name) and _content_type(name) and len(files) < FILES_MAX:
            data = entry.read_bytes()
            if len(data) <= FILE_BYTES_MAX:
                files[name] = data
    return files


class ConsoleFiles:
    """Answers GET/HEAD of / (index.html) and /console/<file> from files held in memory."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    @staticmethod
    def serves(scope: Scope) -> bool:
        """Whether the request is the console's: a GET or HEAD of a path under /console/, or of / from a
        browser (one that accepts text/html); any other client's GET / is answered as before, refused."""
        path, method = scope["path"], scope["method"]
        if method not in ("GET", "HEAD"):
            return False
        return path.startswith(PREFIX) or (path == "/" and _accepts_html(scope))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        name = "index.html" if path == "/" else path[len(PREFIX):]
        data = self.files.get(name) if _plain_name(name) else None
        content_type = _content_type(name)
        if data is None or content_type is None:
            return await respond_json(send, 404, {"error": "not found; the console is at GET /"})
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(data)).encode()),
                   *SECURITY_HEADERS]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else data})
