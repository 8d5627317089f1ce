"""A funnel over many days of fact rows: `POST /_trackside/api/v2/funnel` through a real sidecar, timed
first (no cache of Trackside's; none exists for funnels) and then repeated.

Run from the repository root:

    .venv/bin/python bench/funnel_bench.py                                  # 30 days of 100k page views
    .venv/bin/python bench/funnel_bench.py --views-per-day 1000000          # the issue's scale: 30M page views
    .venv/bin/python bench/funnel_bench.py --backend sqlite --views-per-day 20000

Data: fact rows written directly (the funnel reads nothing else), so that a month of a busy site is seeded in
minutes (derivation, measured elsewhere, is not what this times). Per day, visits of 1 to 12 page views (4 on
average), a minute or so apart, over a daily curve; 8% of visits signed in (users from a pool, so they return
across days). The entry page is `/` (35%), an artwork `/p/<id>` (40%) or another page; then artworks (50%),
`/`, profiles `/u/<name>`, blog posts `/b/<id>`, `/about`; 3% of the visits that saw an artwork upload
(`upload`, a site event) a little later. Each day its own partition on PostgreSQL (as the scheduled prune
makes them), ANALYZEd after seeding (as the prune does). Rows go in with COPY (PostgreSQL) or executemany
(SQLite).

The funnel: `/` > `/p/*` > `/u/*` > goal `upload` over the whole range (`--days` days before today), no filter,
then the same with a visit filter (`visit:device is Mobile`) and an event filter (`event:page contains /b/`).
Each is timed through the sidecar's HTTP API (`tests.servers.run_sidecar`, uvicorn as `trackside serve` runs it),
the first call ("first") and `--repeats` more; EXPLAIN (ANALYZE, BUFFERS) of the no-filter statement is
written with `--explain`. PostgreSQL's and the OS's caches are as the seeding left them (a shared server: the
bench never restarts PostgreSQL or drops the OS cache), so "first" is cold for Trackside, not for the disk.
The database is `trackside_bench_<random>`, dropped at the end unless `--keep`.

Encoded days (issue 15's target): after the SQL figures, each day is marked rolled and encoded as the rollup
encodes it (`trackside.storage.funnel_days.record_funnel_day`, timed; the rest of a rollup is measured
elsewhere). Then, in rounds that alternate the two paths, each funnel is asked in a fresh Python process
(`--child`: imports, engine, one `answer_funnel` call, as a sidecar's first funnel after start): the encoded
path, and the same `answer_funnel` with the encoded path switched off (the funnel's one statement). Both
answers must be equal. Then the API again (now the encoded path). `--sql-rounds 0` skips the statement
(277.7 s a call at 1M page views a day).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import asyncpg  # noqa: E402
import httpx  # noqa: E402

from tests.servers import run_server, run_sidecar  # noqa: E402
from tests.upstream_app import app as upstream_app  # noqa: E402
from trackside.settings import Settings  # noqa: E402
from trackside.storage.engine import create_engine  # noqa: E402
from trackside.storage.migrate import migrate  # noqa: E402
from trackside.storage.partitions import make_partitions  # noqa: E402
from trackside.storage.tables import FACT_PAGE_VIEWS, FACT_SITE_EVENTS, FACT_VISITS  # noqa: E402

ADMIN = "bench-admin-token-0123456789abcdef-xyz"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
FUNNEL = [{"page": "/"}, {"page": "/p/*"}, {"page": "/u/*"}, {"goal": "upload"}]
PV_COLUMNS = (
    "day", "id", "ts", "hour", "visitor", "who", "user_id", "visit_id", "label", "path", "referrer", "source",
    "device", "browser", "os", "country", "time_on_page_ms", "prev_label", "next_label",
)  # fmt: skip
VISIT_COLUMNS = (
    "day", "id", "visitor", "who", "user_id", "started_at", "ended_at", "duration_s", "page_views", "events",
    "bounce", "entry_page", "exit_page", "entry_label", "exit_label", "referrer", "source", "device", "browser",
    "os", "country",
)  # fmt: skip
EVENT_COLUMNS = ("day", "id", "kind", "ts", "hour", "visitor", "who", "user_id", "visit_id", "name", "label", "path")
DEVICES = (("desktop", "Firefox", "GNU/Linux"), ("desktop", "Chrome", "Windows"), ("mobile", "Safari", "iOS"))
COUNTRIES = ("US", "GB", "DE", "NL", "BR", "JP", None)
SOURCES = ((None, None), ("reddit.com", "Reddit"), ("google.com", "Google"), ("news.ycombinator.com", "Hacker News"))


def log(msg: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


class Ids:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> str:
        self.n += 1
        return str(uuid.UUID(int=self.n + (1 << 120)))


def _page(rng: random.Random, entry: bool) -> tuple[str, str]:
    r = rng.random()
    if entry:
        if r < 0.35:
            return "/", "/"
        if r < 0.75:
            return f"/p/a{rng.randrange(50_000)}", "/p/[post]"
    elif r < 0.5:
        return f"/p/a{rng.randrange(50_000)}", "/p/[post]"
    elif r < 0.65:
        return "/", "/"
    r = rng.random()
    if r < 0.5:
        return f"/u/user{rng.randrange(20_000)}", "/u/[user]"
    if r < 0.8:
        return f"/b/b{rng.randrange(2_000)}", "/b/[blog]"
    return "/about", "/about"


def day_rows(day: date, views: int, rng: random.Random, ids: Ids) -> tuple[list[tuple[Any, ...]], ...]:
    """(page views, visits, site events) of one day, about `views` page views."""
    pvs: list[tuple[Any, ...]] = []
    visits: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    base = datetime.combine(day, datetime.min.time())
    n = 0
    while len(pvs) < views:
        n += 1
        visitor = f"{day:%m%d}{n:026x}"
        signed = rng.random() < 0.08
        user = f"user{rng.randrange(20_000)}" if signed else None
        who = f"u:{user}" if user else f"v:{visitor}"
        # A daily curve: more in the (UTC) evening.
        start = base + timedelta(seconds=min(86_000, int(86_400 * rng.betavariate(2.2, 1.6))))
        count = min(12, 1 + int(rng.expovariate(1 / 3.0)))
        device, browser, os_ = DEVICES[rng.randrange(len(DEVICES))]
        country = COUNTRIES[rng.randrange(len(COUNTRIES))]
        referrer, source = SOURCES[rng.randrange(len(SOURCES))]
        ts = start
        visit_id = ids.next()
        pages: list[tuple[datetime, str, str, str]] = []
        saw_artwork = False
        for i in range(count):
            pid = visit_id if i == 0 else ids.next()
            path, label = _page(rng, i == 0)
            saw_artwork = saw_artwork or label == "/p/[post]"
            pages.append((ts, pid, path, label))
            gap = min(1700.0, rng.expovariate(1 / 70.0))
            nxt = ts + timedelta(seconds=gap)
            if nxt.date() != day:
                break
            ts = nxt
        for i, (at, pid, path, label) in enumerate(pages):
            on_page = int((pages[i + 1][0] - at).total_seconds() * 1000) if i + 1 < len(pages) else None
            prev_label = pages[i - 1][3] if i else None
            next_label = pages[i + 1][3] if i + 1 < len(pages) else None
            pvs.append(
                (day, pid, at, at.hour, visitor, who, user, visit_id, label, path, referrer, source, device,
                 browser, os_, country, on_page, prev_label, next_label)
            )  # fmt: skip
        end = pages[-1][0]
        n_events = 0
        if saw_artwork and rng.random() < 0.03:
            at = min(end + timedelta(seconds=rng.randrange(20, 300)), base + timedelta(seconds=86_399))
            events.append(
                (day, ids.next(), "event", at, at.hour, visitor, who, user, visit_id, "upload", "/api/post/upload",
                 "/api/post/upload")
            )  # fmt: skip
            end = max(end, at)
            n_events = 1
        first, last = pages[0], pages[-1]
        visits.append(
            (day, visit_id, visitor, who, user, first[0], end, int((end - first[0]).total_seconds()), len(pages),
             n_events, len(pages) == 1 and not n_events, first[2], last[2], first[3], last[3], referrer, source,
             device, browser, os_, country)
        )  # fmt: skip
    return pvs, visits, events


async def seed(url: str, days: list[date], views: int, seed_value: int) -> dict[str, Any]:
    rng = random.Random(seed_value)
    ids = Ids()
    engine = create_engine(url)
    totals: dict[str, Any] = {"page_views": 0, "visits": 0, "site_events": 0}
    started = time.monotonic()
    try:
        await make_partitions(engine, days[0], ahead=len(days) + 1)
        pg = None
        if url.startswith("postgresql"):
            pg = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        for day in days:
            pvs, visits, events = day_rows(day, views, rng, ids)
            if pg is not None:
                await pg.copy_records_to_table("fact_page_views", records=pvs, columns=list(PV_COLUMNS))
                await pg.copy_records_to_table("fact_visits", records=visits, columns=list(VISIT_COLUMNS))
                await pg.copy_records_to_table("fact_site_events", records=events, columns=list(EVENT_COLUMNS))
            else:
                async with engine.begin() as conn:
                    for table, rows, cols in (
                        (FACT_PAGE_VIEWS, pvs, PV_COLUMNS),
                        (FACT_VISITS, visits, VISIT_COLUMNS),
                        (FACT_SITE_EVENTS, events, EVENT_COLUMNS),
                    ):
                        if rows:
                            await conn.execute(table.insert(), [dict(zip(cols, r, strict=True)) for r in rows])
            totals["page_views"] += len(pvs)
            totals["visits"] += len(visits)
            totals["site_events"] += len(events)
            log(f"seeded {day}: {len(pvs):,} page views, {len(visits):,} visits, {len(events):,} uploads")
        if pg is not None:
            for table in ("fact_page_views", "fact_visits", "fact_site_events"):
                await pg.execute(f"ANALYZE {table}")
            size = await pg.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
            totals["database_size"] = size
            await pg.close()
    finally:
        await engine.dispose()
    totals["seconds"] = round(time.monotonic() - started, 1)
    return totals


async def explain(url: str, body: dict[str, Any], settings: Settings) -> str:
    from trackside.goals import load_goals
    from trackside.stats.v2.funnel import PG_SETTINGS, funnel_select, parse_funnel, resolve_goals
    from trackside.stats.v2.sql import Builder

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                for setting in PG_SETTINGS:
                    await conn.exec_driver_sql(f"SET {setting}")
            fq = parse_funnel(body, datetime.now(UTC).date())
            goals = await load_goals(conn, settings)
            assert fq.q.first is not None
            b = Builder(fq.q, fq.q.first, None, goals, conn.dialect.name)
            stmt = funnel_select(b, fq.steps, resolve_goals(fq.steps, goals))
            sql = str(stmt.compile(conn.sync_connection, compile_kwargs={"literal_binds": True}))
            rows = await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            return "\n".join(r[0] for r in rows)
    finally:
        await engine.dispose()


async def encode(url: str, days: list[date]) -> dict[str, Any]:
    """Each day marked rolled and clean, and encoded as its rollup encodes it."""
    from trackside.storage.funnel_days import record_funnel_day
    from trackside.storage.tables import ROLLUP_DAYS

    engine = create_engine(url)
    per_day = []
    try:
        for day in days:
            t0 = time.perf_counter()
            async with engine.begin() as conn:
                await conn.execute(ROLLUP_DAYS.delete().where(ROLLUP_DAYS.c.day == day))
                await conn.execute(
                    ROLLUP_DAYS.insert().values(day=day, dirty=False, rolled_at=datetime.now(UTC).replace(tzinfo=None))
                )
                rows = await record_funnel_day(conn, day)
            per_day.append(round(time.perf_counter() - t0, 2))
            log(f"encoded {day}: {rows:,} rows in {per_day[-1]} s")
        out: dict[str, Any] = {"seconds_per_day": per_day, "seconds": round(sum(per_day), 1)}
        async with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                size = await conn.exec_driver_sql(
                    "SELECT pg_size_pretty(pg_total_relation_size('funnel_days')), "
                    "pg_size_pretty(pg_total_relation_size('funnel_strings')), (SELECT count(*) FROM funnel_strings)"
                )
                days_size, strings_size, strings = tuple(size.one())
                out.update(funnel_days_size=days_size, funnel_strings_size=strings_size, strings=strings)
        return out
    finally:
        await engine.dispose()


async def child(url: str, body: dict[str, Any], path: str) -> None:
    """One funnel in this fresh process (`--child`): prints its time, CPU time and answer as JSON."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    import trackside.stats.v2.funnel as funnel
    from trackside.stats.v2.engine import Limits, load_goals

    imported = time.perf_counter() - t0
    if path == "sql":

        async def off(*_: Any) -> None:
            return None

        funnel.encoded_funnel = off  # type: ignore[assignment]
    settings = Settings(database_url=url, goals=("upload",), admin_token=ADMIN)
    engine = create_engine(url)
    t1 = time.perf_counter()
    c1 = time.process_time()
    fq = funnel.parse_funnel(body, datetime.now(UTC).date())

    async def goals(conn: Any) -> Any:
        return await load_goals(conn, settings)

    answer = await funnel.answer_funnel(engine, fq, Limits(timeout_seconds=900.0), goals)
    wall = time.perf_counter() - t1
    cpu = time.process_time() - c1
    await engine.dispose()
    print(json.dumps({
        "path": path, "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "import_seconds": round(imported, 3),
        "process_cpu_seconds": round(time.process_time() - c0, 3),
        "steps": [(s["label"], s["visitors"], s["median_seconds_from_previous"]) for s in answer["steps"]],
    }))  # fmt: skip


def run_child(url: str, body: dict[str, Any], path: str) -> dict[str, Any]:
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", path, "--url", url, "--body", json.dumps(body)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd="/tmp")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    out["load_average"] = [round(x, 1) for x in os.getloadavg()]
    return out


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    p.add_argument("--views-per-day", type=int, default=100_000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL database (its URL is printed)")
    p.add_argument("--url", help="an already seeded database: skip the seeding")
    p.add_argument("--explain", help="write EXPLAIN (ANALYZE, BUFFERS) of the no-filter funnel to this file")
    p.add_argument("--out", default="bench/results/funnel.json")
    p.add_argument("--rounds", type=int, default=2, help="fresh-process rounds of each path (encoded, then SQL)")
    p.add_argument("--sql-rounds", type=int, default=None, help="rounds of the SQL path (default: --rounds)")
    p.add_argument("--api-sql", action="store_true", help="also time the SQL path through the API (before encoding)")
    p.add_argument("--sql-first-only", action="store_true", help="the SQL path for the first funnel only")
    p.add_argument("--seed-only", action="store_true", help="seed a database, keep it and stop")
    p.add_argument(
        "--remake-partitions",
        action="store_true",
        help="drop today's and the next 2 days' (empty) "
        "partitions before each API run: the sidecar's prune makes them during the calls",
    )
    p.add_argument("--settle", type=float, default=0.0, help="seconds a fresh sidecar runs before the first funnel")
    p.add_argument("--no-encode", action="store_true", help="the days are encoded already (--url)")
    p.add_argument("--child", choices=("encoded", "sql"), help=argparse.SUPPRESS)
    p.add_argument("--body", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        await child(args.url, json.loads(args.body), args.child)
        return
    sql_rounds = args.rounds if args.sql_rounds is None else args.sql_rounds

    today = datetime.now(UTC).date()
    days = [today - timedelta(days=args.days - i) for i in range(args.days)]
    tmp = tempfile.mkdtemp(prefix="funnel_bench_")
    made_db = None
    url = args.url
    seeded: dict[str, Any] = {"skipped": "--url given"}
    if url is None:
        if args.backend == "postgresql":
            made_db = "trackside_bench_" + uuid.uuid4().hex[:10]
            admin = await asyncpg.connect(PG_ADMIN)
            await admin.execute(f'CREATE DATABASE "{made_db}"')
            await admin.close()
            url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{made_db}"
        else:
            url = f"sqlite+aiosqlite:///{tmp}/funnel.db"
        await migrate(url)
        log(f"seeding {args.days} days of {args.views_per_day:,} page views into {url}")
        seeded = await seed(url, days, args.views_per_day, args.seed)
    if args.seed_only:
        log(f"seeded, kept {url}: {seeded}")
        return
    results: dict[str, Any] = {
        "backend": args.backend,
        "days": args.days,
        "views_per_day": args.views_per_day,
        "seeded": seeded,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()},
    }
    try:
        async with run_server(upstream_app) as upstream:
            settings = Settings(
                frontend_url=upstream, api_url=upstream, database_url=url, admin_token=ADMIN,
                spool_dir=f"{tmp}/spool", goals=("upload",), log_level="warning", query_timeout_seconds=120.0,
            )  # fmt: skip
            date_range = [days[0].isoformat(), days[-1].isoformat()]
            bodies = {
                "4 steps, no filter": {"date_range": date_range, "steps": FUNNEL},
                "4 steps, visit:device is Mobile": {
                    "date_range": date_range,
                    "steps": FUNNEL,
                    "filters": [["is", "visit:device", ["Mobile"]]],
                },  # fmt: skip
                "4 steps, event:page contains /b/": {
                    "date_range": date_range,
                    "steps": FUNNEL,
                    "filters": [["contains", "event:page", ["/b/"]]],
                },  # fmt: skip
            }

            async def api(label: str) -> None:
                if args.remake_partitions and args.backend == "postgresql":
                    # As on the day after seeding: the sidecar's scheduled prune makes today's and the next
                    # days' partitions while the funnels run (each CREATE locks its fact table).
                    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
                    for table in ("fact_page_views", "fact_looks", "fact_impressions", "fact_site_events",
                                  "fact_visitor_days", "fact_visits"):  # fmt: skip
                        for offset in range(3):
                            await conn.execute(
                                f'DROP TABLE IF EXISTS "{table}_p{today + timedelta(days=offset):%Y%m%d}"'
                            )
                    await conn.close()
                async with run_sidecar(settings) as (base, _):
                    if args.settle:
                        await asyncio.sleep(args.settle)  # its startup rollup and prune (ANALYZE) done meanwhile
                    async with httpx.AsyncClient(
                        base_url=base, headers={"authorization": "Bearer " + ADMIN}, timeout=900
                    ) as c:
                        for name, body in bodies.items():
                            times = []
                            answer: Any = None
                            for _ in range(1 + args.repeats):
                                t0 = time.perf_counter()
                                r = await c.post("/_trackside/api/v2/funnel", json=body)
                                times.append(round(time.perf_counter() - t0, 3))
                                assert r.status_code == 200, r.text
                                answer = r.json()["steps"]
                            results[label][name] = {
                                "load_average_after": [round(x, 1) for x in os.getloadavg()],
                                "first_s": times[0],
                                "repeats_s": times[1:],
                                "steps": [
                                    (s["label"], s["visitors"], s["median_seconds_from_previous"]) for s in answer
                                ],
                            }
                            log(
                                f"{label} {name}: first {times[0]} s, then {times[1:]}; {results[label][name]['steps']}"
                            )

            results["api_sql"] = {}
            if args.api_sql:
                await api("api_sql")
            if not args.no_encode:
                results["encoding"] = await encode(url, days)
            # Fresh processes, the two paths alternating: each round asks every funnel of each path once.
            results["fresh_process"] = {name: {"encoded": [], "sql": []} for name in bodies}
            for r in range(max(args.rounds, sql_rounds)):
                for path in ("encoded", "sql"):
                    if r >= (args.rounds if path == "encoded" else sql_rounds):
                        continue
                    for name, body in bodies.items():
                        if path == "sql" and args.sql_first_only and name != next(iter(bodies)):
                            continue
                        got = await asyncio.to_thread(run_child, url, body, path)
                        results["fresh_process"][name][path].append(got)
                        log(f"{path} {name}: {got['seconds']} s, CPU {got['cpu_seconds']} s, {got['load_average']}")
            results["answers_equal"] = {}
            for name, paths in results["fresh_process"].items():
                answers = {json.dumps(x["steps"]) for x in paths["encoded"] + paths["sql"]}
                results["answers_equal"][name] = len(answers) == 1
                log(f"{name}: {'the same answer' if len(answers) == 1 else 'DIFFERENT answers: ' + str(answers)}")
            results["api_encoded"] = {}
            await api("api_encoded")
            if args.explain:
                Path(args.explain).write_text(await explain(url, bodies["4 steps, no filter"], settings))
    finally:
        if made_db and not args.keep:
            admin = await asyncpg.connect(PG_ADMIN)
            await admin.execute(f'DROP DATABASE IF EXISTS "{made_db}" WITH (FORCE)')
            await admin.close()
        elif made_db:
            log(f"kept {url}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    asyncio.run(main())
