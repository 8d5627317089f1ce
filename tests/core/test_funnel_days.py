"""Funnels over encoded days (`trackside.storage.funnel_days`, `trackside.stats.funnel_days`) on both
backends: the NumPy path answers exactly what the funnel's SQL answers (visitors and medians, bit for
bit) on random facts, for every step kind (page patterns, event goals, page goals) and filter kind
(visit dimensions, `event:page`, `event:props:label`, `event:goal`, negations, `or` and `not`); days
encoded and not mixed in one range; the rollup writes a day's encoding; a hand-built day's exact
figures; an upgrade from 0020 (days rolled before have none: SQL answers them)."""

from __future__ import annotations

import asyncio
import importlib
import random
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from trackside.goals import EVENT, PAGE, Goal
from trackside.rollup import rollup_day
from trackside.stats.funnel_days import encoded_funnel
from trackside.stats.v2.funnel import funnel_select, parse_funnel, resolve_goals
from trackside.stats.v2.sql import Builder
from trackside.storage.engine import create_engine, snapshot
from trackside.storage.funnel_days import CHUNK_VISITS, encoded_days, load_days, record_funnel_day
from trackside.storage.migrate import migrate
from trackside.storage.partitions import make_partitions
from trackside.storage.tables import (
    DERIVE_MARKS,
    FACT_PAGE_VIEWS,
    FACT_SITE_EVENTS,
    FACT_VISITS,
    FUNNEL_DAYS,
    ROLLUP_DAYS,
)

D0 = date(2026, 11, 20)
DAYS = [D0 + timedelta(days=i) for i in range(4)]
GOALS = [
    Goal("upload", EVENT, "upload"),
    Goal("signup", EVENT, "signup"),
    Goal("Artwork", PAGE, "/p/*"),
    Goal("Deep", PAGE, "/b/**"),
]
PATHS = ["/", "/p/a1", "/p/a2", "/P/a3", "/p/a1/edit", "/u/ann", "/u/bob", "/b/x/y", "/about", "/p/", "/%_x"]
LABELS = {"/": "/", "/about": "/about", "/%_x": "/%_x"}
DEVICES = [("desktop", "Firefox", "GNU/Linux"), ("mobile", "Safari", "iOS"), ("tablet", "Chrome", "Android")]
SOURCES = [(None, None), ("reddit.com", "Reddit"), ("google.com", "Google")]


def _label(path: str) -> str:
    if path in LABELS:
        return LABELS[path]
    return "/" + path.split("/")[1].lower() + "/[x]"


def random_facts(seed: int, visits_per_day: int = 120) -> tuple[list[dict], list[dict], list[dict]]:
    """Page views, site events and visits of DAYS: short visits whose rows are seconds to minutes apart,
    some at the same microsecond, some signed in (a few users return across days), one long visit a day
    (over 72 minutes: the wide time deltas); rows of no visit; events with no visit."""
    rng = random.Random(seed)
    pvs: list[dict] = []
    events: list[dict] = []
    visits: list[dict] = []
    n = 0
    for day in DAYS:
        midnight = datetime(day.year, day.month, day.day)
        for i in range(visits_per_day):
            n += 1
            visitor = f"v{rng.randrange(visits_per_day // 2)}"  # two visits of one visitor in a day, often
            user = f"user{rng.randrange(6)}" if rng.random() < 0.25 else None
            who = f"u:{user}" if user else f"v:{visitor}"
            device, browser, os_ = rng.choice(DEVICES)
            referrer, source = rng.choice(SOURCES)
            country = rng.choice(["DE", "US", None])
            vid = f"{day:%d}-{i:04d}"
            at = midnight + timedelta(seconds=rng.randrange(80_000), microseconds=rng.randrange(1_000_000))
            rows: list[tuple[datetime, bool, str]] = []
            long_visit = i == 0 and day.day % 2 == 0  # days with and without 64-bit offsets
            for _ in range(rng.randrange(1, 8)):
                if rng.random() < 0.15:
                    rows.append((at, True, rng.choice(["upload", "signup", "other"])))
                else:
                    rows.append((at, False, rng.choice(PATHS)))
                step = rng.choice([0, 0.000001, 0.5, 3.000123, 61.1, 300.25, 1799.999999])
                if long_visit:
                    step = 1700.0
                at = min(at + timedelta(seconds=step), midnight + timedelta(seconds=86_399.999999))
            for j, (ts, is_event, what) in enumerate(rows):
                common = {"day": day, "id": f"{vid}-{j}", "ts": ts, "hour": ts.hour, "visitor": visitor, "who": who,
                          "user_id": user, "visit_id": vid}  # fmt: skip
                if is_event:
                    events.append({**common, "kind": "event", "name": what, "label": rng.choice(["api", "/p/[x]"]),
                                   "path": "/api/x"})  # fmt: skip
                else:
                    pvs.append({**common, "label": _label(what), "path": what, "device": device, "browser": browser,
                                "os": os_, "country": country})  # fmt: skip
            pages = [what for _, is_event, what in rows if not is_event]
            visits.append(
                {"day": day, "id": vid, "visitor": visitor, "who": who, "user_id": user, "started_at": rows[0][0],
                 "ended_at": rows[-1][0], "duration_s": int((rows[-1][0] - rows[0][0]).total_seconds()),
                 "page_views": len(pages), "events": len(rows) - len(pages), "bounce": len(rows) == 1,
                 "entry_page": pages[0] if pages else None, "exit_page": pages[-1] if pages else None,
                 "entry_label": _label(pages[0]) if pages else None, "exit_label": None, "referrer": referrer,
                 "source": source, "utm_source": rng.choice([None, "news", "News"]), "utm_medium": None,
                 "utm_campaign": None, "device": device, "browser": browser, "os": os_, "country": country}
            )  # fmt: skip
        # A page view of no stored visit, an error and an event of no visit: a funnel reaches none of them.
        ts = midnight + timedelta(hours=3)
        pvs.append({"day": day, "id": f"{day:%d}-orphan", "ts": ts, "hour": 3, "visitor": "vx", "who": "v:vx",
                    "user_id": None, "visit_id": f"{day:%d}-none", "label": "/", "path": "/", "device": "desktop",
                    "browser": "Firefox", "os": "GNU/Linux", "country": None})  # fmt: skip
        for kind, visit_id in (("error", f"{day:%d}-0000"), ("event", None)):
            events.append({"day": day, "id": f"{day:%d}-{kind}", "kind": kind, "ts": ts, "hour": 3, "visitor": "vx",
                           "who": "v:vx", "user_id": None, "visit_id": visit_id, "name": "upload", "label": "/",
                           "path": "/"})  # fmt: skip
    return pvs, events, visits


async def seed(url: str, seed_value: int, visits_per_day: int = 120) -> Any:
    await migrate(url)
    engine = create_engine(url)
    await make_partitions(engine, DAYS[0], ahead=len(DAYS) + 1)
    pvs, events, visits = random_facts(seed_value, visits_per_day)
    async with engine.begin() as conn:
        await conn.execute(FACT_PAGE_VIEWS.insert(), pvs)
        await conn.execute(FACT_SITE_EVENTS.insert(), events)
        await conn.execute(FACT_VISITS.insert(), visits)
    return engine


async def mark_rolled(engine: Any, days: list[date], encode: bool = True, chunk_visits: int = CHUNK_VISITS) -> None:
    async with engine.begin() as conn:
        for day in days:
            await conn.execute(ROLLUP_DAYS.insert().values(day=day, dirty=False, rolled_at=datetime(2026, 12, 1)))
            if encode:
                await record_funnel_day(conn, day, chunk_visits)


FUNNELS: list[list[dict[str, str]]] = [
    [{"page": "/"}, {"page": "/p/*"}, {"page": "/u/*"}, {"goal": "upload"}],
    [{"page": "/p/*"}, {"page": "/p/*"}, {"page": "/p/*"}],
    [{"goal": "Artwork"}, {"goal": "signup"}, {"page": "/**"}, {"goal": "Deep"}],
    [{"page": "/p/**"}, {"page": "/%_x"}, {"goal": "upload"}, {"goal": "upload"}, {"page": "/"}],
    [{"goal": "upload"}, {"page": "/about"}],
    [{"page": "/nowhere"}, {"page": "/"}],
]
FILTERS: list[list[Any]] = [
    [],
    [["is", "visit:device", ["Mobile"]]],
    [["is_not", "visit:source", ["Direct / None"]], ["is", "visit:country_name", ["Germany"]]],
    [["contains", "visit:utm_source", ["news"], {"case_sensitive": False}]],
    [["matches", "visit:entry_page", ["^/p/a[12]$"]]],
    [["contains", "event:page", ["/b/"]]],
    [["contains_not", "event:page", ["/u/"]]],
    [["is", "event:props:label", ["api"]]],
    [["is", "event:goal", ["signup"]]],
    [["not", ["is", "event:goal", ["Artwork"]]]],
    [["or", [["is", "visit:browser", ["Safari"]], ["is", "event:goal", ["upload"]]]]],
    [["not", ["and", [["is", "visit:os", ["iOS"]], ["contains", "event:page", ["/p/"]]]]]],
    [["matches", "event:page", ["^/[pP]/"]], ["is", "visit:entry_page", ["/"]]],
]


async def both(engine: Any, steps: list[dict[str, str]], filters: list[Any], first: date, last: date) -> tuple:
    """(the funnel's one statement's answer, the encoded path's) over [first, last]."""
    body = {"date_range": [first.isoformat(), last.isoformat()], "steps": steps, "filters": filters}
    fq = parse_funnel(body, date(2026, 12, 1))
    async with snapshot(engine) as conn:
        step_goals = resolve_goals(fq.steps, GOALS)
        assert fq.q.first is not None
        b = Builder(fq.q, fq.q.first, None, GOALS, conn.dialect.name)
        sql = {
            int(r.step): (int(r.visitors), r.median) for r in await conn.execute(funnel_select(b, fq.steps, step_goals))
        }
        encoded = await encoded_funnel(conn, b, fq.steps, step_goals, DAYS[0])
    assert encoded is not None
    return sql, encoded


async def test_encoded_days_answer_as_sql(database_url):
    engine = await seed(database_url, 11)
    try:
        await mark_rolled(engine, DAYS)
        seen_reached = 0
        for steps in FUNNELS:
            for filters in FILTERS:
                sql, encoded = await both(engine, steps, filters, DAYS[0], DAYS[-1])
                assert encoded == sql, (steps, filters)
                seen_reached += len(sql)
        assert seen_reached > 100  # the data reach most steps
        # One day alone, and the range past the data.
        for first, last in ((DAYS[1], DAYS[1]), (DAYS[2], DAYS[-1] + timedelta(days=3))):
            sql, encoded = await both(engine, FUNNELS[0], [], first, last)
            assert encoded == sql
    finally:
        await engine.dispose()


async def test_chunked_encoding_answers_as_sql(database_url):
    """A day encoded a few visitors at a time (7 visits a chunk: a visitor's visits straddle no chunk
    boundary, anonymous visitors numbered on from the chunk before) answers as the statement, and holds
    the same visits, rows and anonymous visitors as the day encoded in one chunk."""
    engine = await seed(database_url, 17)
    try:
        async with engine.begin() as conn:
            await record_funnel_day(conn, DAYS[0])
            whole = (await load_days(conn, [DAYS[0]], ["c", "w"]))[0]
        await mark_rolled(engine, DAYS, chunk_visits=7)
        async with engine.connect() as conn:
            chunked = (await load_days(conn, [DAYS[0]], ["c", "w"]))[0]
        assert (chunked.visits, chunked.rows, chunked.anonymous) == (whole.visits, whole.rows, whole.anonymous)
        assert whole.visits > 100 and whole.anonymous > 20
        assert sorted(chunked.parts["c"].tolist()) == sorted(whole.parts["c"].tolist())
        anonymous = -chunked.parts["w"][chunked.parts["w"] < 0] - 1
        assert sorted(set(anonymous.tolist())) == list(range(chunked.anonymous))
        for steps in FUNNELS:
            for filters in FILTERS:
                sql, encoded = await both(engine, steps, filters, DAYS[0], DAYS[-1])
                assert encoded == sql, (steps, filters)
    finally:
        await engine.dispose()


async def test_mixed_encoded_and_sql_days(database_url):
    """Days 1 and 3 encoded, 0 and 2 not (day 2 rolled but not encoded, day 0 never rolled): each
    visitor's first visit over all of them, signed-in users across both kinds of days."""
    engine = await seed(database_url, 23)
    try:
        async with engine.begin() as conn:
            await conn.execute(ROLLUP_DAYS.insert().values(day=DAYS[2], dirty=False, rolled_at=datetime(2026, 12, 1)))
        await mark_rolled(engine, [DAYS[1], DAYS[3]])
        # A dirty day's encoding is not read (its facts may have changed since).
        async with engine.begin() as conn:
            await conn.execute(ROLLUP_DAYS.insert().values(day=DAYS[0], dirty=True, rolled_at=datetime(2026, 12, 1)))
            await record_funnel_day(conn, DAYS[0])
            await conn.execute(
                FACT_PAGE_VIEWS.delete().where(FACT_PAGE_VIEWS.c.day == DAYS[0], FACT_PAGE_VIEWS.c.path == "/")
            )
        async with engine.connect() as conn:
            assert await encoded_days(conn, DAYS[0], DAYS[-1]) == {DAYS[0], DAYS[1], DAYS[3]}
        for steps in FUNNELS[:4]:
            for filters in FILTERS[:3] + FILTERS[5:6] + FILTERS[10:11]:
                sql, encoded = await both(engine, steps, filters, DAYS[0], DAYS[-1])
                assert encoded == sql, (steps, filters)
    finally:
        await engine.dispose()


async def test_hand_built_day_exact(database_url):
    """Visits on a rolled, encoded day: `/` 10:00:00.000001, `/p/a` 10:00:01.5, upload 10:01:01.5
    (1.499999 s, 60 s); `/` 11:00, `/P/b` 11:00:03 (not `/p/*`: patterns are case-sensitive on both
    backends). A signed-in user's second visit `/` 12:00, `/p/c` 12:00:10 after their first `/` 09:00,
    `/p/d` 09:00:20: their first visit reaching `/p/*` counts (20 s)."""
    await migrate(database_url)
    engine = create_engine(database_url)
    await make_partitions(engine, D0, ahead=2)
    m = datetime(D0.year, D0.month, D0.day)

    def pv(i: int, visit: str, who: str, at: datetime, path: str) -> dict:
        return {"day": D0, "id": f"pv{i}", "ts": at, "hour": at.hour, "visitor": who[2:], "who": who,
                "visit_id": visit, "label": "/", "path": path, "device": "desktop", "browser": "Firefox",
                "os": "GNU/Linux"}  # fmt: skip

    def visit(vid: str, who: str, at: datetime) -> dict:
        return {"day": D0, "id": vid, "visitor": who[2:], "who": who, "started_at": at, "ended_at": at,
                "duration_s": 0, "page_views": 1, "events": 0, "bounce": False, "device": "desktop",
                "browser": "Firefox", "os": "GNU/Linux"}  # fmt: skip

    try:
        async with engine.begin() as conn:
            await conn.execute(FACT_PAGE_VIEWS.insert(), [
                pv(1, "a", "v:a", m + timedelta(hours=10, microseconds=1), "/"),
                pv(2, "a", "v:a", m + timedelta(hours=10, seconds=1.5), "/p/a"),
                pv(3, "b", "v:b", m + timedelta(hours=11), "/"),
                pv(4, "b", "v:b", m + timedelta(hours=11, seconds=3), "/P/b"),
                pv(5, "u1", "u:9", m + timedelta(hours=9), "/"),
                pv(6, "u1", "u:9", m + timedelta(hours=9, seconds=20), "/p/d"),
                pv(7, "u2", "u:9", m + timedelta(hours=12), "/"),
                pv(8, "u2", "u:9", m + timedelta(hours=12, seconds=10), "/p/c"),
            ])  # fmt: skip
            await conn.execute(FACT_SITE_EVENTS.insert().values(
                day=D0, id="e1", kind="event", ts=m + timedelta(hours=10, minutes=1, seconds=1.5), hour=10,
                visitor="a", who="v:a", visit_id="a", name="upload", label="/api/post/upload", path="/api/post/upload",
            ))  # fmt: skip
            await conn.execute(
                FACT_VISITS.insert(),
                [visit("a", "v:a", m + timedelta(hours=10)), visit("b", "v:b", m + timedelta(hours=11)),
                 visit("u1", "u:9", m + timedelta(hours=9)), visit("u2", "u:9", m + timedelta(hours=12))],
            )  # fmt: skip
        await mark_rolled(engine, [D0])
        sql, got = await both(engine, [{"page": "/"}, {"page": "/p/*"}, {"goal": "upload"}], [], D0, D0)
        assert got == sql
        if database_url.startswith("sqlite"):
            # julianday rounds each time to the millisecond: 10:00:00.000001 is 10:00:00.000.
            # (1.5 + 20) / 2 off by julianday's precision, as the statement computes it.
            assert got == {0: (3, None), 1: (2, 10.75001209974289), 2: (1, 59.99999642372131)}
        else:
            assert got == {0: (3, None), 1: (2, (1.499999 + 20.0) / 2), 2: (1, 60.0)}
    finally:
        await engine.dispose()


async def test_rollup_writes_the_encoding(database_url):
    engine = await seed(database_url, 5, visits_per_day=40)
    try:
        result = await rollup_day(engine, DAYS[1], 1800.0)
        assert not result.skipped
        async with engine.connect() as conn:
            parts = (
                await conn.execute(sa.select(FUNNEL_DAYS.c.day, FUNNEL_DAYS.c.part).order_by(FUNNEL_DAYS.c.part))
            ).all()
            names = sorted(["c", "h", "k", "l", "s", "t", "w", *(f"d{i}" for i in range(11))])
            assert [(str(d)[:10], p) for d, p in parts] == [(DAYS[1].isoformat(), p) for p in names]
            assert await encoded_days(conn, DAYS[0], DAYS[-1]) == {DAYS[1]}
        sql, encoded = await both(engine, FUNNELS[0], FILTERS[1], DAYS[0], DAYS[-1])
        assert encoded == sql
        # Rolled again: replaced, not added to.
        await rollup_day(engine, DAYS[1], 1800.0, force=True)
        async with engine.connect() as conn:
            assert (await conn.execute(sa.select(sa.func.count()).select_from(FUNNEL_DAYS))).scalar_one() == 18
    finally:
        await engine.dispose()


async def _parts(engine: Any, day: date) -> dict[str, bytes]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(FUNNEL_DAYS.c.part, FUNNEL_DAYS.c.data).where(FUNNEL_DAYS.c.day == day))
        return {part: bytes(data) for part, data in rows}


async def test_the_rollup_encodes_apart_only_where_it_sees_the_same_facts(database_url, caplog, monkeypatch):
    """On PostgreSQL a rollup makes the visits' daily rows and the funnels' encoding in a transaction of
    their own, beside its other pieces, once the day's marked visitor-days are derived and committed
    (`_derive_marked_day`); a mark made after that is derived in the rollup's transaction (facts it has not
    committed), and then every piece is made there too, as on SQLite. Either way the parts are byte for
    byte what an encoding of the committed facts makes afterwards."""
    import trackside.rollup as rollup

    engine = await seed(database_url, 7, visits_per_day=40)
    postgres = database_url.startswith("postgresql")
    day = DAYS[2]

    async def mark_one() -> None:
        # No raw events: deriving the visitor-day removes its facts.
        async with engine.begin() as conn:
            query = sa.select(FACT_VISITS.c.visitor).where(FACT_VISITS.c.day == day).order_by(FACT_VISITS.c.visitor)
            visitor = (await conn.execute(query.limit(1))).scalar_one()
            await conn.execute(DERIVE_MARKS.insert().values(day=day, visitor=visitor, marked_at=datetime(2026, 12, 1)))

    async def encoded_again(parts: dict[str, bytes]) -> None:
        async with engine.begin() as conn:
            await record_funnel_day(conn, day)
        assert await _parts(engine, day) == parts

    try:
        caplog.set_level("INFO", logger="trackside.rollup")
        await rollup_day(engine, day, 1800.0)
        assert ("funnel_encoding_apart" in caplog.text) is postgres
        assert ("visit_days_apart" in caplog.text) is postgres
        assert ("funnel_encoding " in caplog.text) is not postgres
        first = await _parts(engine, day)
        await encoded_again(first)
        # Marked before the rollup: derived first (PostgreSQL), the pieces still apart.
        await mark_one()
        caplog.clear()
        await rollup_day(engine, day, 1800.0, force=True)
        assert ("funnel_encoding_apart" in caplog.text) is postgres
        second = await _parts(engine, day)
        assert second != first  # the visitor's visits are gone from it
        await encoded_again(second)
        # Marked after the derivation first (a late event in between): derived in the rollup's
        # transaction, and every piece made there.
        monkeypatch.setattr(rollup, "_derive_marked_day", lambda *args: asyncio.sleep(0))
        await mark_one()
        caplog.clear()
        await rollup_day(engine, day, 1800.0, force=True)
        assert "funnel_encoding_apart" not in caplog.text
        assert "funnel_encoding " in caplog.text
        third = await _parts(engine, day)
        assert third != second
        await encoded_again(third)
    finally:
        await engine.dispose()


async def test_a_failing_piece_leaves_the_day_unrolled_and_no_connection_behind(database_url, monkeypatch):
    """A piece that fails, on the second connection (the funnels' encoding) or in the rollup's own
    transaction (the route labels): the rollup raises, the day stays unrolled with none of that
    transaction's rows, the other side is rolled back or cancelled, no connection is left checked out,
    and the next rollup makes the same parts an encoding of the facts makes."""
    import trackside.rollup as rollup

    engine = await seed(database_url, 9, visits_per_day=40)
    day = DAYS[1]

    async def broken(conn: Any, d: date) -> None:
        raise RuntimeError("the piece failed")

    async def rolled() -> tuple[Any, int]:
        async with engine.connect() as conn:
            rolled_at = (
                await conn.execute(sa.select(ROLLUP_DAYS.c.rolled_at).where(ROLLUP_DAYS.c.day == day))
            ).scalar()
            parts = (
                await conn.execute(sa.select(sa.func.count()).select_from(FUNNEL_DAYS).where(FUNNEL_DAYS.c.day == day))
            ).scalar_one()
        return rolled_at, parts

    try:
        for name in ("record_funnel_day", "record_label_days"):
            with monkeypatch.context() as m:
                m.setattr(rollup, name, broken)
                try:
                    await rollup_day(engine, day, 1800.0)
                except RuntimeError as exc:
                    assert str(exc) == "the piece failed"
                else:
                    raise AssertionError(f"{name} failing did not fail the rollup")
            assert engine.pool.checkedout() == 0, name
            rolled_at, parts = await rolled()
            assert rolled_at is None, name
            if name == "record_funnel_day":
                assert parts == 0  # its transaction rolled back
        assert not (await rollup_day(engine, day, 1800.0)).skipped
        rolled_at, parts = await rolled()
        assert rolled_at is not None and parts == 18
        encoded = await _parts(engine, day)
        async with engine.begin() as conn:
            await record_funnel_day(conn, day)
        assert await _parts(engine, day) == encoded
    finally:
        await engine.dispose()


async def test_upgrade_from_0020(database_url):
    """Days rolled before 0021 have no encoding: the funnel answers them from SQL, then from the
    encoding once rolled again; the strings are numbered once for all days."""
    before = importlib.import_module("trackside.migrations.versions.0021_funnel_days").down_revision
    await migrate(database_url, before)
    engine = create_engine(database_url)
    await make_partitions(engine, DAYS[0], ahead=len(DAYS) + 1)
    pvs, events, visits = random_facts(3, 30)
    try:
        async with engine.begin() as conn:
            await conn.execute(FACT_PAGE_VIEWS.insert(), pvs)
            await conn.execute(FACT_SITE_EVENTS.insert(), events)
            await conn.execute(FACT_VISITS.insert(), visits)
            await conn.execute(
                ROLLUP_DAYS.insert(), [{"day": d, "dirty": False, "rolled_at": datetime(2026, 12, 1)} for d in DAYS]
            )
        await migrate(database_url)
        async with engine.connect() as conn:
            assert await encoded_days(conn, DAYS[0], DAYS[-1]) == set()
        body = {"date_range": [DAYS[0].isoformat(), DAYS[-1].isoformat()], "steps": FUNNELS[0]}
        fq = parse_funnel(body, date(2026, 12, 1))
        async with snapshot(engine) as conn:
            b = Builder(fq.q, DAYS[0], None, GOALS, conn.dialect.name)
            assert await encoded_funnel(conn, b, fq.steps, resolve_goals(fq.steps, GOALS), DAYS[0]) is None
        async with engine.begin() as conn:
            for day in DAYS:
                await record_funnel_day(conn, day)
            n = (await conn.execute(sa.text("SELECT count(*), count(DISTINCT text) FROM funnel_strings"))).one()
        assert n[0] == n[1] > len(PATHS)
        sql, encoded = await both(engine, FUNNELS[0], [], DAYS[0], DAYS[-1])
        assert encoded == sql and sql[0][0] > 0
    finally:
        await engine.dispose()


def test_supported_filters():
    """Every visit dimension and event filter of a funnel is answered from the encodings; anything
    else (none today: the v2 parser refuses it first) by the funnel's statement."""
    from trackside.stats.funnel_days import supported
    from trackside.stats.v2.schema import VISIT_DIMENSIONS, Leaf, Node

    assert supported(tuple(Leaf("is", d, ("x",)) for d in VISIT_DIMENSIONS))
    assert supported((Node("or", (Leaf("is", "event:goal", ("x",)), Leaf("contains", "event:page", ("/",)))),))
    assert not supported((Node("not", (Leaf("is", "event:props:content_kind", ("artwork",)),)),))


async def test_time_range_uses_sql(database_url):
    engine = await seed(database_url, 2, visits_per_day=10)
    try:
        await mark_rolled(engine, DAYS)
        body = {"date_range": [f"{DAYS[0]}T10:00:00Z", f"{DAYS[1]}T10:00:00Z"], "steps": FUNNELS[0]}
        fq = parse_funnel(body, date(2026, 12, 1))
        assert fq.q.start is not None and fq.q.first is not None
        async with snapshot(engine) as conn:
            b = Builder(fq.q, fq.q.first, None, GOALS, conn.dialect.name)
            assert await encoded_funnel(conn, b, fq.steps, resolve_goals(fq.steps, GOALS), DAYS[0]) is None
            assert replace(fq.q, start=None).start is None
    finally:
        await engine.dispose()


async def test_answer_funnel_uses_the_encodings(database_url, monkeypatch):
    """`answer_funnel` (what the API answers) over encoded, SQL-only and empty days: the same JSON as with
    the encoded path switched off."""
    import trackside.stats.v2.funnel as funnel
    from trackside.stats.v2.engine import Limits

    engine = await seed(database_url, 31, visits_per_day=60)
    try:
        await mark_rolled(engine, DAYS[:3])
        body = {
            "date_range": [DAYS[0].isoformat(), (DAYS[-1] + timedelta(days=2)).isoformat()],
            "steps": FUNNELS[0],
            "filters": FILTERS[10],
        }
        fq = funnel.parse_funnel(body, date(2026, 12, 1))
        now = datetime(2026, 12, 1, 12)

        async def goals(conn: Any) -> list[Goal]:
            return GOALS

        calls: list[Any] = []
        real = funnel.encoded_funnel

        async def spy(*args: Any) -> Any:
            calls.append(await real(*args))
            return calls[-1]

        monkeypatch.setattr(funnel, "encoded_funnel", spy)
        encoded = await funnel.answer_funnel(engine, fq, Limits(), goals, now)

        async def off(*args: Any) -> None:
            return None

        monkeypatch.setattr(funnel, "encoded_funnel", off)
        sql = await funnel.answer_funnel(engine, fq, Limits(), goals, now)
    finally:
        await engine.dispose()
    assert calls and calls[0] is not None  # the encodings answered
    assert encoded == sql
    assert encoded["steps"][0]["visitors"] > 0


async def test_pruned_facts_take_their_encodings(database_url):
    """A day whose facts are pruned loses its encoding (a funnel counts facts only); the others keep theirs."""
    from trackside.storage.fact_retention import prune_facts

    engine = await seed(database_url, 4, visits_per_day=10)
    try:
        await mark_rolled(engine, DAYS)
        async with engine.begin() as conn:
            await conn.execute(ROLLUP_DAYS.update().where(ROLLUP_DAYS.c.day <= DAYS[1]).values(raw_pruned=True))
            await prune_facts(conn, DAYS[2])
        async with engine.connect() as conn:
            assert await encoded_days(conn, DAYS[0], DAYS[-1]) == {DAYS[2], DAYS[3]}
    finally:
        await engine.dispose()
