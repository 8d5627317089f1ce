"""`TracksideMiddleware` inside a real FastAPI app on a real uvicorn server.

One table of requests runs twice: through the sidecar in front of the site, and straight to the
site with the middleware inside it. The stored events and the reports must be the same."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest

from middleware import CaptureMiddleware, Settings, TracksideMiddleware
from tests.conftest import DOC, FIREFOX, GOOGLEBOT, IPHONE, REQUIRE_SERVICES, wait_for
from tests.middleware.site import PAGE, create_site
from tests.servers import free_port, run_server, run_sidecar
from trackside.figures import load_days, sum_days
from trackside.queue import RedisWriter, unpack_batch
from trackside.report import build_report
from trackside.storage.engine import create_engine

SECRET = "middleware-test-secret-0123456789abcdef"


def token(user: str) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + 86_400}, SECRET, algorithm="HS256")


PHONE = {"user-agent": IPHONE, "sec-fetch-dest": "document", "accept": "text/html"}
AUTHOR = {**PHONE, "user-agent": IPHONE + " Author"}

# (method, path, headers): "{self}" is the origin the client talks to, "{u7}"/"{u9}" are tokens.
TABLE: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/", DOC),
    ("GET", "/p/a1", {**DOC, "referer": "https://www.Reddit.com/r/pixelart"}),
    ("GET", "/api/p/a1", {"user-agent": FIREFOX, "authorization": "Bearer {u7}"}),
    ("GET", "/p/a1", {**DOC, "referer": "{self}/"}),  # a reload; the site itself is no referrer
    ("GET", "/_next/data/b1/p/b2.json", {"user-agent": FIREFOX, "x-nextjs-data": "1"}),
    ("GET", "/_next/data/b1/p/a1.json", {"user-agent": FIREFOX, "purpose": "prefetch"}),
    ("GET", "/_next/static/chunks/main.js", {"user-agent": FIREFOX, "sec-fetch-dest": "script"}),
    ("GET", "/b/post1?utm_source=news&token=secret", DOC),
    ("GET", "/p/a1", PHONE),
    ("GET", "/p/a1", AUTHOR),
    ("GET", "/api/p/a1?author=u9", {"user-agent": IPHONE + " Author", "authorization": "Bearer {u9}"}),
    ("GET", "/api/p/c3?user=u5", {"user-agent": IPHONE}),
    ("POST", "/api/auth/register", {"user-agent": IPHONE}),
    ("GET", "/api/unavailable", {"user-agent": IPHONE}),
    ("GET", "/api/boom", {"user-agent": IPHONE}),
    ("GET", "/missing?status=404", PHONE),
    ("GET", "/api/feed?items=artwork:a1,artwork:b2;search", {"user-agent": FIREFOX}),
    ("GET", "/p/d4", {**DOC, "sec-gpc": "1"}),
    ("GET", "/p/a1", {"user-agent": GOOGLEBOT, "accept": "text/html"}),
    ("GET", "/p/a1", {"user-agent": GOOGLEBOT, "accept": "text/html"}),
]


async def run_table(base_url: str) -> list[tuple[int, bytes, list[str]]]:
    tokens = {"u7": token("u7"), "u9": token("u9")}
    answers = []
    async with httpx.AsyncClient(base_url=base_url) as c:
        for method, path, headers in TABLE:
            filled = {k: v.format(self=base_url, **tokens) for k, v in headers.items()}
            r = await c.request(method, path, headers=filled)
            answers.append((r.status_code, r.content, [h for h in r.headers if h.startswith("x-trackside")]))
    return answers


async def stored(database_url: str) -> tuple[dict[str, Any], dict[Any, dict[str, int]], Counter[tuple[Any, ...]]]:
    """The report, the per-item figures, and the events less what differs by run (ids, times, salts)."""
    engine = create_engine(database_url)
    today = datetime.now(UTC).date()
    try:
        report = await build_report(engine, today, today, 1800.0)
        async with engine.connect() as conn:
            items = sum_days(await load_days(conn, today, today, 1800.0)).items
            rows = (await conn.exec_driver_sql("SELECT * FROM events ORDER BY ts, kind, content_id")).mappings().all()
    finally:
        await engine.dispose()
    visitors: dict[str, int] = {}
    events: Counter[tuple[Any, ...]] = Counter()
    for row in rows:
        who = visitors.setdefault(row["visitor"], len(visitors))
        events[tuple(v for k, v in row.items() if k not in ("id", "ts", "visitor", "duration_ms")) + (who,)] += 1
    return report, items, events


async def test_the_same_events_as_the_sidecar(make_settings, tmp_path):
    common = {"jwt_secret": SECRET, "honor_dnt": True}
    site = create_site()
    async with run_server(site) as upstream:
        via_sidecar = make_settings(frontend_url=upstream, api_url=upstream, **common)
        async with run_sidecar(via_sidecar) as (url, _):
            answers_sidecar = await run_table(url)

    in_process = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/in_process.db", spool_dir=str(tmp_path / "spool2"), **common
    )
    app = create_site()
    app.add_middleware(TracksideMiddleware, settings=in_process)
    async with run_server(app) as url:
        answers_middleware = await run_table(url)
    # The lifespan's shutdown flushed everything: nothing to wait for.

    assert answers_middleware == answers_sidecar
    assert all(hints == [] for _, _, hints in answers_middleware), "hints never reach the client"
    assert answers_middleware[0][1] == PAGE.encode()

    report_sidecar, items_sidecar, events_sidecar = await stored(via_sidecar.database_url)
    report_middleware, items_middleware, events_middleware = await stored(in_process.database_url)
    assert events_middleware == events_sidecar
    assert items_middleware == items_sidecar
    assert report_middleware == report_sidecar
    # And the figures are the ones this traffic should give, not merely equal.
    assert report_middleware["page_views"] == {
        "total": 7,
        "authenticated": 7,  # Firefox's 5 (u7 from its API token), the phone's (u5, a hint), the author's
        "by_label": {"/p/[post]": 5, "/": 1, "/b/[blog]": 1},
    }
    assert report_middleware["errors"] == {"not_found": 1, "upstream_5xx": 2}
    assert report_middleware["api_calls"] == 7 and report_middleware["signups"] == 1
    assert report_middleware["referrers"] == {"reddit.com": 1}
    assert report_middleware["bots"] == {"Googlebot": 2}
    assert report_middleware["content"]["artwork"][0] == {
        "id": "a1", "views": 2, "views_authenticated": 2, "unique_viewers": 2, "unique_viewers_authenticated": 2,
    }
    assert items_middleware[("artwork", "b2")]["impressions"] == 1
    # 15 requests stored (not: the prefetch, the asset, the GPC one, the bots) and 2 impressions.
    assert sum(events_middleware.values()) == 17


async def test_without_lifespan_it_starts_on_the_first_request(make_settings):
    settings = make_settings()
    wrapped = TracksideMiddleware(create_site(), settings=settings)
    async with run_server(wrapped, lifespan="off") as url:
        async with httpx.AsyncClient(base_url=url) as c:
            assert (await c.get("/p/a1", headers=DOC)).status_code == 200
            await c.get("/api/p/a1", headers={"user-agent": FIREFOX})
        await wait_for(lambda: wrapped.metrics.counts["events_written"] == 2)
    await wrapped.stop()
    report, _, _ = await stored(settings.database_url)
    assert report["page_views"]["total"] == 1 and report["api_calls"] == 1


async def raw_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app with no lifespan support at all (it refuses the scope)."""
    assert scope["type"] == "http", "no lifespan here"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
    await send({"type": "http.response.body", "body": PAGE.encode()})


async def test_an_app_that_refuses_lifespan_is_served_and_counted(make_settings):
    settings = make_settings()
    wrapped = TracksideMiddleware(raw_app, settings=settings)
    async with run_server(wrapped) as url:  # uvicorn's "auto" lifespan: it notes the refusal and goes on
        async with httpx.AsyncClient(base_url=url) as c:
            r = await c.get("/p/a1", headers=DOC)
        assert r.status_code == 200 and r.text == PAGE
        await wait_for(lambda: wrapped.metrics.counts["events_written"] == 1)
    await wrapped.stop()


async def test_a_broken_database_never_reaches_the_app(make_settings, tmp_path):
    dead = f"postgresql+asyncpg://trackside@127.0.0.1:{free_port()}/nothing"
    settings = make_settings(database_url=dead)
    app = create_site()
    app.add_middleware(TracksideMiddleware, settings=settings)
    async with run_server(app) as url:
        async with httpx.AsyncClient(base_url=url) as c:
            for _ in range(3):
                r = await c.get("/p/a1", headers=DOC)
                assert r.status_code == 200 and r.text == PAGE
    # Nothing lost silently: what could not be written waits in the spool.
    assert any((tmp_path / "spool").iterdir())


async def test_a_failing_capture_never_reaches_the_app(make_settings):
    settings = make_settings()
    wrapped = TracksideMiddleware(create_site(), settings=settings)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("capture bug")

    wrapped.pipeline.capturer.record = broken  # type: ignore[method-assign]
    async with run_server(wrapped) as url:
        async with httpx.AsyncClient(base_url=url) as c:
            r = await c.get("/api/p/a1?author=u1", headers={"user-agent": FIREFOX})
    assert r.status_code == 200 and r.json() == {"sqid": "a1"} and "x-trackside-author" not in r.headers
    assert wrapped.metrics.counts["capture_failed"] == 1


async def test_responses_are_unchanged_but_for_hints(make_settings):
    bare = create_site()
    wrapped = create_site()
    wrapped.add_middleware(TracksideMiddleware, settings=make_settings())
    seen = []
    for app in (bare, wrapped):
        async with run_server(app) as url:
            async with httpx.AsyncClient(base_url=url) as c:
                r = await c.get("/api/p/a1?author=u9&user=u2", headers={"user-agent": FIREFOX})
                page = await c.get("/p/a1", headers=DOC)
        seen.append((r.status_code, r.content, [(k, v) for k, v in r.headers.items() if k != "date"], page.content))
    assert ("x-trackside-author", "u9") in seen[0][2]
    without_hints = [(k, v) for k, v in seen[0][2] if not k.startswith("x-trackside-")]
    assert seen[1] == (seen[0][0], seen[0][1], without_hints, seen[0][3])


def test_the_package_exports():
    assert TracksideMiddleware.__module__ == "middleware.asgi"
    assert CaptureMiddleware.__module__ == "trackside.capture"
    assert Settings.__module__ == "trackside.settings"


@pytest.mark.redis
async def test_the_redis_sink(make_settings):
    url = os.environ.get("TRACKSIDE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    queue = f"trackside-test:{uuid.uuid4().hex[:12]}"
    settings = make_settings(redis_url=url, queue_name=queue)
    writer = RedisWriter(url, queue)
    try:
        await asyncio.wait_for(writer.connect(), 3)
    except Exception:
        if REQUIRE_SERVICES:
            raise
        pytest.skip("Redis not reachable")
    app = create_site()
    app.add_middleware(TracksideMiddleware, settings=settings)
    try:
        async with run_server(app) as base:
            async with httpx.AsyncClient(base_url=base) as c:
                await c.get("/p/a1", headers=DOC)
                await c.get("/api/feed?items=artwork:a1", headers={"user-agent": FIREFOX})
        jobs = await writer.pool.queued_jobs(queue_name=queue)  # type: ignore[union-attr]
        events = [e for job in jobs for e in unpack_batch(job.args[0]).events]
        assert sorted((e.kind, e.path) for e in events) == [
            ("api_call", "/api/feed"),
            ("impression", "/api/feed"),
            ("page_view", "/p/a1"),
        ]
    finally:
        await writer.pool.delete(queue)  # type: ignore[union-attr]
        await writer.close()
