"""Redis mode end to end: the real sidecar enqueues, the real ARQ worker persists, on SQLite and PostgreSQL.

Every test has its own redis-server on a free loopback port (never the shared 6379) and its own queue name."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import DOC, FIREFOX, GOOGLEBOT, wait_for
from tests.reports import report_of as report_today
from tests.rollups.redis_server import (
    RedisServer,
    count_events,
    make_batch,
    queue_pool,
    run_burst_worker,
)
from tests.servers import run_sidecar
from trackside.queue import PERSIST_JOB, RedisWriter
from trackside.storage.migrate import migrate

pytestmark = [pytest.mark.redis, pytest.mark.timeout(90)]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as server:
        yield server


def queue_name() -> str:
    return f"trackside-test:{uuid.uuid4().hex[:12]}"


async def queued(settings) -> int:
    pool = await queue_pool(settings)
    try:
        return int(await pool.zcard(settings.queue_name))
    finally:
        await pool.aclose()


async def test_sidecar_events_go_through_the_queue_and_are_stored_once(
    upstream_url, make_settings, database_url, redis
):
    settings = make_settings(
        frontend_url=upstream_url,
        api_url=upstream_url,
        redis_url=redis.url,
        queue_name=queue_name(),
        database_url=database_url,
    )
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url) as c:
            for i in range(20):
                assert (await c.get(f"/p/a{i % 5}", headers=DOC)).status_code == 200
            for i in range(7):
                assert (await c.get(f"/api/p/a{i}", headers={"user-agent": FIREFOX})).status_code == 200
            for _ in range(3):
                bot = {"user-agent": GOOGLEBOT, "accept": "text/html"}
                assert (await c.get("/p/a1", headers=bot)).status_code == 200
        await wait_for(lambda: app.metrics.counts["events_written"] == 27)
        assert app.metrics.counts["events_spooled"] == 0
    # The sidecar only queued: nothing is in the database until a worker runs.
    jobs = await queued(settings)
    assert jobs >= 1
    assert await count_events(database_url) == 0

    worker = await run_burst_worker(settings)
    assert (worker.jobs_failed, worker.jobs_retried) == (0, 0)
    assert worker.jobs_complete == jobs
    assert await queued(settings) == 0
    assert await count_events(database_url) == 27
    report = await report_today(database_url)
    assert report["page_views"] == {"total": 20, "authenticated": 0, "by_label": {"/p/[post]": 20}}
    assert report["api_calls"] == 7
    assert report["unique_visitors"] == 1
    assert report["bots"] == {"Googlebot": 3}

    # A second worker finds nothing to do and changes nothing.
    again = await run_burst_worker(settings)
    assert (again.jobs_failed, again.jobs_retried) == (0, 0)
    assert await count_events(database_url) == 27
    assert (await report_today(database_url))["bots"] == {"Googlebot": 3}


async def test_a_batch_delivered_twice_counts_once(make_settings, database_url, redis):
    settings = make_settings(redis_url=redis.url, queue_name=queue_name(), database_url=database_url)
    await migrate(database_url)
    batch = make_batch(100, bots=4)
    wire = batch.to_wire()
    pool = await queue_pool(settings)
    try:
        # Two deliveries of one batch under different job ids (a replayed spool after a lost reply, say).
        assert await pool.enqueue_job(PERSIST_JOB, wire, _job_id="delivery-1") is not None
        assert await pool.enqueue_job(PERSIST_JOB, wire, _job_id="delivery-2") is not None
        # The sidecar's writer uses the batch id as the job id: while queued, a second enqueue is refused.
        writer = RedisWriter(settings.redis_url, settings.queue_name)
        try:
            assert await writer.write(batch) is not None
            assert await writer.write(batch) is None
            assert await writer.queue_depth() == 3
        finally:
            await writer.close()

        worker = await run_burst_worker(settings)
        assert (worker.jobs_failed, worker.jobs_retried) == (0, 0)
        assert worker.jobs_complete == 3
        assert await count_events(database_url) == 100
        report = await report_today(database_url)
        assert report["page_views"]["total"] == 100
        assert report["bots"] == {"Googlebot": 4}

        # A late redelivery, after the job finished (keep_result=0 leaves no trace that would refuse it).
        assert await pool.enqueue_job(PERSIST_JOB, wire, _job_id=f"batch:{batch.id}") is not None
        late = await run_burst_worker(settings)
        assert (late.jobs_failed, late.jobs_retried) == (0, 0)
        assert await count_events(database_url) == 100
        report = await report_today(database_url)
        assert report["page_views"]["total"] == 100
        assert report["bots"] == {"Googlebot": 4}
    finally:
        await pool.aclose()


@pytest.mark.parametrize("durable", [False, True], ids=["redis-no-persistence", "redis-appendfsync-always"])
async def test_redis_killed_under_traffic_spools_and_replays(
    upstream_url, make_settings, database_url, tmp_path, durable
):
    """N page views, Redis SIGKILLed, M more (the site answers every one), Redis back on the same port:
    the spool is replayed and exactly N+M page views are stored.

    Without persistence a Redis crash loses whatever was queued and not yet drained, so there the first
    N are drained by a worker before the crash; with `appendfsync always` they stay queued across it."""
    n, m = 12, 9
    redis = RedisServer(tmp_path / "redis", durable=durable)
    redis.start()
    try:
        settings = make_settings(
            frontend_url=upstream_url,
            api_url=upstream_url,
            redis_url=redis.url,
            queue_name=queue_name(),
            database_url=database_url,
        )
        spool_dir = Path(settings.spool_dir)
        async with run_sidecar(settings) as (url, app):
            async with httpx.AsyncClient(base_url=url) as c:

                async def metrics() -> dict[str, int]:
                    return (await c.get("/_trackside/metrics")).json()

                for i in range(n):
                    assert (await c.get(f"/p/before{i}", headers=DOC)).status_code == 200
                await wait_for(lambda: app.metrics.counts["events_written"] == n)
                if not durable:
                    await run_burst_worker(settings)
                    assert await count_events(database_url) == n

                redis.kill()
                for i in range(m):
                    assert (await c.get(f"/p/during{i}", headers=DOC)).status_code == 200
                await wait_for(lambda: app.metrics.counts["events_spooled"] == m)
                during = await metrics()
                assert during["events_spooled"] == m
                assert during["events_written"] == n
                assert during["spooled_batches"] >= 1
                assert during.get("batches_replayed", 0) == 0
                spool_files = list(spool_dir.glob("spool-*.jsonl"))
                assert len(spool_files) == 1
                assert spool_files[0].stat().st_size > 0

                redis.start()  # the same port

                async def replayed() -> bool:
                    figures = await metrics()
                    return figures.get("batches_replayed", 0) > 0 and figures["spooled_batches"] == 0

                await wait_for(replayed, timeout=15)
                after = await metrics()
                assert after["batches_replayed"] == during["spooled_batches"]
                assert after.get("events_dropped", 0) == 0
        worker = await run_burst_worker(settings)
        assert (worker.jobs_failed, worker.jobs_retried) == (0, 0)
        assert await queued(settings) == 0
        assert await count_events(database_url) == n + m
        report = await report_today(database_url)
        assert report["page_views"]["total"] == n + m
        assert report["page_views"]["by_label"] == {"/p/[post]": n + m}
        # The sidecar's spool file is gone once replayed and the process stopped.
        assert list(spool_dir.glob("spool-*.jsonl")) == []
    finally:
        redis.close()


async def test_redis_away_at_start_is_named_then_its_events_arrive(
    upstream_url, make_settings, database_url, tmp_path, caplog
):
    """A sidecar started while its Redis does not answer (a wrong URL, Redis still starting) says so
    at once, naming the setting; it serves the site and spools, and once Redis answers on that URL
    every event reaches the database."""
    redis = RedisServer(tmp_path / "redis")  # its port chosen, not started yet
    try:
        settings = make_settings(
            frontend_url=upstream_url,
            api_url=upstream_url,
            redis_url=redis.url,
            queue_name=queue_name(),
            database_url=database_url,
        )
        with caplog.at_level("WARNING", logger="trackside.pipeline"):
            async with run_sidecar(settings) as (url, app):
                await wait_for(lambda: any("does not answer" in r.getMessage() for r in caplog.records))
                async with httpx.AsyncClient(base_url=url) as c:
                    for i in range(5):
                        assert (await c.get(f"/p/early{i}", headers=DOC)).status_code == 200
                    await wait_for(lambda: app.metrics.counts["events_spooled"] == 5)
                    redis.start()  # now it answers, on the same port
                    await wait_for(lambda: app.metrics.counts.get("batches_replayed", 0) > 0, timeout=15)
        warnings = [r.getMessage() for r in caplog.records if r.name == "trackside.pipeline"]
        said = [w for w in warnings if "does not answer" in w]
        assert len(said) == 1
        assert said[0].startswith(f"Redis at {redis.url} does not answer (ConnectionError: ")
        assert said[0].endswith(f"events are spooled to {settings.spool_dir} until it does (TRACKSIDE_REDIS_URL)")
        await run_burst_worker(settings)
        assert await count_events(database_url) == 5
    finally:
        redis.close()
