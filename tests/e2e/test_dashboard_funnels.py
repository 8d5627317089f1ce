"""The funnel panel end to end, on a real sidecar over SQLite and PostgreSQL in front of the test upstream:
headless Chromium first browses the site as four visitors (each its own user agent, so its own visitor id), every
request through the sidecar and stored by its pipeline (facts derived as in production); then a moderator opens
the dashboard, and each step's count the panel shows is exact. `dashboard_funnels.mjs` drives both phases.

The journeys (today, a second between steps), and the settings' funnel `Upload`: `/` > `/p/*` > goal `upload`:
- a: `/`, `/p/a1`, then the page posts `/api/post/upload` (the `upload` event rule): all three steps;
- b: `/`, `/p/b2`: two steps;
- c: `/p/a1`, `/`: the artwork came first, so step 1 only;
- d: `/`: step 1 only.
So 4, 2 and 1 visitors (drop-offs 2 and 1, 50% and 25%). The moderator adds `Artwork first` (`/p/*` > `/`) through
the panel's form: a, b and c saw an artwork, c went home after it (3, then 1); a one-step funnel is refused with
the API's words; the added funnel is removed again."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.e2e import helpers
from tests.e2e.test_dashboard import ADMIN, SECRET, browser_or_skip, token
from tests.servers import run_sidecar

pytestmark = pytest.mark.timeout(300)

SCRIPT = helpers.E2E_DIR / "dashboard_funnels.mjs"
FUNNEL = [{"page": "/"}, {"page": "/p/*"}, {"goal": "upload"}]


async def run_script(node: str, chromium: str, base: str, phase: str, timeout: float = 120.0) -> dict[str, Any]:
    """node dashboard_funnels.mjs in its own process group, ended by id; its JSON."""
    environ = dict(
        BASE_URL=base,
        PHASE=phase,
        TOKEN=token("mod1", ["user", "moderator"]),
        CHROMIUM=chromium,
        TIMEOUT_MS=str(int(timeout * 1000) - 5000),
    )
    return await helpers.run_browser_script(node, SCRIPT, environ, timeout)


async def wait_for_funnel(base: str, expected: list[int], timeout: float = 30.0) -> list[int]:
    """The figures once the pipeline has stored and derived every request (read through the API, as the panel)."""
    deadline = asyncio.get_running_loop().time() + timeout
    got: list[int] = []
    async with httpx.AsyncClient(base_url=base, headers={"authorization": "Bearer " + ADMIN}) as c:
        while True:
            r = await c.post("/_trackside/api/v2/funnel", json={"date_range": "day", "steps": FUNNEL})
            assert r.status_code == 200, r.text
            got = [s["visitors"] for s in r.json()["steps"]]
            if got == expected or asyncio.get_running_loop().time() > deadline:
                return got
            await asyncio.sleep(0.2)


def steps(view: dict[str, Any]) -> list[tuple[str, int, str, str, int | None]]:
    return [(s["label"], s["visitors"], s["shown"], s["rate"], s["dropoff"]) for s in view["steps"]]


@pytest.mark.browser
async def test_the_funnel_panel_counts_real_journeys(upstream_url: str, make_settings: Any, database_url: str) -> None:
    node, chromium = browser_or_skip()
    settings = make_settings(
        frontend_url=upstream_url,
        api_url=upstream_url,
        jwt_secret=SECRET,
        admin_token=ADMIN,
        database_url=database_url,
        trust_roles_claim=True,
        funnels="Upload=/ > /p/* > goal:upload",
    )
    async with run_sidecar(settings) as (base, _):
        browsed = await run_script(node, chromium, base, "journeys")
        # Every request answered by the site: four documents for a, b and c's two, d's one, and a's upload.
        assert [(who, what, status) for who, what, status in browsed["requests"]] == [
            ("a", "GET /", 200), ("a", "GET /p/a1", 200), ("a", "POST /api/post/upload", 200),
            ("b", "GET /", 200), ("b", "GET /p/b2", 200),
            ("c", "GET /p/a1", 200), ("c", "GET /", 200),
            ("d", "GET /", 200),
        ]  # fmt: skip
        assert await wait_for_funnel(base, [4, 2, 1]) == [4, 2, 1]
        got = await run_script(node, chromium, base, "dashboard")
    assert got["problems"] == [], got["problems"]
    s = got["steps"]

    # The settings' funnel, drawn for today: each step's count exact, with its rate and drop-off.
    first = s["settings_funnel"]
    assert first["state"] == "ready" and first["picker"] == ["Upload"] and first["picked"] == "Upload"
    assert steps(first) == [
        ("/", 4, "4", "100%", None),
        ("/p/*", 2, "2", "50%", 2),
        ("upload", 1, "1", "25%", 1),
    ]
    # Medians: a second or more between the browser's steps (real time: not pinned).
    assert first["steps"][0]["median"] is None and all(float(x["median"]) >= 1 for x in first["steps"][1:])
    assert first["rows"] == [["Upload", "/ > /p/* > goal:upload", False]]  # the settings': no Remove
    assert first["overflow_x"] <= 0

    # A one-step funnel: the API's refusal, shown as it words it; nothing added.
    refused = s["refused"]
    assert refused["error"] == "steps: a funnel has 2 to 8 steps, got 1"
    assert [r[0] for r in refused["rows"]] == ["Upload"]

    # Added through the form and picked: a, b and c saw an artwork; c went home after it.
    added = s["added"]
    assert added["picker"] == ["Upload", "Artwork first"] and added["picked"] == "Artwork first"
    assert steps(added) == [("/p/*", 3, "3", "100%", None), ("/", 1, "1", "33.3%", 2)]
    assert added["rows"] == [["Upload", "/ > /p/* > goal:upload", False], ["Artwork first", "/p/* > /", True]]
    assert added["error"] is None

    back = s["picked_back"]
    assert back["picked"] == "Upload" and steps(back) == steps(first)

    removed = s["removed"]
    assert removed["picker"] == ["Upload"] and [r[0] for r in removed["rows"]] == ["Upload"]
    assert steps(removed) == steps(first)
