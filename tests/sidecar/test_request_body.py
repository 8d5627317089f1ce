"""Request bodies: taken whole before an upstream connection is used, under a minimum rate, a
process-wide cap on what waits on disk, and a per-address cap on requests in flight.

A raw asyncio upstream records what it receives and when, so the tests can tell what the
upstream saw before the client had finished."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.servers import run_sidecar
from trackside.settings import Settings


@dataclass
class Seen:
    head: bytes
    head_at: float
    body: bytearray = field(default_factory=bytearray)
    first_body_at: float | None = None
    done_at: float | None = None

    def header(self, name: bytes) -> list[bytes]:
        lines = self.head.split(b"\r\n")[1:]
        return [line.split(b":", 1)[1].strip() for line in lines if line.lower().startswith(name + b":")]


class RecordingUpstream:
    """An HTTP/1.1 upstream on a loopback port that records each request as its bytes come in,
    and answers 200 with the body's length and SHA-256."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.connections = 0
        self.loop = asyncio.get_running_loop()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen = Seen(head, self.loop.time())
                self.seen.append(seen)
                lengths = seen.header(b"content-length")
                if seen.header(b"transfer-encoding"):
                    await self._chunked(reader, seen)
                elif lengths:
                    left = int(lengths[0])
                    while left:
                        data = await reader.read(min(left, 65536))
                        if not data:
                            return
                        if seen.first_body_at is None:
                            seen.first_body_at = self.loop.time()
                        seen.body += data
                        left -= len(data)
                seen.done_at = self.loop.time()
                answer = json.dumps(
                    {"length": len(seen.body), "sha256": hashlib.sha256(seen.body).hexdigest()}
                ).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(answer), answer)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def _chunked(self, reader: asyncio.StreamReader, seen: Seen) -> None:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            if seen.first_body_at is None:
                seen.first_body_at = self.loop.time()
            seen.body += await reader.readexactly(size)
            await reader.readexactly(2)


@contextlib.asynccontextmanager
async def recording_upstream() -> AsyncIterator[tuple[str, RecordingUpstream]]:
    upstream = RecordingUpstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", upstream
    finally:
        server.close()


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def _answer(reader: asyncio.StreamReader, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), timeout)
    return int(lines[0].split()[1]), headers, body


def _head(path: str, length: int | None = None) -> bytes:
    framing = b"transfer-encoding: chunked" if length is None else b"content-length: %d" % length
    return b"POST %s HTTP/1.1\r\nhost: site.example\r\n%s\r\n\r\n" % (path.encode(), framing)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def test_slow_uploads_leave_the_pool_to_pages(upstream_url, make_settings):
    # The scene, scaled down: 40 clients trickle a body a byte a second against a pool of
    # 16 upstream connections. Before, each held a connection while it trickled (the per-read
    # timeout never fires) and the pages queued behind them; now none holds one until its body is in.
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, upstream_connections=16)
    async with run_sidecar(settings) as (url, app):
        trickles = [await _connect(url) for _ in range(40)]
        for _, writer in trickles:
            writer.write(_head("/upload", 100))

        async def trickle() -> None:
            for _ in range(9):
                for _, writer in trickles:
                    writer.write(b"x")
                await asyncio.sleep(1.0)

        trickling = asyncio.create_task(trickle())
        await asyncio.sleep(1.5)
        timings = []
        async with httpx.AsyncClient(base_url=url, timeout=2.0) as client:
            loop = asyncio.get_running_loop()
            for _ in range(12):
                start = loop.time()
                response = await client.get("/p/abc", headers={"accept": "text/html"})
                timings.append((response.status_code, loop.time() - start))
                await asyncio.sleep(0.5)
        assert not trickling.done()  # the uploads were still trickling all along
        trickling.cancel()
        for _, writer in trickles:
            writer.close()
    assert [status for status, _ in timings] == [200] * 12
    assert max(seconds for _, seconds in timings) < 2.0


@pytest.mark.parametrize("streamed", [False, True], ids=["buffered", "streamed"])
async def test_body_slower_than_the_minimum_rate_is_408_after_the_grace(upstream_url, make_settings, streamed):
    settings = make_settings(
        frontend_url=upstream_url,
        api_url=upstream_url,
        body_rate_grace=1.0,
        body_min_rate=500,
        stream_uploads=("/upload",) if streamed else (),
    )
    async with run_sidecar(settings) as (url, _):
        reader, writer = await _connect(url)
        loop = asyncio.get_running_loop()
        start = loop.time()
        writer.write(_head("/upload", 1000))

        async def trickle() -> None:
            # A byte every 0.1 s: never idle for a second, 10 bytes/s on average.
            for _ in range(100):
                writer.write(b"x")
                await asyncio.sleep(0.1)

        trickling = asyncio.create_task(trickle())
        status, headers, body = await _answer(reader)
        took = loop.time() - start
        trickling.cancel()
        writer.close()
    assert (status, body) == (408, b"request body too slow\n")
    assert headers["connection"] == "close"
    assert 0.9 < took < 2.5


async def test_long_upload_that_keeps_the_rate_passes(upstream_url, make_settings):
    # No whole-body deadline: 2.5 s of a body at 1,000 bytes/s, well past a 1 s grace, passes.
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, body_rate_grace=1.0, body_min_rate=500)
    async with run_sidecar(settings) as (url, _):
        reader, writer = await _connect(url)
        writer.write(_head("/upload", 2500))
        for _ in range(25):
            writer.write(b"y" * 100)
            await asyncio.sleep(0.1)
        status, _, body = await _answer(reader)
        writer.close()
    assert (status, json.loads(body)) == (200, {"received": 2500})


async def test_1mb_body_arrives_whole_after_the_client_finished(make_settings):
    payload = os.urandom(1024 * 1024)
    async with recording_upstream() as (upstream_url, upstream):
        settings = make_settings(frontend_url=upstream_url, api_url=upstream_url)
        async with run_sidecar(settings) as (url, _):
            loop = asyncio.get_running_loop()
            last_sent = 0.0

            async def slowly() -> AsyncIterator[bytes]:
                nonlocal last_sent
                for i in range(0, len(payload), 128 * 1024):
                    if i + 128 * 1024 >= len(payload):
                        last_sent = loop.time()  # the last part is not even handed over yet
                    yield payload[i : i + 128 * 1024]
                    await asyncio.sleep(0.05)

            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                response = await client.post(
                    "/upload", content=slowly(), headers={"content-length": str(len(payload))}
                )
    assert response.status_code == 200
    assert response.json() == {"length": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    [seen] = upstream.seen
    assert seen.header(b"content-length") == [b"1048576"]
    assert seen.header(b"transfer-encoding") == []
    assert bytes(seen.body) == payload
    # No upstream connection until the whole body was in.
    assert seen.head_at >= last_sent


@pytest.mark.parametrize("size", [30, 300 * 1024], ids=["in-memory", "in-a-file"])
async def test_chunked_body_arrives_with_a_content_length(make_settings, size):
    payload = os.urandom(size)
    async with recording_upstream() as (upstream_url, upstream):
        settings = make_settings(frontend_url=upstream_url, api_url=upstream_url)
        async with run_sidecar(settings) as (url, _):

            async def parts() -> AsyncIterator[bytes]:
                step = max(1, size // 3)
                for i in range(0, size, step):
                    yield payload[i : i + step]

            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                response = await client.post("/upload", content=parts())
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.json() == {"length": size, "sha256": hashlib.sha256(payload).hexdigest()}
    [seen] = upstream.seen
    assert seen.header(b"content-length") == [str(size).encode()]
    assert seen.header(b"transfer-encoding") == []
    assert bytes(seen.body) == payload


def _open_files_under(folder: str) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(folder + "/"):
            found.append(fd)
    return found


async def test_large_body_waits_in_an_unlinked_0600_file(upstream_url, make_settings, tmp_path):
    folder = tmp_path / "bodies"
    folder.mkdir()
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, body_buffer_dir=str(folder))
    async with run_sidecar(settings) as (url, app):
        reader, writer = await _connect(url)
        writer.write(_head("/upload", 1024 * 1024) + b"a" * 300 * 1024)
        await writer.drain()
        await asyncio.sleep(0.3)
        # Mid-upload: one file open, no name in the folder, readable by its owner only.
        assert os.listdir(folder) == []
        [fd] = _open_files_under(str(folder))
        assert os.stat(f"/proc/self/fd/{fd}").st_mode & 0o777 == 0o600
        assert os.stat(f"/proc/self/fd/{fd}").st_nlink == 0
        assert app.proxy.bodies.budget.used == 1024 * 1024  # the declared length, claimed at once
        writer.write(b"b" * (1024 * 1024 - 300 * 1024))
        status, _, body = await _answer(reader)
        writer.close()
        assert (status, json.loads(body)) == (200, {"received": 1024 * 1024})
        assert os.listdir(folder) == []
        assert _open_files_under(str(folder)) == []
        assert app.proxy.bodies.budget.used == 0


async def test_buffer_cap_full_is_503_and_frees_when_done(upstream_url, make_settings, tmp_path):
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, body_buffer_max_bytes=1_000_000, body_buffer_dir=str(tmp_path)
    )
    async with run_sidecar(settings) as (url, app):
        # One upload of 800,000 bytes in progress holds 800,000 of the 1,000,000.
        held_reader, held = await _connect(url)
        held.write(_head("/upload", 800_000) + b"a" * 1000)
        await held.drain()
        await asyncio.sleep(0.2)

        # A declared 400,000 would not fit: refused at once, before its body is read.
        reader, writer = await _connect(url)
        writer.write(_head("/upload", 400_000))
        status, headers, body = await _answer(reader)
        writer.close()
        assert (status, body) == (503, b"request body buffer full, try again later\n")
        assert headers["x-trackside-error"] == "body_buffer_full"

        # A chunked one is refused when it grows past what is left.
        reader, writer = await _connect(url)
        writer.write(_head("/upload") + _chunk(b"c" * 100_000))
        await asyncio.sleep(0.2)
        assert app.proxy.bodies.budget.used == 900_000
        writer.write(_chunk(b"c" * 150_000))
        status, headers, body = await _answer(reader)
        writer.close()
        assert (status, headers["x-trackside-error"]) == (503, "body_buffer_full")
        await asyncio.sleep(0.1)
        assert app.proxy.bodies.budget.used == 800_000

        held.write(b"a" * 799_000)
        status, _, body = await _answer(held_reader)
        held.close()
        assert (status, json.loads(body)) == (200, {"received": 800_000})
        assert app.proxy.bodies.budget.used == 0

        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            again = await client.post("/upload", content=b"d" * 400_000)
        assert again.json() == {"received": 400_000}
        assert app.proxy.bodies.budget.used == 0


async def test_stream_uploads_route_streams_and_others_wait(make_settings):
    async with recording_upstream() as (upstream_url, upstream):
        settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, stream_uploads=("/api/post/upload",))
        async with run_sidecar(settings) as (url, _):
            streamed_reader, streamed = await _connect(url)
            buffered_reader, buffered = await _connect(url)
            streamed.write(_head("/api/post/upload", 3000) + b"s" * 1000)
            buffered.write(_head("/api/post/other", 3000) + b"b" * 1000)
            await asyncio.sleep(0.5)
            # The client has sent a third of each body: the opted-out route is already at the
            # upstream with those bytes, the other one not at all.
            [seen] = upstream.seen
            assert seen.head.startswith(b"POST /api/post/upload ")
            assert bytes(seen.body) == b"s" * 1000
            assert seen.header(b"content-length") == [b"3000"]
            streamed.write(b"s" * 2000)
            buffered.write(b"b" * 2000)
            first = await _answer(streamed_reader)
            second = await _answer(buffered_reader)
            streamed.close()
            buffered.close()
    assert first[0] == second[0] == 200
    assert json.loads(first[2])["length"] == json.loads(second[2])["length"] == 3000
    assert [s.head.split(b" ")[1] for s in upstream.seen] == [b"/api/post/upload", b"/api/post/other"]


async def test_concurrent_requests_per_address_capped_with_429(upstream_url, make_settings):
    settings = make_settings(
        frontend_url=upstream_url,
        api_url=upstream_url,
        max_concurrent_per_client=2,
        trusted_proxies=Settings.from_env({"TRACKSIDE_TRUSTED_PROXIES": "127.0.0.1/32"}).trusted_proxies,
    )
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            one = {"x-forwarded-for": "203.0.113.1"}
            slow = [asyncio.create_task(client.get("/slow?s=1", headers=one)) for _ in range(2)]
            await asyncio.sleep(0.3)
            over = await client.get("/p/abc", headers=one)
            # Another client behind the same trusted proxy has its own count.
            other = await client.get("/p/abc", headers={"x-forwarded-for": "203.0.113.2"})
            # While the two are in flight, only hashes are held, never an address.
            held = dict(app.proxy.client_limit.in_flight)
            answers = await asyncio.gather(*slow)
            after = await client.get("/p/abc", headers=one)
    assert over.status_code == 429
    assert over.text == "too many requests from this address at once\n"
    assert over.headers["retry-after"] == "1"
    assert over.headers["x-trackside-error"] == "too_many_requests"
    assert other.status_code == 200
    assert [r.status_code for r in answers] == [200, 200]
    assert after.status_code == 200
    assert list(held.values()) == [2]
    assert all(len(key) == 16 and b"203.0.113" not in key for key in held)
    assert app.proxy.client_limit.in_flight == {}


def test_body_settings_are_checked(tmp_path):
    from trackside.errors import ConfigError

    with pytest.raises(ConfigError, match="TRACKSIDE_BODY_MIN_RATE must be 0 or more"):
        Settings.from_env({"TRACKSIDE_BODY_MIN_RATE": "-1"})
    with pytest.raises(ConfigError, match="TRACKSIDE_STREAM_UPLOADS"):
        Settings.from_env({"TRACKSIDE_STREAM_UPLOADS": "api/upload"})
    with pytest.raises(ConfigError, match="TRACKSIDE_BODY_BUFFER_DIR"):
        Settings.from_env({"TRACKSIDE_BODY_BUFFER_DIR": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="TRACKSIDE_BODY_BUFFER_DIR must be outside the spool"):
        Settings.from_env({"TRACKSIDE_BODY_BUFFER_DIR": str(tmp_path), "TRACKSIDE_SPOOL_DIR": str(tmp_path)})
    settings = Settings.from_env(
        {"TRACKSIDE_STREAM_UPLOADS": "/api/post/upload, /x", "TRACKSIDE_BODY_RATE_GRACE": "5"}
    )
    assert settings.stream_uploads == ("/api/post/upload", "/x")
    assert settings.body_rate_grace == 5.0
    assert Settings.from_env(settings.to_env()).stream_uploads == ("/api/post/upload", "/x")


async def test_wait_for_a_pooled_connection_has_a_deadline_then_503(upstream_url, make_settings):
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, upstream_connections=1, upstream_pool_wait=0.5
    )
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            holder = asyncio.create_task(client.get("/slow?s=2"))
            await asyncio.sleep(0.3)
            loop = asyncio.get_running_loop()
            start = loop.time()
            busy = await client.get("/p/abc", headers={"accept": "text/html"})
            waited = loop.time() - start
            held = await holder
            after = await client.get("/p/abc", headers={"accept": "text/html"})
    assert busy.status_code == 503
    assert busy.text == "upstream busy, try again shortly\n"
    assert busy.headers["retry-after"] == "5"
    assert busy.headers["x-trackside-error"] == "upstream_busy"
    assert 0.45 < waited < 1.5
    assert app.metrics.counts["upstream_busy"] == 1
    assert (held.status_code, held.text) == (200, "late")
    assert after.status_code == 200


async def test_a_refusal_mid_upload_reaches_the_client_whole(upstream_url, make_settings, tmp_path):
    # The sidecar refuses a body that outgrows the buffer cap while the client is still sending.
    # A plain close would answer the client's next bytes with a reset, which can wipe the 503 out
    # of its receive buffer; the lingering close keeps reading (and dropping) until the client is
    # done, so the answer is always read whole, and the connection then ends cleanly.
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, body_buffer_max_bytes=200_000, body_buffer_dir=str(tmp_path)
    )
    async with run_sidecar(settings) as (url, app):
        for _ in range(5):
            reader, writer = await _connect(url)
            writer.write(_head("/upload"))
            # 2 MB in 64 KiB chunks, far past the cap, sent as fast as the socket takes them.
            for _ in range(32):
                writer.write(_chunk(b"x" * 65536))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            status, headers, body = await _answer(reader)
            assert (status, body) == (503, b"request body buffer full, try again later\n")
            assert headers["connection"] == "close"
            assert await asyncio.wait_for(reader.read(), 10) == b""  # then the sidecar's FIN
            writer.close()
        assert app.proxy.bodies.budget.used == 0
