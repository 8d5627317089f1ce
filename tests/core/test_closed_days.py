"""Closed days' figures kept in process (`trackside.stats.cache.ClosedDays`): the same figures as
`load_days`, read again only when a day's state changes (a late event makes it dirty, a rollup
rolls it anew), never for today; and the state key the answer cache uses, on both backends."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from tests.sidecar.test_stats import ev, midnight, seed
from tests.storing import write_batch
from trackside.batch import Batch
from trackside.figures import load_days
from trackside.rollup import rollup_pending
from trackside.stats.cache import ClosedDays, all_closed, closed_state, state_key
from trackside.storage.engine import create_engine, snapshot
from trackside.storage.migrate import migrate

WINDOW = 1800.0


def shape(days):
    return [(d.day, d.rolled, dict(d.counts), d.unique_visitors, d.dims) for d in days]


async def test_closed_days_are_read_once_until_their_state_changes(database_url):
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        await write_batch(engine, Batch(events=seed()))
        await rollup_pending(engine, WINDOW)
        today = datetime.now(UTC).date()
        first, yesterday = today - timedelta(days=29), today - timedelta(days=1)
        closed = ClosedDays()

        async def read():
            async with snapshot(engine) as conn:
                state = await closed_state(conn, first, today)
                kept = await closed.load(conn, first, today, WINDOW, state, with_items=False)
                direct = await load_days(conn, first, today, WINDOW, with_items=False)
                return state, kept, direct

        state, kept, direct = await read()
        assert shape(kept) == shape(direct)
        assert set(state) == {today - timedelta(days=10), yesterday} and not all_closed(state, first, today)
        assert all_closed(state, yesterday, yesterday)
        again_state, again, _ = await read()
        assert state_key(again_state) == state_key(state)
        # The closed days are the very objects read before; today is read again.
        assert again[-2] is kept[-2] and again[-11] is kept[-11]
        assert again[-1] is not kept[-1] and again[-1].counts["page_views"] == 4

        # A late event for yesterday: the day is dirty, read from what is stored, and not kept.
        await write_batch(engine, Batch(events=[ev(midnight(1) + 300, "v8", path="/about")]))
        late_state, late, late_direct = await read()
        assert yesterday not in late_state and state_key(late_state) != state_key(state)
        assert shape(late) == shape(late_direct)
        assert not late[-2].rolled and late[-2].counts["page_views"] == 3
        assert late[-11] is kept[-11]  # the other closed day is still the one kept

        # Rolled up again: a new state, read once from the new daily rows, then kept.
        await rollup_pending(engine, WINDOW)
        rolled_state, rolled, rolled_direct = await read()
        assert rolled_state[yesterday][0] > state[yesterday][0] and rolled_state[yesterday][1] == 3
        assert shape(rolled) == shape(rolled_direct)
        assert rolled[-2].rolled and rolled[-2].counts["page_views"] == 3 and rolled[-2] is not kept[-2]
        _, last, _ = await read()
        assert last[-2] is rolled[-2]
    finally:
        await engine.dispose()


async def test_item_totals_of_closed_days_are_kept_until_their_state_changes(database_url):
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        await write_batch(engine, Batch(events=seed()))
        await rollup_pending(engine, WINDOW)
        today = datetime.now(UTC).date()
        first = today - timedelta(days=29)
        closed = ClosedDays()

        async def totals():
            async with snapshot(engine) as conn:
                state = await closed_state(conn, first, today)
                return await closed.item_totals(conn, sorted(state), state)

        one = await totals()
        assert one[("artwork", "a1")].counts["views"] == 4  # 10 days ago and yesterday, two looks each
        assert await totals() is one
        await write_batch(engine, Batch(events=[ev(midnight(1) + 400, "v8")]))  # a new look at a1, yesterday
        await rollup_pending(engine, WINDOW)
        two = await totals()
        assert two is not one and two[("artwork", "a1")].counts["views"] == 5
    finally:
        await engine.dispose()


async def test_a_days_state_changes_with_its_event_count_alone():
    """A late event added to a pruned day changes its event count, never `rolled_at`: a new key."""
    day = datetime.now(UTC).date()
    at = datetime.fromtimestamp(time.time(), UTC).replace(tzinfo=None)
    assert state_key({day: (at, 10)}) != state_key({day: (at, 11)})
    assert state_key({day: (at, 10)}) == state_key({day: (at, 10)})
