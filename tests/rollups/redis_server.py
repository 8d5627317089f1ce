"""A private `redis-server` on a free loopback port, started and ended by its PID.

The machine's shared Redis (127.0.0.1:6379) is never touched: fault tests kill and restart this one.
Persistence is off by default (`--save "" --appendonly no`); `durable=True` turns on an append-only
file fsynced on every write, kept in `directory`, so a killed server restarts with what it acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from arq import Worker, create_pool
from arq.connections import ArqRedis

from rollups.worker import worker_options
from tests.servers import free_port
from trackside.batch import Batch
from trackside.events import NAV_DOCUMENT, PAGE_VIEW, Event, new_event_id
from trackside.queue import deserialize, redis_settings, serialize
from trackside.settings import Settings
from trackside.storage.engine import create_engine

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, directory: str | os.PathLike[str] | None = None, *, durable: bool = False) -> None:
        self.port = free_port()
        self.durable = durable
        self._own_dir = directory is None
        self.dir = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="trackside-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float = 10.0) -> None:
        """Start on `self.port` (the same port on a restart) and return once it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"redis-server already running (pid {self.proc.pid})")
        argv = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--protected-mode", "no",
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        if self.durable:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        devnull = subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdin=devnull, stdout=devnull, stderr=devnull)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {log}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING in {timeout}s")
            time.sleep(0.01)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL by PID: a crash, nothing flushed beyond what was already fsynced."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL if it lingers."""
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------------------------------------
# Queue-side helpers shared by the rollups tests: a burst worker, batches built by hand, exact counts.
# ----------------------------------------------------------------------------------------------------------------


async def run_burst_worker(
    settings: Settings, timeout: float = 60.0, *, crons: bool = False, **overrides: Any
) -> Worker:
    """The real ARQ worker (`worker_options`), in this process, until the queue is empty (or until
    `max_burst_jobs` were started). Returns the closed worker: `jobs_complete`, `jobs_retried`, `jobs_failed`.

    Without `crons` its cron jobs are left out: the start-up rollup and the crons due at :05, :35 and :45
    would otherwise add jobs to the counts depending on the time of day."""
    options = {**worker_options(settings), "burst": True, "poll_delay": 0.01, "handle_signals": False, **overrides}
    if not crons:
        options["cron_jobs"] = []
    worker = Worker(**options)
    try:
        await asyncio.wait_for(worker.main(), timeout)
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await worker.close()
    return worker


async def count_events(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int((await conn.exec_driver_sql("SELECT COUNT(*) FROM events")).scalar_one())
    finally:
        await engine.dispose()


def make_batch(size: int, *, bots: int = 0, now: float | None = None) -> Batch:
    """`size` page views of distinct items by 97 visitors of its own, stamped `now`; `bots` Googlebot hits."""
    now = time.time() if now is None else now
    prefix = os.urandom(12).hex()
    events = [
        Event(
            id=new_event_id(now),
            ts=now,
            kind=PAGE_VIEW,
            nav=NAV_DOCUMENT,
            method="GET",
            path=f"/p/item{i}",
            label="/p/[post]",
            status=200,
            # Each batch its own visitors, a few events each, as a second of real traffic has (one
            # visitor's events spread over many batches are re-derived with each: a burst of those
            # costs what a busy visitor costs, not what these tests are about).
            visitor=f"{prefix}{i % 97:08x}",
        )
        for i in range(size)
    ]
    batch = Batch(events=events)
    if bots:
        batch.bots[(datetime.fromtimestamp(now, UTC).date(), "Googlebot", "/p/[post]")] = bots
    return batch


async def queue_pool(settings: Settings) -> ArqRedis:
    """A client of the settings' queue, the way the sidecar's RedisWriter makes one."""
    assert settings.redis_url is not None
    return await create_pool(
        redis_settings(settings.redis_url),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=settings.queue_name,
    )
