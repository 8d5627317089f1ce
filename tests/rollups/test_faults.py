"""Faults on the write path: a worker SIGKILLed mid-batch, the database away under a worker, the database
away under the embedded sidecar. Each ends with an exact count: nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import DOC, POSTGRES_ADMIN_URL, wait_for
from tests.reports import report_of as report_today
from tests.rollups.redis_server import (
    RedisServer,
    count_events,
    make_batch,
    queue_pool,
    run_burst_worker,
)
from tests.servers import clean_env, free_port, run_sidecar
from trackside.queue import RedisWriter
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate

REPO = Path(__file__).resolve().parents[2]
IN_PROGRESS = "arq:in-progress:"


@pytest.mark.redis
@pytest.mark.timeout(120)
async def test_worker_killed_mid_batch_loses_nothing(make_settings, database_url, tmp_path):
    batches, size = 24, 1000
    total = batches * size
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    worker_proc: subprocess.Popen[bytes] | None = None
    settings = make_settings(
        redis_url=redis.url, queue_name=f"trackside-test:{uuid.uuid4().hex[:12]}", database_url=database_url
    )
    pool = await queue_pool(settings)
    try:
        await migrate(database_url)
        writer = RedisWriter(settings.redis_url, settings.queue_name)
        try:
            for i in range(batches):
                assert await writer.write(make_batch(size, bots=1 if i == 0 else 0)) is not None
        finally:
            await writer.close()
        assert await pool.zcard(settings.queue_name) == batches

        env = {
            **clean_env(),
            "TRACKSIDE_REDIS_URL": settings.redis_url,
            "TRACKSIDE_DATABASE_URL": database_url,
            "TRACKSIDE_QUEUE_NAME": settings.queue_name,
            "TRACKSIDE_LOG_LEVEL": "info",
        }
        # `trackside worker` starts at most max_jobs=4 batches per poll (every 0.5 s), and a batch takes
        # ~0.1 s: a SIGKILL can land between two waves with nothing in flight. Kill when jobs are in flight;
        # if the kill still missed them, restart and kill again (a worker killed idle loses nothing either).
        stored, locked = 0, []
        for attempt in range(5):
            with open(tmp_path / f"worker-{attempt}.log", "wb") as log:
                worker_proc = subprocess.Popen(
                    [sys.executable, "-m", "sidecar", "worker"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip

            async def in_flight(proc: subprocess.Popen[bytes] = worker_proc, before: int = stored) -> bool:
                assert proc.poll() is None, f"worker exited with {proc.returncode}"
                if await count_events(database_url) <= before:
                    return False
                return bool(await pool.keys(IN_PROGRESS + "batch:*"))

            await wait_for(in_flight, timeout=60)
            os.kill(worker_proc.pid, signal.SIGKILL)
            assert worker_proc.wait(timeout=10) == -signal.SIGKILL
            worker_proc = None
            stored = await count_events(database_url)
            locked = await pool.keys(IN_PROGRESS + "batch:*")
            if locked:
                break
        assert 1 <= len(locked) <= 4  # max_jobs=4
        assert size <= stored < total

        # What arq 0.28 leaves behind after a SIGKILL: the killed worker's jobs are still in the queue (a
        # job leaves it only when it finishes), each guarded by an `arq:in-progress:<job id>` key whose TTL
        # is the worker's longest function or cron timeout + 10 s: 310 s, so no other worker takes those
        # batches for five minutes.
        for key in locked:
            assert 250_000 < await pool.pttl(key) <= 310_000
            assert await pool.zscore(settings.queue_name, key[len(IN_PROGRESS) :]) is not None

        # A restarted worker drains every other batch, then spins on the locked ones (a `--burst` worker
        # would not exit before the five minutes are up).
        with pytest.raises(TimeoutError):
            await run_burst_worker(settings, timeout=30, crons=True)
        remaining = [job for job in await pool.zrange(settings.queue_name, 0, -1) if job.startswith(b"batch:")]
        assert sorted(remaining) == sorted(key[len(IN_PROGRESS) :] for key in locked)

        # The five minutes pass (simulated: the keys expire now), and a burst worker finishes the job.
        for key in locked:
            assert await pool.pexpire(key, 1)
        await asyncio.sleep(0.05)
        worker = await run_burst_worker(settings, crons=True)
        assert (worker.jobs_failed, worker.jobs_retried) == (0, 0)
        assert await pool.zcard(settings.queue_name) == 0
        assert await count_events(database_url) == total
        report = await report_today(database_url)
        assert report["page_views"]["total"] == total
        assert report["bots"] == {"Googlebot": 1}
    finally:
        if worker_proc is not None and worker_proc.poll() is None:
            os.kill(worker_proc.pid, signal.SIGKILL)
            worker_proc.wait(timeout=10)
        await pool.aclose()
        redis.close()


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_database_away_under_the_worker_retries_then_stores_once(make_settings, database_url, tmp_path):
    batches, size = 5, 200
    with RedisServer(tmp_path / "redis") as redis:
        queue = f"trackside-test:{uuid.uuid4().hex[:12]}"
        away = make_settings(
            redis_url=redis.url,
            queue_name=queue,
            database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere",
        )
        settings = make_settings(redis_url=redis.url, queue_name=queue, database_url=database_url)
        await migrate(database_url)
        writer = RedisWriter(redis.url, queue)
        try:
            for i in range(batches):
                await writer.write(make_batch(size, bots=2 if i == 0 else 0))
        finally:
            await writer.close()

        # One try of each batch against a closed port.
        worker = await run_burst_worker(away, max_burst_jobs=batches)
        assert worker.jobs_complete == 0
        assert worker.jobs_retried == batches  # persist_batch raised arq.Retry: the batch stays queued
        assert worker.jobs_failed == 0
        pool = await queue_pool(settings)
        try:
            assert await pool.zcard(queue) == batches
            retry_counts = [int(await pool.get(key)) for key in await pool.keys("arq:retry:batch:*")]
            assert retry_counts == [1] * batches
            assert await pool.keys(IN_PROGRESS + "batch:*") == []
        finally:
            await pool.aclose()
        assert await count_events(database_url) == 0

        # The database is back (a worker pointed at the real one): each batch stored once, after its 2 s defer.
        worker = await run_burst_worker(settings, timeout=30)
        assert (worker.jobs_failed, worker.jobs_retried) == (0, 0)
        assert worker.jobs_complete == batches
        assert await count_events(database_url) == batches * size
        report = await report_today(database_url)
        assert report["page_views"]["total"] == batches * size
        assert report["bots"] == {"Googlebot": 2}


async def _allow_connections(database_url: str, allow: bool) -> None:
    """PostgreSQL away for real: no new connection to the database (superusers included), and the
    existing ones terminated."""
    name = database_url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allow else "false"}')
        if not allow:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
    finally:
        await conn.close()


async def _sqlite_events_table(database_url: str, present: bool) -> None:
    """SQLite away: root ignores file permissions, so the events table is renamed away and back instead."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            if present:
                await conn.exec_driver_sql("ALTER TABLE events_away RENAME TO events")
            else:
                await conn.exec_driver_sql("ALTER TABLE events RENAME TO events_away")
    finally:
        await engine.dispose()


@pytest.mark.timeout(60)
async def test_embedded_mode_database_away_spools_and_replays(upstream_url, make_settings, database_url):
    n, m = 10, 8
    postgres = database_url.startswith("postgresql")
    settings = make_settings(frontend_url=upstream_url, api_url=upstream_url, database_url=database_url)
    spool_dir = Path(settings.spool_dir)
    async with run_sidecar(settings) as (url, app):
        async with httpx.AsyncClient(base_url=url) as c:

            async def metrics() -> dict[str, int]:
                return (await c.get("/_trackside/metrics")).json()

            for i in range(n):
                assert (await c.get(f"/p/before{i}", headers=DOC)).status_code == 200
            await wait_for(lambda: app.metrics.counts["events_written"] == n)
            assert await count_events(database_url) == n

            if postgres:
                await _allow_connections(database_url, False)
            else:
                await _sqlite_events_table(database_url, False)
            try:
                for i in range(m):
                    assert (await c.get(f"/p/during{i}", headers=DOC)).status_code == 200
                await wait_for(lambda: app.metrics.counts["events_spooled"] == m, timeout=15)
                during = await metrics()
                assert during["events_written"] == n
                assert during["spooled_batches"] >= 1
                assert during.get("batches_replayed", 0) == 0
                files = list(spool_dir.glob("spool-*.jsonl"))
                assert len(files) == 1 and files[0].stat().st_size > 0
            finally:
                if postgres:
                    await _allow_connections(database_url, True)
                else:
                    await _sqlite_events_table(database_url, True)

            async def replayed() -> bool:
                figures = await metrics()
                return figures.get("batches_replayed", 0) > 0 and figures["spooled_batches"] == 0

            await wait_for(replayed, timeout=15)
            after = await metrics()
            assert after["batches_replayed"] == during["spooled_batches"]
            assert after.get("events_dropped", 0) == 0
            assert await count_events(database_url) == n + m
    assert list(spool_dir.glob("spool-*.jsonl")) == []
    report = await report_today(database_url)
    assert report["page_views"] == {"total": n + m, "authenticated": 0, "by_label": {"/p/[post]": n + m}}
