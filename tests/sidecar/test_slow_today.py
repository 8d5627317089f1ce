"""A read of today slower than its 5-second freshness bound (a very busy day) is kept as long as it
took, so that such reads do not follow each other back to back; a fast one is kept 5 s at most."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from sidecar.stats_routes import StatsEndpoints
from trackside.authz import Caller
from trackside.enrich.auth import TokenVerifier
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate


async def test_a_slow_read_of_today_is_kept_as_long_as_it_took(make_settings, sqlite_url):
    await migrate(sqlite_url)
    settings = make_settings(database_url=sqlite_url)
    engine = create_engine(sqlite_url)
    stats = StatsEndpoints(settings, engine, TokenVerifier(None))
    caller = Caller(user=None, roles=frozenset(), machine=True)
    today = datetime.now(UTC).date()
    calls = 0

    async def slow(conn, now):
        nonlocal calls
        calls += 1
        await asyncio.sleep(5.5)
        return {"n": calls}

    async def fast(conn, now):
        nonlocal calls
        calls += 1
        return {"n": calls}

    try:
        days = (today - timedelta(days=1), today)
        assert await stats._cached("slow", caller, False, slow, days) == {"n": 1}
        started = time.monotonic()
        assert await stats._cached("slow", caller, False, slow, days) == {"n": 1}  # kept, not read again
        assert time.monotonic() - started < 1.0
        assert await stats._cached("fast", caller, False, fast, days) == {"n": 2}
        assert await stats._cached("fast", caller, False, fast, days) == {"n": 2}
        assert (stats.cache_hits, stats.computations) == (2, 2)
    finally:
        await stats.client.aclose()
        await engine.dispose()
