"""The ARQ worker: persists event batches, rolls up closed days, prunes.

Run it with `trackside worker`, or arq's own CLI: `arq rollups.worker.WorkerSettings`.
Settings come from the same `TRACKSIDE_*` variables as the sidecar."""

from __future__ import annotations

import logging
from typing import Any

from arq import cron, func

from rollups.tasks import persist_batch, provisional_today, prune_old, rollup_closed_days
from trackside.queue import deserialize, redis_settings, serialize
from trackside.settings import Settings
from trackside.storage.engine import create_engine

logger = logging.getLogger("trackside.worker")

__all__ = ["WorkerSettings", "worker_options"]


def worker_options(settings: Settings) -> dict[str, Any]:
    """Everything `arq.Worker` needs, from one Settings object (tests build workers from it too)."""

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["settings"] = settings
        ctx["engine"] = create_engine(settings.database_url)
        logger.info("worker for queue %s on %s", settings.queue_name, settings.database_url.split("://")[0])

    async def shutdown(ctx: dict[str, Any]) -> None:
        await ctx["engine"].dispose()

    redis = redis_settings(settings.redis_url or "redis://127.0.0.1:6379")
    redis.conn_retries = 5  # the worker waits for Redis; only the sidecar must never wait
    return {
        # arq locks a running job for the longest timeout of all functions and crons (+10 s): a job
        # of a killed worker waits that long before another takes it. So every timeout is short;
        # a rollup cut short keeps the days it finished (one transaction each) and the next run
        # goes on from there.
        "functions": [func(persist_batch, name="persist_batch", keep_result=0, max_tries=1000, timeout=60)],
        "cron_jobs": [
            # Shortly after midnight UTC, and every half hour after that for late events.
            cron(rollup_closed_days, minute={5, 35}, unique=True, timeout=300, run_at_startup=True),
            cron(prune_old, minute={45}, unique=True, timeout=300),
            # Today's provisional figures for the stats endpoints, every five minutes.
            cron(provisional_today, minute=set(range(2, 60, 5)), unique=True, timeout=300),
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


def _settings_class() -> type:
    options = worker_options(Settings.from_env())
    return type("WorkerSettings", (), options)


WorkerSettings = _settings_class()
