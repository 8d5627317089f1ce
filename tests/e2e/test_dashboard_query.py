"""The dashboard's period, comparison and filters (answered by the Query API v2), in headless Chromium at a desktop
(1280x800) and a phone (390x844) viewport, on a real sidecar over SQLite and PostgreSQL seeded with a month of known
visits. `dashboard_query.mjs` signs in from a shared link, compares, changes the period, clicks rows of the panels
into filter chips, reloads, removes the chips, and prints what the page showed after each step.

The site (days ago, UTC; each visit a minute between page views, anonymous visitors):
- 2: a, desktop Firefox/Linux in GB from reddit.com: `/`, `/p/a1`, the signup (the `signup` goal), `/p/b2` (120 s);
     b, mobile Safari/iOS in US, utm newsletter/email/dec: `/about` (a bounce);
- 3: a player's look at a1 (an API read with view type `player`): no page view, no visit;
- 4: c, desktop Chrome/Windows in DE from news.ycombinator.com: `/p/a1`, `/` (60 s);
- 10: d, desktop Firefox/Linux in GB from reddit.com: `/` (a bounce);
      e, mobile Safari/iOS in US: `/`, `/about` (60 s);
- 20: f, tablet Chrome/Android in NL, utm newsletter/email/nov: `/p/a1` (a bounce);
- 35: g, desktop Firefox/Linux in GB: `/` (a bounce): the oldest fact day.

Screenshots: TRACKSIDE_TEST_SCREENSHOTS=/some/dir writes PNGs there (docs/screenshots/ holds the committed ones).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import helpers
from tests.e2e.test_dashboard import ADMIN, ROOT, SECRET, browser_or_skip, ev, midnight, token
from tests.servers import run_sidecar
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.events import Event
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.writes import write_batch

pytestmark = pytest.mark.timeout(300)

SCRIPT = helpers.E2E_DIR / "dashboard_query.mjs"
GAP = 60


def day(days_ago: int) -> str:
    return (datetime.now(UTC).date() - timedelta(days=days_ago)).isoformat()


def visit(days_ago: int, visitor: str, paths: list[str], **kw: Any) -> list[Event]:
    start = midnight(days_ago) + 10 * 3600 + {"a": 0, "b": 600, "c": 1200, "d": 0, "e": 600}.get(visitor, 0)
    return [ev(start + i * GAP, visitor, path, **kw) for i, path in enumerate(paths)]


LINUX = dict(device="desktop", browser="Firefox", os="Linux", country="GB")
IOS = dict(device="mobile", browser="Safari", os="iOS", country="US")


def seed() -> Batch:
    events = [
        *visit(2, "a", ["/", "/p/a1", "/p/b2"], referrer="reddit.com", **LINUX),
        ev(midnight(2) + 10 * 3600 + 90, "a", "/api/auth/register", kind="api_call", nav="api", method="POST",
           status=201, event_name="signup", **LINUX),
        *visit(2, "b", ["/about"], utm_source="newsletter", utm_medium="email", utm_campaign="dec", **IOS),
        # A player's look at a1 (an API read hinted `player`): a content view, no page view, no visit.
        ev(midnight(3) + 9 * 3600, "p", "/api/p/a1", kind="api_call", nav="api", view_type="player", device="player",
           browser="Makapix-Player", os="Other", label="/api/p/[post]", content_kind="artwork", content_id="a1"),
        *visit(4, "c", ["/p/a1", "/"], referrer="news.ycombinator.com", device="desktop", browser="Chrome",
               os="Windows", country="DE"),
        *visit(10, "d", ["/"], referrer="reddit.com", **LINUX),
        *visit(10, "e", ["/", "/about"], **IOS),
        *visit(20, "f", ["/p/a1"], utm_source="newsletter", utm_medium="email", utm_campaign="nov", device="tablet",
               browser="Chrome", os="Android", country="NL"),
        *visit(35, "g", ["/"], **LINUX),
    ]  # fmt: skip
    return Batch(events=events)


async def run_script(node: str, chromium: str, url: str, viewport: str, prefix: str, timeout: float = 150.0) -> dict:
    """node dashboard_query.mjs in its own process group, ended by id; its JSON."""
    environ = dict(
        DASHBOARD_URL=url,
        TOKEN=token("mod1", ["user", "moderator"]),
        CHROMIUM=chromium,
        VIEWPORT=viewport,
        SHOT_PREFIX=prefix,
        CUSTOM_FROM=day(10),
        CUSTOM_TO=day(10),
        DASHBOARD_TIMEOUT_MS=str(int(timeout * 1000) - 5000),
    )
    return await helpers.run_browser_script(node, SCRIPT, environ, timeout)


def values(step: dict) -> dict[str, str]:
    return {k: v["value"] for k, v in step["kpis"].items()}


def deltas(step: dict) -> dict[str, str | None]:
    return {k: v["delta"] for k, v in step["kpis"].items()}


def rows(step: dict, name: str) -> list[tuple[str, int]] | dict:
    got = step["lists"][name]
    return got if isinstance(got, dict) else [(k, v) for k, v, _ in got]


@pytest.fixture
async def site_settings(upstream_url: str, make_settings: Any, database_url: str, tmp_path: Path):
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
    await write_batch(engine, seed(), derivation_of(settings))  # sources named as the settings name them
    await engine.dispose()
    return settings


@pytest.mark.browser
@pytest.mark.parametrize("viewport", ["1280x800", "390x844"], ids=["desktop", "phone"])
async def test_dashboard_periods_comparison_and_filters(site_settings, viewport: str) -> None:
    node, chromium = browser_or_skip()
    prefix = "desktop" if viewport == "1280x800" else "phone"
    async with run_sidecar(site_settings) as (url, _):
        got = await run_script(node, chromium, url + ROOT, viewport, prefix)
    assert got["problems"] == [], got["problems"]
    # The pages panel asks for time on page with every view, and nothing is refused.
    assert got["time_on_page_asked"] >= 2 and got["refused"] == 0
    s = got["steps"]
    cards = ("visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration")
    for name, step in s.items():
        assert step["ready"] == "overview" and step["overflow_x"] <= 0, name  # nothing scrolls sideways on a phone

    # ---- a shared link: the last 7 UTC days (days 6..0): a, b, c; (120 + 0 + 60) / 3 s; b bounced
    d7 = s["d7"]
    assert d7["hash"] == "#/?period=7d" and d7["period"] == "7d" and d7["compare"] is False
    assert d7["range"] == f"{day(6)}/{day(0)}" and d7["range_text"].endswith("· UTC days")
    assert values(d7) == dict(zip(cards, ["3", "3", "6", "2", "33.3%", "1m 0s"], strict=True))
    assert set(deltas(d7).values()) == {None} and d7["chips"] == [] and d7["retention"] is None
    assert d7["chart"]["views"]["keys"] == [day(n) for n in range(6, -1, -1)]
    assert d7["chart"]["views"]["values"] == [0, 0, 2, 0, 4, 0, 0] and d7["chart"]["visitors"]["values"][4] == 2
    # Visits: entry and exit pages; sources, UTM, OS.
    assert rows(d7, "pages") == [("/p/[post]", 3), ("/", 2), ("/about", 1)]
    assert rows(d7, "entry_pages") == [("/", 1), ("/about", 1), ("/p/a1", 1)]
    assert rows(d7, "exit_pages") == [("/", 1), ("/about", 1), ("/p/b2", 1)]
    assert rows(d7, "sources") == [("Hacker News", 1), ("Reddit", 1), ("newsletter", 1)]
    assert rows(d7, "referrers") == [("news.ycombinator.com", 1), ("reddit.com", 1)]
    assert rows(d7, "utm_source") == [("newsletter", 1)]
    assert rows(d7, "utm_medium") == [("email", 1)] and rows(d7, "utm_campaign") == [("dec", 1)]
    assert rows(d7, "os") == [("GNU/Linux", 1), ("Windows", 1), ("iOS", 1)]
    assert rows(d7, "devices") == [("Desktop", 2), ("Mobile", 1)]
    assert rows(d7, "browsers") == [("Chrome", 1), ("Firefox", 1), ("Safari", 1)]
    assert rows(d7, "countries") == [("DE", 1), ("GB", 1), ("US", 1)]

    # ---- compared with days 13..7 (d and e: 3 page views, one bounce in two visits, 30 s)
    c7 = s["d7_compare"]
    assert c7["hash"] == "#/?period=7d&compare=1" and c7["compare"] is True
    assert values(c7) == values(d7)
    assert deltas(c7) == dict(zip(cards, ["+50%", "+50%", "+100%", "+33%", "−16.7 pp", "+100%"], strict=True))
    assert c7["kpis"]["pageviews"]["note"] == "was 3" and c7["kpis"]["visit_duration"]["note"] == "was 30s"
    assert c7["chart"]["previous"]["dashed"] and c7["chart"]["previous"]["values"] == [0, 0, 0, 3, 0, 0, 0]

    # ---- the last 30 days (a..f) against days 59..30 (g alone)
    c30 = s["d30_compare"]
    assert c30["hash"] == "#/?period=30d&compare=1" and c30["range"] == f"{day(29)}/{day(0)}"
    assert values(c30) == dict(zip(cards, ["6", "6", "10", "1.67", "50%", "40s"], strict=True))
    assert deltas(c30) == dict(zip(cards, ["+500%", "+500%", "+900%", "+67%", "−50 pp", "new"], strict=True))
    assert len(c30["chart"]["views"]["keys"]) == 30 and sum(c30["chart"]["views"]["values"]) == 10
    assert sum(c30["chart"]["previous"]["values"]) == 1
    # The previous period (days 59..30) begins before the oldest fact day (35): said, with what it means.
    assert c30["retention"].startswith("The previous period begins before the oldest fact day: figures come")
    assert f"begin at {day(35)}" in c30["retention"] and c7["retention"] is None
    assert rows(c30, "entry_pages") == [("/", 3), ("/p/a1", 2), ("/about", 1)]
    assert rows(c30, "exit_pages") == [("/", 2), ("/about", 2), ("/p/a1", 1), ("/p/b2", 1)]
    assert rows(c30, "sources") == [("Reddit", 2), ("newsletter", 2), ("Direct / None", 1), ("Hacker News", 1)]
    assert rows(c30, "utm_campaign") == [("dec", 1), ("nov", 1)]
    assert rows(c30, "os") == [("GNU/Linux", 2), ("iOS", 2), ("Android", 1), ("Windows", 1)]

    # ---- a click on a source: a chip, the cards of a and d only (the previous period had none of Reddit)
    src = s["source"]
    assert src["chips"] == [["visit:source|Reddit", "Source", "Reddit"]]
    assert src["hash"] == "#/?period=30d&compare=1&f=visit%3Asource%7CReddit"
    assert values(src) == dict(zip(cards, ["2", "2", "4", "2", "50%", "1m 0s"], strict=True))
    assert [r[2] for r in src["lists"]["sources"]] == [True]  # the filtered row is marked
    assert rows(src, "entry_pages") == [("/", 2)] and rows(src, "utm_source") == {"empty": "No UTM-tagged visits"}

    # ---- a route label: the filters combine, and the pages panel drills down to the label's paths
    label = s["label"]
    assert [c[0] for c in label["chips"]] == ["visit:source|Reddit", "event:props:label|/p/[post]"]
    assert label["pages_sub"].startswith("paths of /p/[post]")
    assert rows(label, "pages") == [("/p/a1", 1), ("/p/b2", 1)]
    # a's visit: 2 page views of the label; visit figures are those of the visits holding one (3 views, 120 s).
    assert values(label) == dict(zip(cards, ["1", "1", "2", "3", "0%", "2m 0s"], strict=True))
    # A reload restores the whole view from the URL.
    reloaded = s["reloaded"]
    assert reloaded["hash"] == label["hash"] and reloaded["chips"] == label["chips"]
    assert values(reloaded) == values(label) and deltas(reloaded) == deltas(label)
    assert reloaded["compare"] is True and reloaded["period"] == "30d"
    assert rows(reloaded, "pages") == rows(label, "pages")
    path = s["path"]
    assert path["chips"][-1] == ["event:page|/p/b2", "Page", "/p/b2"] and values(path)["pageviews"] == "1"

    # ---- removing chips restores the figures
    assert [c[0] for c in s["no_source"]["chips"]] == ["event:props:label|/p/[post]", "event:page|/p/b2"]
    assert s["cleared"]["chips"] == [] and s["cleared"]["hash"] == "#/?period=30d&compare=1"
    assert values(s["cleared"]) == values(c30) and deltas(s["cleared"]) == deltas(c30)
    assert rows(s["cleared"], "pages") == [("/", 4), ("/p/[post]", 4), ("/about", 2)]
    # A goal as a filter: the visits that reached it (a's).
    goal = s["goal"]
    assert rows(s["cleared"], "goals") == [("signup", 1)]
    assert goal["chips"] == [["event:goal|signup", "Goal", "signup"]]
    # Visit figures of the visits holding the goal (3 page views, 120 s); page views of a site event: none.
    assert values(goal) == dict(zip(cards, ["1", "1", "0", "3", "0%", "2m 0s"], strict=True))
    assert values(s["goal_removed"]) == values(c30)
    # Looks by view type: a player's look at a1 is a filter of the looks panels; the visit figures are not filtered.
    assert rows(c30, "view_types") == [("view", 4), ("player", 1)]
    assert rows(c30, "items") == [("a1", 4), ("b2", 1)]
    player = s["player"]
    assert player["chips"] == [["event:props:view_type|player", "View type", "player"]]
    assert rows(player, "view_types") == [("player", 1)] and rows(player, "items") == [("a1", 1)]
    assert values(player) == values(c30) and player["looks_only"].startswith("View type and item filters apply")
    assert rows(s["player_removed"], "view_types") == rows(c30, "view_types")
    item_player = s["item_player"]
    assert item_player["hash"] == "#/?period=30d&f=event%3Aprops%3Acontent_id%7Ca1&f=event%3Aprops%3Aview_type%7Cplayer"
    assert rows(item_player, "items") == [("a1", 1)] and rows(item_player, "view_types") == [("player", 1)]
    # An OS row as a filter: b and e (iOS), and back.
    os_ = s["os"]
    assert os_["chips"] == [["visit:os|iOS", "OS", "iOS"]]
    assert values(os_) == dict(zip(cards, ["2", "2", "3", "1.5", "50%", "30s"], strict=True))
    assert values(s["os_removed"]) == values(c30)

    # ---- 12 months reach past the oldest fact day (g, 35 days ago): the page says so; months on the chart
    year = s["year"]
    assert year["hash"] == "#/?period=12mo&compare=1" and year["range"].endswith(day(0))
    assert year["retention"].startswith("This period begins before the oldest fact day: figures come from facts")
    assert f"which begin at {day(35)}" in year["retention"]
    assert values(year)["visitors"] == "7" and values(year)["pageviews"] == "11"
    assert len(year["chart"]["views"]["keys"]) == 12

    # ---- a custom range of one day (10 days ago: d and e), drawn hour by hour; yesterday and today are empty
    custom = s["custom"]
    assert custom["hash"] == f"#/?period=custom&from={day(10)}&to={day(10)}&compare=1"
    assert values(custom) == dict(zip(cards, ["2", "2", "3", "1.5", "50%", "30s"], strict=True))
    assert len(custom["chart"]["views"]["keys"]) == 24 and sum(custom["chart"]["views"]["values"]) == 3
    yesterday = s["yesterday"]
    assert yesterday["range"] == f"{day(1)}/{day(1)}" and values(yesterday)["pageviews"] == "0"
    assert deltas(yesterday)["pageviews"] == "−100%"  # the day before (day 2) had a and b's 4 page views
    assert s["today"]["range"] == f"{day(0)}/{day(0)}" and values(s["today"])["visits"] == "0"
    assert s["today"]["lists"]["pages"] == {"empty": "No data yet"}

    # ---- a share link (`#token=...`) signs in; the token leaves the address bar for the default view
    assert s["share_link"]["hash"] == "#/" and values(s["share_link"]) == values(c30) and got["share_link_token_kept"]
