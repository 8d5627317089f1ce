"""What the sidecar refuses before routing (Host, the request target, ambiguous paths), how its
refusals are recorded, and which client headers it believes only from a trusted proxy. All of it
through a real sidecar in front of real upstreams, spoken to over raw sockets where a client
library would tidy the request up."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from tests.conftest import DOC, FIREFOX
from tests.servers import run_server, run_sidecar
from trackside.storage.engine import create_engine


async def exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One raw request; the answer's status, headers (lower-case names) and body."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
    finally:
        writer.close()
    return int(lines[0].split(" ")[1]), headers, body


async def stored_events(database_url: str) -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.exec_driver_sql("SELECT * FROM events ORDER BY ts")).mappings().all()
    finally:
        await engine.dispose()
    return [dict(row) for row in rows]


def get(target: bytes, *lines: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    head = b"GET " + target + b" " + version + b"\r\n"
    return head + b"".join(line + b"\r\n" for line in lines) + b"user-agent: " + FIREFOX.encode() + b"\r\n\r\n"


# --- Host ---------------------------------------------------------------------------------------


async def test_host_must_be_there_once_on_http_11(upstream_url, make_settings):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url)
    async with run_sidecar(settings) as (url, _):
        twice = await exchange(url, get(b"/echo/x", b"host: site.example", b"host: evil.example"))
        missing = await exchange(url, get(b"/echo/x"))
        named = await exchange(url, get(b"/echo/x", b"host: site.example", b"connection: keep-alive, Host"))
        old = await exchange(url, get(b"/echo/x", version=b"HTTP/1.0"))
        once = await exchange(url, get(b"/echo/x", b"host: site.example"))
    assert twice[0] == 400 and twice[2] == b"repeated Host header\n"
    assert missing[0] == 400 and missing[2] == b"missing Host header\n"
    assert named[0] == 400 and named[2] == b"Host named in Connection\n"
    for _, headers, _ in (twice, missing, named):
        assert headers["x-trackside-error"] == "refused"
        assert headers["connection"] == "close"
    # HTTP/1.0 had no Host: the upstream gets its own name, as before.
    assert old[0] == 200
    assert dict(json.loads(old[2])["headers"])["host"] == upstream_url.removeprefix("http://")
    assert once[0] == 200
    assert dict(json.loads(once[2])["headers"])["host"] == "site.example"


# --- request target -----------------------------------------------------------------------------


async def test_an_over_long_request_target_is_a_414(upstream_url, make_settings):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url)
    async with run_sidecar(settings) as (url, _):
        assert settings.max_target_bytes == 8192
        fits = await exchange(url, get(b"/echo/" + b"a" * (8192 - 6), b"host: a"))
        long_path = await exchange(url, get(b"/echo/" + b"a" * (8192 - 5), b"host: a"))
        long_query = await exchange(url, get(b"/echo/x?q=" + b"b" * 8200, b"host: a"))
    assert fits[0] == 200
    assert json.loads(fits[2])["path"] == "/echo/" + "a" * (8192 - 6)
    for status, headers, body in (long_path, long_query):
        assert status == 414
        assert body == b"request target longer than 8192 bytes\n"
        assert headers["x-trackside-error"] == "refused"


async def test_the_target_limit_is_a_setting(upstream_url, make_settings):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, max_target_bytes=100)
    async with run_sidecar(settings) as (url, _):
        fits = await exchange(url, get(b"/echo/x?q=" + b"b" * (100 - 10), b"host: a"))
        over = await exchange(url, get(b"/echo/x?q=" + b"b" * (100 - 9), b"host: a"))
    assert (fits[0], over[0]) == (200, 414)
    assert over[2] == b"request target longer than 100 bytes\n"


# --- refusals are recorded as refusals ----------------------------------------------------------


async def test_the_sidecars_refusals_are_recorded_as_refused(upstream_url, make_settings):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url)
    async with run_sidecar(settings) as (url, _):
        refused = [
            await exchange(url, get(b"/api/p/a1", b"host: a", b"host: b")),
            await exchange(url, get(b"/api/p/a1?q=" + b"x" * 9000, b"host: a")),
            await exchange(
                url,
                b"POST /api/p/a1 HTTP/1.1\r\nhost: a\r\nuser-agent: " + FIREFOX.encode() + b"\r\n"
                b"transfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            ),
        ]
        upstream_error = await exchange(url, get(b"/api/boom?status=503", b"host: a"))
    assert [status for status, _, _ in refused] == [400, 414, 501]
    assert upstream_error[0] == 503
    events = await stored_events(settings.database_url)
    assert [(e["kind"], e["status"], e["error_type"], e["path"]) for e in events] == [
        ("error", 400, "refused", "/api/p/a1"),
        ("error", 414, "refused", "/api/p/a1"),
        ("error", 501, "refused", "/api/p/a1"),
        ("error", 503, "upstream_5xx", "/api/boom"),
    ]
    # None of the refused requests was a look at a1.
    assert all(e["content_id"] is None for e in events)


async def test_a_nul_anywhere_never_costs_a_batch(upstream_url, make_settings, database_url):
    """PostgreSQL stores no NUL: one in a stored field failed the whole batch (every event in it
    spooled, then refused again at each replay)."""
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, database_url=database_url)
    async with run_sidecar(settings) as (url, app):
        refused = await exchange(url, get(b"/p/a%00b", b"host: a", b"accept: text/html"))
        async with httpx.AsyncClient(base_url=url) as c:
            page = await c.get("/p/a1?utm_source=mail%00x&utm_campaign=%00", headers=DOC)
            beacon = await c.post(
                "/_trackside/b",
                content=json.dumps({"t": "pageview", "p": "/p/a2", "r": "https://news\u0000.example/x"}),
                headers={"user-agent": FIREFOX, "content-type": "text/plain"},
            )
            plain = await c.get("/p/a3", headers=DOC)
    assert (refused[0], page.status_code, beacon.status_code, plain.status_code) == (400, 200, 204, 200)
    assert "events_spooled" not in app.metrics.counts
    events = await stored_events(settings.database_url)
    assert sorted((e["path"], e["error_type"], e["utm_source"], e["utm_campaign"], e["referrer"]) for e in events) == [
        ("/p/a1", None, "mailx", None, None),
        ("/p/a2", None, None, None, None),
        ("/p/a3", None, None, None, None),
        ("/p/a\ufffdb", "refused", None, None, None),
    ]


# --- routing and capture read one path ----------------------------------------------------------


def named_upstream(name: str) -> Any:
    """An upstream that says who it is and what it was asked for, answering HTML so that capture
    would take a document for a page view."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = json.dumps({"upstream": name, "raw_path": scope["raw_path"].decode(), "path": request.url.path})
        response: Response
        if name == "frontend":
            response = HTMLResponse(body)
        else:
            response = JSONResponse(json.loads(body))
        await response(scope, receive, send)

    return app


@pytest.fixture
async def two_upstreams():
    async with run_server(named_upstream("frontend")) as frontend, run_server(named_upstream("api")) as api:
        yield frontend, api


@pytest.mark.parametrize(
    ("raw", "status", "upstream", "recorded"),
    [
        # An encoded slash is a slash to one reader and a character to another: refused.
        (b"/api%2fp/abc", 400, None, ("error", None, "refused", "/api/p/abc")),
        (b"/api%2Fp/abc", 400, None, ("error", None, "refused", "/api/p/abc")),
        (b"/p%2fabc", 400, None, ("error", None, "refused", "/p/abc")),
        (b"/api/p/a%5cbc", 400, None, ("error", None, "refused", "/api/p/a\\bc")),
        (b"/api/p/ab%00c", 400, None, ("error", None, "refused", "/api/p/ab\ufffdc")),
        # Encoded dots that make a dot segment: refused as `/../` is.
        (b"/api/%2e%2e/p/abc", 400, None, ("error", None, "refused", "/api/../p/abc")),
        (b"/%2E%2E/api/p/abc", 400, None, ("error", None, "refused", "/../api/p/abc")),
        # An encoded letter: the decoded path is `/api/p/abc`, routed and recorded as such, and the
        # raw bytes reach the API untouched (its router decodes them to the same path).
        (b"/%61pi/p/abc", 200, "api", ("api_call", "artwork", None, "/api/p/abc")),
        (b"/api/p/%61bc", 200, "api", ("api_call", "artwork", None, "/api/p/abc")),
        # An encoded dot inside a name is no dot segment: `/api.p/abc` is a frontend page.
        (b"/api%2ep/abc", 200, "frontend", ("page_view", None, None, "/api.p/abc")),
        # Double encoding is decoded once, by everyone: `%2561` is a literal `%61`, `%252f` a
        # literal `%2f`; neither is the API.
        (b"/%2561pi/p/abc", 200, "frontend", ("page_view", None, None, "/%61pi/p/abc")),
        (b"/api%252fp/abc", 200, "frontend", ("page_view", None, None, "/api%2fp/abc")),
    ],
)
async def test_routing_and_capture_read_the_same_path(two_upstreams, make_settings, raw, status, upstream, recorded):
    frontend, api = two_upstreams
    settings = make_settings(frontend_url=frontend, api_url=api)
    async with run_sidecar(settings) as (url, _):
        got_status, headers, body = await exchange(
            url, get(raw, b"host: site.example", b"accept: text/html", b"sec-fetch-dest: document")
        )
    assert got_status == status
    if upstream is None:
        assert headers["x-trackside-error"] == "refused"
    else:
        answer = json.loads(body)
        assert answer["upstream"] == upstream
        assert answer["raw_path"] == raw.decode()  # sent as it came
    events = await stored_events(settings.database_url)
    assert [(e["kind"], e["content_kind"], e["error_type"], e["path"]) for e in events] == [recorded]


async def test_a_stripped_prefix_is_removed_from_the_raw_path(two_upstreams, make_settings):
    frontend, api = two_upstreams
    settings = make_settings(frontend_url=frontend, api_url=api, api_strip_prefix=True)
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            plain = (await c.get("/api/p/abc%20d")).json()
            encoded = (await c.get("/%61pi/p/abc%20d")).json()
    assert plain == encoded == {"upstream": "api", "raw_path": "/p/abc%20d", "path": "/p/abc d"}


# --- headers believed only from trusted proxies -------------------------------------------------


@pytest.mark.parametrize("trusted", [False, True], ids=["direct-client", "trusted-proxy"])
async def test_country_and_forwarded_host_only_from_trusted_proxies(upstream_url, make_settings, trusted):
    settings = make_settings(
        frontend_url=upstream_url,
        api_url=upstream_url,
        country_header="CF-IPCountry",
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),) if trusted else (),
    )
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            answer = await c.get(
                "/p/a1",
                headers={
                    **DOC,
                    "host": "site.example",
                    "x-forwarded-host": "news.example",
                    "referer": "https://news.example/story",
                    "cf-ipcountry": "DE",
                },
            )
    assert answer.status_code == 200
    (event,) = await stored_events(settings.database_url)
    if trusted:
        # The proxy says the site is news.example: a referrer from it is the site's own page.
        assert (event["country"], event["referrer"]) == ("DE", None)
    else:
        # Anyone can write these two headers: no country, and the referrer is another site.
        assert (event["country"], event["referrer"]) == (None, "news.example")


@pytest.mark.parametrize("trusted", [False, True], ids=["direct-client", "trusted-proxy"])
async def test_beacon_origin_check_believes_forwarded_host_only_from_trusted_proxies(
    upstream_url, make_settings, trusted
):
    settings = make_settings(
        frontend_url=upstream_url,
        api_url=upstream_url,
        beacon_origins=("https://partner.example",),
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),) if trusted else (),
    )
    beacon = {"t": "pageview", "p": "/p/a1"}
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            answer = await c.post(
                "/_trackside/b",
                content=json.dumps(beacon),
                headers={
                    "user-agent": FIREFOX,
                    "content-type": "text/plain",
                    "host": "site.example",
                    "origin": "https://evil.example",
                    "x-forwarded-host": "evil.example",
                },
            )
            own = await c.post(
                "/_trackside/b",
                content=json.dumps(beacon),
                headers={
                    "user-agent": FIREFOX,
                    "content-type": "text/plain",
                    "host": "site.example",
                    "origin": "https://site.example",
                },
            )
    # From a trusted proxy, X-Forwarded-Host names the site (here, as that proxy says, evil.example).
    assert answer.status_code == (204 if trusted else 403)
    if not trusted:
        assert answer.text == "beacons from this origin are not accepted\n"
    assert own.status_code == 204


def test_a_country_header_without_trusted_proxies_is_named_at_start(make_settings, caplog):
    from sidecar.app import SidecarApp

    with caplog.at_level("WARNING", logger="trackside.capture"):
        SidecarApp(make_settings(country_header="CF-IPCountry"))
    assert [r.getMessage() for r in caplog.records if r.name == "trackside.capture"] == [
        "TRACKSIDE_COUNTRY_HEADER is set but TRACKSIDE_TRUSTED_PROXIES is not: the header is believed only "
        "from a trusted proxy, so no country will come from it"
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="trackside.capture"):
        SidecarApp(make_settings(country_header="CF-IPCountry", trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),)))
    assert [r for r in caplog.records if r.name == "trackside.capture"] == []
