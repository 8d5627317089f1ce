"""The events API and player views, through a real sidecar in front of a real upstream, on both
backends: exact figures out of `trackside report`, the stats endpoint and the query API."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from tests.conftest import DOC, FIREFOX
from tests.reports import report_of
from tests.servers import run_server, run_sidecar
from trackside.api_keys import create_key, revoke_key
from trackside.errors import ConfigError
from trackside.server_events import derived_event_id
from trackside.settings import Settings
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate

ADMIN = "events-admin-token-0123456789"
PLAYER_UA = "Makapix-Player/1.4 (esp32-s3; p7)"
OTHER_PLAYER_UA = "Makapix-Player/1.4 (esp32-s3; p8)"
CONTENT = {"artwork": ("/p/[id]", "/api/p/[id]", "/api/player/p/[id]", "/api/feed/[id]"), "blog_post": ("/b/[id]",)}


# The site's player routes, as Makapix has them: the viewed item is in the request body, which
# capture never reads, so the answer names it.
async def player_view(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse(
        {"recorded": True}, status_code=201, headers={"x-trackside-view": f"artwork:{body['post']};player"}
    )


async def player_artwork(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.path_params["sqid"]}, headers={"x-trackside-view-type": "player"})


async def artwork_page(request: Request) -> HTMLResponse:
    return HTMLResponse("<!doctype html><html><body>art</body></html>")


async def bad_hint(request: Request) -> JSONResponse:
    return JSONResponse({}, headers={"x-trackside-view": "painting:z1;player"})


async def not_found(request: Request) -> JSONResponse:
    return JSONResponse({"detail": "no such route"}, status_code=404)


site = Starlette(
    routes=[
        Route("/api/player/events/view", player_view, methods=["POST"]),
        Route("/api/player/p/{sqid}", player_artwork),
        Route("/api/feed/{rest:path}", artwork_page),
        Route("/api/player/bad", bad_hint),
        Route("/p/{sqid}", artwork_page),
        Route("/{rest:path}", not_found, methods=["GET", "POST"]),
    ]
)


def settings_for(make_settings, upstream: str, database_url: str, **more) -> Settings:
    return make_settings(
        frontend_url=upstream,
        api_url=upstream,
        database_url=database_url,
        admin_token=ADMIN,
        content_rules=CONTENT,
        stats_overlay_mode="never",
        **more,
    )


async def new_key(database_url: str, scope: str = "write") -> str:
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        _, secret = await create_key(engine, "mqtt-handler", scope)
    finally:
        await engine.dispose()
    return secret


async def stored_events(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(sa.text("SELECT count(*) FROM events"))).scalar_one()
    finally:
        await engine.dispose()


def mqtt_view(item: str, player: str) -> dict:
    return {
        "name": "player_view",
        "url": "https://makapix.club/api/player/p/" + item.split(":")[1],
        "domain": "makapix.club",
        "props": {"item": item, "view_type": "player", "player": player},
    }


async def test_player_views_through_the_proxy(make_settings, database_url):
    async with run_server(site) as upstream:
        settings = settings_for(make_settings, upstream, database_url, view_type_rules=("/api/feed/=player",))
        async with run_sidecar(settings) as (url, app):
            async with httpx.AsyncClient(base_url=url) as c:
                # Player p7 reports the same artwork three times within the window: one look.
                for _ in range(3):
                    r = await c.post(
                        "/api/player/events/view", json={"post": "k3x9"}, headers={"user-agent": PLAYER_UA}
                    )
                    assert r.status_code == 201
                    assert "x-trackside-view" not in r.headers  # a hint is never shown to clients
                # Player p8 fetches the artwork from its own route (hinted by type): its own look.
                r = await c.get("/api/player/p/k3x9", headers={"user-agent": OTHER_PLAYER_UA})
                assert r.status_code == 200 and "x-trackside-view-type" not in r.headers
                # A person looks at it in a browser: a look of type view, device desktop.
                assert (await c.get("/p/k3x9", headers=DOC)).status_code == 200
                # A rule (no hint): p7 fetches another artwork under /api/feed/ by its content path.
                assert (await c.get("/api/feed/x", headers={"user-agent": PLAYER_UA})).status_code == 200
                # A malformed hint is ignored: the request counts as it would without it.
                assert (await c.get("/api/player/bad", headers={"user-agent": PLAYER_UA})).status_code == 200
    assert app.metrics.counts["bad_view_hint"] == 1
    report = await report_of(settings.database_url)
    assert report["content"]["artwork"] == [
        {"id": "k3x9", "views": 3, "views_authenticated": 0, "unique_viewers": 3, "unique_viewers_authenticated": 0},
        {"id": "x", "views": 1, "views_authenticated": 0, "unique_viewers": 1, "unique_viewers_authenticated": 0},
    ]
    assert report["content_views_by_type"] == {"player": 3, "view": 1}
    assert report["content_views_by_device"] == {"player": 3, "desktop": 1}
    assert report["api_calls"] == 6
    assert report["page_views"]["total"] == 1
    assert report["devices"] == {"desktop": 1}
    assert report["bots"] == {}
    async with run_server(site) as upstream:
        async with run_sidecar(settings_for(make_settings, upstream, database_url)) as (url, app):
            async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer " + ADMIN}) as c:
                stats = (await c.get("/api/post/k3x9/stats")).json()
                query = await c.post(
                    "/_trackside/api/v1/query",
                    json={
                        "metrics": ["content_views"],
                        "dimensions": ["view_type"],
                        "filters": [["is", "view_type", ["player"]]],
                        "period": "today",
                    },
                )
                by_device = await c.get(
                    "/_trackside/api/v1/query?metrics=content_views&dimensions=view_device&period=today"
                )
                bad = await c.get("/_trackside/api/v1/query?metrics=page_views&dimensions=view_type")
    assert stats["total_views"] == 3
    assert stats["views_by_type"] == {"player": 2, "view": 1}
    assert stats["views_by_device"] == {"player": 2, "desktop": 1}
    assert query.status_code == 200
    assert query.json()["results"] == [{"dimensions": ["player"], "metrics": [3]}]  # k3x9's two and x's
    assert by_device.json()["results"] == [
        {"dimensions": ["player"], "metrics": [3]},
        {"dimensions": ["desktop"], "metrics": [1]},
    ]
    assert bad.status_code == 400 and "content_views" in bad.json()["detail"]


async def test_mqtt_view_sent_twice_with_one_idempotency_key_counts_once(make_settings, database_url):
    key = await new_key(database_url)
    async with run_server(site) as upstream:
        settings = settings_for(make_settings, upstream, database_url)
        async with run_sidecar(settings) as (url, app):
            async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer " + key}) as c:
                view = mqtt_view("artwork:k3x9", "p7")
                first = await c.post("/_trackside/api/event", json=view, headers={"idempotency-key": "mqtt-msg-1"})
                again = await c.post("/_trackside/api/event", json=view, headers={"idempotency-key": "mqtt-msg-1"})
                # The same retry carried in the body instead of the header, by another player.
                body = mqtt_view("artwork:k3x9", "p8")
                body["props"]["event_id"] = "mqtt-msg-2"
                third = await c.post("/_trackside/api/event", json=body)
                fourth = await c.post("/_trackside/api/event", json=body)
    assert [r.status_code for r in (first, again, third, fourth)] == [202, 202, 202, 202]
    assert first.json() == {"status": "accepted"}
    assert await stored_events(database_url) == 2
    report = await report_of(database_url)
    assert report["content"]["artwork"] == [
        {"id": "k3x9", "views": 2, "views_authenticated": 0, "unique_viewers": 2, "unique_viewers_authenticated": 0}
    ]
    assert report["content_views_by_type"] == {"player": 2}
    assert report["content_views_by_device"] == {"player": 2}
    assert report["site_events"] == {"player_view": 2}
    assert report["page_views"]["total"] == 0
    assert report["api_calls"] == 0  # a server-side event is no API call the proxy answered


async def test_player_views_follow_one_look_per_window_per_player(make_settings, database_url):
    key = await new_key(database_url)
    async with run_server(site) as upstream:
        async with run_sidecar(settings_for(make_settings, upstream, database_url)) as (url, app):
            async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer " + key}) as c:
                for n in range(4):  # four plays on p7 in a row, each its own MQTT message
                    r = await c.post(
                        "/_trackside/api/event",
                        json=mqtt_view("artwork:k3x9", "p7"),
                        headers={"idempotency-key": str(n)},
                    )
                    assert r.status_code == 202
                await c.post("/_trackside/api/event", json=mqtt_view("artwork:k3x9", "p9"))
                await c.post("/_trackside/api/event", json=mqtt_view("artwork:zz1", "p7"))
    assert await stored_events(database_url) == 6
    report = await report_of(database_url)
    assert {row["id"]: row["views"] for row in report["content"]["artwork"]} == {"k3x9": 2, "zz1": 1}


async def test_pageview_events_count_exactly(make_settings, database_url):
    key = await new_key(database_url)
    async with run_server(site) as upstream:
        settings = settings_for(make_settings, upstream, database_url)
        async with run_sidecar(settings) as (url, app):
            async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer " + key}) as c:
                visitor = {"user-agent": FIREFOX, "x-forwarded-for": "203.0.113.9"}
                page = {
                    "name": "pageview",
                    "url": "https://makapix.club/p/a1?utm_source=newsletter&token=secret",
                    "domain": "makapix.club",
                    "referrer": "https://www.reddit.com/r/pixelart",
                }
                for _ in range(2):  # a retry: counted once
                    r = await c.post("/_trackside/api/event", json=page, headers={**visitor, "idempotency-key": "p1"})
                    assert r.status_code == 202
                await c.post("/_trackside/api/event", json={**page, "url": "/b/post1"}, headers=visitor)
                other = {"user-agent": FIREFOX, "x-forwarded-for": "198.51.100.4"}
                await c.post("/_trackside/api/event", json={**page, "referrer": None}, headers=other)
                signup = {"name": "signup", "url": "https://makapix.club/auth/callback", "domain": "makapix.club"}
                await c.post("/_trackside/api/event", json=signup, headers=other)
                # A bot's user agent forwarded by the caller: a bot counter, never a page view.
                bot = await c.post(
                    "/_trackside/api/event",
                    json=page,
                    headers={"user-agent": "curl/8.5.0", "x-forwarded-for": "192.0.2.1"},
                )
    assert bot.status_code == 202 and bot.headers["x-trackside-ignored"] == "bot"
    report = await report_of(database_url)
    assert report["page_views"] == {"total": 3, "authenticated": 0, "by_label": {"/p/[post]": 2, "/b/[blog]": 1}}
    assert report["unique_visitors"] == 2
    assert report["referrers"] == {"reddit.com": 2}
    assert report["content"]["artwork"] == [
        {"id": "a1", "views": 2, "views_authenticated": 0, "unique_viewers": 2, "unique_viewers_authenticated": 0}
    ]
    assert report["content_views_by_type"] == {"view": 3}
    assert report["signups"] == 1
    assert report["devices"] == {"desktop": 3}
    assert report["bots"] == {"curl": 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        (json.dumps({"url": "/p/a1", "domain": "makapix.club"}).encode(), "name"),
        (json.dumps({"name": "pageview", "domain": "makapix.club"}).encode(), "url"),
        (json.dumps({"name": "pageview", "url": "ftp://x/p/a1"}).encode(), "url"),
        (json.dumps({"name": "pageview", "url": "/p/a1", "domain": 7}).encode(), "domain"),
        (json.dumps({"name": "pageview", "url": "/p/a1", "props": [1]}).encode(), "props"),
        (json.dumps({"name": "view", "url": "/p/a1", "props": {"item": "painting:x1"}}).encode(), "props.item"),
        (json.dumps({"name": "view", "url": "/p/a1", "props": {"item": "artwork:a b"}}).encode(), "props.item"),
        (json.dumps({"name": "view", "url": "/", "props": {"view_type": "player"}}).encode(), "props.view_type"),
        (
            json.dumps({"name": "v", "url": "/", "props": {"item": "artwork:a1", "view_type": "Big TV"}}).encode(),
            "props.view_type",
        ),
    ],
)
async def test_a_bad_body_is_a_400_naming_the_field(make_settings, sqlite_url, body, field):
    key = await new_key(sqlite_url)
    async with run_server(site) as upstream:
        async with run_sidecar(settings_for(make_settings, upstream, sqlite_url)) as (url, app):
            async with httpx.AsyncClient(base_url=url) as c:
                r = await c.post(
                    "/_trackside/api/event",
                    content=body,
                    headers={"authorization": "Bearer " + key, "content-type": "application/json"},
                )
    assert r.status_code == 400
    assert r.json()["field"] == field
    assert r.json()["error"].startswith(field + ": ")
    assert await stored_events(sqlite_url) == 0


async def test_wrong_keys_are_401_and_a_read_key_is_403(make_settings, database_url):
    write = await new_key(database_url)
    read = await new_key(database_url, "read")
    revoked = await new_key(database_url)
    engine = create_engine(database_url)
    try:
        await revoke_key(engine, revoked.split("_")[1])
    finally:
        await engine.dispose()
    key_id, secret = write[4:].split("_", 1)
    view = mqtt_view("artwork:k3x9", "p7")
    async with run_server(site) as upstream:
        async with run_sidecar(settings_for(make_settings, upstream, database_url)) as (url, app):
            async with httpx.AsyncClient(base_url=url) as c:

                async def send(authorization: str | None) -> httpx.Response:
                    headers = {"authorization": authorization} if authorization else {}
                    return await c.post("/_trackside/api/event", json=view, headers=headers)

                wrong = [
                    await send(None),
                    await send("Bearer " + write[:-1] + ("A" if write[-1] != "A" else "B")),  # one character off
                    await send(f"Bearer tsk_{key_id}_"),
                    await send("Bearer tsk_000000000000_" + secret),  # another id
                    await send("Bearer " + revoked),
                    await send("Basic " + write),
                    await send("Bearer not-a-key"),
                ]
                scoped = await send("Bearer " + read)
                admin = await send("Bearer " + ADMIN)
                good = await send("Bearer " + write)
                method = await c.get("/_trackside/api/event", headers={"authorization": "Bearer " + write})
    assert [r.status_code for r in wrong] == [401] * 7
    assert all(r.headers["www-authenticate"] == 'Bearer realm="trackside"' for r in wrong)
    assert scoped.status_code == 403 and "scope write" in scoped.json()["error"]
    assert admin.status_code == 202 and good.status_code == 202
    assert method.status_code == 405
    assert await stored_events(database_url) == 2


async def test_a_burst_beyond_the_key_rate_is_a_429(make_settings, sqlite_url):
    key = await new_key(sqlite_url)
    async with run_server(site) as upstream:
        settings = settings_for(make_settings, upstream, sqlite_url, events_api_rate=5)
        async with run_sidecar(settings) as (url, app):
            async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer " + key}) as c:
                answers = [
                    await c.post(
                        "/_trackside/api/event",
                        json={"name": "pageview", "url": f"/p/a{n}"},
                        headers={"user-agent": FIREFOX, "x-forwarded-for": "203.0.113.9"},
                    )
                    for n in range(8)
                ]
                # Another key has its own allowance.
                admin = await c.post(
                    "/_trackside/api/event",
                    json={"name": "pageview", "url": "/p/b1"},
                    headers={"authorization": "Bearer " + ADMIN, "user-agent": FIREFOX},
                )
    codes = [r.status_code for r in answers]
    assert codes[:5] == [202] * 5  # the one-second burst
    assert 429 in codes[5:]
    refused = [r for r in answers if r.status_code == 429]
    assert all(r.headers["retry-after"] == "1" for r in refused)
    assert admin.status_code == 202
    report = await report_of(sqlite_url)
    assert report["page_views"]["total"] == codes.count(202) + 1


def test_keys_cli_creates_lists_and_revokes(sqlite_url, tmp_path):
    env = {**os.environ, "TRACKSIDE_DATABASE_URL": sqlite_url, "TRACKSIDE_SPOOL_DIR": str(tmp_path / "spool")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sidecar", "keys", *args], env=env, capture_output=True, text=True, timeout=60
        )

    made = cli("create", "--scope", "write", "--name", "mqtt-handler")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("tsk_") and "not shown again" in made.stderr
    key_id = secret.split("_")[1]
    listed = json.loads(cli("list", "--json").stdout)
    assert [(k["id"], k["scope"], k["name"], k["revoked_at"]) for k in listed] == [
        (key_id, "write", "mqtt-handler", None)
    ]
    assert secret.split("_", 2)[2] not in cli("list").stdout
    bad = cli("create", "--scope", "admin", "--name", "x")
    assert bad.returncode == 2 and "--scope" in bad.stderr
    assert cli("revoke", key_id).returncode == 0
    again = cli("revoke", key_id)
    assert again.returncode == 1 and "no active key" in again.stderr
    assert json.loads(cli("list", "--json").stdout)[0]["revoked_at"] is not None


def test_idempotent_ids_are_per_key_and_settings_are_checked():
    assert derived_event_id("k1", "m1") == derived_event_id("k1", "m1")
    assert derived_event_id("k1", "m1") != derived_event_id("k2", "m1")
    assert len(derived_event_id("k1", "m1")) == 36
    with pytest.raises(ConfigError, match="TRACKSIDE_VIEW_TYPE_RULES"):
        Settings.from_env({"TRACKSIDE_VIEW_TYPE_RULES": "api/player=player"})
    with pytest.raises(ConfigError, match="TRACKSIDE_EVENTS_API_RATE"):
        Settings.from_env({"TRACKSIDE_EVENTS_API_RATE": "0"})
    assert Settings.from_env({"TRACKSIDE_VIEW_TYPE_RULES": "/api/player/=player"}).view_type_rules == (
        "/api/player/=player",
    )


async def test_bad_headers_are_a_400_naming_them(make_settings, sqlite_url):
    key = await new_key(sqlite_url)
    view = {"name": "pageview", "url": "/p/a1"}
    async with run_server(site) as upstream:
        async with run_sidecar(settings_for(make_settings, upstream, sqlite_url)) as (url, app):
            async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer " + key}) as c:
                forwarded = await c.post("/_trackside/api/event", json=view, headers={"x-forwarded-for": "unknown"})
                idempotency = await c.post("/_trackside/api/event", json=view, headers={"idempotency-key": "a b"})
                big = await c.post("/_trackside/api/event", json={**view, "domain": "x" * 9000})
    assert forwarded.status_code == 400 and forwarded.json()["field"] == "X-Forwarded-For"
    assert idempotency.status_code == 400 and idempotency.json()["field"] == "Idempotency-Key"
    assert big.status_code == 413 and big.json()["field"] == "body"
    assert await stored_events(sqlite_url) == 0


async def test_a_read_key_reads_the_query_api_and_a_write_key_does_not(make_settings, sqlite_url):
    write = await new_key(sqlite_url)
    read = await new_key(sqlite_url, "read")
    query = "/_trackside/api/v1/query?metrics=page_views&period=today"
    async with run_server(site) as upstream:
        async with run_sidecar(settings_for(make_settings, upstream, sqlite_url)) as (url, app):
            async with httpx.AsyncClient(base_url=url) as c:
                by_read = await c.get(query, headers={"authorization": "Bearer " + read})
                by_write = await c.get(query, headers={"authorization": "Bearer " + write})
                by_unknown = await c.get(query, headers={"authorization": "Bearer tsk_000000000000_x"})
    assert by_read.status_code == 200 and by_read.json()["results"] == [{"dimensions": [], "metrics": [0]}]
    assert by_write.status_code == 401 and by_unknown.status_code == 401


@pytest.mark.timeout(60)
async def test_events_wait_in_the_spool_while_the_database_is_away_and_retries_still_count_once(
    make_settings, sqlite_url
):
    from tests.conftest import wait_for
    from tests.rollups.test_faults import _sqlite_events_table

    key = await new_key(sqlite_url)
    async with run_server(site) as upstream:
        async with run_sidecar(settings_for(make_settings, upstream, sqlite_url)) as (url, app):
            async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer " + key}) as c:

                async def view(player: str, message: str) -> None:
                    body = mqtt_view("artwork:k3x9", player)
                    r = await c.post("/_trackside/api/event", json=body, headers={"idempotency-key": message})
                    assert r.status_code == 202

                for n in range(3):
                    await view(f"p{n}", f"m{n}")
                await wait_for(lambda: app.metrics.counts["events_written"] == 3)
                await _sqlite_events_table(sqlite_url, False)
                try:
                    await view("p3", "m3")
                    await view("p3", "m3")  # redelivered while the database is away
                    await view("p1", "m1")  # a late retry of one already stored
                    await wait_for(lambda: app.metrics.counts["events_spooled"] == 3, timeout=15)
                finally:
                    await _sqlite_events_table(sqlite_url, True)
                await wait_for(lambda: app.metrics.counts["batches_replayed"] >= 1, timeout=15)
    assert app.metrics.counts["events_dropped"] == 0
    assert await stored_events(sqlite_url) == 4
    report = await report_of(sqlite_url)
    assert report["content"]["artwork"][0]["views"] == 4
