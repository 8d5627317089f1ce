"""Scale-out mode's writer: batches become ARQ jobs on Redis (msgpack, never pickle), drained by
`trackside worker`. The job id is the batch id, so a batch enqueued twice runs once while queued,
and the worker's insert-or-ignore makes any later rerun harmless."""

from __future__ import annotations

import functools
import logging
from typing import Any

import msgpack
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from trackside.batch import Batch

logger = logging.getLogger("trackside.queue")

PERSIST_JOB = "persist_batch"  # the worker's function, found by name (the sidecar never imports rollups)

serialize = msgpack.packb
deserialize = functools.partial(msgpack.unpackb, raw=False)


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    # Fail fast: a batch that cannot be queued goes to the spool, it must not hold up the flusher.
    settings.conn_timeout = 2
    settings.conn_retries = 0
    return settings


class RedisWriter:
    def __init__(self, url: str, queue_name: str) -> None:
        self.url = url
        self.queue_name = queue_name
        self.pool: ArqRedis | None = None

    async def connect(self) -> ArqRedis:
        if self.pool is None:
            self.pool = await create_pool(
                redis_settings(self.url),
                job_serializer=serialize,
                job_deserializer=deserialize,
                default_queue_name=self.queue_name,
            )
        return self.pool

    async def write(self, batch: Batch) -> Any:
        if batch.rows is None:
            await batch.make_rows()
        pool = await self.connect()
        return await pool.enqueue_job(PERSIST_JOB, batch.to_wire(), _job_id=f"batch:{batch.id}")

    async def queue_depth(self) -> int:
        pool = await self.connect()
        return int(await pool.zcard(self.queue_name))

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
            self.pool = None
