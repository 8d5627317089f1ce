"""A day's figures grouped in SQL from its fact rows (`trackside.storage.fact_reads`) are the figures
the in-memory path made of its raw events (`figures_of(aggregate_day(day, events, derive_day(...)))`),
field by field, on both backends: a hand-made day with every rule in it (checked by hand too), and
random days, each stored in shuffled, repeated batches. Then a rollup from facts keeps them, one
item's read is the whole day's item, and visitor-days still marked are derived before they count."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from tests.storing import assert_sums_match_facts, delete_facts, write_batch
from trackside.aggregate import aggregate_day
from trackside.batch import Batch
from trackside.derive import Derivation
from trackside.events import Event
from trackside.figures import DayFigures, figures_of, item_days, live_day, load_days, merge_users, rolled_day
from trackside.rollup import rollup_day
from trackside.storage.daily import day_bot_hits
from trackside.storage.engine import create_engine
from trackside.storage.fact_reads import read_item_day
from trackside.storage.facts import mark
from trackside.storage.migrate import migrate
from trackside.storage.reads import day_events
from trackside.storage.tables import DAILY_CONTENT, DAILY_CONTENT_DIMS, DERIVE_MARKS, SUM_TABLES
from trackside.views import derive_day

WINDOW = 30 * 60.0
DAY = date(2026, 3, 1)
_seq = 0


def at(seconds: float, day: date = DAY) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() + seconds


def ev(seconds: float, path: str = "/", *, visitor: str, kind: str = "page_view", nav: str = "document",
       day: date = DAY, **fields: Any) -> Event:  # fmt: skip
    """An event `seconds` into `day`; ids sort by creation, not by time."""
    global _seq
    _seq += 1
    if path.startswith(("/p/", "/api/p/")) and "content_id" not in fields:
        fields["content_kind"], fields["content_id"] = "artwork", path.rsplit("/", 1)[1]
    fields.setdefault("label", "/p/[post]" if path.startswith("/p/") else path)
    fields.setdefault("device", "desktop")
    fields.setdefault("browser", "Firefox")
    fields.setdefault("os", "Linux")
    return Event(
        id=f"{_seq:08x}-0000-7000-8000-{random.getrandbits(48):012x}",
        ts=at(seconds, day),
        kind=kind,
        nav=nav,
        method=fields.pop("method", "GET"),
        path=path,
        status=fields.pop("status", 200),
        visitor=visitor,
        **fields,
    )


def api(seconds: float, path: str = "/api/feed", **fields: Any) -> Event:
    fields.setdefault("kind", "api_call")
    return ev(seconds, path, nav="api", **fields)


def shown(seconds: float, item: str, view_type: str, **fields: Any) -> Event:
    return ev(seconds, "/api/feed", kind="impression", nav="api", content_kind="artwork", content_id=item,
              view_type=view_type, **fields)  # fmt: skip


def hand_day() -> list[Event]:
    """Every rule once (the comments say what each event becomes), and one event of the next day."""
    gb = {"country": "GB", "referrer": "news.example", "utm_source": "newsletter"}
    iphone = {"device": "mobile", "browser": "Mobile Safari", "os": "iOS", "country": "BR"}
    return [
        ev(10, "/", visitor="va", **gb),  # page view
        ev(12, "/p/a1", visitor="va", nav="rsc", **gb),  # RSC echo of the document 2 s later: none
        ev(14, "/p/a1", visitor="va", **gb),  # page view, look a1 (anonymous)
        ev(20, "/p/a1", visitor="va", nav="beacon", **gb),  # the snippet's beacon of that navigation: none
        ev(100, "/p/a1", visitor="va", **gb),  # reload: page view, the same look
        ev(4000, "/p/a1", visitor="va", **gb),  # page view, a second look (over the window)
        api(4010, "/api/x", visitor="va", kind="error", **gb),  # API call, error "unknown"
        ev(200, "/p/a2", visitor="vb", **iphone),  # page view and look a2, as u1 (lent by the API call)
        api(230, "/api/p/a2", visitor="vb", user_id="u1", **iphone),  # API call, the same look
        api(260, "/api/auth/register", visitor="vb", event_name="signup", **iphone),  # signup (anonymous)
        api(300, "/api/upload", visitor="vb", user_id="u1", event_name="upload", **iphone),  # upload as u1
        ev(9000, "/about", visitor="vb", **iphone),  # page view, anonymous (no user within the window)
        shown(9100, "a1", "listing", visitor="vb", **iphone),  # impression of a1, anonymous
        ev(500, "/p/b2", visitor="vc", user_id="u9", author_id="u9"),  # page view; the author's own look: none
        shown(510, "b2", "search", visitor="vc", user_id="u9"),  # the author's own impression: none
        shown(520, "a1", "search", visitor="vc", user_id="u9"),  # impression of a1 as u9
        api(530, "/api/y", visitor="vc", kind="error", error_type="timeout", user_id="u9"),  # error as u9
        ev(700, "/p/a1", visitor="vd", nav="beacon", view_type="widget"),  # a widget: a look, no page view
        ev(1000, "/pricing", visitor="ve", nav="beacon", unverified=True),  # token-less, proxied later: counts
        api(1600, visitor="ve"),  # the proxy saw ve within the window
        ev(2000, "/landing", visitor="vf", nav="beacon", unverified=True),  # never proxied: unverified
        ev(3000, "/spa/route", visitor="vg", nav="beacon"),  # a beacon with its token, no navigation: counts
        api(5000, "/api/like", visitor="vh", user_id="u2", event_name="like"),
        *(api(5001 + i, visitor="vh") for i in range(5)),  # anonymous API calls: counted only
        ev(6000, "/p/a1", visitor="vi", user_id="u1", device="mobile", country="DE"),  # u1 again, elsewhere
        ev(5, "/", visitor="va", day=DAY + timedelta(days=1)),  # the next day
    ]


def random_day(rng: random.Random) -> list[Event]:
    """Random visitors over one day: navigations of every kind, API reads, impressions, errors and
    events, signed in or not, with an author (u2 of a2) looking at their own item."""
    out = []
    t = 0.0
    while True:
        t += rng.choice([1, 3, 8, 30, 200, 900, 1799, 1801, 3000])
        if t >= 86_400:
            return out
        visitor = rng.choice(["r1", "r2", "r3", "r4", "r5", "r6"])
        user = rng.choice([None, None, None, "u1", "u2", "u3"])
        item = rng.choice([None, "a1", "a2", "a3"])
        extra: dict[str, Any] = {
            "visitor": visitor,
            "country": rng.choice([None, "GB", "FR"]),
            "device": rng.choice(["desktop", "mobile", "tablet"]),
            "browser": rng.choice(["Firefox", "Chrome", "Mobile Safari"]),
            "os": rng.choice(["Linux", "Mac OS X", "iOS"]),
            "referrer": rng.choice([None, None, "search.example", "social.example"]),
            "utm_source": rng.choice([None, None, "mail"]),
        }
        if item == "a2":
            extra["author_id"] = "u2"
        roll = rng.random()
        path = f"/p/{item}" if item else rng.choice(["/", "/about"])
        if roll < 0.4:
            nav = rng.choice(["document", "document", "rsc", "data", "beacon"])
            out.append(ev(t, path, nav=nav, user_id=user, unverified=nav == "beacon" and rng.random() < 0.4, **extra))
        elif roll < 0.55:
            out.append(ev(t, path, nav="beacon", view_type="widget", **extra) if item else api(t, **extra))
        elif roll < 0.75:
            out.append(api(t, f"/api/p/{item}" if item else "/api/feed", user_id=user, **extra))
        elif roll < 0.85:
            out.append(shown(t, item or "a4", rng.choice(["listing", "search", "widget"]), user_id=user, **extra))
        elif roll < 0.93:
            name = rng.choice(["signup", "upload", "like"])
            out.append(api(t, "/api/act", user_id=user, event_name=name, **extra))
        else:
            out.append(api(t, "/api/z", kind="error", error_type=rng.choice([None, "timeout"]), user_id=user, **extra))


async def store_shuffled(engine: Any, events: list[Event], rng: random.Random, bots: int = 0) -> None:
    """Small batches in random order, a third of them twice, some events in two batches."""
    events = list(events)
    rng.shuffle(events)
    batches = []
    i = 0
    while i < len(events):
        n = rng.randint(1, 6)
        part = events[i : i + n]
        if i and rng.random() < 0.3:
            part.append(events[i - 1])
        batches.append(part)
        i += n
    batches += batches[: len(batches) // 3]
    rng.shuffle(batches)
    for part in batches:
        await write_batch(engine, Batch(events=part))
    if bots:
        await write_batch(engine, Batch(bots=Counter({(DAY, "Googlebot", "/"): bots})))


async def in_memory(conn: Any, day: date) -> DayFigures:
    """The day as the in-memory path made it, from the stored raw events."""
    events = await day_events(conn, day)
    return figures_of(aggregate_day(day, events, derive_day(events, WINDOW), await day_bot_hits(conn, day)))


def assert_same(facts: DayFigures, expected: DayFigures) -> None:
    assert facts.day == expected.day and facts.rolled is False
    assert dict(facts.counts) == dict(expected.counts)
    assert facts.unique_visitors == expected.unique_visitors
    assert facts.unique_visitors_authenticated == expected.unique_visitors_authenticated
    assert facts.users == expected.users
    assert facts.dims == expected.dims
    assert sorted(facts.items) == sorted(expected.items)
    for key, item in expected.items.items():
        got = facts.items[key]
        assert dict(got.counts) == dict(item.counts), key
        assert (got.viewers, got.viewers_authenticated, got.anonymous_viewers) == (
            item.viewers,
            item.viewers_authenticated,
            item.anonymous_viewers,
        ), key
        assert got.users == item.users, key
        assert (got.first_at, got.last_at) == (item.first_at, item.last_at), key
        assert got.dims == item.dims, key


async def setup(url: str) -> Any:
    await migrate(url)
    return create_engine(url)


async def test_hand_made_day_from_facts_equals_the_in_memory_path_and_the_hand_count(database_url):
    engine = await setup(database_url)
    try:
        await store_shuffled(engine, hand_day(), random.Random(1), bots=4)
        async with engine.connect() as conn:
            facts = await live_day(conn, DAY, WINDOW)
            expected = await in_memory(conn, DAY)
            site_only = await live_day(conn, DAY, WINDOW, with_items=False)
        assert_same(facts, expected)
        assert facts.as_of is not None
        assert site_only.items == {} and site_only.counts == facts.counts and site_only.dims == facts.dims

        assert dict(facts.counts) == {
            "page_views": 10, "page_views_authenticated": 3, "signups": 1, "uploads": 1, "api_calls": 15,
            "errors": 2, "impressions": 2, "bot_hits": 4, "signups_authenticated": 0, "uploads_authenticated": 1,
            "api_calls_authenticated": 6, "errors_authenticated": 1, "impressions_authenticated": 1,
        }  # fmt: skip
        # v:va, u:u1 (vb's first page and vi), v:vb (its later page), u:u9, v:ve, v:vg.
        assert (facts.unique_visitors, facts.unique_visitors_authenticated, facts.users) == (6, 2, {"u1", "u9"})
        dims = facts.dims
        assert dims[("hour", "00")] == [7, 2, 5, 2]
        assert dims[("hour", "02")] == [1, 0, 1, 0]  # vb's /about at 02:30
        assert dims[("browser", "Safari")] == [2, 1, 2, 1]  # "Mobile Safari" read as today's name
        assert dims[("utm_source", "newsletter")] == [4, 0, 1, 0]
        assert dims[("unverified", "page_view")] == [1, 0, 0, 0]
        assert dims[("error", "unknown")] == [1, 0, 0, 0]
        assert dims[("error", "timeout")] == [1, 1, 0, 1]  # no visitors; an empty signed-in `who`
        assert dims[("event", "signup")] == [1, 0, 0, 0]
        assert dims[("view_type", "view")] == [4, 2, 2, 1]  # the author's own look left out
        assert dims[("view_type", "widget")] == [1, 0, 1, 0]
        assert sorted(facts.items) == [("artwork", "a1"), ("artwork", "a2")]  # b2: only its author's
        a1 = facts.items[("artwork", "a1")]
        assert [a1.counts[n] for n in ("views", "views_authenticated", "impressions", "impressions_authenticated")] == [
            4,
            1,
            2,
            1,
        ]
        assert (a1.viewers, a1.viewers_authenticated, a1.users) == (3, 1, {"u1"})
        assert (a1.first_at, a1.last_at) == (datetime(2026, 3, 1, 0, 0, 14), datetime(2026, 3, 1, 1, 40))
        assert a1.dims[("type", "view")] == [3, 1] and a1.dims[("type", "widget")] == [1, 0]
        assert a1.dims[("type", "search")] == [1, 1] and a1.dims[("impression_hour", "02")] == [1, 0]
        assert a1.dims[("country", "GB")] == [2, 0] and ("country", "") not in a1.dims
        assert a1.dims[("hour", "00")] == [2, 0] and a1.dims[("hour", "01")] == [2, 1]
    finally:
        await engine.dispose()


async def test_random_days_from_facts_equal_the_in_memory_path(database_url):
    engine = await setup(database_url)
    try:
        for seed in range(6):
            rng = random.Random(seed)
            day = DAY + timedelta(days=seed)
            events = random_day(rng)
            for e in events:  # move to this seed's day
                e.ts += (day - DAY).days * 86_400
            await store_shuffled(engine, events, rng)
            async with engine.connect() as conn:
                facts = await live_day(conn, day, WINDOW)
                assert facts.counts["page_views"] > 20, seed
                assert_same(facts, await in_memory(conn, day))
                for kind, item in facts.items:
                    one = await read_item_day(conn, day, kind, item)
                    assert one is not None
                    whole = facts.items[(kind, item)]
                    assert (one.counts, one.viewers, one.users, one.dims) == (
                        whole.counts,
                        whole.viewers,
                        whole.users,
                        whole.dims,
                    )
        # Read above from the sums derivation kept (`day_sums`, `item_sums`): each equals its facts grouped.
        assert await assert_sums_match_facts(engine) == 6
    finally:
        await engine.dispose()


async def test_rollup_from_facts_keeps_every_figure(database_url):
    engine = await setup(database_url)
    try:
        events = hand_day()
        await store_shuffled(engine, events, random.Random(2), bots=4)
        async with engine.connect() as conn:
            live = await live_day(conn, DAY, WINDOW)
            a1_live = dict(await item_days(conn, "artwork", "a1", DAY, DAY + timedelta(days=1), WINDOW))
        result = await rollup_day(engine, DAY, WINDOW)
        assert (result.events, result.skipped) == (sum(1 for e in events if e.ts < at(86_400)), False)
        async with engine.connect() as conn:
            rolled = await rolled_day(conn, DAY)
            (via_load,) = await load_days(conn, DAY, DAY, WINDOW)
            a1_rolled = dict(await item_days(conn, "artwork", "a1", DAY, DAY + timedelta(days=1), WINDOW))
            n_dims = (await conn.execute(select(func.count()).select_from(DAILY_CONTENT_DIMS))).scalar_one()
            # The day's sums (read live above) stay with its rollup (kept while its raw events are), as the next day's.
            summed = {t.name: set((await conn.execute(select(t.c.day).distinct())).scalars()) for t in SUM_TABLES}
        assert summed["fact_sum_days"] == summed["fact_sums"] == {DAY, DAY + timedelta(days=1)}
        assert all(days <= {DAY, DAY + timedelta(days=1)} for days in summed.values())
        assert rolled.rolled and via_load.rolled
        assert rolled.counts == live.counts and rolled.dims == live.dims
        assert (rolled.unique_visitors, rolled.unique_visitors_authenticated) == (6, 2)
        assert rolled.users is None and rolled.users_sketch is not None
        assert sorted(rolled.items) == sorted(live.items)
        for key, item in live.items.items():
            got = rolled.items[key]
            assert got.counts == item.counts
            assert (got.viewers, got.viewers_authenticated, got.first_at, got.last_at) == (
                item.viewers,
                item.viewers_authenticated,
                item.first_at,
                item.last_at,
            )
            assert (got.users_sketch is None) == (not item.users)
        assert n_dims == sum(len(i.dims) for i in live.items.values())
        # One item's days: the rolled day's dims from its rows; the next day (not rolled) from facts.
        assert a1_rolled[DAY] is not None and a1_live[DAY] is not None
        assert a1_rolled[DAY].dims == a1_live[DAY].dims and a1_rolled[DAY].counts == a1_live[DAY].counts
        assert a1_rolled[DAY + timedelta(days=1)] is None  # the next day's event is no look of a1
        # Rolled: no raw event needed any more.
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DELETE FROM events")
        async with engine.connect() as conn:
            assert (await rolled_day(conn, DAY)).counts == live.counts
    finally:
        await engine.dispose()


async def _underive(engine: Any, day: date) -> None:
    """As after the upgrade: the day's events stored, their facts not derived, their visitor-days marked."""
    async with engine.begin() as conn:
        visitors = {e.visitor for e in await day_events(conn, day)}
        await delete_facts(conn, day)
        await mark(conn, [(day, v) for v in visitors])


async def test_marked_visitor_days_are_derived_before_a_read_with_the_derivation_and_by_the_rollup(database_url):
    engine = await setup(database_url)
    try:
        await store_shuffled(engine, hand_day(), random.Random(3))
        async with engine.connect() as conn:
            expected = await live_day(conn, DAY, WINDOW)
        await _underive(engine, DAY)
        async with engine.connect() as conn:
            # Without the settings' derivation a read leaves the marks (to the writer, worker, rollup).
            assert (await live_day(conn, DAY, WINDOW)).counts["page_views"] == 0
        async with engine.connect() as conn:
            (day,) = await load_days(conn, DAY, DAY, WINDOW, derivation=Derivation(WINDOW))
            assert_same(day, expected)
            assert (await conn.execute(select(func.count()).select_from(DERIVE_MARKS))).scalar_one() == 0

        await _underive(engine, DAY)
        await rollup_day(engine, DAY, WINDOW, derivation=Derivation(WINDOW))
        async with engine.connect() as conn:
            rolled = await rolled_day(conn, DAY)
            assert (await conn.execute(select(func.count()).select_from(DERIVE_MARKS))).scalar_one() == 0
        assert rolled.counts == expected.counts and rolled.dims == expected.dims
        assert rolled.unique_visitors == expected.unique_visitors
    finally:
        await engine.dispose()


async def test_a_rollup_of_many_items_writes_every_items_sketch_while_streaming(database_url):
    """More items than one chunk of sketch updates: updates run while the stream of users is open."""
    engine = await setup(database_url)
    try:
        events = [
            ev(i * 7, f"/p/x{i}", visitor=f"m{i % 40}", user_id=f"u{i % 9}", country=("GB", "FR")[i % 2])
            for i in range(2_300)
        ]
        await write_batch(engine, Batch(events=events))
        async with engine.connect() as conn:
            live = await live_day(conn, DAY, WINDOW)
        assert len(live.items) == 2_300
        await rollup_day(engine, DAY, WINDOW)
        async with engine.connect() as conn:
            rolled = await rolled_day(conn, DAY)
            c = DAILY_CONTENT.c
            sketches = (
                await conn.execute(select(func.count()).where(c.day == DAY, c.users_sketch.is_not(None)))
            ).scalar()
            x7 = await item_days(conn, "artwork", "x7", DAY, DAY, WINDOW)
        assert sketches == 2_300
        assert rolled.counts == live.counts and rolled.dims == live.dims
        assert {k: (i.counts, i.viewers) for k, i in rolled.items.items()} == {
            k: (i.counts, i.viewers) for k, i in live.items.items()
        }
        assert merge_users([(None, rolled.items[("artwork", "x7")].users_sketch)]) == 1
        assert x7[0][1] is not None and x7[0][1].dims == {
            ("country", "FR"): [1, 1],
            ("device", "desktop"): [1, 1],
            ("type", "view"): [1, 1],
            ("hour", "00"): [1, 1],
        }
    finally:
        await engine.dispose()


async def test_rollup_reads_the_kept_sums_unless_it_derives_more(database_url):
    """A rollup takes the page views' breakdowns from the sums derivation kept (no grouping of every
    page view again); when it still has visitor-days to derive, those sums are stale, and it groups the
    facts instead: either way every page view is in the daily rows."""
    from trackside.storage.writes import write_batch as store_only

    engine = await setup(database_url)
    try:
        derived = [ev(60.0 * i, "/a", visitor="va") for i in range(3)] + [ev(90.0, "/b", visitor="vb", country="FR")]
        await write_batch(engine, Batch(events=derived))  # derived: the day's sums kept
        # Stored later and not derived yet: marked, so the rollup derives them itself.
        await store_only(engine, Batch(events=[ev(3_600.0, "/b", visitor="vc", country="FR")]))
        result = await rollup_day(engine, DAY, WINDOW)
        assert not result.skipped
        async with engine.connect() as conn:
            rolled = await rolled_day(conn, DAY)
        assert rolled.counts["page_views"] == 5
        assert rolled.unique_visitors == 3
        assert rolled.dims[("label", "/a")][:3] == [3, 0, 1]
        assert rolled.dims[("label", "/b")][:3] == [2, 0, 2]
        assert rolled.dims[("country", "FR")][:3] == [2, 0, 2]

        # A second day, all derived before its rollup: the same figures from the sums.
        later = DAY + timedelta(days=1)
        again = [ev(60.0 * i, "/a", visitor="wa", day=later) for i in range(3)]
        again += [ev(90.0, "/b", visitor="wb", country="FR", day=later), ev(3_600.0, "/b", visitor="wc", day=later)]
        await write_batch(engine, Batch(events=again))
        assert not (await rollup_day(engine, later, WINDOW)).skipped
        async with engine.connect() as conn:
            rolled = await rolled_day(conn, later)
        assert rolled.counts["page_views"] == 5 and rolled.unique_visitors == 3
        assert rolled.dims[("label", "/b")][:3] == [2, 0, 2]
        assert rolled.dims[("country", "FR")][:3] == [1, 0, 1]
    finally:
        await engine.dispose()
