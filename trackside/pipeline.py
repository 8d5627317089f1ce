"""The capture pipeline, assembled once for both entry points (the sidecar and the in-process
middleware): capturer -> bounded buffer -> flusher -> writer (database or Redis), with the spool
between them and the daily salts kept fresh beside them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from trackside.buffer import EventBuffer, Flusher
from trackside.capture import Capturer
from trackside.metrics import Metrics
from trackside.settings import Settings
from trackside.spool import Spool
from trackside.storage.engine import create_engine
from trackside.storage.salts import DatabaseSalts
from trackside.storage.writes import DatabaseWriter

logger = logging.getLogger("trackside.pipeline")

SALT_REFRESH_SECONDS = 60.0


class Pipeline:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.engine = create_engine(settings.database_url)
        self.salts = DatabaseSalts(self.engine)
        self.buffer = EventBuffer(settings.buffer_size, self.metrics)
        self.spool = Spool(settings.spool_dir)
        self.writer = DatabaseWriter(self.engine)
        self.flusher = Flusher(
            self.buffer, self.writer, self.spool, self.metrics, settings.flush_interval, settings.flush_batch
        )
        self.capturer = Capturer(settings, self.buffer, self.salts, self.metrics)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *, migrate_schema: bool) -> None:
        if migrate_schema:
            from trackside.storage.migrate import migrate  # alembic is heavy: import it only to use it

            await migrate(self.settings.database_url)
        orphaned = self.spool.orphaned()
        if orphaned:
            logger.warning("found %d spooled batches from an earlier process: replaying them", orphaned)
            self.metrics.inc("batches_found_in_spool", orphaned)
        try:
            await self.salts.refresh()
        except Exception as exc:  # the site is served anyway; the refresher retries every minute
            logger.warning("cannot load the daily salts yet (%s)", type(exc).__name__)
        self.flusher.start()
        self._tasks.append(asyncio.create_task(self._keep_salts(), name="trackside-salts"))

    async def _keep_salts(self) -> None:
        while True:
            await asyncio.sleep(SALT_REFRESH_SECONDS)
            try:
                await self.salts.refresh()
                await self.salts.prune()
            except Exception as exc:
                logger.warning("salt refresh failed (%s); retrying in a minute", type(exc).__name__)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flusher.stop()
        self.capturer.countries.close()
        await self.engine.dispose()
