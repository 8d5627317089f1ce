"""Every route that reads a JSON body answers a 400 to one nested thousands deep (Python's JSON
decoder raises RecursionError past about a thousand levels, which is not a ValueError), stores
nothing, and goes on answering: the sidecar never answers 500 for something a client sent."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import FIREFOX
from tests.servers import run_sidecar
from tests.sidecar.test_events_api import new_key, stored_events
from tests.sidecar.test_stats import ADMIN, SECRET

# 8,000 bytes: under the smallest body limit of these routes (the events API's 8 KB).
DEEP = b"[" * 4000 + b"]" * 4000
JSON = {"content-type": "application/json"}

ROUTES = [
    "/_trackside/api/goals",
    "/_trackside/api/funnels",
    "/_trackside/api/v2/query",
    "/_trackside/api/v2/batch",
    "/_trackside/api/v2/funnel",
    "/_trackside/api/v2/journeys",
    "/_trackside/api/v1/query",
]


@pytest.mark.parametrize("route", ROUTES)
async def test_a_deeply_nested_body_is_a_400(make_settings, sqlite_url, upstream_url, route):
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, database_url=sqlite_url, jwt_secret=SECRET, admin_token=ADMIN
    )
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer " + ADMIN, **JSON}) as c:
            deep = await c.post(route, content=DEEP)
            after = await c.get("/_trackside/api/goals")
    assert deep.status_code == 400, deep.text
    assert "nested too deeply" in deep.text
    assert after.status_code == 200


async def test_the_events_api_refuses_a_deeply_nested_body(make_settings, sqlite_url, upstream_url):
    key = await new_key(sqlite_url)
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, database_url=sqlite_url)
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer " + key, **JSON}) as c:
            deep = await c.post("/_trackside/api/event", content=DEEP)
            person = {"user-agent": FIREFOX, "x-forwarded-for": "203.0.113.9"}
            good = await c.post("/_trackside/api/event", json={"name": "signup", "url": "/welcome"}, headers=person)
    assert (deep.status_code, deep.json()["field"]) == (400, "body")
    assert deep.json()["error"] == "body: nested too deeply"
    assert good.status_code == 202 and "x-trackside-ignored" not in good.headers, good.text
    assert await stored_events(sqlite_url) == 1
