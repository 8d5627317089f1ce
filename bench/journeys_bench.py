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
rarest label: the first call, then `--repeats` more (median), from the facts (no day rolled: as today's part
of a range is read, and every day was before `journey_days`) with `--from-facts`, and over one day from the
facts (what a day not rolled yet, today, adds at most); then writes each day's journeys' daily rows as the
rollup does (`record_journey_days`, timed per day), marks the days rolled, and times the same journeys again,
now read from those rows. Prints a JSON summary.

`--url` reuses a database already seeded with page view facts that carry their neighbours' labels (e.g.
`bench/funnel_bench.py --keep`'s: 30 days of a million page views), with `--labels` naming the labels to time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from trackside.stats.journeys import journeys, parse_journey
from trackside.storage.engine import create_engine, snapshot
from trackside.storage.journey_days import record_journey_days
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


async def time_journeys(
    engine: AsyncEngine, label: str, date_range: list[str], today: date, repeats: int
) -> dict[str, object]:
    jq = parse_journey({"date_range": date_range, "label": label}, today)
    timings = []
    answer: dict[str, Any] = {}
    for _ in range(1 + repeats):
        t = time.perf_counter()
        async with snapshot(engine) as conn:
            answer = await journeys(conn, jq, [])
        timings.append(time.perf_counter() - t)
    return {
        "pageviews": answer["pageviews"],
        "visits": answer["visits"],
        "next": ", ".join(f"{r['label']} {r['count']}" for r in answer["next"][:3]),
        "answer": answer,
        "first_call_seconds": round(timings[0], 2),
        "median_seconds": round(statistics.median(timings[1:]), 2) if repeats else None,
    }


async def roll_journeys(engine: AsyncEngine, days: list[date]) -> list[float]:
    """Each day's journeys' daily rows as the rollup writes them, then the day marked rolled."""
    seconds = []
    for day in days:
        t = time.perf_counter()
        async with engine.begin() as conn:
            await record_journey_days(conn, day)
            await conn.execute(
                sa.text(
                    "INSERT INTO rollup_days (day, dirty, rolled_at, events) VALUES (:day, false, now(), 0) "
                    "ON CONFLICT (day) DO UPDATE SET dirty = false, rolled_at = now()"
                ),
                {"day": day},
            )
        seconds.append(round(time.perf_counter() - t, 2))
    return seconds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--per-day", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--url", help="a database already seeded (the days before today): no seeding, not dropped")
    parser.add_argument("--labels", nargs="*", help="the labels to time (default: the most and the least viewed)")
    parser.add_argument("--from-facts", action="store_true", help="also time the whole range from the facts")
    args = parser.parse_args()
    today = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=args.days)
    name = None if args.url else "trackside_bench_" + uuid.uuid4().hex[:10]
    if name:
        await _admin(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    url = args.url or f"{base}/{name}"
    try:
        await migrate(url)
        engine = create_engine(url)
        try:
            out: dict[str, object] = {"days": args.days, "load_average_before": os.getloadavg()}
            if name:
                await make_partitions(engine, first.date(), ahead=args.days)
                t0 = time.monotonic()
                await seed(url, first, args.days, args.per_day)
                out |= {"page_views": args.days * args.per_day, "seed_seconds": round(time.monotonic() - t0, 1)}
            last = (today - timedelta(days=1)).date().isoformat()
            whole = [first.date().isoformat(), last]
            labels = args.labels or [LABELS[0], LABELS[-1]]
            for label in labels:
                if args.from_facts:
                    out[f"{label}: whole range from facts"] = await time_journeys(engine, label, whole, today.date(), 0)
                out[f"{label}: one day from facts"] = await time_journeys(engine, label, [last, last], today.date(), 1)
            days = [first.date() + timedelta(days=d) for d in range(args.days)]
            per_day = await roll_journeys(engine, days)
            out["rollup step per day (s): min, median, max"] = [min(per_day), statistics.median(per_day), max(per_day)]
            for label in labels:
                out[f"{label}: whole range from journey_days"] = await time_journeys(
                    engine, label, whole, today.date(), args.repeats
                )
            for label in labels:
                # The same figures from the facts and from the daily rows (the whole answer).
                facts = out.get(f"{label}: whole range from facts")
                rows = out[f"{label}: whole range from journey_days"]
                if isinstance(facts, dict) and isinstance(rows, dict):
                    out[f"{label}: same answer"] = facts["answer"] == rows["answer"]
            for value in out.values():
                if isinstance(value, dict):
                    value.pop("answer", None)
            out["load_average_after"] = os.getloadavg()
        finally:
            await engine.dispose()
        print(json.dumps(out, indent=1, default=str))
    finally:
        if name:
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    asyncio.run(main())
