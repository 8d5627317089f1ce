"""Chunked trailers are never headers: not a request's (for the upstream or for capture), not
an upstream answer's (for the client)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import jwt
import pytest

from tests.conftest import FIREFOX
from tests.servers import run_sidecar
from trackside.storage.engine import create_engine

SECRET = "test-secret-test-secret-test-secret"


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 86_400}, SECRET, algorithm="HS256")


async def _exchange(url: str, request: bytes, split_at: int | None = None) -> tuple[bytes, bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    if split_at is not None:
        writer.write(request[:split_at])
        await asyncio.sleep(0.2)
        request = request[split_at:]
    writer.write(request)
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lengths = [
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        ]
        if lengths:
            body = await asyncio.wait_for(reader.readexactly(lengths[0]), 10)
        else:  # chunked
            body = b""
            while size := int(await asyncio.wait_for(reader.readuntil(b"\r\n"), 10), 16):
                body += await reader.readexactly(size)
                await reader.readexactly(2)
            assert await reader.readuntil(b"\r\n") == b"\r\n"  # and no trailer from the sidecar either
    finally:
        writer.close()
    return head, body


@pytest.mark.parametrize("later", [False, True], ids=["with-the-head", "after-a-pause"])
async def test_request_trailers_reach_neither_the_upstream_nor_capture(upstream_url, make_settings, later):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, jwt_secret=SECRET)
    # Head, body and trailer in one packet: all parsed before the proxy reads the headers. Or
    # the trailer after a pause: parsed while the request is under way, before capture reads.
    u1, u7 = token("u1"), token("u7")
    request = (
        b"POST /api/echo/thing HTTP/1.1\r\n"
        b"host: site.example\r\n"
        b"user-agent: " + FIREFOX.encode() + b"\r\n"
        b"authorization: Bearer " + u1.encode() + b"\r\n"
        b"transfer-encoding: chunked\r\n"
        b"\r\n"
        b"3\r\nabc\r\n"
        b"0\r\n"
        b"cookie: session=stolen\r\n"
        b"authorization: Bearer " + u7.encode() + b"\r\n"
        b"host: evil.example\r\n"
        b"x-forwarded-for: 6.6.6.6\r\n"
        b"x-trailer: 1\r\n"
        b"\r\n"
    )
    async with run_sidecar(settings) as (url, _):
        head, body = await _exchange(url, request, request.index(b"abc\r\n") + 5 if later else None)
    assert head.startswith(b"HTTP/1.1 200 ")
    echoed = json.loads(body)
    names = [name for name, _ in echoed["headers"]]
    headers = dict(echoed["headers"])
    assert "cookie" not in names
    assert "x-trailer" not in names
    assert names.count("host") == names.count("authorization") == names.count("x-forwarded-for") == 1
    assert headers["host"] == "site.example"
    assert headers["authorization"] == "Bearer " + u1
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["content-length"] == "3"
    assert echoed["body_length"] == 3

    engine = create_engine(settings.database_url)
    async with engine.connect() as conn:
        rows = (await conn.exec_driver_sql("SELECT kind, path, user_id FROM events")).all()
    await engine.dispose()
    # The user is the header's u1, never the trailer's u7.
    assert [tuple(row) for row in rows] == [("api_call", "/api/echo/thing", "u1")]


@contextlib.asynccontextmanager
async def upstream_with_trailers() -> AsyncIterator[str]:
    """An upstream whose chunked answer ends with trailer fields, all in one write."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\nset-cookie: session=injected\r\nx-injected: 1\r\n\r\n"
            )
            await writer.drain()
            await reader.read()  # until the proxy closes or reuses it
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_response_trailers_never_reach_the_client_as_headers(make_settings):
    async with upstream_with_trailers() as upstream_url:
        settings = make_settings(frontend_url=upstream_url, api_url=upstream_url)
        async with run_sidecar(settings) as (url, _):
            head, body = await _exchange(url, b"GET /x HTTP/1.1\r\nhost: site.example\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b"hello"
    lowered = head.lower()
    assert b"set-cookie" not in lowered
    assert b"x-injected" not in lowered
