"""v1 popular answers asked at once for several content kinds (the dashboard asks one per kind) read the period's
days once (`TracksideApi._ranked`) and answer as each does alone, through a real sidecar, on both backends."""

from __future__ import annotations

import asyncio

import httpx

from tests.servers import run_sidecar
from tests.sidecar.test_stats import ADMIN

API = "/_trackside/api/v1"
KINDS = ("artwork", "blog_post", "artwork", "blog_post")


async def test_popular_kinds_at_once_answer_as_alone(seeded):
    settings, _ = seeded
    auth = {"authorization": "Bearer " + ADMIN}

    async def popular(c, kind):
        answer = await c.get(API + "/popular", params={"kind": kind, "period": "30d"})
        assert answer.status_code == 200, answer.text
        return answer.json()["items"]

    async with run_sidecar(settings) as (url, _):  # answer caches empty: each computed
        async with httpx.AsyncClient(base_url=url, headers=auth) as c:
            alone = [await popular(c, kind) for kind in KINDS[:2]]
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=auth) as c:
            together = await asyncio.gather(*(popular(c, kind) for kind in KINDS))
    assert together == [*alone, *alone]
    assert alone[0] == [{"id": "a1", "views": 6, "unique_viewers": 4, "impressions": 2, "title": None, "page": "/p/a1"}]
    assert alone[1] == [
        {"id": "post1", "views": 1, "unique_viewers": 1, "impressions": 0, "title": None, "page": "/b/post1"}
    ]
