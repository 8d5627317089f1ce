"""The web snippet, served as a file: `/_trackside/s.<hash>.js` for a year (the name changes with
the content), `/_trackside/snippet.js` for five minutes (for tags written by hand on other sites).

The sidecar never imports `web_snippet`: it reads `web_snippet/snippet.js` once at start-up."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from starlette.types import Receive, Scope, Send

SNIPPET_FILE = Path(__file__).resolve().parent.parent / "web_snippet" / "snippet.js"
STABLE_PATH = "/_trackside/snippet.js"
HASHED_PREFIX = "/_trackside/s."

_IMMUTABLE = b"public, max-age=31536000, immutable"
_SHORT = b"public, max-age=300"


class SnippetFile:
    def __init__(self, path: Path = SNIPPET_FILE) -> None:
        self.body = path.read_bytes()
        self.gzipped = gzip.compress(self.body, 9, mtime=0)
        digest = hashlib.sha256(self.body).hexdigest()[:16]
        self.url = f"{HASHED_PREFIX}{digest}.js"
        self.etag = f'"{digest}"'.encode()

    @staticmethod
    def handles(path: str) -> bool:
        return path == STABLE_PATH or (path.startswith(HASHED_PREFIX) and path.endswith(".js"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await _answer(send, 405, [(b"allow", b"GET, HEAD")], b"")
            return
        # An old hashed name (a page cached across a deploy) still gets the script, but briefly.
        cache = _IMMUTABLE if scope["path"] == self.url else _SHORT
        headers = [
            (b"content-type", b"text/javascript; charset=utf-8"),
            (b"cache-control", cache),
            (b"etag", self.etag),
            (b"vary", b"Accept-Encoding"),
            (b"x-content-type-options", b"nosniff"),
        ]
        accept_encoding = b""
        for name, value in scope["headers"]:
            if name == b"if-none-match" and self.etag in value:
                await _answer(send, 304, headers, b"")
                return
            if name == b"accept-encoding":
                accept_encoding = value
        body = self.body
        if b"gzip" in accept_encoding:
            body = self.gzipped
            headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-length", str(len(body)).encode()))
        await _answer(send, 200, headers, b"" if method == "HEAD" else body)


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
