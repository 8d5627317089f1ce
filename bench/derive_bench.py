"""Ingest benchmark of facts at ingest: store and derive a realistic time-ordered stream, and one worker keeping
pace with a sidecar's rate.

Run from the repository root:

    .venv/bin/python bench/derive_bench.py                                  # both parts, PostgreSQL and SQLite
    .venv/bin/python bench/derive_bench.py --parts store --backends postgres --seconds 20
    .venv/bin/python bench/derive_bench.py --parts pace --rate 12000 --seconds 60

Traffic (`bench/realistic_day.py`): visits starting at a steady rate, each a few page views of one visitor with
the API calls every page makes, impressions, errors, 8% signed in, a third of the visitors back from earlier
that day; `--rate` events a second of site time, cut into batches of `--batch-seconds` (the flusher's: 1 s of
traffic). What the database holds before the window (the touched visitor-days' earlier events) is stored first
with COPY (PostgreSQL) or executemany (SQLite), and derived whole (untimed, reported apart).

Parts:
- `store`: the window's batches through `trackside.storage.writes.write_batch`, back to back in this process, as
  fast as they go: events/s stored and derived, the derive step alone (`derive_visitor_days`, timed by wrapping
  the name `write_batch_on` calls; `store_authors` too), raw rows it re-read per stored event (its return value),
  batch seconds p50/p99/max; and the same stream into a second fresh database with both steps left out
  (what storing cost before facts, 2c7b777's write path).
- `pace`: PostgreSQL. A private redis-server, one `trackside worker` (`python -m sidecar worker`, defaults),
  the window's batches enqueued with `RedisWriter` at their real pace (one every `--batch-seconds`), the
  queue's depth (`ZCARD`) sampled every 0.5 s; then how long the queue takes to empty, and the worker's CPU and
  peak RSS (VmHWM).

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

import trackside.storage.writes as writes
from trackside.batch import Batch
from trackside.derive import Derivation
from trackside.events import Event
from trackside.queue import RedisWriter
from trackside.storage.engine import create_engine
from trackside.storage.facts import derive_visitor_days
from trackside.storage.tables import FACT_TABLES

REPO = Path(__file__).resolve().parent.parent
T0 = time.monotonic()
DERIVATION = Derivation()  # the defaults: a 30-minute view window


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
    """ANALYZE of the fact tables every `every` seconds while a derivation runs, as autovacuum would: it is
    off on this machine's PostgreSQL, and tables that grow from empty without statistics get plans that read
    the whole day's facts for every chunk's delete (derivation gets slower as the day grows)."""

    def __init__(self, url: str, every: float = 20.0) -> None:
        super().__init__(daemon=True)
        self.url, self.every, self.stop = url, every, threading.Event()
        self.runs = 0

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                asyncio.run(analyze(self.url, tuple(t.name for t in FACT_TABLES)))
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


class Steps:
    """Wraps the names `write_batch_on` calls for the facts (module globals of trackside.storage.writes): times
    them and keeps `derive_visitor_days`'s rows read; with `skip`, leaves them out (storing alone)."""

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.seconds = {"derive": 0.0, "authors": 0.0}
        self.rows_read = 0
        self.visitor_days = 0
        self.originals = (writes.derive_visitor_days, writes.store_authors)

    def __enter__(self) -> Steps:
        derive, authors = self.originals

        async def timed_derive(conn: Any, keys: Any, *more: Any, **named: Any) -> int:
            self.visitor_days += len(keys)
            if self.skip:
                return 0
            t = time.perf_counter()
            n = await derive(conn, keys, *more, **named)
            self.seconds["derive"] += time.perf_counter() - t
            self.rows_read += n
            return n

        async def timed_authors(conn: Any, *more: Any, **named: Any) -> None:
            if self.skip:
                return
            t = time.perf_counter()
            await authors(conn, *more, **named)
            self.seconds["authors"] += time.perf_counter() - t

        writes.derive_visitor_days = timed_derive  # type: ignore[assignment]
        writes.store_authors = timed_authors  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        writes.derive_visitor_days, writes.store_authors = self.originals


async def stream(url: str, batches: list[list[Event]], skip_facts: bool) -> dict[str, Any]:
    engine = create_engine(url)
    times: list[float] = []
    try:
        with Steps(skip_facts) as steps:
            cpu = time.process_time()
            for events in batches:
                t = time.perf_counter()
                await writes.write_batch(engine, Batch(events=events), DERIVATION)
                times.append(time.perf_counter() - t)
            cpu = time.process_time() - cpu
    finally:
        await engine.dispose()
    n = sum(len(b) for b in batches)
    wall = sum(times)
    ordered = sorted(times)
    return {
        "events": n,
        "batches": len(batches),
        "events_per_batch": round(n / len(batches)),
        "visitor_days_per_batch": round(steps.visitor_days / len(batches)),
        "seconds": round(wall, 2),
        "events_per_s": round(n / wall),
        "this_process_cpu_us_per_event": round(cpu / n * 1e6, 1),
        "derive_s": round(steps.seconds["derive"], 2),
        "derive_share": round(steps.seconds["derive"] / wall, 3),
        "authors_s": round(steps.seconds["authors"], 2),
        "rows_read": steps.rows_read,
        "rows_read_per_event": round(steps.rows_read / n, 2),
        "batch_s_p50": round(statistics.median(times), 3),
        "batch_s_p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "batch_s_max": round(ordered[-1], 3),
        "load_avg_1m": os.getloadavg()[0],
    }


def store_part(backend: str, args: argparse.Namespace, tmp: Path, dbs: plb.Databases) -> list[dict[str, Any]]:
    results = []
    for mode in ("derive", "store-only"):
        earlier, batches = window(args)
        url = dbs.new(backend, f"store-{backend}-{mode}")
        log(f"{backend} {mode}: {len(earlier):,} earlier events, {sum(map(len, batches)):,} in the window")
        ready = asyncio.run(prepare(url, earlier, derive=mode == "derive"))
        out = asyncio.run(stream(url, batches, skip_facts=mode == "store-only"))
        out.update(backend=backend, mode=mode, prepare=ready)
        if mode == "derive":
            out["fact_rows"] = asyncio.run(fact_rows(url))
        log(f"  {backend} {mode}: {out['events_per_s']:,} events/s, derive {out['derive_share']:.0%} of the time, "
            f"{out['rows_read_per_event']} rows read per event, batch p99 {out['batch_s_p99']} s")  # fmt: skip
        results.append(out)
    return results


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


def pace_part(args: argparse.Namespace, tmp: Path, dbs: plb.Databases) -> dict[str, Any]:
    earlier, batches = window(args)
    url = dbs.new("postgres", "pace")
    ready = asyncio.run(prepare(url, earlier, derive=True))
    redis = plb.RedisProc(tmp)
    queue = "bench:" + uuid.uuid4().hex[:8]
    env = plb.child_env(TRACKSIDE_REDIS_URL=redis.url, TRACKSIDE_DATABASE_URL=url, TRACKSIDE_QUEUE_NAME=queue,
                        TRACKSIDE_LOG_LEVEL="warning", TRACKSIDE_SPOOL_DIR=str(tmp / "spool"))  # fmt: skip
    worker = pb.REGISTRY.start(plb.worker_argv("default"), tmp / "worker.log", cwd=REPO, env=env)
    samples: list[tuple[float, int]] = []
    try:
        deadline = time.monotonic() + 60
        while not redis.client.exists(queue + ":health-check"):
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("worker did not start: " + pb.tail(tmp / "worker.log"))
            time.sleep(0.05)
        cpu0 = pb.cpu_seconds([worker.pid])
        fed_s = asyncio.run(feed(redis.url, queue, batches, args.batch_seconds, samples))
        t_fed = time.monotonic()
        empty_after = None
        deadline = t_fed + args.drain_timeout
        while time.monotonic() < deadline:
            depth = int(redis.client.zcard(queue))
            samples.append((time.monotonic(), depth))
            if depth == 0 and not redis.client.keys("arq:in-progress:batch:*"):
                empty_after = time.monotonic() - t_fed
                break
            time.sleep(0.25)
        cpu = pb.cpu_seconds([worker.pid]) - cpu0
        hwm_mb = pb.status_kb(worker.pid, "VmHWM") / 1024
    finally:
        pb.REGISTRY.stop(worker)
        redis.stop()
    n = sum(map(len, batches))
    stored = plb.count_events(url)
    t0 = samples[0][0] if samples else 0.0
    depths = [d for t, d in samples if t <= t_fed]
    half = [(t - t0, d) for t, d in samples if t0 + fed_s / 2 <= t <= t_fed]
    result = {
        "backend": "postgres", "rate": args.rate, "seconds": args.seconds, "events": n, "batches": len(batches),
        "fed_s": round(fed_s, 2), "max_depth": max(depths, default=0), "final_depth": depths[-1] if depths else None,
        "depth_slope_per_s_second_half": round(_slope(half), 3), "empty_after_s": None if empty_after is None
        else round(empty_after, 2), "worker_cpu_s": round(cpu, 2), "worker_cpu_us_per_event": round(cpu / n * 1e6, 1),
        "worker_peak_rss_mb": round(hwm_mb), "stored": stored, "expected_stored": n + len(earlier),
        "load_avg_1m": os.getloadavg()[0], "prepare": ready,
        "depth_samples": [(round(t - t0, 2), d) for t, d in samples],
    }  # fmt: skip
    log(
        f"  pace {args.rate}/s: max depth {result['max_depth']}, final {result['final_depth']}, empty "
        f"{result['empty_after_s']} s after the last batch, worker {result['worker_cpu_us_per_event']} µs/event"
    )
    return result


async def feed(
    url: str, queue: str, batches: list[list[Event]], every: float, samples: list[tuple[float, int]]
) -> float:
    writer = RedisWriter(url, queue)
    t0 = time.monotonic()
    try:
        for i, events in enumerate(batches):
            await writer.write(Batch(events=events))
            # Depth twice a batch, until the next batch is due.
            while (due := t0 + (i + 1) * every) > time.monotonic():
                samples.append((time.monotonic(), await writer.queue_depth()))
                await asyncio.sleep(min(0.5 * every, max(due - time.monotonic(), 0.0)))
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
    lines = ["| backend | mode | events/s | derive share | rows re-read / event | visitor-days / batch | "
             "batch p50 / p99 / max s | earlier derived whole, events/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in result.get("store", []):
        whole = r["prepare"].get("derive_whole", {}).get("events_per_s", "—")
        lines.append(f"| {r['backend']} | {r['mode']} | {r['events_per_s']:,} | {r['derive_share']:.0%} | "
                     f"{r['rows_read_per_event']} | {r['visitor_days_per_batch']:,} | {r['batch_s_p50']} / "
                     f"{r['batch_s_p99']} / {r['batch_s_max']} | {whole} |")  # fmt: skip
    if (p := result.get("pace")) is not None and "max_depth" in p:
        lines += ["", "| pace | events | max depth | final depth | slope, 2nd half (jobs/s) | empty after | "
                  "worker µs/event | worker peak RSS MB | stored |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|",
                  f"| {p['rate']:,}/s for {p['seconds']} s | {p['events']:,} | {p['max_depth']} | "
                  f"{p['final_depth']} | {p['depth_slope_per_s_second_half']} | {p['empty_after_s']} s | "
                  f"{p['worker_cpu_us_per_event']} | {p['worker_peak_rss_mb']} | "
                  f"{p['stored']:,} of {p['expected_stored']:,} |"]  # fmt: skip
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
    p.add_argument("--drain-timeout", type=float, default=300)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "derive.json"))
    args = p.parse_args()
    parts = args.parts.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="trackside-derive-bench-"))
    dbs = plb.Databases(tmp)
    load0 = os.getloadavg()
    result: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "config": vars(args), "load_avg_start": load0}
    result["git"] = git_state()
    try:
        if "store" in parts:
            result["store"] = [r for b in args.backends.split(",") for r in store_part(b, args, tmp, dbs)]
        if "pace" in parts:
            try:
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
