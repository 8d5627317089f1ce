"""End to end, the web snippet in headless Chromium: injected by the sidecar into the Next.js site, and included by
hand on a page of another origin.

- Client navigations: with injection on, the journey of test_nextjs_journey.py counts every navigation exactly once,
  the one that makes no request (to the static, prefetched /about) included.
- Impressions: a feed counts the items that were in view for a second, never those far below the fold or only
  scrolled past.
- Widgets: a page on another origin (another loopback host and port) showing an artwork records a widget view.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e import helpers
from tests.e2e.test_nextjs_journey import ANON_BY_LABEL, ANON_PAGE_VIEWS, JOURNEY_STEPS

pytestmark = pytest.mark.timeout(600)

SNIPPET_JOURNEY = helpers.E2E_DIR / "snippet_journey.mjs"


def start_sidecar(tmp: Path, frontend_url: str, api_url: str, database_url: str, **env: str) -> helpers.Proc:
    """`trackside serve` with extra TRACKSIDE_* settings from the environment (the CLI has no flag for them)."""
    port = helpers.free_port()
    argv = [sys.executable, "-m", "sidecar", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--frontend-url", frontend_url, "--api-url", api_url, "--database-url", database_url]
    proc = helpers.Proc("sidecar", argv, tmp / "sidecar.log")
    proc.url = f"http://127.0.0.1:{port}"
    proc.start(helpers.REPO_ROOT, env={**helpers.sidecar_env(None), **env})
    try:
        proc.wait_http(proc.url + "/_trackside/health", timeout=60)
    except BaseException:
        proc.stop()
        raise
    return proc


def run_snippet_journey(page_url: str, scenario: str, timeout: float = 90.0) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        helpers.skip_or_fail("node is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("PAGE_URL", "SCENARIO")}
    env.update(PAGE_URL=page_url, SCENARIO=scenario, CHROMIUM=str(helpers.chromium_path()),
               USER_AGENT=helpers.CHROME_UA, JOURNEY_TIMEOUT_MS="60000")
    r = subprocess.run([str(node), str(SNIPPET_JOURNEY)], cwd=helpers.E2E_DIR, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"snippet_journey.mjs failed ({r.returncode}):\n{r.stderr[-4000:]}"
    return json.loads(r.stdout)


def beacon_rows(database_url: str) -> list[dict[str, Any]]:
    path = database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM events WHERE nav = 'beacon' ORDER BY ts")]


def beacon_bodies(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in requests]


@pytest.mark.browser
def test_every_client_navigation_counts_once(next_server, api_server, e2e_database_url, tmp_path) -> None:
    database_url = e2e_database_url
    sidecar = start_sidecar(tmp_path, next_server.url, api_server.url, database_url, TRACKSIDE_INJECT_SNIPPET="1")
    try:
        journey = helpers.run_journey(sidecar.url)
    finally:
        helpers.stop_sidecar(sidecar)

    beacons = [r for r in journey["requests"] if urlsplit(r["path"]).path == "/_trackside/b"]
    kinds = [json.loads(r["body"])["t"] for r in beacons]
    views = [r for r, t in zip(beacons, kinds, strict=True) if t == "pageview"]
    # One page view beacon per navigation, every beacon answered; besides them only engagements (a page left by a
    # client navigation: at most one per page view, and never two within a few seconds).
    assert Counter(r["step"] for r in views) == Counter(list(JOURNEY_STEPS))
    assert set(kinds) <= {"pageview", "engagement"} and kinds.count("engagement") < len(views)
    assert {r["status"] for r in beacons} == {204} and {r["method"] for r in beacons} == {"POST"}
    # The navigation to /about made no request but beacons: the proxy alone could not have seen it.
    about = [r for r in helpers.step_requests(journey, "to_about") if not r["path"].startswith("/_next/static/")]
    assert {urlsplit(r["path"]).path for r in about} == {"/_trackside/b"}
    # The snippet came from its hashed, immutable URL, and only the documents carry a token.
    scripts = {urlsplit(r["path"]).path for r in journey["requests"] if "/_trackside/s." in r["path"]}
    assert len(scripts) == 1

    rep = helpers.report(database_url)
    assert rep["page_views"]["total"] == ANON_PAGE_VIEWS + 1
    assert rep["page_views"]["by_label"] == {**{k: v for k, v in ANON_BY_LABEL.items() if v}, "/about": 1}
    assert rep["unique_visitors"] == 1 and rep["referrers"] == {}
    for kind, item in (("artwork", "a1"), ("artwork", "b2"), ("blog_post", "post1")):
        assert helpers.content_row(rep, kind, item)["views"] == 1
    stored = [r for r in beacon_rows(database_url) if r["kind"] != "engagement"]
    assert len(stored) == len(JOURNEY_STEPS)
    assert not any(r["unverified"] for r in stored), "every beacon carried its page's token"
    assert all(r["browser"] == "Chrome" and r["device"] == "desktop" for r in stored)


@pytest.mark.browser
def test_a_feed_counts_only_what_was_seen(next_server, api_server, e2e_database_url, tmp_path) -> None:
    database_url = e2e_database_url
    sidecar = start_sidecar(tmp_path, next_server.url, api_server.url, database_url, TRACKSIDE_INJECT_SNIPPET="1")
    try:
        result = run_snippet_journey(sidecar.url + "/feed", "feed")
    finally:
        helpers.stop_sidecar(sidecar)

    assert result["state"]["snippet"] and result["state"]["token_in_tag"]
    assert result["state"]["scroll_height"] > 8000, "c3 and d4 are far below the fold"
    sent = beacon_bodies(result["beacons"])
    assert {r["status"] for r in result["beacons"]} == {204}
    shown = sorted((b["v"], item) for b in sent if b["t"] == "impression" for item in b["i"])
    assert shown == [("listing", "artwork:a1"), ("listing", "artwork:b2"), ("search", "artwork:s5")]

    rows = [r for r in beacon_rows(database_url) if r["kind"] == "impression"]
    assert sorted((r["content_id"], r["view_type"], r["path"], r["unverified"]) for r in rows) == [
        ("a1", "listing", "/feed", 0),
        ("b2", "listing", "/feed", 0),
        ("s5", "search", "/feed", 0),
    ]
    rep = helpers.report(database_url)
    assert rep["page_views"]["by_label"] == {"/feed": 1}  # the document and its beacon: one view


@pytest.mark.browser
def test_a_widget_on_another_origin_records_a_widget_view(
    frontend_stub, api_server, e2e_database_url, tmp_path
) -> None:
    database_url = e2e_database_url
    sidecar = start_sidecar(tmp_path, frontend_stub.url, api_server.url, database_url)
    # Another site: a plain static page on another host and port that embeds artwork a1 and includes the snippet.
    site = tmp_path / "other-site"
    site.mkdir()
    (site / "embed.html").write_text(
        "<!doctype html><html><head><title>A blog</title>"
        f'<script src="{sidecar.url}/_trackside/snippet.js" defer></script></head><body>'
        '<div data-trackside-widget="artwork:a1" style="width:320px;height:320px">Sunrise over Alder</div>'
        '<div style="height:5000px"></div>'
        '<div data-trackside-widget="artwork:b2" style="width:320px;height:320px">never scrolled to</div>'
        "</body></html>"
    )
    port = helpers.free_port()
    other = helpers.Proc("other-site", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                        "--directory", str(site)], tmp_path / "other-site.log")
    other.start(site)
    try:
        other.wait_http(f"http://127.0.0.1:{port}/embed.html", timeout=30)
        # "localhost" and "127.0.0.1" are two origins (and two referrer domains) to the browser and to Trackside.
        result = run_snippet_journey(f"http://localhost:{port}/embed.html", "widget")
    finally:
        other.stop()
        helpers.stop_sidecar(sidecar)

    sent = beacon_bodies(result["beacons"])
    assert sent == [{"t": "widget", "i": ["artwork:a1"], "r": f"http://localhost:{port}"}]
    assert not any(b["t"] == "pageview" for b in sent), "another site's pages are not this site's page views"
    assert result["beacons"][0]["status"] is None or result["beacons"][0]["status"] in (0, 204)  # opaque (no-cors)

    rows = beacon_rows(database_url)
    assert [(r["kind"], r["content_kind"], r["content_id"], r["view_type"], r["path"], r["referrer"])
            for r in rows] == [("page_view", "artwork", "a1", "widget", "/p/a1", "localhost")]
    # No page token can come from another site: the widget view is stored as unverified and reported apart.
    assert rows[0]["unverified"] == 1
    rep = helpers.report(database_url)
    assert rep["page_views"]["total"] == 0 and rep["content"] == {}
