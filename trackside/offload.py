"""Heavy reads off the event loop: today's figures derived from raw events run in a separate
process, so a sitewide stats request on a busy day never stalls the proxy that shares the loop.

(A thread would not do: deriving views is Python code that holds the GIL. One process, spawned on
first use and kept; it opens its own database connection for each read.)"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from datetime import date

from trackside.figures import DayFigures, live_day
from trackside.storage.engine import create_engine

# Several reads within this many seconds share one computation of today (the stats cache keeps
# endpoint answers five minutes; the query API and the dashboard ask for today many times).
REUSE_SECONDS = 30.0


class LiveDays:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._pool: ProcessPoolExecutor | None = None
        self._recent: dict[tuple[date, float], tuple[float, asyncio.Future[DayFigures]]] = {}

    async def live_day(self, day: date, window_seconds: float, *, fresh: bool = False) -> DayFigures:
        """Today's figures, computed in the other process; concurrent and recent callers share one
        (unless `fresh`: an explicit refresh computes anew)."""
        loop = asyncio.get_running_loop()
        key = (day, window_seconds)
        hit = self._recent.get(key)
        if not fresh and hit is not None and hit[0] > loop.time() and not (hit[1].done() and hit[1].exception()):
            return await asyncio.shield(hit[1])
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        future = asyncio.ensure_future(
            loop.run_in_executor(self._pool, _live_day, self.database_url, day, window_seconds)
        )
        self._recent = {k: v for k, v in self._recent.items() if v[0] > loop.time()}
        # Shared while it runs (a busy day takes longer than the window), then for the window.
        self._recent[key] = (float("inf"), future)

        def finished(done: asyncio.Future[DayFigures]) -> None:
            if self._recent.get(key, (0.0, None))[1] is done:
                self._recent[key] = (loop.time() + REUSE_SECONDS, done)

        future.add_done_callback(finished)
        return await asyncio.shield(future)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _live_day(database_url: str, day: date, window_seconds: float) -> DayFigures:
    async def run() -> DayFigures:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                return await live_day(conn, day, window_seconds)
        finally:
            await engine.dispose()

    return asyncio.run(run())
