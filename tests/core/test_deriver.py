"""The deriver, off the ingest path: batches only queue their visitor-days; derivers (two at once
here, beside two writers) turn them into the same fact rows as one whole derivation, whatever
the interleaving; a mark cleared and made anew is never taken for the one a deriver read; a
visitor-day that reads many rows cools off without holding the others back."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

import trackside.deriver as deriver_module
from tests.rollups.test_derive_concurrency import assert_same, expected_rows, split, stored_rows, traffic
from tests.storing import assert_sums_match_facts
from trackside.batch import Batch
from trackside.derive import Derivation
from trackside.deriver import HEAVY_ROWS, Deriver
from trackside.events import Event, new_event_id
from trackside.storage.engine import create_engine, writing
from trackside.storage.facts import derive_marked, derive_round, mark, visitor_days_of
from trackside.storage.migrate import migrate
from trackside.storage.tables import DERIVE_MARKS, FACT_PAGE_VIEWS
from trackside.storage.writes import write_batch

DERIVATION = Derivation()


async def test_two_derivers_beside_two_writers_give_the_whole_derivation(database_url, monkeypatch):
    """One deriver round by round, the other pipelined as `Deriver.run` goes (a round read while
    the previous one is written), in small rounds so that the two overlap often."""
    monkeypatch.setattr(deriver_module, "ROUND", 7)
    events = traffic(seed=23)
    rng = random.Random(4)
    batches = split(events, rng, largest=40)
    batches += rng.sample(batches, 20)  # repeated deliveries
    rng.shuffle(batches)
    await migrate(database_url)
    engine = create_engine(database_url)
    try:

        async def deriver() -> None:
            while True:
                await derive_round(engine, DERIVATION, limit=rng.randint(1, 50))
                await asyncio.sleep(0)

        async def pipelined() -> None:
            d = Deriver(engine, DERIVATION)
            try:
                while True:
                    await d.step()
                    await asyncio.sleep(0)
            finally:
                await d.flush()

        async def store(part: list[list[Event]]) -> None:
            for events_ in part:
                await write_batch(engine, Batch(events=events_))
                await asyncio.sleep(0)

        derivers = [asyncio.create_task(deriver()), asyncio.create_task(pipelined())]
        await asyncio.gather(store(batches[::2]), store(batches[1::2]))
        for task in derivers:
            task.cancel()
        await asyncio.gather(*derivers, return_exceptions=True)
        await derive_marked(engine, DERIVATION)
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(DERIVE_MARKS))).scalar_one() == 0
        # The page-view sums the derivers moved, round by round, are the facts' own figures.
        assert await assert_sums_match_facts(engine) == len({e.day for e in events})
    finally:
        await engine.dispose()
    assert_same(await stored_rows(database_url), expected_rows(events, DERIVATION))


def page(visitor: str, ts: float, path: str = "/") -> Event:
    return Event(
        id=new_event_id(ts),
        ts=ts,
        kind="page_view",
        nav="document",
        path=path,
        label=path,
        method="GET",
        status=200,
        visitor=visitor,
        device="desktop",
        browser="Firefox",
        os="Linux",
    )


async def _paths(engine) -> list[str]:
    async with engine.connect() as conn:
        return sorted((await conn.execute(select(FACT_PAGE_VIEWS.c.path))).scalars())


async def test_a_mark_cleared_and_made_anew_is_not_the_one_a_late_deriver_read(database_url):
    """A deriver reads a mark and its events; meanwhile another derives and clears that mark, and a
    new batch makes it anew. The first must not take the new mark for its own (a counter would
    start again at the same value): the new batch's page view is derived, not lost."""
    await migrate(database_url)
    engine = create_engine(database_url)
    visitor = "a" * 32
    start = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0).timestamp()
    try:
        await write_batch(engine, Batch(events=[page(visitor, start, "/one")]))
        late_reader = asyncio.Event()
        go_on = asyncio.Event()

        # The slow deriver: paused between its read and its write by a connection-level wait.
        from trackside.storage import facts

        original = facts._derive

        async def paused(*args, **kwargs):
            out = await original(*args, **kwargs)
            late_reader.set()
            await go_on.wait()
            return out

        facts._derive = paused  # type: ignore[assignment]
        try:
            slow = asyncio.create_task(derive_round(engine, DERIVATION))
            await late_reader.wait()
        finally:
            facts._derive = original  # type: ignore[assignment]
        assert len((await derive_round(engine, DERIVATION)).derived) == 1  # the quick one clears the mark
        await write_batch(engine, Batch(events=[page(visitor, start + 60, "/two")]))  # a new mark
        go_on.set()
        result = await slow
        assert (result.derived, result.superseded) == ([], 1)
        assert await _paths(engine) == ["/one"]
        assert len((await derive_round(engine, DERIVATION)).derived) == 1
        assert await _paths(engine) == ["/one", "/two"]
    finally:
        await engine.dispose()


async def test_a_heavy_visitor_day_cools_off_and_the_others_go_on(database_url):
    await migrate(database_url)
    engine = create_engine(database_url)
    heavy, light = "b" * 32, "c" * 32
    start = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0).timestamp()
    try:
        # A visitor without a pause: HEAVY_ROWS + 100 page views a second apart, one visit.
        await write_batch(engine, Batch(events=[page(heavy, start + i) for i in range(HEAVY_ROWS + 100)]))
        deriver = Deriver(engine, DERIVATION)
        await deriver.round()
        assert deriver.derived == 1 and list(deriver.cooling) == [(datetime.fromtimestamp(start, UTC).date(), heavy)]
        # It cools for ten times its cost (0.6 s here); held longer, so a slow machine cannot end it.
        deriver.cooling = {k: until + 60 for k, until in deriver.cooling.items()}
        # More of the heavy visitor's, and a light visitor's: only the light one is derived now.
        more = start + HEAVY_ROWS + 100
        await write_batch(engine, Batch(events=[page(heavy, more), page(light, more)]))
        await deriver.round()
        assert deriver.derived == 2
        async with engine.connect() as conn:
            left = (await conn.execute(select(DERIVE_MARKS.c.visitor))).scalars().all()
            counts = dict(
                (
                    await conn.execute(
                        select(FACT_PAGE_VIEWS.c.visitor, func.count()).group_by(FACT_PAGE_VIEWS.c.visitor)
                    )
                ).all()
            )
        assert left == [heavy]
        assert counts == {heavy: HEAVY_ROWS + 100, light: 1}
        # Once cooled, it is derived again.
        deriver.cooling = {k: 0.0 for k in deriver.cooling}
        await deriver.round()
        async with engine.connect() as conn:
            total = (
                await conn.execute(
                    select(func.count()).select_from(FACT_PAGE_VIEWS).where(FACT_PAGE_VIEWS.c.visitor == heavy)
                )
            ).scalar_one()
        assert total == HEAVY_ROWS + 101
    finally:
        await engine.dispose()


async def test_a_read_derives_what_is_queued(database_url):
    """The report (as every stats read) derives what is still queued before it reads."""
    from trackside.report import build_report

    await migrate(database_url)
    engine = create_engine(database_url)
    now = datetime.now(UTC) - timedelta(minutes=1)
    try:
        await write_batch(engine, Batch(events=[page("d" * 32, now.timestamp(), "/x")]))
        assert await _paths(engine) == []  # queued, not derived yet
        report = await build_report(engine, now.date(), now.date(), 1800.0, DERIVATION)
        assert report["page_views"]["total"] == 1
        assert await _paths(engine) == ["/x"]
    finally:
        await engine.dispose()


async def test_one_deriver_per_database_works_and_another_takes_over(database_url):
    await migrate(database_url)
    engines = [create_engine(database_url) for _ in range(2)]
    derivers = [Deriver(engine, DERIVATION) for engine in engines]
    tasks = [asyncio.create_task(d.run()) for d in derivers]
    try:
        for _ in range(100):
            if any(d.leading for d in derivers):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert [d.leading for d in derivers].count(True) == 1
        first = next(i for i, d in enumerate(derivers) if d.leading)
        tasks[first].cancel()
        await asyncio.gather(tasks[first], return_exceptions=True)
        if database_url.startswith("postgresql"):
            await engines[first].dispose()  # its connection (and the session lock) goes
        other = derivers[1 - first]
        for _ in range(100):  # within a poll (2 s)
            if other.leading:
                break
            await asyncio.sleep(0.05)
        assert other.leading
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for engine in engines:
            await engine.dispose()


async def test_a_deriver_outlives_a_database_that_is_away(tmp_path, caplog):
    """A database that never answers (nothing listens on its port): the deriver keeps waiting and
    logs it, instead of ending; marks stay wherever they are."""
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")
    task = asyncio.create_task(Deriver(engine, DERIVATION).run())
    try:
        await asyncio.sleep(3)
        assert not task.done()
        assert any("away" in r.getMessage() or "failed" in r.getMessage() for r in caplog.records)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.dispose()



async def test_a_deriver_stopped_while_it_writes_leaves_the_database_writable(database_url, tmp_path):
    """Stopped at any point, in the middle of a round's write too (a worker's shutdown): that write rolls
    back, its marks stay, and the next writer takes the lock at once; in the end the whole derivation.
    On SQLite a write cancelled during a statement used to keep its transaction (and the write lock)
    until the garbage collector came: without the fix, one in about 30 of these stops left the file locked."""
    events = traffic(seed=37, visitors=200)
    keys = list(visitor_days_of(events))
    await migrate(database_url)
    engine = create_engine(database_url)
    sqlite_file = database_url.split("///", 1)[1] if database_url.startswith("sqlite") else None
    rng = random.Random(1)
    try:
        await write_batch(engine, Batch(events=events))
        for _ in range(60):
            task = asyncio.create_task(Deriver(engine, DERIVATION).run())
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if sqlite_file is not None:  # another process's writer, waiting one second at most
                probe = sqlite3.connect(sqlite_file, timeout=1, isolation_level=None)
                try:
                    probe.execute("BEGIN IMMEDIATE")
                    probe.execute("ROLLBACK")
                finally:
                    probe.close()
            async with writing(engine) as conn:  # everything to derive whole again
                await asyncio.wait_for(mark(conn, keys), 5)
        assert await asyncio.wait_for(derive_marked(engine, DERIVATION), 30) == len(keys)
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(DERIVE_MARKS))).scalar_one() == 0
    finally:
        await engine.dispose()
    assert_same(await stored_rows(database_url), expected_rows(events, DERIVATION))
