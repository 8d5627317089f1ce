"""`POST /_trackside/api/v2/query` (Plausible's Stats API v2 subset) through a real sidecar, on both
backends: a small known site stored through the write path (facts derived as in production), every
metric, dimension, filter operator and date range with exact values, Plausible's own documentation
examples, every refusal, and who may ask.

The site (D is yesterday, T today, UTC):
- va, anonymous, desktop Firefox in GB from reddit.com, on D: `/` 10:00, `/p/a1` 10:05 (its author
  is u1, hinted), `/about` 10:10 (visit 1: 3 views, 600 s), `/about` 12:00 (visit 2: a bounce);
- u1 on a phone (Safari, NL, utm newsletter/email/dec), on D: `/` 11:00 and the signup at 11:01
  (visit 3: 60 s, no bounce: an event);
- u1 again on T from a tablet (Chrome, Android, NL): `/p/a1` 01:00 (visit 4: a bounce; their own
  item, so no content view);
- vc, anonymous, desktop Chrome on Windows, no country, from news.ycombinator.com, on T: `/about`
  02:00, an impression of a1 02:00:10, a 502 at 02:00:20 (`/api/x`), `/` 02:00:30 (visit 5: 30 s);
- Googlebot: 5 hits of `/` on D, 2 of `/about` on T.
Goals: `signup` (an event) and `About` (the page `/about`)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from tests.servers import run_sidecar
from tests.sidecar.test_stats import ADMIN, MOD, SECRET, bearer, ev, midnight
from trackside.api_keys import create_key
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.goals import PAGE, Goal, add_goal
from trackside.stats.v2.labels import time_labels
from trackside.stats.v2.schema import echo_range, parse
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.writes import write_batch

ROUTE = "/_trackside/api/v2/query"
H = 3600


def _day(days_ago: int) -> str:
    return datetime.fromtimestamp(midnight(days_ago), UTC).date().isoformat()


D, T = _day(1), _day(0)


def site_events():
    d, t = midnight(1), midnight(0)
    va = dict(country="GB", referrer="reddit.com", device="desktop", browser="Firefox", os="Linux")
    u1_phone = dict(
        country="NL", user_id="u1", device="mobile", browser="Safari", os="iOS",
        utm_source="newsletter", utm_medium="email", utm_campaign="dec",
    )  # fmt: skip
    u1_tablet = dict(country="NL", user_id="u1", device="tablet", browser="Chrome", os="Android")
    vc = dict(device="desktop", browser="Chrome", os="Windows", referrer="news.ycombinator.com")
    return [
        ev(d + 10 * H, "va", path="/", **va),
        ev(d + 10 * H + 300, "va", path="/p/a1", author_id="u1", **va),
        ev(d + 10 * H + 600, "va", path="/about", **va),
        ev(d + 12 * H, "va", path="/about", **va),
        ev(d + 11 * H, "vb", path="/", **u1_phone),
        ev(
            d + 11 * H + 60,
            "vb",
            path="/api/auth/register",
            kind="api_call",
            nav="api",
            method="POST",
            event_name="signup",
            **u1_phone,
        ),
        ev(t + 1 * H, "vb2", path="/p/a1", **u1_tablet),
        ev(t + 2 * H, "vc", path="/about", **vc),
        ev(t + 2 * H + 10, "vc", path="/p/a1", kind="impression", nav="beacon", view_type="listing", **vc),
        ev(
            t + 2 * H + 20,
            "vc",
            path="/api/x",
            kind="error",
            nav="api",
            status=502,
            error_type="upstream_unreachable",
            **vc,
        ),
        ev(t + 2 * H + 30, "vc", path="/", **vc),
    ]


@pytest.fixture
async def site(upstream_url, make_settings, database_url):
    await migrate(database_url)
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, jwt_secret=SECRET, admin_token=ADMIN,
        database_url=database_url, trust_roles_claim=True, goals=("signup", "About=page:/about"),
    )  # fmt: skip
    engine = create_engine(database_url)
    bots = Counter(
        {
            (datetime.fromtimestamp(midnight(1), UTC).date(), "Googlebot", "/"): 5,
            (datetime.fromtimestamp(midnight(0), UTC).date(), "Googlebot", "/about"): 2,
        }
    )
    await write_batch(engine, Batch(events=site_events(), bots=bots), derivation_of(settings))
    yield settings, engine
    await engine.dispose()


ALL = [D, T]


async def ask_all(settings, bodies, headers=MOD):
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=headers) as c:
            return [await c.post(ROUTE, json=body) for body in bodies]


def rows(response):
    assert response.status_code == 200, response.text
    return [[r["dimensions"], r["metrics"]] for r in response.json()["results"]]


async def test_every_metric_on_the_known_site(site):
    settings, _ = site
    aggregate, extensions = await ask_all(
        settings,
        [
            {
                "metrics": [
                    "visitors",
                    "visits",
                    "pageviews",
                    "views_per_visit",
                    "bounce_rate",
                    "visit_duration",
                    "events",
                ],
                "date_range": ALL,
            },
            {
                "metrics": ["content_views", "unique_viewers", "impressions", "api_calls", "errors", "bot_hits"],
                "date_range": ALL,
            },
        ],
    )
    # u1 once over both days, va and vc once each; 5 visits, 8 page views, 9 events with the signup;
    # visits 2 and 4 bounce; (600 + 0 + 60 + 0 + 30) / 5 = 138 s; 8 / 5 views a visit.
    assert rows(aggregate) == [[[], [3, 5, 8, 1.6, 40.0, 138, 9]]]
    # va's look at a1 (u1's own is left out), vc's impression, the signup and the 502 as API calls.
    assert rows(extensions) == [[[], [1, 1, 1, 2, 1, 7]]]
    meta = aggregate.json()["meta"]
    assert meta["uniques"].startswith("visitors and unique_viewers: each signed-in user once over the whole range")
    now = datetime.fromisoformat(meta["computed_at"])
    assert datetime.fromisoformat(meta["provisional_since"]) == now - timedelta(minutes=30)
    assert "may still change" in meta["provisional"]
    assert "facts_begin" not in meta
    assert set(extensions.json()["meta"]["extensions"]) == {
        "content_views", "unique_viewers", "impressions", "api_calls", "errors", "bot_hits"
    }  # fmt: skip
    assert aggregate.headers["cache-control"] == "private, no-store"


async def test_breakdowns_by_every_dimension(site):
    settings, _ = site
    m = ["visitors", "visits", "pageviews"]
    dims = [
        "event:page",
        "event:props:label",
        "visit:source",
        "visit:referrer",
        "visit:utm_source",
        "visit:utm_medium",
        "visit:utm_campaign",
        "visit:device",
        "visit:browser",
        "visit:os",
        "visit:country",
        "visit:country_name",
        "visit:entry_page",
        "visit:exit_page",
    ]
    answers = await ask_all(settings, [{"metrics": m, "date_range": ALL, "dimensions": [d]} for d in dims])
    got = {d: rows(a) for d, a in zip(dims, answers, strict=True)}
    # By page, visits are the visits holding that page.
    assert got["event:page"] == [[["/"], [3, 3, 3]], [["/about"], [2, 3, 3]], [["/p/a1"], [2, 2, 2]]]
    # A site event has a route label (the signup's request), but no page.
    assert got["event:props:label"] == [
        [["/"], [3, 3, 3]],
        [["/about"], [2, 3, 3]],
        [["/p/[post]"], [2, 2, 2]],
        [["/api/auth/register"], [1, 1, 0]],
    ]
    # Visit dimensions are the visit's entry values, for all its page views.
    assert got["visit:source"] == [
        [["Direct / None"], [1, 1, 1]],
        [["Hacker News"], [1, 1, 2]],
        [["Reddit"], [1, 2, 4]],
        [["newsletter"], [1, 1, 1]],
    ]
    assert got["visit:referrer"] == [
        [["Direct / None"], [1, 2, 2]],
        [["news.ycombinator.com"], [1, 1, 2]],
        [["reddit.com"], [1, 2, 4]],
    ]
    assert got["visit:utm_source"] == [[["(not set)"], [3, 4, 7]], [["newsletter"], [1, 1, 1]]]
    assert got["visit:utm_medium"] == [[["(not set)"], [3, 4, 7]], [["email"], [1, 1, 1]]]
    assert got["visit:utm_campaign"] == [[["(not set)"], [3, 4, 7]], [["dec"], [1, 1, 1]]]
    assert got["visit:device"] == [[["Desktop"], [2, 3, 6]], [["Mobile"], [1, 1, 1]], [["Tablet"], [1, 1, 1]]]
    assert got["visit:browser"] == [[["Chrome"], [2, 2, 3]], [["Firefox"], [1, 2, 4]], [["Safari"], [1, 1, 1]]]
    assert got["visit:os"] == [
        [["Android"], [1, 1, 1]],
        [["GNU/Linux"], [1, 2, 4]],
        [["Windows"], [1, 1, 2]],
        [["iOS"], [1, 1, 1]],
    ]
    assert got["visit:country"] == [[["(not set)"], [1, 1, 2]], [["GB"], [1, 2, 4]], [["NL"], [1, 2, 2]]]
    assert got["visit:country_name"] == [
        [["(not set)"], [1, 1, 2]],
        [["Netherlands"], [1, 2, 2]],
        [["United Kingdom"], [1, 2, 4]],
    ]
    assert got["visit:entry_page"] == [[["/"], [2, 2, 4]], [["/about"], [2, 2, 3]], [["/p/a1"], [1, 1, 1]]]
    assert got["visit:exit_page"] == [[["/"], [2, 2, 3]], [["/about"], [1, 2, 4]], [["/p/a1"], [1, 1, 1]]]


async def test_time_dimensions_labels_and_session_metrics_by_visit_dimension(site):
    settings, _ = site
    by_day, by_hour, week, month, auto, sessions, content = await ask_all(
        settings,
        [
            {
                "metrics": ["visitors", "pageviews", "api_calls", "bot_hits"],
                "date_range": ALL,
                "dimensions": ["time:day"],
            },
            {"metrics": ["pageviews", "errors"], "date_range": [T, T], "dimensions": ["time:hour"]},
            {"metrics": ["visitors"], "date_range": ALL, "dimensions": ["time:week"], "include": {"time_labels": True}},
            {"metrics": ["visitors"], "date_range": ALL, "dimensions": ["time:month"]},
            {"metrics": ["visits"], "date_range": "day", "dimensions": ["time"], "include": {"time_labels": True}},
            {
                "metrics": ["visits", "bounce_rate", "visit_duration", "views_per_visit"],
                "date_range": ALL,
                "dimensions": ["visit:device"],
            },
            {
                "metrics": ["content_views", "impressions"],
                "date_range": ALL,
                "dimensions": ["event:props:content_kind", "event:props:content_id"],
            },
        ],
    )
    assert rows(by_day) == [[[D], [2, 5, 1, 5]], [[T], [2, 3, 1, 2]]]
    assert rows(by_hour) == [[[f"{T} 01:00:00"], [1, 0]], [[f"{T} 02:00:00"], [2, 1]]]
    # A bucket starting before the range is labelled with the range's first day (as Plausible).
    monday = datetime.fromisoformat(T).date() - timedelta(days=datetime.fromisoformat(T).weekday())
    if monday.isoformat() <= D:
        assert rows(week) == [[[D], [3]]]
        assert week.json()["meta"]["time_labels"] == [D]
    else:
        assert rows(week) == [[[D], [2]], [[monday.isoformat()], [2]]]
    assert rows(month) == ([[[D], [3]]] if T[:7] == D[:7] else [[[D], [2]], [[T], [2]]])
    # `time` over one day is by hour; the labels are its 24 hours.
    assert rows(auto) == [[[f"{T} 01:00:00"], [1]], [[f"{T} 02:00:00"], [1]]]
    assert auto.json()["meta"]["time_labels"] == [f"{T} {h:02d}:00:00" for h in range(24)]
    assert auto.json()["meta"]["time_dimension"] == "time:hour"
    assert rows(sessions) == [
        [["Desktop"], [3, 33.3, 210, 2.0]],
        [["Mobile"], [1, 0.0, 60, 1.0]],
        [["Tablet"], [1, 100.0, 0, 1.0]],
    ]
    assert rows(content) == [[["artwork", "a1"], [1, 1]]]


async def test_filters_every_operator_and_combination(site):
    settings, _ = site
    m = ["visitors", "visits", "pageviews"]
    cases = [
        (["is", "visit:country", ["NL"]], [1, 2, 2]),
        (["is_not", "visit:country", ["NL"]], [2, 3, 6]),
        (["contains", "event:page", ["about"]], [2, 3, 3]),
        # Events include the signup (u1); visits are those holding no such page.
        (["contains_not", "event:page", ["about"]], [3, 2, 5]),
        (["matches", "event:page", ["^/p/"]], [2, 2, 2]),
        (["matches_not", "event:page", ["^/p/", "^/$"]], [3, 1, 3]),
        (["contains", "visit:browser", ["firefox"]], [0, 0, 0]),
        (["contains", "visit:browser", ["firefox"], {"case_sensitive": False}], [1, 2, 4]),
        (["is", "visit:device", ["desktop"], {"case_sensitive": False}], [2, 3, 6]),
        (["is", "visit:country_name", ["United Kingdom"]], [1, 2, 4]),
        (["is_not", "visit:country_name", ["United Kingdom"]], [2, 3, 4]),
        (["matches", "visit:source", ["^(Reddit|newsletter)$"]], [2, 3, 5]),
        (["is", "visit:entry_page", ["/about"]], [2, 2, 3]),
        (["or", [["is", "visit:country", ["GB"]], ["is", "visit:device", ["Tablet"]]]], [2, 3, 5]),
        (["not", ["is", "visit:country", ["GB"]]], [2, 3, 4]),
        (["and", [["is", "visit:device", ["Desktop"]], ["not", ["contains", "event:page", ["/p/"]]]]], [2, 2, 5]),
        (["is", "event:props:label", ["/p/[post]"]], [2, 2, 2]),
        (["matches", "visit:browser", ["^fire"], {"case_sensitive": False}], [1, 2, 4]),
        (["matches_not", "visit:browser", ["^FIRE"], {"case_sensitive": False}], [2, 3, 4]),
    ]
    answers = await ask_all(settings, [{"metrics": m, "date_range": ALL, "filters": [f]} for f, _ in cases])
    for (f, expected), answer in zip(cases, answers, strict=True):
        assert rows(answer) == [[[], expected]], f
    # Visit metrics with a page filter: the visits that hold the page (or, negated, hold none of it).
    holding, not_holding, by_goal_visits = await ask_all(
        settings,
        [
            {
                "metrics": ["visits", "bounce_rate", "visit_duration", "views_per_visit"],
                "date_range": ALL,
                "filters": [["is", "event:page", ["/about"]]],
            },
            {
                "metrics": ["visits", "bounce_rate"],
                "date_range": ALL,
                "filters": [["is_not", "event:page", ["/about"]]],
            },
            {"metrics": ["visits", "bounce_rate"], "date_range": ALL, "filters": [["is", "event:goal", ["signup"]]]},
        ],
    )
    assert rows(holding) == [[[], [3, 33.3, 210, 2.0]]]
    assert rows(not_holding) == [[[], [2, 50.0]]]
    assert rows(by_goal_visits) == [[[], [1, 0.0]]]


async def test_goals_conversions_and_percentage(site):
    settings, engine = site
    # A stored goal beside the settings' two (`trackside goals add Artwork --page '/p/*'`).
    async with engine.begin() as conn:
        await add_goal(conn, settings, Goal("Artwork", PAGE, "/p/*"))
    by_goal, filtered, by_device, percentage, contains = await ask_all(
        settings,
        [
            {
                "metrics": ["visitors", "events", "conversion_rate", "group_conversion_rate"],
                "date_range": ALL,
                "dimensions": ["event:goal"],
            },
            {
                "metrics": ["visitors", "events", "conversion_rate"],
                "date_range": ALL,
                "filters": [["is", "event:goal", ["signup"]]],
            },
            {
                "metrics": ["visitors", "conversion_rate", "group_conversion_rate"],
                "date_range": ALL,
                "dimensions": ["visit:device"],
                "filters": [["is", "event:goal", ["About"]]],
            },
            {"metrics": ["visitors", "percentage"], "date_range": ALL, "dimensions": ["visit:country"]},
            {"metrics": ["events"], "date_range": ALL, "filters": [["contains", "event:goal", ["sign", "abo"]]]},
        ],
    )
    # About: va (twice on D) and vc: 2 of 3 visitors, 3 page views; Artwork: va and u1 at /p/a1;
    # signup: u1, 1 of 3.
    assert rows(by_goal) == [
        [["About"], [2, 3, 66.67, 66.67]],
        [["Artwork"], [2, 2, 66.67, 66.67]],
        [["signup"], [1, 1, 33.33, 33.33]],
    ]
    assert rows(filtered) == [[[], [1, 1, 33.33]]]
    # Of Desktop's 2 visitors both converted; of 3 visitors in all, 2.
    assert rows(by_device) == [[["Desktop"], [2, 66.67, 100.0]]]
    assert rows(percentage) == [[["(not set)"], [1, 33.3]], [["GB"], [1, 33.3]], [["NL"], [1, 33.3]]]
    assert rows(contains) == [[[], [1]]]  # "abo" matches no goal name (names are case-sensitive): signup's 1


async def test_date_ranges_order_and_pagination(site):
    settings, _ = site
    seven = _day(7)
    day, last7, pair, instants, everything, long_ago, ordered, paged = await ask_all(
        settings,
        [
            {"metrics": ["visitors", "pageviews"], "date_range": "day"},
            {"metrics": ["visitors", "pageviews"], "date_range": "7d"},
            {"metrics": ["visitors", "pageviews"], "date_range": [seven, D]},
            {"metrics": ["pageviews"], "date_range": [f"{T}T01:30:00Z", f"{T}T03:30:00+01:00"]},
            {"metrics": ["pageviews"], "date_range": "all"},
            {"metrics": ["pageviews"], "date_range": ["2020-01-01", T]},
            {
                "metrics": ["visitors", "pageviews"],
                "date_range": ALL,
                "dimensions": ["event:page"],
                "order_by": [["pageviews", "asc"], ["event:page", "desc"]],
            },
            {
                "metrics": ["pageviews"],
                "date_range": ALL,
                "dimensions": ["event:page"],
                "include": {"total_rows": True},
                "pagination": {"limit": 2, "offset": 1},
            },
        ],
    )
    assert rows(day) == [[[], [2, 3]]]
    assert rows(last7) == [[[], [2, 5]]]
    assert last7.json()["query"]["date_range"] == [f"{seven}T00:00:00+00:00", f"{D}T23:59:59+00:00"]
    assert rows(pair) == [[[], [2, 5]]]
    assert rows(instants) == [[[], [2]]]  # 01:30 to 02:30 UTC: vc's two views, not u1's at 01:00
    assert instants.json()["query"]["date_range"] == [f"{T}T01:30:00+00:00", f"{T}T02:30:00+00:00"]
    assert rows(everything) == [[[], [8]]]
    assert everything.json()["query"]["date_range"][0] == f"{D}T00:00:00+00:00"  # from the oldest fact day
    assert rows(long_ago) == [[[], [8]]]
    assert long_ago.json()["meta"]["facts_begin"] == D
    assert D in long_ago.json()["meta"]["facts_note"]
    assert rows(ordered) == [[["/p/a1"], [2, 2]], [["/about"], [2, 3]], [["/"], [3, 3]]]
    assert rows(paged) == [[["/about"], [3]], [["/p/a1"], [2]]]
    assert paged.json()["meta"]["total_rows"] == 3
    assert paged.json()["query"]["pagination"] == {"limit": 2, "offset": 1}


async def test_plausible_documentation_examples(site):
    """Bodies as Plausible's docs show them (utm, pagination, time labels, case-insensitive filter),
    answered in Plausible's shape."""
    settings, _ = site
    utm, pagination, labels, insensitive = await ask_all(
        settings,
        [
            {
                "site_id": "dummy.site",
                "metrics": ["visitors", "events", "pageviews"],
                "date_range": "7d",
                "dimensions": ["visit:utm_medium", "visit:utm_source"],
            },
            {
                "site_id": "dummy.site",
                "metrics": ["visitors", "events", "pageviews"],
                "date_range": "7d",
                "dimensions": ["visit:utm_medium", "visit:utm_source"],
                "include": {"total_rows": True},
                "pagination": {"offset": 1, "limit": 3},
            },
            {
                "site_id": "dummy.site",
                "metrics": ["visitors"],
                "date_range": [T, T],
                "dimensions": ["time:hour"],
                "include": {"time_labels": True},
            },
            {
                "site_id": "dummy.site",
                "metrics": ["visitors"],
                "date_range": "7d",
                "filters": [["contains", "event:page", ["ABOUT"], {"case_sensitive": False}]],
            },
        ],
    )
    assert utm.json()["results"] == [
        {"metrics": [1, 4, 4], "dimensions": ["(not set)", "(not set)"]},
        {"metrics": [1, 2, 1], "dimensions": ["email", "newsletter"]},
    ]
    assert utm.json()["query"] == {
        "site_id": "dummy.site",
        "metrics": ["visitors", "events", "pageviews"],
        "date_range": [f"{_day(7)}T00:00:00+00:00", f"{D}T23:59:59+00:00"],
        "filters": [],
        "dimensions": ["visit:utm_medium", "visit:utm_source"],
        "order_by": [["visitors", "desc"]],
        "include": {"total_rows": False, "time_labels": False},
        "pagination": {"limit": 10000, "offset": 0},
    }
    assert pagination.json()["results"] == [{"metrics": [1, 2, 1], "dimensions": ["email", "newsletter"]}]
    assert pagination.json()["meta"]["total_rows"] == 2
    assert labels.json()["results"] == [
        {"metrics": [1], "dimensions": [f"{T} 01:00:00"]},
        {"metrics": [1], "dimensions": [f"{T} 02:00:00"]},
    ]
    assert labels.json()["meta"]["time_labels"][:2] == [f"{T} 00:00:00", f"{T} 01:00:00"]
    assert len(labels.json()["meta"]["time_labels"]) == 24
    assert labels.json()["query"]["order_by"] == [["time:hour", "asc"], ["visitors", "desc"]]
    assert insensitive.json()["results"] == [{"metrics": [1], "dimensions": []}]


BAD = [
    ({"metrics": ["foo"], "date_range": "7d"}, "metric 'foo' is not supported"),
    (
        {"metrics": ["visitors"], "date_range": "7d", "dimensions": ["visit:city"]},
        "dimension 'visit:city' is not supported",
    ),
    (
        {"metrics": ["visitors"], "date_range": "7d", "filters": [["has_done", ["is", "event:page", ["/"]]]]},
        "filter operator 'has_done' is not supported",
    ),
    (
        {"metrics": ["visitors"], "date_range": "7d", "filters": [["matches_wildcard", "event:page", ["/*"]]]},
        "filter operator 'matches_wildcard' is not supported",
    ),
    (
        {"metrics": ["visitors"], "date_range": "5d"},
        "date_range '5d' is not supported (day, 7d, 28d, 30d, 91d, month, 6mo, 12mo, year, all, or two ISO dates)",
    ),
    (
        {"metrics": ["visitors"], "date_range": ["2026-02-30", "2026-03-01"]},
        "date_range ['2026-02-30', '2026-03-01']: not valid ISO dates",
    ),
    (
        {"metrics": ["visitors"], "date_range": ["2026-03-02", "2026-03-01"]},
        "date_range ['2026-03-02', '2026-03-01']: the end is before the start",
    ),
    ({"metrics": ["visitors"]}, "date_range is required"),
    ({"metrics": [], "date_range": "7d"}, "metrics needs at least one entry"),
    ({"metrics": ["visitors"], "date_range": "7d", "foo": 1}, "parameter 'foo' is not supported"),
    ({"metrics": ["percentage"], "date_range": "7d"}, "metric 'percentage' needs at least one dimension"),
    (
        {"metrics": ["conversion_rate"], "date_range": "7d"},
        "metric 'conversion_rate' needs an event:goal filter or dimension",
    ),
    (
        {"metrics": ["bounce_rate"], "date_range": "7d", "dimensions": ["event:page"]},
        "metric 'bounce_rate' cannot be broken down by the event dimension 'event:page'",
    ),
    (
        {"metrics": ["pageviews"], "date_range": "7d", "dimensions": ["event:props:content_id"]},
        "metric 'pageviews' cannot be broken down by 'event:props:content_id'",
    ),
    (
        {"metrics": ["content_views"], "date_range": "7d", "filters": [["is", "visit:source", ["Reddit"]]]},
        "metric 'content_views' cannot be filtered by 'visit:source'",
    ),
    (
        {"metrics": ["api_calls"], "date_range": "7d", "dimensions": ["time:hour"]},
        "metric 'api_calls' is counted per day: it cannot be broken down by hour",
    ),
    (
        {"metrics": ["visitors"], "date_range": "7d", "filters": [["is", "event:goal", ["Nope"]]]},
        "goal 'Nope' is not configured",
    ),
    (
        {"metrics": ["visitors"], "date_range": "7d", "filters": [["is_not", "event:goal", ["signup"]]]},
        "filter operator 'is_not' is not supported for event:goal (is or contains)",
    ),
    (
        {"metrics": ["visitors"], "date_range": "7d", "filters": [["matches", "event:page", ["("]]]},
        "invalid regular expression '(': missing ), unterminated subpattern at position 0",
    ),
    (
        {"metrics": ["visitors"], "date_range": "7d", "order_by": [["pageviews", "desc"]]},
        "invalid order_by entry ['pageviews', 'desc']: not a queried metric or dimension",
    ),
    (
        {"metrics": ["visitors"], "date_range": "7d", "pagination": {"limit": 10001}},
        "pagination.limit is an integer from 1 to 10000",
    ),
    (
        {"metrics": ["visitors"], "date_range": "7d", "include": {"time_labels": True}},
        "include.time_labels needs a time dimension",
    ),
    (
        {"metrics": ["visitors"], "date_range": "7d", "include": {"comparisons": {}}},
        "include.comparisons is not supported",
    ),
    (
        {"metrics": ["visitors"], "date_range": "7d", "filters": [["is", "time:day", [D]]]},
        "dimension 'time:day' cannot be filtered; set date_range instead",
    ),
    (
        {
            "metrics": ["visitors"],
            "date_range": ["1970-01-01", "2999-12-31"],
            "dimensions": ["time:hour"],
            "include": {"time_labels": True},
        },
        "include.time_labels: more than 10,000 time:hour buckets; use a coarser time dimension",
    ),
    ([1, 2], "the query is a JSON object"),
]


async def test_everything_outside_the_subset_is_a_400_naming_it(site):
    settings, _ = site
    answers = await ask_all(settings, [body for body, _ in BAD])
    for (body, message), answer in zip(BAD, answers, strict=True):
        assert answer.status_code == 400, body
        assert answer.json() == {"error": message}, body
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            broken = await c.post(ROUTE, content=b"{not json")
            get = await c.get(ROUTE)
    assert broken.status_code == 400 and broken.json() == {"error": "the body is not valid JSON"}
    assert get.status_code == 405


async def test_who_may_ask(site):
    settings, engine = site
    _, read_key = await create_key(engine, "reports", "read")
    _, write_key = await create_key(engine, "events", "write")
    body = {"metrics": ["pageviews"], "date_range": ALL}
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url) as c:
            nobody = await c.post(ROUTE, json=body)
            user = await c.post(ROUTE, json=body, headers=bearer("u1"))
            moderator = await c.post(ROUTE, json=body, headers=MOD)
            admin = await c.post(ROUTE, json=body, headers={"authorization": "Bearer " + ADMIN})
            read = await c.post(ROUTE, json=body, headers={"authorization": "Bearer " + read_key})
            write = await c.post(ROUTE, json=body, headers={"authorization": "Bearer " + write_key})
            # Authorized before the body is read: a stranger's bad body is still a 401.
            stranger = await c.post(ROUTE, content=b"{not json")
    assert nobody.status_code == 401 and nobody.json() == {"error": "a Bearer token is required"}
    assert user.status_code == 403 and user.json() == {"error": "moderators, the admin token or a read API key only"}
    for ok in (moderator, admin, read):
        assert rows(ok) == [[[], [8]]]
    assert write.status_code == 401
    assert stranger.status_code == 401


async def test_a_slow_query_is_a_503(upstream_url, make_settings, database_url):
    await migrate(database_url)
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, admin_token=ADMIN, database_url=database_url,
        query_timeout_seconds=0.001,
    )  # fmt: skip
    engine = create_engine(database_url)
    start = midnight(0)
    events = [ev(start + i, f"v{i % 300}", path=f"/page/{i % 97}") for i in range(3000)]
    await write_batch(engine, Batch(events=events), derivation_of(settings))
    await engine.dispose()
    slow = {
        "metrics": ["visitors", "pageviews"],
        "date_range": "day",
        "dimensions": ["event:page"],
        "filters": [["matches", "event:page", [f"^/page/{i}x?$" for i in range(200, 400)]]],
    }
    [answer] = await ask_all(settings, [slow], headers={"authorization": "Bearer " + ADMIN})
    assert answer.status_code == 503
    assert answer.json() == {"error": "the query took longer than 0.001 s"}


@pytest.mark.parametrize(
    ("shortcut", "first", "last"),
    [
        ("day", "2026-01-15", "2026-01-15"),
        ("7d", "2026-01-08", "2026-01-14"),
        ("28d", "2025-12-18", "2026-01-14"),
        ("30d", "2025-12-16", "2026-01-14"),
        ("91d", "2025-10-16", "2026-01-14"),
        ("month", "2026-01-01", "2026-01-31"),
        ("6mo", "2025-07-01", "2025-12-31"),
        ("12mo", "2025-01-01", "2025-12-31"),
        ("year", "2026-01-01", "2026-12-31"),
    ],
)
def test_date_range_shortcuts_in_utc_days(shortcut, first, last):
    q = parse({"metrics": ["visitors"], "date_range": shortcut}, date(2026, 1, 15))
    assert (q.first, q.last) == (date.fromisoformat(first), date.fromisoformat(last))
    assert echo_range(q, q.first) == [f"{first}T00:00:00+00:00", f"{last}T23:59:59+00:00"]


def test_time_labels_clamp_weeks_and_months_to_the_range():
    # 2026-01-15 is a Thursday: its week's label is the range's first day, then Mondays.
    assert time_labels("week", date(2026, 1, 15), date(2026, 2, 2), None, None) == [
        "2026-01-15", "2026-01-19", "2026-01-26", "2026-02-02"
    ]  # fmt: skip
    assert time_labels("month", date(2025, 11, 20), date(2026, 1, 3), None, None) == [
        "2025-11-20", "2025-12-01", "2026-01-01"
    ]  # fmt: skip
    start, end = datetime(2026, 1, 15, 22, 30), datetime(2026, 1, 16, 1, 0)
    assert time_labels("hour", date(2026, 1, 15), date(2026, 1, 16), start, end) == [
        "2026-01-15 22:00:00", "2026-01-15 23:00:00", "2026-01-16 00:00:00", "2026-01-16 01:00:00"
    ]  # fmt: skip


async def test_a_pattern_only_python_reads_is_a_400_on_postgresql(site):
    """Patterns are checked with Python's `re` first; PostgreSQL's own refusal is a 400 too."""
    settings, _ = site
    body = {"metrics": ["pageviews"], "date_range": ALL, "filters": [["matches", "event:page", ["(?P<x>/about)"]]]}
    [answer] = await ask_all(settings, [body])
    if settings.database_url.startswith("postgresql"):
        assert answer.status_code == 400
        assert answer.json() == {
            "error": "invalid regular expression: invalid embedded option (PostgreSQL's regular expressions)"
        }
    else:
        assert rows(answer) == [[[], [3]]]
