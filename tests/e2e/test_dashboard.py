"""The built-in dashboard at `/_trackside/`, opened in headless Chromium (Debian's chromium + playwright-core) on a
real sidecar over a database (SQLite, PostgreSQL) seeded with known events, some days rolled up: `dashboard.mjs`
signs in, reads what the page shows (KPI texts, the SVG points and bars of the charts, the bar lists, the bot panel,
the signed-in toggle, an item page) and prints it as JSON; the values asserted here are the seed's.

Screenshots: set TRACKSIDE_TEST_SCREENSHOTS=/tmp/somewhere to have dashboard.mjs write them (never in the repo).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.e2e import helpers
from tests.servers import run_sidecar
from trackside.batch import Batch
from trackside.events import Event, new_event_id
from trackside.rollup import rollup_pending
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.writes import write_batch

pytestmark = pytest.mark.timeout(300)

SCRIPT = helpers.E2E_DIR / "dashboard.mjs"
PLAYWRIGHT = helpers.NEXTSITE / "node_modules" / "playwright-core"
SECRET = "dashboard-secret-dashboard-secret-0123"
ADMIN = "dashboard-admin-token-0123456789"
ROOT = "/_trackside/"

# Attacker-controlled strings: a page label and a referrer that would run script if inserted as HTML.
XSS_LABEL = '<img src=x onerror="window.__xss=1">'
XSS_REFERRER = '"><svg onload="window.__xss=2"></svg>'


def token(sub: str, roles: list[str]) -> str:
    claims = {"sub": sub, "roles": roles, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def midnight(days_ago: int) -> float:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today - timedelta(days=days_ago)).timestamp()


def ev(ts: float, visitor: str, path: str, **kw: Any) -> Event:
    values: dict[str, Any] = dict(
        kind="page_view", nav="document", method="GET", status=200, device="desktop", browser="Firefox", os="Linux"
    )
    values.update(kw)
    label = values.pop("label", None)
    if path.startswith("/p/"):
        values.setdefault("content_kind", "artwork")
        values.setdefault("content_id", path.rsplit("/", 1)[1])
    elif path.startswith("/b/"):
        values.setdefault("content_kind", "blog_post")
        values.setdefault("content_id", path.rsplit("/", 1)[1])
    if label is None:
        label = "/p/[post]" if path.startswith("/p/") else "/b/[blog]" if path.startswith("/b/") else path
    return Event(id=new_event_id(ts), ts=ts, path=path, label=label, visitor=visitor, **values)


def seed(now: float) -> Batch:
    """12 and 5 days ago (rolled up), yesterday (raw), the last hours (raw), and bots on two days."""
    d12, d5, d1 = midnight(12), midnight(5), midnight(1)
    events = [
        ev(d12 + 3600, "v1", "/", country="GB", referrer="news.ycombinator.com"),
        ev(d12 + 3660, "v1", "/p/a1", country="GB"),
        ev(d12 + 7200, "v2", "/about", country="US", device="mobile", browser="Mobile Safari", os="iOS"),
        # u7, signed in.
        ev(d5 + 600, "vu", "/p/a1", country="NL", user_id="u7"),
        ev(d5 + 660, "vu", "/p/b2", country="NL", user_id="u7"),
        ev(d5 + 900, "v3", "/", country="US", referrer="reddit.com"),
        ev(d5 + 960, "v3", "/x", label=XSS_LABEL, country="US", referrer=XSS_REFERRER),
        ev(d1 + 60, "v4", "/b/post1", country="DE", device="tablet"),
        ev(d1 + 120, "v4", "/", country="DE", device="tablet"),
        ev(
            d1 + 180,
            "v4",
            "/api/auth/register",
            kind="api_call",
            nav="api",
            method="POST",
            status=201,
            event_name="signup",
        ),
        ev(
            d1 + 240,
            "v4",
            "/api/post/upload",
            kind="api_call",
            nav="api",
            method="POST",
            status=201,
            event_name="upload",
        ),
        ev(d1 + 300, "v4", "/api/x", kind="error", nav="api", status=502, error_type="upstream_unreachable"),
        ev(d1 + 320, "v4", "/nope", kind="error", status=404, error_type="not_found"),
        # The last hours: in the 24-hour chart; the last two page views are in the realtime window too.
        ev(now - 5 * 3600, "v7", "/", country="GB", referrer="twitter.com"),
        ev(now - 3 * 3600, "v6", "/b/post1", country="FR", user_id="u8"),
        ev(now - 40, "v5", "/p/a1", country="US", referrer="github.com", browser="Chrome"),
        ev(now - 35, "v5", "/p/a1", kind="impression", nav="beacon", view_type="listing"),
        ev(now - 34, "v5", "/p/a1", kind="impression", nav="beacon", view_type="listing"),
        ev(now - 20, "vu", "/", country="NL", user_id="u7"),
        ev(now - 15, "vu", "/api/me", kind="api_call", nav="api", user_id="u7", country="NL"),
    ]
    bots: Counter[tuple[date, str, str]] = Counter()
    day = lambda ts: datetime.fromtimestamp(ts, UTC).date()  # noqa: E731
    bots[(day(d1), "Googlebot", "/")] += 5
    bots[(day(d1), "bingbot", "/p/[post]")] += 2
    bots[(day(d5), "GPTBot", "/p/[post]")] += 3
    return Batch(events=events, bots=bots)


def page_views(batch: Batch, signed_in: bool = False) -> list[Event]:
    return [e for e in batch.events if e.kind == "page_view" and (e.user_id or not signed_in)]


def per_day(events: list[Event], keys: list[str]) -> list[int]:
    counts = Counter(datetime.fromtimestamp(e.ts, UTC).date().isoformat() for e in events)
    return [counts.get(k, 0) for k in keys]


def per_hour(events: list[Event], keys: list[str]) -> list[int]:
    counts = Counter(datetime.fromtimestamp(e.ts, UTC).strftime("%Y-%m-%dT%H:00:00+00:00") for e in events)
    return [counts.get(k, 0) for k in keys]


def last_days(n: int = 30) -> list[str]:
    today = datetime.now(UTC).date()
    return [(today - timedelta(days=n - 1 - i)).isoformat() for i in range(n)]


def check_hours(keys: list[str]) -> None:
    """24 consecutive UTC hours ending with the current one."""
    assert len(keys) == 24
    starts = [datetime.fromisoformat(k) for k in keys]
    assert all(b - a == timedelta(hours=1) for a, b in zip(starts, starts[1:], strict=False))
    current = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    assert starts[-1] in (current, current - timedelta(hours=1))


def listed(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(r["key"], r["value"]) for r in rows]


# ------------------------------------------------------------------------------------------------ running the page


def browser_or_skip() -> tuple[str, str]:
    node = shutil.which("node")
    if node is None:
        helpers.skip_or_fail("node is not installed")
    chromium = helpers.chromium_path()
    if chromium is None:
        helpers.skip_or_fail("chromium is not installed (/usr/bin/chromium, or set $CHROMIUM)")
    if not PLAYWRIGHT.is_dir():
        helpers.build_nextsite()  # `npm ci` of the e2e site brings playwright-core (no browser download)
    assert node is not None and chromium is not None
    return node, chromium


async def run_dashboard(node: str, chromium: str, url: str, tok: str, timeout: float = 120.0, **env: str) -> dict:
    """node dashboard.mjs, without blocking the event loop the sidecar runs on; its own process group, ended by id."""
    environ = dict(
        DASHBOARD_URL=url, TOKEN=tok, CHROMIUM=chromium, DASHBOARD_TIMEOUT_MS=str(int(timeout * 1000) - 5000)
    )
    unset = ("TOKEN", "BAD_TOKEN", "FORBIDDEN_TOKEN", "ITEM")
    return await helpers.run_browser_script(node, SCRIPT, {**environ, **env}, timeout, unset=unset)


@pytest.fixture
async def seeded_settings(upstream_url: str, make_settings: Any, database_url: str, tmp_path: Path):
    """The seed in a fresh database of each kind (SQLite, PostgreSQL), before the sidecar starts."""
    now = time.time()
    batch = seed(now)
    await migrate(database_url)
    engine = create_engine(database_url)
    await write_batch(engine, batch)
    # Roll up the days before yesterday (12 and 5 days ago); yesterday and today stay raw.
    rolled = await rollup_pending(engine, 1800.0, today=datetime.now(UTC).date() - timedelta(days=1))
    assert sorted(r.day for r in rolled) == [datetime.fromtimestamp(midnight(d), UTC).date() for d in (12, 5)]
    await engine.dispose()
    settings = make_settings(
        frontend_url=upstream_url,
        api_url=upstream_url,
        jwt_secret=SECRET,
        admin_token=ADMIN,
        database_url=database_url,
        trust_roles_claim=True,
    )
    return settings, batch


# ------------------------------------------------------------------------------------------------------- tests


async def test_dashboard_files_are_served_with_caching_headers(make_settings) -> None:
    async with run_sidecar(make_settings(admin_token=ADMIN)) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            index = await c.get(ROOT)
            js = await c.get(ROOT + "static/app.js")
            css = await c.get(ROOT + "static/style.css", headers={"accept-encoding": "gzip"})
            again = await c.get(ROOT + "static/app.js", headers={"if-none-match": js.headers["etag"]})
            missing = await c.get(ROOT + "static/dashboard_routes.py")
            traversal = await c.get(ROOT + "static/..%2f..%2fapp.py")
            redirect = await c.get(ROOT + "index.html")
            metrics = (await c.get("/_trackside/metrics")).json()
    assert index.status_code == 200 and index.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="static/app.js" defer></script>' in index.text
    assert index.headers["cache-control"] == "no-cache" and index.headers["etag"]
    csp = index.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert index.headers["referrer-policy"] == "no-referrer"
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.headers["cache-control"] == "no-cache" and js.headers["x-content-type-options"] == "nosniff"
    assert "innerHTML" not in js.text and "insertAdjacentHTML" not in js.text and "eval(" not in js.text
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.headers["content-encoding"] == "gzip" and ":root" in css.text
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == js.headers["etag"]
    assert missing.status_code == 404 and traversal.status_code == 404
    assert redirect.status_code == 308 and redirect.headers["location"] == ROOT
    # Trackside's own routes: answered without an upstream (none runs here), and capture saw none of them.
    assert not any(metrics.values()), metrics


@pytest.mark.browser
async def test_dashboard_in_chromium(seeded_settings) -> None:
    node, chromium = browser_or_skip()
    settings, batch = seeded_settings
    async with run_sidecar(settings) as (url, _):
        got = await run_dashboard(
            node,
            chromium,
            url + ROOT,
            token("mod1", ["user", "moderator"]),
            BAD_TOKEN="not-a-token",
            FORBIDDEN_TOKEN=token("u7", ["user"]),
            ADMIN_TOKEN=ADMIN,
            ITEM="artwork/a1",
        )
        await asyncio.sleep(0.3)  # anything the page's requests could have become is flushed by now
        async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer " + ADMIN}) as c:
            after = (await c.get("/_trackside/api/v1/site")).json()

    assert got["problems"] == [], got["problems"]  # no script error, no CSP violation

    # Login: shown first; a bad token and a non-moderator's bring it back with the reason, and are not kept.
    assert got["first"] == {"ready": "login", "heading": "Moderator sign-in", "error": None, "topbar_hidden": True}
    bad = got["bad_token"]
    assert bad["ready"] == "login" and not bad["stored_token"] and bad["topbar_hidden"]
    assert "401" in bad["error"] and "the token does not verify" in bad["error"], bad
    forbidden = got["forbidden_token"]
    assert forbidden["ready"] == "login" and not forbidden["stored_token"]
    # (the first refusal to come back may be the v1 API's "moderators only" or v2's "moderators, the admin token ...")
    assert "403" in forbidden["error"] and "moderators" in forbidden["error"], forbidden

    # ---- the overview, all visitors
    ov = got["overview"]
    assert ov["ready"] == "overview" and ov["mode"] == "all" and ov["stored_token"]
    assert ov["toggle"] == [["all", "true"], ["auth", "false"]] and ov["banner"] is None
    # The period's cards (the Query API v2, last 30 days by default), then the 30-day poster's.
    assert {k: v["value"] for k, v in ov["kpis"].items()} == {
        "visitors": "8",  # u7 and u8 merged + visitor-days v1, v2, v3, v4, v5, v7
        "visits": "9",
        "pageviews": "13",
        "views_per_visit": "1.44",
        "bounce_rate": "55.6%",
        "visit_duration": "40s",
        "signups": "1",
        "uploads": "1",
        "api_calls": "4",
        "errors": "2",
        "realtime": "2",  # v5 and vu in the last 5 minutes
    }
    assert ov["kpis"]["realtime"]["note"] == "2 page views · last 5 min"
    assert ov["kpis"]["visitors"]["help"].startswith("A signed-in user once over the period, an anonymous visitor")
    assert ov["kpis"]["pageviews"]["help"].startswith("Every navigation seen")
    assert "visitors = signed-in users merged + anonymous visitor-days" in ov["notes"]

    days = last_days()
    daily = ov["charts"]["period"]
    assert not daily["empty"] and daily["svg"] == 1
    views, visitors = daily["series"]["views"], daily["series"]["visitors"]
    assert views["tag"] == "circle" and views["count"] == 30 and visitors["count"] == 30
    assert views["keys"] == days
    assert views["values"] == per_day(page_views(batch), days)
    assert sum(views["values"]) == 13
    # The daily visitors are per day (a signed-in user once a day); their sum (9) is not the 30-day figure (8).
    assert sum(visitors["values"]) == 9
    hourly = ov["charts"]["hourly"]["series"]["value"]
    assert hourly["tag"] == "rect" and hourly["count"] == 24
    check_hours(hourly["keys"])
    assert hourly["values"] == per_hour(page_views(batch), hourly["keys"])
    assert sum(hourly["values"]) == 4
    assert len(got["daily_tip"]) == 3 and got["daily_tip"][1].startswith("Page views")
    assert got["hourly_tip"][0].endswith("UTC") and got["hourly_tip"][1].startswith("Page views")

    lists = ov["lists"]
    assert listed(lists["pages"]) == [("/", 5), ("/p/[post]", 4), ("/b/[blog]", 2), ("/about", 1), (XSS_LABEL, 1)]
    assert [r["label"] for r in lists["pages"]] == ["/", "/p/[post]", "/b/[blog]", "/about", XSS_LABEL]
    # Visitors by the visit's entry values (v2's visit dimensions).
    assert listed(lists["countries"]) == [("US", 3), ("GB", 2), ("DE", 1), ("FR", 1), ("NL", 1)]
    assert lists["countries"][0]["label"] == "USUnited States"
    assert listed(lists["devices"]) == [("Desktop", 6), ("Mobile", 1), ("Tablet", 1)]
    # v2 was stored as "Mobile Safari" (an older name): read as today's.
    assert listed(lists["browsers"]) == [("Firefox", 6), ("Chrome", 1), ("Safari", 1)]
    assert listed(lists["os"]) == [("GNU/Linux", 7), ("iOS", 1)]
    assert listed(lists["entry_pages"]) == [("/", 4), ("/b/post1", 2), ("/p/a1", 2), ("/about", 1)]
    assert listed(lists["exit_pages"])[:2] == [("/", 3), ("/p/a1", 2)]
    # A visit's referrer is its first page view's: v3's second page view (the XSS referrer) is not one.
    assert listed(lists["referrers"]) == [
        ("github.com", 1),
        ("news.ycombinator.com", 1),
        ("reddit.com", 1),
        ("twitter.com", 1),
    ]
    assert listed(lists["goals"]) == [("signup", 1), ("upload", 1)]
    assert listed(lists["errors"]) == [("not_found", 1), ("upstream_unreachable", 1)]
    assert [r["label"] for r in lists["errors"]] == ["Not found (404)", "Upstream unreachable (502)"]
    # Attacker-controlled strings are text, never markup.
    # (The page's own scripts only: dom.js, the DOM helpers, touch.js, the charts' keyboard and touch handling, then
    # app.js; the panels follow.)
    assert {k: v for k, v in ov["xss"].items() if k != "scripts"} == {"flag": None, "imgs": 0, "handlers": 0}
    assert ov["xss"]["scripts"][:3] == ["static/dom.js", "static/touch.js", "static/app.js"]
    assert all(s.startswith("static/") and s.endswith(".js") for s in ov["xss"]["scripts"])

    # Popular content, linking to a page per item.
    assert [(r["key"], r["cells"][2:], r["href"]) for r in lists["popular-artwork"]] == [
        ("a1", ["3", "3", "2"], "#/item/artwork/a1"),
        ("b2", ["1", "1", "0"], "#/item/artwork/b2"),
    ]
    assert [(r["key"], r["cells"][2:]) for r in lists["popular-blog_post"]] == [("post1", ["2", "2", "0"])]

    # Bot traffic: its own panel, labelled as excluded, after every other figure.
    bots = ov["bots"]
    assert bots["heading"] == "Bot traffic excluded from every other figure"
    assert bots["total"] == "10" and bots["after_everything_else"]
    assert listed(lists["bots"]) == [("Googlebot", 5), ("GPTBot", 3), ("bingbot", 2)]
    bot_bars = ov["charts"]["bots"]["series"]["value"]
    assert bot_bars["count"] == 30 and bot_bars["keys"] == days
    bot_days = {(datetime.now(UTC).date() - timedelta(days=n)).isoformat(): v for n, v in ((5, 3), (1, 7))}
    assert bot_bars["values"] == [bot_days.get(d, 0) for d in days]
    assert {"Page views", "Unique visitors", "Bot traffic"} <= set(ov["definitions"])
    assert ov["footer"].startswith("Computed ") and ov["overflow_x"] <= 0

    # ---- the signed-in toggle: the 24 hours chart switches to its twin; the query engine's figures have none
    si = got["signed_in"]
    assert si["mode"] == "auth" and si["toggle"] == [["all", "false"], ["auth", "true"]]
    assert si["banner"].startswith("Signed-in visitors only.")
    for name in ov["kpis"]:  # no signed-in twin: unchanged, marked
        assert si["kpis"][name]["value"] == ov["kpis"][name]["value"] and si["kpis"][name]["tag"] == "all visitors"
    si_hourly = si["charts"]["hourly"]["series"]["value"]
    assert si_hourly["values"] == per_hour(page_views(batch, signed_in=True), si_hourly["keys"])
    assert listed(si["lists"]["pages"]) == listed(lists["pages"])
    assert got["back_to_all"] == "13"

    # ---- a narrow screen: the charts are redrawn to fit
    narrow = got["narrow"]
    assert narrow["overflow_x"] <= 0 and 0 < narrow["charts"]["period"]["svg_width"] < 390
    assert narrow["charts"]["period"]["series"]["views"]["count"] == 30

    # ---- the item page, reached from the popular list
    item = got["item"]
    assert item["hash"] == "#/item/artwork/a1" and item["title"] == "Artwork a1"
    assert {k: v["value"] for k, v in item["kpis"].items() if k in ("views", "unique_viewers", "impressions")} == {
        "views": "3",
        "unique_viewers": "3",
        "impressions": "2",
    }
    a1 = [e for e in batch.events if e.content_id == "a1"]
    looks = [e for e in a1 if e.kind == "page_view"]  # every page view of a1 here is its own look
    impressions = [e for e in a1 if e.kind == "impression"]
    item_daily = item["charts"]["daily"]["series"]
    assert item_daily["views"]["count"] == 30 and item_daily["views"]["keys"] == days
    assert item_daily["views"]["values"] == per_day(looks, days)
    assert item_daily["impressions"]["values"] == per_day(impressions, days)
    item_hourly = item["charts"]["hourly"]["series"]["value"]
    check_hours(item_hourly["keys"])
    assert item_hourly["values"] == per_hour(looks, item_hourly["keys"]) and sum(item_hourly["values"]) == 1
    assert listed(item["lists"]["countries"]) == [("GB", 1), ("NL", 1), ("US", 1)]
    assert listed(item["lists"]["devices"]) == [("desktop", 3)]
    assert listed(item["lists"]["types"]) == [("view", 3), ("listing", 2)]
    assert listed(item["lists"]["referrers"]) == [("github.com", 1)]
    item_si = got["item_signed_in"]
    assert {k: item_si["kpis"][k]["value"] for k in ("views", "unique_viewers", "impressions")} == {
        "views": "1",
        "unique_viewers": "1",
        "impressions": "0",
    }
    assert item_si["charts"]["daily"]["series"]["views"]["values"] == per_day([e for e in looks if e.user_id], days)
    assert listed(item_si["lists"]["countries"]) == [("NL", 1)]
    assert got["item_reloaded"]["kpis"]["views"]["value"] == "3"  # the sign-in and the page survive a reload
    missing = got["missing_item"]
    assert missing["empty_titles"] == ["No data yet"] and missing["kpis"] == {}
    assert got["back_to_overview"] == "#/"

    # The Refresh button asks for every figure past the server's cache (realtime has none).
    api = ROOT + "api/v1/"
    assert {r for r in got["refresh"] if "/v1/" in r} == {
        *(f"{api}popular?kind={kind}&period=30d&limit=10&refresh=true" for kind in ("artwork", "blog_post")),
        f"{api}realtime",  # the 30-second realtime poll may add another; it has no cache
        f"{api}site?refresh=true",
    }, got["refresh"]
    # The cards, then the top pages alone and the chart and 14 panels in one batch (POSTs, never cached).
    assert got["refresh"].count(ROOT + "api/v2/query") == 2
    assert got["refresh"].count(ROOT + "api/v2/batch") == 1

    # Sign-out forgets the token; the static admin token signs in too.
    assert got["signed_out"] == {"stored_token": False, "error": None}
    assert got["admin"] == "13"

    # Every request stayed on the sidecar, every API call carried the token, and none of it was counted.
    reqs = got["requests"]
    assert reqs["other_origins"] == [] and reqs["api_without_bearer"] == [] and reqs["api"] >= 10
    assert all(p.startswith(ROOT) for p in reqs["paths"]), reqs["paths"]
    assert after["total_page_views_30d"] == 13 and after["total_api_calls_30d"] == 4
    assert after["bot_traffic"]["total_30d"] == 10


@pytest.mark.browser
async def test_dashboard_empty_database(make_settings, upstream_url) -> None:
    """No data at all: every panel says so, nothing breaks."""
    node, chromium = browser_or_skip()
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, jwt_secret=SECRET, admin_token=ADMIN)
    async with run_sidecar(settings) as (url, _):
        got = await run_dashboard(node, chromium, url + ROOT, ADMIN)
    assert got["problems"] == []
    ov = got["overview"]
    assert {k: v["value"] for k, v in ov["kpis"].items()} == {
        "visitors": "0",
        "visits": "0",
        "pageviews": "0",
        "views_per_visit": "0",
        "bounce_rate": "0%",
        "visit_duration": "0s",
        "signups": "0",
        "uploads": "0",
        "api_calls": "0",
        "errors": "0",
        "realtime": "0",
    }
    assert ov["charts"]["period"]["empty"] and ov["charts"]["period"]["svg"] == 0
    assert ov["charts"]["hourly"]["empty"] and ov["charts"]["bots"]["empty"]
    assert ov["empty_titles"] == [
        "No page views in this period",
        "No page views in the last 24 hours",
        "No bot traffic yet",
    ]
    for name in (
        "pages",
        "entry_pages",
        "exit_pages",
        "sources",
        "countries",
        "referrers",
        "utm_source",
        "devices",
        "browsers",
        "os",
        "goals",
        "errors",
        "bots",
        "popular-artwork",
        "popular-blog_post",
    ):
        assert ov["lists"][name]["empty"], name
    assert ov["lists"]["errors"]["text"] == "No errors"
    assert ov["bots"]["total"] == "0"
    assert got["signed_in"]["charts"]["period"]["empty"]
