"""The dashboard by keyboard and by touch, on a phone, in light and dark; and an expired token's way back to the
sign-in form. Headless Chromium (`dashboard_touch.mjs`) on a real sidecar over SQLite and PostgreSQL, seeded with
`test_dashboard_query.py`'s month of known visits and, for the 24-hour chart, two page views of visitor h a minute
or two ago.

- keyboard (1280x800): Tab reaches the period chart on its latest day (one tab stop per chart), the tooltip shows
  the day's exact figures and the point is named with them (aria-label); arrows, Home and End move, Escape hides,
  an arrow key shows it again (on the same point); Tab moves on to the 24-hour bar chart (the line chart's
  tooltip goes), Shift+Tab back;
- touch (390x844, hasTouch and isMobile, light and dark): a tap on a day shows its tooltip, a tap on another
  moves it, a tap elsewhere hides it; a tap on a bar too; nothing scrolls sideways
  (`scrollingElement.scrollWidth <= innerWidth`), the top bar is two clean rows inside the screen, every panel
  card is in one column; the dark scheme's colours are the dark ones;
- expired: a share link `#token=<expired share token>` and an expired sign-in kept in the tab (a JWT whose `exp`
  has passed) each land on the sign-in form, which says the token expired.

Screenshots: TRACKSIDE_TEST_SCREENSHOTS=/some/dir writes PNGs there (docs/screenshots/ holds the committed ones).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import jwt
import pytest

from tests.e2e import helpers
from tests.e2e.test_dashboard import ADMIN, ROOT, SECRET, browser_or_skip, ev, token
from tests.e2e.test_dashboard_query import seed
from tests.servers import run_sidecar
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.share_tokens import SHARE_TOKENS, create_share
from trackside.storage.engine import create_engine
from trackside.storage.facts import derive_marked
from trackside.storage.migrate import migrate
from trackside.storage.writes import write_batch

pytestmark = pytest.mark.timeout(300)

SCRIPT = helpers.E2E_DIR / "dashboard_touch.mjs"
LIGHT_BG, DARK_BG = "rgb(245, 246, 248)", "rgb(13, 16, 21)"  # style.css: --bg
LIGHT_PANEL, DARK_PANEL = "rgb(255, 255, 255)", "rgb(21, 25, 32)"  # --panel


def day(days_ago: int) -> date:
    return datetime.now(UTC).date() - timedelta(days=days_ago)


def long_day(d: date) -> str:
    """The page's long day (Intl 'en', weekday short, month short): "Wed, Dec 2, 2026"."""
    return f"{d:%a}, {d:%b} {d.day}, {d.year}"


def hour_key(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:00:00+00:00")


def hour_range(key: str) -> str:
    start = datetime.fromisoformat(key)
    return f"{start:%H}:00–{start + timedelta(hours=1):%H}:00 UTC"


# (days ago) -> (page views, visitors) of test_dashboard_query.seed()
SEEDED = {2: (4, 2), 4: (2, 1), 10: (3, 2), 20: (1, 1)}


@pytest.fixture
async def touch_site(upstream_url: str, make_settings: Any, database_url: str) -> tuple[Any, dict[str, Any]]:
    settings = make_settings(
        frontend_url=upstream_url,
        api_url=upstream_url,
        jwt_secret=SECRET,
        admin_token=ADMIN,
        database_url=database_url,
        trust_roles_claim=True,
    )
    now = time.time()
    recent = [now - 100, now - 95]  # visitor h: two page views a moment ago, for the 24-hour chart
    events = seed().events + [ev(ts, "h", "/about", country="FR") for ts in recent]
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        derivation = derivation_of(settings)
        await write_batch(engine, Batch(events=events), derivation)
        await derive_marked(engine, derivation)  # the facts (the deriver's part, when ingest only queues them)
        _, expired_share = await create_share(engine, "board", timedelta(days=1))
        async with engine.begin() as conn:  # it expired an hour ago
            await conn.execute(
                SHARE_TOKENS.update()
                .where(SHARE_TOKENS.c.label == "board")
                .values(expires_at=datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(hours=1))
            )
    finally:
        await engine.dispose()
    h_days = [datetime.fromtimestamp(ts, UTC).date() for ts in recent]
    hours: dict[str, int] = {}
    for ts in recent:
        hours[hour_key(ts)] = hours.get(hour_key(ts), 0) + 1
    return settings, {"expired_share": expired_share, "h_days": h_days, "hours": hours}


def per_day(days_ago: int, h_days: list[date]) -> tuple[int, int]:
    views, visitors = SEEDED.get(days_ago, (0, 0))
    h = sum(1 for d in h_days if d == day(days_ago))
    return views + h, visitors + (1 if h else 0)


def tip(days_ago: int, h_days: list[date]) -> tuple[str, list[list[str]]]:
    views, visitors = per_day(days_ago, h_days)
    return long_day(day(days_ago)), [["Page views", str(views)], ["Visitors", str(visitors)]]


async def run_script(mode: str, url: str, viewport: str, scheme: str = "light", timeout: float = 120.0, **env: str):
    node, chromium = browser_or_skip()
    environ = dict(
        DASHBOARD_URL=url,
        TOKEN=token("mod1", ["user", "moderator"]),
        MODE=mode,
        VIEWPORT=viewport,
        COLOR_SCHEME=scheme,
        CHROMIUM=chromium,
        SHOT_PREFIX="desktop" if viewport == "1280x800" else f"phone-{scheme}",
        DASHBOARD_TIMEOUT_MS=str(int(timeout * 1000) - 5000),
        **env,
    )
    got = await helpers.run_browser_script(node, SCRIPT, environ, timeout)
    assert got["problems"] == [], got["problems"]
    return got


def shown(step: dict) -> tuple[str, list[list[str]]]:
    assert step["tip_shown"], json.dumps(step)
    return step["tip_title"], step["tip_rows"]


@pytest.mark.browser
async def test_chart_tooltips_by_keyboard(touch_site) -> None:
    settings, site = touch_site
    h_days = site["h_days"]
    async with run_sidecar(settings) as (url, _):
        got = await run_script("keyboard", url + ROOT, "1280x800")
    s = got["steps"]
    focus = s["period_focus"]
    # One tab stop per chart, every point named; the chart is a group (an img would hide its points).
    assert focus["tab_stops"] == 1 and focus["hits"] == 30 and focus["labelled"] and focus["root_role"] == "group"
    # Tab lands on the latest day, and its tooltip shows the day's exact figures; the point is named with them.
    assert shown(focus) == tip(0, h_days)
    views, visitors = per_day(0, h_days)
    assert focus["focused"] == {"key": day(0).isoformat(), "role": "img", "focus_visible": True,
                                "label": f"{long_day(day(0))}: Page views {views}, Visitors {visitors}"}  # fmt: skip
    # Two days back: a's and b's visits.
    left2 = s["period_left2"]
    assert shown(left2) == (long_day(day(2)), [["Page views", "4"], ["Visitors", "2"]])
    assert left2["focused"]["key"] == day(2).isoformat()
    assert left2["focused"]["label"] == f"{long_day(day(2))}: Page views 4, Visitors 2"
    assert left2["tab_stops"] == 1  # the roving tab stop followed
    assert shown(s["period_home"]) == tip(29, h_days) and s["period_home"]["focused"]["key"] == day(29).isoformat()
    assert shown(s["period_end"]) == tip(0, h_days)
    # Escape hides the tooltip, the focus stays; an arrow key shows it again, where it was.
    escaped = s["period_escape"]
    assert not escaped["tip_shown"] and escaped["focused"]["key"] == day(0).isoformat()
    assert shown(s["period_after_escape"]) == tip(0, h_days)
    # Tab moves on to the 24-hour chart (its latest hour), and the line chart's tooltip goes.
    hourly = s["hourly_focus"]
    assert hourly["tab_stops"] == 1 and hourly["hits"] == 24 and hourly["labelled"]
    assert hourly["focused"]["key"] == hourly["bars"][-1][0] and hourly["tip_shown"]
    assert not got["period_after_tab"]["tip_shown"]
    # The hour with visitor h's page views: exact figures in the tooltip and in the bar's name.
    busy = s["hourly_busy"]
    key = busy["focused"]["key"]
    assert site["hours"].get(key), (key, site["hours"])
    n = str(site["hours"][key])
    assert shown(busy) == (hour_range(key), [["Page views", n], ["Unique visitors", "1"]])
    assert busy["focused"]["label"] == f"{hour_range(key)}: Page views {n}, Unique visitors 1"
    assert dict(busy["bars"])[key] == site["hours"][key]
    # Shift+Tab goes back to the period chart, on the day it was left on.
    back = s["back_to_period"]
    assert back["focused"]["key"] == day(0).isoformat() and shown(back) == tip(0, h_days)


@pytest.mark.browser
@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_chart_tooltips_by_touch_on_a_phone(touch_site, scheme: str) -> None:
    settings, site = touch_site
    h_days = site["h_days"]
    async with run_sidecar(settings) as (url, _):
        got = await run_script("touch", url + ROOT, "390x844", scheme,
                               TAP_KEYS=json.dumps([day(2).isoformat(), day(10).isoformat()]))  # fmt: skip
    s = got["steps"]
    assert shown(s["tap_first"]) == tip(2, h_days)
    assert shown(s["tap_second"]) == (long_day(day(10)), [["Page views", "3"], ["Visitors", "2"]])
    assert not s["tap_elsewhere"]["tip_shown"]
    bar = s["tap_bar"]
    key = max(site["hours"], key=lambda k: site["hours"][k])
    n = str(site["hours"][key])
    assert shown(bar) == (hour_range(key), [["Page views", n], ["Unique visitors", "1"]])
    assert not got["period_after_bar"]["tip_shown"]  # one tooltip at a time
    assert not s["bar_elsewhere"]["tip_shown"]
    for layout in (got["layout"], got["layout_after"]):
        assert layout["inner_width"] == 390 and layout["overflow_x"] <= 0, layout  # nothing scrolls sideways
        # The top bar: the brand and the views, then the visitors toggle, Refresh and Sign out; all on screen.
        assert layout["topbar_rows"] == 2 and layout["topbar_outside"] == [], layout
        assert layout["topbar_row_of"] == {"brand": 0, "tabs": 0, "segmented": 1, "refresh": 1, "signout": 1}
        assert layout["cards"] >= 17 and layout["cards_off_column"] == [], layout  # one column
        assert layout["color_scheme"] == scheme
        assert (layout["body_background"], layout["card_background"]) == (
            (DARK_BG, DARK_PANEL) if scheme == "dark" else (LIGHT_BG, LIGHT_PANEL)
        )
    assert bar["tip_background"] == (DARK_PANEL if scheme == "dark" else LIGHT_PANEL)


@pytest.mark.browser
async def test_an_expired_token_returns_to_sign_in_saying_so(touch_site) -> None:
    settings, site = touch_site
    past = int(time.time()) - 7200
    expired_jwt = jwt.encode({"sub": "mod2", "roles": ["user", "moderator"], "exp": past}, SECRET, algorithm="HS256")
    async with run_sidecar(settings) as (url, _):
        got = await run_script("expired", url + ROOT, "390x844", EXPIRED_SHARE=site["expired_share"],
                               EXPIRED_JWT=expired_jwt)  # fmt: skip
    share = got["share"]
    assert share["error"] == (
        "This share link has expired (401: the share token expired). Ask for a new link, or sign in with a "
        "moderator’s token."
    )
    assert share["hash"] == "#/" and share["stored"] is None and share["topbar_hidden"]
    when = datetime.fromtimestamp(past, UTC)
    assert got["jwt"]["error"] == (
        f"Your sign-in token expired on {when:%b} {when.day}, {when.year}, {when:%H:%M} UTC "
        "(401: the token does not verify). Sign in again with a fresh token."
    )
    assert got["jwt"]["hash"] == "#/?period=7d" and got["jwt"]["stored"] is None
    assert got["signed_in_again"] == "#/?period=7d"
