"""Query API v2: `time_on_page` (Plausible's metric): the mean, in seconds, over page views that a
next page view of the same visit follows (a visit's last page has none), through a real sidecar.

Yesterday (D), stored through the write path:
- visitor va: `/` at 10:00:00, `/p/a1` at 10:00:40, `/about` at 10:02:00 (then leaves);
- visitor vb: `/` at 11:00:00, `/about` at 11:00:20; `/` again at 12:00:00 (a new visit: over 30
  minutes later; the last page of each visit has no time on page).
So `/` has 40 s and 20 s (mean 30), `/p/a1` 80 s, `/about` none."""

from __future__ import annotations

import httpx
import pytest

from tests.servers import run_sidecar
from tests.sidecar.test_stats import MOD, SECRET, ev, midnight
from tests.sidecar.test_v2_query import ROUTE, D
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.writes import write_batch

H = 3600


@pytest.fixture
async def site(upstream_url, make_settings, database_url):
    await migrate(database_url)
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, jwt_secret=SECRET, database_url=database_url,
        trust_roles_claim=True,
    )  # fmt: skip
    d = midnight(1)
    events = [
        ev(d + 10 * H, "va", path="/"),
        ev(d + 10 * H + 40, "va", path="/p/a1"),
        ev(d + 10 * H + 120, "va", path="/about"),
        ev(d + 11 * H, "vb", path="/"),
        ev(d + 11 * H + 20, "vb", path="/about"),
        ev(d + 12 * H, "vb", path="/"),
    ]
    engine = create_engine(database_url)
    await write_batch(engine, Batch(events=events), derivation_of(settings))
    yield settings
    await engine.dispose()


async def test_time_on_page_overall_and_by_page(site):
    async with run_sidecar(site) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers=MOD) as c:
            overall = await c.post(ROUTE, json={"metrics": ["time_on_page", "pageviews"], "date_range": [D, D]})
            by_page = await c.post(
                ROUTE,
                json={"metrics": ["pageviews", "time_on_page"], "date_range": [D, D], "dimensions": ["event:page"]},
            )
    assert overall.status_code == 200, overall.text
    # (40 + 80 + 20) / 3 page views that have a next one: 46.67 s, rounded.
    assert overall.json()["results"] == [{"metrics": [47, 6], "dimensions": []}]
    assert by_page.status_code == 200, by_page.text
    assert sorted((r["dimensions"][0], r["metrics"]) for r in by_page.json()["results"]) == [
        ("/", [3, 30]),
        ("/about", [2, 0]),
        ("/p/a1", [1, 80]),
    ]
