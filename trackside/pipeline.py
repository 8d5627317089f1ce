"""The capture pipeline, assembled once for both entry points (the sidecar and the in-process
middleware): capturer -> bounded buffer -> flusher -> writer (database or Redis), with the spool
between them and the daily salts kept fresh beside them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from trackside.buffer import EventBuffer, Flusher
from trackside.capture import Capturer
from trackside.derive import derivation_of
from trackside.deriver import DeriverProcess
from trackside.ledger import Ledger
from trackside.metrics import Metrics
from trackside.queue import RedisWriter
from trackside.rollup import prune, rollup_pending
from trackside.settings import Settings, redacted
from trackside.spool import Spool
from trackside.storage.engine import create_engine
from trackside.storage.salts import DatabaseSalts
from trackside.storage.writer_thread import WriterThread

logger = logging.getLogger("trackside.pipeline")

SALT_REFRESH_SECONDS = 60.0
# Embedded mode's schedule: how often closed days are rolled up and old data pruned.
SCHEDULE_SECONDS = 600.0


class Pipeline:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.engine = create_engine(settings.database_url)
        self.salts = DatabaseSalts(self.engine)
        self.buffer = EventBuffer(settings.buffer_size, self.metrics)  # the ledger is opened at start
        self.spool = Spool(settings.spool_dir)
        self.writer: WriterThread | RedisWriter
        if settings.redis_url is None:
            self.writer = WriterThread(settings.database_url, derivation_of(settings))
        else:
            self.writer = RedisWriter(settings.redis_url, settings.queue_name)
        self.flusher = Flusher(
            self.buffer, self.writer, self.spool, self.metrics, settings.flush_interval, settings.flush_batch
        )
        self.capturer = Capturer(settings, self.buffer, self.salts, self.metrics)
        self.flusher.recorder = self.capturer
        self._tasks: list[asyncio.Task[None]] = []
        self.deriver: DeriverProcess | None = None

    async def start(self, *, migrate_schema: bool) -> None:
        if migrate_schema:
            from trackside.storage.migrate import migrate  # alembic is heavy: import it only to use it

            await migrate(self.settings.database_url)
        # The processes of one `trackside serve` share a run (their counters are added up).
        ledger = self.buffer.ledger = Ledger(self.settings.spool_dir, run=self.metrics.shared_dir)
        found = ledger.absorb()
        if found.lost:
            logger.warning("a process killed before it could flush lost %d captured events", found.lost)
            self.metrics.inc("events_lost_unclean_shutdown", found.lost)
        if found.dropped:
            logger.warning("events dropped before this start (buffer full or spool unwritable): %d", found.dropped)
            self.metrics.inc("events_dropped", found.dropped)
        orphaned = self.spool.orphaned()
        if orphaned:
            logger.warning("found %d spooled batches from an earlier process: replaying them", orphaned)
            self.metrics.inc("batches_found_in_spool", orphaned)
        try:
            await self.salts.refresh()
        except Exception as exc:  # the site is served anyway; the refresher retries every minute
            logger.warning("cannot load the daily salts yet (%s)", type(exc).__name__)
        self.flusher.start()
        self.capturer.waiting = self.buffer  # from now on requests are recorded in batches by the flusher
        if self.settings.redis_url is None and self.settings.deriver != "off":
            self._start_deriver()
        self._tasks.append(asyncio.create_task(self._keep_salts(), name="trackside-salts"))
        if isinstance(self.writer, RedisWriter):
            self._tasks.append(asyncio.create_task(self._check_redis(self.writer), name="trackside-redis-check"))
        if self.settings.redis_url is None:
            # Embedded mode runs the worker's schedule in process (in Redis mode the workers' cron does).
            self._tasks.append(asyncio.create_task(self._schedule(), name="trackside-schedule"))

    async def _check_redis(self, writer: RedisWriter) -> None:
        """Say at start-up, not at the first request, that Redis does not answer (a wrong
        TRACKSIDE_REDIS_URL, Redis down): the site is served all the same, and events wait in the
        spool until it answers."""
        try:
            await (await writer.connect()).ping()
        except Exception as exc:
            logger.warning(
                "Redis at %s does not answer (%s: %s): events are spooled to %s until it does (TRACKSIDE_REDIS_URL)",
                redacted(writer.url),
                type(exc).__name__,
                exc,
                self.settings.spool_dir,
            )

    def _start_deriver(self) -> None:
        """Embedded mode derives the stored events into facts itself: in a child process at a
        lower priority (`process`, the default), or in this process's writer thread (`thread`)."""
        if self.settings.deriver == "thread":
            assert isinstance(self.writer, WriterThread)
            self.writer.derive_too()
        else:
            self.deriver = DeriverProcess(self.settings)
            self.deriver.start()

    async def _keep_salts(self) -> None:
        while True:
            await asyncio.sleep(SALT_REFRESH_SECONDS)
            try:
                await self.salts.refresh()
                await self.salts.prune()
            except Exception as exc:
                logger.warning("salt refresh failed (%s); retrying in a minute", type(exc).__name__)

    async def _schedule(self) -> None:
        window = self.settings.view_window_minutes * 60.0
        while True:
            try:
                await rollup_pending(self.engine, window, derivation=derivation_of(self.settings))
                await prune(
                    self.engine,
                    self.settings.raw_retention_days,
                    self.settings.daily_retention_days,
                    fact_retention_days=self.settings.fact_retention_days,
                )
            except Exception:
                logger.exception("scheduled rollup failed; retrying in %ss", SCHEDULE_SECONDS)
            await asyncio.sleep(SCHEDULE_SECONDS)

    async def stop(self) -> None:
        self.capturer.waiting = None
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flusher.stop()
        await self.writer.close()
        if self.deriver is not None:
            await self.deriver.stop()
        self.capturer.countries.close()
        await self.engine.dispose()
