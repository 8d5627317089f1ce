"""Scale-out mode's writer: batches become ARQ jobs on Redis (msgpack, never pickle), drained by
`trackside worker`. The job id is the batch id, so a batch enqueued twice runs once while queued,
and the worker's insert-or-ignore makes any later rerun harmless."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import msgpack
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from trackside.batch import Batch
from trackside.events import as_row

logger = logging.getLogger("trackside.queue")

PERSIST_JOB = "persist_batch"  # the worker's function, found by name (the sidecar never imports rollups)
# How long a queued batch may wait for a worker and a database (arq's default is a day, after which
# a batch still queued would be dropped as "expired"): outages of any length are waited out.
JOB_LIFETIME = timedelta(days=365)

serialize = msgpack.packb
deserialize = functools.partial(msgpack.unpackb, raw=False)


# Events packed between two yields to the event loop.
PACK_CHUNK = 256


async def pack_batch(batch: Batch, rows: Sequence[tuple[Any, ...]] | None = None) -> bytes:
    """The batch's wire form (`Batch.to_wire`) as msgpack, packed a chunk of events at a time with
    a yield in between. Packed whole, a batch of a few thousand events held the event loop, and
    every proxied request behind it, for about 2 ms. The job carries these bytes; the worker
    unpacks them (`unpack_batch`).

    `rows`: the batch's events as rows (`events.as_row`), taken straight from the buffer
    (`EventBuffer.take_rows`) with no `Event` made in between; else the batch's events are packed."""
    if rows is None:
        rows = [as_row(event) for event in batch.events]
    rest = batch.wire_without_rows()
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    packer.pack_map_header(len(rest) + 1)
    for key, value in rest.items():
        packer.pack(key)
        packer.pack(value)
    packer.pack("rows")
    packer.pack_array_header(len(rows))
    pack = packer.pack
    for first in range(0, len(rows), PACK_CHUNK):
        for row in rows[first : first + PACK_CHUNK]:
            pack(row)
        await asyncio.sleep(0)
    return packer.bytes()


def unpack_batch(wire: dict[str, Any] | bytes) -> Batch:
    """A job's batch: packed bytes (`pack_batch`), or the plain wire dict earlier versions queued."""
    return Batch.from_wire(deserialize(wire) if isinstance(wire, bytes) else wire)


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    # Fail fast: a batch that cannot be queued goes to the spool, it must not hold up the flusher.
    settings.conn_timeout = 2
    settings.conn_retries = 0
    return settings


async def queue_state(redis: ArqRedis, queue_name: str) -> dict[str, float]:
    """The queue as a scrape shows it: `queue_depth`, jobs queued (deferred retries included), and
    `queue_oldest_job_seconds`, how long the job that is due first has been due (0 when none is):
    the worker's lag. A queue's scores are the times its jobs are due, in milliseconds."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(queue_name)
        pipe.zrange(queue_name, 0, 0, withscores=True)
        depth, first = await pipe.execute()
    oldest = max(0.0, time.time() - first[0][1] / 1000) if first else 0.0
    return {"queue_depth": int(depth), "queue_oldest_job_seconds": round(oldest, 3)}


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
        return await self.write_rows(batch, None)

    async def write_rows(self, batch: Batch, rows: Sequence[tuple[Any, ...]] | None) -> Any:
        """`write`, the events given as rows (`pack_batch`): the flusher's way, which saves making an
        `Event` of each buffered row and a row of each `Event` again (about 1.5 µs an event)."""
        payload = await pack_batch(batch, rows)
        pool = await self.connect()
        return await pool.enqueue_job(PERSIST_JOB, payload, _job_id=f"batch:{batch.id}", _expires=JOB_LIFETIME)

    async def queue_depth(self) -> int:
        pool = await self.connect()
        return int(await pool.zcard(self.queue_name))

    async def queue_state(self) -> dict[str, float]:
        return await queue_state(await self.connect(), self.queue_name)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
            self.pool = None
