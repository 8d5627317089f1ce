"""`trackside worker` outlives its Redis and its database: real processes throughout (a sidecar in
Redis mode, the worker, a private redis-server stopped and started again on the same port), no
process restarted by hand, every page view stored exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import DOC, wait_for
from tests.reports import report_of as report_today
from tests.rollups.redis_server import RedisServer, count_events, make_batch
from tests.rollups.test_faults import _allow_connections, _sqlite_events_table
from tests.servers import clean_env, free_port
from trackside.queue import RedisWriter
from trackside.storage.migrate import migrate

REPO = Path(__file__).resolve().parents[2]
# arq's own reconnection window: 5 retries a second apart (+ a 2 s connect timeout each, at most).
ARQ_RETRY_WINDOW = 5 * (1 + 2)


def _env(redis_url: str, database_url: str, spool: Path, queue: str, **extra: str) -> dict[str, str]:
    return {
        **clean_env(),
        "TRACKSIDE_REDIS_URL": redis_url,
        "TRACKSIDE_DATABASE_URL": database_url,
        "TRACKSIDE_QUEUE_NAME": queue,
        "TRACKSIDE_SPOOL_DIR": str(spool),
        "TRACKSIDE_LOG_LEVEL": "info",
        **extra,
    }


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "sidecar", *argv], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _end(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _health(spool: Path) -> dict[str, object]:
    try:
        return json.loads((spool / "worker-health.json").read_text())
    except (OSError, ValueError):
        return {}


def _check(env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "worker", "--check"], cwd=REPO, env=env, capture_output=True, timeout=30
    )
    return done.returncode, (done.stdout + done.stderr).decode()


@pytest.mark.redis
@pytest.mark.timeout(180)
async def test_a_journey_while_redis_is_down_is_stored_once_with_no_restart(upstream_url, database_url, tmp_path):
    before, during = 6, 15
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    await migrate(database_url)
    queue = f"trackside-test:{uuid.uuid4().hex[:12]}"
    worker_spool, sidecar_spool = tmp_path / "worker", tmp_path / "sidecar"
    worker_env = _env(redis.url, database_url, worker_spool, queue)
    port = free_port()
    sidecar_env = _env(
        redis.url, database_url, sidecar_spool, queue,
        TRACKSIDE_FRONTEND_URL=upstream_url, TRACKSIDE_API_URL=upstream_url, TRACKSIDE_FLUSH_INTERVAL="0.1",
        TRACKSIDE_AUTO_MIGRATE="0",
    )  # fmt: skip
    worker = sidecar = None
    try:
        worker = _start(["worker"], worker_env, tmp_path / "worker.log")
        sidecar = _start(["serve", "--port", str(port)], sidecar_env, tmp_path / "sidecar.log")
        worker_pid = worker.pid
        url = f"http://127.0.0.1:{port}"

        async def up() -> bool:
            try:
                async with httpx.AsyncClient() as c:
                    return (await c.get(url + "/_trackside/health")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(up, timeout=30)
        await wait_for(lambda: _health(worker_spool).get("state") == "running", timeout=30)
        async with httpx.AsyncClient(base_url=url) as c:
            for i in range(before):
                assert (await c.get(f"/p/before{i}", headers=DOC)).status_code == 200

            expected = before

            async def stored() -> bool:
                return await count_events(database_url) == expected

            await wait_for(stored, timeout=30)

            redis.stop()  # no persistence: what was queued is gone, and everything queued was drained
            # A journey while Redis is away: every page answered, every event spooled by the sidecar.
            for i in range(during):
                assert (await c.get(f"/p/during{i}", headers=DOC)).status_code == 200

            async def spooled() -> bool:
                return (await c.get("/_trackside/metrics")).json().get("events_spooled", 0) == during

            await wait_for(spooled, timeout=15)
            await wait_for(lambda: _health(worker_spool).get("state") == "redis_away", timeout=30)
            code, line = _check(worker_env)
            assert code == 1 and "waiting for Redis" in line, line
            # Longer than arq's own reconnection window: arq alone would have given up and exited.
            await asyncio.sleep(ARQ_RETRY_WINDOW + 3)
            assert worker.poll() is None, "the worker exited while Redis was away"
            assert await count_events(database_url) == before

            redis.start()  # the same port
            expected = before + during
            await wait_for(stored, timeout=60)
            await asyncio.sleep(1.0)  # nothing more arrives later (no double delivery)
            assert await count_events(database_url) == before + during
            metrics = (await c.get("/_trackside/metrics")).json()
            assert metrics.get("events_dropped", 0) == 0
            # The queue's gauges, read from Redis at scrape time (cron jobs may sit deferred in it).
            assert metrics["queue_depth"] <= 3 and 0 <= metrics["queue_oldest_job_seconds"] < 5
            scrape = (await c.get("/_trackside/metrics?format=prometheus")).text
            assert "\ntrackside_queue_depth " in scrape and "\ntrackside_queue_oldest_job_seconds " in scrape

        assert worker.poll() is None and worker.pid == worker_pid
        await wait_for(lambda: _health(worker_spool).get("state") == "running", timeout=10)
        code, line = _check(worker_env)
        assert code == 0, line
        assert line.startswith(f"worker {worker_pid} running")
        report = await report_today(database_url)
        assert report["page_views"]["total"] == before + during

        # One line per change of state, not one per retry.
        _end(worker)
        log = (tmp_path / "worker.log").read_text()
        assert log.count("Redis unavailable") == 1, log
        assert log.count("Redis is back") == 1, log
    finally:
        _end(sidecar)
        _end(worker)
        redis.close()


@pytest.mark.redis
@pytest.mark.timeout(120)
async def test_the_worker_waits_out_the_database(database_url, tmp_path):
    batches, size = 4, 50
    postgres = database_url.startswith("postgresql")
    with RedisServer(tmp_path / "redis") as redis:
        await migrate(database_url)
        queue = f"trackside-test:{uuid.uuid4().hex[:12]}"
        spool = tmp_path / "worker"
        env = _env(redis.url, database_url, spool, queue)
        if postgres:
            await _allow_connections(database_url, False)
        else:
            await _sqlite_events_table(database_url, False)
        worker = _start(["worker"], env, tmp_path / "worker.log")
        restored = False
        try:
            writer = RedisWriter(redis.url, queue)
            try:
                for i in range(batches):
                    await writer.write(make_batch(size, bots=1 if i == 0 else 0))
                await wait_for(lambda: _health(spool).get("database") == "away", timeout=30)
                code, line = _check(env)
                assert code == 1 and "database unavailable" in line, line
                await asyncio.sleep(6)  # several retries of each batch
                assert worker.poll() is None
                assert (await writer.queue_state())["queue_depth"] >= batches
            finally:
                await writer.close()
            if postgres:
                await _allow_connections(database_url, True)
            else:
                await _sqlite_events_table(database_url, True)
            restored = True

            async def stored() -> bool:
                return await count_events(database_url) == batches * size

            await wait_for(stored, timeout=60)
            await wait_for(lambda: _health(spool).get("database") == "ok", timeout=10)
            assert worker.poll() is None
            report = await report_today(database_url)
            assert report["page_views"]["total"] == batches * size
            assert report["bots"] == {"Googlebot": 1}
            _end(worker)
            log = (tmp_path / "worker.log").read_text()
            assert log.count("database unavailable") == 1, log
            assert log.count("the database is back") == 1, log
        finally:
            if not restored:
                if postgres:
                    await _allow_connections(database_url, True)
                else:
                    await _sqlite_events_table(database_url, True)
            _end(worker)


@pytest.mark.redis
async def test_queue_state_counts_and_ages_the_queue(tmp_path):
    with RedisServer(tmp_path / "redis") as redis:
        writer = RedisWriter(redis.url, "q-state")
        try:
            assert await writer.queue_state() == {"queue_depth": 0, "queue_oldest_job_seconds": 0.0}
            await writer.write(make_batch(3))
            first = time.monotonic()
            await writer.write(make_batch(2))
            await asyncio.sleep(0.5)
            state = await writer.queue_state()
            assert state["queue_depth"] == 2
            assert 0.5 <= state["queue_oldest_job_seconds"] <= time.monotonic() - first + 0.1
        finally:
            await writer.close()
