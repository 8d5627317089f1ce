"""Trackside's own API: query, popular, realtime, CSV, OpenAPI; bad parameters are 400s naming them."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.servers import run_sidecar
from tests.sidecar.test_stats import ADMIN, MOD, bearer, ev, midnight
from trackside.batch import Batch
from trackside.rollup import rollup_pending
from trackside.storage.writes import write_batch

API = "/_trackside/api/v1"


async def get(settings, path, **kw):
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            return await c.get(path, **kw)


async def test_query_site_totals_and_by_day(seeded):
    settings, engine = seeded
    await rollup_pending(engine, 1800.0)
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            totals = (
                await c.get(API + "/query", params={"metrics": "page_views,visitors,content_views,signups"})
            ).json()
            by_day = (
                await c.post(API + "/query", json={"metrics": ["page_views"], "dimensions": ["day"], "period": "7d"})
            ).json()
            by_country = (await c.get(API + "/query", params={"metrics": "page_views", "dimensions": "country"})).json()
            filtered = (
                await c.post(
                    API + "/query",
                    json={
                        "metrics": ["page_views"],
                        "dimensions": ["country"],
                        "filters": [["is_not", "country", ["NL"]]],
                    },
                )
            ).json()
            content = (
                await c.post(
                    API + "/query",
                    json={
                        "metrics": ["content_views", "unique_viewers", "impressions"],
                        "dimensions": ["content"],
                        "limit": 1,
                    },
                )
            ).json()
            auth = (await c.get(API + "/query", params={"dimensions": "authenticated"})).json()
            csv = await c.get(
                API + "/query", params={"metrics": "page_views", "dimensions": "country", "format": "csv"}
            )
    assert totals["results"] == [{"dimensions": [], "metrics": [8, 6, 7, 1]}]
    assert totals["meta"]["definitions"]["visitors"].startswith("site-wide: signed-in users merged")
    today = datetime.now(UTC).date()
    assert by_day["results"] == [
        {"dimensions": [(today - timedelta(days=6 - i)).isoformat()], "metrics": [[0, 0, 0, 0, 0, 2, 4][i]]}
        for i in range(7)
    ]
    assert by_country["results"] == [
        {"dimensions": ["NL"], "metrics": [3]},
        {"dimensions": ["BR"], "metrics": [1]},
        {"dimensions": ["GB"], "metrics": [1]},
    ]
    assert filtered["results"] == [{"dimensions": ["BR"], "metrics": [1]}, {"dimensions": ["GB"], "metrics": [1]}]
    assert content["results"] == [{"dimensions": ["artwork:a1"], "metrics": [6, 4, 2]}]
    assert content["meta"]["total_rows"] == 2
    assert auth["results"] == [
        {"dimensions": ["false"], "metrics": [4, 4]},
        {"dimensions": ["true"], "metrics": [4, 2]},
    ]
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines() == ["country,page_views", "NL,3", "BR,1", "GB,1"]


async def test_popular_and_realtime(seeded):
    settings, _ = seeded
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer " + ADMIN}) as c:
            popular = (await c.get(API + "/popular", params={"kind": "artwork", "period": "30d"})).json()
            blogs = (await c.get(API + "/popular", params={"kind": "blog_post", "period": "today"})).json()
            realtime = (await c.get(API + "/realtime")).json()
    # No title known (no hint, no TRACKSIDE_TITLE_URL); the page from the content rules.
    assert popular["items"] == [
        {"id": "a1", "views": 6, "unique_viewers": 4, "impressions": 2, "title": None, "page": "/p/a1"}
    ]
    assert blogs["items"] == [
        {"id": "post1", "views": 1, "unique_viewers": 1, "impressions": 0, "title": None, "page": "/b/post1"}
    ]
    # Seeded events are at today's first seconds; only a run in the first 5 minutes of a UTC day sees them.
    assert realtime["seconds"] == 300
    assert realtime["visitors"] in (0, 4)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"metrics": "bogus"}, "metrics"),
        ({"dimensions": "planet"}, "dimensions"),
        ({"dimensions": "country,device"}, "dimensions"),
        ({"period": "forever"}, "period"),
        ({"period": "2026-02-30,2026-03-01"}, "period"),
        ({"period": "2026-03-02,2026-03-01"}, "period"),
        ({"limit": "0"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"order": "sideways"}, "order"),
        ({"filters": "not json"}, "filters"),
        ({"filters": '[["is","country",["GB"]]]'}, "filters"),
        ({"metrics": "errors", "dimensions": "country"}, "metrics"),
        ({"metrics": "page_views", "dimensions": "content"}, "metrics"),
    ],
)
async def test_bad_query_parameters_are_400_naming_them(seeded, params, named):
    settings, _ = seeded
    r = await get(settings, API + "/query", params=params, headers=MOD)
    assert r.status_code == 400
    assert r.json()["detail"].startswith(named + ":")


async def test_bad_json_body_and_roles(seeded):
    settings, _ = seeded
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            broken = await c.post(API + "/query", content=b"{nope", headers=MOD)
            extra = await c.post(API + "/query", json={"metric": ["page_views"]}, headers=MOD)
            anonymous = await c.get(API + "/query")
            user = await c.get(API + "/popular", headers=bearer("u7"))
            kind = await c.get(API + "/popular", params={"kind": "planet"}, headers=MOD)
            item = await c.get(API + "/items/artwork/a1", headers=MOD)
            missing = await c.get(API + "/items/artwork/zzz", headers=MOD)
            spec = await c.get("/_trackside/api/openapi.json")
    assert (broken.status_code, broken.json()["detail"]) == (400, "body: not valid JSON")
    assert (extra.status_code, extra.json()["detail"]) == (400, "metric: unknown parameter")
    assert anonymous.status_code == 401
    assert user.status_code == 403
    assert kind.status_code == 400
    assert item.status_code == 200 and item.json()["total_views"] == 6
    assert missing.status_code == 404
    paths = spec.json()["paths"]
    assert set(paths) >= {
        "/api/post/{id}/stats",
        "/api/blog-post/{id}/stats",
        "/api/admin/sitewide-stats",
        "/_trackside/api/v1/query",
        "/_trackside/api/v1/popular",
        "/_trackside/api/v1/realtime",
    }


async def test_query_answers_are_cached_by_normalized_query_a_few_seconds_with_today_and_closed_days_till_they_change(
    seeded,
):
    settings, engine = seeded
    # Rolled up first, so that the sidecar's own start-up rollup changes nothing mid-test.
    await rollup_pending(engine, 1800.0)
    by_day = {"metrics": "page_views", "dimensions": "day", "period": "7d"}
    closed = {"metrics": "page_views", "dimensions": "day", "period": "yesterday"}
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            first = (await c.get(API + "/query", params=by_day)).json()
            popular = (await c.get(API + "/popular", params={"period": "30d"})).json()
            yesterday = (await c.get(API + "/query", params=closed)).json()
            await write_batch(engine, Batch(events=[ev(time.time(), "v7", path="/about")]))
            hits = app.stats.cache_hits
            # The same query, spelled another way (POST, lists): served from the cache (at most 5 s old).
            again = (
                await c.post(API + "/query", json={"metrics": ["page_views"], "dimensions": ["day"], "period": "7d"})
            ).json()
            popular_again = (await c.get(API + "/popular", params={"period": "30d", "kind": "artwork"})).json()
            assert app.stats.cache_hits == hits + 2
            denied = await c.get(API + "/query", params=by_day, headers=bearer("u7"))  # never from the cache
            refreshed = (await c.get(API + "/query", params={**by_day, "refresh": "true"})).json()
            limited = (await c.get(API + "/query", params={**by_day, "refresh": "true"})).json()
            # After 5 s an answer that includes today is computed again; one of closed days alone is not.
            await asyncio.sleep(5.2)
            hits = app.stats.cache_hits
            later = (await c.get(API + "/query", params=by_day)).json()
            yesterday_later = (await c.get(API + "/query", params=closed)).json()
            assert app.stats.cache_hits == hits + 1
            # A late event for yesterday makes its day dirty: the next answers read it from stored events...
            await write_batch(engine, Batch(events=[ev(midnight(1) + 300, "v8", path="/about")]))
            late = (await c.get(API + "/query", params=closed)).json()
            late_week = (await c.get(API + "/query", params=by_day)).json()
            # ...and once the day is rolled up again, from its new daily rows.
            await rollup_pending(engine, 1800.0)
            rolled = (await c.get(API + "/query", params=closed)).json()
    counts = lambda r: [row["metrics"][0] for row in r["results"]]  # noqa: E731
    assert counts(first) == [0, 0, 0, 0, 0, 2, 4]
    assert again == first and popular_again == popular
    assert "the time of the read" in first["meta"]["definitions"]["computed_at"]
    assert denied.status_code == 403
    assert counts(refreshed) == [0, 0, 0, 0, 0, 2, 5]  # ?refresh=true skips the cache
    assert refreshed["meta"]["computed_at"] > first["meta"]["computed_at"]
    assert limited == refreshed  # a second refresh within 10 s is served from the cache
    assert counts(later) == [0, 0, 0, 0, 0, 2, 5] and later["meta"]["computed_at"] > refreshed["meta"]["computed_at"]
    assert counts(yesterday) == [2] and yesterday_later == yesterday  # closed days: the same cached answer
    assert counts(late) == [3] and counts(late_week) == [0, 0, 0, 0, 0, 3, 5]
    assert counts(rolled) == [3] and rolled["meta"]["computed_at"] > late["meta"]["computed_at"]
