"""A small HTTP/1.1 client for the upstreams: keep-alive pools, streaming both ways, no more.

aiohttp's client costs about 50 µs of CPU per request on this machine (URL objects, multidicts,
tracing hooks, timeouts, cookie handling); this one writes the request head as bytes and parses
the answer with httptools (the same llhttp parser uvicorn uses), about 10 µs. It does exactly what
a reverse proxy needs: requests with streamed bodies (Content-Length or chunked), responses
streamed back with flow control, and connections reused while the upstream keeps them alive.
WebSockets still go through aiohttp (`sidecar/websocket.py`).

What it guarantees about a kept-alive connection, since one visitor's answer must never reach
another: a connection goes back to its pool only when the answer ended exactly where the bytes
ended. Any byte after a whole answer (an unsolicited second response, a body longer than its
`Content-Length`, a body after a 204 or 304 or a HEAD answer), or any byte arriving while the
connection waits in the pool, closes it. Idle connections are closed before the upstream would
close them (`idle_timeout`, shortened by the answer's `Keep-Alive: timeout=`), and after
`max_requests` answers or `max_lifetime` seconds, as nginx's `keepalive_*` settings do.

A request is re-sent at most once, on a new connection: when a pooled connection turned out to be
closed before anything was written to it, or, for a bodiless idempotent request only, when it
closed after taking the request but before any byte of the answer. A POST or PATCH whose head
went out is never sent twice."""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
from collections.abc import AsyncIterator, Iterable

import httptools

# Flow control: stop reading from the upstream while this much of its body waits for the client.
HIGH_WATER = 1024 * 1024

# RFC 9110's idempotent methods (section 9.2.2): re-sent once, and only without a body (a body
# may be half consumed; a PUT carrying one is not worth the risk).
_RETRYABLE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# Response headers the parser callback looks at (lower-cased).
_WATCHED = frozenset({b"transfer-encoding", b"keep-alive", b"connection"})
_CRLF = b"\r\n"
# Control characters llhttp lets through in a reason phrase (stricter parsers refuse them).
_BAD_REASON = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# A head ends with CR LF CR LF; strict llhttp accepts no other line end, and no head line can end
# in CR or LF itself, so exactly these four CR/LF bytes end a head (and a chunked body's last chunk).
_HEAD_END_RUN = 4
# Timers fire up to a clock tick early: an idle connection this close to its end is closed.
_TIMER_SLACK = 0.005
_NEVER = float("inf")


class UpstreamError(Exception):
    """The upstream could not be reached, or broke the exchange before answering: a 502."""


class UpstreamTimeout(Exception):
    """The upstream did not connect or answer in time: a 504."""


class UpstreamBusy(Exception):
    """Every connection slot to the upstream stayed taken for the whole pool wait: a 503."""


class _StaleConnection(Exception):
    """A pooled connection was closed by the upstream before it answered."""

    def __init__(self, written: bool) -> None:
        super().__init__()
        self.written = written  # whether any of the request reached the connection


class _Stop(Exception):
    """Raised in a parser callback to stop llhttp: the bytes after this point are nobody's."""


class UpstreamResponse:
    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = conn.status
        self.headers = conn.response_headers

    async def body(self, read_timeout: float) -> AsyncIterator[bytes]:
        """The body as it arrives; the connection goes back to its pool once it is all read."""
        conn = self._conn
        while True:
            if conn.chunks:
                chunk = conn.chunks.popleft()
                conn.buffered -= len(chunk)
                if conn.paused and conn.buffered < HIGH_WATER // 2:
                    conn.paused = False
                    if conn.transport is not None:
                        conn.transport.resume_reading()
                yield chunk
                continue
            if conn.complete:
                break
            if conn.error is not None:
                raise UpstreamError(str(conn.error))
            if not await conn.progress(read_timeout):
                conn.close()
                raise UpstreamTimeout("the upstream stopped sending its body")
        conn.release()

    def discard(self) -> None:
        """The client went away or the body is not wanted: the connection cannot be reused."""
        self._conn.close()


class _Connection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.loop = pool.loop
        # The one task waiting for this connection's answer, woken by any progress of it (headers,
        # a body chunk, its end, an error). A plain future and a timer cost a fraction of
        # `asyncio.wait_for` on an `Event`, which makes a task and two more loop rounds per wait.
        self.waiter: asyncio.Future[bool] | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.closed = False  # the transport is gone
        self.idle = False  # waiting in the pool's idle list
        self.requests = 0
        self.dies = self.loop.time() + pool.max_lifetime  # closed, at the latest, when idle after this
        self.expires = 0.0  # while idle: when it must be closed
        self.http11: bool | None = None  # whether its answers are HTTP/1.1, once asked
        # How many CR/LF bytes end everything received so far (see `data_received`).
        self.stream_run = 0
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.reset()

    def reset(self) -> None:
        self.status = 0
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.chunks.clear()
        self.buffered = 0
        self.paused = False
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self.received_any = False
        self.head_request = False
        self.head_seen = 0  # bytes received before the head was complete
        self.head_spent = 0  # the size of the 1xx heads before it
        self.informational = 0  # how many 1xx heads came before it
        # The reads until the head was complete: the first, and any more (a head over several reads).
        self.head_first = b""
        self.head_more: list[bytes] | None = None
        self.chunked = False
        self.keep_alive_header: bytes | None = None
        self.connection_header = False
        # How many CR/LF bytes end the answer as parsed so far.
        self.message_run = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.complete or self.idle:
            # Bytes after a whole answer, or while nobody asked: never anyone's answer.
            self.close()
            return
        if not self.headers_done:
            self.head_seen += len(data)
            if not self.received_any:
                self.received_any = True
                self.head_first = data
                if data[0] == 13 or data[0] == 10:
                    # llhttp skips blank lines before a status line; stricter parsers do not.
                    self.fail(UpstreamError("the upstream's answer began with a blank line"))
                    self.close()
                    return
            elif self.head_more is None:
                self.head_more = [data]
            else:
                self.head_more.append(data)
        # llhttp skips CR and LF between messages without a callback (every other byte starts a
        # message, and `on_message_begin` stops it): to see CR/LF sent after the answer, count the
        # CR/LF bytes ending the stream and compare with those ending the answer.
        last = data[-1]
        if last == 10 or last == 13:
            run = len(data) - len(data.rstrip(_CRLF))
            self.stream_run = self.stream_run + run if run == len(data) else run
        else:
            self.stream_run = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.complete:
                self.fail(exc)  # keeps the first error: ours, if a callback stopped the parser
            self.close()
            return
        if self.complete:
            if self.stream_run > self.message_run:
                self.close()
        elif not self.headers_done and self.head_seen > self.pool.max_head_bytes:
            self.fail(UpstreamError(f"the upstream's response head is over {self.pool.max_head_bytes} bytes"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self.idle:
            self.idle = False
            self.pool.forget(self)
        if not self.complete:
            if (
                self.status
                and exc is None
                and self.error is None
                and not self.chunked
                and all(name != b"content-length" for name, _ in self.response_headers)
            ):
                # A body delimited by the end of the connection (HTTP/1.0 style): that was its end.
                self.complete = True
                self.wake()
            else:
                self.fail(exc or ConnectionResetError("the upstream closed the connection"))

    async def progress(self, timeout: float | None) -> bool:
        """Wait for the answer to move on; False if `timeout` (None: no deadline) passed first."""
        waiter = self.waiter = self.loop.create_future()
        timer = None if timeout is None else self.loop.call_later(timeout, _expire, waiter)
        try:
            return await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self.waiter = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:
            raise _Stop()  # a second answer nobody asked for

    def on_status(self, reason: bytes) -> None:
        if not reason.isalpha() and _BAD_REASON.search(reason):
            self.fail(UpstreamError("the upstream's status line has control characters"))
            raise _Stop()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.headers_done:
            return  # a chunked body's trailer: never a header (dropped, as nginx does)
        name = name.lower()
        self.response_headers.append((name, value))
        if name in _WATCHED:
            if name == b"transfer-encoding":
                # Only plain chunked framing is read the same way by every parser on the way
                # (llhttp keeps trailing whitespace: `chunked\t` would not be chunked to it).
                if self.chunked or value.lower() != b"chunked":
                    self.fail(UpstreamError("the upstream sent an unsupported Transfer-Encoding"))
                    raise _Stop()
                self.chunked = True
            elif name == b"keep-alive":
                self.keep_alive_header = value
            else:
                self.connection_header = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # 100 Continue, 103 Early Hints: not the answer; the real one follows. Its head counts
            # towards the cap of the answer's (endless 103s are no way around it).
            self.head_spent += _head_size(self.response_headers)
            self.informational += 1
            self.response_headers = []
            self.chunked = self.connection_header = False
            self.keep_alive_header = None
            return
        if not 200 <= status <= 599:
            # 101 was never asked for (WebSockets go through aiohttp); the rest are no statuses.
            if status == 101:
                self.fail(UpstreamError("the upstream switched protocols (101) unasked"))
            else:
                self.fail(UpstreamError(f"the upstream answered with status {status}, outside 100-599"))
            raise _Stop()
        limit = self.pool.max_head_bytes
        if self.head_seen > limit and self.head_spent + _head_size(self.response_headers) > limit:
            self.fail(UpstreamError(f"the upstream's response head is over {limit} bytes"))
            raise _Stop()
        if self.informational:
            head = self.head_first + b"".join(self.head_more or ())
            if _blank_line_after_1xx(head, self.informational):
                self.fail(UpstreamError("the upstream sent a blank line after an informational answer"))
                raise _Stop()
        self.head_first = b""  # its body may be in the same read: not held longer than needed
        self.status = status
        keep_alive = self.parser.should_keep_alive()
        if keep_alive and self.connection_header:
            # An HTTP/1.0 `Connection: keep-alive` is not trusted. Node says `Connection:
            # keep-alive` in every answer, so the version (a quarter of a µs to ask) is asked
            # once per connection: an upstream does not change its HTTP version mid-connection.
            if self.http11 is None:
                self.http11 = self.parser.get_http_version() == "1.1"
            keep_alive = self.http11
        self.keep_alive = keep_alive
        self.message_run = _HEAD_END_RUN
        self.headers_done = True
        if self.head_request:
            # llhttp cannot be told the request was HEAD: it would wait for a body that never
            # comes. The answer is complete; this connection is not reused.
            self.keep_alive = False
            self.complete = True
        self.wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            raise _Stop()  # a body after a HEAD answer
        if not self.chunked:
            last = body[-1]
            if last == 10 or last == 13:
                run = len(body) - len(body.rstrip(_CRLF))
                self.message_run = self.message_run + run if run == len(body) else run
            else:
                self.message_run = 0
        self.chunks.append(body)
        self.buffered += len(body)
        self.wake()
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.status == 0 or self.complete:
            return  # the end of a 1xx, or of a HEAD answer
        if self.chunked:
            self.message_run = _HEAD_END_RUN  # `0` CR LF (trailers) CR LF
        self.complete = True
        self.wake()

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.wake()

    def release(self) -> None:
        if not (self.keep_alive and not self.closed and self.error is None and self.pool.keep(self)):
            self.close()

    def close(self) -> None:
        self.keep_alive = False
        if self.idle:
            self.idle = False
            self.pool.forget(self)
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Keep-alive connections to one upstream (host, port).

    `limit` requests at a time wait for their answer's head (others wait up to `pool_wait`
    seconds for a slot, then `UpstreamBusy`); at most `max_idle` connections wait idle."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        limit: int,
        connect_timeout: float,
        tls: bool = False,
        idle_timeout: float = 4.0,
        max_idle: int = 64,
        max_requests: int = 1000,
        max_lifetime: float = 3600.0,
        max_head_bytes: int = 64 * 1024,
        pool_wait: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl.create_default_context() if tls else None
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.max_requests = max_requests
        self.max_lifetime = max_lifetime
        self.max_head_bytes = max_head_bytes
        self.pool_wait = pool_wait
        self.loop = asyncio.get_running_loop()
        # Most recently used last: taken from the right (warmest), expired from anywhere.
        self.idle: collections.deque[_Connection] = collections.deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_at = _NEVER  # when the sweeper fires
        self._keep_alive_header: bytes | None = None  # the last `Keep-Alive` value, parsed
        self._keep_alive_timeout: int | None = None
        self.busy = 0
        self._waiters: collections.deque[asyncio.Future[bool]] = collections.deque()

    async def _connect(self) -> _Connection:
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Connection(self), self.host, self.port, ssl=self.ssl),
                self.connect_timeout,
            )
        except TimeoutError:
            raise UpstreamTimeout("connecting to the upstream timed out") from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect to the upstream: {exc.strerror or exc}") from None
        return conn

    def keep(self, conn: _Connection) -> bool:
        """Put `conn` back in the pool if the limits allow it; False if it must be closed."""
        if len(self.idle) >= self.max_idle or conn.requests >= self.max_requests:
            return False
        now = self.loop.time()
        expires = now + self.idle_timeout
        header = conn.keep_alive_header
        if header is not None:
            # The upstream says when it will close: close a second before it does. An upstream
            # sends the same value every time: it is parsed once.
            if header != self._keep_alive_header:
                self._keep_alive_header = header
                self._keep_alive_timeout = _keep_alive_timeout(header)
            if self._keep_alive_timeout is not None and now + self._keep_alive_timeout - 1 < expires:
                expires = now + self._keep_alive_timeout - 1
        if conn.dies < expires:
            expires = conn.dies
        if expires <= now + _TIMER_SLACK:
            return False
        conn.reset()
        conn.expires = expires
        conn.idle = True
        self.idle.append(conn)
        if expires < self._sweep_at:
            if self._sweeper is not None:
                self._sweeper.cancel()
            self._sweeper = self.loop.call_at(expires, self._sweep)
            self._sweep_at = expires
        return True

    def _sweep(self) -> None:
        """Close the idle connections whose time is up, before the upstream closes them."""
        self._sweeper = None
        self._sweep_at = _NEVER
        deadline = self.loop.time() + _TIMER_SLACK
        for conn in [conn for conn in self.idle if conn.expires <= deadline]:
            conn.close()
        if self.idle:
            self._sweep_at = min(conn.expires for conn in self.idle)
            self._sweeper = self.loop.call_at(self._sweep_at, self._sweep)

    def forget(self, conn: _Connection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def _take(self) -> _Connection | None:
        idle = self.idle
        if not idle:
            return None
        now = self.loop.time()
        while idle:
            conn = idle.pop()
            conn.idle = False
            transport = conn.transport
            if transport is None or transport.is_closing():
                continue
            if conn.expires <= now:
                conn.close()
                continue
            return conn
        return None

    async def _wait_for_slot(self) -> None:
        waiter: asyncio.Future[bool] = self.loop.create_future()
        self._waiters.append(waiter)
        timer = self.loop.call_later(self.pool_wait, _expire, waiter)
        try:
            got = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._release()  # handed a slot just as it was cancelled: pass it on
            raise
        finally:
            timer.cancel()
        if not got:
            raise UpstreamBusy(f"no connection to the upstream came free within {self.pool_wait:g} s")

    def _release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)  # the slot passes on, still counted as busy
                return
        self.busy -= 1

    async def request(
        self,
        method: str,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None,
        *,
        chunked: bool,
        read_timeout: float,
    ) -> UpstreamResponse:
        head = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        head_bytes = b"".join(head)
        if self.busy < self.limit:
            # A freed slot goes straight to a waiter, so a free one means nobody waits.
            self.busy += 1
        else:
            await self._wait_for_slot()
        try:
            conn = self._take()
            if conn is not None:
                try:
                    return await self._exchange(conn, method, head_bytes, body, chunked, read_timeout)
                except _StaleConnection as stale:
                    if stale.written and (body is not None or method not in _RETRYABLE):
                        # The upstream may have acted on it: sending it again could do it twice.
                        raise UpstreamError(
                            f"the upstream closed a kept-alive connection after taking a {method} request; not re-sent"
                        ) from None
            # Once more, on a new connection: nothing was sent, or sending again is harmless.
            conn = await self._connect()
            try:
                return await self._exchange(conn, method, head_bytes, body, chunked, read_timeout)
            except _StaleConnection:
                raise UpstreamError("the upstream closed the connection without answering") from None
        finally:
            if self._waiters:
                self._release()
            else:
                self.busy -= 1

    async def _exchange(
        self,
        conn: _Connection,
        method: str,
        head: bytes,
        body: AsyncIterator[bytes] | None,
        chunked: bool,
        read_timeout: float,
    ) -> UpstreamResponse:
        transport = conn.transport
        if transport is None or transport.is_closing():
            raise _StaleConnection(written=False)
        try:
            conn.requests += 1
            conn.head_request = method == "HEAD"
            transport.write(head)
            if body is not None:
                # No answer deadline while the client is still sending: the body has its own (each
                # chunk within the client timeout, each write accepted within the read timeout).
                sender = asyncio.ensure_future(self._send_body(conn, body, chunked, read_timeout))
                sender.add_done_callback(lambda _: conn.wake())
                try:
                    # Until the answer's headers arrive or the body has been sent (or failed).
                    while not (conn.headers_done or conn.error or sender.done()):
                        await conn.progress(None)
                except BaseException:
                    sender.cancel()
                    conn.close()
                    raise
                if sender.done() and sender.exception() is not None:
                    conn.close()
                    raise sender.exception()  # type: ignore[misc]
                if not sender.done():
                    # The upstream answered before taking the whole body (a 413, say): stop sending.
                    sender.cancel()
                    conn.keep_alive = False
            await self._headers(conn, read_timeout)
            if conn.error is not None and not conn.status:
                error = conn.error
                stale = not conn.received_any
                conn.close()
                if stale:
                    raise _StaleConnection(written=True)
                if isinstance(error, UpstreamError):
                    raise error
                raise UpstreamError(f"the upstream broke the exchange: {error}")
            return UpstreamResponse(conn)
        except BaseException:
            # A timeout, a failed body, a stale connection, a cancelled request: whatever comes
            # on this connection now belongs to nobody.
            conn.close()
            raise

    async def _headers(self, conn: _Connection, read_timeout: float) -> None:
        while not (conn.headers_done or conn.error):
            if not await conn.progress(read_timeout):
                conn.close()
                raise UpstreamTimeout("the upstream did not answer in time")

    async def _send_body(
        self, conn: _Connection, body: AsyncIterator[bytes], chunked: bool, write_timeout: float
    ) -> None:
        async for chunk in body:
            if conn.transport is None:
                return
            if chunked:
                conn.transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:
                conn.transport.write(chunk)
            if not conn.can_write.is_set():
                try:
                    await asyncio.wait_for(conn.can_write.wait(), write_timeout)
                except TimeoutError:
                    raise UpstreamTimeout("the upstream stopped reading the request body") from None
        if chunked and conn.transport is not None:
            conn.transport.write(b"0\r\n\r\n")

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
            self._sweep_at = _NEVER
        for conn in list(self.idle):
            conn.close()
        self.idle.clear()


def _head_size(headers: list[tuple[bytes, bytes]]) -> int:
    # The status line is not kept; 17 bytes is its shortest ("HTTP/1.1 200 \r\n" and the blank line).
    return sum(len(name) + len(value) + 4 for name, value in headers) + 17


def _blank_line_after_1xx(head: bytes, informational: int) -> bool:
    """Whether a CR or LF follows one of the `informational` 1xx heads at the start of `head`
    (llhttp skips them silently). A head holds no CR LF CR LF but its end, and a 1xx no body."""
    end = 0
    for _ in range(informational):
        end = head.find(b"\r\n\r\n", end)
        if end < 0:
            return False
        end += 4
        if head[end : end + 1] in (b"\r", b"\n"):
            return True
    return False


def _keep_alive_timeout(value: bytes) -> int | None:
    """The `timeout=` of a `Keep-Alive` header (`timeout=5, max=1000`), if it has a valid one."""
    for part in value.split(b","):
        key, _, number = part.partition(b"=")
        if key.strip().lower() == b"timeout":
            number = number.strip()
            return int(number) if number.isdigit() else None
    return None


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
