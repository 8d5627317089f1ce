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

`--http`: the endpoint alone instead, wall time: a fresh sidecar each round (its answer and ClosedDays caches
empty, `--settle` seconds after its start), `GET .../popular` for artworks, then blog posts, then both at once
(as the page asks them); `--repo` serves another checkout (a `git worktree` of the code before), run one after
the other for before and after.
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


async def http_rounds(url: str, rounds: int, settle: float) -> list[dict[str, float]]:
    import httpx
    import jwt

    from tests.servers import run_sidecar
    from trackside.settings import Settings

    # As `facts_bench.settings_for` (not imported: it imports `trackside` from this checkout, not `--repo`'s).
    secret = "facts-bench-secret-facts-bench-secret-0123"
    claims = {"sub": "bench-popular", "exp": int(time.time()) + 7200, "roles": ["user", "moderator"]}
    auth = {"authorization": "Bearer " + jwt.encode(claims, secret, algorithm="HS256")}
    settings = Settings(frontend_url="http://127.0.0.1:9", api_url="http://127.0.0.1:9", jwt_secret=secret,
                        trust_roles_claim=True, database_url=url, spool_dir="/tmp", log_level="warning",
                        stats_overlay=("artwork",), auto_migrate=False)  # fmt: skip
    out = []
    for _ in range(rounds):
        got: dict[str, float] = {}
        for asked in ((KINDS[0],), (KINDS[1],), KINDS):
            async with run_sidecar(settings) as (base, _app), httpx.AsyncClient(base_url=base, timeout=300) as client:
                await asyncio.sleep(settle)
                t = time.perf_counter()
                answers = await asyncio.gather(
                    *(client.get("/_trackside/api/v1/popular", params={"kind": k, "period": "30d", "limit": LIMIT},
                                 headers=auth) for k in asked)
                )  # fmt: skip
                got["+".join(asked)] = time.perf_counter() - t
                assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        out.append(got)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sqlite-file")
    p.add_argument("--postgres-url")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--http", action="store_true", help="the endpoint alone through fresh sidecars (wall time)")
    p.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent), help="the checkout to serve (--http)")
    p.add_argument("--settle", type=float, default=5.0)
    args = p.parse_args()
    sys.path.insert(0, str(Path(args.repo).resolve()))
    urls = ([f"sqlite+aiosqlite:///{Path(args.sqlite_file).resolve()}"] if args.sqlite_file else []) + (
        [args.postgres_url] if args.postgres_url else []
    )
    if not urls:
        p.error("--sqlite-file or --postgres-url (a database bench/dashboard_bench.py seeded)")
    for url in urls:
        load = os.getloadavg()[0]
        if args.http:
            rounds = asyncio.run(http_rounds(url, args.rounds, args.settle))
            print(f"{url.split(':', 1)[0]} ({args.repo}): popular alone, fresh sidecar, wall ms; load average "
                  f"{load:.1f} -> {os.getloadavg()[0]:.1f}")  # fmt: skip
            for name in rounds[0]:
                print(f"  {name}: " + ", ".join(f"{r[name] * 1000:.0f}" for r in rounds))
            continue
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
