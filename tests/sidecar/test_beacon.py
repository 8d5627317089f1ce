"""Beacons through the real sidecar: what counts, what counts apart, what is refused and why; and
fuzzed beacons in process (Hypothesis): never a 500, never an event the tables cannot hold."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import SmallInteger, String
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from sidecar.beacon import BeaconApp
from tests.conftest import DOC, FIREFOX, GOOGLEBOT, IPHONE
from tests.reports import report_of
from tests.servers import run_server, run_sidecar
from trackside import events as ev
from trackside.batch import Batch
from trackside.capture import Capturer
from trackside.figures import load_days, sum_days
from trackside.metrics import Metrics
from trackside.page_token import PageTokens
from trackside.settings import Settings
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.tables import EVENTS
from trackside.storage.writes import write_batch

PAGE = "<!doctype html><html><head><title>t</title></head><body><h1>page</h1></body></html>"
TOKEN_RE = re.compile(r'data-token="([^"]+)"')


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def feed(request: Request) -> Response:
    # A listing API: says which items it showed, as the site's API would in its response headers.
    headers = {"x-trackside-items": request.query_params["items"]} if "items" in request.query_params else {}
    return JSONResponse({"items": []}, headers=headers)


async def artwork(request: Request) -> Response:
    return JSONResponse({"id": request.path_params["id"]})


upstream = Starlette(
    routes=[Route("/api/feed", feed), Route("/api/p/{id}", artwork), Route("/{rest:path}", page)]
)


async def stored_events(database_url: str) -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return [dict(r) for r in (await conn.exec_driver_sql("SELECT * FROM events ORDER BY ts")).mappings()]
    finally:
        await engine.dispose()



async def item_figures(database_url: str) -> dict[tuple[str, str], dict[str, int]]:
    engine = create_engine(database_url)
    today = datetime.now(UTC).date()
    try:
        async with engine.connect() as conn:
            return sum_days(await load_days(conn, today, today, 1800.0)).items
    finally:
        await engine.dispose()


@pytest.fixture
async def upstream_site():
    async with run_server(upstream) as url:
        yield url


async def token_for(client: httpx.AsyncClient, headers: dict[str, str], path: str = "/") -> str:
    r = await client.get(path, headers=headers)
    found = TOKEN_RE.search(r.text)
    assert found, r.text
    return found.group(1)


def beacon_body(**fields: Any) -> bytes:
    return orjson.dumps(fields)


async def test_client_navigations_count_once_beside_proxied_ones(upstream_site, make_settings):
    settings = make_settings(frontend_url=upstream_site, api_url=upstream_site, inject_snippet=True)
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url) as c:
            k = await token_for(c, DOC)  # the document: a page view, by the proxy
            send = {"user-agent": FIREFOX, "content-type": "text/plain;charset=UTF-8"}
            # The snippet's first beacon is that same navigation: it must not count twice.
            first = beacon_body(t="pageview", p="/", r="https://www.Reddit.com/r/x", k=k)
            r = await c.post("/_trackside/b", content=first, headers=send)
            assert r.status_code == 204 and "x-trackside-ignored" not in r.headers
            assert TOKEN_RE.fullmatch(f'data-token="{r.headers["x-trackside-token"]}"')  # renewed, for long sessions
            # A client navigation no request reached (a page Next.js had cached): counted from its beacon.
            await c.post("/_trackside/b", content=beacon_body(t="pageview", p="/about?utm_source=mail&x=1", k=k),
                         headers=send)
            # A client navigation to an artwork: a page view and a look, from the beacon alone.
            await c.post("/_trackside/b", content=beacon_body(t="pageview", p="/p/a1", k=k), headers=send)
            # The review's route, from the site's own code, with the token in a header.
            r = await c.post("/api/track/page-view", json={"path": "/b/post1", "referrer": "https://news.example/x"},
                             headers={"user-agent": FIREFOX, "x-trackside-token": k})
            assert r.status_code == 204
        assert app.metrics.counts["beacons"] == 4, app.metrics.counts
    report = await report_of(settings.database_url)
    assert report["page_views"] == {
        "total": 4,
        "authenticated": 0,
        "by_label": {"/": 1, "/about": 1, "/b/[blog]": 1, "/p/[post]": 1},
    }
    assert report["unique_visitors"] == 1
    # The referrer of a client page view is the page's (document.referrer), never the beacon request's.
    assert report["referrers"] == {"news.example": 1}
    assert report["content"]["artwork"] == [
        {"id": "a1", "views": 1, "views_authenticated": 0, "unique_viewers": 1, "unique_viewers_authenticated": 0}
    ]
    rows = await stored_events(settings.database_url)
    beacons = [r for r in rows if r["nav"] == "beacon"]
    assert len(beacons) == 4 and not any(r["unverified"] for r in beacons)
    about = next(r for r in beacons if r["path"] == "/about")
    assert about["utm_source"] == "mail" and about["method"] == "POST" and about["browser"] == "Firefox"


async def test_beacons_without_a_valid_token_count_only_for_visitors_the_proxy_saw(upstream_site, make_settings):
    settings = make_settings(frontend_url=upstream_site, api_url=upstream_site, inject_snippet=True)
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url) as c:
            k = await token_for(c, DOC)
            tokens = PageTokens(app.pipeline.salts, settings.site, 1800)
            expired = tokens.issue("127.0.0.1", FIREFOX, time.time() - 3600)
            assert expired is not None
            for headers, token in (
                ({"user-agent": FIREFOX}, None),  # no token at all (a script posting at will)
                ({"user-agent": IPHONE}, k),  # another visitor's token
                ({"user-agent": FIREFOX}, expired),
                ({"user-agent": FIREFOX}, k[:-2] + "xx"),  # forged
            ):
                r = await c.post("/_trackside/b", content=beacon_body(t="pageview", p="/forged", k=token),
                                 headers=headers)
                assert r.status_code == 204 and "x-trackside-token" not in r.headers
        assert app.metrics.counts["beacons_unverified"] == 4  # no valid token when they came
    report = await report_of(settings.database_url)
    # Firefox loaded the document through the proxy: its three token-less beacons count (a visitor
    # the proxy served); the iPhone was never seen, so its beacon stays apart.
    assert report["page_views"]["total"] == 4
    assert report["page_views"]["by_label"] == {"/": 1, "/forged": 3}
    assert report["unverified_beacons"] == {"page_view": 1}
    assert [r["unverified"] for r in await stored_events(settings.database_url) if r["nav"] == "beacon"] == [1] * 4


async def test_required_token_refuses_the_others(upstream_site, make_settings):
    settings = make_settings(
        frontend_url=upstream_site, api_url=upstream_site, inject_snippet=True, beacon_require_token=True
    )
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            k = await token_for(c, DOC)
            r = await c.post("/_trackside/b", content=beacon_body(t="pageview", p="/x"), headers=DOC)
            assert r.status_code == 403 and "page token" in r.text
            r = await c.post("/_trackside/b", content=beacon_body(t="pageview", p="/x", k=k), headers=DOC)
            assert r.status_code == 204
    assert [r["path"] for r in await stored_events(settings.database_url) if r["nav"] == "beacon"] == ["/x"]


async def test_sendbeacon_keepalive_and_image_forms(upstream_site, make_settings):
    settings = make_settings(frontend_url=upstream_site, api_url=upstream_site)
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            ua = {"user-agent": FIREFOX}
            # sendBeacon(url, string): text/plain; a keepalive fetch may say JSON; an <img> sends a GET.
            r1 = await c.post("/_trackside/b", content=beacon_body(t="pageview", p="/one"),
                              headers={**ua, "content-type": "text/plain;charset=UTF-8"})
            r2 = await c.post("/_trackside/b", content=beacon_body(t="pageview", p="/two"),
                              headers={**ua, "content-type": "application/json"})
            r3 = await c.get("/_trackside/b", params={"t": "pageview", "p": "/three", "r": "https://x.example/"},
                             headers=ua)
            assert (r1.status_code, r2.status_code) == (204, 204)
            assert r3.status_code == 200 and r3.headers["content-type"] == "image/gif"
            assert r3.content.startswith(b"GIF89a") and r3.headers["cache-control"] == "no-store"
            # A CORS preflight for a cross-origin keepalive fetch that says JSON.
            r4 = await c.options("/_trackside/b", headers={"origin": "https://partner.example"})
            assert r4.status_code == 204 and r4.headers["access-control-allow-origin"] == "https://partner.example"
    rows = await stored_events(settings.database_url)
    assert [(r["path"], r["method"], r["referrer"]) for r in rows] == [
        ("/one", "POST", None),
        ("/two", "POST", None),
        ("/three", "GET", "x.example"),
    ]


# (what is sent, expected status, words the answer must name)
BAD = [
    ("not JSON", {"content": b"t=pageview"}, 400, "not JSON"),
    ("JSON but not an object", {"content": b"[1, 2]"}, 400, "JSON object"),
    ("unknown type", {"content": beacon_body(t="click", p="/")}, 400, "t must be"),
    ("type of the wrong type", {"content": beacon_body(t=["pageview"], p="/")}, 400, "t must be"),
    ("no path", {"content": beacon_body(t="pageview")}, 400, "p must be a string"),
    ("a URL, not a path", {"content": beacon_body(t="pageview", p="https://evil.example/")}, 400, "starting with /"),
    ("protocol-relative", {"content": beacon_body(t="pageview", p="//evil.example/x")}, 400, "starting with /"),
    ("control characters", {"content": beacon_body(t="pageview", p="/a\nb")}, 400, "printable ASCII"),
    ("not percent-encoded", {"content": beacon_body(t="pageview", p="/caf\u00e9")}, 400, "printable ASCII"),
    ("path too long", {"content": beacon_body(t="pageview", p="/" + "a" * 512)}, 400, "longer than 512"),
    ("referrer of the wrong type", {"content": beacon_body(t="pageview", p="/", r=5)}, 400, "r must be a string"),
    ("oversized", {"content": beacon_body(t="pageview", p="/", r="x" * 5000)}, 413, "larger than 4096"),
    ("form body", {"content": b"t=pageview", "headers": {"content-type": "multipart/form-data"}}, 415, "JSON"),
    ("bad items", {"content": beacon_body(t="impression", p="/", i="a1,b2")}, 400, "artwork:a1"),
    ("items of the wrong type", {"content": beacon_body(t="impression", p="/", i=[1, 2])}, 400, "strings"),
    ("no items", {"content": beacon_body(t="widget")}, 400, "i must name items"),
    ("bad view type", {"content": beacon_body(t="impression", p="/", i="artwork:a1", v="feed")}, 400, "v must be"),
    ("too many items", {"content": beacon_body(t="impression", p="/", i=[f"artwork:a{n}" for n in range(60)])},
     400, "more than 50"),
]


@pytest.mark.parametrize("request_kwargs,status,named", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_bad_beacons_are_refused_naming_the_problem(upstream_site, make_settings, request_kwargs, status, named):
    settings = make_settings(frontend_url=upstream_site, api_url=upstream_site)
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url) as c:
            kwargs = {**request_kwargs}
            headers = {"user-agent": FIREFOX, "content-type": "text/plain", **kwargs.pop("headers", {})}
            r = await c.post("/_trackside/b", headers=headers, **kwargs)
        assert app.metrics.counts["events_captured"] == 0
    assert r.status_code == status, r.text
    assert named in r.text
    assert await stored_events(settings.database_url) == []


async def test_review_route_checks_the_same_way(upstream_site, make_settings):
    settings = make_settings(frontend_url=upstream_site, api_url=upstream_site)
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            ua = {"user-agent": FIREFOX}
            assert (await c.get("/api/track/page-view", headers=ua)).status_code == 405
            r = await c.post("/api/track/page-view", json={"path": "javascript:alert(1)"}, headers=ua)
            assert r.status_code == 400 and "path must be a path" in r.text
            r = await c.post("/api/track/page-view", json={"path": "/ok", "referrer": ["x"]}, headers=ua)
            assert r.status_code == 400 and "referrer must be a string" in r.text
    assert await stored_events(settings.database_url) == []


async def test_do_not_track_bots_and_unknown_items_are_ignored_silently(upstream_site, make_settings):
    settings = make_settings(frontend_url=upstream_site, api_url=upstream_site, honor_dnt=True)
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url) as c:
            body = beacon_body(t="pageview", p="/x")
            for headers, reason in (
                ({"user-agent": FIREFOX, "sec-gpc": "1"}, "do-not-track"),
                ({"user-agent": FIREFOX, "dnt": "1"}, "do-not-track"),
                ({"user-agent": GOOGLEBOT}, "bot"),
            ):
                r = await c.post("/_trackside/b", content=body, headers=headers)
                assert (r.status_code, r.headers.get("x-trackside-ignored")) == (204, reason)
            r = await c.post("/_trackside/b", content=beacon_body(t="widget", i="gallery:g1"),
                             headers={"user-agent": FIREFOX})
            assert (r.status_code, r.headers.get("x-trackside-ignored")) == (204, "no-known-items")
            # The proxy honours the same headers for the requests it sees.
            await c.get("/p/a1", headers={**DOC, "sec-gpc": "1"})
    # Counted once the sidecar has stopped: proxied requests are recorded in batches by the flusher.
    assert app.metrics.counts["skipped_do_not_track"] == 3
    assert await stored_events(settings.database_url) == []
    assert (await report_of(settings.database_url))["bots"] == {"Googlebot": 1}


async def test_a_beacon_flood_is_kept_as_counters(upstream_site, make_settings):
    settings = make_settings(frontend_url=upstream_site, api_url=upstream_site, flood_per_minute=5)
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            ignored = []
            for n in range(8):
                r = await c.post("/_trackside/b", content=beacon_body(t="pageview", p=f"/forged/{n}"),
                                 headers={"user-agent": FIREFOX})
                ignored.append(r.headers.get("x-trackside-ignored"))
    assert ignored == [None] * 5 + ["flood"] * 3
    assert len(await stored_events(settings.database_url)) == 5
    assert (await report_of(settings.database_url))["bots"] == {"flood": 3}


async def test_origin_restriction(upstream_site, make_settings):
    settings = make_settings(
        frontend_url=upstream_site, api_url=upstream_site, beacon_origins=("https://Partner.example/",)
    )
    async with run_sidecar(settings) as (url, _):
        host = url.split("://", 1)[1]
        async with httpx.AsyncClient(base_url=url) as c:
            body = beacon_body(t="widget", i="artwork:a1", r="https://partner.example/gallery")
            ua = {"user-agent": FIREFOX}
            r = await c.post("/_trackside/b", content=body, headers={**ua, "origin": "https://evil.example"})
            assert r.status_code == 403 and "origin" in r.text
            r = await c.post("/_trackside/b", content=body, headers=ua)  # no Origin, no Referer: not a browser's
            assert r.status_code == 403
            r = await c.post("/_trackside/b", content=body, headers={**ua, "origin": "https://partner.example"})
            assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "https://partner.example"
            r = await c.post("/_trackside/b", content=beacon_body(t="pageview", p="/own"),
                             headers={**ua, "origin": f"http://{host}"})  # the site's own pages: always
            assert r.status_code == 204
            r = await c.get("/_trackside/b", params={"t": "widget", "i": "artwork:b2"},
                            headers={**ua, "referer": "https://partner.example/page"})  # the image sends Referer
            assert r.status_code == 200
    rows = await stored_events(settings.database_url)
    assert sorted((r["path"], r["view_type"]) for r in rows) == [("/own", None), ("/p/a1", "widget"),
                                                                  ("/p/b2", "widget")]


async def test_impressions_and_widget_views(upstream_site, make_settings):
    settings = make_settings(frontend_url=upstream_site, api_url=upstream_site, inject_snippet=True)
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url) as c:
            k = await token_for(c, DOC, "/feed")
            ua = {"user-agent": FIREFOX}
            send = [
                beacon_body(t="impression", p="/feed", i="artwork:a1,artwork:b2,gallery:x", k=k),
                beacon_body(t="impression", p="/search?q=cat", v="search", i=["artwork:a1"], k=k),
                # A widget the site's own page shows: verified, a look of type widget.
                beacon_body(t="widget", i=["artwork:c3"], r="https://blog.example/post", k=k),
            ]
            for body in send:
                assert (await c.post("/_trackside/b", content=body, headers=ua)).status_code == 204
            # A widget on another site, seen by a visitor the proxy never served: no token can come
            # from there and nothing vouches for the visitor, so it counts apart.
            alone = beacon_body(t="widget", i=["artwork:a1"], r="https://blog.example/post")
            assert (await c.post("/_trackside/b", content=alone, headers={"user-agent": IPHONE})).status_code == 204
            # Upstream hints: the listing API says what it showed; the header never reaches the client.
            r = await c.get("/api/feed", params={"items": "artwork:b2, artwork:d4;search"}, headers=ua)
            assert "x-trackside-items" not in r.headers
            await c.get("/api/feed", params={"items": "artwork:b2;feed"}, headers=ua)  # a bad hint: ignored
    assert app.metrics.counts["bad_items_hint"] == 1  # proxied requests are recorded by the flusher
    items = await item_figures(settings.database_url)
    assert {key: (f["impressions"], f["views"]) for key, f in items.items()} == {
        ("artwork", "a1"): (2, 0),
        ("artwork", "b2"): (2, 0),
        ("artwork", "c3"): (0, 1),
        ("artwork", "d4"): (1, 0),
    }
    rows = await stored_events(settings.database_url)
    widget = [r for r in rows if r["view_type"] == "widget"]
    assert [(r["path"], r["label"], r["referrer"], r["unverified"]) for r in widget] == [
        ("/p/c3", "/p/[post]", "blog.example", 0),
        ("/p/a1", "/p/[post]", "blog.example", 1),
    ]
    hinted = [r for r in rows if r["kind"] == "impression" and r["nav"] == "other"]
    assert [(r["content_id"], r["view_type"], r["path"]) for r in hinted] == [
        ("b2", "search", "/api/feed"),
        ("d4", "search", "/api/feed"),
    ]
    report = await report_of(settings.database_url)
    assert report["api_calls"] == 2  # impressions from a hint are not API calls
    assert report["page_views"]["total"] == 1  # the /feed document; widgets and impressions are not page views


# ------------------------------------------------------------------------------------------------ fuzzing


class _Salts:
    def salt_for(self, day: date) -> bytes:
        return b"s" * 32


class _Sink:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    def put(self, event: ev.Event) -> None:
        self.events.append(event)

    def put_bot(self, hit: ev.BotHit) -> None:
        pass


# One client sends every example: no flood limit here, so that valid examples keep being stored.
_FUZZ_SETTINGS = Settings(database_url="sqlite+aiosqlite:///unused.db", honor_dnt=True, flood_per_minute=10**9)
_SINK = _Sink()
_CAPTURER = Capturer(_FUZZ_SETTINGS, _SINK, _Salts(), Metrics())
_FUZZ_APP = BeaconApp(_FUZZ_SETTINGS, _CAPTURER, PageTokens(_Salts(), "default", 1800))


async def _call(method: str, path: str, query: bytes, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    scope = {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": query,
        "headers": [(b"user-agent", FIREFOX.encode()), *headers], "client": ("203.0.113.9", 5000),
    }
    chunks = [body[i : i + 1000] for i in range(0, len(body), 1000)] or [b""]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    status = 0

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await _FUZZ_APP(scope, receive, send)
    return status


_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["/", "/p/a1", "/about?utm_source=x", "//x", "http://x/", "/a b", "/\x00", "/\u00e9", "/" * 600,
                     "artwork:a1", "artwork:a1,blog_post:b1", "artwork:", ":a1", "listing", "search", "widget",
                     "pageview", "impression", "1.abc", "https://r.example/", ""]),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)
_fields = st.dictionaries(st.sampled_from(["t", "p", "r", "i", "v", "k", "path", "referrer", "token", "x"]), _json,
                          max_size=7)
# Nearly valid beacons, so that many are stored and the stored ones are checked, not only the refusals.
_path = st.one_of(
    st.from_regex(r"/[a-z0-9/_%.~-]{0,40}(\?[a-z_=&]{0,20})?", fullmatch=True),
    st.text(max_size=30).map(lambda t: "/" + t),
    _text,
)
_item = st.one_of(st.from_regex(r"(artwork|blog_post|gallery):[A-Za-z0-9._~%-]{1,12}", fullmatch=True), _text)
_items = st.one_of(st.lists(_item, max_size=6), st.lists(_item, max_size=6).map(",".join), _json)
_beaconish = st.fixed_dictionaries(
    {"t": st.sampled_from(["pageview", "impression", "widget"])},
    optional={
        "p": _path,
        "r": st.one_of(_text, _json),
        "i": _items,
        "v": st.sampled_from(["listing", "search"]) | _json,
        "k": st.text(max_size=70),
    },
)
_good = st.fixed_dictionaries(
    {
        "t": st.sampled_from(["pageview", "impression", "widget"]),
        "p": st.from_regex(r"/([a-z0-9_%.~-]{1,12}/?){0,4}(\?[a-z_=&]{0,20})?", fullmatch=True),
    },
    optional={
        "r": st.sampled_from(["", "https://www.Reddit.com/r/x", "not a url", "http://[::1", "https://a.example:8080/"]),
        "i": st.lists(st.from_regex(r"(artwork|blog_post|gallery):[A-Za-z0-9._~%-]{1,12}", fullmatch=True),
                      min_size=1, max_size=5),
        "v": st.sampled_from(["listing", "search"]),
        "k": st.text(max_size=70),
    },
)
_page_viewish = st.fixed_dictionaries({"path": _path}, optional={"referrer": _text, "token": _json})
_bodies = st.one_of(
    _good.map(orjson.dumps),
    _good.map(orjson.dumps),
    _beaconish.map(orjson.dumps),
    _page_viewish.map(orjson.dumps),
    _fields.map(orjson.dumps),
    _json.map(orjson.dumps),
    st.binary(max_size=300),
    st.just(b"{" * 2000),
    st.just(b"[" * 5000),
)
_queries = st.one_of(
    _good.map(lambda f: urlencode({k: ",".join(v) if isinstance(v, list) else v for k, v in f.items()})),
    _beaconish.map(lambda f: urlencode({k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in f.items()})),
    _fields.map(lambda f: "&".join(f"{k}={v}" for k, v in f.items())),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
).map(lambda q: q.encode("latin-1", "replace"))
_header_values = {
    b"content-type": st.sampled_from([b"text/plain;charset=UTF-8", b"application/json", b"", b"text/html"]),
    b"user-agent": st.sampled_from([FIREFOX.encode(), IPHONE.encode(), GOOGLEBOT.encode(), b""]),
}
_headers = st.lists(
    st.sampled_from([b"content-type", b"user-agent", b"origin", b"referer", b"dnt", b"sec-gpc", b"host",
                     b"x-trackside-token", b"content-length", b"x-forwarded-for", b"authorization"]).flatmap(
        lambda name: st.tuples(st.just(name), _header_values.get(name, st.binary(max_size=60)) | st.binary(max_size=20))
    ),
    max_size=6,
)


def _fits_the_schema(e: ev.Event) -> None:
    for column in EVENTS.c:
        if column.name in ("day", "hour"):
            continue
        value = getattr(e, column.name)
        if value is None:
            assert column.nullable, column.name
        elif isinstance(column.type, String) and column.type.length:
            assert isinstance(value, str) and len(value) <= column.type.length, (column.name, value)
        elif isinstance(column.type, SmallInteger):
            assert -32768 <= value <= 32767
    assert e.kind in (ev.PAGE_VIEW, ev.IMPRESSION) and e.nav == ev.NAV_BEACON
    assert e.path.startswith("/") and not e.path.startswith("//") and e.path.isascii() and e.path.isprintable()
    assert " " not in e.path and "?" not in e.path
    assert e.view_type in (None, "listing", "search", "widget")
    assert e.content_kind in (None, "artwork", "blog_post")
    if e.kind == ev.IMPRESSION or e.view_type == "widget":
        assert e.content_id


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "GET", "HEAD", "PUT", "OPTIONS"]),
    path=st.sampled_from(["/_trackside/b", "/_trackside/b", "/api/track/page-view"]),
    query=_queries,
    body=_bodies,
    headers=_headers,
)
def test_fuzzed_beacons_never_500_and_never_store_garbage(method, path, query, body, headers):
    before = len(_SINK.events)
    status = asyncio.run(_call(method, path, query, body, headers))
    assert status in (200, 204, 400, 403, 405, 408, 413, 415), status
    assert _CAPTURER.metrics.counts["beacon_failed"] == 0  # no exception hidden behind a 204
    if status >= 400:
        assert len(_SINK.events) == before
    for e in _SINK.events[before:]:
        _fits_the_schema(e)


async def test_fuzzed_events_are_stored(sqlite_url):
    """What the fuzzing stored goes into a real database (and PostgreSQL would check the lengths too)."""
    if not _SINK.events:
        for p in ("/a", "/p/a1", "/b/x?utm_source=y"):
            await _call("POST", "/_trackside/b", b"", beacon_body(t="pageview", p=p), [])
    await migrate(sqlite_url)
    engine = create_engine(sqlite_url)
    try:
        assert await write_batch(engine, Batch(events=list(_SINK.events))) == len(_SINK.events)
    finally:
        await engine.dispose()
