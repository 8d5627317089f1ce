"""PostgreSQL's derivation reads raw events and facts through the driver (asyncpg records, `_read_events`,
`_facts_from_cuts`) and inserts facts by COPY (`_insert_rows`): the same events, facts and rows as the
SQLAlchemy reads and the `unnest` INSERT they replaced, and the same facts as SQLite's paths."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from tests.storing import write_batch
from trackside.batch import Batch
from trackside.events import Event, new_event_id
from trackside.storage import facts as facts_module
from trackside.storage.engine import create_engine
from trackside.storage.facts import derive_visitor_days, visitor_days_of
from trackside.storage.migrate import migrate
from trackside.storage.reads import _COLUMNS as EVENT_COLUMNS
from trackside.storage.reads import _events
from trackside.storage.tables import EVENTS as EVENTS_TABLE
from trackside.storage.tables import FACT_LOOKS, FACT_PAGE_VIEWS, FACT_TABLES, FACT_VISITS
from trackside.storage.writes import DEFAULT_DERIVATION

T0 = datetime(2026, 3, 1, 6, tzinfo=UTC).timestamp()
DAY = datetime.fromtimestamp(T0, UTC).date()
A, B, C = "a" * 32, "b" * 32, "c" * 32


def event(
    visitor: str, ts: float, kind: str = "page_view", nav: str = "document", path: str = "/", status: int = 200, **kw
) -> Event:
    return Event(
        new_event_id(ts), ts, kind, nav, "GET", path, path, status, visitor, "desktop", "Firefox", "Linux", **kw
    )


EVENTS = [
    event(A, T0 + 0.123456, path="/a", referrer="example.org", country="DE"),
    event(A, T0 + 10.5, "page_view", "rsc", "/art/1", content_kind="artwork", content_id="1", author_id="u9"),
    event(A, T0 + 11, "api_call", "api", "/api/feed"),  # anonymous, no item: not read
    event(A, T0 + 12, "api_call", "api", "/api/me", user_id="u1"),  # lends its user
    event(A, T0 + 20, "impression", "beacon", "/art/2", content_kind="artwork", content_id="2", view_type="feed"),
    event(A, T0 + 3 * 3600, path="/later"),
    event(B, T0 + 5, "page_view", "beacon", "/b", unverified=True),  # a token-less beacon: doubtful
    event(B, T0 + 6, "api_call", "api", "/api/feed"),
    event(B, T0 + 7, "error", "document", "/boom", status=500, error_type="server"),
    event(C, T0 + 1, "page_view", "document", "/c", event_name="signup", utm_source="news", duration_ms=12.5),
]


async def test_driver_reads_and_copy_match_the_sqlalchemy_paths(database_url):
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        await write_batch(engine, Batch(events=EVENTS))
        postgres = engine.dialect.name == "postgresql"
        async with engine.begin() as conn:
            visitors = [A, B, C]
            if postgres:
                # Raw events through the driver: the same `Event`s as SQLAlchemy's rows made into events.
                since = facts_module._dt(T0 + 10)
                for kept, read_since, needed in (
                    (True, None, facts_module._needed()),
                    (False, None, ~facts_module._needed()),
                    (True, since, facts_module._needed() & (EVENTS_TABLE.c.ts >= since)),
                ):
                    driver = await facts_module._read_events(conn, DAY, visitors, needed=kept, since=read_since)
                    query = select(*EVENT_COLUMNS).where(
                        EVENTS_TABLE.c.day == DAY, EVENTS_TABLE.c.visitor.in_(visitors), needed
                    )
                    old = _events(await conn.execute(query))
                    assert sorted(driver, key=lambda e: e.id) == sorted(old, key=lambda e: e.id)
                    assert driver  # each condition keeps some
            await derive_visitor_days(conn, visitor_days_of(EVENTS), DEFAULT_DERIVATION)
        async with engine.begin() as conn:
            for table in (FACT_PAGE_VIEWS, FACT_LOOKS, FACT_VISITS):
                columns = facts_module._columns(table)
                stored = sorted(tuple(r) for r in await conn.execute(select(*(table.c[c] for c in columns))))
                assert stored
                # Whole visitor-days, and tails from a cut: the rows at or after it, every column.
                whole = await facts_module._facts_from_cuts(conn, table, DAY, [A, B, C], [])
                assert sorted(whole) == stored
                cut = T0 + 10.5
                tails = await facts_module._facts_from_cuts(conn, table, DAY, [B], [(A, cut), (C, cut)])
                at = columns.index(facts_module._TIME[table])
                at_visitor = columns.index("visitor")
                expected = [
                    r
                    for r in stored
                    if r[at_visitor] == B or (r[at_visitor] in (A, C) and r[at] >= facts_module._dt(cut - 0.001))
                ]
                assert sorted(tails) == sorted(expected)
            # COPY: rows inserted as derivation inserts them read back equal, on a connection in a transaction.
            rows = sorted(
                tuple(r)
                for r in await conn.execute(
                    select(*(FACT_PAGE_VIEWS.c[c] for c in facts_module._columns(FACT_PAGE_VIEWS)))
                )
            )
            if postgres:
                await conn.execute(FACT_PAGE_VIEWS.delete())
                await facts_module._insert_rows(conn, FACT_PAGE_VIEWS, rows)
                again = sorted(
                    tuple(r)
                    for r in await conn.execute(
                        select(*(FACT_PAGE_VIEWS.c[c] for c in facts_module._columns(FACT_PAGE_VIEWS)))
                    )
                )
                assert again == rows
        # The facts themselves: exact values, the same on both backends.
        async with engine.connect() as conn:
            views = sorted(
                (r.visitor, r.path, r.ts.isoformat(timespec="microseconds"), r.user_id)
                for r in await conn.execute(select(FACT_PAGE_VIEWS))
            )
            counts = {t.name: len((await conn.execute(select(t))).all()) for t in FACT_TABLES}
    finally:
        await engine.dispose()
    assert counts["fact_looks"] == 1 and counts["fact_impressions"] == 1
    assert [v[:2] for v in views if v[0] == A] == [(A, "/a"), (A, "/art/1"), (A, "/later")]
    assert views[0][2] == datetime.fromtimestamp(T0 + 0.123456, UTC).replace(tzinfo=None).isoformat(
        timespec="microseconds"
    )


async def test_driver_errors_are_sqlalchemy_errors(database_url):
    """A statement run on the driver fails as SQLAlchemy's would: a `DBAPIError` (the worker's jobs retry on
    those when the database is away), here a ProgrammingError for a missing table and a DataError for a
    value too long for its column, by COPY."""
    from sqlalchemy.exc import DBAPIError, ProgrammingError

    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        if engine.dialect.name != "postgresql":
            return  # SQLite reads and writes through SQLAlchemy
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")
            try:
                await facts_module._fetch(conn, "SELECT * FROM no_such_table WHERE day = $1", DAY)
            except ProgrammingError as exc:
                assert "no_such_table" in str(exc)
            else:
                raise AssertionError("no error")
        async with engine.begin() as conn:
            await conn.exec_driver_sql("SELECT 1")
            columns = facts_module._columns(FACT_VISITS)
            row = tuple("x" * 40 if c == "visitor" else None for c in columns)
            try:
                await facts_module._insert_rows(conn, FACT_VISITS, [row])
            except DBAPIError as exc:
                assert exc.orig is not None
            else:
                raise AssertionError("no error")
            await conn.rollback()
    finally:
        await engine.dispose()
