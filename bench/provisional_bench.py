"""Stats reads of today with and without the provisional copy, on PostgreSQL, through real sidecars.

Seeds N events for today (default 300,000), starts a sidecar and reads sitewide stats (the first read
derives today and stores the copy), the query API and the most viewed artwork; then starts a fresh
sidecar (empty cache, nothing in process memory) and reads them again from the copy. Loopback only;
makes and drops its own database. Run from the repository root:

    .venv/bin/python bench/provisional_bench.py
"""

import asyncio
import os
import random
import sys
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.servers import run_server, run_sidecar  # noqa: E402
from tests.sidecar.test_stats import MOD, ev
from tests.upstream_app import app as up
from trackside.batch import Batch
from trackside.settings import Settings
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.writes import write_batch

N = int(os.environ.get("EVENTS", "300000"))


async def main():
    name = "trackside_prov_" + uuid.uuid4().hex[:8]
    c = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    await c.execute(f'CREATE DATABASE "{name}"')
    await c.close()
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    try:
        await migrate(url)
        e = create_engine(url)
        now = time.time()
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        rng = random.Random(1)
        t = time.perf_counter()
        for _b in range(0, N, 20000):
            evs = [
                ev(
                    start + rng.random() * (now - start),
                    f"v{rng.randrange(60000)}",
                    path=f"/p/a{int(rng.paretovariate(1.0)) % 20000}",
                    country="GB",
                )
                for _ in range(20000)
            ]
            await write_batch(e, Batch(events=evs))
        print("seeded", N, "in", round(time.perf_counter() - t, 1), "s")
        async with run_server(up) as u:
            s = Settings(
                frontend_url=u,
                api_url=u,
                database_url=url,
                spool_dir="/tmp/provspool",
                jwt_secret="stats-secret-stats-secret-stats-secret",
                trust_roles_claim=True,  # the moderator token carries its role
                log_level="warning",
            )
            for attempt in ("first sidecar (derives today)", "second sidecar (provisional copy)"):
                async with run_sidecar(s) as (sc, app):
                    async with httpx.AsyncClient(base_url=sc, headers=MOD, timeout=600) as cl:
                        t = time.perf_counter()
                        r = await cl.get("/api/admin/sitewide-stats")
                        d = time.perf_counter() - t
                        print(attempt, "sitewide", r.status_code, round(d * 1000), "ms", r.json()["daily_views"][-1])
                        t = time.perf_counter()
                        r = await cl.get(
                            "/_trackside/api/v1/query", params={"metrics": "page_views,visitors", "dimensions": "day"}
                        )
                        d = time.perf_counter() - t
                        print(attempt, "query by day", r.status_code, round(d * 1000), "ms")
                        t = time.perf_counter()
                        r = await cl.get("/api/blog-post/zz/stats")
                        t = time.perf_counter()
                        r = await cl.get("/_trackside/api/v1/items/artwork/a1")
                        d = time.perf_counter() - t
                        print(
                            attempt,
                            "item a1 (hottest)",
                            r.status_code,
                            round(d * 1000),
                            "ms",
                            r.json().get("total_views"),
                        )
        await e.dispose()
    finally:
        c = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
        await c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await c.close()


if __name__ == "__main__":
    asyncio.run(main())
