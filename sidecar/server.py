"""How the sidecar runs under uvicorn: one place, used by `trackside serve` and the tests.

uvicorn's HTTP protocol has no deadline for a request's headers and no cap on their size while
they arrive: a client that sends one byte a minute holds a connection forever (slowloris), and
one that never ends its headers grows a buffer without bound. `GuardedHttpToolsProtocol` adds
both, as nginx's `client_header_timeout` and `large_client_header_buffers` do, and keeps a
chunked request's trailer fields out of its headers."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

import httptools
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from trackside.settings import Settings

# Set by `trackside serve` after it migrated once, so worker processes don't race to migrate.
MIGRATED_ENV = "TRACKSIDE_SCHEMA_READY"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    # Class attributes: set from the settings in each server process (see `configure`).
    header_timeout: float = 30.0
    max_header_bytes: int = 32 * 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Responses are written through `CoalescingWriter`: a response's head and body leave in one
        # write (one syscall) instead of one each. uvicorn's flow control keeps the real transport.
        self.transport = CoalescingWriter(transport, self.loop, self._body_unread)  # type: ignore[assignment]
        self._header_bytes = 0
        self._in_headers = True
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(
            self.header_timeout, self._headers_too_slow
        )
        # The keep-alive deadline: see `on_response_complete`.
        self._idle_since: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    def _body_unread(self) -> bool:
        """Whether the client may still be sending the body of the request being answered."""
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.disconnected

    def data_received(self, data: bytes) -> None:
        if self.transport.lingering:  # type: ignore[attr-defined]
            return  # the rest of a body nobody will read: see `CoalescingWriter.close`
        self._idle_since = None  # not idle: the keep-alive deadline no longer applies
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if not self._in_headers:
            return
        # Judged once the parser had the bytes: a read that holds a whole head and the start of a
        # large body (one write of a 1 MB upload) has ended the headers by now and is no offence.
        # A head that never ends still grows by at most one read past the limit.
        if self._header_bytes > self.max_header_bytes + 65536:
            self._refuse(b"431 Request Header Fields Too Large", b"request headers too large\n")
            return
        # The deadline is armed only when a request's headers did not arrive whole in one read
        # (rare for a real client): a timer made and cancelled for every request costs more.
        if self._header_timer is None and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_header_timer()
        self._start_cycle()
        # llhttp reports a chunked body's trailer fields through `on_header` too, after the
        # headers are complete, and uvicorn appends them to the list that is `scope["headers"]`:
        # a trailer would reach the upstream and capture as a `Host`, `Cookie` or `Authorization`
        # header. Trailers are never headers: from here on uvicorn appends to a sealed copy (it
        # still reads the headers there for an upgrade), and the fields are dropped, as nginx does.
        # One small copy per request costs less than a check in every `on_header` call.
        self.headers = _SealedHeaders(self.headers)

    def _start_cycle(self) -> None:
        """uvicorn's `on_headers_complete`, with `ProxyCycle` for the request's cycle."""
        parser = self.parser
        http_version = parser.get_http_version()
        scope = self.scope
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        if parser.should_upgrade() and self._should_upgrade():
            return
        parsed_url = httptools.parse_url(self.url)
        raw_path = parsed_url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root_path = self.root_path
        scope["path"] = root_path + path if root_path else path
        scope["raw_path"] = root_path.encode("ascii") + raw_path if root_path else raw_path
        scope["query_string"] = parsed_url.query or b""
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
        ):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        else:
            app = self.app
        existing_cycle = self.cycle
        self.cycle = ProxyCycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if existing_cycle is None or existing_cycle.response_complete:
            self._start_asgi_task(self.cycle, app)
        else:
            self.flow.pause_reading()  # a pipelined request waits for the one before
            self.pipeline.appendleft((self.cycle, app))

    def on_response_complete(self) -> None:
        """uvicorn's, with one keep-alive timer per idle connection instead of one made and
        cancelled for every response: the deadline is kept as a time, and the timer (armed when
        none is) closes the connection only if it has been idle since."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        now = self.loop.time()
        self._idle_since = now
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_at(now + self.timeout_keep_alive, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        since = self._idle_since
        if since is None or self.transport.is_closing():
            return  # busy since (the next response arms it again), or closed
        deadline = since + self.timeout_keep_alive
        if self.loop.time() >= deadline:
            self.transport.close()
        else:
            self._idle_timer = self.loop.call_at(deadline, self._idle_check)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        super().connection_lost(exc)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._in_headers and not self.transport.is_closing():
            if self._header_bytes:
                self._refuse(b"408 Request Timeout", b"request headers timed out\n")
            else:
                self.transport.close()  # an idle connection that never asked: just close it

    def _refuse(self, status: bytes, body: bytes) -> None:
        self._cancel_header_timer()
        self._in_headers = False
        if not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 "
                + status
                + b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: "
                + str(len(body)).encode()
                + b"\r\nconnection: close\r\n\r\n"
                + body
            )
            self.transport.close()


class ProxyCycle(RequestResponseCycle):
    """uvicorn's request-response cycle with a cheaper response head: the same checks, but the
    header names and values are each checked in one regular-expression search over all of them
    joined (a character that is invalid in one is invalid in the joined bytes), not two searches
    per header. About 3 µs a response with nginx's seven headers."""

    async def send(self, message: Any) -> None:
        if self.response_started or self.flow.write_paused or self.disconnected:
            await self._send_more(message)
            return
        if message["type"] != "http.response.start":
            raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{message['type']}'.")
        self.response_started = True
        self.waiting_for_100_continue = False
        status_code = message["status"]
        headers = message.get("headers", ())
        if self.default_headers:
            headers = self.default_headers + list(headers)
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(self.scope),
                self.scope["method"],
                get_path_with_query_string(self.scope),
                self.scope["http_version"],
                status_code,
            )
        content = [STATUS_LINE[status_code]]
        has_connection_close = False
        for name, value in headers:
            name = name.lower()
            if name in _FRAMING:
                if name == b"content-length":
                    if self.chunked_encoding is None:
                        self.expected_content_length = int(value.decode())
                        self.chunked_encoding = False
                elif name == b"transfer-encoding":
                    if value.lower() == b"chunked":
                        self.expected_content_length = 0
                        self.chunked_encoding = True
                elif b"close" in [token.lower().strip() for token in value.split(b",")]:
                    self.keep_alive = False
                    has_connection_close = True
            content += (name, b": ", value, b"\r\n")
        if HEADER_RE.search(b"".join(content[1::4])):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(b"".join(content[3::4])):
            raise RuntimeError("Invalid HTTP header value.")
        if not self.keep_alive and not has_connection_close:
            content.append(b"connection: close\r\n")
        if self.chunked_encoding is None and self.scope["method"] != "HEAD" and status_code not in (204, 304):
            self.chunked_encoding = True  # neither content-length nor transfer-encoding
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))

    async def _send_more(self, message: Any) -> None:
        if not self.response_started or self.response_complete or message["type"] != "http.response.body":
            await super().send(message)  # flow control, a disconnect, and every error: uvicorn's
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
        elif self.chunked_encoding:
            content = [b"%x\r\n" % len(body), body, b"\r\n"] if body else []
            if not more_body:
                content.append(b"0\r\n\r\n")
            self.transport.write(b"".join(content))
        else:
            num_bytes = len(body)
            if num_bytes > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= num_bytes
            self.transport.write(body)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()


_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})


class _SealedHeaders(list[tuple[bytes, bytes]]):
    """A request's headers once they are complete: what is appended after them is dropped."""

    __slots__ = ()

    def append(self, item: tuple[bytes, bytes]) -> None:
        pass


# How long a connection refused mid-body keeps reading (and dropping) before it closes anyway.
LINGER_SECONDS = 5.0


class CoalescingWriter:
    """The client transport, with writes made in one loop iteration sent as one.

    uvicorn writes a response's status line and headers, then each body chunk, each as its own
    `write`: for a small response that is two syscalls where one would do. Writes are kept until
    the end of the loop iteration (or a close), then sent joined. Everything else passes through."""

    __slots__ = ("_transport", "_loop", "_pending", "_body_unread", "lingering")

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        body_unread: Callable[[], bool] | None = None,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._body_unread = body_unread
        self.lingering = False

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def writelines(self, data: Iterable[bytes]) -> None:
        # Through the same queue: a write past it would overtake what waits.
        for chunk in data:
            self.write(chunk)

    def flush(self) -> None:
        pending = self._pending
        if pending:
            self._pending = []
            if not self._transport.is_closing():
                self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        transport = self._transport
        if self.lingering:
            return
        body_unread = self._body_unread
        if body_unread is not None and not transport.is_closing() and body_unread() and transport.can_write_eof():
            # A refusal (413, 503, 408...) answered before the client finished sending its body.
            # Closing now would make the kernel answer the client's next bytes with a reset, and a
            # reset can destroy our answer in the client's receive buffer before it was read: the
            # browser shows "connection reset" instead of the 413. As nginx's lingering close does,
            # send our FIN, read and drop what still comes, and close when the client closes or
            # after LINGER_SECONDS.
            self.lingering = True
            transport.write_eof()
            transport.resume_reading()
            self._loop.call_later(LINGER_SECONDS, transport.close)
            return
        transport.close()

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def configure(settings: Settings) -> None:
    """Apply the limits to the protocol class in this process (the server's workers each call it)."""
    GuardedHttpToolsProtocol.header_timeout = settings.client_timeout
    GuardedHttpToolsProtocol.max_header_bytes = settings.max_header_bytes


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    configure(settings)
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": GuardedHttpToolsProtocol,
        "lifespan": "on",
        # The access log would print client IPs: Trackside never writes a raw IP anywhere.
        "access_log": False,
        # Trackside resolves the client IP itself, from TRACKSIDE_TRUSTED_PROXIES only.
        "proxy_headers": False,
        # The upstream's own Server and Date headers pass through; don't add a second pair.
        "server_header": False,
        "date_header": False,
        "log_level": settings.log_level,
        "timeout_keep_alive": 30,
        "timeout_graceful_shutdown": 10,
    }
