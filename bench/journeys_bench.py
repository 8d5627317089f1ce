"""Journeys benchmark (issue 15): the pages before and after a chosen page over seeded page view facts.

Run from the repository root:

    .venv/bin/python bench/journeys_bench.py                          # 30 days of 200k page views, PostgreSQL
    .venv/bin/python bench/journeys_bench.py --days 7 --per-day 1000000

What one run does: a fresh PostgreSQL database (`trackside_bench_<random>`, dropped at the end), migrated, its
day partitions made (as the scheduled prune makes them); then `--days` closed days of `--per-day` page view facts
each, written straight into `fact_page_views` by SQL: visits of 5 page views 30 s apart, each page's route label
drawn from 20 labels with a skew (the first, `/`, about 30 % of all views; the last about 2 %), then each view's
neighbours' labels (`prev_label`, `next_label`) as derivation sets them; ANALYZE.
Then times `trackside.stats.journeys.journeys` over the whole range, as the API runs it, for `/` and for the
rarest label: the first call, then `--repeats` more (median). Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from trackside.stats.journeys import journeys, parse_journey
from trackside.storage.engine import create_engine, snapshot
from trackside.storage.migrate import migrate
from trackside.storage.partitions import make_partitions

POSTGRES_ADMIN_URL = os.environ.get("TRACKSIDE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
LABELS = ["/"] + [f"/s{i}/[id]" for i in range(1, 20)]


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def seed(url: str, first: datetime, days: int, per_day: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("SELECT setseed(0.42)")
        for d in range(days):
            start = first + timedelta(days=d)
            await conn.execute(
                """
                INSERT INTO fact_page_views
                    (day, id, ts, hour, visitor, who, visit_id, label, path, device, browser, os)
                SELECT $1::date, md5($1::text || g.i), t.ts, extract(hour FROM t.ts)::int, 'v' || (g.i / 5),
                       'v:v' || (g.i / 5), md5($1::text || 'visit' || (g.i / 5)), l.label,
                       replace(l.label, '[id]', (g.i % 997)::text), 'desktop', 'Firefox', 'Linux'
                FROM generate_series(0, $3 - 1) AS g(i)
                CROSS JOIN LATERAL (SELECT $2::timestamp + ((g.i / 5) * (86000.0 / ($3 / 5 + 1))
                                    + (g.i % 5) * 30) * interval '1 second' AS ts) AS t
                CROSS JOIN LATERAL (SELECT ($4::text[])[1 + floor(power(random(), 2.5) * 20)::int] AS label
                                    WHERE g.i >= 0) AS l
                """,
                start.date(),
                start,
                per_day,
                LABELS,
            )
        await conn.execute(
            "UPDATE fact_page_views SET prev_label = n.prev_label, next_label = n.next_label FROM ("
            "SELECT day, id, LAG(label) OVER w AS prev_label, LEAD(label) OVER w AS next_label FROM fact_page_views "
            "WINDOW w AS (PARTITION BY day, visit_id ORDER BY ts, id)) AS n "
            "WHERE fact_page_views.day = n.day AND fact_page_views.id = n.id"
        )
        await conn.execute("VACUUM ANALYZE fact_page_views")
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--per-day", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    today = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=args.days)
    name = "trackside_bench_" + uuid.uuid4().hex[:10]
    await _admin(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + name
    try:
        await migrate(url)
        engine = create_engine(url)
        try:
            await make_partitions(engine, first.date(), ahead=args.days)
            t0 = time.monotonic()
            await seed(url, first, args.days, args.per_day)
            seeded = time.monotonic() - t0
            out: dict[str, object] = {"page_views": args.days * args.per_day, "days": args.days,
                                      "seed_seconds": round(seeded, 1)}  # fmt: skip
            last = (today - timedelta(days=1)).date().isoformat()
            for label in (LABELS[0], LABELS[-1]):
                body = {"date_range": [first.date().isoformat(), last], "label": label}
                jq = parse_journey(body, today.date())
                timings = []
                answer: dict[str, object] = {}
                for _ in range(1 + args.repeats):
                    t = time.perf_counter()
                    async with snapshot(engine) as conn:
                        answer = await journeys(conn, jq, [])
                    timings.append(time.perf_counter() - t)
                out[label] = {
                    "pageviews": answer["pageviews"],
                    "first_call_seconds": round(timings[0], 2),
                    "median_seconds": round(statistics.median(timings[1:]), 2),
                }
        finally:
            await engine.dispose()
        print(json.dumps(out, indent=1))
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
