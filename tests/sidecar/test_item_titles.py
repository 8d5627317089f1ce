"""Item titles: an `X-Trackside-Title` hint read at capture, or the title field of the item's API
answer asked at read time (`TRACKSIDE_TITLE_URL`), stored in `item_titles` and laid over the popular
and item answers with each item's page; the settings' content kinds listed for the dashboard. Through
a real sidecar in front of the real test upstream, on both backends."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime

import httpx
import pytest
import sqlalchemy as sa

from tests import upstream_app
from tests.conftest import FIREFOX, wait_for
from tests.rollups.redis_server import RedisServer
from tests.servers import run_sidecar
from tests.sidecar.test_freshness import running_worker
from tests.sidecar.test_stats import ADMIN, SECRET, ev, midnight
from tests.sidecar.test_v2_query import ROUTE as V2
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.errors import ConfigError
from trackside.events import Event
from trackside.figures import derive_pending
from trackside.item_titles import MAX_TITLE, clean_title, item_page, title_from_hint
from trackside.settings import Settings
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.tables import ITEM_TITLES
from trackside.storage.writes import write_batch

API = "/_trackside/api/v1"
BOSS = {"authorization": "Bearer " + ADMIN}
CUSTOM_RULES = {
    "artwork": ("/p/[id]", "/api/p/[id]"),
    "blog_post": ("/b/[id]", "/api/blog-post/[id]"),
    "recipe": ("/api/recipes/[id]", "/r/[id]"),
    "clip": ("/api/clips/[id]",),
}


def _looks() -> list[Event]:
    """Yesterday's looks: a1 three visitors, b2 two, slow1 and gone one each; p9 (a blog post) and
    r1 (a recipe, a kind of the site's own) one each."""
    d1 = midnight(1)
    looks = [("a1", "v1"), ("a1", "v2"), ("a1", "v3"), ("b2", "v1"), ("b2", "v2"), ("slow1", "v4"), ("gone", "v5")]
    events = [ev(d1 + 100 + i, v, path=f"/p/{item}") for i, (item, v) in enumerate(looks)]
    events.append(ev(d1 + 200, "v6", path="/b/p9"))
    events.append(ev(d1 + 300, "v7", path="/r/r1", content_kind="recipe", content_id="r1"))
    return events


async def _stored(engine) -> dict[tuple[str, str], str]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(ITEM_TITLES.c.content_kind, ITEM_TITLES.c.content_id, ITEM_TITLES.c.title))
        return {(r.content_kind, r.content_id): r.title for r in rows}


async def test_titles_from_hints_and_the_items_api(upstream_url, make_settings, database_url):
    upstream_app.asked.clear()
    await migrate(database_url)
    engine = create_engine(database_url)
    await write_batch(engine, Batch(events=_looks()))
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, database_url=database_url, jwt_secret=SECRET,
        trust_roles_claim=True, admin_token=ADMIN, content_rules=CUSTOM_RULES,
        title_url={
            "artwork": "/api/titled/artwork/{id}",
            "blog_post": upstream_url + "/api/titled/blog/{id}",
            "recipe": "/api/titled/recipe/{id}?full=1",
        },
        title_timeout=0.3,
    )  # fmt: skip
    # The blog posts' titles sit in an object: a field path with a dot.
    blog = make_settings(**{**_fields(settings), "title_field": "post.headline"})
    try:
        async with run_sidecar(settings) as (url, app):
            async with httpx.AsyncClient(base_url=url, headers={"user-agent": FIREFOX}) as c:
                # The site hints a1's title: percent-encoded UTF-8 (café), markup kept as text,
                # control characters and runs of spaces made one space.
                hinted = await c.get("/api/p/a1", params={"title": "Sunset%20%3Cb%3Eover%3C%2Fb%3E\tthe   caf%C3%A9"})
                assert hinted.status_code == 200
                assert "x-trackside-title" not in hinted.headers  # a hint never reaches the client
                await wait_for(_has(engine, ("artwork", "a1")), timeout=10)
                assert upstream_app.asked == {}  # nothing is asked at capture
                kinds = (await c.get(API + "/kinds", headers=BOSS)).json()
                started = time.monotonic()
                first = (await c.get(API + "/popular", params={"kind": "artwork", "period": "7d"}, headers=BOSS)).json()
                waited = time.monotonic() - started
                recipes = (
                    await c.get(API + "/popular", params={"kind": "recipe", "period": "7d"}, headers=BOSS)
                ).json()
                clips = await c.get(API + "/popular", params={"kind": "clip", "period": "7d"}, headers=BOSS)
                # slow1's answer comes after the 0.3 s the first answer waited: stored for the next.
                await wait_for(_has(engine, ("artwork", "slow1")), timeout=8)
                again = (await c.get(API + "/popular", params={"kind": "artwork", "period": "7d"}, headers=BOSS)).json()
                item = (await c.get(API + "/items/artwork/b2", headers=BOSS)).json()
                # A newer hint replaces the stored title, fetched or hinted.
                await c.get("/api/p/b2", params={"title": "Renamed b2"})
                await wait_for(_has(engine, ("artwork", "b2"), "Renamed b2"), timeout=10)
                renamed = (
                    await c.get(API + "/popular", params={"kind": "artwork", "period": "7d"}, headers=BOSS)
                ).json()
                refused = await c.get(API + "/kinds")
        async with run_sidecar(blog) as (url, app):
            async with httpx.AsyncClient(base_url=url) as c:
                blogs = (
                    await c.get(API + "/popular", params={"kind": "blog_post", "period": "7d"}, headers=BOSS)
                ).json()
        stored = await _stored(engine)
    finally:
        await engine.dispose()

    assert kinds == {
        "kinds": [
            {"kind": "artwork", "name": "Artwork", "page": "/p/{id}", "title_url": True},
            {"kind": "blog_post", "name": "Blog post", "page": "/b/{id}", "title_url": True},
            {"kind": "recipe", "name": "Recipe", "page": "/r/{id}", "title_url": True},
            {"kind": "clip", "name": "Clip", "page": None, "title_url": False},
        ]
    }
    assert refused.status_code == 401
    assert [(i["id"], i["views"], i["title"], i["page"]) for i in first["items"]] == [
        ("a1", 4, "Sunset <b>over</b> the café", "/p/a1"),  # three seeded looks, and the hinted answer
        ("b2", 2, "Fetched <b>b2</b>", "/p/b2"),
        ("gone", 1, None, "/p/gone"),  # the site's 404
        ("slow1", 1, None, "/p/slow1"),  # not within the 0.3 s
    ]
    assert waited < 2.0  # the slow answer (3 s) did not hold the panel
    assert [(i["id"], i["title"], i["page"]) for i in again["items"]] == [
        ("a1", "Sunset <b>over</b> the café", "/p/a1"),
        ("b2", "Fetched <b>b2</b>", "/p/b2"),
        ("gone", None, "/p/gone"),
        ("slow1", "Slow slow1", "/p/slow1"),
    ]
    # Each item asked once: a1 had its hint, gone's 404 is not asked again within 10 minutes,
    # b2 and slow1 were stored; the query string of the recipe's URL was kept.
    assert upstream_app.asked == {"b2": 1, "gone": 1, "slow1": 1, "r1": 1, "p9": 1}
    assert [(i["id"], i["title"], i["page"]) for i in recipes["items"]] == [("r1", "Soup", "/r/r1")]
    assert clips.status_code == 200 and clips.json()["items"] == []
    assert (item["kind"], item["id"], item["title"], item["page"], item["total_views"]) == (
        "artwork", "b2", "Fetched <b>b2</b>", "/p/b2", 2
    )  # fmt: skip
    assert [(i["id"], i["title"]) for i in renamed["items"]][:2] == [
        ("a1", "Sunset <b>over</b> the café"),
        ("b2", "Renamed b2"),
    ]
    assert [(i["id"], i["title"], i["page"]) for i in blogs["items"]] == [("p9", "Nested p9", "/b/p9")]
    assert stored == {
        ("artwork", "a1"): "Sunset <b>over</b> the café",
        ("artwork", "b2"): "Renamed b2",
        ("artwork", "slow1"): "Slow slow1",
        ("blog_post", "p9"): "Nested p9",
        ("recipe", "r1"): "Soup",
    }


def day_of(ts: float) -> date:
    return datetime.fromtimestamp(ts, UTC).date()


def _fields(settings: Settings) -> dict:
    return {f: getattr(settings, f) for f in settings.__dataclass_fields__}


def _has(engine, item: tuple[str, str], title: str | None = None):
    """A condition for `wait_for`: the item has a stored title (this one, if given)."""

    async def check() -> bool:
        stored = await _stored(engine)
        return item in stored and (title is None or stored[item] == title)

    return check


def test_hint_reading_and_cleaning():
    assert title_from_hint("Caf\xc3\xa9") == "Café"  # UTF-8 bytes, as capture reads them (latin-1)
    assert title_from_hint("\xe9t\xe9") == "été"  # latin-1 (Starlette's own encoding of é)
    assert title_from_hint("100% sure") == "100% sure"
    assert title_from_hint("a%0Ab") == "a b"
    assert title_from_hint("   ") is None
    assert clean_title("x" * 500) == "x" * MAX_TITLE
    assert clean_title(42) == "42"
    assert clean_title(True) is None and clean_title({"a": 1}) is None and clean_title(None) is None
    assert item_page("artwork", "a b/c", {"artwork": ("/api/p/[id]", "/p/[id]")}) == "/p/a%20b%2Fc"


def test_wire_keeps_titles_and_reads_older_batches():
    batch = Batch(events=[ev(midnight(0), "v1")], titles={("artwork", "a1"): "Sunset"})
    wire = batch.to_wire()
    assert Batch.from_wire(wire).titles == {("artwork", "a1"): "Sunset"}
    older = {k: v for k, v in wire.items() if k != "titles"}  # written before titles existed
    back = Batch.from_wire(older)
    assert back.titles == {} and [e.id for e in back.events] == [e.id for e in batch.events]


def test_title_settings():
    s = Settings.from_env(
        {
            "TRACKSIDE_TITLE_URL": "artwork=/api/p/{id};blog_post=http://api:8000/b/{id}?x=1",
            "TRACKSIDE_TITLE_TIMEOUT": "0.5",
        }
    )
    assert s.title_url == {"artwork": "/api/p/{id}", "blog_post": "http://api:8000/b/{id}?x=1"}
    assert s.title_timeout == 0.5 and s.title_field == "title"
    assert Settings.from_env(s.to_env()).title_url == s.title_url
    refusals = Counter()
    for env, message in [
        ({"TRACKSIDE_TITLE_URL": "planet=/x/{id}"}, "TRACKSIDE_TITLE_URL: 'planet' is no content kind"),
        ({"TRACKSIDE_TITLE_URL": "artwork=/api/p/"}, "TRACKSIDE_TITLE_URL: the artwork URL must contain {id}"),
        ({"TRACKSIDE_TITLE_URL": "artwork"}, "TRACKSIDE_TITLE_URL: invalid value 'artwork'"),
        ({"TRACKSIDE_TITLE_URL": "artwork=ftp://x/{id}"}, "TRACKSIDE_TITLE_URL must be an http:// or https:// URL"),
        ({"TRACKSIDE_TITLE_FIELD": "post..title"}, "TRACKSIDE_TITLE_FIELD must be a JSON field name"),
        ({"TRACKSIDE_TITLE_TIMEOUT": "0"}, "TRACKSIDE_TITLE_TIMEOUT: invalid value '0'"),
    ]:
        with pytest.raises(ConfigError) as bad:
            Settings.from_env(env)
        assert str(bad.value).startswith(message), str(bad.value)
        refusals[message] += 1
    assert len(refusals) == 6


async def test_v2_include_titles(upstream_url, make_settings, database_url):
    """`include.titles` of a v2 query: `meta.titles` and `meta.pages`, one per row."""
    upstream_app.asked.clear()
    await migrate(database_url)
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, database_url=database_url, admin_token=ADMIN,
        content_rules=CUSTOM_RULES, title_url={"artwork": "/api/titled/artwork/{id}"},
    )  # fmt: skip
    engine = create_engine(database_url)
    events = _looks()
    events.append(ev(midnight(1) + 400, "v8", path="/b/b2"))  # a blog post with an artwork's id
    try:
        await write_batch(engine, Batch(events=events, titles={("recipe", "r1"): "Soup"}), derivation_of(settings))
        async with engine.connect() as conn:  # the facts now, whoever derives them in this version
            await derive_pending(conn, day_of(midnight(7)), day_of(midnight(0)), derivation_of(settings))
        base = {"site_id": "default", "metrics": ["content_views"], "date_range": "7d"}
        by_kind = {**base, "dimensions": ["event:props:content_kind", "event:props:content_id"]}
        async with run_sidecar(settings) as (url, _):
            async with httpx.AsyncClient(base_url=url, headers=BOSS) as c:
                plain = (await c.post(V2, json=by_kind)).json()
                both = (await c.post(V2, json={**by_kind, "include": {"titles": True}})).json()
                artworks = await c.post(
                    V2,
                    json={
                        **base,
                        "dimensions": ["event:props:content_id"],
                        "filters": [["is", "event:props:content_kind", ["artwork"]]],
                        "include": {"titles": True, "total_rows": True},
                    },
                )
                ids = (
                    await c.post(
                        V2, json={**base, "dimensions": ["event:props:content_id"], "include": {"titles": True}}
                    )
                ).json()
                none = (
                    await c.post(V2, json={**base, "dimensions": ["visit:device"], "include": {"titles": True}})
                ).json()
                bad = await c.post(V2, json={**base, "include": {"titles": "yes"}})
    finally:
        await engine.dispose()
    assert "titles" not in plain["meta"] and "titles" not in plain["query"]["include"]
    assert [r["dimensions"] for r in both["results"]] == [
        ["artwork", "a1"], ["artwork", "b2"], ["artwork", "gone"], ["artwork", "slow1"], ["blog_post", "b2"],
        ["blog_post", "p9"], ["recipe", "r1"],
    ]  # fmt: skip
    # Artworks are asked (b2; gone is the site's 404; slow1 not within the 1 s); recipes were hinted.
    assert both["meta"]["titles"] == [None, "Fetched <b>b2</b>", None, None, None, None, "Soup"]
    assert both["meta"]["pages"] == ["/p/a1", "/p/b2", "/p/gone", "/p/slow1", "/b/b2", "/b/p9", "/r/r1"]
    assert both["query"]["include"]["titles"] is True
    got = artworks.json()
    assert [r["dimensions"][0] for r in got["results"]] == ["a1", "b2", "gone", "slow1"]
    assert got["meta"]["titles"] == [None, "Fetched <b>b2</b>", None, None] and got["meta"]["total_rows"] == 4
    assert got["meta"]["pages"] == ["/p/a1", "/p/b2", "/p/gone", "/p/slow1"]
    # Ids without a kind: stored titles only (b2's is an artwork's: the settings' first kind wins), never asked.
    assert [r["dimensions"][0] for r in ids["results"]] == ["a1", "b2", "gone", "p9", "r1", "slow1"]
    assert ids["meta"]["titles"] == [None, "Fetched <b>b2</b>", None, None, "Soup", None]
    assert ids["meta"]["pages"] == [None, "/p/b2", None, None, "/r/r1", None]
    assert "titles" not in none["meta"] and none["query"]["include"]["titles"] is True
    assert bad.status_code == 400 and bad.json() == {"error": "include.titles is true or false"}
    assert upstream_app.asked.get("b2") == 1 and "r1" not in upstream_app.asked


@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.mark.redis
async def test_redis_mode_stores_hinted_titles(upstream_url, make_settings, database_url, redis_server):
    """Redis mode: the hint rides the queued batch (msgpack) to the real ARQ worker, which stores it."""
    await migrate(database_url)
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, database_url=database_url, admin_token=ADMIN,
        redis_url=redis_server.url, queue_name=f"trackside-test:{uuid.uuid4().hex[:12]}",
    )  # fmt: skip
    engine = create_engine(database_url)
    try:
        async with running_worker(settings) as worker, run_sidecar(settings) as (url, _):
            async with httpx.AsyncClient(base_url=url, headers={"user-agent": FIREFOX}) as c:
                assert (await c.get("/api/p/q7", params={"title": "Queued %E2%9C%93"})).status_code == 200
            await wait_for(_has(engine, ("artwork", "q7")), timeout=15)
        stored = await _stored(engine)
    finally:
        await engine.dispose()
    assert stored == {("artwork", "q7"): "Queued ✓"}
    assert worker.jobs_complete >= 1 and worker.jobs_failed == 0
