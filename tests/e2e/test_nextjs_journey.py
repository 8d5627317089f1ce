"""End to end: headless Chromium on a real Next.js (pages router) site behind the sidecar, then `trackside report`.

The expected numbers are computed from the requests the browser actually made (tests/e2e/journey.mjs records every
one, with the headers that decide how the proxy classifies it and whether the browser's cache answered it), and
also pinned for the parts that are stable: one look per artwork however often it is reloaded or gone back to.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e import helpers

pytestmark = pytest.mark.timeout(600)

# What the journey does, step by step, in requests the proxy sees (static chunks left out): (method, kind, path).
# Pinned for next 15.5.29: a client navigation to a getServerSideProps page fetches /_next/data/<id>/<page>.json
# (x-nextjs-data: 1, no prefetch header), and so do back and forward; a reload is a document request; /about is
# static and its chunk was prefetched, so navigating to it makes no request; <Link> prefetches only page chunks
# (<link rel=prefetch>, Sec-Purpose: prefetch), never /_next/data for getServerSideProps pages.
JOURNEY_STEPS: dict[str, list[tuple[str, str, str]]] = {
    "home": [("GET", "document", "/")],
    "to_a1": [("GET", "data", "/p/a1"), ("GET", "api", "/api/p/a1")],
    "back_home": [("GET", "data", "/")],
    "forward_a1": [("GET", "data", "/p/a1"), ("GET", "api", "/api/p/a1")],
    "reload_a1": [("GET", "document", "/p/a1"), ("GET", "api", "/api/p/a1")],
    "to_b2": [("GET", "data", "/p/b2"), ("GET", "api", "/api/p/b2")],
    "b2_home": [("GET", "data", "/")],
    "to_about": [],
    "about_home": [("GET", "data", "/")],
    "to_post1": [("GET", "data", "/b/post1")],
    "back_home2": [("GET", "data", "/")],
}
LOGIN_STEP = {"login": [("GET", "document", "/login")]}

ANON_BY_LABEL = {"/": 5, "/p/[post]": 4, "/b/[blog]": 1, "/about": 0}
ANON_PAGE_VIEWS = 10
ANON_API_CALLS = 4


def nav_requests(journey: dict[str, Any], step: str) -> list[tuple[str, str, str]]:
    out = []
    for r in helpers.step_requests(journey, step):
        path = urlsplit(r["path"]).path
        if path.startswith("/_next/static/"):
            continue
        m = helpers.DATA_RE.match(path)
        if m:
            page = m.group("page")
            out.append((r["method"], "data", "/" if page == "index" else "/" + page))
        elif path.startswith("/api/"):
            out.append((r["method"], "api", path))
        elif r["navigation"]:
            out.append((r["method"], "document", path))
        else:
            out.append((r["method"], "other", path))
    return out


def check_journey_shape(journey: dict[str, Any], signed_in: bool) -> None:
    steps = {**LOGIN_STEP, **JOURNEY_STEPS} if signed_in else JOURNEY_STEPS
    assert [s["name"] for s in journey["steps"]] == list(steps)
    got = {name: nav_requests(journey, name) for name in steps}
    assert got == steps
    visible = [r for r in journey["requests"] if helpers.proxy_visible(r)]
    assert all(r["method"] == "GET" for r in visible), "the journey makes no HEAD (or other) request"
    assert not any(r["headers"].get("rsc") for r in journey["requests"]), "pages router: no RSC requests"
    # The chunk prefetches are there, marked as prefetches, and are never page views.
    prefetches = [r for r in visible if helpers.is_prefetch(r["headers"])]
    assert prefetches and all(urlsplit(r["path"]).path.startswith("/_next/static/") for r in prefetches)
    assert all(helpers.page_view_path(r) is None for r in prefetches)
    # Every API request carries the token when signed in, and none does otherwise.
    api = [r for r in visible if urlsplit(r["path"]).path.startswith("/api/")]
    assert all(bool(r["headers"].get("authorization")) == signed_in for r in api)
    assert journey["token_stored"] == signed_in
    # Next sees the sidecar as its public origin (X-Forwarded-Host/Proto).
    assert journey["origin_seen_by_next"] == journey["base_url"]
    # A headless UA is a bot to the sidecar: every request must carry the desktop Chrome UA instead.
    assert {r["headers"].get("user-agent") for r in visible} == {helpers.CHROME_UA}


def check_report_common(rep: dict[str, Any], exp: dict[str, Any]) -> None:
    pv = rep["page_views"]
    assert pv["total"] == exp["page_views"], (pv, exp)
    for label, n in exp["by_label"].items():
        assert pv["by_label"].get(label, 0) == n, (label, pv["by_label"], exp["by_label"])
    assert sum(pv["by_label"].values()) == pv["total"]
    assert pv["by_label"].get("/about", 0) == 0, "a prefetched static page makes no request: invisible"
    assert rep["unique_visitors"] == 1
    assert rep["api_calls"] == exp["api_calls"]
    assert sum(rep["errors"].values()) == 0, rep["errors"]
    assert sum(rep["bots"].values()) == 0, rep["bots"]
    assert rep["signups"] == 0 and rep["uploads"] == 0
    assert rep["referrers"] == {}, "the site's own pages are no referrer"
    assert rep["browsers"].get("Chrome") == pv["total"], rep["browsers"]
    assert rep["devices"].get("desktop") == pv["total"], rep["devices"]
    assert sorted(row["id"] for row in rep["content"].get("artwork", [])) == exp["content"]["artwork"] == ["a1", "b2"]
    assert sorted(row["id"] for row in rep["content"].get("blog_post", [])) == exp["content"]["blog_post"] == ["post1"]
    for kind, item in (("artwork", "a1"), ("artwork", "b2"), ("blog_post", "post1")):
        row = helpers.content_row(rep, kind, item)
        # a1: click, back, forward, reload and three API fetches, all one look.
        assert row["views"] == 1, (kind, item, row)
        assert row["unique_viewers"] == 1, (kind, item, row)


@pytest.mark.browser
def test_anonymous_journey(next_server, api_server, sidecar_factory, e2e_database_url) -> None:
    database_url = e2e_database_url
    sidecar = sidecar_factory(frontend_url=next_server.url, api_url=api_server.url, database_url=database_url)
    journey = helpers.run_journey(sidecar.url)
    helpers.stop_sidecar(sidecar)

    check_journey_shape(journey, signed_in=False)
    exp = helpers.expected_from_journey(journey)
    assert exp["page_views"] == ANON_PAGE_VIEWS
    assert exp["by_label"] == {k: v for k, v in ANON_BY_LABEL.items() if v}
    assert exp["api_calls"] == ANON_API_CALLS and exp["api_authenticated"] == 0

    rep = helpers.report(database_url)
    check_report_common(rep, exp)
    assert rep["page_views"]["authenticated"] == 0
    for kind, item in (("artwork", "a1"), ("artwork", "b2"), ("blog_post", "post1")):
        assert helpers.content_row(rep, kind, item)["views_authenticated"] == 0


@pytest.mark.browser
def test_signed_in_journey(next_server, api_server, sidecar_factory, e2e_database_url) -> None:
    database_url = e2e_database_url
    sidecar = sidecar_factory(
        frontend_url=next_server.url,
        api_url=api_server.url,
        database_url=database_url,
        jwt_secret=helpers.JWT_SECRET,
    )
    journey = helpers.run_journey(sidecar.url, token=helpers.make_token("user-7"))
    helpers.stop_sidecar(sidecar)

    check_journey_shape(journey, signed_in=True)
    exp = helpers.expected_from_journey(journey)
    assert exp["page_views"] == ANON_PAGE_VIEWS + 1  # + the /login document
    assert exp["by_label"] == {**{k: v for k, v in ANON_BY_LABEL.items() if v}, "/login": 1}
    assert exp["api_calls"] == exp["api_authenticated"] == ANON_API_CALLS

    rep = helpers.report(database_url)
    check_report_common(rep, exp)
    # Every page view is within the window of a Bearer-authenticated API request by the same visitor.
    assert rep["page_views"]["authenticated"] == rep["page_views"]["total"]
    for kind, item in (("artwork", "a1"), ("artwork", "b2")):
        row = helpers.content_row(rep, kind, item)
        assert row["views_authenticated"] == row["views"] == 1, row


def test_two_sidecars_count_one_look(frontend_stub, api_server, sidecar_factory, e2e_database_url) -> None:
    database_url = e2e_database_url
    """One visitor's look at a1 split across two sidecars on one database: the document through A, the API
    fetches through B, and a reload through A. One view; two page views; two API calls."""
    a = sidecar_factory(frontend_url=frontend_stub.url, api_url=api_server.url, database_url=database_url, name="A")
    b = sidecar_factory(frontend_url=frontend_stub.url, api_url=api_server.url, database_url=database_url, name="B")
    doc = {
        "User-Agent": helpers.CHROME_UA,
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "Sec-Fetch-Dest": "document",
        "Sec-Fetch-Mode": "navigate",
    }
    api = {"User-Agent": helpers.CHROME_UA, "Accept": "*/*", "Sec-Fetch-Dest": "empty", "Sec-Fetch-Mode": "cors"}
    # One cookie jar, as a browser has: cookies are per host, not per port, so both sidecars see the same ones.
    with httpx.Client(timeout=10.0) as client:
        r = client.get(a.url + "/p/a1", headers=doc)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        r = client.get(b.url + "/api/p/a1", headers=api)
        assert r.status_code == 200 and r.json()["sqid"] == "a1"
        r = client.get(a.url + "/p/a1", headers=doc)
        assert r.status_code == 200
        r = client.get(b.url + "/api/p/a1", headers=api)
        assert r.status_code == 200
    helpers.stop_sidecar(a)
    helpers.stop_sidecar(b)

    rep = helpers.report(database_url)
    assert rep["page_views"]["total"] == 2
    assert rep["page_views"]["by_label"].get("/p/[post]", 0) == 2
    assert rep["api_calls"] == 2
    assert rep["unique_visitors"] == 1
    row = helpers.content_row(rep, "artwork", "a1")
    assert row["views"] == 1 and row["unique_viewers"] == 1 and row["views_authenticated"] == 0, row
