"""Ingest benchmark of facts at ingest: store a realistic time-ordered stream (which queues its visitor-days),
then derive the queue; and one worker keeping pace with a sidecar's rate.

Run from the repository root:

    .venv/bin/python bench/derive_bench.py                                  # both parts, PostgreSQL and SQLite
    .venv/bin/python bench/derive_bench.py --parts store --backends postgres --seconds 20
    .venv/bin/python bench/derive_bench.py --parts pace --rate 12000 --seconds 60
    .venv/bin/python bench/derive_bench.py --parts pace --before /tmp/before --rounds 2 --reuse /tmp/derive-reuse

Traffic (`bench/realistic_day.py`): visits starting at a steady rate, each a few page views of one visitor with
the API calls every page makes, impressions, errors, 8% signed in, a third of the visitors back from earlier
that day; `--rate` events a second of site time, cut into batches of `--batch-seconds` (the flusher's: 1 s of
traffic). What the database holds before the window (the touched visitor-days' earlier events) is stored first
with COPY (PostgreSQL) or executemany (SQLite), and derived whole (timed, reported apart).

Parts:
- `store`: the window's batches through `trackside.storage.writes.write_batch`, back to back in this process, as
  fast as they go: events/s stored and queued (`derive_marks`), batch seconds p50/p99/max. Then the deriver
  (`trackside.deriver.Deriver`, its `round()` again and again, as its `run()` does without the pauses) drains
  the queue until nothing is queued: events/s and visitor-days/s derived, raw rows re-read per stored event
  (the sum of every `Round.rows`, kept by wrapping the name `commit_round` the deriver calls), rounds' time
  p50/p99/max, and the time spent waiting for heavy visitor-days to cool off.
- `pace`: PostgreSQL. A private redis-server, one `trackside worker` (`python -m sidecar worker`, defaults: it
  stores the jobs and runs the deriver beside them), the window's batches enqueued with `RedisWriter` at their
  real pace (one every `--batch-seconds`). Every 0.5 s: the Redis queue's depth (`ZCARD`) and the derive
  backlog (marks queued, and the age of the oldest: how late the figures are). Then how long each takes to
  empty after the feed, and the worker's CPU and peak RSS (VmHWM).

CPU: besides this process's (store) or the worker's (pace), the PostgreSQL backends' serving the bench's database
(`PgCpu`: utime+stime from /proc), so that an event's cost to the machine is their sum. `--before DIR --rounds N`:
pace runs of this checkout and of DIR's, interleaved, each on a copy of one prepared database; `--reuse DIR` keeps
that database and the traffic for later runs (PostgreSQL); `--profile FILE`: a cProfile of the store part's drain.

Statistics: the events are analyzed after a bulk load, the fact tables every 20 s while a derivation runs and
everything once derived, as autovacuum would (it is off on the machine these figures come from).

Each PostgreSQL database is `trackside_bench_<random>` (fresh per measurement, dropped at the end); SQLite files
live in a temp dir. Prints a Markdown table, writes JSON to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pipeline_bench as plb  # bench/ is sys.path[0]: databases, redis-server and the worker's command line
import proxy_bench as pb
from realistic_day import SiteTraffic

import trackside.deriver as deriver_module
import trackside.storage.facts as facts_module
import trackside.storage.writes as writes
from trackside.batch import Batch
from trackside.derive import Derivation
from trackside.events import Event
from trackside.queue import RedisWriter
from trackside.storage.engine import create_engine
from trackside.storage.facts import Round, derive_visitor_days
from trackside.storage.tables import FACT_TABLES

REPO = Path(__file__).resolve().parent.parent
T0 = time.monotonic()
DERIVATION = Derivation()  # the defaults: a 30-minute view window
PROFILE: str | None = None  # `--profile`


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# The database before the window: its earlier events stored in bulk, then derived whole.
# --------------------------------------------------------------------------------------------------------------


async def bulk_store(url: str, events: list[Event]) -> float:
    t = time.monotonic()
    if url.startswith("postgresql"):
        import asyncpg

        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            rows = [writes._postgres_row(e) for e in events]
            async with conn.transaction():
                for i in range(0, len(rows), 200_000):
                    await conn.copy_records_to_table("events", records=rows[i : i + 200_000], columns=writes._COLUMNS)
            # The events only: an ANALYZE of still empty fact tables would leave the planner sure they are
            # tiny (autovacuum catches up only later), and derivation's deletes would scan them whole.
            await conn.execute("ANALYZE events")
        finally:
            await conn.close()
    else:
        import sqlite3

        lite = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None)
        try:
            sql = "INSERT INTO events ({}) VALUES ({})".format(
                ", ".join(writes._COLUMNS), ", ".join("?" for _ in writes._COLUMNS)
            )
            lite.execute("BEGIN")
            lite.executemany(sql, [writes._sqlite_row(e) for e in events])
            lite.execute("COMMIT")
            lite.execute("ANALYZE events")
        finally:
            lite.close()
    return time.monotonic() - t


async def derive_whole(url: str, events: list[Event]) -> dict[str, Any]:
    """Every visitor-day of `events` derived whole, 2,000 a transaction (as `derive_marked` does)."""
    keys = sorted({(datetime.fromtimestamp(e.ts, UTC).date(), e.visitor) for e in events})
    engine = create_engine(url)
    t, read = time.monotonic(), 0
    try:
        with Autoanalyze(url):
            for i in range(0, len(keys), 2000):
                async with engine.begin() as conn:
                    read += await derive_visitor_days(conn, keys[i : i + 2000], DERIVATION)
    finally:
        await engine.dispose()
    took = time.monotonic() - t
    return {"visitor_days": len(keys), "events": len(events), "rows_read": read, "seconds": round(took, 2),
            "events_per_s": round(len(events) / took) if took else None}  # fmt: skip


async def prepare(url: str, earlier: list[Event], derive: bool) -> dict[str, Any]:
    from trackside.storage.migrate import migrate

    await migrate(url)
    out: dict[str, Any] = {"earlier_events": len(earlier), "bulk_store_s": round(await bulk_store(url, earlier), 2)}
    if derive:
        out["derive_whole"] = await derive_whole(url, earlier)
        log(f"  earlier events derived whole: {out['derive_whole']}")
        await analyze(url)  # as autovacuum would have by the time a day is this far along
    return out


async def analyze(url: str, tables: tuple[str, ...] = ()) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for table in tables or ("",):
                await conn.exec_driver_sql(f"ANALYZE {table}".strip())
    finally:
        await engine.dispose()


class Autoanalyze(threading.Thread):
    """ANALYZE of the fact tables (and the derive queue) every `every` seconds while a derivation runs, as
    autovacuum would: it is
    off on this machine's PostgreSQL, and tables that grow from empty without statistics get plans that read
    the whole day's facts for every chunk's delete (derivation gets slower as the day grows)."""

    def __init__(self, url: str, every: float = 20.0) -> None:
        super().__init__(daemon=True)
        self.url, self.every, self.stop = url, every, threading.Event()
        self.runs = 0

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                asyncio.run(analyze(self.url, (*(t.name for t in FACT_TABLES), "derive_marks")))
                self.runs += 1
            except Exception as exc:  # noqa: BLE001 - a missed ANALYZE only slows the run down
                log(f"autoanalyze: {exc}")

    def __enter__(self) -> Autoanalyze:
        if self.url.startswith("postgresql"):
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.is_alive():
            self.join()


class PgCpu(threading.Thread):
    """CPU time (utime+stime from /proc) of the PostgreSQL backends serving one database, summed from `start` to
    `stop`: every `every` seconds the database's backends (`pg_stat_activity`, this sampler's own left out) are
    read; a backend first seen after the start counts from 0 (a new connection), one that existed at the start
    from its CPU then. A backend that comes and goes between two samples (a short ANALYZE connection) and the
    last moments of one that ends are missed; the shared background processes (WAL writer, checkpointer) are
    not counted. Needs PostgreSQL on this machine (loopback)."""

    def __init__(self, url: str, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.stop = threading.Event()
        self.base: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.ready = threading.Event()
        self.error: str | None = None

    @staticmethod
    def _cpu(pid: int) -> float | None:
        stat = pb.read_stat(pid)
        return None if not stat else (pb._field(stat, 14) + pb._field(stat, 15)) / pb.CLK_TCK

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception as exc:  # noqa: BLE001 - reported, the run goes on without the figure
            self.error = f"{type(exc).__name__}: {exc}"
            log(f"pg cpu: {self.error}")
        finally:
            self.ready.set()

    async def _run(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            first = True
            while True:
                pids = [r[0] for r in await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )]  # fmt: skip
                for pid in pids:
                    cpu = self._cpu(pid)
                    if cpu is None:
                        continue
                    if pid not in self.base:
                        self.base[pid] = cpu if first else 0.0
                    self.last[pid] = cpu
                if first:
                    first = False
                    self.ready.set()
                if self.stop.wait(self.every):
                    break
        finally:
            await conn.close()

    def __enter__(self) -> PgCpu:
        if self.url.startswith("postgresql"):
            self.start()
            self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.is_alive():
            self.join()

    def seconds(self) -> float | None:
        if not self.url.startswith("postgresql") or self.error:
            return None
        return sum(self.last[p] - self.base[p] for p in self.last)


async def fact_rows(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return {
                t.name: int((await conn.exec_driver_sql(f"SELECT COUNT(*) FROM {t.name}")).scalar_one())
                for t in FACT_TABLES
            }
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------------------------------------------
# Part `store`: write_batch back to back, the derive step timed apart.
# --------------------------------------------------------------------------------------------------------------


async def queued(url: str) -> tuple[int, float | None]:
    """Marks in `derive_marks`, and the age in seconds of the oldest (None: nothing queued)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await backlog_on(conn)
    finally:
        await engine.dispose()


async def backlog_on(conn: Any) -> tuple[int, float | None]:
    count, oldest = (await conn.exec_driver_sql("SELECT COUNT(*), MIN(marked_at) FROM derive_marks")).one()
    if oldest is None:
        return int(count), None
    if isinstance(oldest, str):  # SQLite
        oldest = datetime.fromisoformat(oldest)
    age = datetime.now(UTC).replace(tzinfo=None) - oldest
    return int(count), max(0.0, age.total_seconds())


class QueueStep:
    """Times the queueing step: wraps the name `queue_visitor_days` that `write_batch_on` calls (a module global
    of trackside.storage.writes)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.original = writes.queue_visitor_days

    def __enter__(self) -> QueueStep:
        original = self.original

        async def timed(conn: Any, events: list[Event]) -> None:
            t = time.perf_counter()
            await original(conn, events)
            self.seconds += time.perf_counter() - t

        writes.queue_visitor_days = timed
        return self

    def __exit__(self, *exc: object) -> None:
        writes.queue_visitor_days = self.original


async def store_stream(url: str, batches: list[list[Event]]) -> dict[str, Any]:
    """The window's batches through write_batch back to back: storing and queueing, nothing derived."""
    engine = create_engine(url)
    times: list[float] = []
    try:
        with QueueStep() as step, PgCpu(url) as pg:
            cpu = time.process_time()
            for events in batches:
                t = time.perf_counter()
                await writes.write_batch(engine, Batch(events=events), DERIVATION)
                times.append(time.perf_counter() - t)
            cpu = time.process_time() - cpu
        pg_cpu = pg.seconds()
    finally:
        await engine.dispose()
    n = sum(len(b) for b in batches)
    wall = sum(times)
    marks, _ = await queued(url)
    return {
        "events": n,
        "batches": len(batches),
        "events_per_batch": round(n / len(batches)),
        "seconds": round(wall, 2),
        "events_per_s": round(n / wall),
        "this_process_cpu_us_per_event": round(cpu / n * 1e6, 1),
        "postgres_cpu_us_per_event": None if pg_cpu is None else round(pg_cpu / n * 1e6, 1),
        "queued_visitor_days": marks,
        "queue_s": round(step.seconds, 2),
        "queue_share": round(step.seconds / wall, 3),
        "batch_s_p50": round(statistics.median(times), 3),
        "batch_s_p99": round(_pct(times, 0.99), 3),
        "batch_s_max": round(max(times), 3),
        "load_avg_1m": os.getloadavg()[0],
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else 0.0


# The steps of a round (module globals of trackside.storage.facts that a round calls), timed apart:
# reading the raw rows and the API counts, turning them into facts (`_derive` less its reads), and in the
# writing transaction locking the marks, replacing the facts and clearing the marks.
PHASES = ("_load", "_api_counts", "_derive", "_lock_marks", "_replace", "_clear_marks")


class Rounds:
    """Wraps the name `commit_round` that `trackside.deriver` calls, to keep every round's result, and the steps
    of a round, to time them."""

    def __init__(self) -> None:
        self.results: list[Round] = []
        self.original = deriver_module.commit_round
        self.steps = {name: getattr(facts_module, name) for name in PHASES}
        self.seconds = dict.fromkeys(PHASES, 0.0)

    def __enter__(self) -> Rounds:
        original = self.original

        async def kept(*args: Any, **kwargs: Any) -> Round:
            result = await original(*args, **kwargs)
            self.results.append(result)
            return result

        def timed(name: str, step: Any) -> Any:
            async def run(*args: Any, **kwargs: Any) -> Any:
                t = time.perf_counter()
                try:
                    return await step(*args, **kwargs)
                finally:
                    self.seconds[name] += time.perf_counter() - t

            return run

        deriver_module.commit_round = kept
        for name, step in self.steps.items():
            setattr(facts_module, name, timed(name, step))
        return self

    def __exit__(self, *exc: object) -> None:
        deriver_module.commit_round = self.original
        for name, step in self.steps.items():
            setattr(facts_module, name, step)

    def phases(self, total: float) -> dict[str, float]:
        """Seconds per step; `_derive` without the reads inside it, `other` the rest of the rounds' time (the
        queue's select, commits, transactions begun)."""
        out = {name.strip("_"): round(v, 2) for name, v in self.seconds.items()}
        out["derive"] = round(self.seconds["_derive"] - self.seconds["_load"] - self.seconds["_api_counts"], 2)
        out["other"] = round(total - self.seconds["_derive"] - self.seconds["_lock_marks"] - self.seconds["_replace"]
                             - self.seconds["_clear_marks"], 2)  # fmt: skip
        return out


async def drain(url: str, events: int, timeout: float) -> dict[str, Any]:
    """`Deriver.round()` until nothing is queued; while only cooling visitor-days are left, wait as `run()`
    does (its idle pause)."""
    engine = create_engine(url)
    deriver = deriver_module.Deriver(engine, DERIVATION)
    times: list[float] = []
    waited = 0.0
    t0 = time.monotonic()
    cpu = time.process_time()
    profiler = None
    if PROFILE:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        with PgCpu(url) as pg, Autoanalyze(url), Rounds() as rounds:
            while True:
                t = time.perf_counter()
                n = len(rounds.results)
                busy = await deriver.step()
                if not busy:
                    busy = await deriver.flush()
                took = time.perf_counter() - t
                if any(r.derived or r.superseded for r in rounds.results[n:]):
                    times.append(took)
                if busy:
                    continue
                async with engine.connect() as conn:
                    left, _ = await backlog_on(conn)
                if not left:
                    break
                if time.monotonic() - t0 > timeout:
                    log(f"  drain: {left} visitor-days still queued after {timeout:g} s")
                    break
                await asyncio.sleep(deriver_module.IDLE_SECONDS)  # the rest are cooling off
                waited += deriver_module.IDLE_SECONDS
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu
        pg_cpu = pg.seconds()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(PROFILE)
        left, _ = await queued(url)
    finally:
        await engine.dispose()
    results = rounds.results
    derived = sum(len(r.derived) for r in results)
    rows = sum(sum(r.rows.values()) for r in results)
    busy_s = sum(times)
    heavy = {k for r in results for k, n in r.rows.items() if n > deriver_module.HEAVY_ROWS}
    return {
        "rounds": len(times),
        "visitor_days_derived": derived,
        "derivations_per_visitor_day": round(sum(len(r.rows) for r in results) / max(derived, 1), 2),
        "heavy_visitor_days": len(heavy),
        "left_queued": left,
        "seconds": round(wall, 2),
        "rounds_s": round(busy_s, 2),
        "cooling_wait_s": round(waited, 2),
        "events_per_s": round(events / busy_s) if busy_s else None,
        "events_per_s_wall": round(events / wall) if wall else None,
        "visitor_days_per_s": round(derived / busy_s) if busy_s else None,
        "rows_read": rows,
        "round_phases_s": rounds.phases(busy_s),
        "rows_read_per_event": round(rows / events, 2),
        "this_process_cpu_us_per_event": round(cpu / events * 1e6, 1),
        "postgres_cpu_us_per_event": None if pg_cpu is None else round(pg_cpu / events * 1e6, 1),
        "total_cpu_us_per_event": None if pg_cpu is None else round((cpu + pg_cpu) / events * 1e6, 1),
        "round_s_p50": round(statistics.median(times), 3) if times else None,
        "round_s_p99": round(_pct(times, 0.99), 3),
        "round_s_max": round(max(times, default=0.0), 3),
        "visitor_days_per_round_mean": round(derived / len(times)) if times else None,
        "load_avg_1m": os.getloadavg()[0],
    }


def store_part(backend: str, args: argparse.Namespace, tmp: Path, dbs: plb.Databases) -> dict[str, Any]:
    if backend == "postgres" and args.reuse:
        template, ready = pace_template(args, dbs)
        url = asyncio.run(copy_database(template))
        dbs.pg.append(url)
        earlier, batches = window(args)
    else:
        earlier, batches = window(args)
        url = dbs.new(backend, f"store-{backend}")
        ready = asyncio.run(prepare(url, earlier, derive=True))
    n = sum(map(len, batches))
    log(f"{backend}: {len(earlier):,} earlier events, {n:,} in the window")
    out: dict[str, Any] = {"backend": backend, "prepare": ready}
    out["store"] = asyncio.run(store_stream(url, batches))
    s = out["store"]
    log(f"  {backend} store+queue: {s['events_per_s']:,} events/s, batch p99 {s['batch_s_p99']} s, "
        f"queueing {s['queue_share']:.0%} of it, {s['queued_visitor_days']:,} visitor-days queued")  # fmt: skip
    out["derive"] = asyncio.run(drain(url, n, args.drain_timeout))
    d = out["derive"]
    log(
        f"  {backend} derive: {d['events_per_s']} events/s, {d['visitor_days_per_s']} visitor-days/s, "
        f"{d['rows_read_per_event']} rows re-read per event, round p50/p99 {d['round_s_p50']}/{d['round_s_p99']} s, "
        f"{d['seconds']} s to empty ({d['cooling_wait_s']} s waiting for cooling ones); steps {d['round_phases_s']}"
    )
    out["fact_rows"] = asyncio.run(fact_rows(url))
    return out


_WINDOW: dict[tuple[float, float, float, int], tuple[list[Event], list[list[Event]]]] = {}


def window(args: argparse.Namespace) -> tuple[list[Event], list[list[Event]]]:
    """The same traffic every call (made once): a window ending a few minutes ago, at least 4 hours into the day."""
    key = (args.rate, args.seconds, args.batch_seconds, args.seed)
    if key not in _WINDOW:
        _WINDOW[key] = _make_window(args)
    return _WINDOW[key]


def _make_window(args: argparse.Namespace) -> tuple[list[Event], list[list[Event]]]:
    now = time.time()
    day_start = now - now % 86400
    start = max(day_start + 4 * 3600, now - args.seconds - 300)
    if start + args.seconds > day_start + 86400 - 60:
        raise SystemExit("too close to midnight UTC: run again after 04:00 UTC")
    t = time.monotonic()
    out = SiteTraffic(seed=args.seed).window(start, args.seconds, args.rate, args.batch_seconds)
    log(f"traffic generated in {time.monotonic() - t:.1f}s")
    return out


# --------------------------------------------------------------------------------------------------------------
# Part `pace`: one `trackside worker` draining a queue fed at the traffic's own pace.
# --------------------------------------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """Every `every` seconds: the Redis queue's depth and the derive backlog (marks queued, age of the oldest),
    from a thread of its own (its own event loop and connection), so the feed keeps its pace."""

    def __init__(self, url: str, redis_url: str, queue: str, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.url, self.redis_url, self.queue, self.every = url, redis_url, queue, every
        self.stop = threading.Event()
        self.samples: list[tuple[float, int, int, float | None]] = []  # (monotonic, depth, marks, oldest age s)
        self.error: str | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception as exc:  # noqa: BLE001 - reported, the run goes on without samples
            self.error = f"{type(exc).__name__}: {exc}"
            log(f"sampler: {self.error}")

    async def _run(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.redis_url)
        engine = create_engine(self.url)
        try:
            async with engine.connect() as conn:
                while not self.stop.is_set():
                    t = time.monotonic()
                    depth = int(await client.zcard(self.queue))
                    marks, age = await backlog_on(conn)
                    await conn.commit()  # a fresh snapshot next time
                    self.samples.append((t, depth, marks, age))
                    await asyncio.sleep(max(0.0, self.every - (time.monotonic() - t)))
        finally:
            await client.aclose()
            await engine.dispose()

    def last(self) -> tuple[float, int, int, float | None] | None:
        return self.samples[-1] if self.samples else None


def pace_template(args: argparse.Namespace, dbs: plb.Databases) -> tuple[str, dict[str, Any]]:
    """The database before the window (PostgreSQL), prepared once: each measurement runs on a copy of it. With
    `--reuse DIR`, the window's traffic and this database are kept for the next run with the same `--reuse`
    (the database is then not dropped: `DIR/template` names it, drop it when done)."""
    if args.reuse:
        import pickle

        saved = Path(args.reuse) / "template.pickle"
        if saved.exists():
            key, url, ready, traffic = pickle.loads(saved.read_bytes())  # noqa: S301 - our own file
            if key == (args.rate, args.seconds, args.batch_seconds, args.seed):
                _WINDOW[key] = traffic
                log(f"reusing {url.rsplit('/', 1)[1]} and its traffic from {saved}")
                return url, ready
    earlier, batches = window(args)
    url = dbs.new("postgres", "template")
    ready = asyncio.run(prepare(url, earlier, derive=True))
    if args.reuse:
        dbs.pg.remove(url)  # kept
        Path(args.reuse).mkdir(parents=True, exist_ok=True)
        key = (args.rate, args.seconds, args.batch_seconds, args.seed)
        (Path(args.reuse) / "template.pickle").write_bytes(pickle.dumps((key, url, ready, (earlier, batches))))
        (Path(args.reuse) / "template").write_text(url.rsplit("/", 1)[1] + "\n")
    return url, ready


async def copy_database(template: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(plb.POSTGRES_ADMIN_URL, timeout=5)
    name = "trackside_bench_" + uuid.uuid4().hex[:10]
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template.rsplit("/", 1)[1]}" STRATEGY FILE_COPY')
    finally:
        await conn.close()
    return template.rsplit("/", 1)[0] + "/" + name


def pace_rounds(args: argparse.Namespace, tmp: Path, dbs: plb.Databases) -> list[dict[str, Any]]:
    """`--rounds` measurements of this checkout, interleaved with as many of `--before`'s if given (this, before;
    before, this; ...), each on a fresh copy of one prepared database, dropped after."""
    template, ready = pace_template(args, dbs)
    checkouts = [REPO] + ([Path(args.before).resolve()] if args.before else [])
    out: list[dict[str, Any]] = []
    for i in range(args.rounds):
        for checkout in checkouts if i % 2 == 0 else checkouts[::-1]:
            url = asyncio.run(copy_database(template))
            try:
                out.append(pace_part(args, tmp, dbs, checkout=checkout, url=url, ready=ready))
            finally:
                asyncio.run(plb.drop_pg_database(url))
    return out


def pace_part(
    args: argparse.Namespace,
    tmp: Path,
    dbs: plb.Databases,
    *,
    checkout: Path = REPO,
    url: str | None = None,
    ready: dict[str, Any] | None = None,
) -> dict[str, Any]:
    earlier, batches = window(args)
    if url is None or ready is None:
        url = dbs.new("postgres", "pace")
        ready = asyncio.run(prepare(url, earlier, derive=True))
    redis = plb.RedisProc(tmp)
    queue = "bench:" + uuid.uuid4().hex[:8]
    env = plb.child_env(TRACKSIDE_REDIS_URL=redis.url, TRACKSIDE_DATABASE_URL=url, TRACKSIDE_QUEUE_NAME=queue,
                        TRACKSIDE_LOG_LEVEL="warning", TRACKSIDE_SPOOL_DIR=str(tmp / "spool"))  # fmt: skip
    if checkout != REPO:  # the worker's code from that checkout (`-m sidecar` from its directory, it first on the path)
        env["PYTHONPATH"] = str(checkout)
    worker = pb.REGISTRY.start(plb.worker_argv("default"), tmp / "worker.log", cwd=checkout, env=env)
    sampler = Sampler(url, redis.url, queue)
    queue_empty = backlog_empty = None
    try:
        deadline = time.monotonic() + 60
        while not redis.client.exists(queue + ":health-check"):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start: " + pb.tail(tmp / "worker.log"))
            time.sleep(0.05)
        cpu0 = pb.cpu_seconds([worker.pid])
        with PgCpu(url) as pg, Autoanalyze(url):
            sampler.start()
            fed_s = asyncio.run(feed(redis.url, queue, batches, args.batch_seconds))
            t_fed = time.monotonic()
            deadline = t_fed + args.drain_timeout
            seen = len(sampler.samples)
            while time.monotonic() < deadline and (queue_empty is None or backlog_empty is None):
                time.sleep(0.1)
                if len(sampler.samples) == seen or (last := sampler.last()) is None:
                    if not sampler.is_alive():
                        break
                    continue
                seen = len(sampler.samples)
                t, depth, marks, _ = last
                if t < t_fed:
                    continue
                if queue_empty is None and depth == 0 and not redis.client.keys("arq:in-progress:batch:*"):
                    queue_empty = t - t_fed
                if queue_empty is not None and backlog_empty is None and marks == 0:
                    backlog_empty = t - t_fed
            sampler.stop.set()
            sampler.join()
        cpu = pb.cpu_seconds([worker.pid]) - cpu0
        pg_cpu = pg.seconds()
        hwm_mb = pb.status_kb(worker.pid, "VmHWM") / 1024
    finally:
        sampler.stop.set()
        pb.REGISTRY.stop(worker)
        redis.stop()
    n = sum(map(len, batches))
    stored = plb.count_events(url)
    left, _ = asyncio.run(queued(url))
    samples = sampler.samples
    t0 = samples[0][0] if samples else 0.0
    during = [s for s in samples if s[0] <= t_fed]
    half = [s for s in during if s[0] >= t0 + fed_s / 2]
    ages = [s[3] or 0.0 for s in during]
    result = {
        "backend": "postgres", "rate": args.rate, "seconds": args.seconds, "events": n, "batches": len(batches),
        "fed_s": round(fed_s, 2),
        "max_depth": max((s[1] for s in during), default=0), "final_depth": during[-1][1] if during else None,
        "depth_slope_per_s_second_half": round(_slope([(t - t0, d) for t, d, _, _ in half]), 3),
        "max_marks": max((s[2] for s in during), default=0), "final_marks": during[-1][2] if during else None,
        "marks_slope_per_s_second_half": round(_slope([(t - t0, m) for t, _, m, _ in half]), 1),
        "oldest_mark_age_s_p50": round(statistics.median(ages), 2) if ages else None,
        "oldest_mark_age_s_max": round(max(ages, default=0.0), 2),
        "oldest_mark_age_s_final": round(ages[-1], 2) if ages else None,
        # Over the feed and the drain after it: the figures were at most this late.
        "oldest_mark_age_s_max_overall": round(max((s[3] or 0.0 for s in samples), default=0.0), 2),
        "queue_empty_after_s": None if queue_empty is None else round(queue_empty, 2),
        "backlog_empty_after_s": None if backlog_empty is None else round(backlog_empty, 2),
        "left_queued": left, "worker_cpu_s": round(cpu, 2), "worker_cpu_us_per_event": round(cpu / n * 1e6, 1),
        "postgres_cpu_s": None if pg_cpu is None else round(pg_cpu, 2),
        "postgres_cpu_us_per_event": None if pg_cpu is None else round(pg_cpu / n * 1e6, 1),
        "total_cpu_us_per_event": None if pg_cpu is None else round((cpu + pg_cpu) / n * 1e6, 1),
        "checkout": str(checkout), "load_avg_start": os.getloadavg(),
        "worker_peak_rss_mb": round(hwm_mb), "stored": stored, "expected_stored": n + len(earlier),
        "load_avg_1m": os.getloadavg()[0], "prepare": ready, "sampler_error": sampler.error,
        "samples": [(round(t - t0, 2), d, m, None if a is None else round(a, 2)) for t, d, m, a in samples],
    }  # fmt: skip
    log(
        f"  pace {args.rate:g}/s: queue max {result['max_depth']} final {result['final_depth']}, marks max "
        f"{result['max_marks']:,} final {result['final_marks']}, oldest mark max {result['oldest_mark_age_s_max']} s "
        f"({result['oldest_mark_age_s_max_overall']} s with the drain); "
        f"queue empty {result['queue_empty_after_s']} s, backlog empty {result['backlog_empty_after_s']} s after the "
        f"feed; worker {result['worker_cpu_us_per_event']} µs/event, PostgreSQL {result['postgres_cpu_us_per_event']} "
        f"µs/event ({checkout.name})"
    )
    return result


async def feed(url: str, queue: str, batches: list[list[Event]], every: float) -> float:
    writer = RedisWriter(url, queue)
    t0 = time.monotonic()
    try:
        for i, events in enumerate(batches):
            await writer.write(Batch(events=events))
            await asyncio.sleep(max(0.0, t0 + (i + 1) * every - time.monotonic()))
    finally:
        await writer.close()
    return time.monotonic() - t0


def _slope(points: list[tuple[float, int]]) -> float:
    """Least-squares slope, jobs per second (0 for fewer than two points)."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(t for t, _ in points)
    my = statistics.fmean(d for _, d in points)
    var = sum((t - mx) ** 2 for t, _ in points)
    return sum((t - mx) * (d - my) for t, d in points) / var if var else 0.0


# --------------------------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------------------------


def git_state() -> dict[str, Any]:
    import subprocess

    run = ["git", "-C", str(REPO)]
    head = subprocess.run([*run, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*run, "status", "--porcelain"], capture_output=True, text=True).stdout.splitlines()
    return {"commit": head, "dirty_files": [line[3:] for line in dirty]}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| backend | stored and queued, events/s | batch p50 / p99 s | queue share | visitor-days queued "
             "| derived, events/s | visitor-days/s | rows re-read / event | rounds | round p50 / p99 / max s "
             "| emptied after (cooling wait) | earlier derived whole, events/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in result.get("store", []):
        s, d = r["store"], r["derive"]
        whole = r["prepare"].get("derive_whole", {}).get("events_per_s", "—")
        share = format(s["queue_share"], ".0%") if "queue_share" in s else "—"
        rounds = f"{d['round_s_p50']} / {d['round_s_p99']} / {d['round_s_max']}"
        lines.append(f"| {r['backend']} | {s['events_per_s']:,} | {s['batch_s_p50']} / {s['batch_s_p99']} | {share} "
                     f"| {s['queued_visitor_days']:,} | {d['events_per_s']:,} | {d['visitor_days_per_s']:,} "
                     f"| {d['rows_read_per_event']} | {d['rounds']} | {rounds} "
                     f"| {d['seconds']} s ({d['cooling_wait_s']} s) | {whole} |")  # fmt: skip
    if not result.get("store"):
        lines = []
    paces = [p for p in result.get("pace_rounds") or [result.get("pace")] if p is not None and "max_depth" in p]
    if paces:
        lines += ["", "| pace | checkout | events | queue depth max / final (slope, 2nd half) "
                  "| marks max / final (slope) | oldest mark p50 / max s (with the drain) | queue empty after "
                  "| backlog empty after "
                  "| worker µs/event | PostgreSQL µs/event | worker peak RSS MB | load 1 min | stored |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for p in paces:
        depth = f"{p['max_depth']} / {p['final_depth']} ({p['depth_slope_per_s_second_half']}/s)"
        marks = f"{p['max_marks']:,} / {p['final_marks']} ({p['marks_slope_per_s_second_half']}/s)"
        age = f"{p['oldest_mark_age_s_p50']} / {p['oldest_mark_age_s_max']} ({p.get('oldest_mark_age_s_max_overall')})"
        lines.append(f"| {p['rate']:,.0f}/s for {p['seconds']:g} s | {Path(p.get('checkout', REPO)).name} "
                     f"| {p['events']:,} | {depth} | {marks} | {age} "
                     f"| {p['queue_empty_after_s']} s | {p['backlog_empty_after_s']} s "
                     f"| {p['worker_cpu_us_per_event']} | {p.get('postgres_cpu_us_per_event')} "
                     f"| {p['worker_peak_rss_mb']} | {p['load_avg_1m']:.2f} "
                     f"| {p['stored']:,} of {p['expected_stored']:,} |")  # fmt: skip
    return "\n".join(lines)


def _interrupted(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # the finally blocks drop the databases and stop the children


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="store,pace")
    p.add_argument("--backends", default="postgres,sqlite", help="of `store` (`pace` is PostgreSQL)")
    p.add_argument("--rate", type=float, default=10_000, help="events a second of site time")
    p.add_argument("--seconds", type=float, default=30, help="the window: seconds of site time stored")
    p.add_argument("--batch-seconds", type=float, default=1.0, help="traffic per batch (the flusher's)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--drain-timeout", type=float, default=300, help="seconds to wait for the queues to empty")
    p.add_argument("--before", help="pace: also run the worker from this checkout (a worktree of an older commit)")
    p.add_argument(
        "--reuse",
        help="PostgreSQL: keep the traffic and the prepared database in this directory and "
        "start from them when there (measurements on copies)",
    )
    p.add_argument("--profile", help="store: cProfile of the drain written to this file")
    p.add_argument("--rounds", type=int, default=1, help="pace: measurements of each checkout, interleaved")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "derive.json"))
    args = p.parse_args()
    global PROFILE
    PROFILE = args.profile
    parts = args.parts.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="trackside-derive-bench-"))
    dbs = plb.Databases(tmp)
    load0 = os.getloadavg()
    result: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "config": vars(args), "load_avg_start": load0}
    result["git"] = git_state()
    try:
        if "store" in parts:
            result["store"] = [store_part(b, args, tmp, dbs) for b in args.backends.split(",")]
        if "pace" in parts:
            try:
                if args.before or args.rounds > 1:
                    result["pace_rounds"] = pace_rounds(args, tmp, dbs)
                    result["pace"] = result["pace_rounds"][0]
                else:
                    result["pace"] = pace_part(args, tmp, dbs)
            except RuntimeError as exc:
                result["pace"] = {"error": str(exc)}
                log(f"pace: {exc}")
    finally:
        dbs.drop_all()
        pb.REGISTRY.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
        # Written whatever happened: an interrupted run keeps what it measured.
        result["bench_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        result["load_avg_end"] = os.getloadavg()
        result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str))
        print(markdown(result))
        log(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
