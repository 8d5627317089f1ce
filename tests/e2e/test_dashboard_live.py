"""The dashboard's goals (conversions and rate, added and removed from the page), a panel's CSV export and the live
view, in headless Chromium at a desktop (1280x800) and a phone (390x844) viewport on a real sidecar over SQLite and
PostgreSQL. The site is test_dashboard_query's month of known visits plus two visitors of the last 20 minutes:
- r1 (desktop Firefox/Linux, direct): `/` 20 minutes ago, `/p/a1` a minute ago;
- r2 (mobile Safari/iOS, direct): `/about` 30 s ago.
So the last 30 days have 8 visitors (a..f, r1, r2); `/p/*` was reached by a, c, f and r1 (4, 50%), the signup
by a (1, 12.5%). The live view shows 2 visitors now (page views of the last 5 minutes), and over the last 30
minutes 2 visitors, 3 page views, one on each of `/`, `/p/a1` and `/about`; then the test stores r3's `/about`
and the view shows it within one 5 s refresh, without a reload.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import helpers
from tests.e2e.test_dashboard import ADMIN, ROOT, SECRET, browser_or_skip, ev, token
from tests.e2e.test_dashboard_query import IOS, LINUX, seed
from tests.servers import run_sidecar
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.writes import write_batch

pytestmark = pytest.mark.timeout(300)

SCRIPT = helpers.E2E_DIR / "dashboard_live.mjs"


def recent(now: float) -> Batch:
    return Batch(
        events=[
            ev(now - 1200, "r1", "/", **LINUX),
            ev(now - 60, "r1", "/p/a1", **LINUX),
            ev(now - 30, "r2", "/about", **IOS),
        ]
    )


@pytest.fixture
async def site(upstream_url: str, make_settings: Any, database_url: str, tmp_path: Path):
    settings = make_settings(
        frontend_url=upstream_url,
        api_url=upstream_url,
        jwt_secret=SECRET,
        admin_token=ADMIN,
        database_url=database_url,
        trust_roles_claim=True,
    )
    await migrate(database_url)
    engine = create_engine(database_url)
    await write_batch(engine, seed(), derivation_of(settings))
    await write_batch(engine, recent(time.time()), derivation_of(settings))
    yield settings, engine
    await engine.dispose()


async def drive(node: str, chromium: str, url: str, viewport: str, on_await: Any, timeout: float = 150.0) -> dict:
    """node dashboard_live.mjs in its own process group (ended by id): answers its `await` line once `on_await()`
    has run, and returns its final JSON."""
    environ = dict(os.environ)
    environ.update(
        DASHBOARD_URL=url,
        TOKEN=token("mod1", ["user", "moderator"]),
        CHROMIUM=chromium,
        VIEWPORT=viewport,
        DASHBOARD_TIMEOUT_MS=str(int(timeout * 1000) - 5000),
    )
    if os.environ.get("TRACKSIDE_TEST_SCREENSHOTS"):
        environ["SCREENSHOT_DIR"] = os.environ["TRACKSIDE_TEST_SCREENSHOTS"]
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        cwd=helpers.E2E_DIR,
        env=environ,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

    async def talk() -> dict:
        assert proc.stdin is not None and proc.stdout is not None
        while line := await proc.stdout.readline():
            got = json.loads(line)
            if got.get("await") == "event":
                stored = await on_await()
                proc.stdin.write(f"{json.dumps(stored)}\n".encode())
                await proc.stdin.drain()
                continue
            return got
        return {}

    try:
        got, err = await asyncio.wait_for(asyncio.gather(talk(), proc.stderr.read()), timeout)
        await proc.wait()
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("dashboard_live.mjs timed out") from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # any Chromium process left in its group
        except (ProcessLookupError, PermissionError):
            pass
    assert proc.returncode == 0 and got, f"dashboard_live.mjs failed ({proc.returncode}):\n{err.decode()[-6000:]}"
    return got


@pytest.mark.browser
@pytest.mark.parametrize("viewport", ["1280x800", "390x844"], ids=["desktop", "phone"])
async def test_dashboard_goals_csv_and_live(site, viewport: str) -> None:
    settings, engine = site
    node, chromium = browser_or_skip()

    async def store_r3() -> str:
        now = time.time()
        await write_batch(engine, Batch(events=[ev(now, "r3", "/about", **IOS)]), derivation_of(settings))
        return "r3"

    async with run_sidecar(settings) as (url, _):
        got = await drive(node, chromium, url + ROOT, viewport, store_r3)
    assert got["problems"] == [], got["problems"]
    s = got["steps"]
    for name, step in s.items():
        assert step["overflow_x"] <= 0, name  # nothing scrolls sideways on a phone, the goals' form open too

    # ---- the overview: every view says as of when (UTC); the goals with conversions and rate; CSV on each panel
    first = s["overview"]
    assert first["ready"] == "overview" and len(first["asof"]) == 1
    assert first["asof"][0].startswith("as of ") and first["asof"][0].endswith(" UTC")
    assert first["tabs"] == [["overview", "page"], ["live", None]]
    assert first["goals"] == [["signup", 1, "12.5% conv."]]
    assert [g[0] for g in first["defined"]] == ["signup", "upload"]
    assert first["defined"][0] == ["signup", "event signup", "1", "12.5%", False]  # a settings goal: no Remove
    assert {"pages", "sources", "goals", "countries", "items"} <= set(first["csv_buttons"])

    # ---- a page-pattern goal added from the form: its conversions (a, c, f, r1 of 8 visitors) and rate
    added = s["goal_added"]
    assert added["goals"] == [['Saw "art"', 4, "50% conv."], ["signup", 1, "12.5% conv."]]
    assert ['Saw "art"', "page /p/*", "4", "50%", True] in added["defined"]
    assert added["goal_error"] is None
    # The API's refusals, as it words them: a taken name (409), a pattern not starting with / (400, the field).
    assert 'Saw "art"' in s["goal_duplicate"]["goal_error"]
    assert s["goal_bad"]["goal_error"].startswith("match: a page pattern starts with /")
    # An event goal named like a formula (its CSV cell gets a leading ', below), then removed.
    assert ["=cmd", "event nothing", "0", "0%", True] in s["goal_formula"]["defined"]
    assert [g[0] for g in s["formula_removed"]["defined"]] == ["signup", "upload", 'Saw "art"']
    # ---- removed: back to the settings' goals
    removed = s["goal_removed"]
    assert removed["goals"] == [["signup", 1, "12.5% conv."]] and [g[0] for g in removed["defined"]] == [
        "signup",
        "upload",
    ]

    # ---- the CSV exports: every row the query answered (a goal nobody reached too), RFC 4180 quoting, CRLF
    assert got["csv"]["name"].startswith("trackside-goals-") and got["csv"]["name"].endswith(".csv")
    assert got["csv"]["text"] == (
        'event:goal,visitors,conversion_rate\r\n"Saw ""art""",4,50\r\nsignup,1,12.5\r\n\'=cmd,0,0\r\nupload,0,0\r\n'
    )
    lines = got["csv_sources"]["text"].split("\r\n")
    assert lines[0] == "visit:source,visitors" and lines[-1] == ""
    assert sorted(lines[1:-1]) == ["Direct / None,3", "Hacker News,1", "Reddit,2", "newsletter,2"]

    item = s["item"]
    assert item["ready"] == "item" and item["asof"][0].startswith("as of ") and item["asof"][0].endswith(" UTC")

    # ---- the live view: visitors now (5 min), the last 30 minutes by page; then r3's page view, in place
    live = s["live"]
    assert live["hash"] == "#/live" and live["tabs"] == [["overview", None], ["live", "page"]]
    assert live["asof"][0].startswith("as of ") and live["asof"][0].endswith(" UTC")
    assert live["live"]["now"] == ["2", "2 page views · last 5 min"]
    assert live["live"]["visitors"][0] == "2" and live["live"]["pageviews"][0] == "3"
    assert sorted(live["live"]["pages"]) == [["/", 1, None], ["/about", 1, None], ["/p/a1", 1, None]]
    assert got["stored"] == "r3" and got["live_same_page"] is True
    assert got["live_update_ms"] <= 6500, got["live_update_ms"]
    updated = s["live_updated"]
    assert updated["live"]["now"] == ["3", "3 page views · last 5 min"]
    assert updated["live"]["visitors"][0] == "3" and updated["live"]["pageviews"][0] == "4"
    assert updated["live"]["pages"][0] == ["/about", 2, None]
    assert sorted(updated["live"]["pages"][1:]) == [["/", 1, None], ["/p/a1", 1, None]]
