"""Journeys (`POST /_trackside/api/v2/journeys`): the page before and after a chosen page in the same
visit, through a real sidecar, on both backends.

Yesterday (D), stored through the write path and derived:
- va (desktop): `/` 10:00:00, `/p/a1` 10:00:40, `/about` 10:02:00;
- vb (desktop): `/` 11:00:00, `/about` 11:00:20; `/` again at 12:00:00 (a new visit);
- vc (mobile): `/about` 13:00, `/` 13:01, `/p/b2` 13:02, `/` 13:03 (through `/` twice).
So `/` is viewed 5 times in 4 visits: before it (entry) 3, `/about` 1, `/p/[post]` 1; after it
`/p/[post]` 2, (exit) 2, `/about` 1."""

from __future__ import annotations

from datetime import date

import httpx
import pytest
import sqlalchemy as sa

from tests.servers import run_sidecar
from tests.sidecar.test_stats import MOD, SECRET, bearer, ev, midnight
from tests.sidecar.test_v2_query import D, T
from tests.storing import write_batch
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.rollup import rollup_day
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.tables import FACT_PAGE_VIEWS, JOURNEY_DAYS

ROUTE = "/_trackside/api/v2/journeys"
H = 3600


@pytest.fixture
async def site(upstream_url, make_settings, database_url):
    await migrate(database_url)
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, jwt_secret=SECRET, database_url=database_url,
        trust_roles_claim=True,
    )  # fmt: skip
    d = midnight(1)
    phone = {"device": "mobile", "browser": "Mobile Safari", "os": "iOS"}
    events = [
        ev(d + 10 * H, "va", path="/"),
        ev(d + 10 * H + 40, "va", path="/p/a1"),
        ev(d + 10 * H + 120, "va", path="/about"),
        ev(d + 11 * H, "vb", path="/"),
        ev(d + 11 * H + 20, "vb", path="/about"),
        ev(d + 12 * H, "vb", path="/"),
        ev(d + 13 * H, "vc", path="/about", **phone),
        ev(d + 13 * H + 60, "vc", path="/", **phone),
        ev(d + 13 * H + 120, "vc", path="/p/b2", **phone),
        ev(d + 13 * H + 180, "vc", path="/", **phone),
    ]
    engine = create_engine(database_url)
    await write_batch(engine, Batch(events=events), derivation_of(settings))
    yield settings
    await engine.dispose()


def row(label: str, count: int, visits: int, share: float) -> dict:
    return {"label": label, "count": count, "visits": visits, "share": share}


async def test_previous_and_next_pages_of_a_label(site):
    async with run_sidecar(site) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            r = await c.post(ROUTE, json={"date_range": [D, D], "label": "/"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("page", "pageviews", "visits")} == {
        "page": {"label": "/"},
        "pageviews": 5,
        "visits": 4,
    }
    assert body["previous"] == [row("(entry)", 3, 3, 60.0), row("/about", 1, 1, 20.0), row("/p/[post]", 1, 1, 20.0)]
    assert body["next"] == [row("(exit)", 2, 2, 40.0), row("/p/[post]", 2, 2, 40.0), row("/about", 1, 1, 20.0)]
    assert body["previous_others"] == 0 and body["next_others"] == 0
    assert "visits that passed through the chosen page" in body["meta"]["visits"]
    assert body["query"] == {"date_range": [D, D], "filters": [], "label": "/", "limit": 10}


async def test_by_path_with_filters_and_limit(site):
    async with run_sidecar(site) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            by_path = await c.post(ROUTE, json={"date_range": [D, D], "page": "/p/a1"})
            phones = await c.post(
                ROUTE, json={"date_range": [D, D], "label": "/", "filters": [["is", "visit:device", ["Mobile"]]]}
            )
            # An event filter keeps the visits holding such a page, whole: vb's second visit is dropped.
            through_about = await c.post(
                ROUTE, json={"date_range": [D, D], "label": "/", "filters": [["is", "event:page", ["/about"]]],
                             "limit": 1},
            )  # fmt: skip
            yesterday_only = await c.post(
                ROUTE, json={"date_range": [D + "T11:30:00Z", D + "T23:59:59Z"], "label": "/"}
            )
    assert by_path.status_code == 200, by_path.text
    b = by_path.json()
    assert (b["page"], b["pageviews"], b["visits"]) == ({"page": "/p/a1"}, 1, 1)
    assert b["previous"] == [row("/", 1, 1, 100.0)] and b["next"] == [row("/about", 1, 1, 100.0)]
    p = phones.json()
    assert (p["pageviews"], p["visits"]) == (2, 1)
    assert p["previous"] == [row("/about", 1, 1, 50.0), row("/p/[post]", 1, 1, 50.0)]
    assert p["next"] == [row("(exit)", 1, 1, 50.0), row("/p/[post]", 1, 1, 50.0)]
    t = through_about.json()
    assert (t["pageviews"], t["visits"]) == (4, 3)
    assert t["previous"] == [row("(entry)", 2, 2, 50.0)] and t["previous_others"] == 2
    assert t["next"] == [row("/p/[post]", 2, 2, 50.0)] and t["next_others"] == 2
    # Within an exact range the neighbours still come from the whole visit: vc's `/` at 13:01 follows `/about`.
    y = yesterday_only.json()
    assert (y["pageviews"], y["visits"]) == (3, 2)
    assert y["previous"] == [row("(entry)", 1, 1, 33.3), row("/about", 1, 1, 33.3), row("/p/[post]", 1, 1, 33.3)]


async def test_refusals(site):
    async with run_sidecar(site) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            anonymous = await c.post(ROUTE, json={"date_range": [D, D], "label": "/"})
            member = await c.post(ROUTE, json={"date_range": [D, D], "label": "/"}, headers=bearer("u1", ["user"]))
            both = await c.post(ROUTE, json={"date_range": [D, D], "label": "/", "page": "/"}, headers=MOD)
            bad_filter = await c.post(
                ROUTE, json={"date_range": [D, D], "label": "/", "filters": [["is", "nope", ["x"]]]}, headers=MOD
            )
    assert anonymous.status_code == 401 and "error" in anonymous.json()
    assert member.status_code == 403
    assert both.status_code == 400 and "one of label" in both.json()["error"]
    assert bad_filter.status_code == 400 and bad_filter.json()["error"] == "dimension 'nope' is not supported"


async def test_rolled_day_from_daily_rows(site, database_url):
    """Once D is rolled, a label's journey reads D's daily rows (`journey_days`): the same answer as
    from the facts (shown by deleting D's page view facts after the rollup), summed with today's facts."""
    labels = ("/", "/about", "/p/[post]")

    async def ask(c: httpx.AsyncClient, date_range: list[str], label: str) -> dict:
        r = await c.post(ROUTE, json={"date_range": date_range, "label": label})
        assert r.status_code == 200, r.text
        return r.json()

    async with run_sidecar(site) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            before = {label: await ask(c, [D, D], label) for label in labels}
    engine = create_engine(database_url)
    try:
        await rollup_day(engine, date.fromisoformat(D), 1800.0, derivation=derivation_of(site))
        async with engine.begin() as conn:
            rows = (
                await conn.execute(
                    sa.select(JOURNEY_DAYS.c.side, JOURNEY_DAYS.c.neighbour, JOURNEY_DAYS.c.passages,
                              JOURNEY_DAYS.c.visits).where(JOURNEY_DAYS.c.label == "/")
                )
            ).all()  # fmt: skip
            assert sorted(tuple(r) for r in rows) == [
                ("next", "", 2, 2), ("next", "/about", 1, 1), ("next", "/p/[post]", 2, 2),
                ("page", "", 5, 4),
                ("prev", "", 3, 3), ("prev", "/about", 1, 1), ("prev", "/p/[post]", 1, 1),
            ]  # fmt: skip
            await conn.execute(sa.delete(FACT_PAGE_VIEWS).where(FACT_PAGE_VIEWS.c.day == date.fromisoformat(D)))
        # Today (not rolled): vd opens `/` then `/about`.
        t = midnight(0)
        await write_batch(engine, Batch(events=[ev(t + 60, "vd", path="/"), ev(t + 90, "vd", path="/about")]),
                          derivation_of(site))  # fmt: skip
        async with run_sidecar(site) as (url, _):
            async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
                after = {label: await ask(c, [D, D], label) for label in labels}
                both = await ask(c, [D, T], "/")
                filtered = await c.post(
                    ROUTE, json={"date_range": [D, D], "label": "/", "filters": [["is", "visit:device", ["Mobile"]]]}
                )
    finally:
        await engine.dispose()
    for label in labels:
        assert {k: v for k, v in after[label].items() if k != "query"} == {
            k: v for k, v in before[label].items() if k != "query"
        }, label
    assert (both["pageviews"], both["visits"]) == (6, 5)
    assert both["previous"] == [row("(entry)", 4, 4, 66.7), row("/about", 1, 1, 16.7), row("/p/[post]", 1, 1, 16.7)]
    assert both["next"] == [row("(exit)", 2, 2, 33.3), row("/about", 2, 2, 33.3), row("/p/[post]", 2, 2, 33.3)]
    # A filter needs the facts (visits kept whole by their entry values): D's are gone.
    assert filtered.status_code == 200 and filtered.json()["pageviews"] == 0
