"""`/_trackside/api/goals` through a real sidecar, on both backends: moderators and the admin token
list, add and remove goals; 400s name the bad field, 409 a taken name; others are refused."""

from __future__ import annotations

import httpx

from tests.servers import run_sidecar
from tests.sidecar.test_stats import ADMIN, MOD, SECRET, bearer
from trackside.api_keys import create_key
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate

ROUTE = "/_trackside/api/goals"
ADMIN_HEADERS = {"authorization": "Bearer " + ADMIN}


def _settings(make_settings, upstream_url, database_url):
    return make_settings(
        frontend_url=upstream_url,
        api_url=upstream_url,
        jwt_secret=SECRET,
        admin_token=ADMIN,
        database_url=database_url,
        trust_roles_claim=True,
        goals=("signup", "Visited artwork=page:/p/*"),
    )


def _names(body):
    return [(g["name"], g["kind"], g["match"], g["origin"]) for g in body["goals"]]


async def test_goals_api_lists_adds_and_removes(upstream_url, make_settings, database_url):
    settings = _settings(make_settings, upstream_url, database_url)
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            first = await c.get(ROUTE)
            added = await c.post(ROUTE, json={"name": "Uploaded", "kind": "event", "match": "upload"})
            blog = await c.post(
                ROUTE, json={"name": "Read the blog", "kind": "page", "match": "/b/**"}, headers=ADMIN_HEADERS
            )
            listed = await c.get(ROUTE)
            duplicate = await c.post(ROUTE, json={"name": "Uploaded", "kind": "page", "match": "/x"})
            settings_name = await c.post(ROUTE, json={"name": "signup", "kind": "event", "match": "signup"})
            removed = await c.delete(ROUTE + "/Read the blog")
            removed_again = await c.delete(ROUTE, params={"name": "Read the blog"})
            own = await c.delete(ROUTE + "/signup")
            by_query = await c.delete(ROUTE, params={"name": "Uploaded"})
            last = await c.get(ROUTE)
    assert first.status_code == 200 and first.headers["cache-control"] == "private, no-store"
    assert _names(first.json()) == [
        ("signup", "event", "signup", "settings"),
        ("Visited artwork", "page", "/p/*", "settings"),
    ]
    assert added.status_code == 201
    body = added.json()
    assert {k: body[k] for k in ("name", "kind", "match", "origin")} == {
        "name": "Uploaded",
        "kind": "event",
        "match": "upload",
        "origin": "database",
    }
    assert body["created_at"].endswith("Z")
    assert blog.status_code == 201
    assert _names(listed.json()) == [
        ("signup", "event", "signup", "settings"),
        ("Visited artwork", "page", "/p/*", "settings"),
        ("Read the blog", "page", "/b/**", "database"),
        ("Uploaded", "event", "upload", "database"),
    ]
    assert (duplicate.status_code, duplicate.json()) == (409, {"detail": "goal 'Uploaded' exists"})
    assert settings_name.status_code == 409
    assert settings_name.json()["detail"].startswith("goal 'signup' is defined in the settings")
    assert (removed.status_code, removed.content) == (204, b"")
    assert (removed_again.status_code, removed_again.json()) == (404, {"detail": "no stored goal 'Read the blog'"})
    assert own.status_code == 409 and "change TRACKSIDE_GOALS" in own.json()["detail"]
    assert by_query.status_code == 204
    assert _names(last.json()) == _names(first.json())


async def test_goals_api_bad_fields_are_400s_naming_them(upstream_url, make_settings, database_url):
    settings = _settings(make_settings, upstream_url, database_url)
    cases = [
        ({"name": "", "kind": "event", "match": "x"}, "name: 1 to 64 printable characters, no comma"),
        ({"name": "A", "kind": "url", "match": "/p"}, "kind: event or page, got 'url'"),
        ({"name": "A", "kind": "page", "match": "p/*"}, "match: a page pattern starts with /"),
        ({"name": "A", "kind": "event"}, "match: required, a string"),
        ({"name": 5, "kind": "event", "match": "x"}, "name: required, a string"),
        ({"name": "A", "kind": "event", "match": "x", "extra": 1}, "extra: unknown field (name, kind, match)"),
        (["A"], "body: a JSON object {name, kind, match}"),
    ]
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            answers = [await c.post(ROUTE, json=body) for body, _ in cases]
            not_json = await c.post(ROUTE, content=b"{", headers={"content-type": "application/json"})
            no_name = await c.delete(ROUTE)
            listed = await c.get(ROUTE)
    for (_, detail), answer in zip(cases, answers, strict=True):
        assert answer.status_code == 400
        assert answer.json()["detail"].startswith(detail), (answer.json(), detail)
    assert (not_json.status_code, not_json.json()["detail"]) == (400, "body: a JSON object {name, kind, match}")
    assert no_name.status_code == 400 and no_name.json()["detail"].startswith("name:")
    assert len(listed.json()["goals"]) == 2  # nothing stored


async def test_goals_api_refuses_others(upstream_url, make_settings, database_url):
    settings = _settings(make_settings, upstream_url, database_url)
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        _, read_key = await create_key(engine, "reader", "read")
    finally:
        await engine.dispose()
    goal = {"name": "G", "kind": "event", "match": "g"}
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            anonymous = await c.get(ROUTE)
            forged = await c.post(ROUTE, json=goal, headers={"authorization": "Bearer not-a-token"})
            user = await c.post(ROUTE, json=goal, headers=bearer("u1", ["user"]))
            user_delete = await c.delete(ROUTE + "/signup", headers=bearer("u1"))
            key_reads = await c.get(ROUTE, headers={"authorization": "Bearer " + read_key})
            key_writes = await c.post(ROUTE, json=goal, headers={"authorization": "Bearer " + read_key})
            listed = await c.get(ROUTE, headers=ADMIN_HEADERS)
    assert anonymous.status_code == 401
    assert forged.status_code == 401
    assert (user.status_code, user.json()) == (403, {"detail": "moderators only"})
    assert user_delete.status_code == 403
    assert key_reads.status_code == 200
    assert (key_writes.status_code, key_writes.json()) == (
        403,
        {"detail": "a read API key may list goals but not change them"},
    )
    assert [g["name"] for g in listed.json()["goals"]] == ["signup", "Visited artwork"]
