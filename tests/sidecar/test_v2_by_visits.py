"""Event figures (visitors, pageviews, events, visits) by visit dimensions are counted from visits alone
(`Builder.visit_event_plan`): the same figures as counting every page view and site event joined to its
visit, on both backends, visits that hold several `who`s included (an anonymous page view before the
visitor signed in, two accounts on one device, a site event of another account).

The site (D is yesterday, UTC), each visitor one device:
- vm (Firefox, GB, from reddit.com): `/` 10:00 anonymous, `/a` 10:25 (lent u9 by the signed-in
  request at 10:50), `/b` 10:50 as u9: one visit of who v:vm and u:u9;
- vf (Chrome, NL): `/` 12:00 as u7, `/a` 12:10 as u8: one visit of u:u7 and u:u8;
- vs (Safari, NL, utm newsletter): `/` 14:00 as u12, the signup at 14:05 as u13: one visit of u:u12
  (its page) and u:u13 (its event);
- va (Firefox, GB, from reddit.com): `/` 16:00, `/a` 18:00: two anonymous visits (bounces);
- u9 again on T from vm2 (Chrome, GB): `/b` 01:00."""

from __future__ import annotations

import functools
from collections import defaultdict
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from tests.sidecar.test_stats import ev, midnight
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.figures import derive_pending
from trackside.goals import load_goals
from trackside.stats.v2.engine import Limits, answer
from trackside.stats.v2.schema import parse
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.writes import write_batch

H = 3600


def _day(days_ago: int) -> str:
    return datetime.fromtimestamp(midnight(days_ago), UTC).date().isoformat()


D, T = _day(1), _day(0)


def site_events():
    d, t = midnight(1), midnight(0)
    gb = dict(country="GB", referrer="reddit.com", device="desktop", browser="Firefox", os="Linux")
    nl = dict(country="NL", device="desktop", browser="Chrome", os="Windows")
    news = dict(country="NL", device="mobile", browser="Safari", os="iOS", utm_source="newsletter")
    return [
        ev(d + 10 * H, "vm", path="/", **gb),
        ev(d + 10 * H + 1500, "vm", path="/a", **gb),
        ev(d + 10 * H + 3000, "vm", path="/b", user_id="u9", **gb),
        ev(d + 12 * H, "vf", path="/", user_id="u7", **nl),
        ev(d + 12 * H + 600, "vf", path="/a", user_id="u8", **nl),
        ev(d + 14 * H, "vs", path="/", user_id="u12", **news),
        ev(
            d + 14 * H + 300,
            "vs",
            path="/api/auth/register",
            kind="api_call",
            nav="api",
            method="POST",
            event_name="signup",
            user_id="u13",
            **news,
        ),
        ev(d + 16 * H, "va", path="/", **gb),
        ev(d + 18 * H, "va", path="/a", **gb),
        ev(t + 1 * H, "vm2", path="/b", user_id="u9", country="GB", device="desktop", browser="Chrome", os="Linux"),
    ]


@pytest.fixture
async def site(make_settings, database_url):
    await migrate(database_url)
    settings = make_settings(database_url=database_url, goals=("signup",))
    engine = create_engine(database_url)
    derivation = derivation_of(settings)
    await write_batch(engine, Batch(events=site_events()), derivation)
    async with engine.connect() as conn:  # as the sidecar does before a v2 read (`derive_queued`)
        await derive_pending(conn, datetime.fromisoformat(D).date(), datetime.fromisoformat(T).date(), derivation)
    yield settings, engine
    await engine.dispose()


async def ask(site, body):
    settings, engine = site
    today = datetime.now(UTC).date()
    result = await answer(engine, parse(body, today), Limits(), functools.partial(load_goals, settings=settings))
    return [[r["dimensions"], r["metrics"]] for r in result["results"]]


async def joined(engine, column: str, first: str, last: str):
    """The oracle: every page view and site event joined to its visit, counted here by `column` of the visit."""
    out: dict[str, dict[str, set]] = defaultdict(lambda: {"who": set(), "visits": set(), "events": set()})
    async with engine.connect() as conn:
        for table, where in (("fact_page_views", ""), ("fact_site_events", "AND e.kind = 'event'")):
            rows = await conn.execute(
                sa.text(
                    f"SELECT v.{column}, e.who, e.day, e.visit_id, e.id FROM {table} e JOIN fact_visits v "
                    f"ON v.day = e.day AND v.id = e.visit_id WHERE e.day >= :first AND e.day <= :last {where}"
                ),
                {"first": datetime.fromisoformat(first).date(), "last": datetime.fromisoformat(last).date()},
            )
            for value, who, day, visit, event in rows:
                group = out[str(value)]
                group["who"].add(who if who.startswith("u:") else f"{who}|{day}")
                group["visits"].add(visit)
                group["events"].add((table, event))
    return {k: (len(g["who"]), len(g["visits"]), len(g["events"])) for k, g in out.items()}


async def test_visitors_by_visit_dimensions_count_every_who_of_a_visit(site):
    assert await ask(site, {"metrics": ["visitors", "pageviews", "events", "visits"], "date_range": [D, T]}) == [
        [[], [7, 9, 10, 6]]
    ]
    by_country = {"metrics": ["visitors", "pageviews", "events"], "date_range": [D, D], "dimensions": ["visit:country"]}
    # GB: v:vm, u:u9 (vm's visit) and v:va; NL: u7, u8 (vf) and u12, u13 (vs).
    assert await ask(site, by_country) == [[["NL"], [4, 3, 4]], [["GB"], [3, 5, 5]]]
    assert await ask(site, {**by_country, "date_range": [D, T]}) == [[["NL"], [4, 3, 4]], [["GB"], [3, 6, 6]]]
    by_browser = {"metrics": ["visitors"], "date_range": [D, T], "dimensions": ["visit:browser", "time:day"]}
    assert await ask(site, by_browser) == [
        [["Firefox", D], [3]], [["Chrome", D], [2]], [["Safari", D], [2]], [["Chrome", T], [1]]
    ]  # fmt: skip
    filtered = {"metrics": ["visitors", "percentage"], "date_range": [D, T], "dimensions": ["visit:source"],
                "filters": [["is_not", "visit:device", ["Mobile"]]]}  # fmt: skip
    assert await ask(site, filtered) == [[["Direct / None"], [3, 60.0]], [["Reddit"], [3, 60.0]]]


@pytest.mark.parametrize("column", ["country", "browser", "device"])
async def test_the_same_figures_as_every_event_joined_to_its_visit(site, column):
    settings, engine = site
    oracle = await joined(engine, column, D, T)
    body = {"metrics": ["visitors", "visits", "events"], "date_range": [D, T], "dimensions": [f"visit:{column}"]}
    got = await ask(site, body)
    spelled = {"desktop": "Desktop", "mobile": "Mobile"}
    assert {spelled.get(k, k): list(v) for k, v in oracle.items()} == {d[0]: m for d, m in got}


async def test_event_filters_and_hours_still_read_the_events(site):
    """A page filter keeps the visitors of matching page views (not of visits holding one), hours are the page
    views' own: these are still counted over events."""
    by_page = {"metrics": ["visitors"], "date_range": [D, T], "dimensions": ["visit:country"],
               "filters": [["is", "event:page", ["/b"]]]}  # fmt: skip
    assert await ask(site, by_page) == [[["GB"], [1]]]
    by_hour = {"metrics": ["visitors", "pageviews"], "date_range": [D, D], "dimensions": ["time:hour"],
               "filters": [["is", "visit:country", ["GB"]]]}  # fmt: skip
    assert await ask(site, by_hour) == [
        [[f"{D} 10:00:00"], [2, 3]], [[f"{D} 16:00:00"], [1, 1]], [[f"{D} 18:00:00"], [1, 1]]
    ]  # fmt: skip
