"""Snippet injection and the snippet file: the tag lands once, before `</head>`, whatever the chunking
and the compression; nothing else is touched."""

from __future__ import annotations

import asyncio
import gzip
import re
import zlib

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from sidecar.inject import _GzipSplice, _Splice
from sidecar.snippet import SNIPPET_FILE
from tests.conftest import DOC, FIREFOX
from tests.servers import run_server, run_sidecar

TAG = b'<script src="/s.js" defer></script>'
DOCUMENT = b"<!doctype html><html><HEAD><title>x</title></HEAD><body><p>hello</p></body></html>"
EXPECTED = DOCUMENT.replace(b"</HEAD>", TAG + b"</HEAD>")


@pytest.mark.parametrize("cut", range(len(DOCUMENT) + 1))
def test_splice_finds_the_anchor_split_anywhere(cut):
    splice = _Splice(TAG)
    out = splice.feed(DOCUMENT[:cut]) + splice.feed(DOCUMENT[cut:]) + splice.finish()
    assert out == EXPECTED


def test_splice_byte_by_byte_and_fallbacks():
    splice = _Splice(TAG)
    assert b"".join(splice.feed(DOCUMENT[i : i + 1]) for i in range(len(DOCUMENT))) + splice.finish() == EXPECTED
    no_head = b"<html><body>x</BODY></html>"
    splice = _Splice(TAG)
    assert splice.feed(no_head) + splice.finish() == b"<html><body>x" + TAG + b"</BODY></html>"
    fragment = b"<p>no anchor at all</p>"
    splice = _Splice(TAG)
    assert splice.feed(fragment) + splice.finish() == fragment
    twice = b"<head></head><body></head></body>"
    splice = _Splice(TAG)
    assert (splice.feed(twice) + splice.finish()).count(TAG) == 1


@pytest.mark.parametrize("size", [1, 7, 64, 4096])
def test_gzip_splice_streams_and_stays_valid(size):
    body = DOCUMENT.replace(b"<p>hello</p>", b"<p>" + b"pixel " * 5000 + b"</p>")
    compressed = gzip.compress(body) + gzip.compress(b"<!-- second member -->")
    splice = _GzipSplice(_Splice(TAG))
    parts = [splice.feed(compressed[i : i + size]) for i in range(0, len(compressed), size)]
    parts.append(splice.finish())
    out = zlib.decompress(b"".join(parts), 16 + zlib.MAX_WBITS)
    assert out == body.replace(b"</HEAD>", TAG + b"</HEAD>") + b"<!-- second member -->"
    # Flushed per chunk: the head goes out before the upstream has sent the whole body.
    assert any(parts[: len(parts) // 2])


# ------------------------------------------------------------------------------------------ through the sidecar

PAGE = DOCUMENT.decode()


async def plain(request: Request) -> Response:
    seen = request.headers.get("accept-encoding", "")
    return HTMLResponse(PAGE, headers={"etag": '"v1"', "x-seen-accept-encoding": seen})


async def gz(request: Request) -> Response:
    if "gzip" not in request.headers.get("accept-encoding", ""):
        return HTMLResponse(PAGE)
    return Response(gzip.compress(DOCUMENT), media_type="text/html", headers={"content-encoding": "gzip"})


async def br(request: Request) -> Response:
    return Response(b"\x0bbrotli-bytes", media_type="text/html", headers={"content-encoding": "br"})


async def streamed(request: Request) -> StreamingResponse:
    async def chunks():
        for i in range(0, len(DOCUMENT), 3):  # "</HEAD>" arrives in pieces
            yield DOCUMENT[i : i + 3]
            await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="text/html; charset=utf-8")


async def data(request: Request) -> Response:
    return JSONResponse({"html": "</head>"})


upstream = Starlette(
    routes=[
        Route("/gz", gz),
        Route("/br", br),
        Route("/streamed", streamed),
        Route("/data.json", data),
        Route("/{rest:path}", plain, methods=["GET", "HEAD"]),
    ]
)


@pytest.fixture
async def sidecar(make_settings):
    async with run_server(upstream) as up:
        settings = make_settings(frontend_url=up, api_url=up, inject_snippet=True, honor_dnt=True)
        async with run_sidecar(settings) as (url, app):
            yield url, app


def injected_tag(html: str, snippet_url: str) -> re.Match[str] | None:
    return re.search(rf'<script src="{re.escape(snippet_url)}" data-token="[0-9]+\.[\w-]+" data-honor-dnt defer>'
                     r"</script></HEAD>", html)


async def test_html_documents_get_the_tag(sidecar):
    url, app = sidecar
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.get("/p/a1", headers={**DOC, "accept-encoding": "gzip, deflate, br, zstd"})
        assert injected_tag(r.text, app.snippet.url)
        assert r.text.count("<script") == 1
        # Validators dropped (the body now differs per visitor), length left to the server.
        assert "etag" not in r.headers and "content-length" not in r.headers
        # The upstream was asked only for what the sidecar can rewrite.
        assert r.headers["x-seen-accept-encoding"] == "gzip"
        r = await c.get("/streamed", headers=DOC)
        assert injected_tag(r.text, app.snippet.url)
        r = await c.get("/gz", headers={**DOC, "accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip" and injected_tag(r.text, app.snippet.url)
        # A client without Fetch Metadata that asks for HTML.
        r = await c.get("/old", headers={"user-agent": FIREFOX, "accept": "text/html"})
        assert injected_tag(r.text, app.snippet.url)
    assert app.metrics.counts["snippet_injected"] == 4


async def test_everything_else_passes_untouched(sidecar):
    url, app = sidecar
    async with httpx.AsyncClient(base_url=url) as c:
        api = {"user-agent": FIREFOX, "accept": "*/*", "sec-fetch-dest": "empty", "accept-encoding": "br, gzip"}
        r = await c.get("/page", headers=api)  # a fetch of HTML, not a document
        assert r.content == DOCUMENT and r.headers["etag"] == '"v1"'
        assert r.headers["x-seen-accept-encoding"] == "br, gzip"
        r = await c.get("/data.json", headers=DOC)  # a document that is not HTML
        assert r.json() == {"html": "</head>"}
        r = await c.head("/page", headers=DOC)
        assert r.headers["content-length"] == str(len(DOCUMENT))
        r = await c.get("/br", headers={**DOC, "accept-encoding": "br"})  # an encoding we cannot rewrite
        assert r.headers["content-encoding"] == "br"
        assert await r.aread() == b"\x0bbrotli-bytes"
    assert app.metrics.counts["snippet_skipped_encoding"] == 1
    assert app.metrics.counts["snippet_injected"] == 0


async def test_injection_is_off_by_default(make_settings):
    async with run_server(upstream) as up:
        async with run_sidecar(make_settings(frontend_url=up, api_url=up)) as (url, _):
            async with httpx.AsyncClient(base_url=url) as c:
                r = await c.get("/p/a1", headers={**DOC, "accept-encoding": "br"})
    assert r.content == DOCUMENT and r.headers["x-seen-accept-encoding"] == "br"


async def test_the_snippet_file_is_served_with_caching_headers(sidecar):
    url, app = sidecar
    source = SNIPPET_FILE.read_bytes()
    async with httpx.AsyncClient(base_url=url) as c:
        r = await c.get(app.snippet.url, headers={"accept-encoding": "identity"})
        assert r.status_code == 200 and r.content == source
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["content-type"] == "text/javascript; charset=utf-8"
        etag = r.headers["etag"]
        assert app.snippet.url == f"/_trackside/s.{etag.strip(chr(34))}.js"
        assert (await c.get(app.snippet.url, headers={"if-none-match": etag})).status_code == 304
        r = await c.get(app.snippet.url, headers={"accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip" and r.content == source
        # The stable name (for tags written by hand) and an old hash (a page cached across a deploy).
        for path in ("/_trackside/snippet.js", "/_trackside/s.0123456789abcdef.js"):
            r = await c.get(path)
            assert r.content == source and r.headers["cache-control"] == "public, max-age=300"
        assert (await c.post("/_trackside/snippet.js")).status_code == 405
    # None of it is a page view or proxied.
    assert app.metrics.counts["events_captured"] == 0
