"""`POST /_trackside/api/v2/batch`: several v2 queries in one request, through a real sidecar, on both backends,
on `test_v2_query`'s known site: each answered as the query API answers it alone, in order; a refused query is its
own 400 naming its place, the others answered all the same; the same callers as the query API."""

from __future__ import annotations

import httpx

from tests.servers import run_sidecar
from tests.sidecar import test_v2_query
from tests.sidecar.test_stats import ADMIN, MOD, bearer
from tests.sidecar.test_v2_query import ALL, BAD, ROUTE
from trackside.api_keys import create_key

BATCH = "/_trackside/api/v2/batch"
site = test_v2_query.site  # the fixture: its known site
GOOD = [
    {"metrics": ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration"],
     "date_range": ALL},
    {"metrics": ["visitors", "pageviews"], "date_range": ALL, "dimensions": ["time:day"],
     "include": {"time_labels": True}},
    {"metrics": ["visitors"], "date_range": ALL, "dimensions": ["visit:source"],
     "order_by": [["visitors", "desc"], ["visit:source", "asc"]]},
    {"metrics": ["visitors", "conversion_rate"], "date_range": ALL, "dimensions": ["event:goal"]},
    {"metrics": ["content_views"], "date_range": ALL, "dimensions": ["event:props:content_id"],
     "include": {"titles": True}},
    {"metrics": ["pageviews", "time_on_page"], "date_range": ALL, "dimensions": ["event:props:label"]},
]  # fmt: skip


def timeless(answer):
    """An answer without the moments it was computed at (two requests a second apart differ there)."""
    meta = {k: v for k, v in answer["meta"].items() if k not in ("computed_at", "provisional_since")}
    return {**answer, "meta": meta}


async def test_a_batch_answers_each_query_as_alone_and_names_a_refused_one(site):
    settings, _ = site
    bad_body, bad_message = BAD[0]
    queries = [GOOD[0], GOOD[1], bad_body, *GOOD[2:], "not a query"]
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            alone = [await c.post(ROUTE, json=body) for body in GOOD]
            batch = await c.post(BATCH, json={"queries": queries})
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert len(results) == len(queries)
    assert results[2] == {"status": 400, "error": f"queries[2]: {bad_message}"}
    assert results[-1] == {"status": 400, "error": "queries[7]: the query is a JSON object"}
    good = [r for i, r in enumerate(results) if i not in (2, len(queries) - 1)]
    for one, got in zip(alone, good, strict=True):
        assert one.status_code == 200
        assert got["status"] == 200
        assert timeless(got["answer"]) == timeless(one.json())
    # The figures themselves (test_v2_query's site): 3 visitors, 5 visits, 8 page views, 2 bounces, 690 s.
    assert good[0]["answer"]["results"] == [{"metrics": [3, 5, 8, 1.6, 40.0, 138], "dimensions": []}]


async def test_who_may_ask_a_batch(site):
    settings, engine = site
    _, read_key = await create_key(engine, "reports", "read")
    _, write_key = await create_key(engine, "events", "write")
    body = {"queries": [{"metrics": ["pageviews"], "date_range": ALL}]}
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            nobody = await c.post(BATCH, json=body)
            user = await c.post(BATCH, json=body, headers=bearer("u1"))
            answered = [
                await c.post(BATCH, json=body, headers=h)
                for h in (MOD, {"authorization": "Bearer " + ADMIN}, {"authorization": "Bearer " + read_key})
            ]
            write = await c.post(BATCH, json=body, headers={"authorization": "Bearer " + write_key})
            stranger = await c.post(BATCH, content=b"{not json")  # authorized before the body is read
    assert nobody.status_code == 401 and nobody.json() == {"error": "a Bearer token is required"}
    assert user.status_code == 403 and user.json() == {"error": "moderators, the admin token or a read API key only"}
    for ok in answered:
        assert ok.status_code == 200
        assert [r["answer"]["results"] for r in ok.json()["results"]] == [[{"metrics": [8], "dimensions": []}]]
    assert write.status_code == 401
    assert stranger.status_code == 401


async def test_what_is_not_a_batch_is_refused_whole(site):
    settings, _ = site
    one = {"metrics": ["pageviews"], "date_range": ALL}
    shape = 'the body is {"queries": [<a v2 query>, ...]}: a list of one query or more'
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            got = [
                await c.post(BATCH, content=b"{not json"),
                await c.post(BATCH, json=[one]),
                await c.post(BATCH, json={"queries": []}),
                await c.post(BATCH, json={"queries": one}),
                await c.post(BATCH, json={"queries": [one] * 51}),
            ]
            get = await c.get(BATCH)
    assert [(r.status_code, r.json()) for r in got] == [
        (400, {"error": "the body is not valid JSON"}),
        (400, {"error": shape}),
        (400, {"error": shape}),
        (400, {"error": shape}),
        (400, {"error": "queries: at most 50 in one batch, not 51"}),
    ]
    assert get.status_code == 405
