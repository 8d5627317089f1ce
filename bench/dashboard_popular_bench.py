"""The CPU of the dashboard's v1 popular panels (`GET /_trackside/api/v1/popular?kind=K&period=30d&limit=10`, one per
content kind, artworks and blog posts), cold, before and after they were ranked by the database, side by side in
rounds in one process, on a database `bench/dashboard_bench.py` seeded (`--sqlite-file`, `--postgres-url`):

- before: the period's days read with every item (`sidecar.api_routes._ranked_days` with an empty `ClosedDays`, as on
  a fresh sidecar: today's items grouped from facts, the rolled days' item totals into Python), read once for both
  kinds (the answers asked together shared them), then `popular_rank` and `popular_finish` per kind;
- after: `trackside.storage.popular.popular` per kind.

CPU time, not wall time (the machine is shared): SQLite, this process's (the statements run in aiosqlite's threads);
PostgreSQL, this process's and the server backend's (from /proc, one connection, no parallel workers). Both answers
are checked equal each round.

    .venv/bin/python bench/dashboard_popular_bench.py --sqlite-file /tmp/d.db --postgres-url postgresql+asyncpg://...
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dashboard_queries_bench import backend_cpu, own_cpu  # bench/ is sys.path[0]

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

KINDS = ("artwork", "blog_post")
LIMIT = 10


async def before(conn: Any, first: Any, last: Any, window: float) -> list[list[dict[str, Any]]]:
    from sidecar.api_routes import _ranked_days
    from trackside.figures import rolled_item_sketches
    from trackside.stats.cache import ClosedDays
    from trackside.stats.query import popular_finish, popular_rank

    days, totals, rolled = await _ranked_days(conn, first, last, window, ClosedDays())
    everything = [*days, totals]
    out = []
    for kind in KINDS:
        candidates = popular_rank(everything, kind, LIMIT)
        sketches = await rolled_item_sketches(conn, rolled, [(kind, r["id"]) for r in candidates])
        out.append(popular_finish(candidates, everything, kind, LIMIT, sketches))
    return out


async def after(conn: Any, first: Any, last: Any, window: float) -> list[list[dict[str, Any]]]:
    from trackside.storage.popular import popular

    return [(await popular(conn, kind, first, last, LIMIT))[0] for kind in KINDS]


async def measure(url: str, rounds: int) -> dict[str, list[tuple[float, float, float]]]:
    from sqlalchemy.ext.asyncio import create_async_engine

    from trackside.settings import Settings
    from trackside.stats.query import period_range
    from trackside.storage.engine import create_engine

    postgres = url.startswith("postgresql")
    server: Callable[[], float] = lambda: 0.0  # noqa: E731
    if postgres:
        no_workers = {"server_settings": {"max_parallel_workers_per_gather": "0"}}
        engine = create_async_engine(url, pool_size=1, max_overflow=0, connect_args=no_workers)
        async with engine.connect() as conn:
            pid = int((await conn.exec_driver_sql("SELECT pg_backend_pid()")).scalar_one())
        server = functools.partial(backend_cpu, pid)
    else:
        engine = create_engine(url)
    window = Settings(database_url=url).view_window_minutes * 60.0
    first, last = period_range("30d", datetime.now(UTC).date())
    out: dict[str, list[tuple[float, float, float]]] = {"before": [], "after": []}
    try:
        async with engine.connect() as conn:
            await after(conn, first, last, window)  # the tables' pages cached for both
            for _ in range(rounds):
                answers = {}
                for name, run in (("before", before), ("after", after)):
                    await conn.rollback()  # a fresh snapshot each
                    c, s, t = own_cpu(), server(), time.perf_counter()
                    answers[name] = await run(conn, first, last, window)
                    out[name].append((own_cpu() - c, server() - s, time.perf_counter() - t))
                assert answers["before"] == answers["after"], answers
        return out
    finally:
        await engine.dispose()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sqlite-file")
    p.add_argument("--postgres-url")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    urls = ([f"sqlite+aiosqlite:///{Path(args.sqlite_file).resolve()}"] if args.sqlite_file else []) + (
        [args.postgres_url] if args.postgres_url else []
    )
    if not urls:
        p.error("--sqlite-file or --postgres-url (a database bench/dashboard_bench.py seeded)")
    for url in urls:
        load = os.getloadavg()[0]
        got = asyncio.run(measure(url, args.rounds))
        print(f"{url.split(':', 1)[0]}: popular artworks + blog posts, 30 days, cold; load average {load:.1f} -> "
              f"{os.getloadavg()[0]:.1f}")  # fmt: skip
        for name, runs in got.items():
            cells = "; ".join(f"{c:.3f}" + (f" + {s:.3f}" if url.startswith("postgresql") else "") for c, s, _ in runs)
            median = statistics.median(c + s for c, s, _ in runs)
            walls = ", ".join(f"{w:.3f}" for _, _, w in runs)
            print(f"  {name:6} CPU s (process{' + server' if 'postgres' in url else ''}): {cells}; "
                  f"median {median:.3f}; wall s: {walls}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
