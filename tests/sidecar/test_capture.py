"""Capture through the real sidecar: requests in, exact figures out of `trackside report`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import jwt

from tests.conftest import DOC, FIREFOX, GOOGLEBOT, IPHONE
from tests.reports import report_of
from tests.servers import free_port, run_sidecar
from trackside.storage.engine import create_engine

SECRET = "test-secret-test-secret-test-secret"


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 86_400}, SECRET, algorithm="HS256")



async def test_journey_counts_exactly(upstream_url, make_settings):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, jwt_secret=SECRET)
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url) as c:
            # A signed-in visitor on Firefox: document, its API fetch (with the token), a reload,
            # a Next.js client navigation, a prefetch, assets.
            await c.get("/", headers=DOC)
            await c.get("/p/a1", headers={**DOC, "referer": "https://www.Reddit.com/r/pixelart"})
            await c.get("/api/p/a1", headers={"user-agent": FIREFOX, "authorization": "Bearer " + token("u7")})
            await c.get("/p/a1", headers=DOC)  # reload: a page view, the same look
            await c.get("/_next/data/b1/p/b2.json", headers={"user-agent": FIREFOX, "x-nextjs-data": "1"})
            await c.get("/_next/data/b1/p/a1.json", headers={"user-agent": FIREFOX, "purpose": "prefetch"})
            await c.get("/_next/static/chunks/main.js", headers={"user-agent": FIREFOX})
            await c.get("/b/post1?utm_source=news&token=secret", headers=DOC)
            # An anonymous visitor on an iPhone, the author of a1 looking at their own artwork,
            # a signup, an error, a 404 page and a crawler.
            phone = {"user-agent": IPHONE, "sec-fetch-dest": "document", "accept": "text/html"}
            await c.get("/p/a1", headers=phone)
            await c.get("/p/a1", headers={**phone, "user-agent": IPHONE + " Author"})
            await c.get(
                "/api/p/a1?author=u9",
                headers={"user-agent": IPHONE + " Author", "authorization": "Bearer " + token("u9")},
            )
            await c.post("/api/auth/register", headers={"user-agent": IPHONE})
            await c.get("/api/boom?status=503", headers={"user-agent": IPHONE})
            await c.get("/missing?status=404", headers=phone)
            for _ in range(3):
                await c.get("/p/a1", headers={"user-agent": GOOGLEBOT, "accept": "text/html"})
    # Counted by the flusher, which records proxied requests in batches: final once the sidecar stopped.
    assert app.metrics.counts["skipped_prefetch"] == 1
    assert app.metrics.counts["skipped_asset"] == 1

    report = await report_of(settings.database_url)
    assert report["page_views"] == {
        "total": 7,
        "authenticated": 6,  # Firefox's five (its API token lends u7 to them) and the author's one
        "by_label": {"/p/[post]": 5, "/": 1, "/b/[blog]": 1},
    }
    assert report["unique_visitors"] == 3  # u7, the anonymous phone, the author u9
    assert report["unique_visitors_authenticated"] == 2
    assert report["content"] == {
        "artwork": [
            {"id": "a1", "views": 2, "views_authenticated": 1, "unique_viewers": 2, "unique_viewers_authenticated": 1},
            {"id": "b2", "views": 1, "views_authenticated": 1, "unique_viewers": 1, "unique_viewers_authenticated": 1},
        ],
        "blog_post": [
            {"id": "post1", "views": 1, "views_authenticated": 1, "unique_viewers": 1,
             "unique_viewers_authenticated": 1},
        ],
    }
    assert report["api_calls"] == 4
    assert report["signups"] == 1
    assert report["errors"] == {"not_found": 1, "upstream_5xx": 1}
    assert report["devices"] == {"desktop": 5, "mobile": 2}
    assert report["referrers"] == {"reddit.com": 1}
    assert report["bots"] == {"Googlebot": 3}


async def test_stored_event_has_no_ip_no_query_and_utm(upstream_url, make_settings):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url)
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            await c.get("/reset-password?token=hunter2&utm_source=mail", headers=DOC)
    engine = create_engine(settings.database_url)
    async with engine.connect() as conn:
        rows = (await conn.exec_driver_sql("SELECT * FROM events")).mappings().all()
    await engine.dispose()
    assert len(rows) == 1
    row = dict(rows[0])
    assert row["path"] == "/reset-password"
    assert row["utm_source"] == "mail"
    flat = json.dumps(row, default=str)
    assert "hunter2" not in flat
    assert "127.0.0.1" not in flat
    assert len(row["visitor"]) == 32


async def test_upstream_unreachable_is_an_error_event(make_settings):
    dead = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(frontend_url=dead, api_url=dead)
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            assert (await c.get("/p/a1", headers=DOC)).status_code == 502
            assert (await c.get("/api/x", headers={"user-agent": FIREFOX})).status_code == 502
    report = await report_of(settings.database_url)
    assert report["errors"] == {"upstream_unreachable": 2}
    assert report["page_views"]["total"] == 0


async def test_forged_forwarded_for_and_jwt_change_nothing(upstream_url, make_settings):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, jwt_secret=SECRET)
    forged = jwt.encode({"sub": "admin"}, "not-the-secret-not-the-secret-!!", algorithm="HS256")
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            for i in range(5):
                # One client pretending to be five, with a forged token: one visitor, anonymous.
                await c.get("/p/a1", headers={**DOC, "x-forwarded-for": f"81.2.69.{i}"})
                await c.get("/api/p/a1", headers={"user-agent": FIREFOX, "authorization": "Bearer " + forged})
    report = await report_of(settings.database_url)
    assert report["unique_visitors"] == 1
    assert report["page_views"]["authenticated"] == 0
    assert report["content"]["artwork"] == [
        {"id": "a1", "views": 1, "views_authenticated": 0, "unique_viewers": 1, "unique_viewers_authenticated": 0}
    ]


async def test_hint_headers_are_read_and_stripped(upstream_url, make_settings):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url)
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            r = await c.get("/api/p/a1?user=u5&author=u5", headers={"user-agent": FIREFOX})
    assert not [h for h in r.headers if h.startswith("x-trackside")]
    report = await report_of(settings.database_url)
    assert report["content"] == {}  # the author looking at their own artwork
    assert report["api_calls"] == 1


def test_report_cli_json_and_text(tmp_path, upstream_url=None):
    db = f"sqlite+aiosqlite:///{tmp_path}/r.db"
    env = {"PATH": "/usr/bin:/bin"}
    migrate = subprocess.run([sys.executable, "-m", "sidecar", "migrate", "--database-url", db], env=env,
                             capture_output=True, text=True, timeout=60)
    assert migrate.returncode == 0, migrate.stderr
    out = subprocess.run([sys.executable, "-m", "sidecar", "report", "--json", "--database-url", db], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["page_views"] == {"total": 0, "authenticated": 0, "by_label": {}}
    text = subprocess.run([sys.executable, "-m", "sidecar", "report", "--database-url", db], env=env,
                          capture_output=True, text=True, timeout=60)
    assert "Page views" in text.stdout
    bad = subprocess.run([sys.executable, "-m", "sidecar", "report", "--since", "yesterday", "--database-url", db],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "--since" in bad.stderr


def test_serve_refuses_a_bad_setting_naming_it():
    env = {"PATH": "/usr/bin:/bin", "TRACKSIDE_PORT": "eighty"}
    out = subprocess.run([sys.executable, "-m", "sidecar", "serve"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "TRACKSIDE_PORT" in out.stderr


async def test_client_hints_tell_a_phone_from_a_tablet(upstream_url, make_settings):
    # A reduced Chrome user-agent string names no model and no "Mobile": alone it reads as a tablet.
    # Chromium's default Sec-CH-UA-Mobile says which it is; Sec-CH-UA-Platform names Chrome OS.
    reduced = (
        "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36"
    )
    doc = {"accept": "text/html", "sec-fetch-dest": "document", "user-agent": reduced}
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url)
    async with run_sidecar(settings) as (url, _app):
        async with httpx.AsyncClient(base_url=url) as c:
            await c.get("/", headers={**doc, "sec-ch-ua-mobile": "?1", "sec-ch-ua-platform": '"Android"'})
            await c.get("/", headers={**doc, "sec-ch-ua-mobile": "?0", "sec-ch-ua-platform": '"Android"'})
            await c.get("/", headers=doc)
    report = await report_of(settings.database_url)
    assert report["devices"] == {"mobile": 1, "tablet": 2}
