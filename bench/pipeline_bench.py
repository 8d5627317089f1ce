"""Pipeline benchmark: the worker draining the queue, the daily rollup, and the sidecar in Redis mode at full rate.

Run from the repository root:

    .venv/bin/python bench/pipeline_bench.py [--parts drain,rollup,sidecar] [--backends postgres,sqlite] \
        [--batches 200] [--batch-size 1000] [--rollup-events 1000000] [--duration 20] [--connections 64] \
        [--out bench/results/pipeline.json]

Loopback only. Starts its own redis-server (a free port, no persistence), nginx (the upstream), the sidecar and
`trackside worker` as child processes and ends them by PID; creates one fresh PostgreSQL database per measurement
(dropped at the end) and SQLite files in a temp dir. See bench/PIPELINE.md for what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import proxy_bench as pb  # bench/ is sys.path[0]: nginx, wrk and process helpers are shared with the proxy bench
import redis as redis_sync

from trackside.batch import Batch
from trackside.events import API_CALL, ERROR, NAV_API, NAV_DATA, NAV_DOCUMENT, NAV_RSC, PAGE_VIEW, Event, new_event_id
from trackside.queue import RedisWriter
from trackside.storage.engine import create_engine
from trackside.storage.writes import write_batch

REPO = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN_URL = os.environ.get("TRACKSIDE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
GC_THRESHOLDS = gc.get_threshold()
PY_SPY = str(Path(sys.executable).parent / "py-spy")
log = pb.log


# --------------------------------------------------------------------------------------------------------------
# Realistic events: mixed page views (document, data, RSC), API calls and errors; 5k visitors, 2k content items.
# --------------------------------------------------------------------------------------------------------------

DEVICES = [
    ("desktop", "Chrome", "Windows"), ("desktop", "Firefox", "Linux"), ("mobile", "Mobile Safari", "iOS"),
    ("mobile", "Chrome Mobile", "Android"), ("tablet", "Mobile Safari", "iOS"), ("desktop", "Safari", "Mac OS X"),
]  # fmt: skip
COUNTRIES = ["US", "DE", "FR", "GB", "JP", "BR", "CA", "IT", None]
REFERRERS = ["reddit.com", "google.com", "t.co", "news.ycombinator.com", "bsky.app"]
PAGES = [("/", "/"), ("/hashtags/pixelart", "/hashtags/[tag]"), ("/u/alice", "/u/[user]"), ("/new", "/new")]
APIS = [("/api/post/recent", "/api/post/recent"), ("/api/user/u1", "/api/user/[user]"), ("/api/notifications", "/api")]


class EventFactory:
    def __init__(self, seed: int = 7, visitors: int = 5000, items: int = 2000) -> None:
        self.rng = random.Random(seed)
        self.visitors = [f"{self.rng.getrandbits(128):032x}" for _ in range(visitors)]
        # About a third of the visitors are signed in; a signed-in visitor keeps one user id.
        self.users = {v: (f"u{i}" if i % 3 == 0 else None) for i, v in enumerate(self.visitors)}
        self.devices = {v: DEVICES[i % len(DEVICES)] for i, v in enumerate(self.visitors)}
        self.countries = {v: COUNTRIES[i % len(COUNTRIES)] for i, v in enumerate(self.visitors)}
        artworks = items * 4 // 5
        self.items = [("artwork", f"a{i}", "/p/", "/p/[post]", f"u{i % 700}") for i in range(artworks)]
        self.items += [("blog_post", f"b{i}", "/b/", "/b/[blog]", f"u{i % 300}") for i in range(items - artworks)]

    def event(self, ts: float) -> Event:
        rng = self.rng
        visitor = rng.choice(self.visitors)
        device, browser, os_name = self.devices[visitor]
        common: dict[str, Any] = {
            "id": new_event_id(ts), "ts": ts, "method": "GET", "status": 200, "visitor": visitor,
            "device": device, "browser": browser, "os": os_name, "user_id": self.users[visitor],
            "country": self.countries[visitor], "duration_ms": round(rng.uniform(2, 120), 3),
        }  # fmt: skip
        roll = rng.random()
        if roll < 0.60:  # page views: 50% documents, 30% Next.js data fetches, 20% RSC fetches
            nav = rng.choices((NAV_DOCUMENT, NAV_DATA, NAV_RSC), (5, 3, 2))[0]
            extra: dict[str, Any] = {}
            if nav == NAV_DOCUMENT and rng.random() < 0.15:
                extra["referrer"] = rng.choice(REFERRERS)
            if nav == NAV_DOCUMENT and rng.random() < 0.03:
                extra.update(utm_source="newsletter", utm_medium="email", utm_campaign="launch")
            if rng.random() < 0.7:
                kind, item, prefix, label, author = rng.choice(self.items)
                path = prefix + item
                extra.update(content_kind=kind, content_id=item)
                if rng.random() < 0.02:
                    extra["author_id"] = author
            else:
                path, label = rng.choice(PAGES)
            return Event(kind=PAGE_VIEW, nav=nav, path=path, label=label, **common, **extra)
        if roll < 0.95:  # API calls, half of them reads of a content item
            extra = {}
            if rng.random() < 0.5:
                kind, item, _, _, author = rng.choice(self.items)
                path, label = f"/api/p/{item}", "/api/p/[post]"
                extra.update(content_kind=kind, content_id=item, author_id=author)
            else:
                path, label = rng.choice(APIS)
            if rng.random() < 0.05:
                common["method"] = "POST"
                path, label = "/api/post/upload", "/api/post/upload"
                extra = {"event_name": "upload"}
            return Event(kind=API_CALL, nav=NAV_API, path=path, label=label, **common, **extra)
        # Errors: 404 pages and upstream 5xx.
        if rng.random() < 0.6:
            common["status"] = 404
            return Event(kind=ERROR, nav=NAV_DOCUMENT, path="/missing", label="/missing", error_type="not_found",
                         **common)
        common["status"] = 503
        return Event(kind=ERROR, nav=NAV_API, path="/api/boom", label="/api", error_type="upstream_5xx", **common)

    def batch(self, size: int, ts: Callable[[], float]) -> Batch:
        return Batch(events=[self.event(ts()) for _ in range(size)])


# --------------------------------------------------------------------------------------------------------------
# Services: a private redis-server, fresh PostgreSQL databases.
# --------------------------------------------------------------------------------------------------------------


class RedisProc:
    def __init__(self, tmp: Path) -> None:
        self.port = pb.free_port()
        self.dir = tmp / f"redis-{self.port}"
        self.dir.mkdir()
        argv = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--protected-mode", "no"]  # fmt: skip
        self.proc = pb.REGISTRY.start(argv, self.dir / "redis.log", cwd=self.dir)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis_sync.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client.ping():
                    break
            except redis_sync.ConnectionError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start: " + pb.tail(self.dir / "redis.log"))
            time.sleep(0.02)

    def stop(self) -> None:
        self.client.close()
        pb.REGISTRY.stop(self.proc)


async def create_pg_database() -> str:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    name = "trackside_bench_" + uuid.uuid4().hex[:10]
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


async def drop_pg_database(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


class Databases:
    """Fresh databases per measurement; every PostgreSQL one is dropped at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pg: list[str] = []

    def new(self, backend: str, name: str) -> str:
        if backend == "sqlite":
            return f"sqlite+aiosqlite:///{self.tmp / (name + '.db')}"
        url = asyncio.run(create_pg_database())
        self.pg.append(url)
        return url

    def drop_all(self) -> None:
        for url in self.pg:
            try:
                asyncio.run(drop_pg_database(url))
            except Exception as exc:  # noqa: BLE001 - cleanup must go on
                log(f"could not drop {url.rsplit('/', 1)[1]}: {exc}")


def migrate(url: str) -> None:
    from trackside.storage.migrate import migrate as run_migrate

    asyncio.run(run_migrate(url))


def count_events(url: str) -> int:
    async def run() -> int:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return int((await conn.exec_driver_sql("SELECT COUNT(*) FROM events")).scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(run())


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKSIDE_") or k.startswith("TRACKSIDE_TEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


def worker_argv(variant: str) -> list[str]:
    """`default` is `trackside worker` exactly; `poll=X`, `jobs=N` or `poll=X+jobs=N` the same worker options
    with arq's `poll_delay` / `max_jobs` changed."""
    if variant == "default":
        return [sys.executable, "-m", "sidecar", "worker"]
    argv = [sys.executable, str(Path(__file__).resolve()), "--run-worker"]
    for part in variant.split("+"):
        key, _, value = part.partition("=")
        if key not in ("poll", "jobs") or not value:
            raise SystemExit(f"unknown worker variant {variant!r} (default, poll=SECONDS, jobs=N, poll=X+jobs=N)")
        argv += ["--poll-delay" if key == "poll" else "--max-jobs", value]
    return argv


def run_worker_here(poll_delay: float | None, max_jobs: int | None) -> None:
    """`--run-worker`: `trackside worker` with arq options changed (the variants the drain bench compares)."""
    import logging

    from arq.worker import run_worker

    from rollups.worker import worker_options
    from trackside.settings import Settings

    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = worker_options(settings)
    if poll_delay is not None:
        options["poll_delay"] = poll_delay
    if max_jobs is not None:
        options["max_jobs"] = max_jobs
    run_worker(type("WorkerSettings", (), options))


# --------------------------------------------------------------------------------------------------------------
# Part 1: one worker draining pre-queued batches.
# --------------------------------------------------------------------------------------------------------------


def enqueue(redis_url: str, queue: str, batches: int, size: int, ts: Callable[[], float]) -> float:
    factory = EventFactory()

    async def run() -> float:
        writer = RedisWriter(redis_url, queue)
        built = [factory.batch(size, ts) for _ in range(batches)]
        t0 = time.perf_counter()
        try:
            for batch in built:
                await writer.write(batch)
        finally:
            await writer.close()
        return time.perf_counter() - t0

    return asyncio.run(run())


def drain(backend: str, variant: str, args: argparse.Namespace, tmp: Path, dbs: Databases) -> dict[str, Any]:
    total = args.batches * args.batch_size
    url = dbs.new(backend, f"drain-{backend}-{_slug(variant)}")
    migrate(url)
    redis = RedisProc(tmp)
    queue = "bench:" + uuid.uuid4().hex[:8]
    now = time.time()
    today_start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    rng = random.Random(3)
    since = max(today_start, now - 3600)  # today (UTC): the worker's start-up rollup has nothing to do
    enqueue_s = enqueue(redis.url, queue, args.batches, args.batch_size, lambda: rng.uniform(since, now))
    assert redis.client.zcard(queue) == args.batches
    env = child_env(TRACKSIDE_REDIS_URL=redis.url, TRACKSIDE_DATABASE_URL=url, TRACKSIDE_QUEUE_NAME=queue,
                    TRACKSIDE_LOG_LEVEL="warning")  # fmt: skip
    d = tmp / f"worker-{backend}-{_slug(variant)}"
    d.mkdir()
    profile = None
    argv = worker_argv(variant)
    if args.profile_worker:
        profile = Path(args.out).parent / f"profile-drain-{backend}-{_slug(variant)}.txt"
        argv = [PY_SPY, "record", "--format", "raw", "--rate", "250", "-o", str(profile), "--", *argv]
    t_spawn = time.monotonic()
    proc = pb.REGISTRY.start(argv, d / "worker.log", cwd=REPO, env=env)
    t_ready = t_empty = None
    try:
        deadline = t_spawn + args.drain_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited with {proc.returncode}: {pb.tail(d / 'worker.log')}")
            if t_ready is None and redis.client.exists(queue + ":health-check"):
                t_ready = time.monotonic()  # first poll done: start-up (imports, connections) is behind it
            if redis.client.zcard(queue) == 0:
                t_empty = time.monotonic()
                break
            time.sleep(0.01)
        cpu = pb.cpu_seconds(pb.process_tree(proc.pid)[1:] if profile else [proc.pid])
        if profile:
            # End the profiled worker itself (py-spy's child) so py-spy writes its file and exits by itself.
            for pid in pb.process_tree(proc.pid)[1:]:
                os.kill(pid, signal.SIGTERM)
            proc.wait(timeout=30)
    finally:
        pb.REGISTRY.stop(proc)
        redis.stop()
    stored = count_events(url)
    result: dict[str, Any] = {"backend": backend, "worker": variant, "batches": args.batches,
                              "batch_size": args.batch_size, "events": total, "stored": stored,
                              "enqueue_s": round(enqueue_s, 3)}  # fmt: skip
    if t_empty is None:
        result["error"] = f"queue not empty after {args.drain_timeout}s"
        return result
    ready = t_ready if t_ready is not None else t_spawn
    result.update(
        seconds_from_spawn=round(t_empty - t_spawn, 3),
        seconds_from_first_poll=round(t_empty - ready, 3),
        events_per_s=round(total / (t_empty - ready)),
        events_per_s_incl_startup=round(total / (t_empty - t_spawn)),
        worker_cpu_s=round(cpu, 2),
        load_avg_1m=os.getloadavg()[0],
        worker_cpu_us_per_event=round(cpu / total * 1e6, 1),
    )
    if profile is not None and profile.exists():
        result["profile"] = {"file": str(profile), **summarize_profile(profile)}
    log(f"  drain {backend} {variant}: {result['events_per_s']} events/s, stored {stored}/{total}")
    return result


# Where the worker's time goes, by the function a sample is inside of (inclusive; a sample may count in several).
PROFILE_GROUPS = {
    "arq deserialize_job_raw (msgpack unpack)": "deserialize_job_raw",
    "arq args_to_string (repr of the whole batch for a log line)": "args_to_string",
    "Batch.from_wire": "from_wire (trackside/batch.py",
    "rows for the driver (_postgres_row/_sqlite_row)": "_row (trackside/storage/writes.py",
    "driver executemany (asyncpg/aiosqlite)": "executemany",
    "mark_dirty": "mark_dirty (",
    "write_batch total": "write_batch_on (",
    "persist_batch total": "persist_batch (",
    "idle (event loop waiting)": "select (selectors.py",
}


# Where rollup_day's time goes (inclusive).
ROLLUP_GROUPS = {
    "reading the day's events (day_events)": "day_events (",
    "driver fetch (asyncpg/aiosqlite)": "fetch",
    "deriving views (derive_day)": "derive_day (",
    "aggregating (aggregate_day)": "aggregate_day (",
    "writing daily rows (replace_day)": "replace_day (",
}


def summarize_profile(path: Path, groups_of: dict[str, str] = PROFILE_GROUPS) -> dict[str, Any]:
    """py-spy raw output (`frame;frame;... count` per line) -> inclusive shares of PROFILE_GROUPS and the top
    self-time frames."""
    total = 0
    groups = dict.fromkeys(groups_of, 0)
    own: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        for name, needle in groups_of.items():
            if needle in stack:
                groups[name] += n
        leaf = stack.rsplit(";", 1)[-1] or stack.rstrip(";").rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + n
    if not total:
        return {"samples": 0}
    top = sorted(own.items(), key=lambda kv: -kv[1])[:12]
    return {
        "samples": total,
        "inclusive_pct": {k: round(v * 100 / total, 1) for k, v in groups.items()},
        "top_self_pct": [[frame, round(n * 100 / total, 1)] for frame, n in top],
    }


# --------------------------------------------------------------------------------------------------------------
# Part 2: the rollup of one closed day of raw events.
# --------------------------------------------------------------------------------------------------------------


def rollup_one_day(backend: str, args: argparse.Namespace, dbs: Databases) -> list[dict[str, Any]]:
    """Insert `--rollup-events` raw events for one closed day once, then time `rollup_day` once per `--rollup-gc`
    mode (the second and later runs with force=True: same work, the day's rows replaced)."""
    from trackside.rollup import rollup_day

    url = dbs.new(backend, f"rollup-{backend}")
    migrate(url)
    day = datetime.now(UTC).date() - timedelta(days=2)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    factory = EventFactory(seed=11)
    rng = random.Random(5)
    n = args.rollup_events

    async def insert(engine: Any) -> float:
        insert_s = 0.0
        written = 0
        while written < n:
            size = min(args.rollup_chunk, n - written)
            batch = factory.batch(size, lambda: start + rng.uniform(0, 86_399.999))
            t0 = time.perf_counter()
            await write_batch(engine, batch)
            insert_s += time.perf_counter() - t0
            written += size
        if backend == "postgres":
            async with engine.begin() as conn:  # as autovacuum would have by now
                await conn.exec_driver_sql("ANALYZE events")
        return insert_s

    async def roll(engine: Any, mode: str, force: bool) -> dict[str, Any]:
        gc.collect()
        _reset_peak_rss()
        rss0 = _rss_kb("VmRSS")
        spy = profile = None
        if args.profile_rollup:
            profile = Path(args.out).parent / f"profile-rollup-{backend}-gc{mode}.txt"
            spy = subprocess.Popen([PY_SPY, "record", "--pid", str(os.getpid()), "--format", "raw", "--rate", "100",
                                    "--nonblocking", "-o", str(profile)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, preexec_fn=pb._die_with_parent)  # fmt: skip
            await asyncio.sleep(1.0)  # py-spy attached
        if mode == "off":
            gc.disable()
        elif mode == "freeze":
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            result = await rollup_day(engine, day, 1800.0, force=force)
        finally:
            rollup_s = time.perf_counter() - t0
            rollup_cpu_s = time.process_time() - c0
            gc.enable()
            gc.unfreeze()
            gc.set_threshold(*GC_THRESHOLDS)
        peak = _rss_kb("VmHWM")
        out: dict[str, Any] = {
            "gc": mode, "rolled_events": result.events, "rollup_s": round(rollup_s, 2),
            "rollup_s_per_million": round(rollup_s / n * 1e6, 2), "rollup_cpu_s_this_process": round(rollup_cpu_s, 2),
            "load_avg_1m": os.getloadavg()[0], "rollup_peak_rss_mb": round(peak / 1024),
            "rollup_rss_growth_mb": round((peak - rss0) / 1024),
        }  # fmt: skip
        if spy is not None and profile is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
            if profile.exists():
                out["profile"] = {"file": str(profile), **summarize_profile(profile, ROLLUP_GROUPS)}
        return out

    async def run() -> list[dict[str, Any]]:
        engine = create_engine(url)
        try:
            insert_s = await insert(engine)
            common = {"backend": backend, "day": day.isoformat(), "events": n, "insert_s": round(insert_s, 2),
                      "insert_events_per_s": round(n / insert_s)}  # fmt: skip
            results = []
            for i, mode in enumerate(_items(args.rollup_gc)):
                results.append({**common, **await roll(engine, mode, force=i > 0)})
                log(f"  rollup {backend} gc={mode}: {results[-1]['rollup_s']} s for {n} events")
            return results
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def _rss_kb(key: str) -> int:
    return pb.status_kb(os.getpid(), key)


# --------------------------------------------------------------------------------------------------------------
# Part 3: the sidecar at full rate in Redis mode, the queue depth watched.
# --------------------------------------------------------------------------------------------------------------

WRK_SCRIPT = """
-- Alternate a page (a document page view) and an API call; spread the requests over VISITORS client
-- addresses (X-Forwarded-For from a trusted proxy), so no visitor floods and every request is an event.
local paths = {"/page", "/api/item"}
local accept = {"text/html", "application/json"}
local i = 0
request = function()
  i = i + 1
  local k = (i % 2) + 1
  local v = math.random(0, VISITORS - 1)
  local ip = "10." .. math.floor(v / 65536) .. "." .. (math.floor(v / 256) % 256) .. "." .. (v % 256)
  return wrk.format("GET", paths[k], {["User-Agent"] = "UA", ["Accept"] = accept[k], ["X-Forwarded-For"] = ip})
end
"""


def sidecar_at_full_rate(variant: str, args: argparse.Namespace, tmp: Path, dbs: Databases) -> dict[str, Any]:
    backend = args.sidecar_backend
    url = dbs.new(backend, f"sidecar-{_slug(variant)}")
    d = tmp / f"sidecar-run-{_slug(variant)}"
    d.mkdir()
    (d / "www").mkdir()
    for path in (tmp, d, d / "www"):
        path.chmod(0o755)  # nginx workers drop to user nobody when run as root: they must read the files
    pb.write_content(d / "www")
    up_port = pb.free_port()
    upstream = pb.start_nginx("upstream", d, pb.upstream_conf(d / "upstream", up_port, d / "www"), up_port, [])
    redis = RedisProc(tmp)
    queue = "bench:" + uuid.uuid4().hex[:8]
    port = pb.free_port()
    env = child_env(TRACKSIDE_REDIS_URL=redis.url, TRACKSIDE_DATABASE_URL=url, TRACKSIDE_QUEUE_NAME=queue,
                    TRACKSIDE_LOG_LEVEL="warning", TRACKSIDE_SPOOL_DIR=str(d / "spool"),
                    TRACKSIDE_TRUSTED_PROXIES="127.0.0.1")  # fmt: skip
    serve = [sys.executable, "-m", "sidecar", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--frontend-url", upstream.base_url, "--api-url", upstream.base_url,
             "--workers", str(args.sidecar_workers)]  # fmt: skip
    sidecar = worker = None
    samples: list[tuple[float, int]] = []
    try:
        if (reason := pb.wait_ready(upstream.proc, upstream.base_url + "/page", 10)) is not None:
            raise RuntimeError(f"upstream nginx: {reason}: {pb.tail(upstream.log_path)}")
        sidecar = pb.REGISTRY.start(serve, d / "sidecar.log", cwd=d, env=env)
        if (reason := pb.wait_ready(sidecar, f"http://127.0.0.1:{port}/_trackside/health", 30)) is not None:
            raise RuntimeError(f"sidecar: {reason}: {pb.tail(d / 'sidecar.log')}")
        worker = pb.REGISTRY.start(worker_argv(variant), d / "worker.log", cwd=REPO, env=env)
        script = d / "mixed.lua"
        script.write_text(WRK_SCRIPT.replace("VISITORS", str(args.visitors)).replace('"UA"', f'"{pb.BROWSER_UA}"'))
        argv = [pb.wrk_bin(), "-t2", f"-c{args.connections}", f"-d{args.duration:g}s", "--latency",
                "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}/page"]  # fmt: skip
        cpu0 = {name: pb.cpu_seconds(pb.process_tree(p.pid)) for name, p in (("sidecar", sidecar), ("worker", worker))}
        t0 = time.monotonic()
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=pb._die_with_parent) as wrk:  # fmt: skip
            while wrk.poll() is None:
                samples.append((round(time.monotonic() - t0, 2), int(redis.client.zcard(queue))))
                if time.monotonic() - t0 > args.duration + 30:
                    wrk.kill()
                    raise RuntimeError("wrk did not stop")
                time.sleep(0.5)
            out, err = wrk.communicate()
        if wrk.returncode != 0:
            raise RuntimeError(f"wrk exited {wrk.returncode}: {err}")
        load_end = time.monotonic() - t0
        cpu = {name: round(pb.cpu_seconds(pb.process_tree(p.pid)) - cpu0[name], 2)
               for name, p in (("sidecar", sidecar), ("worker", worker))}  # fmt: skip
        depth_at_end = int(redis.client.zcard(queue))
        _, body, _ = pb.http_get(f"http://127.0.0.1:{port}/_trackside/metrics")
        metrics_before_stop = json.loads(body)
        # Stop the sidecar (it flushes what it holds to the queue), then let the worker drain.
        pb.REGISTRY.stop(sidecar, timeout=30)
        sidecar = None
        deadline = time.monotonic() + args.drain_timeout
        while redis.client.zcard(queue) and time.monotonic() < deadline:
            samples.append((round(time.monotonic() - t0, 2), int(redis.client.zcard(queue))))
            time.sleep(0.5)
        drained_after = round(time.monotonic() - t0 - load_end, 2)
        final_depth = int(redis.client.zcard(queue))
    finally:
        for proc in (sidecar, worker):
            if proc is not None:
                pb.REGISTRY.stop(proc)
        pb.REGISTRY.stop(upstream.proc)
        redis.stop()
    res = pb.parse_wrk(out)
    stored = count_events(url)
    load = [depth for t, depth in samples if t <= load_end]
    half = load[len(load) // 2 :]
    # Growth in the second half of the load: jobs per second (least squares); ~0 means the worker keeps up.
    slope = _slope([(t, depth) for t, depth in samples if t <= load_end][len(load) // 2 :]) if len(half) > 2 else 0.0
    captured = metrics_before_stop.get("events_captured", 0)
    result = {
        "backend": backend, "sidecar_workers": args.sidecar_workers, "worker": variant,
        "duration_s": args.duration, "connections": args.connections, "rps": res.get("rps"),
        "requests": res.get("requests"), "wrk_errors": res.get("errors"), "p50_ms": res.get("p50_ms"),
        "p99_ms": res.get("p99_ms"), "max_depth": max(load, default=0), "depth_at_load_end": depth_at_end,
        "depth_slope_jobs_per_s": round(slope, 2), "drained_s_after_load": drained_after, "final_depth": final_depth,
        "events_captured_before_stop": captured, "events_dropped": metrics_before_stop.get("events_dropped", 0),
        "events_spooled": metrics_before_stop.get("events_spooled", 0), "stored": stored,
        "cpu_s": cpu, "sidecar_metrics": metrics_before_stop, "depth_samples": samples,
    }  # fmt: skip
    batches = metrics_before_stop.get("batches_written", 0)
    result["batches_written"] = batches
    result["events_per_batch"] = round(metrics_before_stop.get("events_written", 0) / batches) if batches else None
    # Every request wrk counted is a stored event, and nothing more than the requests still in flight when
    # wrk stopped (at most one per connection), which it does not count. (The sidecar records requests
    # in batches, so `events_captured` read before the stop can be short of what the stop's flush stores.)
    wrk_requests = res.get("requests") or 0
    exact = 0 <= stored - wrk_requests <= args.connections and not result["events_dropped"]
    result["all_stored"] = final_depth == 0 and exact and stored >= captured
    log(f"  sidecar: {result['rps']} req/s, max depth {result['max_depth']}, stored {stored}, wrk {result['requests']}")
    return result


def _slope(points: list[tuple[float, int]]) -> float:
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return sum((t - mx) * (v - my) for t, v in points) / den if den else 0.0


# --------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    lines: list[str] = []
    if report.get("drain"):
        lines += ["### Worker drain (pre-queued batches, one worker)", "",
                  "| backend | worker | events | events/s | incl. start-up | worker CPU µs/event | stored | load avg |",
                  "|---|---|---:|---:|---:|---:|---|---:|"]  # fmt: skip
        for r in report["drain"]:
            lines.append(
                f"| {r['backend']} | {r['worker']} | {r['events']:,} | {r.get('events_per_s', 'n/a'):,} | "
                f"{r.get('events_per_s_incl_startup', 'n/a'):,} | {r.get('worker_cpu_us_per_event', 'n/a')} | "
                f"{'exact' if r['stored'] == r['events'] else r['stored']} | {r.get('load_avg_1m', 0):.1f} |"
            )
        lines.append("")
    if report.get("rollup"):
        lines += ["### Rollup of one closed day", "",
                  "| backend | GC | raw events | insert events/s | rollup s | s per million | CPU s (Python side) "
                  "| peak RSS MB | load avg |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for r in report["rollup"]:
            lines.append(
                f"| {r['backend']} | {r['gc']} | {r['events']:,} | {r['insert_events_per_s']:,} | {r['rollup_s']} | "
                f"{r['rollup_s_per_million']} | {r['rollup_cpu_s_this_process']} | {r['rollup_peak_rss_mb']} | "
                f"{r['load_avg_1m']:.1f} |"
            )
        lines.append("")
    if report.get("sidecar"):
        lines += ["### Sidecar in Redis mode at full rate, queue depth watched", "",
                  "| backend | worker | req/s | p99 ms | batches (events each) | max depth | depth at end "
                  "| slope jobs/s | drained after | stored | all stored |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
        for r in report["sidecar"]:
            lines.append(
                f"| {r['backend']} | {r['worker']} | {r['rps']} | {r['p99_ms']} | {r['batches_written']} "
                f"({r['events_per_batch']}) | {r['max_depth']} | {r['depth_at_load_end']} | "
                f"{r['depth_slope_jobs_per_s']} | {r['drained_s_after_load']} s | {r['stored']:,} | "
                f"{'yes' if r['all_stored'] else 'NO'} |"
            )
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="drain,rollup,sidecar")
    p.add_argument("--backends", default="postgres,sqlite")
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--workers-variants", default="default,poll=0.05",
                   help="drain: `default` (trackside worker) and/or poll=SECONDS (arq poll_delay changed)")
    p.add_argument("--drain-timeout", type=float, default=300)
    p.add_argument("--rollup-events", type=int, default=1_000_000)
    p.add_argument("--rollup-chunk", type=int, default=20_000)
    p.add_argument("--rollup-gc", default="on,freeze",
                   help="rollup: one timed run per mode: on (Python's GC as is), off (disabled), "
                        "freeze (gc.freeze() + threshold 50,000)")
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--sidecar-workers", type=int, default=1)
    p.add_argument("--visitors", type=int, default=5000, help="sidecar: distinct client addresses wrk sends")
    p.add_argument("--sidecar-backend", default="postgres")
    p.add_argument("--sidecar-worker-variants", default="default,poll=0.05",
                   help="sidecar: one run per worker variant (default, poll=SECONDS, jobs=N)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "pipeline.json"))
    p.add_argument("--keep-tmp", action="store_true")
    p.add_argument("--profile-rollup", action="store_true",
                   help="rollup: sample this process with py-spy during rollup_day; summary in the JSON")
    p.add_argument("--profile-worker", action="store_true",
                   help="drain: run each worker under py-spy; raw stacks next to --out, a summary in the JSON")
    p.add_argument("--run-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--poll-delay", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--max-jobs", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _slug(variant: str) -> str:
    return variant.replace("=", "").replace("+", "-")


def _items(csv: str) -> Iterator[str]:
    return (part.strip() for part in csv.split(",") if part.strip())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_worker:
        run_worker_here(args.poll_delay, args.max_jobs)
        return 0
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, pb._on_signal)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # profiles are written there as we go
    tmp = Path(tempfile.mkdtemp(prefix="trackside-pipeline-"))
    dbs = Databases(tmp)
    parts = set(_items(args.parts))
    backends = list(_items(args.backends))
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_avg_at_start": os.getloadavg()},
        "args": {k: v for k, v in vars(args).items() if k not in ("run_worker", "poll_delay", "max_jobs")},
    }
    try:
        if "drain" in parts:
            report["drain"] = [drain(b, v, args, tmp, dbs) for b in backends for v in _items(args.workers_variants)]
        if "rollup" in parts:
            report["rollup"] = [r for b in backends for r in rollup_one_day(b, args, dbs)]
        if "sidecar" in parts:
            report["sidecar"] = [sidecar_at_full_rate(v, args, tmp, dbs) for v in _items(args.sidecar_worker_variants)]
    finally:
        pb.REGISTRY.stop_all()
        dbs.drop_all()
        if args.keep_tmp:
            log(f"kept temp dir {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report["peak_rss_mb_bench_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(markdown(report))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
