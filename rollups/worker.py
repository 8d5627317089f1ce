"""The ARQ worker: persists event batches, rolls up closed days, prunes.

Run it with `trackside worker` (`run`: it outlives Redis and database outages of any length), or
arq's own CLI: `arq rollups.worker.WorkerSettings` (which exits when Redis goes away).
Settings come from the same `TRACKSIDE_*` variables as the sidecar."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

from arq import Worker, cron, func
from redis.exceptions import RedisError

from rollups.health import Health, health_path
from rollups.tasks import persist_batch, prune_old, rollup_closed_days
from trackside.derive import derivation_of
from trackside.deriver import Deriver
from trackside.queue import deserialize, queue_state, redis_settings, serialize
from trackside.settings import Settings
from trackside.storage.engine import create_engine
from trackside.storage.facts import derive_marked

logger = logging.getLogger("trackside.worker")

__all__ = ["WorkerSettings", "run", "worker_options"]

# Waits between two attempts to reach Redis again: doubled each time, up to the cap.
BACKOFF_FIRST = 1.0
BACKOFF_CAP = 30.0
# How often the health file is rewritten (and the queue's depth and age read).
HEARTBEAT_SECONDS = 5.0
# A job of a worker that lost Redis may still be writing to the database: it gets this long.
ABANDON_GRACE = 30.0
IN_PROGRESS = "arq:in-progress:"
# At a worker's stop, what is still queued for the deriver gets this long.
SHUTDOWN_DERIVE_SECONDS = 30.0
# Redis trouble the worker waits out; anything else is a bug, and the process exits (to be restarted).
REDIS_TROUBLE = (RedisError, OSError, ConnectionError, TimeoutError)


def worker_options(settings: Settings) -> dict[str, Any]:
    """Everything `arq.Worker` needs, from one Settings object (tests build workers from it too)."""

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["settings"] = settings
        if "engine" not in ctx:  # `run` keeps one engine across reconnections
            ctx["engine"] = create_engine(settings.database_url)
            ctx["own_engine"] = True
        if "deriver" not in ctx:  # `run` keeps one deriver across reconnections
            ctx["deriver"] = asyncio.create_task(Deriver(ctx["engine"], derivation_of(settings)).run())
        logger.info("worker for queue %s on %s", settings.queue_name, settings.database_url.split("://")[0])

    async def shutdown(ctx: dict[str, Any]) -> None:
        deriver = ctx.pop("deriver", None)
        if deriver is not None:
            deriver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deriver
            # What this worker stored is derived before it goes (a burst worker's last batches);
            # bounded, and whatever is left stays queued for the next deriver.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(derive_marked(ctx["engine"], derivation_of(settings)), SHUTDOWN_DERIVE_SECONDS)
        if ctx.get("own_engine"):
            await ctx["engine"].dispose()

    redis = redis_settings(settings.redis_url or "redis://127.0.0.1:6379")
    redis.conn_retries = 5  # arq's own CLI waits a little for Redis; `run` waits as long as it takes
    return {
        # arq locks a running job for the longest timeout of all functions and crons (+10 s): a job
        # of a killed worker waits that long before another takes it. So every timeout is short;
        # a rollup cut short keeps the days it finished (one transaction each) and the next run
        # goes on from there. A batch is retried for as long as the database is away (its tries
        # are counted, never exhausted): it fails only if it is not a batch at all.
        "functions": [func(persist_batch, name="persist_batch", keep_result=0, max_tries=2**62, timeout=60)],
        "cron_jobs": [
            # Shortly after midnight UTC, and every half hour after that for late events.
            cron(rollup_closed_days, minute={5, 35}, unique=True, timeout=300, run_at_startup=True),
            cron(prune_old, minute={45}, unique=True, timeout=300),
        ],
        # arq's default poll of 0.5 s with 4 jobs at a time caps a worker at 8 batches a second.
        "poll_delay": 0.05,
        "on_startup": startup,
        "on_shutdown": shutdown,
        "redis_settings": redis,
        "queue_name": settings.queue_name,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "keep_result": 0,
        "max_jobs": 4,
        "health_check_key": settings.queue_name + ":health-check",
    }


class _Supervisor:
    """One arq Worker after another on one engine: when Redis goes away the current worker ends,
    its jobs are given time to finish, and a new one is made once Redis answers again."""

    def __init__(self, settings: Settings, health: Health, *, burst: bool) -> None:
        self.settings = settings
        self.health = health
        self.burst = burst
        self.engine = create_engine(settings.database_url)
        self.stopping = asyncio.Event()
        self.worker: Worker | None = None
        self.abandoned: set[str] = set()  # jobs of a worker that lost Redis: their locks are ours
        self.deriver: asyncio.Task[None] | None = None

    def _options(self) -> dict[str, Any]:
        options = worker_options(self.settings)
        options["redis_settings"].conn_retries = 0  # this loop retries, with its own backoff
        startup = options["on_startup"]

        async def on_startup(ctx: dict[str, Any]) -> None:
            await startup(ctx)
            await self._release_abandoned(ctx["redis"])
            self.health.queue(await queue_state(ctx["redis"], self.settings.queue_name))
            self.health.redis_ok()

        options.update(
            on_startup=on_startup,
            on_shutdown=None,  # the engine outlives each worker; `run` disposes of it
            ctx={"engine": self.engine, "health": self.health, "deriver": self.deriver},
            handle_signals=False,
            burst=self.burst,
        )
        return options

    async def _release_abandoned(self, redis: Any) -> None:
        """The jobs a lost connection cut off are no longer running anywhere: let them be taken
        now, not when their lock expires (five minutes)."""
        if self.abandoned:
            await redis.delete(*(IN_PROGRESS + job for job in self.abandoned))
            self.abandoned.clear()

    async def run(self) -> None:
        delay = BACKOFF_FIRST
        beat = asyncio.create_task(self._beat(), name="trackside-worker-health")
        # Derivation goes on while Redis is away: it needs only the database.
        self.deriver = asyncio.create_task(
            Deriver(self.engine, derivation_of(self.settings)).run(), name="trackside-deriver"
        )
        try:
            while not self.stopping.is_set():
                self.worker = Worker(**self._options())
                main = asyncio.create_task(self.worker.main(), name="trackside-worker")
                self.worker.main_task = main  # what its handle_sig cancels on a clean stop
                stop = asyncio.create_task(self.stopping.wait())
                await asyncio.wait({main, stop}, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if not main.done():  # asked to stop
                    await self._close(main)
                    break
                error = main.exception()
                if error is None:  # a burst worker drained the queue
                    await self._close(main)
                    break
                if not isinstance(error, REDIS_TROUBLE):
                    await self._abandon()
                    raise error
                if self.health.state == "running":
                    delay = BACKOFF_FIRST
                self.health.redis_away(error, delay_cap=BACKOFF_CAP)
                await self._abandon()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                delay = min(delay * 2, BACKOFF_CAP)
            if self.burst and not self.stopping.is_set():
                # A burst worker leaves nothing queued behind it: what it stored is derived too.
                await derive_marked(self.engine, derivation_of(self.settings))
        finally:
            for task in (beat, self.deriver):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.engine.dispose()
            self.health.stopped()

    async def _close(self, main: asyncio.Task[None]) -> None:
        """A clean stop: running jobs are cancelled (arq runs them again later), the worker closed."""
        worker = self.worker
        assert worker is not None
        worker.handle_sig(signal.SIGTERM)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await main
        with contextlib.suppress(asyncio.CancelledError, *REDIS_TROUBLE):
            await asyncio.wait_for(worker.close(), ABANDON_GRACE)

    async def _abandon(self) -> None:
        """Redis is gone under this worker: its jobs may finish their database work (they are
        idempotent), then the worker's connections are dropped."""
        worker = self.worker
        if worker is None:
            return
        self.abandoned.update(worker.tasks)
        if worker.tasks:
            await asyncio.wait(list(worker.tasks.values()), timeout=ABANDON_GRACE)
            for task in worker.tasks.values():
                task.cancel()
        if worker._pool is not None:
            with contextlib.suppress(Exception):
                await worker._pool.aclose(close_connection_pool=True)
            worker._pool = None
        self.worker = None

    async def _beat(self) -> None:
        while True:
            worker = self.worker
            if worker is not None and worker._pool is not None and self.health.state == "running":
                with contextlib.suppress(Exception):
                    state = await asyncio.wait_for(queue_state(worker._pool, self.settings.queue_name), 2.0)
                    self.health.queue(state)
            self.health.write()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    def stop(self) -> None:
        self.stopping.set()


async def run(settings: Settings, *, burst: bool = False, health_file: str | Path | None = None) -> None:
    """`trackside worker`: drain the queue until SIGTERM/SIGINT (or, with `burst`, until it is
    empty), through any number of Redis and database outages."""
    health = Health(health_file or health_path(settings))
    supervisor = _Supervisor(settings, health, burst=burst)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stop)
    try:
        await supervisor.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _settings_class() -> type:
    options = worker_options(Settings.from_env())
    return type("WorkerSettings", (), options)


WorkerSettings = _settings_class()
