"""Reads and rollups over fact rows: 30 rolled days and a big today, read cold through a real sidecar; the
rollup of one big day with its time and peak memory.

Run from the repository root:

    .venv/bin/python bench/facts_bench.py                                   # 1x: 1.43M today, 30 days of 100k
    .venv/bin/python bench/facts_bench.py --scale 10                        # 10x: 14.3M today, 30 days of 1M
    .venv/bin/python bench/facts_bench.py --parts bigday --bigday-events 10000000
    .venv/bin/python bench/facts_bench.py --backends sqlite --parts bigday --bigday-events 1000000
    .venv/bin/python bench/facts_bench.py --parts bigday --reuse URL --rollup-rounds 3 --before DIR

Data (`bench/realistic_day.py`, `SiteTraffic.day`): visits over a daily curve, each a few page views of one
visitor with its API calls, impressions, errors, 8% signed in; artworks and blog posts by Zipf popularity. Raw
events go in with COPY (PostgreSQL) or executemany (SQLite), a few hundred thousand at a time, then every
visitor-day they touch is marked (`derive_marks`, as events stored before facts existed are) and derived the way
the code does it: the rolled days by `trackside.rollup.rollup_day` (which derives a day's marked visitor-days,
then groups its facts), today by `trackside.storage.facts.derive_marked` (the facts derivation at ingest would
have made: derivation is per visitor-day, whole). Raw events older than 7 days are pruned, as the worker would.

Parts:
- `reads` (PostgreSQL by default): the data above (`--days` rolled days of `--rolled-events-per-day`, today
  `--events-today` up to a few minutes ago), then a sidecar (`tests.servers.run_sidecar`, the same uvicorn
  options as `trackside serve`) in front of the test upstream (`tests.upstream_app`, the site's
  `/api/post/{id}/stats` for the overlay): each seed endpoint's first call (its cache cold), three cached
  calls and a `?refresh=true` one from another moderator (cold again); then v2 queries
  (`POST /_trackside/api/v2/query`, skipped with a message when the route answers 404), each once cold.
- `bigday`: a fresh database with `--bigday-events` raw events of yesterday, marked; then, each in a child
  process that writes its own VmHWM at exit: the derivation of every marked visitor-day
  (`derive_marked`), and `trackside rollup --day D` (grouping the day's facts into daily rows). Then
  `--rollup-rounds` rounds of the rollup alone and of the funnel encoding alone (`bench/rollup_child.py`:
  each piece's seconds as the rollup logs them), this checkout's code and `--before DIR`'s alternating (a
  checkout, e.g. `git archive <commit> | tar -x -C DIR`, migrated to no newer revision than the database).
  `--reuse URL` (with `--parts bigday`): only those rounds again, on a big day a `--keep` run left (the
  newest day of its events); the rollup's child also reports its PostgreSQL backend's peak RSS.

PostgreSQL databases are `trackside_bench_<random>`, dropped at the end; SQLite files live in a temp dir.
Prints Markdown tables, writes JSON to `--out`.
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
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import derive_bench as dbench  # bench/ is sys.path[0]
import pipeline_bench as plb
from realistic_day import SiteTraffic

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import jwt  # noqa: E402

from trackside.derive import derivation_of  # noqa: E402
from trackside.settings import Settings  # noqa: E402
from trackside.storage.engine import create_engine  # noqa: E402

SECRET = "facts-bench-secret-facts-bench-secret-0123"
ADMIN = "facts-bench-admin-token-0123456789"
CHUNK = 300_000  # events generated and stored at a time (each chunk its own visitors)
T0 = time.monotonic()
log = dbench.log


def midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def settings_for(url: str, upstream: str = "http://127.0.0.1:9", spool: str = "/tmp") -> Settings:
    return Settings(
        frontend_url=upstream,
        api_url=upstream,
        jwt_secret=SECRET,
        trust_roles_claim=True,
        admin_token=ADMIN,
        database_url=url,
        spool_dir=spool,
        log_level="warning",
        stats_overlay=("artwork",),
        auto_migrate=False,
    )


# --------------------------------------------------------------------------------------------------------------
# Seeding.
# --------------------------------------------------------------------------------------------------------------


async def store_day(url: str, day: date, count: int, seed: int, end: float | None = None) -> dict[str, float]:
    """`count` events of `day` (before `end`), CHUNK at a time; then every visitor-day of the day marked."""
    gen = ins = 0.0
    left, part = count, 0
    while left > 0:
        n = min(CHUNK, left)
        t = time.monotonic()
        events = SiteTraffic(seed=seed * 1000 + part).day(midnight(day), n, end)
        gen += time.monotonic() - t
        ins += await dbench.bulk_store(url, events)
        left -= n
        part += 1
    t = time.monotonic()
    await mark_day(url, day)
    return {"generate_s": gen, "store_s": ins, "mark_s": time.monotonic() - t}


async def mark_day(url: str, day: date) -> None:
    now = "now() AT TIME ZONE 'utc'" if url.startswith("postgresql") else "CURRENT_TIMESTAMP"
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                f"INSERT INTO derive_marks (day, visitor, marked_at) SELECT DISTINCT day, visitor, {now} "  # noqa: S608
                f"FROM events WHERE day = '{day.isoformat()}' ON CONFLICT DO NOTHING"
            )
    finally:
        await engine.dispose()


async def count(url: str, sql: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return int((await conn.exec_driver_sql(sql)).scalar_one())
    finally:
        await engine.dispose()


async def scalar(url: str, sql: str) -> str:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return str((await conn.exec_driver_sql(sql)).scalar_one())
    finally:
        await engine.dispose()


async def seed_reads(url: str, args: argparse.Namespace, report: dict[str, Any]) -> None:
    from trackside.rollup import prune, rollup_day
    from trackside.storage.facts import derive_marked
    from trackside.storage.migrate import migrate

    await migrate(url)
    today = datetime.now(UTC).date()
    derivation = derivation_of(settings_for(url))
    seeding: dict[str, Any] = report.setdefault("seeding", {})
    # 1. The rolled days: stored, then each rolled up (which derives its marked visitor-days first).
    totals = {"generate_s": 0.0, "store_s": 0.0, "mark_s": 0.0, "rollup_s": 0.0, "events": 0}
    engine = create_engine(url)
    try:
        for d in range(args.days, 0, -1):
            day = today - timedelta(days=d)
            for k, v in (await store_day(url, day, args.rolled_events_per_day, seed=d)).items():
                totals[k] += v
            t = time.monotonic()
            result = await rollup_day(engine, day, derivation.window_seconds, derivation=derivation)
            totals["rollup_s"] += time.monotonic() - t
            totals["events"] += result.events
            await dbench.analyze(url)  # as autovacuum would have over a month
            log(f"  rolled {day}: {result.events:,} events; {time.monotonic() - T0:.0f}s so far")
        t = time.monotonic()
        pruned = await prune(engine, 7, 0, today=today)
        seeding["rolled"] = {**{k: round(v, 1) for k, v in totals.items()}, "days": args.days,
                             "pruned_raw": pruned.raw_events, "prune_s": round(time.monotonic() - t, 1)}  # fmt: skip
        # 2. Today up to a few minutes ago, derived whole.
        end = min(time.time() - 120, midnight(today) + 86400)
        stored = await store_day(url, today, args.events_today, seed=0, end=end)
        t = time.monotonic()
        with dbench.Autoanalyze(url):
            derived = await derive_marked(engine, derivation, today)
        took = time.monotonic() - t
        n = await count(url, f"SELECT COUNT(*) FROM events WHERE day = '{today.isoformat()}'")  # noqa: S608
        seeding["today"] = {**{k: round(v, 1) for k, v in stored.items()}, "events": n, "visitor_days": derived,
                            "derive_s": round(took, 1), "derive_events_per_s": round(n / took)}  # fmt: skip
        log(f"  today: {n:,} events, {derived:,} visitor-days derived in {took:.0f}s")
        await dbench.analyze(url)
        seeding["table_rows"] = {
            t: await count(url, f"SELECT COUNT(*) FROM {t}")  # noqa: S608
            for t in ("events", "fact_page_views", "fact_looks", "fact_visits", "daily_site", "daily_content")
        }
    finally:
        await engine.dispose()


async def replicate(url: str, copies: int, days: int) -> dict[str, Any]:
    """Every fact row copied `copies - 1` times as other visitors, users, visits and ids (PostgreSQL), then the
    rolled days' visits' and route labels' daily rows written again from them: the facts v2 reads at
    `copies` times the traffic, with the same pages, items and mix, without deriving it again (deriving
    10x here takes over two hours). Copy `k` marks each id at its first dash, each visitor at its first
    character (both with a letter no original has there) and each user with `~k`. The stats endpoints'
    kept sums and other daily rows are not copied: only v2 reads are measured on such a database."""
    from trackside.storage.label_days import record_label_days
    from trackside.storage.tables import FACT_TABLES
    from trackside.storage.visit_days import record_visit_days

    def mapped(column: str) -> str:
        letter = "chr(103 + k)"  # g, h, i ...: never a hex digit, never a dash
        if column in ("id", "visit_id"):
            return f"overlay({column} placing {letter} from 9 for 1)"
        if column == "visitor":
            return f"overlay(visitor placing {letter} from 1 for 1)"
        if column == "who":
            return (f"CASE WHEN who LIKE 'v:%' THEN 'v:' || overlay(substr(who, 3) placing {letter} from 1 for 1) "
                    "ELSE who || '~' || k END")  # fmt: skip
        if column == "user_id":
            return "user_id || '~' || k"
        return column

    took: dict[str, Any] = {"copies": copies}
    engine = create_engine(url)
    try:
        for table in FACT_TABLES:
            names = [c.name for c in table.columns]
            t = time.monotonic()
            async with engine.begin() as conn:
                await conn.exec_driver_sql(
                    f"INSERT INTO {table.name} ({', '.join(names)}) "  # noqa: S608
                    f"SELECT {', '.join(mapped(n) for n in names)} "
                    f"FROM {table.name}, generate_series(1, {copies - 1}) AS k"
                )
            took[table.name + "_s"] = round(time.monotonic() - t, 1)
            log(f"  {table.name} copied {copies - 1} times in {time.monotonic() - t:.0f}s")
        t = time.monotonic()
        today = datetime.now(UTC).date()
        for d in range(days, 0, -1):
            async with engine.begin() as conn:
                await record_visit_days(conn, today - timedelta(days=d))
                await record_label_days(conn, today - timedelta(days=d))
        took["daily_rows_s"] = round(time.monotonic() - t, 1)
        log(f"  visits' and labels' daily rows of {days} days written again in {time.monotonic() - t:.0f}s")
    finally:
        await engine.dispose()
    await dbench.analyze(url)
    tables = ("fact_page_views", "fact_looks", "fact_visits", "visit_dim_days", "visit_dim_users")
    took["table_rows"] = {t: await count(url, f"SELECT COUNT(*) FROM {t}") for t in tables}  # noqa: S608
    return took


# --------------------------------------------------------------------------------------------------------------
# Reads through a real sidecar.
# --------------------------------------------------------------------------------------------------------------


def bearer(sub: str, roles: list[str]) -> dict[str, str]:
    claims = {"sub": sub, "exp": int(time.time()) + 7200, "roles": roles}
    return {"authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}


def moderators() -> Iterator[dict[str, str]]:
    n = 0
    while True:
        n += 1
        yield bearer(f"bench-mod-{n}", ["user", "moderator"])


async def timed(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], body: Any = None
) -> dict[str, Any]:
    t = time.perf_counter()
    r = await client.request(method, path, headers=headers, json=body, timeout=300.0)
    out: dict[str, Any] = {"ms": round((time.perf_counter() - t) * 1000, 1), "status": r.status_code}
    if r.status_code != 200:
        out["error"] = r.text[:300]
    elif path.startswith("/_trackside/api/v2/"):
        out["results"] = len(r.json().get("results", []))
    return out


V2_QUERIES = (
    ("v2: visitors+pageviews by source, country=US and device=Desktop, 30d",
     {"metrics": ["visitors", "pageviews"], "date_range": "30d", "dimensions": ["visit:source"],
      "filters": [["is", "visit:country", ["US"]], ["is", "visit:device", ["Desktop"]]]}),
    ("v2: visitors+pageviews by page, page contains /p/ and browser=Chrome, 30d",
     {"metrics": ["visitors", "pageviews"], "date_range": "30d", "dimensions": ["event:page"],
      "filters": [["contains", "event:page", ["/p/"]], ["is", "visit:browser", ["Chrome"]]],
      "pagination": {"limit": 20}}),
    ("v2: visitors+bounce rate by entry page, source=Google and os=iOS, 30d",
     {"metrics": ["visitors", "bounce_rate", "visit_duration"], "date_range": "30d",
      "dimensions": ["visit:entry_page"],
      "filters": [["is", "visit:source", ["Google"]], ["is", "visit:os", ["iOS"]]], "pagination": {"limit": 20}}),
    ("v2: content views by item, kind=artwork and country=DE, 30d",
     {"metrics": ["content_views", "unique_viewers"], "date_range": "30d", "dimensions": ["event:props:content_id"],
      "filters": [["is", "event:props:content_kind", ["artwork"]], ["is", "visit:country", ["DE"]]],
      "pagination": {"limit": 20}}),
)  # fmt: skip


async def measure_reads(
    url: str, tmp: Path, report: dict[str, Any], settle: float = 0.0, v2_only: bool = False
) -> None:
    from tests.servers import run_server, run_sidecar
    from tests.upstream_app import app as upstream_asgi

    rows: list[dict[str, Any]] = report.setdefault("reads", [])
    who = moderators()
    async with run_server(upstream_asgi) as upstream:
        settings = settings_for(url, upstream, str(tmp / "spool"))
        t = time.monotonic()
        async with run_sidecar(settings) as (base, _app):
            report["sidecar_start_s"] = round(time.monotonic() - t, 1)
            # A sidecar starts its scheduled rollup and prune (with ANALYZE on PostgreSQL) at once: reads
            # right after start share the machine with them; `--settle` waits them out first.
            report["settle_s"] = settle
            await asyncio.sleep(settle)
            async with httpx.AsyncClient(base_url=base) as client:
                # One read first, of a day with no facts: "cold" below is each answer's first read
                # (nothing cached for it), not the new process's first database connection.
                await timed(client, "GET", "/api/post/no-such-item/stats", next(who))
                endpoints = (
                    ("artwork, the top one", "/api/post/art00000/stats"),
                    ("artwork, rank 100", "/api/post/art00099/stats"),
                    ("artwork, rank 5,000", "/api/post/art04999/stats"),
                    ("blog post, the top one", "/api/blog-post/post-000/stats"),
                    ("sitewide", "/api/admin/sitewide-stats"),
                )
                for name, path in () if v2_only else endpoints:
                    first = await timed(client, "GET", path, next(who))
                    caller = next(who)
                    await timed(client, "GET", path, caller)  # this caller's answer cached
                    cached = [(await timed(client, "GET", path, caller))["ms"] for _ in range(3)]
                    refresh = await timed(client, "GET", path + "?refresh=true", next(who))
                    rows.append({"read": name, "path": path, "cold_ms": first["ms"], "status": first["status"],
                                 "refresh_ms": refresh["ms"], "cached_ms": sorted(cached)[1],
                                 "error": first.get("error")})  # fmt: skip
                    log(f"  {name}: cold {first['ms']} ms ({first['status']}), refresh {refresh['ms']} ms")
                admin = {"authorization": "Bearer " + ADMIN}
                for name, body in V2_QUERIES:
                    first = await timed(client, "POST", "/_trackside/api/v2/query", admin, body)
                    if first["status"] == 404:
                        report["v2"] = "skipped: POST /_trackside/api/v2/query answered 404 (not in this build)"
                        log("  " + report["v2"])
                        break
                    again = await timed(client, "POST", "/_trackside/api/v2/query", admin, body)
                    rows.append({"read": name, "body": body, "cold_ms": first["ms"], "status": first["status"],
                                 "again_ms": again["ms"], "results": first.get("results"),
                                 "error": first.get("error")})  # fmt: skip
                    log(
                        f"  {name}: {first['ms']} ms ({first['status']}, {first.get('results')} rows), "
                        f"again {again['ms']} ms {first.get('error') or ''}"
                    )


# --------------------------------------------------------------------------------------------------------------
# The big day: derivation and rollup, each in a child process.
# --------------------------------------------------------------------------------------------------------------


# Runs a module (`-m NAME args`) or a script (`PATH args`) and writes its own VmHWM at exit. `wait4`'s
# ru_maxrss will not do: Linux carries the forking parent's high-water mark across exec.
HWM_WRAPPER = """
import atexit, os, runpy, sys
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            open(os.environ["BENCH_HWM_FILE"], "w").write(line.split()[1])
atexit.register(hwm)
if sys.argv[1] == "-m":
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(sys.argv[0]))
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def child(argv: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO) -> dict[str, Any]:
    """Run `python -m NAME args` or `python PATH args` to the end: wall and CPU seconds, its own peak RSS.
    `cwd`: whose code it imports (the working directory is first on its path)."""
    hwm = log_path.with_suffix(".hwm")
    t = time.monotonic()
    with open(log_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", HWM_WRAPPER, *argv], env={**env, "BENCH_HWM_FILE": str(hwm)},
                                cwd=cwd, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    result = {"seconds": round(time.monotonic() - t, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
              "peak_rss_mb": round(int(hwm.read_text()) / 1024) if hwm.exists() else None,
              "exit": proc.returncode}  # fmt: skip
    if proc.returncode != 0:
        result["log"] = log_path.read_text()[-1500:]
    else:  # a child that prints a JSON line last (bench/rollup_child.py): what it measured itself
        last = (log_path.read_text().strip().splitlines() or [""])[-1]
        if last.startswith("{"):
            result["own"] = json.loads(last)
    return result


SUM_TABLES = ("fact_sum_days", "fact_sums", "fact_sum_who", "fact_sum_visitors", "item_sums", "item_sum_who")


async def sum_rows(url: str, day: date) -> dict[str, dict[str, int]]:
    """The day's rows in each sum table, and their bytes (PostgreSQL: `pg_column_size` of each row)."""
    engine = create_engine(url)
    out: dict[str, dict[str, int]] = {}
    try:
        async with engine.connect() as conn:
            for table in SUM_TABLES:
                size = "SUM(pg_column_size(t.*))" if conn.dialect.name == "postgresql" else "0"
                rows, size_b = (await conn.exec_driver_sql(
                    f"SELECT COUNT(*), {size} FROM {table} AS t WHERE day = '{day.isoformat()}'"  # noqa: S608
                )).one()  # fmt: skip
                out[table] = {"rows": int(rows), "bytes": int(size_b or 0)}
    finally:
        await engine.dispose()
    return out


async def move_sums(url: str, day: date, hide: bool) -> None:
    """`hide`: the day's sum rows moved aside (`bench_hidden_<table>`), as a rollup before sums were kept
    leaves a rolled day (it forgot them); else moved back."""
    engine = create_engine(url)
    where = f"day = '{day.isoformat()}'"
    try:
        async with engine.begin() as conn:
            for table in SUM_TABLES:
                if hide:
                    await conn.exec_driver_sql(f"DROP TABLE IF EXISTS bench_hidden_{table}")
                    await conn.exec_driver_sql(
                        f"CREATE TABLE bench_hidden_{table} AS SELECT * FROM {table} WHERE {where}"  # noqa: S608
                    )
                await conn.exec_driver_sql(f"DELETE FROM {table} WHERE {where}")  # noqa: S608
                if not hide:
                    await conn.exec_driver_sql(f"INSERT INTO {table} SELECT * FROM bench_hidden_{table}")  # noqa: S608
                    await conn.exec_driver_sql(f"DROP TABLE bench_hidden_{table}")
    finally:
        await engine.dispose()


# What a rollup writes: a round rolling the day again deletes and rewrites their rows of the day.
OUTPUT_TABLES = ("daily_site", "daily_site_dims", "daily_content", "daily_content_dims", "user_days", "journey_days",
                 "visit_dim_days", "visit_dim_users", "label_days", "label_users", "funnel_days")  # fmt: skip


async def vacuum_outputs(url: str) -> None:
    """PostgreSQL: VACUUM the rollup's output tables, so that each round starts as production's
    autovacuum would leave them, not behind the dead rows of every round before it (where autovacuum
    is off, as on the machine of the README's runs: 13 rounds had left 10M dead rows in
    `daily_content_dims`)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("VACUUM " + ", ".join(OUTPUT_TABLES))
    finally:
        await engine.dispose()


async def forget_rollup(url: str, day: date) -> None:
    """The day as its first rollup finds it: none of its output rows, never rolled (its facts, sums and
    raw events as they are). PostgreSQL."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            for table in OUTPUT_TABLES:
                await conn.exec_driver_sql(f"DELETE FROM {table} WHERE day = $1", (day,))  # noqa: S608
            await conn.exec_driver_sql("UPDATE rollup_days SET rolled_at = NULL, dirty = true WHERE day = $1", (day,))
    finally:
        await engine.dispose()


def bigday(backend: str, args: argparse.Namespace, tmp: Path, dbs: plb.Databases) -> dict[str, Any]:
    from trackside.storage.migrate import migrate

    if args.reuse:  # a kept big day (`--keep`), derived and rolled: its rounds alone
        url = args.reuse
        day = date.fromisoformat(asyncio.run(scalar(url, "SELECT MAX(day) FROM events"))[:10])
        n = asyncio.run(count(url, "SELECT COUNT(*) FROM events"))
        marks = asyncio.run(count(url, "SELECT COUNT(*) FROM fact_visitor_days"))
        log(f"{backend} big day {day} again on {url}: {n:,} events, {marks:,} visitor-days")
        env = plb.child_env(TRACKSIDE_DATABASE_URL=url, TRACKSIDE_LOG_LEVEL="warning")
        stored: dict[str, float] = {}
        derive = rollup = {"seconds": None, "peak_rss_mb": None}
    else:
        url = dbs.new(backend, f"bigday-{backend}")
        asyncio.run(migrate(url))
        day = datetime.now(UTC).date() - timedelta(days=1)
        t = time.monotonic()
        stored = asyncio.run(store_day(url, day, args.bigday_events, seed=7))
        n = asyncio.run(count(url, "SELECT COUNT(*) FROM events"))
        marks = asyncio.run(count(url, "SELECT COUNT(*) FROM derive_marks"))
        log(f"{backend} big day {day}: {n:,} events, {marks:,} visitor-days marked in {time.monotonic() - t:.0f}s")
        env = plb.child_env(TRACKSIDE_DATABASE_URL=url, TRACKSIDE_LOG_LEVEL="warning")
        with dbench.Autoanalyze(url) as analyzer:
            derive = child([str(Path(__file__).resolve()), "--child-derive", url, day.isoformat()], env,
                           tmp / f"derive-{backend}.log")  # fmt: skip
        derive["analyze_runs"] = analyzer.runs
        asyncio.run(dbench.analyze(url))
        log(f"  derive (child): {derive}")
        rollup = child(["-m", "sidecar", "rollup", "--day", day.isoformat()], env,
                       tmp / f"rollup-{backend}.log")  # fmt: skip
        log(f"  rollup (child): {rollup}")
    # Rounds of the rollup alone (each piece's seconds) and of the funnel encoding alone, this checkout's code
    # and `--before`'s alternating, each a child with its own peak RSS.
    codes = {"after": REPO, **({"before": Path(args.before).resolve()} if args.before else {})}
    rounds: list[dict[str, Any]] = []
    script = str(REPO / "bench" / "rollup_child.py")
    sums = asyncio.run(sum_rows(url, day))
    log(f"  the day's sums: {sums}")
    for r in range(args.rollup_rounds):
        for name, code in codes.items():
            code_env = {**env, "PYTHONPATH": str(code)}
            for mode in args.modes.split(","):
                # A rollup by code older than kept sums: the day as that code leaves it (sums forgotten at its
                # first rollup), and the sums back for this code's rounds after it (it would drop them).
                hide = mode in ("reroll", "rollup") and name == "before" and args.before_forgets_sums
                if mode == "first":
                    asyncio.run(forget_rollup(url, day))
                if backend == "postgres" and mode in ("reroll", "rollup", "first"):
                    asyncio.run(vacuum_outputs(url))
                if hide:
                    asyncio.run(move_sums(url, day, hide=True))
                argv = [script, mode, url, day.isoformat(), *([str(args.remark)] if mode == "reroll" else [])]
                try:
                    got = child(argv, code_env, tmp / f"{mode}-{name}-{r}.log", cwd=code)
                finally:
                    if hide:
                        asyncio.run(move_sums(url, day, hide=False))
                got.update(round=r, code=name, mode=mode, load_average=[round(x, 1) for x in os.getloadavg()])
                rounds.append(got)
                log(f"  {mode} ({name}, round {r}): {got}")
    return {"rounds": rounds, "sums": sums, "backend": backend, "day": day.isoformat(), "events": n,
            "visitor_days": marks,
            "store": {k: round(v, 1) for k, v in stored.items()}, "derive": derive,
            "derive_events_per_s": round(n / derive["seconds"]) if derive["seconds"] else None, "rollup": rollup,
            "rollup_s_per_million": round(rollup["seconds"] / n * 1e6, 2) if rollup["seconds"] else None}  # fmt: skip


def child_derive(url: str, day: str) -> None:
    from trackside.storage.facts import derive_marked

    async def run() -> int:
        engine = create_engine(url)
        try:
            return await derive_marked(engine, derivation_of(settings_for(url)), date.fromisoformat(day))
        finally:
            await engine.dispose()

    print(f"derived {asyncio.run(run())} visitor-days")


# --------------------------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    lines = []
    for r in result.get("reads", []):
        seeding = r.get("seeding", {})
        lines += [f"### {r['backend']}: today {seeding.get('today', {}).get('events', 0):,} events, "
                  f"{seeding.get('rolled', {}).get('days', '?')} rolled days", "",
                  "| read | cold ms | again / refresh ms | cached ms | status |",
                  "|---|---:|---:|---:|---|"]  # fmt: skip
        for row in r.get("reads", []):
            again = row.get("again_ms", row.get("refresh_ms"))
            lines.append(
                f"| {row['read']} | {row['cold_ms']} | {again} | {row.get('cached_ms', '—')} | {row['status']} |"
            )
        if r.get("v2"):
            lines.append(f"\n{r['v2']}")
        lines.append("")
    for b in result.get("bigday", []):
        if "error" in b:
            lines.append(f"{b['backend']} big day: {b['error']}")
            continue
        d, u = b["derive"], b["rollup"]
        lines += ["| big day | events | derive s (peak RSS MB) | rollup s (peak RSS MB) | rollup s per million |",
                  "|---|---:|---:|---:|---:|",
                  f"| {b['backend']} {b['day']} | {b['events']:,} | {d['seconds']} ({d['peak_rss_mb']}) "
                  f"| {u['seconds']} ({u['peak_rss_mb']}) | {b['rollup_s_per_million']} |", ""]  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    signal.signal(signal.SIGTERM, dbench._interrupted)
    signal.signal(signal.SIGINT, dbench._interrupted)
    if len(sys.argv) == 4 and sys.argv[1] == "--child-derive":
        child_derive(sys.argv[2], sys.argv[3])
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="reads,bigday")
    p.add_argument("--backends", default="postgres")
    p.add_argument("--events-today", type=int, default=1_430_000)
    p.add_argument("--days", type=int, default=30, help="rolled days before today")
    p.add_argument("--rolled-events-per-day", type=int, default=100_000)
    p.add_argument("--bigday-events", type=int, default=1_430_000)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every event count above (10: the 10x run)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "facts.json"))
    p.add_argument("--keep", action="store_true", help="keep the databases (their URLs are printed) to look into")
    p.add_argument("--before", metavar="DIR", help="bigday: another checkout whose rollup and encoding alternate with")
    p.add_argument("--rollup-rounds", type=int, default=1, help="bigday: rounds of the rollup and the encoding alone")
    p.add_argument("--modes", default="encode,rollup",
                   help="bigday rounds: encode (funnel encoding alone), rollup (forced: groups every fact), reroll "
                        "(the day made dirty, --remark visitor-days marked again: reads the kept sums), first (the "
                        "day's output rows deleted and vacuumed, never rolled: its first rollup, again)")  # fmt: skip
    p.add_argument("--remark", type=int, default=1000, help="reroll: visitor-days marked again before each")
    p.add_argument("--before-forgets-sums", action=argparse.BooleanOptionalAction, default=True,
                   help="rollup and reroll by --before: the day's sums moved aside for it (as its first rollup "
                        "left the day), then back")  # fmt: skip
    p.add_argument("--replicate", type=int, default=1, metavar="N",
                   help="reads with --reuse: the kept database's facts copied to N times the traffic first "
                        "(`replicate`; PostgreSQL), then the v2 queries alone")  # fmt: skip
    p.add_argument("--settle", type=float, default=0.0, help="reads: seconds from start to first read")
    p.add_argument("--reuse", metavar="URL", help="`reads` again on a database a `--keep` run seeded (migrated first); "
                   "`bigday`: only the `--rollup-rounds` again, on a kept big day, its newest day)")  # fmt: skip
    args = p.parse_args()
    for name in ("events_today", "rolled_events_per_day", "bigday_events"):
        setattr(args, name, round(getattr(args, name) * args.scale))
    parts = args.parts.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="trackside-facts-bench-"))
    (tmp / "spool").mkdir()
    dbs = plb.Databases(tmp)
    result: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "config": vars(args),
                              "git": dbench.git_state(), "load_avg_start": os.getloadavg()}  # fmt: skip
    try:
        for backend in args.backends.split(","):
            if "reads" in parts:
                report: dict[str, Any] = {"backend": backend}
                result.setdefault("reads", []).append(report)
                if args.reuse:
                    url = args.reuse
                    from trackside.storage.migrate import migrate

                    asyncio.run(migrate(url))
                    log(f"=== {backend}: reads again on {url}")
                    if args.replicate > 1:
                        report["replicated"] = asyncio.run(replicate(url, args.replicate, args.days))
                else:
                    url = dbs.new(backend, f"reads-{backend}")
                    log(
                        f"=== {backend}: {args.days} rolled days of {args.rolled_events_per_day:,}, "
                        f"today {args.events_today:,}"
                    )
                    asyncio.run(seed_reads(url, args, report))
                asyncio.run(measure_reads(url, tmp, report, args.settle, v2_only=args.replicate > 1))
            if "bigday" in parts:
                result.setdefault("bigday", []).append(bigday(backend, args, tmp, dbs))
    finally:
        if args.keep:
            log(f"kept: {dbs.pg}")
        else:
            dbs.drop_all()
        shutil.rmtree(tmp, ignore_errors=True)
        # Written whatever happened: an interrupted run keeps what it measured.
        result["bench_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        result["load_avg_end"] = os.getloadavg()
        result["elapsed_s"] = round(time.monotonic() - T0)
        result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str))
        print(markdown(result))
        log(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
