"""The proxy's duties, through a real sidecar in front of a real upstream on loopback ports."""

from __future__ import annotations

import asyncio
import gzip
import json
import resource

import httpx
import pytest
import websockets

from tests.conftest import DOC
from tests.servers import free_port, run_sidecar


@pytest.fixture
async def sidecar(upstream_url, make_settings):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, upstream_timeout=1.0, client_timeout=1.0)
    async with run_sidecar(settings) as (url, app):
        yield url, app


async def test_routes_api_and_frontend_and_forwarded_headers(sidecar):
    url, _ = sidecar
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.get("/echo/a%20b/c?x=1&y=2", headers={"host": "makapix.club", "x-forwarded-for": "6.6.6.6"})
        api = await client.post("/api/echo/thing", content=b"abc")
    assert r.status_code == 200
    body = r.json()
    headers = dict(body["headers"])
    assert body["raw_path"] == "/echo/a%20b/c"
    assert body["query"] == "x=1&y=2"
    # The peer (127.0.0.1) is not a trusted proxy: its X-Forwarded-For is replaced, never believed.
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "makapix.club"
    assert headers["host"] == "makapix.club"
    assert api.json()["path"] == "/api/echo/thing"
    assert api.json()["body_length"] == 3


async def test_trusted_proxy_forwarded_for_is_extended(upstream_url, make_settings):
    from trackside.settings import Settings

    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url)
    settings = Settings(**{**settings.__dict__, "trusted_proxies": Settings.from_env(
        {"TRACKSIDE_TRUSTED_PROXIES": "127.0.0.0/8"}).trusted_proxies})
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.get("/echo/x", headers={"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https"})
    headers = dict(r.json()["headers"])
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "https"


async def test_route_rule_strips_prefix(upstream_url, make_settings):
    from trackside.settings import RouteRule

    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, routes=(RouteRule("/media", upstream_url + "/echo", True),)
    )
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.get("/media/cat.png")
    assert r.json()["path"] == "/echo/cat.png"


async def test_api_strip_prefix_like_caddy_handle_path(upstream_url, make_settings):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url + "/echo", api_strip_prefix=True)
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.get("/api/post/recent")
    assert r.json()["path"] == "/echo/post/recent"


async def test_several_set_cookie_headers_kept(sidecar):
    url, _ = sidecar
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.get("/cookies")
    cookies = r.headers.get_list("set-cookie")
    assert len(cookies) == 2
    assert cookies[0].startswith("a=1")
    assert cookies[1].startswith("b=2")


async def test_redirect_passed_untouched(sidecar):
    url, _ = sidecar
    async with httpx.AsyncClient(base_url=url, follow_redirects=False) as client:
        r = await client.get("/redirect")
    assert r.status_code == 302
    assert r.headers["location"] == "/elsewhere?x=1"


async def test_compressed_body_passed_as_is(sidecar):
    url, _ = sidecar
    async with httpx.AsyncClient(base_url=url) as client:
        async with client.stream("GET", "/gzip", headers={"accept-encoding": "gzip"}) as r:
            raw = b"".join([chunk async for chunk in r.aiter_raw()])
    assert r.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == b"hello " * 100


async def test_hop_by_hop_and_connection_named_headers_stripped(sidecar):
    url, _ = sidecar
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/hop")
        echoed = await client.get(
            "/echo/x", headers={"connection": "keep-alive, x-drop-me", "x-drop-me": "1", "te": "trailers"}
        )
    assert "x-secret" not in response.headers
    assert "keep-alive" not in response.headers
    names = {k for k, _ in echoed.json()["headers"]}
    assert "x-drop-me" not in names
    assert "te" not in names


async def test_chunked_response_streams(sidecar):
    url, _ = sidecar
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.get("/chunked")
    assert r.text == "".join(f"part{i}\n" for i in range(5))


async def test_streamed_head_and_first_part_are_not_held_back(sidecar):
    # The server joins writes made in one loop iteration (a response's head and body in one
    # syscall); it must never hold them for longer: the head and the first part arrive at once.
    url, _ = sidecar
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=url) as client:
        start = loop.time()
        async with client.stream("GET", "/trickle") as r:
            parts = r.aiter_raw()
            first = await anext(parts)
            first_at = loop.time() - start
            rest = b"".join([chunk async for chunk in parts])
            done_at = loop.time() - start
    assert r.status_code == 200
    assert first == b"first\n"
    assert rest == b"second\n"
    assert first_at < 0.3 < 0.5 <= done_at


async def test_pipelined_requests_answered_in_order(sidecar):
    # Two requests in one packet: two answers, in order, whole, on the same connection.
    url, _ = sidecar
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /echo/one HTTP/1.1\r\nhost: a\r\n\r\nGET /echo/two HTTP/1.1\r\nhost: a\r\n\r\n")
    await writer.drain()
    paths = []
    for _ in range(2):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
        body = await asyncio.wait_for(reader.readexactly(length), 5)
        paths.append(json.loads(body)["path"])
    writer.close()
    assert paths == ["/echo/one", "/echo/two"]


async def test_head_request(sidecar):
    url, _ = sidecar
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.head("/p/abc", headers=DOC)
    assert r.status_code == 200
    assert r.content == b""


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def test_50mb_upload_and_download_stream(sidecar):
    url, _ = sidecar
    size = 50 * 1024 * 1024
    before = _max_rss_mb()

    async def body():
        block = b"z" * 65536
        for _ in range(size // len(block)):
            yield block

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        up = await client.post("/upload", content=body())
        down = 0
        async with client.stream("GET", "/big?mb=50") as r:
            async for chunk in r.aiter_raw():
                down += len(chunk)
    assert up.json() == {"received": size}
    assert down == size
    # Sidecar, upstream and client share this process: had any of them held 50 MB, it would show.
    assert _max_rss_mb() - before < 40


async def test_unreachable_upstream_is_502(make_settings):
    dead = f"http://127.0.0.1:{free_port()}"
    async with run_sidecar(make_settings(frontend_url=dead, api_url=dead)) as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.get("/p/abc", headers=DOC)
    assert r.status_code == 502
    assert r.text == "upstream unreachable\n"
    assert r.headers["x-trackside-error"] == "upstream_unreachable"


async def test_slow_upstream_is_504(sidecar):
    url, _ = sidecar
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        r = await client.get("/slow?s=3")
    assert r.status_code == 504
    assert r.text == "upstream timed out\n"
    assert r.headers["x-trackside-error"] == "upstream_timeout"


async def test_websocket_passthrough(sidecar):
    url, _ = sidecar
    async with websockets.connect(url.replace("http", "ws") + "/ws", subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        await ws.send("hello")
        assert await ws.recv() == "echo:hello"
        await ws.send(b"\x01\x02")
        assert await ws.recv() == b"echo:\x01\x02"


async def _raw(url: str, request: bytes, read_timeout: float = 5.0) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(65536), read_timeout)
    finally:
        writer.close()
    return data


async def test_content_length_with_transfer_encoding_refused(sidecar):
    url, _ = sidecar
    response = await _raw(
        url,
        b"POST /echo/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    assert response.startswith(b"HTTP/1.1 400")


async def test_huge_headers_refused(sidecar):
    url, _ = sidecar
    async with httpx.AsyncClient(base_url=url) as client:
        r = await client.get("/echo/x", headers={"x-big": "a" * 40000})
    assert r.status_code == 431


async def test_body_over_cap_refused(upstream_url, make_settings):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, max_body_bytes=1000)
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as client:
            declared = await client.post("/upload", content=b"a" * 2000)

            async def chunks():
                for _ in range(4):
                    yield b"b" * 400

            streamed = await client.post("/upload", content=chunks())
    assert declared.status_code == 413
    assert streamed.status_code == 413


async def test_slow_client_body_times_out(sidecar):
    url, _ = sidecar
    response = await _raw(url, b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
    assert response.startswith(b"HTTP/1.1 408")


async def test_odd_bytes_in_path_never_500(sidecar):
    url, _ = sidecar
    for path in (b"/%00%ff", b"/p/%E2%82%AC", b"/..%2f..%2fetc/passwd", b"/p/" + b"a" * 3000):
        response = await _raw(url, b"GET " + path + b" HTTP/1.1\r\nHost: a\r\nAccept: text/html\r\n\r\n")
        assert not response.startswith(b"HTTP/1.1 500"), path
        assert response.startswith((b"HTTP/1.1 200", b"HTTP/1.1 400", b"HTTP/1.1 404")), response[:40]
