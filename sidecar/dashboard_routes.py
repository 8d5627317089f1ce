"""The built-in dashboard at `/_trackside/`: three plain files (`sidecar/dashboard/`), read once at
start-up and served as they are, no build step. The page asks `/_trackside/api/v2/query` (the
period, filters and comparison) and `/_trackside/api/v1/` (the 30-day poster parts, item pages) for
its figures with the moderator's token; these routes themselves need none (they hold no data), are
never proxied and never counted."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
ROOT = "/_trackside/"
INDEX = "index.html"
# The only names served: a request can never reach another file.
STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "funnels.js": "text/javascript; charset=utf-8",
    "journeys.js": "text/javascript; charset=utf-8",
    "retention.js": "text/javascript; charset=utf-8",
    "touch.js": "text/javascript; charset=utf-8",
    "items.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

# The page runs only its own script and style, talks only to its own origin, and cannot be framed.
# Charts are built through the DOM (no inline script, no inline style attributes).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_COMMON = {
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
    "vary": "Accept-Encoding",
}
_PAGE = {
    **_COMMON,
    "content-security-policy": CSP,
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    gzipped: bytes
    etag: str
    media_type: str

    @classmethod
    def load(cls, path: Path, media_type: str) -> _File:
        body = path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:20]
        return cls(body, gzip.compress(body, 9, mtime=0), f'"{digest}"', media_type)

    def answer(self, request: Request, headers: dict[str, str]) -> Response:
        headers = {**headers, "etag": self.etag}
        if _matches(request.headers.get("if-none-match", ""), self.etag):
            return Response(status_code=304, headers=headers)
        body = self.body
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = self.gzipped
            headers["content-encoding"] = "gzip"
        return Response(body, media_type=self.media_type, headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return etag in tags or "*" in tags


class Dashboard:
    def __init__(self, directory: Path = DASHBOARD_DIR) -> None:
        self.index_file = _File.load(directory / INDEX, "text/html; charset=utf-8")
        self.static_files = {name: _File.load(directory / name, media) for name, media in STATIC.items()}

    def routes(self) -> list[Route]:
        return [
            Route(ROOT, self.index, methods=["GET"]),
            Route(ROOT + "index.html", self.to_root, methods=["GET"]),
            Route(ROOT + "static/{name}", self.static, methods=["GET"]),
        ]

    async def index(self, request: Request) -> Response:
        return self.index_file.answer(request, _PAGE)

    async def to_root(self, request: Request) -> Response:
        return RedirectResponse(ROOT, status_code=308)

    async def static(self, request: Request) -> Response:
        found = self.static_files.get(request.path_params["name"])
        if found is None:
            return JSONResponse({"detail": "not found"}, status_code=404, headers={"cache-control": "no-store"})
        return found.answer(request, _COMMON)
