"""Stats benchmark (issue 4): the three seed endpoints and the query API over a realistic database.

Run from the repository root:

    .venv/bin/python bench/stats_bench.py                                  # 10M raw events, PostgreSQL and SQLite
    .venv/bin/python bench/stats_bench.py --events 1000000                 # quick run
    .venv/bin/python bench/stats_bench.py --backends postgres --max-seconds 1500

What one run does, per backend (a fresh PostgreSQL database `trackside_bench_<random>`, dropped at the end, or a
SQLite file in a temp dir):

1. Seeds `--rolled-days` (30) older days of `--rolled-events-per-day` (100k) events each (days 7..36 ago), rolls
   them up with `trackside.rollup.rollup_pending` and prunes their raw events (raw retention 7 days), as a
   sidecar that has run for a month would have. Then `--events` (10M) raw events over the last 7 days, today
   included (1/7 each; today's spread from midnight to now), inserted the fastest way: `COPY` through asyncpg's
   `copy_records_to_table` on PostgreSQL, `executemany` in one transaction per day on SQLite, in time order (as a
   live sidecar writes them). Then rolls up the 6 closed raw days (rollup seconds per million events reported):
   after that only today is read from raw events by the endpoints.
2. Starts the sidecar in this process (`tests.servers.run_sidecar`, the same uvicorn options as `trackside serve`)
   in front of the test upstream (`tests.upstream_app`, which answers the site's `/api/post/{id}/stats` for the
   overlay), waits for its start-up rollup check to finish, then times with httpx:
   - each seed endpoint: the first call (stats cache cold), `--repeats - 1` more cold calls (`?refresh=true` with a
     different moderator each, so the refresh rate limit does not serve the cache), and the cached call;
   - artworks again with the overlay off (`stats_overlay=()`: Trackside answers alone);
   - query API calls over 30 days, and `popular`: the first call (query cache cold), `--query-repeats - 1` calls
     with `?refresh=true` (today derived anew), and the cached call.
   Every call reads today from what is stored (there is no provisional copy any more).
   With `--unrolled` (default when `--events` <= 2M) the seed endpoints are also timed before the 6 closed raw days
   are rolled up (7 raw days read live: a rollup that lags).
3. Profiles (`--profile`, on by default): the phases of a 30-day read in process (SQL fetch, Event objects,
   view derivation, aggregation, daily-row reads), pyinstrument text profiles of `site_stats` and `item_stats`, and
   what SQL-side aggregation of today would cost.

Prints a Markdown table and writes JSON to `--out` (bench/results/stats.json). Loopback only; bounded by
`--max-seconds` (phases are skipped once it is spent; a watchdog drops the databases and exits past it + 300 s).
See bench/STATS.md for the figures and what they mean.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import jwt  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from tests.servers import run_server, run_sidecar  # noqa: E402
from tests.upstream_app import app as upstream_asgi  # noqa: E402
from trackside.aggregate import aggregate_day  # noqa: E402
from trackside.figures import figures_of, item_days, load_days, rolled_day  # noqa: E402
from trackside.rollup import prune, rollup_pending  # noqa: E402
from trackside.settings import Settings  # noqa: E402
from trackside.stats.item import item_stats  # noqa: E402
from trackside.stats.site import site_stats  # noqa: E402
from trackside.storage.daily import day_bot_hits, rolled_days  # noqa: E402
from trackside.storage.engine import create_engine, snapshot  # noqa: E402
from trackside.storage.migrate import migrate  # noqa: E402
from trackside.storage.reads import day_events, item_day_events  # noqa: E402
from trackside.storage.tables import (  # noqa: E402
    DAILY_CONTENT,
    DAILY_CONTENT_DIMS,
    DAILY_SITE,
    DAILY_SITE_DIMS,
    EVENTS,
)
from trackside.storage.writes import _COLUMNS, add_bot_hits  # noqa: E402
from trackside.views import derive_day  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get("TRACKSIDE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "stats-bench-secret-stats-bench-secret-0123"
ADMIN = "stats-bench-admin-token-0123456789"
WINDOW = 30 * 60.0
TARGET_SEED_MS = 200.0
TARGET_QUERY_MS = 1000.0
T0 = time.monotonic()
LOAD0 = os.getloadavg()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Realistic events. One UTC day at a time, deterministic per (seed, day): ~70% page views (documents, Next.js
# data and RSC fetches), 25% API calls, 3% errors, 2% feed impressions; content on `artworks` artworks and
# `blog_posts` blog posts with a Zipf popularity (s = 1); visitors in 30-minute sessions, 5% signed in.
# --------------------------------------------------------------------------------------------------------------

DEVICES = (
    ("desktop", "Chrome", "Windows", 30),
    ("mobile", "Mobile Safari", "iOS", 25),
    ("mobile", "Chrome Mobile", "Android", 22),
    ("desktop", "Safari", "Mac OS X", 10),
    ("desktop", "Firefox", "Linux", 5),
    ("desktop", "Edge", "Windows", 5),
    ("tablet", "Mobile Safari", "iOS", 3),
)
COUNTRIES = (
    ("US", 28),
    ("DE", 8),
    ("GB", 7),
    ("JP", 7),
    ("FR", 5),
    ("BR", 5),
    ("CA", 4),
    ("KR", 3),
    ("IT", 3),
    ("ES", 3),
    ("NL", 2),
    ("PL", 2),
    ("SE", 2),
    ("AU", 2),
    ("MX", 2),
    ("IN", 2),
    ("RU", 2),
    ("TW", 1),
    ("FI", 1),
    ("CH", 1),
    (None, 10),
)
REFERRERS = (
    "google.com",
    "reddit.com",
    "t.co",
    "bsky.app",
    "news.ycombinator.com",
    "discord.com",
    "duckduckgo.com",
    "mastodon.social",
    "youtube.com",
    "bing.com",
)
PAGES = (
    ("/", "/"),
    ("/new", "/new"),
    ("/search", "/search"),
    ("/about", "/about"),
    ("/hashtags/pixelart", "/hashtags/[tag]"),
    ("/hashtags/gif", "/hashtags/[tag]"),
    ("/u/alice", "/u/[user]"),
    ("/u/bob/likes", "/u/[user]/[tab]"),
)
APIS = (
    ("/api/post/recent", "/api/post/recent"),
    ("/api/user/alice", "/api/user/[user]"),
    ("/api/notifications", "/api"),
    ("/api/hashtags", "/api"),
    ("/api/post/x1/reactions", "/api/post/[post]/[action]"),
)


def _cum(weights: list[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


class EventFactory:
    """Rows in `trackside.storage.writes._COLUMNS` order, typed for the backend ("postgres" or "sqlite")."""

    def __init__(self, seed: int, artworks: int, blog_posts: int, users: int, zipf_s: float) -> None:
        self.seed = seed
        self.artworks = [f"art{i:05d}" for i in range(artworks)]
        self.blog_posts = [f"post-{i:03d}" for i in range(blog_posts)]
        self.art_cum = _cum([1.0 / (i + 1) ** zipf_s for i in range(artworks)])
        self.blog_cum = _cum([1.0 / (i + 1) ** zipf_s for i in range(blog_posts)])
        self.users = [f"u{i}" for i in range(users)]
        # Authors: artwork i by user (i * 7919) % users; blog post j by user j * 13 % users.
        self.art_author = [self.users[(i * 7919) % users] for i in range(artworks)]
        self.blog_author = [self.users[(j * 13) % users] for j in range(blog_posts)]
        self.devices = [d[:3] for d in DEVICES]
        self.device_cum = _cum([d[3] for d in DEVICES])
        self.countries = [c[0] for c in COUNTRIES]
        self.country_cum = _cum([c[1] for c in COUNTRIES])

    def day_rows(self, day: date, count: int, visitors: int, end_ts: float, backend: str) -> list[tuple[Any, ...]]:
        rng = random.Random(f"{self.seed}:{day.isoformat()}")
        r = rng.random
        start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
        end = min(start + 86400.0, end_ts)
        span = max(end - start - 1800.0, 1.0)
        visitors = max(1, visitors)
        # Visitors of this day: the anonymous id rotates daily (salted hash), 5% are signed in.
        vids = [f"{rng.getrandbits(128):032x}" for _ in range(visitors)]
        vdev = rng.choices(range(len(self.devices)), cum_weights=self.device_cum, k=visitors)
        vcountry = rng.choices(self.countries, cum_weights=self.country_cum, k=visitors)
        vuser = [rng.choice(self.users) if r() < 0.05 else None for _ in range(visitors)]
        vstart = [start + r() * span for _ in range(visitors)]
        arts = rng.choices(range(len(self.artworks)), cum_weights=self.art_cum, k=count)
        blogs = rng.choices(range(len(self.blog_posts)), cum_weights=self.blog_cum, k=max(count // 20, 1))
        nblogs = len(blogs)
        artworks, blog_posts, art_author, blog_author = (
            self.artworks,
            self.blog_posts,
            self.art_author,
            self.blog_author,
        )
        devices = self.devices
        raw: list[tuple[Any, ...]] = []
        append = raw.append
        for n in range(count):
            v = int(visitors * r() ** 1.6)  # a few heavy visitors, a long tail of one-page ones
            ts = min(vstart[v] + r() * 1800.0, end - 0.001)
            user = vuser[v]
            device, browser, os_name = devices[vdev[v]]
            country = vcountry[v]
            roll = r()
            kind_ = "page_view"
            method, status, path, label = "GET", 200, "/", "/"
            uid = author = ckind = cid = vtype = ref = utm_s = utm_m = utm_c = err = name = None
            if roll < 0.70:
                x = r()
                nav = "document" if x < 0.5 else "data" if x < 0.9 else "rsc"
                x = r()
                if x < 0.55:
                    a = arts[n]
                    ckind, cid, path, label = "artwork", artworks[a], "/p/" + artworks[a], "/p/[post]"
                elif x < 0.58:
                    b = blogs[n % nblogs]
                    ckind, cid, path, label = "blog_post", blog_posts[b], "/b/" + blog_posts[b], "/b/[blog]"
                else:
                    path, label = PAGES[int(x * 1000) % len(PAGES)]
                if nav == "document":
                    x = r()
                    if x < 0.2:
                        ref = REFERRERS[int(x * 500) % len(REFERRERS)]
                    elif x < 0.22:
                        utm_s, utm_m, utm_c = "newsletter", "email", "weekly"
                if user and r() < 0.3:
                    uid = user
            elif roll < 0.95:
                kind_, nav = "api_call", "api"
                uid = user
                x = r()
                if x < 0.40:
                    a = arts[n]
                    ckind, cid, path, label = "artwork", artworks[a], "/api/p/" + artworks[a], "/api/p/[post]"
                    author = art_author[a]
                elif x < 0.42:
                    b = blogs[n % nblogs]
                    ckind, cid = "blog_post", blog_posts[b]
                    path, label, author = "/api/blog-post/" + blog_posts[b], "/api/blog-post/[blog]", blog_author[b]
                elif x < 0.423 and user:
                    method, path, label, name = "POST", "/api/post/upload", "/api/post/upload", "upload"
                elif x < 0.424 and not user:
                    method, path, label, name = "POST", "/api/auth/register", "/api/auth/register", "signup"
                else:
                    path, label = APIS[int(x * 1000) % len(APIS)]
            elif roll < 0.98:
                kind_ = "error"
                if r() < 0.6:
                    nav, status, path, label, err = "document", 404, "/missing", "/missing", "not_found"
                else:
                    nav, status, path, label, err = "api", 503, "/api/boom", "/api", "upstream_5xx"
                    uid = user
            else:
                kind_, nav, vtype = "impression", "beacon", ("listing" if r() < 0.8 else "search")
                a = arts[n]
                ckind, cid = "artwork", artworks[a]
            append(
                (
                    ts,
                    kind_,
                    nav,
                    method,
                    path,
                    label,
                    status,
                    vids[v],
                    device,
                    browser,
                    os_name,
                    uid,
                    author,
                    ckind,
                    cid,
                    vtype,
                    country,
                    ref,
                    utm_s,
                    utm_m,
                    utm_c,
                    err,
                    name,
                    round(r() * 80, 3),
                    False,
                )
            )
        raw.sort(key=lambda t: t[0])  # a live sidecar writes in time order
        getrandbits = rng.getrandbits
        out = []
        out_append = out.append
        if backend == "postgres":
            fromts = datetime.fromtimestamp
            for t in raw:
                ts = t[0]
                when = fromts(ts, UTC).replace(tzinfo=None)
                out_append((_uuid7(ts, getrandbits(76)), when, day, when.hour, *t[1:]))
        else:
            daytext = day.isoformat()
            cache: dict[int, tuple[str, int]] = {}
            for t in raw:
                ts = t[0]
                second = int(ts)
                hit = cache.get(second)
                if hit is None:
                    g = time.gmtime(second)
                    hit = cache[second] = (time.strftime("%Y-%m-%d %H:%M:%S", g), g.tm_hour)
                micros = min(int((ts - second) * 1_000_000), 999_999)
                out_append((_uuid7(ts, getrandbits(76)), f"{hit[0]}.{micros:06d}", daytext, hit[1], *t[1:]))
                if len(cache) > 4096:
                    cache.clear()
        return out


def _uuid7(ts: float, bits: int) -> str:
    t = f"{int(ts * 1000) & 0xFFFFFFFFFFFF:012x}"
    r = f"{bits:019x}"
    return f"{t[:8]}-{t[8:]}-7{r[:3]}-{'89ab'[bits & 3]}{r[4:7]}-{r[7:19]}"


# --------------------------------------------------------------------------------------------------------------
# Databases and bulk inserts.
# --------------------------------------------------------------------------------------------------------------

_DATABASES: list[str] = []  # PostgreSQL databases this run created, dropped at the end (and by the watchdog)


def _admin_psql(sql: str) -> None:
    dsn = POSTGRES_ADMIN_URL
    subprocess.run(["psql", dsn, "-c", sql], capture_output=True, timeout=30, check=False)


async def create_pg_database() -> str:
    import asyncpg

    name = "trackside_bench_" + uuid.uuid4().hex[:10]
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    _DATABASES.append(name)
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


async def drop_pg_database(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    with contextlib.suppress(ValueError):
        _DATABASES.remove(name)


class Inserter:
    def __init__(self, backend: str, url: str) -> None:
        self.backend = backend
        self.url = url
        self.pg: Any = None
        self.lite: sqlite3.Connection | None = None

    async def open(self) -> None:
        if self.backend == "postgres":
            import asyncpg

            self.pg = await asyncpg.connect(self.url.replace("postgresql+asyncpg://", "postgresql://"))
        else:
            path = self.url.split(":///", 1)[1]
            self.lite = sqlite3.connect(path, isolation_level=None)
            self.lite.execute("PRAGMA journal_mode=WAL")
            self.lite.execute("PRAGMA synchronous=OFF")  # seeding only: this connection's writes

    async def close(self) -> None:
        if self.pg is not None:
            await self.pg.close()
        if self.lite is not None:
            self.lite.close()

    async def insert(self, rows: list[tuple[Any, ...]]) -> None:
        """One transaction per call (one day)."""
        if self.backend == "postgres":
            async with self.pg.transaction():
                for i in range(0, len(rows), 250_000):
                    await self.pg.copy_records_to_table("events", records=rows[i : i + 250_000], columns=list(_COLUMNS))
        else:
            assert self.lite is not None
            sql = "INSERT INTO events ({}) VALUES ({})".format(", ".join(_COLUMNS), ", ".join("?" for _ in _COLUMNS))
            self.lite.execute("BEGIN")
            self.lite.executemany(sql, rows)
            self.lite.execute("COMMIT")

    async def analyze(self) -> None:
        if self.backend == "postgres":
            await self.pg.execute("VACUUM ANALYZE")


def midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


async def seed(
    args: argparse.Namespace,
    backend: str,
    url: str,
    factory: EventFactory,
    report: dict[str, Any],
    deadline: float,
    measure_unrolled: Any,
) -> None:
    today = datetime.now(UTC).date()
    now = time.time()
    seeding: dict[str, Any] = report.setdefault("seeding", {})
    await migrate(url)
    ins = Inserter(backend, url)
    await ins.open()
    engine = create_engine(url)
    try:
        # 1. Older days: small, rolled up, raw events pruned (raw retention 7 days).
        t = time.monotonic()
        gen = 0.0
        older = [today - timedelta(days=d) for d in range(args.raw_days, args.raw_days + args.rolled_days)]
        per = args.rolled_events_per_day
        for day in older:
            g = time.monotonic()
            rows = factory.day_rows(day, per, visitors_for(args, per), midnight(day) + 86400, backend)
            gen += time.monotonic() - g
            await ins.insert(rows)
        del rows
        seeding["older_days"] = {
            "days": len(older),
            "events": per * len(older),
            "seconds": time.monotonic() - t,
            "generate_seconds": gen,
        }
        await bots(engine, older + [today - timedelta(days=d) for d in range(args.raw_days)])
        t = time.monotonic()
        done = await rollup_pending(engine, WINDOW, today=today)
        took = time.monotonic() - t
        seeding["older_rollup"] = {
            "days": len(done),
            "events": sum(r.events for r in done),
            "seconds": took,
            "seconds_per_million": took / max(sum(r.events for r in done), 1) * 1e6,
        }
        t = time.monotonic()
        pruned = await prune(engine, 7, 0, today=today)
        seeding["older_prune"] = {"raw_events": pruned.raw_events, "seconds": time.monotonic() - t}
        log(f"{backend}: {len(older)} older days seeded and rolled up ({took:.1f}s rollup); pruned {pruned.raw_events}")

        # 2. The last 7 days, today included: the raw events.
        per_day = args.events // args.raw_days
        t = time.monotonic()
        gen = ins_s = 0.0
        for d in range(args.raw_days - 1, -1, -1):
            day = today - timedelta(days=d)
            count = per_day + (args.events - per_day * args.raw_days if d == 0 else 0)
            g = time.monotonic()
            rows = factory.day_rows(
                day, count, visitors_for(args, count), now if d == 0 else midnight(day) + 86400, backend
            )
            i = time.monotonic()
            gen += i - g
            await ins.insert(rows)
            ins_s += time.monotonic() - i
            del rows
            gc.collect()
            log(f"{backend}: raw day {day} ({count} events) generated+inserted; {time.monotonic() - t:.0f}s so far")
            if time.monotonic() > deadline:
                raise TimeoutError("time budget spent while seeding")
        t2 = time.monotonic()
        await ins.analyze()
        seeding["raw"] = {
            "events": args.events,
            "days": args.raw_days,
            "today_events": args.events - per_day * (args.raw_days - 1),
            "generate_seconds": gen,
            "insert_seconds": ins_s,
            "insert_events_per_second": args.events / max(ins_s, 1e-9),
            "method": "COPY (asyncpg copy_records_to_table), one transaction per day"
            if backend == "postgres"
            else "sqlite3 executemany, one transaction per day",
            "vacuum_analyze_seconds": time.monotonic() - t2 if backend == "postgres" else None,
        }
        seeding["table_rows"] = await table_rows(engine)

        # 3. Optionally measure before the closed raw days are rolled up, then roll them up.
        if measure_unrolled is not None:
            await measure_unrolled()
        t = time.monotonic()
        done = await rollup_pending(
            engine, WINDOW, today=today, progress=lambda r: log(f"{backend}: rolled up {r.day}: {r.events} events")
        )
        took = time.monotonic() - t
        events = sum(r.events for r in done)
        seeding["raw_rollup"] = {
            "days": len(done),
            "events": events,
            "seconds": took,
            "seconds_per_million": took / max(events, 1) * 1e6,
        }
        seeding["table_rows_after_rollup"] = await table_rows(engine)
        if backend == "postgres":
            await ins.analyze()
    finally:
        await ins.close()
        await engine.dispose()


def visitors_for(args: argparse.Namespace, events: int) -> int:
    if args.visitors_per_day:
        return max(1, round(args.visitors_per_day * events / (args.events / args.raw_days)))
    return max(1, round(events / 4.76))  # 300k visitors a day at 10M events / 7 days


async def bots(engine: Any, days: list[date]) -> None:
    counts: Counter[tuple[date, str, str]] = Counter()
    rng = random.Random(1)
    for day in days:
        for bot in ("Googlebot", "bingbot", "GPTBot", "AhrefsBot", "YandexBot"):
            for label in ("/", "/p/[post]", "/u/[user]", "/hashtags/[tag]"):
                counts[(day, bot, label)] = rng.randint(10, 5000)
    async with engine.begin() as conn:
        await add_bot_hits(conn, counts)


async def table_rows(engine: Any) -> dict[str, int]:
    out = {}
    async with engine.connect() as conn:
        for table in (EVENTS, DAILY_SITE, DAILY_SITE_DIMS, DAILY_CONTENT, DAILY_CONTENT_DIMS):
            out[table.name] = int((await conn.execute(select(func.count()).select_from(table))).scalar() or 0)
    return out


# --------------------------------------------------------------------------------------------------------------
# Timing through a real sidecar.
# --------------------------------------------------------------------------------------------------------------


def bearer(sub: str, roles: list[str]) -> dict[str, str]:
    claims = {"sub": sub, "exp": int(time.time()) + 7200, "roles": roles}
    return {"authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}


def make_settings(url: str, upstream: str, spool: Path, overlay: tuple[str, ...]) -> Settings:
    return Settings(
        frontend_url=upstream,
        api_url=upstream,
        jwt_secret=SECRET,
        trust_roles_claim=True,  # the moderator tokens carry their role
        admin_token=ADMIN,
        database_url=url,
        spool_dir=str(spool),
        log_level="warning",
        stats_overlay=overlay,
        auto_migrate=False,
    )


async def wait_schedule_idle(timeout: float) -> float:
    """The embedded sidecar rolls up and prunes once at start-up: wait until that first pass is done (its task
    sleeps), so that it does not run under the measurements. Returns the seconds waited."""
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        task = next((x for x in asyncio.all_tasks() if x.get_name() == "trackside-schedule"), None)
        if task is None:
            return time.monotonic() - t
        coro: Any = task.get_coro()
        while coro is not None and hasattr(coro, "cr_code"):
            if coro.cr_code.co_name == "sleep":
                return time.monotonic() - t
            coro = coro.cr_await
        await asyncio.sleep(0.05)
    return time.monotonic() - t


class Timer:
    def __init__(self, client: httpx.AsyncClient, deadline: float) -> None:
        self.client = client
        self.deadline = deadline
        self.callers = 0

    def moderator(self) -> dict[str, str]:
        self.callers += 1
        return bearer(f"bench-mod-{self.callers}", ["user", "moderator"])

    async def call(
        self, method: str, path: str, headers: dict[str, str], body: Any = None, probe: bool = False
    ) -> dict[str, Any]:
        left = self.deadline - time.monotonic()
        if left <= 1:
            return {"ms": None, "status": None, "skipped": "time budget spent"}
        if probe:
            # The sidecar answers its health route on the same event loop as the stats and the proxy: the longest
            # a health request waits while the stats call runs is how long that loop (so the proxy) stood still.
            stop = asyncio.Event()
            waits: list[float] = []
            task = asyncio.create_task(self._probe(stop, waits))
            try:
                out = await self.call(method, path, headers, body)
            finally:
                stop.set()
                await task
            out["loop_stall_ms"] = round(max(waits) * 1000, 1) if waits else None
            out["probes"] = len(waits)
            return out
        load = os.getloadavg()[0]
        cpu = time.process_time()
        t = time.perf_counter()
        try:
            r = await self.client.request(method, path, headers=headers, json=body, timeout=min(left, 1800.0))
        except httpx.TimeoutException:
            return {"ms": None, "status": None, "skipped": "timed out (time budget)"}
        ms = (time.perf_counter() - t) * 1000
        # CPU of this process (sidecar and client both run here; the database server's is not included): a figure
        # that other load on the machine does not inflate the way it does wall time.
        cpu_ms = (time.process_time() - cpu) * 1000
        out = {
            "ms": round(ms, 1),
            "cpu_ms": round(cpu_ms, 1),
            "load1": load,
            "status": r.status_code,
            "bytes": len(r.content),
        }
        if r.status_code != 200:
            out["error"] = r.text[:200]
        return out

    async def _probe(self, stop: asyncio.Event, waits: list[float]) -> None:
        # Each round: one health request, then a 50 ms pause. A round that took longer than the request's own cost
        # plus the pause was held up by the loop, whether the hold-up hit the request or the pause.
        while not stop.is_set():
            t = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                await self.client.get("/_trackside/health", timeout=1800.0)
            paused = time.perf_counter()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
            end = time.perf_counter()
            waits.append((paused - t) + max(end - paused - 0.05, 0.0))


def _ms(calls: list[dict[str, Any]]) -> list[float]:
    return [c["ms"] for c in calls if c.get("ms") is not None and c.get("status") == 200]


async def time_seed_endpoint(timer: Timer, name: str, path: str, repeats: int) -> dict[str, Any]:
    who = timer.moderator()
    first = await timer.call("GET", path, who, probe=True)
    stall = first.get("loop_stall_ms")
    log(f"  {name}: cold {first.get('ms')} ms (status {first.get('status')}); loop stall {stall} ms")
    cached = [await timer.call("GET", path, who) for _ in range(3)]
    refreshed = []
    for _ in range(max(repeats - 1, 0)):
        refreshed.append(await timer.call("GET", path + "?refresh=true", timer.moderator()))
    return _timings(name, path, first, cached, refreshed, TARGET_SEED_MS)


def _timings(
    name: str, path: str, first: dict[str, Any], cached: list[Any], refreshed: list[Any], target_ms: float
) -> dict[str, Any]:
    """One endpoint's row: the cold call, the refreshed ones, the cached ones."""
    cold, warm = _ms([first]), _ms(refreshed)
    return {
        "endpoint": name,
        "path": path,
        "cold_ms": cold[0] if cold else None,
        "cold_cpu_ms": first.get("cpu_ms"),
        "loop_stall_ms": first.get("loop_stall_ms"),
        "cold_refresh_ms": warm,
        "cold_refresh_median_ms": statistics.median(warm) if warm else None,
        "cached_ms": statistics.median(_ms(cached)) if _ms(cached) else None,
        "target_ms": target_ms,
        "calls": {"first": first, "cached": cached, "refreshed": refreshed},
    }


QUERIES = (
    (
        "query: page_views+visitors by day, 30d",
        {"metrics": ["page_views", "visitors"], "dimensions": ["day"], "period": "30d"},
    ),
    (
        "query: page_views+visitors by label, 30d",
        {"metrics": ["page_views", "visitors"], "dimensions": ["label"], "period": "30d"},
    ),
    (
        "query: page_views+visitors by country, 30d",
        {"metrics": ["page_views", "visitors"], "dimensions": ["country"], "period": "30d"},
    ),
    (
        "query: content views by content, limit 20, 30d",
        {
            "metrics": ["content_views", "unique_viewers", "impressions"],
            "dimensions": ["content"],
            "period": "30d",
            "limit": 20,
        },
    ),
)


async def time_query(timer: Timer, name: str, method: str, path: str, body: Any, repeats: int) -> dict[str, Any]:
    """The first call (query cache cold), `repeats - 1` more with `?refresh=true`
    from a new moderator each (today derived anew), and the cached call (the median of 3 repeats of the first)."""
    admin = {"authorization": "Bearer " + ADMIN}
    first = await timer.call(method, path, admin, body, probe=True)
    refreshed = []
    for _ in range(max(repeats, 1) - 1):
        refreshed.append(await timer.call(method, _with_refresh(path), timer.moderator(), body))
    cached = [await timer.call(method, path, admin, body) for _ in range(3)]
    log(f"  {name}: cold {_ms([first])} ms, refreshed {_ms(refreshed)} ms, cached {_ms(cached)} ms")
    return {**_timings(name, path, first, cached, refreshed, TARGET_QUERY_MS), "body": body}


def _with_refresh(path: str) -> str:
    return path + ("&" if "?" in path else "?") + "refresh=true"


@contextlib.asynccontextmanager
async def sidecar(
    url: str, upstream: str, tmp: Path, overlay: tuple[str, ...]
) -> AsyncIterator[tuple[str, float, float]]:
    t = time.monotonic()
    spool = Path(tempfile.mkdtemp(dir=tmp, prefix="spool-"))
    async with run_sidecar(make_settings(url, upstream, spool, overlay)) as (base, _app):
        started = time.monotonic() - t
        waited = await wait_schedule_idle(600.0)
        yield base, started, waited


def top_items(factory: EventFactory) -> dict[str, str]:
    return {
        "artwork_top": factory.artworks[0],
        "artwork_rank100": factory.artworks[99],
        "artwork_rank5000": factory.artworks[min(4999, len(factory.artworks) - 1)],
        "blog_top": factory.blog_posts[0],
    }


async def measure_endpoints(
    url: str,
    upstream: str,
    tmp: Path,
    items: dict[str, str],
    args: argparse.Namespace,
    deadline: float,
    scenario: str,
    queries: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario": scenario, "rows": []}
    async with sidecar(url, upstream, tmp, ("artwork",)) as (base, started, waited):
        out["sidecar_start_seconds"] = started
        out["startup_schedule_seconds"] = waited
        log(f"sidecar up in {started:.1f}s; its start-up rollup/prune pass took {waited:.1f}s more ({scenario})")
        async with httpx.AsyncClient(base_url=base) as client:
            timer = Timer(client, deadline)
            seeds = (
                ("artwork (top, overlay)", f"/api/post/{items['artwork_top']}/stats"),
                ("artwork (rank 100, overlay)", f"/api/post/{items['artwork_rank100']}/stats"),
                ("artwork (rank 5000, overlay)", f"/api/post/{items['artwork_rank5000']}/stats"),
                ("blog post (top)", f"/api/blog-post/{items['blog_top']}/stats"),
                ("sitewide", "/api/admin/sitewide-stats"),
            )
            for name, path in seeds:
                out["rows"].append(await time_seed_endpoint(timer, name, path, args.repeats))
            if queries:
                for name, body in QUERIES:
                    out["rows"].append(
                        await time_query(timer, name, "POST", "/_trackside/api/v1/query", body, args.query_repeats)
                    )
                out["rows"].append(
                    await time_query(
                        timer,
                        "popular artworks, 30d, limit 10",
                        "GET",
                        "/_trackside/api/v1/popular?kind=artwork&period=30d&limit=10",
                        None,
                        args.query_repeats,
                    )
                )
    if args.overlay_off and time.monotonic() < deadline:
        async with sidecar(url, upstream, tmp, ()) as (base, _, _):
            async with httpx.AsyncClient(base_url=base) as client:
                timer = Timer(client, deadline)
                for name, key in (
                    ("artwork (top, no overlay)", "artwork_top"),
                    ("artwork (rank 100, no overlay)", "artwork_rank100"),
                ):
                    out["rows"].append(await time_seed_endpoint(timer, name, f"/api/post/{items[key]}/stats", 1))
    return out


async def measure_in_process(url: str, items: dict[str, str], deadline: float) -> dict[str, Any]:
    """Before the closed raw days are rolled up, a sidecar would roll them up at start-up: so the seed computations
    are timed in process instead (the same functions the endpoints call, without HTTP, auth and cache)."""
    engine = create_engine(url)
    rows = []
    try:
        for name, kind, item in (
            ("artwork (top)", "artwork", items["artwork_top"]),
            ("artwork (rank 100)", "artwork", items["artwork_rank100"]),
            ("blog post (top)", "blog_post", items["blog_top"]),
            ("sitewide", None, None),
        ):
            if time.monotonic() > deadline:
                break
            now = datetime.now(UTC)
            cpu = time.process_time()
            t = time.perf_counter()
            async with snapshot(engine) as conn:
                if kind is None:
                    await site_stats(conn, now=now, window_seconds=WINDOW)
                else:
                    await item_stats(conn, kind, item, now=now, window_seconds=WINDOW)
            ms = (time.perf_counter() - t) * 1000
            cpu_ms = (time.process_time() - cpu) * 1000
            log(f"  {name} (7 raw days, in process): {ms:.0f} ms")
            rows.append(
                {
                    "endpoint": name + " [in process]",
                    "cold_ms": round(ms, 1),
                    "cold_cpu_ms": round(cpu_ms, 1),
                    "cold_refresh_ms": [],
                    "cold_refresh_median_ms": None,
                    "cached_ms": None,
                    "target_ms": TARGET_SEED_MS,
                }
            )
    finally:
        await engine.dispose()
    return {"scenario": "7 raw days read live (before rollup), computed in process", "rows": rows}


# --------------------------------------------------------------------------------------------------------------
# Profile: where a 30-day read spends its time, in process.
# --------------------------------------------------------------------------------------------------------------


async def profile(
    url: str, backend: str, items: dict[str, str], results_dir: Path, deadline: float, full: bool
) -> dict[str, Any]:
    engine = create_engine(url)
    out: dict[str, Any] = {}
    now = datetime.now(UTC)
    today = now.date()
    first = today - timedelta(days=29)
    try:
        async with snapshot(engine) as conn:
            # Today, live: the phases of `live_day`.
            t = time.perf_counter()
            cols = ", ".join(c.name for c in EVENTS.c if c.name not in ("day", "hour"))
            driver_rows = (
                await conn.exec_driver_sql(
                    f"SELECT {cols} FROM events WHERE day = {param(backend)}",
                    (today if backend == "postgres" else today.isoformat(),),
                )
            ).all()
            out["today_driver_fetch_s"] = time.perf_counter() - t
            out["today_events"] = len(driver_rows)
            del driver_rows
            gc.collect()
            t = time.perf_counter()
            events = await day_events(conn, today)
            out["today_day_events_s"] = time.perf_counter() - t  # SQL + SQLAlchemy rows + dict + Event objects
            t = time.perf_counter()
            views = derive_day(events, WINDOW)
            out["today_derive_day_s"] = time.perf_counter() - t
            t = time.perf_counter()
            site = aggregate_day(today, events, views, await day_bot_hits(conn, today))
            out["today_aggregate_day_s"] = time.perf_counter() - t
            t = time.perf_counter()
            figures_of(site)
            out["today_figures_of_s"] = time.perf_counter() - t
            out["today_page_views"] = site.page_views
            out["today_looks"] = len(views.looks)
            out["today_items"] = len(site.items)
            del events, views, site
            gc.collect()
            if time.monotonic() > deadline:
                return out
            # The 29 rolled days: 4 queries per day, timed per table.
            rolled = await rolled_days(conn, first, today)
            per_table: dict[str, list[float]] = {}
            counts: dict[str, int] = {}
            for table in (DAILY_SITE, DAILY_SITE_DIMS, DAILY_CONTENT, DAILY_CONTENT_DIMS):
                t = time.perf_counter()
                n = 0
                for day in sorted(rolled):
                    n += len((await conn.execute(select(table).where(table.c.day == day))).mappings().all())
                per_table[table.name] = [time.perf_counter() - t]
                counts[table.name] = n
            out["rolled_days"] = len(rolled)
            out["rolled_rows_read"] = counts
            out["rolled_read_s_by_table"] = {k: v[0] for k, v in per_table.items()}
            t = time.perf_counter()
            for day in sorted(rolled):
                await rolled_day(conn, day)
            out["rolled_day_x29_s"] = time.perf_counter() - t
            if full:  # the rolled days plus today once more: skipped on big runs (it is the sum of the above)
                t = time.perf_counter()
                await load_days(conn, first, today, WINDOW)
                out["load_days_30_s"] = time.perf_counter() - t
            # One item's today: its own events, and the signed-in events of its visitors (chunks of 500).
            for key in ("artwork_top", "artwork_rank100", "blog_top"):
                kind = "blog_post" if key.startswith("blog") else "artwork"
                t = time.perf_counter()
                evs = await item_day_events(conn, today, kind, items[key])
                took = time.perf_counter() - t
                own = sum(1 for e in evs if e.content_id == items[key])
                visitors = len({e.visitor for e in evs if e.content_id == items[key]})
                t = time.perf_counter()
                figures_of(aggregate_day(today, evs, derive_day(evs, WINDOW)))
                derive = time.perf_counter() - t
                t = time.perf_counter()
                await item_days(conn, kind, items[key], first, today, WINDOW)
                whole = time.perf_counter() - t
                out[f"item_{key}"] = {
                    "events_read": len(evs),
                    "own_events": own,
                    "visitors": visitors,
                    "visitor_chunk_queries": (visitors + 499) // 500,
                    "item_day_events_s": took,
                    "derive_aggregate_s": derive,
                    "item_days_30_s": whole,
                }
            # What SQL-side aggregation of today would cost: the GROUP BYs the live day needs, in the database.
            out["sql_side"] = await sql_side(conn, backend, today)
        if full and time.monotonic() < deadline:
            out["pyinstrument"] = await pyinstrument_profiles(engine, backend, items, results_dir, now)
    finally:
        await engine.dispose()
    return out


def param(backend: str) -> str:
    return "$1" if backend == "postgres" else "?"


async def sql_side(conn: Any, backend: str, today: date) -> dict[str, Any]:
    """Counts and distinct visitors of today by dimension, computed by the database (no view derivation: an
    estimate of the floor of an SQL-side live day; RSC echoes, beacon claims and lent users are not applied)."""
    day = today if backend == "postgres" else today.isoformat()
    p = param(backend)
    where = f"FROM events WHERE day = {p}"
    pv = f"{where} AND kind = 'page_view'"
    queries = {
        "site totals (count, distinct visitors/users by kind)": (
            f"SELECT kind, count(*), count(DISTINCT visitor), count(DISTINCT user_id) {where} GROUP BY kind"
        ),
        "page views by label (count, distinct visitors)": (
            f"SELECT label, count(*), count(DISTINCT visitor) {pv} GROUP BY label"
        ),
        "page views by country": f"SELECT country, count(*), count(DISTINCT visitor) {pv} GROUP BY country",
        "page views by hour": f"SELECT hour, count(*), count(DISTINCT visitor) {pv} GROUP BY hour",
        "content looks approx (distinct visitor per item)": (
            f"SELECT content_kind, content_id, count(DISTINCT visitor) {where} AND content_id IS NOT NULL "
            "GROUP BY content_kind, content_id"
        ),
    }
    out = {}
    for name, sql in queries.items():
        t = time.perf_counter()
        rows = (await conn.exec_driver_sql(sql, (day,))).all()
        out[name] = {"seconds": round(time.perf_counter() - t, 3), "rows": len(rows)}
    return out


async def pyinstrument_profiles(
    engine: Any, backend: str, items: dict[str, str], results_dir: Path, now: datetime
) -> dict[str, str]:
    try:
        from pyinstrument import Profiler
    except ImportError:
        return {"skipped": "pyinstrument is not installed (.venv/bin/pip install pyinstrument)"}
    out = {}
    for name, run in (
        ("site_stats", lambda conn: site_stats(conn, now=now, window_seconds=WINDOW)),
        (
            "item_stats_top_artwork",
            lambda conn: item_stats(conn, "artwork", items["artwork_top"], now=now, window_seconds=WINDOW),
        ),
    ):
        profiler = Profiler(interval=0.005, async_mode="enabled")
        async with snapshot(engine) as conn:
            profiler.start()
            await run(conn)
            profiler.stop()
        path = results_dir / f"stats-profile-{backend}-{name}.txt"
        path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
        out[name] = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
    return out


# --------------------------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------------------------


async def run_backend(args: argparse.Namespace, backend: str, tmp: Path, deadline: float) -> dict[str, Any]:
    report: dict[str, Any] = {"backend": backend}
    factory = EventFactory(args.seed, args.artworks, args.blog_posts, args.users, args.zipf)
    items = top_items(factory)
    report["items"] = items
    url = await create_pg_database() if backend == "postgres" else f"sqlite+aiosqlite:///{tmp / 'stats-bench.db'}"
    report["database"] = url.rsplit("/", 1)[1]
    try:
        async with run_server(upstream_asgi) as upstream:
            unrolled = None
            if args.unrolled:

                async def unrolled() -> None:
                    log(f"{backend}: timing the seed computations before the closed raw days are rolled up")
                    report["unrolled"] = await measure_in_process(url, items, deadline)

            await seed(args, backend, url, factory, report, deadline, unrolled)
            log(f"{backend}: seeded: {report['seeding'].get('table_rows_after_rollup')}")
            if time.monotonic() < deadline:
                report["rolled"] = await measure_endpoints(
                    url, upstream, tmp, items, args, deadline, "6 closed days rolled up, today raw", True
                )
            if args.profile and time.monotonic() < deadline:
                log(f"{backend}: profiling")
                report["profile"] = await profile(
                    url, backend, items, Path(args.out).parent, deadline, args.events <= 2_000_000 or args.full_profile
                )
        if backend == "sqlite":
            db = Path(url.split(":///", 1)[1])
            report["sqlite_bytes"] = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    except TimeoutError as exc:
        report["error"] = str(exc)
        log(f"{backend}: {exc}")
    finally:
        if backend == "postgres":
            with contextlib.suppress(Exception):
                async with create_engine(url).connect() as conn:
                    report["postgres_bytes"] = (
                        await conn.execute(text("SELECT pg_database_size(current_database())"))
                    ).scalar()
            await drop_pg_database(url)
        else:
            for p in tmp.glob("stats-bench.db*"):
                p.unlink()
    return report


def fmt(ms: Any) -> str:
    return "—" if ms is None else f"{ms:,.0f}" if ms >= 100 else f"{ms:,.1f}"


def markdown(reports: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | scenario | endpoint | cold ms (first) | its CPU ms | loop stall ms | cold ms (refresh, median) "
        "| cached ms | target | pass |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for rep in reports:
        for key in ("rolled", "unrolled"):
            part = rep.get(key)
            if not part:
                continue
            scenario = "today raw" if key == "rolled" else "7 days raw"
            for row in part["rows"]:
                cold = row["cold_ms"]
                ok = "—" if cold is None else ("pass" if cold <= row["target_ms"] else "FAIL")
                cached = row["cached_ms"] if row["cached_ms"] is not None else None
                lines.append(
                    f"| {rep['backend']} | {scenario} | {row['endpoint']} | {fmt(cold)} | "
                    f"{fmt(row.get('cold_cpu_ms'))} | {fmt(row.get('loop_stall_ms'))} | "
                    f"{fmt(row['cold_refresh_median_ms'])} | {fmt(cached) if cached is not None else 'no cache'} | "
                    f"{row['target_ms']:.0f} | {ok} |"
                )
    return "\n".join(lines)


def seeding_table(reports: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | raw events | insert s | events/s | rollup s (6 raw days) | rollup s per M events "
        "| older days rollup s per M |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rep in reports:
        s = rep.get("seeding", {})
        raw, rr, orr = s.get("raw", {}), s.get("raw_rollup", {}), s.get("older_rollup", {})
        if not raw:
            continue
        lines.append(
            f"| {rep['backend']} | {raw.get('events', 0):,} | {raw.get('insert_seconds', 0):.1f} | "
            f"{raw.get('insert_events_per_second', 0):,.0f} | {rr.get('seconds', 0):.1f} | "
            f"{rr.get('seconds_per_million', 0):.1f} | {orr.get('seconds_per_million', 0):.1f} |"
        )
    return "\n".join(lines)


def watchdog(seconds: float) -> threading.Timer:
    """Past the budget and a grace: drop the databases we made and leave, whatever the event loop is doing."""

    def fire() -> None:
        log("watchdog: time budget exceeded by far; dropping the bench databases and exiting")
        for name in list(_DATABASES):
            _admin_psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def git_state() -> dict[str, Any]:
    """The commit and the files that differ from it, taken when the run starts (the code it imports)."""
    out: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        argv = ["git", "-C", str(REPO)]
        out["commit"] = subprocess.run([*argv, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout
        out["commit"] = out["commit"].strip() or None
        status = subprocess.run([*argv, "status", "--porcelain"], capture_output=True, text=True, timeout=5).stdout
        out["dirty_files"] = [line[3:] for line in status.splitlines()]
    return out


GIT_AT_START = git_state()


async def main(args: argparse.Namespace) -> int:
    deadline = T0 + args.max_seconds
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="trackside-stats-bench-"))
    reports = []
    try:
        for backend in args.backends.split(","):
            if time.monotonic() > deadline:
                reports.append({"backend": backend, "error": "skipped: time budget spent"})
                continue
            log(f"=== {backend}: {args.events:,} raw events over {args.raw_days} days + {args.rolled_days} rolled days")
            reports.append(await run_backend(args, backend, tmp, deadline))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "when": datetime.now(UTC).isoformat(),
        "git": GIT_AT_START,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_average_at_start": LOAD0,
        "load_average_at_end": os.getloadavg(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "config": {k: v for k, v in vars(args).items()},
        "elapsed_seconds": time.monotonic() - T0,
        "reports": reports,
    }
    out.write_text(json.dumps(result, indent=2, default=str))
    print(seeding_table(reports))
    print()
    print(markdown(reports))
    print(f"\nJSON: {out}", file=sys.stderr)
    return 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="postgres,sqlite", help="comma-separated: postgres, sqlite")
    p.add_argument("--events", type=int, default=10_000_000, help="raw events over the last --raw-days days")
    p.add_argument("--raw-days", type=int, default=7, help="days of raw events, today included")
    p.add_argument("--rolled-days", type=int, default=30, help="older days seeded small and rolled up")
    p.add_argument("--rolled-events-per-day", type=int, default=100_000)
    p.add_argument(
        "--visitors-per-day",
        type=int,
        default=0,
        help="distinct visitors on a raw day (default: events per day / 4.76, 300k at 10M)",
    )
    p.add_argument("--artworks", type=int, default=20_000)
    p.add_argument("--blog-posts", type=int, default=500)
    p.add_argument("--users", type=int, default=60_000, help="signed-in user pool (5%% of visitors are signed in)")
    p.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of content popularity")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2, help="cold calls per seed endpoint (the first + refreshes)")
    p.add_argument(
        "--query-repeats", type=int, default=1, help="cold calls per query API request: the first, then ?refresh=true"
    )
    p.add_argument(
        "--unrolled",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time the seed endpoints before the closed raw days are rolled up (default: <= 2M events)",
    )
    p.add_argument(
        "--overlay-off",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time artworks with TRACKSIDE_STATS_OVERLAY empty",
    )
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--full-profile",
        action="store_true",
        help="pyinstrument profiles and a whole load_days even above 2M events (each costs a live day)",
    )
    p.add_argument("--max-seconds", type=float, default=1800.0, help="time budget of the whole run")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "stats.json"))
    args = p.parse_args()
    if args.unrolled is None:
        args.unrolled = args.events <= 2_000_000
    return args


if __name__ == "__main__":
    arguments = parse_args()
    dog = watchdog(arguments.max_seconds + 300)
    try:
        code = asyncio.run(main(arguments))
    finally:
        dog.cancel()
        for leftover in list(_DATABASES):
            _admin_psql(f'DROP DATABASE IF EXISTS "{leftover}" WITH (FORCE)')
    sys.exit(code)
