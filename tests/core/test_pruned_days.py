"""A day whose raw events are pruned is never rolled up again: a late event adds only to its
additive counts (and to `late_events_unrolled`), and `trackside rollup --day` refuses it. Both
backends, exact numbers."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.core.test_rollup import DAY1, TODAY, WINDOW, at, ev, report, setup
from tests.storing import write_batch
from trackside.batch import Batch
from trackside.rollup import DayPruned, pending_days, prune, rollup_day, rollup_pending
from trackside.storage.tables import EVENTS, ROLLUP_DAYS
from trackside.storage.writes import _POSTGRES_INSERT, _sqlite_insert, prepare_rows

REPO = Path(__file__).resolve().parents[2]


def _day_of_views(n: int, visitors: int) -> list:
    # `n` page views of items a1..a5 by `visitors` visitors, far apart (each one a look of its own).
    return [ev(at(DAY1, 60 + i * 600), visitor=f"v{i % visitors}", path=f"/p/a{i % 5}") for i in range(n)]


async def _pruned_day(engine, events: list) -> None:
    await write_batch(engine, Batch(events=events))
    await rollup_pending(engine, WINDOW, TODAY)
    assert (await prune(engine, 7, 0, TODAY)).raw_events == len(events)
    async with engine.connect() as conn:
        assert (await conn.execute(select(EVENTS.c.id).where(EVENTS.c.day == DAY1))).first() is None


async def test_late_event_for_a_pruned_day_adds_to_counts_only(database_url):
    engine = await setup(database_url)
    try:
        api = [ev(at(DAY1, 100 + i), kind="api_call", nav="api", path="/api/p/a1") for i in range(7)]
        await _pruned_day(engine, _day_of_views(50, 10) + api)
        before = await report(engine, DAY1, DAY1)
        assert before["page_views"]["total"] == 50
        assert before["unique_visitors"] == 10
        assert before["api_calls"] == 7
        assert sum(row["views"] for row in before["content"]["artwork"]) == 50
        assert before["late_events_unrolled"] == 0

        late = Batch(
            events=[
                ev(at(DAY1, 70_000), visitor="newcomer", path="/p/a9"),  # a new visitor, a new item
                ev(at(DAY1, 70_001), visitor="newcomer", kind="api_call", nav="api", path="/api/p/a9"),
            ]
        )
        await write_batch(engine, late)
        await write_batch(engine, late)  # replayed: still once
        after = await report(engine, DAY1, DAY1)
        assert after["page_views"] == {"total": 51, "authenticated": 0, "by_label": {"/p/[post]": 51}}
        assert after["api_calls"] == 8
        assert after["unique_visitors"] == 10  # never to uniques
        assert after["content"] == before["content"]  # never to looks
        assert after["late_events_unrolled"] == 2
        async with engine.connect() as conn:
            row = (await conn.execute(select(ROLLUP_DAYS).where(ROLLUP_DAYS.c.day == DAY1))).one()
        assert (row.dirty, row.raw_pruned, row.late_unrolled, row.events) == (False, True, 2, 59)

        # The schedule never rolls it again; the late events are pruned like the rest.
        assert await pending_days(engine, TODAY) == []
        await rollup_pending(engine, WINDOW, TODAY)
        assert (await prune(engine, 7, 0, TODAY)).raw_events == 2
        final = await report(engine, DAY1, DAY1)
        assert (final["page_views"]["total"], final["api_calls"], final["unique_visitors"]) == (51, 8, 10)

        # A day left dirty (by a write before this version, say) is skipped and cleared, not rolled.
        async with engine.begin() as conn:
            await conn.execute(update(ROLLUP_DAYS).where(ROLLUP_DAYS.c.day == DAY1).values(dirty=True))
        assert await pending_days(engine, TODAY) == [DAY1]
        assert (await rollup_day(engine, DAY1, WINDOW)).skipped
        assert await pending_days(engine, TODAY) == []
        assert (await report(engine, DAY1, DAY1))["page_views"]["total"] == 51
        with pytest.raises(DayPruned, match="raw events were pruned"):
            await rollup_day(engine, DAY1, WINDOW, force=True)
        # A day within the retention is rolled again as before.
        other = DAY1 + timedelta(days=8)
        await write_batch(engine, Batch(events=[ev(at(other, 5))]))
        assert not (await rollup_day(engine, other, WINDOW, force=True)).skipped
    finally:
        await engine.dispose()


async def test_rollup_day_refuses_a_pruned_day(database_url):
    engine = await setup(database_url)
    try:
        await _pruned_day(engine, _day_of_views(20, 4))
    finally:
        await engine.dispose()
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "rollup", "--day", DAY1.isoformat(), "--database-url", database_url],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"trackside: {DAY1} cannot be rolled up again: its raw events were pruned" in done.stderr
    engine = await setup(database_url)
    try:
        assert (await report(engine, DAY1, DAY1))["page_views"]["total"] == 20
    finally:
        await engine.dispose()


async def test_the_migration_finds_days_pruned_before_it(database_url):
    """Upgrading a database whose old days were pruned by an earlier version marks exactly those."""
    from trackside.storage.engine import create_engine
    from trackside.storage.migrate import migrate

    await migrate(database_url, "0009_api_keys")
    engine = create_engine(database_url)
    kept, pruned, empty = DAY1 + timedelta(days=1), DAY1, DAY1 + timedelta(days=2)
    try:
        async with engine.begin() as conn:
            for day, events in ((pruned, 20), (kept, 1), (empty, 0)):
                await conn.exec_driver_sql(
                    "INSERT INTO rollup_days (day, dirty, rolled_at, events) VALUES (?, ?, ?, ?)"
                    if conn.dialect.name == "sqlite"
                    else "INSERT INTO rollup_days (day, dirty, rolled_at, events) VALUES ($1, $2, $3, $4)",
                    (day if conn.dialect.name != "sqlite" else day.isoformat(), False,
                     datetime(2026, 3, 9) if conn.dialect.name != "sqlite" else "2026-03-09 00:00:00.000000", events),
                )  # fmt: skip
            # The kept day's raw event, still there (the insert of the write path, without its upsert).
            rows, _ = prepare_rows(conn.dialect.name, [ev(at(kept, 5))])
            sql = _sqlite_insert(1) if conn.dialect.name == "sqlite" else _POSTGRES_INSERT
            await conn.exec_driver_sql(sql, rows)
    finally:
        await engine.dispose()
    engine = await setup(database_url)  # to the head
    try:
        async with engine.begin() as conn:
            rows = (await conn.execute(select(ROLLUP_DAYS.c.day, ROLLUP_DAYS.c.raw_pruned))).all()
        assert sorted(rows) == [(pruned, True), (kept, False), (empty, False)]
    finally:
        await engine.dispose()
