"""The dashboard's journeys and retention panels in headless Chromium, at a desktop (1280x800) and a phone
(390x844) viewport, on a real sidecar over SQLite and PostgreSQL. `dashboard_journeys.mjs` signs in, reads both
panels, then asks the journeys panel for a path.

The site: the journeys of tests/sidecar/test_journeys.py yesterday (`/` viewed 5 times in 4 visits), and the
signed-in users of tests/sidecar/test_retention.py (API calls only: no page views), rolled up.

Screenshots: TRACKSIDE_TEST_SCREENSHOTS=/some/dir writes PNGs of both panels there.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import helpers
from tests.e2e.test_dashboard import ADMIN, ROOT, SECRET, browser_or_skip, token
from tests.servers import run_sidecar
from tests.sidecar.test_retention import ACTIVE, M0, TODAY, _ts, monday
from tests.sidecar.test_stats import ev, midnight
from tests.storing import write_batch
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.rollup import rollup_pending
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate

pytestmark = pytest.mark.timeout(300)

SCRIPT = helpers.E2E_DIR / "dashboard_journeys.mjs"
H = 3600


def seed() -> Batch:
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
    for i, (user, day) in enumerate(ACTIVE):
        events.append(ev(_ts(day, 9), f"api{i}", path="/api/me", kind="api_call", nav="api", user_id=user))
    return Batch(events=events)


async def run_script(node: str, chromium: str, url: str, viewport: str, prefix: str, timeout: float = 120.0) -> dict:
    environ = dict(
        DASHBOARD_URL=url,
        TOKEN=token("mod1", ["user", "moderator"]),
        CHROMIUM=chromium,
        VIEWPORT=viewport,
        SHOT_PREFIX=prefix,
        DASHBOARD_TIMEOUT_MS=str(int(timeout * 1000) - 5000),
    )
    return await helpers.run_browser_script(node, SCRIPT, environ, timeout)


@pytest.fixture
async def site_settings(upstream_url: str, make_settings: Any, database_url: str, tmp_path: Path):
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, jwt_secret=SECRET, admin_token=ADMIN,
                             database_url=database_url, trust_roles_claim=True)  # fmt: skip
    await migrate(database_url)
    engine = create_engine(database_url)
    await write_batch(engine, seed(), derivation_of(settings))
    await rollup_pending(engine, 1800.0, today=TODAY)
    await engine.dispose()
    return settings


@pytest.mark.browser
@pytest.mark.parametrize("viewport", ["1280x800", "390x844"], ids=["desktop", "phone"])
async def test_journeys_and_retention_panels(site_settings, viewport: str) -> None:
    node, chromium = browser_or_skip()
    prefix = "desktop" if viewport == "1280x800" else "phone"
    async with run_sidecar(site_settings) as (url, _):
        got = await run_script(node, chromium, url + ROOT, viewport, prefix)
    assert got["problems"] == [], got["problems"]
    assert got["overflow_x"] <= 0, "nothing scrolls sideways"

    # The top page of the period is offered first: `/`, viewed 5 times in 4 visits.
    first = got["first"]
    assert (first["state"], first["pick"], first["centre"]) == ("ready", "/", "/")
    assert first["previous"] == [["(entry)", "3", "60%"], ["/about", "1", "20%"], ["/p/[post]", "1", "20%"]]
    assert first["next"] == [["(exit)", "2", "40%"], ["/p/[post]", "2", "40%"], ["/about", "1", "20%"]]
    # A band per row, as wide as its share of the page's views (24 px for all of them).
    assert first["bands"] == [
        ["(entry): 3 (60%)", 14.4], ["/about: 1 (20%)", 4.8], ["/p/[post]: 1 (20%)", 4.8],
        ["(exit): 2 (40%)", 9.6], ["/p/[post]: 2 (40%)", 9.6], ["/about: 1 (20%)", 4.8],
    ]  # fmt: skip
    assert first["note"].startswith("5 views in 4 visits.")
    # A path typed in: asked as a path.
    path = got["path"]
    assert (path["state"], path["centre"]) == ("ready", "/p/a1")
    assert path["previous"] == [["/", "1", "100%"]] and path["next"] == [["/about", "1", "100%"]]

    # Retention: 13 weekly cohorts through M0 (u1's last day); u1 and u2 first seen in M3's week, u3 in M2's,
    # u4 in M1's.
    r = got["retention"]
    assert r["state"] == "ready"
    cohorts = {week: (users, cells) for week, users, cells in r["cohorts"]}
    assert list(cohorts) == [(M0 - timedelta(weeks=k)).isoformat() for k in range(12, -1, -1)]
    assert cohorts[monday(3).isoformat()] == (2, ["50%", "0%", "50%", *[None] * 9])
    assert cohorts[monday(2).isoformat()] == (1, ["100%", "0%", *[None] * 10])
    assert cohorts[monday(1).isoformat()] == (1, ["0%", *[None] * 11])
    assert cohorts[M0.isoformat()] == (0, [None] * 12)
    assert cohorts[monday(12).isoformat()] == (0, ["—"] * 12)
    assert (
        "Anonymous visitors are not in this grid" in r["note"]
        and "salted anew every UTC day" in r["note"]
        and r["note"].startswith(f"Through {M0.isoformat()}")
    )
