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


class LiveDays:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._pool: ProcessPoolExecutor | None = None

    async def live_day(self, day: date, window_seconds: float) -> DayFigures:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _live_day, self.database_url, day, window_seconds)

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
