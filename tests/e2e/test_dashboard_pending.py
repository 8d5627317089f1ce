"""The dashboard says when its figures do not hold every stored event yet: a sidecar whose deriver is off
(`TRACKSIDE_DERIVER=off`, so the backlog stays while the page loads) over 1,150 visitor-days of today stored and
queued, none derived. Each read derives one bounded round (500) itself and names the rest (`pending`); an item's
page and then the overview show that number in a notice, as their reads answered it, in headless Chromium."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e import helpers
from tests.e2e.test_dashboard import browser_or_skip
from tests.servers import run_sidecar
from tests.sidecar.test_read_backlog import VISITORS, _store_backlog, backlog_settings
from tests.sidecar.test_stats import token  # signed with the secret backlog_settings gives the sidecar

pytestmark = pytest.mark.timeout(180)

SCRIPT = helpers.E2E_DIR / "dashboard_pending.mjs"


async def test_the_item_page_and_the_overview_name_the_visitor_days_not_derived_yet(
    upstream_url: str, make_settings: Any, database_url: str
) -> None:
    node, chromium = browser_or_skip()
    await _store_backlog(database_url)
    settings = backlog_settings(make_settings, upstream_url, database_url)
    async with run_sidecar(settings) as (url, _):
        shown = await helpers.run_browser_script(
            node,
            SCRIPT,
            {
                "DASHBOARD_URL": f"{url}/_trackside/",
                "TOKEN": token("mod1", ["user", "moderator"]),
                "CHROMIUM": chromium,
                "DASHBOARD_TIMEOUT_MS": "90000",
            },
            100.0,
        )
    assert shown["problems"] == []
    # The item's page is read first: its read derives the 500 oldest visitor-days and names the 650 left.
    item = shown["item_page"]
    assert (item["item"], item["pending"], item["role"]) == ("artwork/a1", 650, "note")
    assert item["text"].startswith("Not in these figures yet: 650 visitor-days of events stored")
    # Then the overview: the cards' query goes first, alone, derives 500 more and names the 150 left; the notice says
    # exactly what it answered (the panels' batch and the bots' sitewide read derive the rest after).
    assert shown["answered"] == [150]
    assert (shown["pending"], shown["role"]) == (150, "note")
    assert shown["text"].startswith("Not in these figures yet: 150 visitor-days of events stored")
    assert "Refresh to see them" in shown["text"]
    # The cards hold the 1,000 derived visitor-days' page views (two each) of the 2,300 stored, and their visitors.
    assert (shown["pageviews"], shown["visitors"]) == ("2,000", "1,000")
    assert VISITORS - 2 * 500 == 150
