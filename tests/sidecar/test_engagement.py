"""Engagement beacons (`t` = `engagement`: the snippet's scroll depth and visible time of a page view)
through a real sidecar, on both backends: stored as an event, folded into the page view it measured
(`fact_page_views.scroll_depth`, `visible_ms`, and its time on page), exposed as the v2 metric
`scroll_depth`; never a page view of its own. Malformed ones are refused naming the field."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import orjson
from sqlalchemy import select

from tests.conftest import DOC, FIREFOX
from tests.servers import run_sidecar
from tests.sidecar.test_beacon import TOKEN_RE, upstream_site  # noqa: F401 (a fixture)
from tests.sidecar.test_stats import MOD, SECRET
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.tables import EVENTS, FACT_PAGE_VIEWS

V2 = "/_trackside/api/v2/query"
SEND = {"user-agent": FIREFOX, "content-type": "text/plain;charset=UTF-8"}


async def until(check, timeout: float = 15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value is not None or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.1)


async def test_an_engagement_refines_its_page_view(upstream_site, make_settings, database_url):  # noqa: F811
    await migrate(database_url)
    settings = make_settings(
        frontend_url=upstream_site, api_url=upstream_site, inject_snippet=True, database_url=database_url,
        jwt_secret=SECRET, trust_roles_claim=True,
    )  # fmt: skip
    today = datetime.now(UTC).date().isoformat()
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            page = await c.get("/", headers=DOC)  # the document: a page view, by the proxy
            k = TOKEN_RE.search(page.text).group(1)
            r = await c.post("/_trackside/b", content=orjson.dumps({"t": "pageview", "p": "/", "k": k}), headers=SEND)
            assert r.status_code == 204
            # A client navigation to /about (its own beacon), then that page's engagement.
            await c.post("/_trackside/b", content=orjson.dumps({"t": "pageview", "p": "/about", "k": k}), headers=SEND)
            about = {"t": "engagement", "p": "/about", "s": 50, "m": 12_345, "k": k}
            r = await c.post("/_trackside/b", content=orjson.dumps(about), headers=SEND)
            assert r.status_code == 204 and "x-trackside-ignored" not in r.headers, r.headers
            # The image fallback's form: fields in the query string.
            r = await c.get("/_trackside/b", params={"t": "engagement", "p": "/", "s": "80", "m": "2000", "k": k},
                            headers={"user-agent": FIREFOX, "referer": url + "/"})  # fmt: skip
            assert r.status_code == 200
            refused = [
                await c.post("/_trackside/b", content=orjson.dumps({**about, **bad}), headers=SEND)
                for bad in ({"s": 101}, {"s": "half"}, {"m": -1}, {"m": True})
            ]

            async def figures():
                r = await c.post(
                    V2,
                    headers=MOD,
                    json={"metrics": ["pageviews", "scroll_depth", "time_on_page"], "date_range": [today, today],
                          "dimensions": ["event:page"]},
                )  # fmt: skip
                rows = sorted((x["dimensions"][0], x["metrics"]) for x in r.json()["results"])
                return rows if rows and all(m[1] for _, m in rows) else None

            by_page = await until(figures)
    assert [(x.status_code, x.text.split(" must")[0]) for x in refused] == [
        (400, "s"),
        (400, "s"),
        (400, "m"),
        (400, "m"),
    ]
    # Two page views (the document's beacon is the same navigation), each with its own measures;
    # time on page is the visible time the snippet reported (the visit's last page included).
    assert by_page == [("/", [1, 80, 2]), ("/about", [1, 50, 12])]
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            facts = (
                await conn.execute(
                    select(
                        FACT_PAGE_VIEWS.c.path, FACT_PAGE_VIEWS.c.scroll_depth, FACT_PAGE_VIEWS.c.visible_ms
                    ).order_by(FACT_PAGE_VIEWS.c.path)
                )
            ).all()
            kinds = (
                await conn.execute(select(EVENTS.c.kind, EVENTS.c.status).where(EVENTS.c.kind == "engagement"))
            ).all()
    finally:
        await engine.dispose()
    assert [tuple(f) for f in facts] == [("/", 80, 2000), ("/about", 50, 12345)]
    assert sorted(tuple(k) for k in kinds) == [("engagement", 50), ("engagement", 80)]
