"""Visits' daily rows (`trackside.storage.visit_days`), written by the rollup, answer v2 for rolled days: the
same figures as the facts, on both backends, over ranges that mix rolled days with today's facts (a signed-in
user on both counts once) and with each visit-dimension panel of the dashboard, the cards and the chart.

The site is `test_v2_by_visits`'s (D yesterday: visits with several `who`s; T today: u9 again), plus one more
rolled day (B, two days ago: a signed-in user, u9, and an anonymous visitor)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from tests.sidecar.test_stats import ev, midnight
from tests.sidecar.test_v2_by_visits import D, T, _day, site_events
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.figures import derive_pending
from trackside.goals import load_goals
from trackside.rollup import rollup_day
from trackside.stats.v2.engine import Limits, answer
from trackside.stats.v2.schema import parse
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.visit_days import days_with_rows, prune_visit_days
from trackside.storage.writes import write_batch

H = 3600
B = _day(2)
DIMS = ("source", "referrer", "utm_source", "utm_medium", "utm_campaign", "device", "browser", "os", "country",
        "country_name", "entry_page", "exit_page")  # fmt: skip


def more_events():
    b = midnight(2)
    de = dict(country="DE", referrer="news.ycombinator.com", device="mobile", browser="Chrome", os="Android")
    return [
        ev(b + 9 * H, "vb", path="/", **de),
        ev(b + 9 * H + 60, "vb", path="/p/a1", user_id="u9", **de),  # u9 on B, D and T: once in a range
        ev(
            b + 20 * H,
            "vc",
            path="/about",
            utm_source="newsletter",
            utm_medium="email",
            country="FR",
            device="desktop",
            browser="Firefox",
            os="Windows",
        ),  # fmt: skip
    ]


def bodies():
    out = [
        {"metrics": ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration", "events"]},
        {"metrics": ["visitors", "pageviews"], "dimensions": ["time:day"], "include": {"time_labels": True}},
        {"metrics": ["visitors", "visits"], "dimensions": ["time:week"]},
        {"metrics": ["visitors", "bounce_rate"], "dimensions": ["time:month"]},
        {"metrics": ["visitors", "conversion_rate"], "dimensions": ["event:goal"]},
    ]
    for dim in DIMS:
        out += [
            {"metrics": ["visitors", "percentage", "pageviews", "events"], "dimensions": [f"visit:{dim}"]},
            {"metrics": ["visits", "bounce_rate", "visit_duration", "views_per_visit"], "dimensions": [f"visit:{dim}"]},
            {"metrics": ["visitors", "visits"], "dimensions": [f"visit:{dim}", "time:day"]},
        ]
    return out


RANGES = [(B, B), (B, D), (D, T), (B, T)]


@pytest.fixture
async def site(make_settings, database_url):
    await migrate(database_url)
    settings = make_settings(database_url=database_url, goals=("signup",))
    engine = create_engine(database_url)
    derivation = derivation_of(settings)
    await write_batch(engine, Batch(events=[*more_events(), *site_events()]), derivation)
    async with engine.connect() as conn:
        await derive_pending(conn, datetime.fromisoformat(B).date(), datetime.fromisoformat(T).date(), derivation)
    yield settings, engine, derivation
    await engine.dispose()


async def ask(settings, engine, body, first, last):
    q = parse({**body, "date_range": [first, last]}, datetime.now(UTC).date())
    result = await answer(engine, q, Limits(), functools.partial(load_goals, settings=settings))
    return [[r["dimensions"], r["metrics"]] for r in result["results"]]


async def answers(settings, engine):
    return {(i, r): await ask(settings, engine, body, *r) for i, body in enumerate(bodies()) for r in RANGES}


async def test_rolled_days_answer_from_their_rows_the_same_figures(site):
    settings, engine, derivation = site
    from_facts = await answers(settings, engine)
    for day in (B, D):
        await rollup_day(engine, datetime.fromisoformat(day).date(), derivation.window_seconds, derivation=derivation)
    async with engine.connect() as conn:
        read = await days_with_rows(conn, datetime.fromisoformat(B).date(), datetime.fromisoformat(T).date())
    assert [d.isoformat() for d in read] == [B, D]
    from_rows = await answers(settings, engine)
    assert from_rows == from_facts
    cards = {"metrics": ["visitors", "pageviews", "events", "visits"]}
    # B: u9 (vb's `/` lent u9 by its next request, a minute later) and v:vc; D: v:vm, u9, u7, u8, u12, u13,
    # v:va; T: u9 again: 8 visitors (u9 once), 3 + 8 + 1 page views, the signup an event more, 2 + 5 + 1 visits.
    assert await ask(settings, engine, cards, B, T) == [[[], [8, 12, 13, 8]]]
    assert await ask(settings, engine, {**cards, "dimensions": ["visit:country"]}, B, D) == [
        [["NL"], [4, 3, 4, 2]], [["GB"], [3, 5, 5, 3]], [["DE"], [1, 2, 2, 1]], [["FR"], [1, 1, 1, 1]]
    ]  # fmt: skip


async def test_the_rows_are_what_is_read(site):
    """The rows, not the facts, answer a rolled day: a row changed shows (here on purpose), and a day marked
    dirty by a late event is read from its facts again until it is rolled anew."""
    settings, engine, derivation = site
    day = datetime.fromisoformat(D).date()
    await rollup_day(engine, day, derivation.window_seconds, derivation=derivation)
    cards = {"metrics": ["visitors", "visits"]}
    assert await ask(settings, engine, cards, D, D) == [[[], [7, 5]]]
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE visit_dim_days SET anon_visitors = anon_visitors + 100, visits = visits + 1 "
                                   "WHERE dim = '' AND day = :d"), {"d": day})  # fmt: skip
    assert await ask(settings, engine, cards, D, D) == [[[], [107, 6]]]
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE rollup_days SET dirty = true WHERE day = :d"), {"d": day})
    assert await ask(settings, engine, cards, D, D) == [[[], [7, 5]]]
    # Filters and hours are not read from the rows: the facts answer them.
    async with engine.begin() as conn:
        await conn.execute(sa.text("UPDATE rollup_days SET dirty = false WHERE day = :d"), {"d": day})
    assert await ask(settings, engine, {**cards, "filters": [["is", "visit:country", ["GB"]]]}, D, D) == [[[], [3, 3]]]
    assert await ask(settings, engine, cards, D, D) == [[[], [107, 6]]]


async def test_pages_cut_in_sql_are_the_pages_ordered_here(site):
    """A query whose rows come from one SELECT is ordered and cut to its page by the database (`_paged`): the same
    rows as ordered here over every group (`total_rows` asks for them all), ties broken by each dimension."""
    settings, engine, derivation = site
    await rollup_day(engine, datetime.fromisoformat(B).date(), derivation.window_seconds, derivation=derivation)
    dims = [f"visit:{d}" for d in DIMS if d != "country_name"] + ["event:page", "event:props:label"]
    looks = ["event:props:content_id", "event:props:view_type"]
    checked = 0
    for dim in dims + looks:
        metric = "content_views" if dim in looks else "pageviews" if dim.startswith("event") else "visitors"
        for order in ([[metric, "desc"], [dim, "asc"]], [[dim, "desc"]], None):
            for offset in (0, 1):
                body = {"metrics": [metric], "dimensions": [dim], "pagination": {"limit": 2, "offset": offset},
                        **({"order_by": order} if order else {})}  # fmt: skip
                cut = await ask(settings, engine, body, B, T)
                whole = await ask(settings, engine, {**body, "include": {"total_rows": True}}, B, T)
                assert cut == whole, (dim, order, offset)
                checked += bool(cut)
    assert checked > 40


async def test_rows_go_with_their_visit_facts(site):
    """`prune_visit_days` (with the facts' pruning) deletes the rows of the days before its limit whose visit
    facts are gone, and only those."""
    settings, engine, derivation = site
    for day in (B, D):
        await rollup_day(engine, datetime.fromisoformat(day).date(), derivation.window_seconds, derivation=derivation)
    limit = datetime.fromisoformat(T).date()

    async def days():
        async with engine.connect() as conn:
            found = await conn.execute(sa.text("SELECT DISTINCT day FROM visit_dim_days ORDER BY day"))
            return [str(d)[:10] for d in found.scalars()]

    async with engine.begin() as conn:
        assert await prune_visit_days(conn, limit) == 0
    assert await days() == [B, D]
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM fact_visits WHERE day = :d"), {"d": datetime.fromisoformat(B).date()})
        assert await prune_visit_days(conn, limit) > 0
    assert await days() == [D]
