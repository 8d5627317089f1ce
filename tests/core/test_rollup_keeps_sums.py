"""A rolled day keeps the page-view sums derivation keeps (`trackside.storage.day_sums`) while its raw
events are kept: late events move them (derived by the deriver, or by the rollup itself), the day's
next rollup reads them, and its daily rows are those of a rollup that groups every fact again
(`force`). Pruning the day's raw events deletes them. Both backends, exact rows."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

import datasketches
from sqlalchemy import select

from tests.core.test_rollup import DAY1, TODAY, WINDOW, at, ev, report, setup
from tests.storing import assert_sums_match_facts, write_batch
from trackside.batch import Batch
from trackside.rollup import prune, rollup_day
from trackside.storage import day_sums
from trackside.storage.tables import (
    DAILY_CONTENT,
    DAILY_CONTENT_DIMS,
    DAILY_SITE,
    DAILY_SITE_DIMS,
    DERIVE_MARKS,
    FACT_PAGE_VIEWS,
    ROLLUP_DAYS,
    SUM_TABLES,
)
from trackside.storage.writes import write_batch as store_only

DAY2 = DAY1 + timedelta(days=5)  # within the raw retention (7 days) on TODAY: keeps its sums


def _traffic(day: date) -> list[Any]:
    """Anonymous and signed-in visitors, several labels, countries and items, over the day."""
    out = []
    for i in range(12):
        visitor = f"v{i}"
        user = f"u{i % 3}" if i % 4 == 0 else None
        country = ("GB", "BR", "DE")[i % 3]
        for j in range(3):
            path = f"/p/a{(i + j) % 5}" if j < 2 else f"/about{i % 2}"
            out.append(ev(at(day, 3600 * (i % 20) + 400 * j), visitor=visitor, user=user, path=path, country=country))
    out.append(ev(at(day, 500), kind="api_call", nav="api", path="/api/p/a1", user="u1", visitor="v3"))
    return out


def _late(day: date, tag: str) -> list[Any]:
    """Late events of the day: an existing visitor's visit extended (its page views re-derived), the
    same visitor signing in, a newcomer, an existing visitor's new visit at night."""
    return [
        ev(at(day, 3600 + 800 + 30), visitor="v1", path="/p/a4", country="BR"),
        ev(at(day, 400 + 50), visitor="v4", path="/p/a2", user="u1", country="BR"),
        ev(at(day, 80_000), visitor=f"newcomer-{tag}", path="/p/a9", country="FR"),
        ev(at(day, 85_000), visitor="v2", path=f"/late-{tag}", country="DE"),
        ev(at(day, 85_010), visitor=f"signed-{tag}", path="/p/a3", user=f"late-{tag}", country="GB"),
    ]


def _sketched(value: Any) -> Any:
    """A users' sketch as the users it counts: its bytes follow the order the users were streamed in
    (a HyperLogLog's list of coupons and its HIP accumulator), which the query plan decides."""
    if isinstance(value, bytes):
        return ("sketch", round(datasketches.hll_sketch.deserialize(value).get_estimate()))
    return value


async def _daily(engine, day: date) -> dict[str, list[tuple[Any, ...]]]:
    """The day's daily rows, every column (a sketch by its count), in a fixed order."""
    out = {}
    async with engine.connect() as conn:
        for table in (DAILY_SITE, DAILY_SITE_DIMS, DAILY_CONTENT, DAILY_CONTENT_DIMS):
            rows = (await conn.execute(select(table).where(table.c.day == day))).all()
            out[table.name] = sorted(tuple(_sketched(v) for v in r) for r in rows)
    return out


async def _summed_days(engine) -> dict[str, set[date]]:
    async with engine.connect() as conn:
        return {t.name: set((await conn.execute(select(t.c.day).distinct())).scalars()) for t in SUM_TABLES}


async def test_rerolled_day_reads_its_kept_sums(database_url):
    engine = await setup(database_url)
    try:
        await write_batch(engine, Batch(events=_traffic(DAY1) + _traffic(DAY2)))
        for day in (DAY1, DAY2):
            assert not (await rollup_day(engine, day, WINDOW)).skipped
        # Rolled: the sums stay, still equal to the facts; the figures are the daily rows.
        summed = await _summed_days(engine)
        assert summed["fact_sum_days"] == summed["fact_sums"] == summed["fact_sum_who"] == {DAY1, DAY2}
        assert await assert_sums_match_facts(engine) == 2
        rolled_once = await report(engine, DAY1, DAY1)
        assert rolled_once["page_views"]["total"] == 36

        # Late events derived by the deriver (the day dirty, read from its facts and sums meanwhile) ...
        await write_batch(engine, Batch(events=_late(DAY1, "a")))
        assert await assert_sums_match_facts(engine) == 2
        dirty = await report(engine, DAY1, DAY1)
        assert dirty["page_views"]["total"] == 41
        # ... and late events left marked, derived by the rollup itself (in its transaction).
        await store_only(engine, Batch(events=_late(DAY1, "b")))
        async with engine.connect() as conn:
            marks = (await conn.execute(select(DERIVE_MARKS.c.visitor).where(DERIVE_MARKS.c.day == DAY1))).all()
            sums_before = await day_sums.read(conn, DAY1, with_users=True)
        assert len(marks) == 5
        assert sums_before is not None and sums_before[0][day_sums.TOTAL][0] == 41  # not moved yet

        assert not (await rollup_day(engine, DAY1, WINDOW)).skipped
        async with engine.connect() as conn:
            assert (await conn.execute(select(DERIVE_MARKS.c.day))).first() is None
            sums_after = await day_sums.read(conn, DAY1, with_users=True)
            views = len((await conn.execute(select(FACT_PAGE_VIEWS.c.id).where(FACT_PAGE_VIEWS.c.day == DAY1))).all())
            dirty_after = (await conn.execute(select(ROLLUP_DAYS.c.dirty).where(ROLLUP_DAYS.c.day == DAY1))).scalar()
        assert views == 46 and dirty_after is False
        assert sums_after is not None and sums_after[0][day_sums.TOTAL][0] == 46  # moved by the rollup's derivation
        assert sums_after[1] == {"u0", "u1", "u2", "late-a", "late-b"}
        assert await assert_sums_match_facts(engine) == 2
        from_sums = await _daily(engine, DAY1)
        rerolled = await report(engine, DAY1, DAY1)
        assert rerolled["page_views"]["total"] == 46
        assert rerolled["unique_visitors"] == 16  # 12 + newcomer-a, signed-a, newcomer-b, signed-b

        # The same rows as a rollup grouping every fact again (`force` does).
        assert not (await rollup_day(engine, DAY1, WINDOW, force=True)).skipped
        from_facts = await _daily(engine, DAY1)
        assert from_sums == from_facts
        assert from_sums["daily_site"] and from_sums["daily_site_dims"] and from_sums["daily_content"]
        assert await report(engine, DAY1, DAY1) == rerolled
        assert await assert_sums_match_facts(engine) == 2

        # Raw events pruned (DAY1 older than 7 days on TODAY): its sums go; DAY2's stay.
        assert (await prune(engine, 7, 0, TODAY)).raw_events == 36 + 1 + 10
        assert all(days == {DAY2} for days in (await _summed_days(engine)).values())
        assert await report(engine, DAY1, DAY1) == rerolled  # its daily rows
        assert await assert_sums_match_facts(engine) == 1
    finally:
        await engine.dispose()


async def test_first_rollup_after_marks_reads_the_sums_they_moved(database_url):
    """A day whose every visitor-day is still marked when it is rolled (events stored before facts
    existed, the deriver behind): the rollup derives them, moving the day's sums, then reads them."""
    engine = await setup(database_url)
    try:
        events = _traffic(DAY1)
        await store_only(engine, Batch(events=events))
        assert not (await rollup_day(engine, DAY1, WINDOW)).skipped
        assert await assert_sums_match_facts(engine) == 1
        from_sums = await _daily(engine, DAY1)
        await rollup_day(engine, DAY1, WINDOW, force=True)
        assert await _daily(engine, DAY1) == from_sums
        assert (await report(engine, DAY1, DAY1))["page_views"]["total"] == 36
    finally:
        await engine.dispose()


async def test_rerolled_items_from_sums_equal_a_regroup(database_url):
    """Random traffic (looks, impressions, signed-in and anonymous viewers, authors), then late events
    of the same day: the hand-made day (an author's own look and impression, an author known only
    then), part derived by the deriver, part by the rollup. Every daily row, items' included, equals
    a forced regroup's."""
    from tests.core.test_fact_reads import hand_day, random_day, store_shuffled

    engine = await setup(database_url)
    try:
        rng = random.Random(37)
        events = [e for e in random_day(rng) if e.ts < at(DAY1, 86_400)]
        first, later = events[: len(events) * 2 // 3], events[len(events) * 2 // 3 :]
        await store_shuffled(engine, first, rng)
        await rollup_day(engine, DAY1, WINDOW)
        assert await assert_sums_match_facts(engine) >= 1
        late = [e for e in hand_day() if e.ts < at(DAY1, 86_400)]
        await store_shuffled(engine, later[: len(later) // 2] + late[:10], rng)  # derived by the deriver
        await store_only(engine, Batch(events=later[len(later) // 2 :] + late[10:]))  # by the rollup
        assert not (await rollup_day(engine, DAY1, WINDOW)).skipped
        assert await assert_sums_match_facts(engine) >= 1
        from_sums = await _daily(engine, DAY1)
        assert len(from_sums["daily_content"]) >= 3 and from_sums["daily_content_dims"]
        assert not (await rollup_day(engine, DAY1, WINDOW, force=True)).skipped
        assert await _daily(engine, DAY1) == from_sums
    finally:
        await engine.dispose()
