"""The stats overlay on sites that are not Makapix: an API without `/api/post/{id}/stats`, an API
behind a stripped `/api` prefix, and ids that would move the question to another API path."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.servers import run_server, run_sidecar
from tests.sidecar.test_stats import MOD, SECRET, bearer, ev, midnight
from trackside.batch import Batch
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.writes import write_batch

SEEN: list[str] = []  # every path the API below was asked, in order


async def item(request: Request) -> Response:
    SEEN.append(request.url.path)
    if request.path_params["id"] == "nope":
        return JSONResponse({"detail": "Post not found"}, status_code=404)
    return JSONResponse({"id": request.path_params["id"]})


async def stripped_stats(request: Request) -> Response:
    # The site's own stats route, behind a proxy that strips `/api` (Caddy's handle_path).
    SEEN.append(request.url.path)
    if request.path_params["id"] == "999":
        return JSONResponse({"detail": "Post not found"}, status_code=404)
    return JSONResponse({"post_id": 1, "public_sqid": "a1", "total_reactions": 5, "total_views": 999})


async def stats_post_only(request: Request) -> Response:
    # A stats path that takes only POST (say, a site's "recompute" hook): a GET is a 405.
    SEEN.append(request.url.path)
    if request.method != "POST":
        return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"allow": "POST"})
    return JSONResponse({"ok": True})


async def anything(request: Request) -> Response:
    SEEN.append(request.url.path)
    return JSONResponse({"detail": "Not Found"}, status_code=404)


# An API with no stats route at all (any site but Makapix), and one whose stats path takes only POST.
plain_api = Starlette(routes=[Route("/api/p/{id}", item), Route("/{rest:path}", anything)])
post_only_api = Starlette(
    routes=[Route("/api/post/{id}/stats", stats_post_only, methods=["GET", "POST"]), Route("/{rest:path}", anything)]
)
stripped_api = Starlette(routes=[Route("/post/{id}/stats", stripped_stats), Route("/{rest:path}", anything)])


@pytest.fixture(autouse=True)
def _clear_seen() -> None:
    SEEN.clear()


async def seeded_db(database_url: str) -> None:
    await migrate(database_url)
    engine = create_engine(database_url)
    d0 = midnight(0)
    await write_batch(
        engine,
        Batch(
            events=[
                ev(d0 + 1, "v1", country="NL"),
                ev(d0 + 2, "v2", country="BR", device="mobile"),
                ev(d0 + 3, "v3", user_id="u9", author_id="u9"),  # the author's own look: no view
            ]
        ),
    )
    await engine.dispose()


async def test_a_site_without_the_stats_route_gets_trackside_figures(make_settings, database_url):
    await seeded_db(database_url)
    async with run_server(plain_api) as api:
        settings = make_settings(
            frontend_url=api, api_url=api, jwt_secret=SECRET, trust_roles_claim=True, database_url=database_url
        )
        async with run_sidecar(settings) as (url, _):
            async with httpx.AsyncClient(base_url=url) as c:
                moderator = await c.get("/api/post/a1/stats", headers=MOD)
                owner = await c.get("/api/post/a1/stats", headers=bearer("u9"))
                stranger = await c.get("/api/post/a1/stats", headers=bearer("u7"))
                anonymous = await c.get("/api/post/a1/stats")
                unknown = await c.get("/api/post/nothing/stats", headers=MOD)
    assert moderator.status_code == 200, moderator.text
    body = moderator.json()
    assert (body["post_id"], body["content_id"]) == ("a1", "a1")
    assert body["total_views"] == 2 and body["unique_viewers"] == 2
    assert body["views_by_country"] == {"NL": 1, "BR": 1}
    assert owner.status_code == 200 and owner.json()["total_views"] == 2
    # Authorization unchanged: Trackside's own rules when it answers alone.
    assert stranger.status_code == 403
    assert stranger.json() == {"detail": "only the owner or a moderator may read these stats"}
    assert anonymous.status_code == 401
    # Nothing recorded and the site says no such route: its 404 stands.
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Not Found"}
    # The API was asked at the stats path each time a token got past Trackside's own check.
    assert SEEN == ["/api/post/a1/stats"] * 3 + ["/api/post/nothing/stats"]


async def test_a_405_is_answered_alone_too_and_the_modes_pin_it(make_settings, sqlite_url):
    await seeded_db(sqlite_url)
    async with run_server(post_only_api) as api:
        answers = {}
        for mode in ("auto", "always", "never"):
            settings = make_settings(
                frontend_url=api, api_url=api, jwt_secret=SECRET, trust_roles_claim=True, stats_overlay_mode=mode
            )
            async with run_sidecar(settings) as (url, _):
                async with httpx.AsyncClient(base_url=url) as c:
                    answers[mode] = (
                        await c.get("/api/post/a1/stats", headers=MOD),
                        await c.get("/api/post/zz/stats", headers=MOD),
                    )
    auto, always, never = answers["auto"], answers["always"], answers["never"]
    assert auto[0].status_code == 200 and auto[0].json()["total_views"] == 2
    assert auto[1].status_code == 404 and auto[1].json() == {"detail": "no such artwork"}
    assert always[0].status_code == 405  # the site's verdict stands, as before
    assert never[0].status_code == 200 and never[0].json()["total_views"] == 2
    assert never[1].status_code == 404
    # auto and always asked twice each; never did not ask at all.
    assert SEEN == ["/api/post/a1/stats", "/api/post/zz/stats"] * 2


async def test_the_overlay_asks_where_the_route_rules_send_with_the_prefix_stripped(make_settings, sqlite_url):
    await seeded_db(sqlite_url)
    async with run_server(stripped_api) as api:
        settings = make_settings(
            frontend_url=api, api_url=api, api_strip_prefix=True, jwt_secret=SECRET, trust_roles_claim=True
        )
        async with run_sidecar(settings) as (url, _):
            async with httpx.AsyncClient(base_url=url) as c:
                laid = await c.get("/api/post/1/stats", headers=MOD)
                missing = await c.get("/api/post/999/stats", headers=MOD)
    assert laid.status_code == 200, laid.text
    body = laid.json()
    assert (body["post_id"], body["content_id"], body["total_reactions"]) == (1, "a1", 5)
    assert body["total_views"] == 2  # Trackside's figure over the site's own
    assert missing.status_code == 404 and missing.json() == {"detail": "Post not found"}
    assert SEEN == ["/post/1/stats", "/post/999/stats"]


async def _raw_get(url: str, target: str, token: str) -> tuple[int, bytes]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ("/api/post/../stats", ".."),
        ("/api/post/./stats", "."),
        ("/api/post/%2e%2e/stats", ".."),
        ("/api/post/a%252Fb/stats", "a%2Fb"),
        ("/api/post/a%25/stats", "a%"),
        ("/api/blog-post/..%2f/stats", "../"),
        ("/api/blog-post/%3Cscript%3E/stats", "<script>"),
    ],
)
async def test_stats_ids_are_checked_before_the_api_is_asked(make_settings, target, named):
    async with run_server(plain_api) as api:
        settings = make_settings(frontend_url=api, api_url=api, jwt_secret=SECRET, trust_roles_claim=True)
        async with run_sidecar(settings) as (url, _):
            status, body = await _raw_get(url, target, MOD["authorization"])
    if named == "../":
        # An encoded slash makes two segments: no stats route; proxied, and the proxy refuses `..`.
        assert status == 400 and SEEN == []
        return
    assert status == 400, body
    kind = "blog_post_id" if "/blog-post/" in target else "post_id"
    assert f"invalid {kind} {named!r}".encode() in body
    assert SEEN == []  # the site's API never heard of it
