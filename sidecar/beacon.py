"""The beacon routes, answered by the sidecar before anything is proxied or captured:

- `/_trackside/b`: the web snippet's. `POST` with a JSON body (what `navigator.sendBeacon` and a
  `keepalive` fetch send, `text/plain` or `application/json`), or `GET` with the fields in the query
  (the image fallback, answered with a 1x1 GIF).
- `POST /api/track/page-view` with `{"path", "referrer"}`: the route the original review proposed,
  for a site that reports page views from its own code.

A malformed beacon gets a 4xx naming the problem; one that is fine but not counted (Do Not Track, a
bot, capture off, only unknown items) a 204 with `X-Trackside-Ignored: <reason>`. Never a 500: a
failure while recording is logged, counted and answered 204."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from urllib.parse import urlsplit

from starlette.types import Receive, Scope, Send

from trackside.beacon import (
    MAX_BEACON_BYTES,
    BeaconError,
    decode_body,
    origin_allowed,
    parse_beacon,
    parse_page_view,
    query_fields,
)
from trackside.capture import Capturer
from trackside.page_token import PageTokens, request_identity
from trackside.settings import Settings

logger = logging.getLogger("trackside.beacon")

COMPACT_ROUTE = "/_trackside/b"
PAGE_VIEW_ROUTE = "/api/track/page-view"
TOKEN_HEADER = b"x-trackside-token"
IGNORED_HEADER = b"x-trackside-ignored"
# The smallest transparent GIF: what an <img> beacon is answered with.
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")


class BeaconApp:
    def __init__(self, settings: Settings, capturer: Capturer, tokens: PageTokens) -> None:
        self.settings = settings
        self.capturer = capturer
        self.tokens = tokens
        self.metrics = capturer.metrics
        self.kinds = frozenset(settings.content_rules)
        self.allowed = frozenset(o.strip().lower().rstrip("/") for o in settings.beacon_origins)

    @staticmethod
    def handles(path: str) -> bool:
        return path == COMPACT_ROUTE or path == PAGE_VIEW_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.time()
        method = scope["method"]
        image = scope["path"] == COMPACT_ROUTE and method in ("GET", "HEAD")
        headers = {name.decode(): value.decode("latin-1") for name, value in scope["headers"] if name in _READ}
        origin = headers.get("origin") or _origin_of(headers.get("referer"))
        # `X-Forwarded-Host` is believed from a trusted proxy only: a client's own would make any
        # origin the site's.
        client = scope.get("client")
        own_host = self.capturer.client_ip.own_host(
            client[0] if client else None, headers.get("host"), headers.get("x-forwarded-host")
        )
        allowed = origin_allowed(origin, own_host, self.allowed)
        cors: list[tuple[bytes, bytes]] = []
        if allowed and origin:
            cors = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin"), _EXPOSE]
        if method == "OPTIONS":
            await _answer(send, 204, [*cors, *_PREFLIGHT] if cors else [])
            return
        try:
            if not image and method != "POST":
                raise BeaconError("use POST (or GET for the image beacon)", 405)
            if not allowed:
                raise BeaconError("beacons from this origin are not accepted", 403)
            if image:
                fields = query_fields(scope.get("query_string", b"").decode("latin-1"))
            else:
                fields = decode_body(await self._body(scope, receive), headers.get("content-type", ""))
            if scope["path"] == COMPACT_ROUTE:
                beacon = parse_beacon(fields, self.kinds)
            else:
                beacon = parse_page_view(fields)
            ip, user_agent = request_identity(scope, self.capturer.client_ip)
            token = beacon.token or headers.get("x-trackside-token")
            verified = self.tokens.verify(token, ip, user_agent, started)
            if not verified and self.settings.beacon_require_token:
                raise BeaconError("page token missing, expired or not this visitor's", 403)
            if self.settings.capture:
                ignored = self.capturer.record_beacon(scope, beacon, verified, started)
            else:
                ignored = "capture-off"
        except BeaconError as exc:
            self.metrics.inc(f"beacon_refused_{exc.status}")
            body = f"{exc}\n".encode()
            await _answer(send, exc.status, [*cors, (b"content-type", b"text/plain; charset=utf-8")], body)
            return
        except Exception:  # a beacon is never a 500: log, count, and let the page go on
            logger.exception("failed to record a beacon")
            self.metrics.inc("beacon_failed")
            await _answer(send, 204, [*cors, (IGNORED_HEADER, b"error")])
            return
        out = [*cors, (b"cache-control", b"no-store")]
        if ignored is not None:
            self.metrics.inc(f"beacon_ignored_{ignored}")
            out.append((IGNORED_HEADER, ignored.encode()))
        else:
            self.metrics.inc("beacons" if verified else "beacons_unverified")
        if verified:
            # A fresh token for the snippet: a long single-page session keeps counting as verified.
            renewed = self.tokens.issue(ip, user_agent, started)
            if renewed is not None:
                out.append((TOKEN_HEADER, renewed.encode()))
        if image:
            out.append((b"content-type", b"image/gif"))
            await _answer(send, 200, out, GIF if method == "GET" else b"")
        else:
            await _answer(send, 204, out)

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BEACON_BYTES):
                raise BeaconError(f"beacon larger than {MAX_BEACON_BYTES} bytes", 413)
        body = b""
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.settings.client_timeout)
            except TimeoutError:
                raise BeaconError("beacon body timed out", 408) from None
            if message["type"] == "http.disconnect":
                raise BeaconError("client went away", 400)
            body += message.get("body", b"")
            if len(body) > MAX_BEACON_BYTES:
                raise BeaconError(f"beacon larger than {MAX_BEACON_BYTES} bytes", 413)
            if not message.get("more_body", False):
                return body


_READ = frozenset({b"origin", b"referer", b"host", b"x-forwarded-host", b"content-type", b"x-trackside-token"})
_EXPOSE = (b"access-control-expose-headers", b"x-trackside-token, x-trackside-ignored")
_PREFLIGHT = [
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"content-type, x-trackside-token"),
    (b"access-control-max-age", b"86400"),
]


def _origin_of(referer: str | None) -> str | None:
    # The image beacon sends no Origin header: its Referer says which page it came from.
    if not referer:
        return None
    try:
        parts = urlsplit(referer)
    except ValueError:
        return None
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
