"""Query API v2: content metrics by the look's view type (`event:props:view_type`) and by the look's
device (`visit:device`, `Player` for players), through a real sidecar on both backends.

The site (D is yesterday, T today, UTC), stored through the write path:
- player vp1 (device `player`, view type `player`) on D: a1 at 09:00 and again at 09:10 (one look,
  inside the view window), a2 at 09:20;
- player vp2 on T: a1 at 01:00;
- vw, a desktop browser, sees a1 in a widget on another site on D at 08:00 (a look, no page view);
- vr, on a phone, opens `/p/a1` on D at 10:00 (view type `view`), then sees a2 in a listing at 10:01
  and a1 in search results at 10:02 (impressions)."""

from __future__ import annotations

import httpx
import pytest

from tests.servers import run_sidecar
from tests.sidecar.test_stats import MOD, SECRET, ev, midnight
from tests.sidecar.test_v2_query import ROUTE, D, T
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.writes import write_batch

H = 3600
ALL = [D, T]


def player_events():
    d, t = midnight(1), midnight(0)
    player = dict(kind="page_view", nav="server", device="player", browser="Other", os="Other", view_type="player")
    return [
        ev(d + 9 * H, "vp1", path="/p/a1", **player),
        ev(d + 9 * H + 600, "vp1", path="/p/a1", **player),
        ev(d + 9 * H + 1200, "vp1", path="/p/a2", **player),
        ev(t + 1 * H, "vp2", path="/p/a1", **player),
        ev(d + 8 * H, "vw", path="/p/a1", nav="beacon", view_type="widget"),
        ev(d + 10 * H, "vr", path="/p/a1", device="mobile", browser="Safari", os="iOS"),
        ev(d + 10 * H + 60, "vr", path="/p/a2", kind="impression", nav="beacon", view_type="listing", device="mobile"),
        ev(d + 10 * H + 120, "vr", path="/p/a1", kind="impression", nav="beacon", view_type="search", device="mobile"),
    ]


@pytest.fixture
async def site(upstream_url, make_settings, database_url):
    await migrate(database_url)
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, jwt_secret=SECRET, database_url=database_url,
        trust_roles_claim=True,
    )  # fmt: skip
    engine = create_engine(database_url)
    await write_batch(engine, Batch(events=player_events()), derivation_of(settings))
    yield settings
    await engine.dispose()


async def ask(settings, bodies):
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            return [await c.post(ROUTE, json=body) for body in bodies]


def rows(response):
    assert response.status_code == 200, response.text
    return [[r["dimensions"], r["metrics"]] for r in response.json()["results"]]


async def test_content_metrics_by_view_type(site):
    looks, impressions, items = await ask(
        site,
        [
            {
                "metrics": ["content_views", "unique_viewers"],
                "date_range": ALL,
                "dimensions": ["event:props:view_type"],
            },
            {"metrics": ["impressions"], "date_range": ALL, "dimensions": ["event:props:view_type"]},
            {
                "metrics": ["content_views"],
                "date_range": ALL,
                "dimensions": ["event:props:view_type", "event:props:content_id"],
            },
        ],
    )
    # Players: vp1's two looks (a1 twice inside the window is one) and vp2's; vp1 and vp2 are two
    # anonymous visitor-days. The widget look and vr's page view one each.
    assert rows(looks) == [[["player"], [3, 2]], [["view"], [1, 1]], [["widget"], [1, 1]]]
    assert rows(impressions) == [[["listing"], [1]], [["search"], [1]]]
    assert rows(items) == [
        [["player", "a1"], [2]],
        [["player", "a2"], [1]],
        [["view", "a1"], [1]],
        [["widget", "a1"], [1]],
    ]


async def test_view_type_filters(site):
    players, not_players, by_day, contains, shown = await ask(
        site,
        [
            {"metrics": ["content_views", "unique_viewers"], "date_range": ALL,
             "filters": [["is", "event:props:view_type", ["player"]]]},
            {"metrics": ["content_views"], "date_range": ALL, "dimensions": ["event:props:content_id"],
             "filters": [["is_not", "event:props:view_type", ["player"]]]},
            {"metrics": ["content_views", "unique_viewers"], "date_range": ALL, "dimensions": ["time:day"],
             "filters": [["is", "event:props:view_type", ["player"]]]},
            {"metrics": ["content_views"], "date_range": ALL,
             "filters": [["contains", "event:props:view_type", ["WID"], {"case_sensitive": False}]]},
            {"metrics": ["impressions"], "date_range": ALL, "dimensions": ["event:props:content_id"],
             "filters": [["is", "event:props:view_type", ["search"]]]},
        ],
    )  # fmt: skip
    assert rows(players) == [[[], [3, 2]]]
    assert rows(not_players) == [[["a1"], [2]]]
    assert rows(by_day) == [[[D], [2, 1]], [[T], [1, 1]]]
    assert rows(contains) == [[[], [1]]]
    assert rows(shown) == [[["a1"], [1]]]


async def test_player_device_for_content_views(site):
    by_device, player, player_items, case_blind = await ask(
        site,
        [
            {"metrics": ["content_views", "unique_viewers"], "date_range": ALL, "dimensions": ["visit:device"]},
            {"metrics": ["content_views"], "date_range": ALL, "filters": [["is", "visit:device", ["Player"]]]},
            {"metrics": ["content_views"], "date_range": ALL, "dimensions": ["event:props:content_id"],
             "filters": [["is", "visit:device", ["Player"]], ["is", "event:props:view_type", ["player"]]]},
            {"metrics": ["content_views"], "date_range": ALL,
             "filters": [["is", "visit:device", ["player"], {"case_sensitive": False}]]},
        ],
    )  # fmt: skip
    assert rows(by_device) == [[["Player"], [3, 2]], [["Desktop"], [1, 1]], [["Mobile"], [1, 1]]]
    assert rows(player) == [[[], [3]]]
    assert rows(player_items) == [[["a1"], [2]], [["a2"], [1]]]
    assert rows(case_blind) == [[[], [3]]]


async def test_view_type_is_for_content_metrics_only(site):
    visitors, devices = await ask(
        site,
        [
            {"metrics": ["visitors"], "date_range": ALL, "dimensions": ["event:props:view_type"]},
            {"metrics": ["impressions"], "date_range": ALL, "filters": [["is", "visit:device", ["Player"]]]},
        ],
    )
    assert visitors.status_code == 400
    assert visitors.json() == {"error": "metric 'visitors' cannot be broken down by 'event:props:view_type'"}
    # Impressions have no device.
    assert devices.status_code == 400
    assert devices.json() == {"error": "metric 'impressions' cannot be filtered by 'visit:device'"}
