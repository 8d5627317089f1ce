"""Retention benchmark (issue 15): the weekly cohort grid of signed-in users over seeded daily rows.

Run from the repository root:

    .venv/bin/python bench/retention_bench.py                       # 400k users over 17 weeks, PostgreSQL
    .venv/bin/python bench/retention_bench.py --users 50000 --backend sqlite

What one run does: a fresh database (PostgreSQL `trackside_bench_<random>`, dropped at the end; or a SQLite
file in a temp dir), migrated; then `--users` signed-in users, each first seen on a day drawn uniformly over the
last `--days` closed days and active on each later day with probability `--active` (seeded: the same rows every
run), written straight into `user_days` and `user_first_seen` (what the rollup writes, one day at a time); ANALYZE;
the grid's cells (`retention_weeks`) counted for every week, then for the newest week alone (timed: what the
rollup of one day adds).
Then times `trackside.stats.retention.retention_grid(weeks=--weeks)` in one snapshot, as the API runs it: the
first call on a new connection, then `--repeats` more (median). Prints a JSON summary (rows, timings, one cohort).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from trackside.stats.retention import retention_grid
from trackside.storage.engine import create_engine, snapshot
from trackside.storage.migrate import migrate
from trackside.storage.tables import USER_DAYS, USER_FIRST_SEEN
from trackside.storage.user_days import recount_weeks

POSTGRES_ADMIN_URL = os.environ.get("TRACKSIDE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def seed_postgres(url: str, users: int, days: int, active: float, today: date) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("SELECT setseed(0.42)")
        await conn.execute(
            """
            INSERT INTO user_days (day, user_id)
            SELECT $1::date - f.back + g.d, 'u' || f.i
            FROM (SELECT i, 1 + floor(random() * $3)::int AS back FROM generate_series(0, $2 - 1) AS i) AS f
            CROSS JOIN LATERAL generate_series(0, f.back - 1) AS g(d)
            WHERE g.d = 0 OR random() < $4
            """,
            today,
            users,
            days,
            active,
        )
        await conn.execute(
            "INSERT INTO user_first_seen (user_id, first_day, last_day) "
            "SELECT user_id, min(day), max(day) FROM user_days GROUP BY user_id"
        )
        await conn.execute("ANALYZE user_days, user_first_seen")
    finally:
        await conn.close()


async def seed_sqlite(url: str, users: int, days: int, active: float, today: date) -> None:
    import sqlite3

    rnd = random.Random(42)
    rows: list[tuple[str, str]] = []
    first: list[tuple[str, str, str]] = []
    for i in range(users):
        back = 1 + int(rnd.random() * days)
        mine = [today - timedelta(days=back - d) for d in range(back) if d == 0 or rnd.random() < active]
        rows += [(d.isoformat(), f"u{i}") for d in mine]
        first.append((f"u{i}", mine[0].isoformat(), mine[-1].isoformat()))
    with sqlite3.connect(url.split(":///", 1)[1]) as conn:
        conn.executemany("INSERT INTO user_days (day, user_id) VALUES (?, ?)", rows)
        conn.executemany("INSERT INTO user_first_seen (user_id, first_day, last_day) VALUES (?, ?, ?)", first)
        conn.execute("ANALYZE")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--users", type=int, default=400_000, help="signed-in users (default 400000)")
    parser.add_argument("--days", type=int, default=119, help="closed days they span (default 119: 17 weeks)")
    parser.add_argument("--active", type=float, default=0.15, help="chance a user is back on a later day")
    parser.add_argument("--weeks", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    today = datetime.now(UTC).date()
    tmp = None
    if args.backend == "postgres":
        name = "trackside_bench_" + uuid.uuid4().hex[:10]
        await _admin(f'CREATE DATABASE "{name}"')
        url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + name
    else:
        tmp = tempfile.TemporaryDirectory()
        url = f"sqlite+aiosqlite:///{Path(tmp.name) / 'bench.db'}"
    try:
        await migrate(url)
        t0 = time.monotonic()
        seed = seed_postgres if args.backend == "postgres" else seed_sqlite
        await seed(url, args.users, args.days, args.active, today)
        seeded = time.monotonic() - t0
        engine = create_engine(url)
        try:
            # The grid's cells, as the rollups of those days would have left them: every week at once,
            # then (timed) the newest week alone, what the rollup of one day recounts.
            t0 = time.monotonic()
            async with engine.begin() as conn:
                await recount_weeks(conn, today - timedelta(days=args.days))
            recount_all = time.monotonic() - t0
            t0 = time.monotonic()
            async with engine.begin() as conn:
                await recount_weeks(conn, today - timedelta(days=1))
            recount_day = time.monotonic() - t0
            async with engine.connect() as conn:
                rows = (await conn.execute(select(func.count()).select_from(USER_DAYS))).scalar_one()
                people = (await conn.execute(select(func.count()).select_from(USER_FIRST_SEEN))).scalar_one()
            timings = []
            grid = None
            for _ in range(1 + args.repeats):
                t = time.perf_counter()
                async with snapshot(engine) as conn:
                    grid = await retention_grid(conn, args.weeks, today)
                timings.append(time.perf_counter() - t)
        finally:
            await engine.dispose()
        assert grid is not None
        print(
            json.dumps(
                {
                    "backend": args.backend,
                    "user_days_rows": rows,
                    "users": people,
                    "daily_active_mean": round(rows / args.days),
                    "seed_seconds": round(seeded, 1),
                    "recount_all_weeks_seconds": round(recount_all, 2),
                    "rollup_recount_seconds": round(recount_day, 3),
                    "weeks": args.weeks,
                    "first_call_seconds": round(timings[0], 3),
                    "median_seconds": round(statistics.median(timings[1:]), 3),
                    "cohort_example": grid["cohorts"][0],
                },
                indent=1,
            )
        )
    finally:
        if args.backend == "postgres":
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        elif tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
