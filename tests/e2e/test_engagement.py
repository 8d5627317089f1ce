"""End to end, the snippet's engagement beacon in headless Chromium: a tall page served through the sidecar with the
snippet injected, scrolled so the bottom of the viewport is at half the page, then hidden: one beacon with a scroll
depth of 50 and the time the page was visible. Shown again, scrolled to the end, hidden again and left: no second
beacon (one per page view). A second view scrolled to half and left (a real pagehide) sends its own. Each page
view's fact carries its depth and visible time.

Headless Chromium never makes a tab hidden (another tab in front, a minimized window), so the first hide is the
page's visibilitychange with visibilityState reading "hidden"; leaving a page is a real navigation."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.e2e import helpers
from tests.e2e.test_snippet import start_sidecar

pytestmark = pytest.mark.timeout(300)

JOURNEY = helpers.E2E_DIR / "engagement_journey.mjs"
# 4,000 px tall, no margins: at a 900 px viewport, half the page is seen at scrollY 1,100.
TALL = (
    "<!doctype html><html><head><title>Long read</title><style>html,body{margin:0}</style></head>"
    '<body><div style="height:4000px">A long read</div></body></html>'
)


def run_journey(page_url: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        helpers.skip_or_fail("node is not installed")
    env = {k: v for k, v in os.environ.items() if k != "PAGE_URL"}
    env.update(PAGE_URL=page_url, CHROMIUM=str(helpers.chromium_path()), USER_AGENT=helpers.CHROME_UA,
               JOURNEY_TIMEOUT_MS="60000")  # fmt: skip
    r = subprocess.run([str(node), str(JOURNEY)], cwd=helpers.E2E_DIR, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=90)  # fmt: skip
    assert r.returncode == 0, f"engagement_journey.mjs failed ({r.returncode}):\n{r.stderr[-4000:]}"
    return json.loads(r.stdout)


def rows(database_url: str, sql: str) -> list[dict[str, Any]]:
    with sqlite3.connect(database_url.split(":///", 1)[1]) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql)]


@pytest.mark.browser
def test_one_engagement_beacon_per_page_view_with_its_scroll_depth(api_server, e2e_database_url, tmp_path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "long.html").write_text(TALL)
    port = helpers.free_port()
    upstream = helpers.Proc("site", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                     "--directory", str(site)], tmp_path / "site.log")  # fmt: skip
    upstream.start(site)
    sidecar = None
    try:
        upstream.wait_http(f"http://127.0.0.1:{port}/long.html", timeout=30)
        sidecar = start_sidecar(tmp_path, f"http://127.0.0.1:{port}", api_server.url, e2e_database_url,
                                TRACKSIDE_INJECT_SNIPPET="1")  # fmt: skip
        result = run_journey(sidecar.url + "/long.html")
        # The page view's fact, once derived.
        deadline = time.monotonic() + 20
        facts: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            facts = rows(e2e_database_url, "SELECT path, scroll_depth, visible_ms FROM fact_page_views ORDER BY ts")
            if len(facts) == 2 and all(f["scroll_depth"] is not None for f in facts):
                break
            time.sleep(0.2)
    finally:
        if sidecar is not None:
            helpers.stop_sidecar(sidecar)
        upstream.stop()

    assert result["height"] == 4000
    # What the browser reports sending: a request that outlives its page (the second view's) is not reported.
    sent = [json.loads(b["body"]) for b in result["beacons"]]
    assert [b["t"] for b in sent[: result["first_view"]]] == ["pageview", "engagement"], sent
    first = sent[1]
    assert (first["p"], first["s"]) == ("/long.html", 50)
    # Visible from the snippet's start until hidden: at least the 1.8 s waited, at most until then.
    assert 1800 <= first["m"] <= result["hidden_after_ms"] + 1000, (first, result["hidden_after_ms"])
    # What the sidecar received: one engagement per page view, the second one's sent on leaving it.
    stored = rows(
        e2e_database_url, "SELECT path, status, duration_ms FROM events WHERE kind = 'engagement' ORDER BY ts"
    )
    assert [(r["path"], r["status"]) for r in stored] == [("/long.html", 50), ("/long.html", 50)]
    assert stored[0]["duration_ms"] == float(first["m"]) and 1300 <= stored[1]["duration_ms"] <= 5000
    assert facts == [
        {"path": "/long.html", "scroll_depth": 50, "visible_ms": first["m"]},
        {"path": "/long.html", "scroll_depth": 50, "visible_ms": int(stored[1]["duration_ms"])},
    ]
