"""A read under a derivation backlog (a busy site, the deriver behind) derives a bounded round of the
queued visitor-days itself, oldest first, and says what is left in its answer instead of counting
less silently. Before, every read derived up to 3 rounds of 2,000 visitor-days a day: 2-3 s a read
with 20,000 queued, its figures short of the stored events without a word. A real sidecar with its
deriver off (`TRACKSIDE_DERIVER=off`), so that the backlog stays while the reads are made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.servers import run_sidecar
from tests.sidecar.test_stats import ADMIN, MOD, SECRET, ev
from trackside.batch import Batch
from trackside.derive import Derivation
from trackside.figures import READ_ROUND, Pending, derive_pending
from trackside.report import build_report
from trackside.settings import Settings
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.tables import DERIVE_MARKS
from trackside.storage.writes import write_batch

pytestmark = pytest.mark.timeout(120)

VISITORS = 1_150  # two page views each, today: 2,300 page views in 1,150 visitor-days


async def _store_backlog(database_url: str) -> tuple[datetime, datetime, datetime]:
    """1,150 visitors' page views of the last minutes, stored and queued, none derived: (the first
    page view's time, the times just before and after the batch was stored)."""
    await migrate(database_url)
    engine = create_engine(database_url)
    now = datetime.now(UTC)
    # Today's, even just after midnight (later than now, then: still today's figures).
    start = max(now - timedelta(minutes=20), now.replace(hour=0, minute=0, second=1, microsecond=0))
    try:
        events = [
            ev(start.timestamp() + v * 0.5 + i * 60, f"{v:032x}", path=f"/p/a{v % 7}")
            for v in range(VISITORS)
            for i in range(2)
        ]
        before = datetime.now(UTC)
        await write_batch(engine, Batch(events=events))
        after = datetime.now(UTC)
    finally:
        await engine.dispose()
    return start, before, after


def backlog_settings(make_settings: Any, upstream_url: str, database_url: str) -> Settings:
    """A sidecar whose deriver is off: the backlog stays while its reads are made."""
    return make_settings(
        frontend_url=upstream_url,
        api_url=upstream_url,
        jwt_secret=SECRET,
        admin_token=ADMIN,
        database_url=database_url,
        trust_roles_claim=True,
        deriver="off",
    )


async def _marks(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(DERIVE_MARKS))).scalar_one())
    finally:
        await engine.dispose()


async def test_each_read_derives_one_bounded_round_and_names_what_is_left(upstream_url, make_settings, database_url):
    _, stored_from, stored_to = await _store_backlog(database_url)
    settings = backlog_settings(make_settings, upstream_url, database_url)
    admin = {"authorization": "Bearer " + ADMIN}
    query = {"metrics": ["pageviews", "visitors"], "date_range": "day"}
    async with run_sidecar(settings) as (url, _), httpx.AsyncClient(base_url=url, timeout=30) as c:
        # 1st read: the 500 oldest visitor-days derived, 650 left, said in the answer's meta.
        first = (await c.post("/_trackside/api/v2/query", json=query, headers=admin)).json()
        assert first["results"] == [{"metrics": [1_000, 500], "dimensions": []}]
        pending = first["meta"]["pending"]
        assert pending["visitor_days"] == VISITORS - READ_ROUND == 650
        # The oldest left was queued when the batch was stored (one batch: every mark at once).
        assert stored_from <= datetime.fromisoformat(pending["oldest_queued_at"]) <= stored_to
        assert "not in these figures yet" in pending["meaning"]
        assert await _marks(database_url) == 650

        # 2nd read, the v1 sitewide answer (Makapix's shape): 500 more derived; 150 left, beside the figures.
        site = (await c.get("/api/admin/sitewide-stats", headers=MOD)).json()
        assert site["daily_views"][-1]["count"] == 2_000
        assert site["pending"]["visitor_days"] == 150

        # 3rd read: the last 150; nothing pending, so no `pending` at all.
        third = (await c.post("/_trackside/api/v2/query", json=query, headers=admin)).json()
        assert third["results"] == [{"metrics": [2 * VISITORS, VISITORS], "dimensions": []}]
        assert "pending" not in third["meta"]
        assert await _marks(database_url) == 0


async def test_the_terminal_report_derives_everything_queued_first(database_url):
    start, _, _ = await _store_backlog(database_url)
    engine = create_engine(database_url)
    try:
        report = await build_report(engine, start.date(), start.date(), 1800.0, Derivation())
        assert report["page_views"]["total"] == 2 * VISITORS
        assert report["unique_visitors"] == VISITORS
        assert report["pending_visitor_days"] == 0
        async with engine.connect() as conn:
            # Nothing queued: a read derives nothing and names nothing.
            assert await derive_pending(conn, start.date(), start.date(), Derivation()) == Pending()
    finally:
        await engine.dispose()
    assert await _marks(database_url) == 0
