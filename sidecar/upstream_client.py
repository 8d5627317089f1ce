"""A small HTTP/1.1 client for the upstreams: keep-alive pools, streaming both ways, no more.

aiohttp's client costs about 50 µs of CPU per request on this machine (URL objects, multidicts,
tracing hooks, timeouts, cookie handling); this one writes the request head as bytes and parses
the answer with httptools (the same llhttp parser uvicorn uses), about 10 µs. It does exactly what
a reverse proxy needs: requests with streamed bodies (Content-Length or chunked), responses
streamed back with flow control, connections reused while the upstream keeps them alive, and a
single retry on a fresh connection when a pooled one turns out to be closed before any byte of
the answer arrived. WebSockets still go through aiohttp (`sidecar/websocket.py`)."""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator, Iterable

import httptools

# Flow control: stop reading from the upstream while this much of its body waits for the client.
HIGH_WATER = 1024 * 1024


class UpstreamError(Exception):
    """The upstream could not be reached, or broke the exchange before answering: a 502."""


class UpstreamTimeout(Exception):
    """The upstream did not connect or answer in time: a 504."""


class _StaleConnection(Exception):
    """A pooled connection was closed by the upstream before it answered: retry on a new one."""


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
        self.loop = asyncio.get_running_loop()
        # The one task waiting for this connection's answer, woken by any progress of it (headers,
        # a body chunk, its end, an error). A plain future and a timer cost a fraction of
        # `asyncio.wait_for` on an `Event`, which makes a task and two more loop rounds per wait.
        self.waiter: asyncio.Future[bool] | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.reset()
        self.closed = False
        self.can_write = asyncio.Event()
        self.can_write.set()

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

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if not self.complete:
            names = {name for name, _ in self.response_headers}
            if self.status and exc is None and b"content-length" not in names and b"transfer-encoding" not in names:
                # A body delimited by the end of the connection (HTTP/1.0 style): that was its end.
                self.complete = True
                self.wake()
            else:
                self.fail(exc or ConnectionResetError("the upstream closed the connection"))
        self.pool.forget(self)

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
    def on_header(self, name: bytes, value: bytes) -> None:
        self.response_headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # 100 Continue, 103 Early Hints: not the answer; the real one follows.
            self.response_headers = []
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True
        if self.head_request:
            # llhttp cannot be told the request was HEAD: it would wait for a body that never
            # comes. The answer is complete; this connection is not reused.
            self.keep_alive = False
            self.complete = True
        self.wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        self.wake()
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.status == 0:
            return  # the end of a 1xx
        self.complete = True
        self.wake()

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.wake()

    def release(self) -> None:
        if self.keep_alive and not self.closed and self.error is None:
            self.reset()
            self.pool.put_back(self)
        else:
            self.close()

    def close(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()


class UpstreamPool:
    """Keep-alive connections to one upstream (host, port)."""

    def __init__(self, host: str, port: int, *, limit: int, connect_timeout: float, tls: bool = False) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl.create_default_context() if tls else None
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.idle: collections.deque[_Connection] = collections.deque()
        self.open = 0
        self._slots = asyncio.Semaphore(limit)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port, ssl=self.ssl),
                self.connect_timeout,
            )
        except TimeoutError:
            raise UpstreamTimeout("connecting to the upstream timed out") from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect to the upstream: {exc.strerror or exc}") from None
        self.open += 1
        return conn

    def put_back(self, conn: _Connection) -> None:
        self.idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

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
        async with self._slots:
            while self.idle:
                conn = self.idle.pop()
                if conn.closed:
                    continue
                try:
                    return await self._exchange(conn, method, head_bytes, body, chunked, read_timeout)
                except _StaleConnection:
                    if body is not None:
                        # The body may be partly consumed: retrying could send half of it again.
                        raise UpstreamError("the upstream closed a kept-alive connection") from None
            conn = await self._connect()
            try:
                return await self._exchange(conn, method, head_bytes, body, chunked, read_timeout)
            except _StaleConnection:
                raise UpstreamError("the upstream closed the connection without answering") from None

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
            raise _StaleConnection()
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
            stale = not conn.received_any
            conn.close()
            if stale:
                raise _StaleConnection()
            raise UpstreamError(f"the upstream broke the exchange: {conn.error}")
        return UpstreamResponse(conn)

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
        while self.idle:
            self.idle.pop().close()


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)
