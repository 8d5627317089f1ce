"""The CPU the dashboard's v2 queries cost: the 17 queries of a cold load of the overview (the cards, the chart by
day, each breakdown panel), asked one after the other in this process through `trackside.stats.v2.engine.answer`,
on a database `bench/dashboard_bench.py` seeded (`--sqlite-file`, `--postgres-url`). CPU time, not wall time: on a
shared machine the wall time follows the load, the CPU time does not.

- SQLite: this process's CPU (user + system): the statements run in aiosqlite's threads.
- PostgreSQL: the server backend's CPU (from /proc: the server runs here, on loopback), one connection, without
  parallel workers so that the backend does all the work.

Before and after a change, side by side: `--repo` imports `trackside` from another checkout (a `git worktree`):

    .venv/bin/python bench/dashboard_queries_bench.py --sqlite-file /tmp/d.db --repo /tmp/before
    .venv/bin/python bench/dashboard_queries_bench.py --postgres-url postgresql+asyncpg://postgres@127.0.0.1/d
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import resource
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

CARDS = ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration"]
PANELS = [
    ("event:props:label", ["pageviews", "time_on_page"]),
    ("visit:entry_page", ["visits"]),
    ("visit:exit_page", ["visits"]),
    *((f"visit:{d}", ["visitors"]) for d in ("source", "referrer", "country", "utm_source", "utm_medium",
                                             "utm_campaign", "device", "browser", "os")),
    ("event:goal", ["visitors", "conversion_rate"]),
    ("event:props:view_type", ["content_views"]),
    ("event:props:content_id", ["content_views"]),
]  # fmt: skip


def bodies(today: Any) -> list[dict[str, Any]]:
    """What the page asks for its default view (the last 30 days; sidecar/dashboard/app.js)."""
    period = [(today - timedelta(days=29)).isoformat(), today.isoformat()]
    out: list[dict[str, Any]] = [
        {"metrics": CARDS, "date_range": period},
        {"metrics": ["visitors", "pageviews"], "date_range": period, "dimensions": ["time:day"],
         "include": {"time_labels": True}},
    ]  # fmt: skip
    for dim, metrics in PANELS:
        out.append({"metrics": metrics, "date_range": period, "dimensions": [dim],
                    "order_by": [[metrics[0], "desc"], [dim, "asc"]], "pagination": {"limit": 100}})  # fmt: skip
    return out


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(url: str, rounds: int, per_query: dict[str, list[float]] | None = None) -> list[tuple[float, float]]:
    from sqlalchemy.ext.asyncio import create_async_engine

    from trackside.goals import load_goals
    from trackside.settings import Settings
    from trackside.stats.v2.engine import Limits, answer
    from trackside.stats.v2.schema import parse
    from trackside.storage.engine import create_engine

    postgres = url.startswith("postgresql")
    if postgres:
        no_workers = {"server_settings": {"max_parallel_workers_per_gather": "0"}}
        engine = create_async_engine(url, pool_size=1, max_overflow=0, connect_args=no_workers)
        async with engine.connect() as conn:
            pid = int((await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one())
        cpu = functools.partial(backend_cpu, pid)
    else:
        engine = create_engine(url)
        cpu = own_cpu
    today = datetime.now(UTC).date()
    goals = functools.partial(load_goals, settings=Settings(database_url=url))
    limits = Limits(timeout_seconds=300)
    queries = [parse(body, today) for body in bodies(today)]
    try:
        await answer(engine, queries[0], limits, goals)  # the connection made, the tables' pages cached
        out = []
        for _ in range(rounds):
            c, t = cpu(), time.perf_counter()
            for q, body in zip(queries, bodies(today), strict=True):
                one = cpu()
                await answer(engine, q, limits, goals)
                if per_query is not None:
                    name = ",".join(body.get("dimensions", ["cards"]))
                    per_query.setdefault(name, []).append(cpu() - one)
            out.append((cpu() - c, time.perf_counter() - t))
        return out
    finally:
        await engine.dispose()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sqlite-file")
    p.add_argument("--postgres-url")
    p.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent), help="the checkout to measure")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--per-query", action="store_true", help="print each query's CPU too (median of the rounds)")
    args = p.parse_args()
    sys.path.insert(0, str(Path(args.repo).resolve()))
    urls = ([f"sqlite+aiosqlite:///{Path(args.sqlite_file).resolve()}"] if args.sqlite_file else []) + (
        [args.postgres_url] if args.postgres_url else []
    )
    if not urls:
        p.error("--sqlite-file or --postgres-url (a database bench/dashboard_bench.py seeded)")
    for url in urls:
        per_query: dict[str, list[float]] = {}
        got = asyncio.run(measure(url, args.rounds, per_query if args.per_query else None))
        kind = "server CPU" if url.startswith("postgresql") else "CPU"
        print(f"{url.split(':', 1)[0]} ({args.repo}): 17 queries, {kind} s per round: "
              + ", ".join(f"{c:.2f}" for c, _ in got) + "; wall s: " + ", ".join(f"{w:.2f}" for _, w in got)
              + f"; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        if per_query:
            ranked = sorted(per_query.items(), key=lambda kv: -statistics.median(kv[1]))
            cells = ", ".join(f"{k} {statistics.median(v) * 1000:.0f}" for k, v in ranked)
            print("  per query, CPU ms (median): " + cells)
    return 0


if __name__ == "__main__":
    sys.exit(main())
