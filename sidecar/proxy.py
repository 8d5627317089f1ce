"""The proxy: a bare ASGI app that streams requests to an upstream over pooled keep-alive
connections (`sidecar.upstream_client`).

Starlette's Request/Response objects cost more per request than the choice of server, and
aiohttp's client several times what a plain HTTP/1.1 client costs, so the proxied path is plain
ASGI over a small client of our own (WebSockets go through aiohttp).

Bodies stream both ways (nothing is held whole in memory), redirects
and compressed bodies pass untouched, connections to the upstreams are pooled. An unreachable
upstream is a 502, a slow one a 504, each with a short plain body and `X-Trackside-Error`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.types import Receive, Scope, Send

from sidecar.client_limit import ClientLimit
from sidecar.headers import FORWARDED, HOP_BY_HOP, connection_named, response_headers
from sidecar.request_body import BodyError, BodyStore, BufferedBody, receive_body
from sidecar.request_checks import host_problem, target_problem
from sidecar.upstream_client import UpstreamBusy, UpstreamError, UpstreamPool, UpstreamTimeout
from sidecar.upstreams import Target, Upstreams
from trackside.capture import REFUSED, Answer, Capturer
from trackside.enrich.client_ip import ClientIP
from trackside.metrics import Metrics
from trackside.settings import Settings

if TYPE_CHECKING:
    import aiohttp

logger = logging.getLogger("trackside.proxy")

_REQUEST_DROP = HOP_BY_HOP | {b"expect", b"content-length", b"transfer-encoding"}


class ProxyApp:
    def __init__(self, settings: Settings, metrics: Metrics, capturer: Capturer | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.upstreams = Upstreams(settings)
        self.client_ip = ClientIP(settings.trusted_proxies)
        self.session: aiohttp.ClientSession | None = None  # for WebSockets only, made on first use
        self.pools: dict[str, UpstreamPool] = {}
        # With capture on, every proxied request is recorded here, the same way `CaptureMiddleware`
        # records an app's (one ASGI layer less per request).
        self.capturer = capturer
        self.bodies = BodyStore(settings)
        self.stream_uploads = tuple(prefix.rstrip("/") for prefix in settings.stream_uploads)
        limit = settings.max_concurrent_per_client
        self.client_limit = ClientLimit(limit, self.client_ip) if limit else None

    async def startup(self) -> None:
        """Nothing to open: upstream pools connect on first use, and aiohttp (about 10 MB of
        imports) is loaded only when a WebSocket arrives."""

    def websocket_session(self) -> aiohttp.ClientSession:
        if self.session is not None:
            return self.session
        import aiohttp

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
        return self.session

    async def shutdown(self) -> None:
        for pool in self.pools.values():
            pool.close()
        if self.session is not None:
            await self.session.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            from sidecar.websocket import proxy_websocket

            await proxy_websocket(self, scope, receive, send)
            return
        await self.handle_http(scope, receive, send)

    def pool_for(self, target: Target) -> UpstreamPool:
        pool = self.pools.get(target.base)
        if pool is None:
            parts = urlsplit(target.base)
            tls = parts.scheme == "https"
            pool = UpstreamPool(
                parts.hostname or "127.0.0.1",
                parts.port or (443 if tls else 80),
                limit=self.settings.upstream_connections,
                connect_timeout=self.settings.connect_timeout,
                tls=tls,
                idle_timeout=self.settings.upstream_keepalive_timeout,
                max_idle=self.settings.upstream_keepalive_connections,
                max_requests=self.settings.upstream_keepalive_requests,
                max_lifetime=self.settings.upstream_keepalive_time,
                max_head_bytes=self.settings.upstream_max_head_bytes,
                pool_wait=self.settings.upstream_pool_wait,
            )
            self.pools[target.base] = pool
        return pool

    def upstream_request(self, scope: Scope) -> tuple[Target, bytes, list[tuple[bytes, bytes]], str | None]:
        """Target, request target and headers for the upstream, and a refusal if any."""
        raw_path_bytes: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        # The route is chosen on the decoded path, the one capture records and the upstream's own
        # router reads; the raw bytes are what is sent (see `sidecar.request_checks`).
        target, sent_path = self.upstreams.resolve(scope["path"], raw_path_bytes.decode("latin-1"))
        request_target = sent_path.encode("latin-1") + (b"?" + query if query else b"")

        raw_headers = scope["headers"]
        named = connection_named(raw_headers, lowered=True)  # ASGI: header names are lower case
        drop = _REQUEST_DROP | named if named else _REQUEST_DROP
        client = scope.get("client")
        peer = client[0] if client else ""
        trusted = self.client_ip.is_trusted(peer)
        headers: list[tuple[bytes, bytes]] = []
        host = forwarded_for = forwarded_proto = forwarded_host = None
        hosts = 0
        size = 0
        content_length = transfer_encoding = None
        for name, value in raw_headers:
            size += len(name) + len(value) + 4
            if name == b"content-length":
                content_length = value
            elif name == b"transfer-encoding":
                transfer_encoding = value
            elif name == b"host":
                host = value
                hosts += 1
            if name in FORWARDED:
                if trusted:
                    if name == b"x-forwarded-for":
                        forwarded_for = value
                    elif name == b"x-forwarded-proto":
                        forwarded_proto = value
                    elif name == b"x-forwarded-host":
                        forwarded_host = value
                continue
            if name in drop:
                continue
            headers.append((name, value))
        # The request line first, as it arrives first; then `Host`. Each check is made only when a
        # cheap test says it may fail: this runs for every request.
        refusal = None
        max_target = self.settings.max_target_bytes
        if b"%" in raw_path_bytes or b"\\" in raw_path_bytes or len(raw_path_bytes) + len(query) >= max_target:
            refusal = target_problem(raw_path_bytes, query, max_target)
        if refusal is None and (hosts != 1 or b"host" in named):
            refusal = host_problem(hosts, scope.get("http_version", "1.1"), named)
        if refusal is None:
            if _has_dot_segment(scope["path"]):
                # `/../` would climb out of the route (or the upstream's root): refused, as nginx does.
                refusal = "400 invalid path"
            elif size > self.settings.max_header_bytes:
                refusal = "431 request headers too large"
            elif content_length is not None and transfer_encoding is not None:
                # Request smuggling: two framings that a chain of servers may read differently.
                refusal = "400 both Content-Length and Transfer-Encoding"
            elif content_length is not None:
                if not content_length.isdigit():
                    refusal = "400 invalid Content-Length"
                elif int(content_length) > self.settings.max_body_bytes:
                    refusal = "413 request body too large"
                else:
                    headers.append((b"content-length", content_length))
            elif transfer_encoding is not None:
                if transfer_encoding.strip().lower() != b"chunked":
                    refusal = "501 unsupported Transfer-Encoding"
                else:
                    headers.append((b"transfer-encoding", b"chunked"))
        if host is None:
            headers.append((b"host", urlsplit(target.base).netloc.encode("latin-1")))
        peer_bytes = peer.encode("latin-1")
        headers.append((b"x-forwarded-for", forwarded_for + b", " + peer_bytes if forwarded_for else peer_bytes))
        headers.append((b"x-forwarded-proto", forwarded_proto or scope.get("scheme", "http").encode("latin-1")))
        if forwarded_host or host:
            headers.append((b"x-forwarded-host", forwarded_host or host or b""))
        return target, request_target, headers, refusal

    async def handle_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.metrics.inc("requests")
        capturer = self.capturer
        if capturer is None:
            await self.forward(scope, receive, send, None)
            return
        started = time.time()
        t0 = time.perf_counter()
        answer = Answer()
        try:
            await self.forward(scope, receive, send, answer)
        finally:
            capturer.answered(scope, started, answer, time.perf_counter() - t0)

    async def forward(self, scope: Scope, receive: Receive, send: Send, answer: Answer | None) -> None:
        """The exchange with the upstream; `answer`, if given, learns what the client was sent."""
        client_limit = self.client_limit
        if client_limit is None:
            await self._exchange(scope, receive, send, answer)
            return
        client_key = client_limit.key_of(scope)
        if not client_limit.enter(client_key):
            self.metrics.inc("client_over_limit")
            await plain_response(
                send,
                429,
                "too many requests from this address at once",
                error="too_many_requests",
                retry_after=1,
                answer=answer,
            )
            return
        try:
            await self._exchange(scope, receive, send, answer)
        finally:
            client_limit.leave(client_key)  # however the exchange ended

    async def _exchange(self, scope: Scope, receive: Receive, send: Send, answer: Answer | None) -> None:
        method = scope["method"]
        target, request_target, headers, refusal = self.upstream_request(scope)
        if refusal is not None:
            status, _, message = refusal.partition(" ")
            await plain_response(send, int(status), message, close=True, answer=answer)
            return
        content_length: bytes | None = None
        chunked = False
        for name, value in headers:
            if name == b"content-length":
                content_length = value
            elif name == b"transfer-encoding":
                chunked = True
        body_error: list[BodyError] = []
        body: AsyncIterator[bytes] | None = None
        buffered: BufferedBody | None = None
        if chunked or (content_length is not None and content_length != b"0"):
            # Only a request with a body gets here: a bodiless GET does no more than it did.
            started = asyncio.get_running_loop().time()
            if self._streams(scope["path"]):
                body = self._body(receive, body_error, started)
            else:
                # Taken whole before an upstream connection is asked for (nginx's default), then
                # sent with its length: a chunked request leaves as a Content-Length one.
                try:
                    declared = int(content_length) if content_length else None
                    buffered = await self.bodies.take(receive, declared, started)
                except BodyError as refused:
                    if refused.status == 503:
                        self.metrics.inc("body_buffer_full")
                    await plain_response(
                        send, refused.status, refused.message, error=refused.error, close=True, answer=answer
                    )
                    return
                headers = _framed(headers, buffered.size)
                chunked = False
                body = buffered.chunks() if buffered.size else None
        t0 = time.perf_counter()
        try:
            response = await self.pool_for(target).request(
                method, request_target, headers, body, chunked=chunked, read_timeout=self.settings.upstream_timeout
            )
        except (UpstreamError, UpstreamTimeout, UpstreamBusy, BodyError) as exc:
            if body_error:
                err = body_error[0]
                await plain_response(send, err.status, err.message, error=err.error, close=True, answer=answer)
            elif isinstance(exc, UpstreamBusy):
                # Every connection to the upstream stayed taken for the whole pool wait: the
                # site is saturated, not down. A streamed body was never read: close after.
                self.metrics.inc("upstream_busy")
                await plain_response(
                    send,
                    503,
                    "upstream busy, try again shortly",
                    error="upstream_busy",
                    retry_after=5,
                    close=body is not None and buffered is None,
                    answer=answer,
                )
            elif isinstance(exc, UpstreamTimeout):
                self.metrics.inc("upstream_timeout")
                await plain_response(send, 504, "upstream timed out", error="upstream_timeout", answer=answer)
            else:
                self.metrics.inc("upstream_unreachable")
                logger.warning("upstream unreachable: %s", exc)
                await plain_response(send, 502, "upstream unreachable", error="upstream_unreachable", answer=answer)
            return
        finally:
            # The body was sent, or the upstream answered without it: its memory, file and share
            # of the cap are free before the answer streams back.
            if buffered is not None:
                buffered.close()
        self.metrics.observe_upstream(time.perf_counter() - t0, target.prefix or "/", target.base, response.status)
        finished = False
        sent_headers = response_headers(response.headers, lowered=True)  # our client lowers each name
        if answer is not None:
            sent_headers = answer.read_start(response.status, sent_headers) or sent_headers
        try:
            await send({"type": "http.response.start", "status": response.status, "headers": sent_headers})
            if method != "HEAD":
                async for chunk in response.body(self.settings.upstream_timeout):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            finished = True
        except (UpstreamError, UpstreamTimeout):
            # Too late for a status: abort the connection so the client sees a broken body,
            # never a truncated one that looks complete.
            self.metrics.inc("upstream_broken_stream")
            raise
        finally:
            if not finished:
                response.discard()
            elif method == "HEAD":
                response.discard()

    def _streams(self, path: str) -> bool:
        """Whether the body of a request for `path` streams to the upstream as it arrives."""
        for prefix in self.stream_uploads:
            if path == prefix or path.startswith(prefix + "/"):
                return True
        return False

    async def _body(self, receive: Receive, errors: list[BodyError], started: float) -> AsyncIterator[bytes]:
        """A streamed body; its refusal is also kept in `errors`, since it reaches `forward`
        through the upstream client."""
        try:
            async for chunk in receive_body(receive, self.bodies.rules, started):
                yield chunk
        except BodyError as exc:
            errors.append(exc)
            raise


def _framed(headers: list[tuple[bytes, bytes]], size: int) -> list[tuple[bytes, bytes]]:
    """The headers with the body's framing replaced by its length, in the same place."""
    length = (b"content-length", str(size).encode())
    return [length if name in (b"content-length", b"transfer-encoding") else (name, value) for name, value in headers]


def _has_dot_segment(path: str) -> bool:
    return "/." in path and any(segment in (".", "..") for segment in path.split("/"))


async def plain_response(
    send: Send,
    status: int,
    message: str,
    *,
    error: str | None = None,
    close: bool = False,
    retry_after: int | None = None,
    answer: Answer | None = None,
) -> None:
    body = (message + "\n").encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    # Every answer the sidecar makes itself says so. One with no cause named refuses what the
    # client sent (400, 413, 414, 431, 501, a body too slow): capture records it as `refused`,
    # never as the upstream's error.
    headers.append((b"x-trackside-error", (error or REFUSED).encode()))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    if close:
        headers.append((b"connection", b"close"))
    if answer is not None:
        answer.read_start(status, headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
