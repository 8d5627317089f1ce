"""Storing as the tests need it: a batch written (as the worker or the embedded writer does),
then what it queued derived into facts at once (as the deriver would, a moment later), so a test
that reads fact rows right after writing sees them."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackside.batch import Batch
from trackside.derive import Derivation
from trackside.storage import day_sums, item_sums
from trackside.storage.day_sums import PAGE_VIEW_DIMS
from trackside.storage.fact_reads import (
    api_totals,
    page_view_totals,
    page_view_users,
    read_items,
    site_dims,
)
from trackside.storage.facts import derive_marked
from trackside.storage.tables import FACT_SUM_DAYS, FACT_TABLES, ITEM_SUMS, SUM_TABLES
from trackside.storage.writes import DEFAULT_DERIVATION
from trackside.storage.writes import write_batch as store_batch


async def write_batch(engine: AsyncEngine, batch: Batch, derivation: Derivation | None = None) -> int:
    stored = await store_batch(engine, batch)
    await derive_marked(engine, derivation or DEFAULT_DERIVATION)
    return stored


async def delete_facts(conn: AsyncConnection, day: date | None = None) -> None:
    """Every fact row (of `day`, or all) gone, with the page-view sums kept beside them: the state
    before facts existed (the upgrade), which the tests then mark for derivation."""
    for table in (*FACT_TABLES, *SUM_TABLES):
        stmt = table.delete()
        await conn.execute(stmt if day is None else stmt.where(table.c.day == day))


async def assert_sums_match_facts(engine: AsyncEngine, *, counted: bool = True) -> int:
    """Every day's page-view sums (`day_sums`) and item sums (`item_sums`) equal the same figures
    grouped from its facts now, and (`counted`: every day's sums started by derivation) so do the
    API calls counted beside them. Returns the number of days compared."""
    async with engine.connect() as conn:
        days = sorted((await conn.execute(select(FACT_SUM_DAYS.c.day))).scalars())
        for day in days:
            kept = await day_sums.read(conn, day, with_users=True)
            assert kept is not None
            sums, users = kept
            # The API calls counted beside them, as summed from the facts.
            calls = [int(n or 0) for n in (await conn.execute(api_totals(day))).one()]
            if counted or (day_sums.API_CALLS, "") in sums:
                assert sums.pop((day_sums.API_CALLS, ""))[:2] == calls, day
            views, views_auth, visitors, visitors_auth = (await conn.execute(page_view_totals(day))).one()
            live = {("", ""): [views, views_auth, visitors, visitors_auth]} if views else {}
            for dim, key, *figures in await conn.execute(site_dims(day)):
                if dim in PAGE_VIEW_DIMS:
                    live[(dim, key)] = [int(n) for n in figures]
            assert sums == live, day
            assert users == set((await conn.execute(page_view_users(day))).scalars()), day
            # Each item's figures from its sums equal those grouped from its looks and impressions.
            grouped = await read_items(conn, day)
            summed = set(
                (await conn.execute(select(ITEM_SUMS.c.kind, ITEM_SUMS.c.item).where(ITEM_SUMS.c.day == day))).all()
            )
            for kind, item in sorted(summed | set(grouped)):
                kept_, figures = await item_sums.read_item(conn, day, kind, item)
                assert kept_
                want = grouped.get((kind, item))
                if want is None:
                    assert figures is None, (day, kind, item)
                    continue
                assert figures is not None, (day, kind, item)
                assert (figures.counts, figures.viewers, figures.viewers_authenticated, figures.anonymous_viewers) == (
                    want.counts,
                    want.viewers,
                    want.viewers_authenticated,
                    want.anonymous_viewers,
                ), (day, kind, item)
                assert (figures.dims, figures.users) == (want.dims, want.users), (day, kind, item)
                assert (figures.first_at, figures.last_at) == (want.first_at, want.last_at), (day, kind, item)
    return len(days)
