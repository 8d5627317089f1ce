"""The stats endpoints through a real sidecar: seeded events and rollups, every field asserted,
the same before and after a rollup, and authorization for every endpoint and role."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from tests.servers import run_sidecar
from trackside.batch import Batch
from trackside.events import Event, new_event_id
from trackside.rollup import rollup_pending
from trackside.storage.writes import write_batch

SECRET = "stats-secret-stats-secret-stats-secret"
ADMIN = "machine-admin-token-0123456789"


def token(sub: str, roles: list[str] | None = None) -> str:
    # A day, not minutes: module-level tokens are made at collection and the full suite runs 11+ minutes.
    claims = {"sub": sub, "exp": int(time.time()) + 86_400, "roles": roles or ["user"]}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def bearer(sub: str, roles: list[str] | None = None) -> dict[str, str]:
    return {"authorization": "Bearer " + token(sub, roles)}


MOD = bearer("mod1", ["user", "moderator"])


def midnight(days_ago: int) -> float:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today - timedelta(days=days_ago)).timestamp()


def ev(ts: float, visitor: str, **kw) -> Event:
    path = kw.pop("path", "/p/a1")
    values = dict(
        kind="page_view", nav="document", method="GET", status=200, device="desktop", browser="Firefox", os="Linux"
    )
    values.update(kw)
    if "content_kind" not in values and path.startswith(("/p/", "/api/p/")):
        values["content_kind"], values["content_id"] = "artwork", path.rsplit("/", 1)[1]
    if "content_kind" not in values and path.startswith("/b/"):
        values["content_kind"], values["content_id"] = "blog_post", path.rsplit("/", 1)[1]
    label = "/p/[post]" if path.startswith("/p/") else "/b/[blog]" if path.startswith("/b/") else path
    return Event(id=new_event_id(ts), ts=ts, path=path, label=label, visitor=visitor, **values)


def seed() -> list[Event]:
    d10, d1, d0 = midnight(10), midnight(1), midnight(0)
    return [
        # 10 days ago: an anonymous look from Reddit, and u7 (signed in through the API read).
        ev(d10 + 60, "v1", country="GB", referrer="reddit.com"),
        ev(d10 + 100, "vu", country="NL"),
        ev(d10 + 105, "vu", path="/api/p/a1", kind="api_call", nav="api", user_id="u7", country="NL"),
        # Yesterday: u7 again, and an anonymous phone in Brazil.
        ev(d1 + 100, "vu", country="NL", user_id="u7"),
        ev(d1 + 200, "v3", country="BR", device="mobile", browser="Mobile Safari", os="iOS"),
        # Today (raw): u7, an anonymous look with two feed impressions, and the author (not a view).
        ev(d0 + 1, "vu", country="NL", user_id="u7"),
        ev(d0 + 2, "v4"),
        ev(d0 + 3, "v4", kind="impression", nav="beacon", view_type="listing"),
        ev(d0 + 4, "v4", kind="impression", nav="beacon", view_type="listing"),
        ev(d0 + 5, "v9", user_id="u9", author_id="u9"),
        # 35 days ago: outside every 30-day window.
        ev(midnight(35) + 5, "v0"),
        # A blog post by u9, today.
        ev(d0 + 6, "v1", path="/b/post1", author_id="u9"),
        # A signup and an error today.
        ev(d0 + 7, "v5", path="/api/auth/register", kind="api_call", nav="api", event_name="signup"),
        ev(d0 + 8, "v5", path="/api/x", kind="error", nav="api", status=502, error_type="upstream_unreachable"),
    ]


def expected_item(now: datetime) -> dict:
    today = now.date()
    days = [today - timedelta(days=29 - i) for i in range(30)]
    filled = {today - timedelta(days=10): (2, 2, 0), today - timedelta(days=1): (2, 2, 0), today: (2, 2, 2)}
    filled_auth = {d: (1, 1, 0) for d in filled}
    current = now.replace(minute=0, second=0, microsecond=0)
    hours = [current - timedelta(hours=23 - i) for i in range(24)]

    def daily(table):
        return [
            {
                "date": d.isoformat(),
                "views": table.get(d, (0, 0, 0))[0],
                "unique_viewers": table.get(d, (0, 0, 0))[1],
                "impressions": table.get(d, (0, 0, 0))[2],
            }
            for d in days
        ]

    def hourly(views, impressions):
        midnight_hour = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return [
            {
                "hour": h.strftime("%Y-%m-%dT%H:00:00+00:00"),
                "views": views if h == midnight_hour else 0,
                "impressions": impressions if h == midnight_hour else 0,
            }
            for h in hours
        ]

    return {
        "post_id": 1,  # the site's numeric id, from its own answer
        "public_sqid": "a1",
        "content_id": "a1",
        "total_reactions": 3,
        "reactions_by_emoji": {"heart": 3},
        "total_comments": 2,
        "total_views": 6,
        # u7 once (merged over 30 days), plus the anonymous visitor-days v1, v3, v4.
        "unique_viewers": 4,
        "total_impressions": 2,
        "views_by_country": {"NL": 3, "BR": 1, "GB": 1},
        "views_by_device": {"desktop": 5, "mobile": 1},
        "views_by_type": {"view": 6, "listing": 2},
        "top_referrers": {"reddit.com": 1},
        "daily_views": daily(filled),
        "hourly_views": hourly(2, 2),
        "total_views_authenticated": 3,
        "unique_viewers_authenticated": 1,  # a sum of daily figures would say 3
        "total_impressions_authenticated": 0,
        "views_by_country_authenticated": {"NL": 3},
        "views_by_device_authenticated": {"desktop": 3},
        "views_by_type_authenticated": {"view": 3},
        "top_referrers_authenticated": {},
        "daily_views_authenticated": daily(filled_auth),
        "hourly_views_authenticated": hourly(1, 0),
        "first_view_at": datetime.fromtimestamp(midnight(10) + 60, UTC).isoformat(),
        "last_view_at": datetime.fromtimestamp(midnight(0) + 2, UTC).isoformat(),
    }


def strip_volatile(body: dict) -> dict:
    body = dict(body)
    body.pop("computed_at")
    body.pop("definitions")
    return body


async def test_artwork_stats_every_field_before_and_after_rollup(seeded):
    settings, engine = seeded
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            before = await c.get("/api/post/1/stats", headers=MOD)
            now = datetime.now(UTC)
            assert before.status_code == 200
            assert before.headers["cache-control"] == "private, no-store"
            assert strip_volatile(before.json()) == expected_item(now)
            await rollup_pending(engine, 1800.0)
            after = await c.get("/api/post/1/stats?refresh=true", headers=MOD)
            assert strip_volatile(after.json()) == strip_volatile(before.json())
            assert after.json()["definitions"]["unique_viewers"].startswith("signed-in users merged")


async def test_sitewide_stats(seeded):
    settings, engine = seeded
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            before = (await c.get("/api/admin/sitewide-stats", headers=MOD)).json()
            await rollup_pending(engine, 1800.0)
            after = (await c.get("/api/admin/sitewide-stats?refresh=1", headers=bearer("mod2", ["owner"]))).json()
    assert strip_volatile(after) == strip_volatile(before)
    assert before["total_page_views_30d"] == 8
    # vu's page views: its own user or its API token lends u7; v9 is u9 (the author).
    assert before["total_page_views_30d_authenticated"] == 4
    # u7 and u9 merged, plus anonymous visitor-days v1 (10 days ago), v3, v4, v1 (today).
    assert before["unique_visitors_30d"] == 6
    assert before["unique_visitors_30d_authenticated"] == 2
    assert before["new_signups_30d"] == 1
    assert before["total_api_calls_30d"] == 3
    assert before["total_api_calls_30d_authenticated"] == 1  # u7's read of a1, with its token
    assert before["total_errors_30d"] == 1
    assert before["total_errors_30d_authenticated"] == 0
    assert before["new_signups_30d_authenticated"] == 0
    assert before["errors_by_type"] == {"upstream_unreachable": 1}
    assert before["views_by_page"] == {"/p/[post]": 7, "/b/[blog]": 1}
    assert before["views_by_page_authenticated"] == {"/p/[post]": 4}
    assert before["views_by_country"] == {"NL": 3, "BR": 1, "GB": 1}
    assert before["views_by_device"] == {"desktop": 7, "mobile": 1}
    assert before["top_referrers"] == {"reddit.com": 1}
    assert len(before["daily_views"]) == 30 and len(before["hourly_views"]) == 24
    today = datetime.now(UTC).date()
    assert before["daily_views"][-1] == {"date": today.isoformat(), "count": 4}
    assert before["daily_views"][-11] == {"date": (today - timedelta(days=10)).isoformat(), "count": 2}
    assert sum(p["count"] for p in before["daily_views"]) == 8
    assert before["bot_traffic"] == {
        "total_30d": 0,
        "by_bot": {},
        "daily": [{"date": p["date"], "count": 0} for p in before["daily_views"]],
    }


async def test_blog_post_stats_answered_alone_with_owner_from_hints(seeded):
    settings, _ = seeded
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            owner = await c.get("/api/blog-post/post1/stats", headers=bearer("u9"))
            stranger = await c.get("/api/blog-post/post1/stats", headers=bearer("u7"))
            missing = await c.get("/api/blog-post/nope/stats", headers=MOD)
            machine = await c.get("/api/blog-post/post1/stats", headers={"authorization": "Bearer " + ADMIN})
    assert owner.status_code == 200
    assert owner.json()["blog_post_id"] == "post1"
    assert owner.json()["total_views"] == 1
    assert owner.json()["unique_viewers"] == 1
    assert stranger.status_code == 403
    assert missing.status_code == 404
    assert machine.status_code == 200


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/api/post/1/stats", {}, 401),
        ("/api/post/1/stats", {"authorization": "Bearer not-a-jwt"}, 401),
        (
            "/api/post/1/stats",
            {
                "authorization": "Bearer "
                + jwt.encode({"sub": "x"}, "wrong-secret-wrong-secret-wrong-secret!", algorithm="HS256")
            },
            401,
        ),
        ("/api/post/1/stats", bearer("intruder"), 403),  # the site's own verdict stands
        ("/api/post/999/stats", MOD, 404),
        ("/api/post/1/stats", bearer("u7"), 200),  # the site says u7 may
        ("/api/post/1/stats?refresh=maybe", MOD, 400),
        ("/api/admin/sitewide-stats", {}, 401),
        ("/api/admin/sitewide-stats", bearer("u7"), 403),
        ("/api/admin/sitewide-stats", MOD, 200),
        ("/api/admin/sitewide-stats", {"authorization": "Bearer " + ADMIN}, 200),
        ("/api/admin/sitewide-stats?refresh=2", MOD, 400),
        ("/api/blog-post/post1/stats", {}, 401),
        ("/api/blog-post/post1/stats", bearer("u7"), 403),
        ("/api/blog-post/post1/stats", bearer("u9"), 200),
        ("/api/blog-post/%3Cscript%3E/stats", MOD, 400),  # not a plain id: refused before anything
    ],
)
async def test_authorization(seeded, path, headers, status):
    settings, _ = seeded
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            r = await c.get(path, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["cache-control"] == "private, no-store"
    if status >= 400:
        assert r.json()["detail"]


async def test_cache_is_per_item_after_authorization_and_refresh_is_rate_limited(seeded):
    settings, engine = seeded
    # Rolled up first, so that the sidecar's own start-up rollup changes nothing (a rollup would
    # rightly invalidate the cache in the middle of this test).
    await rollup_pending(engine, 1800.0)
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            first = (await c.get("/api/admin/sitewide-stats", headers=MOD)).json()
            await write_batch(engine, Batch(events=[ev(time.time(), "v7", path="/about")]))
            cached = (await c.get("/api/admin/sitewide-stats", headers=MOD)).json()
            refreshed = (await c.get("/api/admin/sitewide-stats?refresh=true", headers=MOD)).json()
            await write_batch(engine, Batch(events=[ev(time.time(), "v8", path="/about")]))
            limited = (await c.get("/api/admin/sitewide-stats?refresh=true", headers=MOD)).json()
            denied = await c.get("/api/admin/sitewide-stats", headers=bearer("u7"))
    assert cached == first
    assert refreshed["total_page_views_30d"] == first["total_page_views_30d"] + 1
    assert limited == refreshed  # a second refresh within 10 s is served from the cache
    assert denied.status_code == 403  # the cache never answers before authorization


async def test_numeric_id_found_through_the_upstream_item_id_hint(seeded):
    settings, _ = seeded
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url) as c:
            unknown = await c.get("/api/post/42/stats", headers=MOD)
            # The site's API answers the artwork's read with its numeric id in a hint header.
            read = await c.get(
                "/api/p/a1?item-id=42",
                headers={"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0"},
            )
            assert "x-trackside-item-id" not in read.headers
            await app.pipeline.flusher.flush()
            known = await c.get("/api/post/42/stats", headers=MOD)
    assert unknown.status_code == 200 and unknown.json()["total_views"] == 0
    assert known.json()["post_id"] == 42
    assert known.json()["content_id"] == "a1"
    assert known.json()["total_views"] == 7  # the six seeded looks and this new one
