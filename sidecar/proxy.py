"""The proxy: a bare ASGI app that streams requests to an upstream with aiohttp's client.

Starlette's Request/Response objects cost more per request than the choice of server, so the
proxied path is plain ASGI. Bodies stream both ways (nothing is held whole in memory), redirects
and compressed bodies pass untouched, connections to the upstreams are pooled. An unreachable
upstream is a 502, a slow one a 504, each with a short plain body and `X-Trackside-Error`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from multidict import CIMultiDict
from starlette.types import Message, Receive, Scope, Send
from yarl import URL

from sidecar.headers import FORWARDED, HOP_BY_HOP, connection_named, response_headers
from sidecar.upstreams import Upstreams
from trackside.enrich.client_ip import ClientIP
from trackside.metrics import Metrics
from trackside.settings import Settings

logger = logging.getLogger("trackside.proxy")

_REQUEST_DROP = HOP_BY_HOP | {b"expect", b"content-length"}


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class ProxyApp:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.upstreams = Upstreams(settings)
        self.client_ip = ClientIP(settings.trusted_proxies)
        self.session: aiohttp.ClientSession | None = None

    async def startup(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.upstream_connections,
            ttl_dns_cache=300,
            keepalive_timeout=30,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.settings.connect_timeout, sock_read=self.settings.upstream_timeout
            ),
            auto_decompress=False,  # compressed bodies pass as they are
            cookie_jar=aiohttp.DummyCookieJar(),  # one visitor's cookies must never reach another
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            trust_env=False,
        )

    async def shutdown(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            from sidecar.websocket import proxy_websocket

            assert self.session is not None
            await proxy_websocket(self, scope, receive, send)
            return
        await self.handle_http(scope, receive, send)

    def upstream_request(self, scope: Scope) -> tuple[str, CIMultiDict[str], bool, str | None]:
        """URL and headers for the upstream; whether the route is the API; a refusal if any."""
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        target, sent_path = self.upstreams.resolve(raw_path)
        query = scope.get("query_string", b"").decode("latin-1")
        url = target.base + sent_path + ("?" + query if query else "")

        raw_headers = scope["headers"]
        drop = _REQUEST_DROP | connection_named(raw_headers)
        client = scope.get("client")
        peer = client[0] if client else ""
        trusted = self.client_ip.is_trusted(peer)
        headers: CIMultiDict[str] = CIMultiDict()
        host = forwarded_for = forwarded_proto = forwarded_host = None
        size = 0
        content_length = transfer_encoding = None
        for name, value in raw_headers:
            size += len(name) + len(value) + 4
            if name == b"content-length":
                content_length = value
            elif name == b"transfer-encoding":
                transfer_encoding = value
            elif name == b"host":
                host = value.decode("latin-1")
            if name in FORWARDED:
                if trusted:
                    if name == b"x-forwarded-for":
                        forwarded_for = value.decode("latin-1")
                    elif name == b"x-forwarded-proto":
                        forwarded_proto = value.decode("latin-1")
                    elif name == b"x-forwarded-host":
                        forwarded_host = value.decode("latin-1")
                continue
            if name in drop:
                continue
            headers.add(name.decode("latin-1"), value.decode("latin-1"))
        if _has_dot_segment(scope["path"]):
            # `/../` would climb out of the route (or the upstream's root): refused, as nginx does.
            return url, headers, target.is_api, "400 invalid path"
        if size > self.settings.max_header_bytes:
            return url, headers, target.is_api, "431 request headers too large"
        if content_length is not None and transfer_encoding is not None:
            # Request smuggling: two framings that a chain of servers may read differently.
            return url, headers, target.is_api, "400 both Content-Length and Transfer-Encoding"
        if content_length is not None:
            if not content_length.isdigit():
                return url, headers, target.is_api, "400 invalid Content-Length"
            if int(content_length) > self.settings.max_body_bytes:
                return url, headers, target.is_api, "413 request body too large"
            headers["Content-Length"] = content_length.decode()
        elif transfer_encoding is not None and transfer_encoding.strip().lower() != b"chunked":
            return url, headers, target.is_api, "501 unsupported Transfer-Encoding"
        headers["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
        headers["X-Forwarded-Proto"] = forwarded_proto or scope.get("scheme", "http")
        if forwarded_host or host:
            headers["X-Forwarded-Host"] = forwarded_host or host or ""
        return url, headers, target.is_api, None

    async def handle_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.session is not None
        self.metrics.inc("requests")
        method = scope["method"]
        url, headers, _, refusal = self.upstream_request(scope)
        if refusal is not None:
            status, _, message = refusal.partition(" ")
            await plain_response(send, int(status), message, close=True)
            return
        has_body = "Content-Length" in headers and headers["Content-Length"] != "0"
        chunked = any(name == b"transfer-encoding" for name, _ in scope["headers"])
        body_error: list[_BodyError] = []
        data = self._body(receive, body_error) if has_body or chunked else None
        started = False
        t0 = time.perf_counter()
        try:
            async with self.session.request(
                method, URL(url, encoded=True), headers=headers, data=data, allow_redirects=False, compress=None
            ) as resp:
                self.metrics.observe_upstream(time.perf_counter() - t0)
                await send(
                    {
                        "type": "http.response.start",
                        "status": resp.status,
                        "headers": response_headers(resp.raw_headers),
                    }
                )
                started = True
                if method == "HEAD":
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
                async for chunk in resp.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if started:
                # Too late for a status: abort the connection so the client sees a broken body,
                # never a truncated one that looks complete.
                self.metrics.inc("upstream_broken_stream")
                raise
            if body_error:
                err = body_error[0]
                await plain_response(send, err.status, err.message, close=True)
                return
            if isinstance(exc, TimeoutError):
                self.metrics.inc("upstream_timeout")
                await plain_response(send, 504, "upstream timed out", error="upstream_timeout")
            else:
                self.metrics.inc("upstream_unreachable")
                logger.warning("upstream unreachable: %s", type(exc).__name__)
                await plain_response(send, 502, "upstream unreachable", error="upstream_unreachable")

    async def _body(self, receive: Receive, errors: list[_BodyError]) -> AsyncIterator[bytes]:
        received = 0
        limit = self.settings.max_body_bytes
        while True:
            try:
                message: Message = await asyncio.wait_for(receive(), self.settings.client_timeout)
            except TimeoutError:
                errors.append(_BodyError(408, "request body timed out"))
                raise
            if message["type"] == "http.disconnect":
                errors.append(_BodyError(499, "client went away"))
                raise ConnectionResetError("client disconnected")
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                errors.append(_BodyError(413, "request body too large"))
                raise ValueError("request body too large")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


def _has_dot_segment(path: str) -> bool:
    return "/." in path and any(segment in (".", "..") for segment in path.split("/"))


async def plain_response(
    send: Send, status: int, message: str, *, error: str | None = None, close: bool = False
) -> None:
    body = (message + "\n").encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    if error:
        headers.append((b"x-trackside-error", error.encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
