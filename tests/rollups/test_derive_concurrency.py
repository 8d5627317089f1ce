"""Facts at ingest are correct under concurrency and in any order: one set of events written in time
order in one batch, shuffled into many batches, with batches repeated, with some events late (after
the others, and after their day's rollup), by two real `trackside worker` processes at once
(`max_jobs` 4), and through a worker SIGKILLed mid-batch, ends in the same fact rows: exactly the
derivation of every visitor-day from all its events. Both backends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import uuid
from calendar import timegm
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import REQUIRE_SERVICES, _drop_postgres_database, _postgres_database, wait_for
from tests.rollups.redis_server import RedisServer, count_events, queue_pool, run_burst_worker
from tests.servers import clean_env
from tests.storing import write_batch
from trackside.batch import Batch
from trackside.derive import Derivation, derivation_of
from trackside.events import Event
from trackside.queue import RedisWriter
from trackside.rollup import rollup_day
from trackside.settings import Settings
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.tables import FACT_TABLES

REPO = Path(__file__).resolve().parents[2]
IN_PROGRESS = "arq:in-progress:"
PATHS = ["/", "/p/a1", "/p/b2", "/p/c3", "/u/ann", "/hashtags/pixel", "/about", "/b/news"]
# Times are whole 64ths of a second: exact as floats and as microseconds, so every backend stores
# exactly these times (SQLite's writer truncates to the microsecond below, PostgreSQL's rounds).
TICK = 1 / 64
STEPS = [0.5, 3.0, 9.5, 42.0, 300.0, 1800 - TICK, 1800.0, 1800 + TICK, 1801.0]
GAPS = [1800.0, 1800 + TICK, 1801.0, 3600.0, 7200.0, 5 * 3600.0]
Rows = dict[str, list[tuple[Any, ...]]]


def q(seconds: float) -> float:
    return round(seconds / TICK) * TICK


def _stamp(day: date, seconds: float) -> float:
    """A time the way storage reads it back (whole seconds, then microseconds), so the derivation
    of these events and of the stored ones see the same floats."""
    whole, ticks = divmod(round(seconds / TICK), 64)
    return timegm(day.timetuple()) + whole + ticks * 15625 / 1e6


def traffic(seed: int = 11, visitors: int = 40) -> list[Event]:
    """Visitors of yesterday (a closed day) and today (UTC), some across midnight: documents, RSC
    fetches echoing them, snippet beacons (echoes, client-side navigations, token-less ones), API
    polling signed in and out, signups, errors, impressions, looks, gaps just under, at and over
    30 minutes."""
    rng = random.Random(seed)
    today = datetime.now(UTC).date()
    out: list[Event] = []

    def add(day: date, t: float, visitor: str, path: str, kind: str, nav: str, **fields: Any) -> None:
        ids = (rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(12), rng.getrandbits(12), rng.getrandbits(48))
        content = ("artwork", path.rsplit("/", 1)[1]) if path.startswith(("/p/", "/api/p/")) else (None, None)
        out.append(
            Event(
                id="%08x-%04x-7%03x-8%03x-%012x" % ids,  # noqa: UP031
                ts=_stamp(day, t),
                kind=kind,
                nav=nav,
                method=fields.pop("method", "GET"),
                path=path,
                label=path if content[0] is None else "/p/[post]",
                status=fields.pop("status", 200),
                visitor=visitor,
                device=fields.pop("device", "desktop"),
                browser="Firefox",
                os="Linux",
                content_kind=content[0],
                content_id=content[1],
                **fields,
            )
        )

    for v in range(visitors):
        visitor = f"{rng.getrandbits(128):032x}"
        user = f"user{v}" if v % 3 == 0 else None
        day = today - timedelta(days=1) if v % 2 else today
        t = 86_400 - 1500.0 if v % 10 == 1 else q(rng.uniform(0, 70_000))
        device = rng.choice(["desktop", "mobile"])
        for _visit in range(rng.randint(1, 4)):
            referrer = rng.choice([None, "google.com", "news.ycombinator.com"])
            for page in range(rng.randint(1, 6)):
                # Past midnight: the next UTC day (a new visitor-day; the real visitor id would change too).
                d, s = (day, t) if t < 86_400 else (day + timedelta(days=1), t - 86_400)
                path = rng.choice(PATHS)
                nav = rng.choice(["document", "document", "rsc", "data"])
                first = referrer if page == 0 else None
                if nav == "rsc" and rng.random() < 0.5:  # Next 16: an RSC fetch, then its document
                    add(d, s, visitor, path, "page_view", "rsc", device=device)
                    s = q(s + 1.5)
                    nav = "document"
                add(d, s, visitor, path, "page_view", nav, referrer=first, utm_source="mail" if first else None,
                    device=device)  # fmt: skip
                if rng.random() < 0.4:  # the snippet's beacon of the same navigation
                    add(d, q(s + rng.uniform(0.1, 4)), visitor, path, "page_view", "beacon", device=device)
                if rng.random() < 0.15:  # a client-side navigation only the snippet saw
                    add(d, q(s + 20), visitor, rng.choice(PATHS), "page_view", "beacon", device=device)
                for i in range(rng.randint(0, 4)):  # API polling
                    signed = user if rng.random() < 0.5 else None
                    add(d, q(s + 5 + 7 * i), visitor, "/api/feed", "api_call", "api", user_id=signed)
                if user and rng.random() < 0.3:
                    add(d, q(s + 2), visitor, "/api/p/a1", "api_call", "api", user_id=user, author_id="user0")
                if rng.random() < 0.08:
                    add(d, q(s + 30), visitor, "/api/auth/register", "api_call", "api", method="POST",
                        event_name="signup")  # fmt: skip
                if rng.random() < 0.06:
                    add(d, q(s + 31), visitor, "/api/feed", "error", "api", status=500, error_type="http_500")
                if rng.random() < 0.1:
                    add(d, q(s + 2), visitor, "/p/c3", "impression", "other")
                t = q(t + rng.choice(STEPS))
            t = q(t + rng.choice(GAPS))
        if v % 7 == 0:  # a token-less beacon: counted only if the proxy saw this visitor near it
            d, s = (day, min(t, 86_399.0))
            add(d, s if v % 14 else 10.0, visitor, "/p/b2", "page_view", "beacon", unverified=True)
    return out


def expected_rows(events: list[Event], derivation: Derivation) -> Rows:
    """Each fact table's rows (in column order, sorted): every visitor-day derived from all its events."""
    by_key: dict[tuple[date, str], list[Event]] = defaultdict(list)
    for e in events:
        by_key[(e.day, e.visitor)].append(e)
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (day, visitor), mine in sorted(by_key.items()):
        f = derivation.visitor_day(day, visitor, mine)
        rows["fact_page_views"] += f.page_views
        rows["fact_looks"] += f.looks
        rows["fact_impressions"] += f.impressions
        rows["fact_site_events"] += f.site_events
        rows["fact_visits"] += f.visits
        if f.visitor_day is not None and f.visitor_day["api_calls"]:
            rows["fact_visitor_days"].append(f.visitor_day)
    return {t.name: sorted(tuple(r[c.name] for c in t.columns) for r in rows[t.name]) for t in FACT_TABLES}


async def stored_rows(database_url: str) -> Rows:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return {t.name: sorted(tuple(r) for r in (await conn.execute(select(t))).all()) for t in FACT_TABLES}
    finally:
        await engine.dispose()


def assert_same(stored: Rows, expected: Rows) -> None:
    for name in expected:
        missing = [r for r in expected[name] if r not in stored[name]]
        extra = [r for r in stored[name] if r not in expected[name]]
        assert (missing[:3], extra[:3]) == ([], []), f"{name}: {len(missing)} missing, {len(extra)} extra"
    assert stored == expected


@contextlib.asynccontextmanager
async def fresh_database(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """Another empty, migrated database of the kind under test."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/{uuid.uuid4().hex[:8]}.db"
        await migrate(url)
        yield url
        return
    url = await _postgres_database()
    if url is None:
        if REQUIRE_SERVICES:
            pytest.fail("PostgreSQL is required and not reachable")
        pytest.skip("PostgreSQL not reachable")
    try:
        await migrate(url)
        yield url
    finally:
        await _drop_postgres_database(url)


def _kind(database_url: str) -> str:
    return "postgres" if database_url.startswith("postgresql") else "sqlite"


def split(events: list[Event], rng: random.Random, largest: int = 25) -> list[list[Event]]:
    shuffled = events[:]
    rng.shuffle(shuffled)
    batches, i = [], 0
    while i < len(shuffled):
        n = rng.randint(1, largest)
        batches.append(shuffled[i : i + n])
        i += n
    return batches


async def _write_all(url: str, batches: list[list[Event]], derivation: Derivation) -> None:
    engine = create_engine(url)
    try:
        for events in batches:
            await write_batch(engine, Batch(events=events), derivation)
    finally:
        await engine.dispose()


@pytest.mark.timeout(300)
async def test_any_order_repeats_and_late_events_give_the_same_facts(database_url, tmp_path):
    events = traffic()
    derivation = derivation_of(Settings())
    expected = expected_rows(events, derivation)
    assert len(expected["fact_visits"]) > 60 and len(expected["fact_page_views"]) > 300
    assert any(r[0] > min(r[0] for r in expected["fact_visits"]) for r in expected["fact_visits"])  # two days at least
    rng = random.Random(5)
    kind = _kind(database_url)
    await migrate(database_url)

    # (a) In time order, one batch.
    ordered = sorted(events, key=lambda e: (e.ts, e.id))
    await _write_all(database_url, [ordered], derivation)
    reference = await stored_rows(database_url)
    assert_same(reference, expected)

    # (b) Shuffled into many batches; (c) the same with batches repeated, some right away, some
    # at the end (a retried job, a spool replayed).
    async with fresh_database(kind, tmp_path) as url:
        await _write_all(url, split(events, rng), derivation)
        assert await stored_rows(url) == reference
    async with fresh_database(kind, tmp_path) as url:
        batches = split(events, rng)
        repeated = []
        for b in batches:
            repeated.append(b)
            if rng.random() < 0.2:
                repeated.append(b)
        repeated += rng.sample(batches, 15)
        await _write_all(url, repeated, derivation)
        assert await stored_rows(url) == reference

    # (d) Late: a fifth of the events (random, so they land inside visits and gaps) after all the
    # rest; yesterday's closed day rolled up in between, so its late events find it rolled.
    async with fresh_database(kind, tmp_path) as url:
        late = set(rng.sample(range(len(events)), len(events) // 5))
        first = [e for i, e in enumerate(events) if i not in late]
        await _write_all(url, split(first, rng), derivation)
        engine = create_engine(url)
        try:
            await rollup_day(engine, datetime.now(UTC).date() - timedelta(days=1), 1800.0)
        finally:
            await engine.dispose()
        await _write_all(url, split([events[i] for i in sorted(late)], rng, largest=5), derivation)
        assert await stored_rows(url) == reference


async def _enqueue(settings: Settings, batches: list[list[Event]]) -> None:
    writer = RedisWriter(settings.redis_url, settings.queue_name)
    try:
        for events in batches:
            assert await writer.write(Batch(events=events)) is not None
    finally:
        await writer.close()


def _start_worker(settings: Settings, log: Path, *, burst: bool) -> subprocess.Popen[bytes]:
    env = {
        **clean_env(),
        "TRACKSIDE_REDIS_URL": settings.redis_url or "",
        "TRACKSIDE_DATABASE_URL": settings.database_url,
        "TRACKSIDE_QUEUE_NAME": settings.queue_name,
        "TRACKSIDE_SPOOL_DIR": settings.spool_dir,
        "TRACKSIDE_LOG_LEVEL": "info",
    }
    argv = [sys.executable, "-m", "sidecar", "worker", *(["--burst"] if burst else [])]
    argv += ["--health-file", str(log.with_suffix(".health.json"))]
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def _end(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.mark.redis
@pytest.mark.timeout(300)
async def test_two_worker_processes_store_the_same_facts(make_settings, database_url, tmp_path):
    """Shuffled, repeated batches through the queue, drained by two `trackside worker --burst`
    processes at once, each running up to 4 batches at a time (arq's max_jobs)."""
    events = traffic(seed=23)
    rng = random.Random(8)
    batches = split(events, rng, largest=40)
    batches += rng.sample(batches, 20)
    rng.shuffle(batches)
    procs: list[subprocess.Popen[bytes]] = []
    with RedisServer(tmp_path / "redis") as redis:
        settings = make_settings(
            redis_url=redis.url, queue_name=f"trackside-test:{uuid.uuid4().hex[:12]}", database_url=database_url
        )
        expected = expected_rows(events, derivation_of(settings))
        await migrate(database_url)
        await _enqueue(settings, batches)
        try:
            procs = [_start_worker(settings, tmp_path / f"worker-{i}.log", burst=True) for i in range(2)]
            for i, proc in enumerate(procs):
                try:
                    rc = await asyncio.to_thread(proc.wait, 240)
                except subprocess.TimeoutExpired:
                    rc = None
                log = (tmp_path / f"worker-{i}.log").read_text(errors="replace")
                assert rc == 0, log[-3000:]
            logs = [(tmp_path / f"worker-{i}.log").read_text(errors="replace") for i in range(2)]
            # Both took part (each logs the batches it ran).
            assert all("persist_batch" in log for log in logs), [log[-1500:] for log in logs]
        finally:
            for proc in procs:
                _end(proc)
        pool = await queue_pool(settings)
        try:
            assert await pool.zcard(settings.queue_name) == 0
        finally:
            await pool.aclose()
    assert await count_events(database_url) == len(events)
    assert_same(await stored_rows(database_url), expected)


@pytest.mark.redis
@pytest.mark.timeout(300)
async def test_a_worker_killed_mid_batch_leaves_the_same_facts_after_the_retry(make_settings, database_url, tmp_path):
    """SIGKILL while batches are in flight: their transactions go with the process (no events and
    no facts of them), arq runs them again, and the facts are those of a clean run."""
    events = traffic(seed=31, visitors=160)
    rng = random.Random(9)
    batches = split(events, rng, largest=300)
    worker: subprocess.Popen[bytes] | None = None
    with RedisServer(tmp_path / "redis") as redis:
        settings = make_settings(
            redis_url=redis.url, queue_name=f"trackside-test:{uuid.uuid4().hex[:12]}", database_url=database_url
        )
        expected = expected_rows(events, derivation_of(settings))
        await migrate(database_url)
        await _enqueue(settings, batches)
        pool = await queue_pool(settings)
        try:
            locked: list[bytes] = []
            stored = 0
            for attempt in range(6):
                worker = _start_worker(settings, tmp_path / f"killed-{attempt}.log", burst=False)

                async def in_flight(proc: subprocess.Popen[bytes] = worker, before: int = stored) -> bool:
                    assert proc.poll() is None, f"worker exited with {proc.returncode}"
                    if await count_events(database_url) <= before:
                        return False
                    return bool(await pool.keys(IN_PROGRESS + "batch:*"))

                await wait_for(in_flight, timeout=60)
                os.kill(worker.pid, signal.SIGKILL)
                assert worker.wait(timeout=10) == -signal.SIGKILL
                worker = None
                stored = await count_events(database_url)
                locked = await pool.keys(IN_PROGRESS + "batch:*")
                if locked:
                    break
            assert locked, "no batch was in flight at any of the kills"
            assert stored < len(events)
            # The killed jobs' locks expire (five minutes, simulated), and a worker finishes the queue.
            for key in await pool.keys(IN_PROGRESS + "*"):  # the batches', and the start-up rollup's
                assert await pool.pexpire(key, 1)
            await asyncio.sleep(0.05)
            done = await run_burst_worker(settings, timeout=180, crons=True)
            assert (done.jobs_failed, done.jobs_retried) == (0, 0)
            assert await pool.zcard(settings.queue_name) == 0
        finally:
            _end(worker)
            await pool.aclose()
    assert await count_events(database_url) == len(events)
    assert_same(await stored_rows(database_url), expected)
