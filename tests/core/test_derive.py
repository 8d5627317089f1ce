"""Facts of one visitor-day (`trackside.derive.derive_visitor_day`) and the fact rows the write path
stores (both backends): visits, bounces, durations, time on page, entry and exit, lent users, the
midnight split, beacon echoes. Fact retention (`trackside.storage.fact_retention`) at the end."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from rollups.tasks import prune_old
from tests.storing import delete_facts, write_batch
from trackside.batch import Batch
from trackside.derive import Derivation, derive_visitor_day
from trackside.errors import ConfigError
from trackside.events import Event
from trackside.rollup import prune, rollup_day
from trackside.settings import Settings
from trackside.storage.engine import create_engine
from trackside.storage.fact_retention import prune_facts
from trackside.storage.facts import derive_marked, mark
from trackside.storage.migrate import migrate
from trackside.storage.tables import (
    DERIVE_MARKS,
    EVENTS,
    FACT_PAGE_VIEWS,
    FACT_SITE_EVENTS,
    FACT_TABLES,
    FACT_VISITOR_DAYS,
    FACT_VISITS,
)

DAY = date(2026, 3, 2)
WINDOW = 1800.0
VISITOR = "a" * 32
_seq = 0


def at(seconds: float, day: date = DAY) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() + seconds


def clock(seconds: float, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day) + timedelta(seconds=seconds)


def ev(seconds: float, path: str = "/", *, day: date = DAY, kind: str = "page_view", nav: str = "document",
       visitor: str = VISITOR, **fields: Any) -> Event:  # fmt: skip
    """An event `seconds` into `day`. Ids are unique and sort by creation, not by time, so a test
    that shuffles finds no help in them."""
    global _seq
    _seq += 1
    fields.setdefault("label", path)
    fields.setdefault("device", "desktop")
    fields.setdefault("browser", "Firefox")
    fields.setdefault("os", "Linux")
    return Event(
        id=f"0000{_seq:04x}-0000-7000-8000-{random.getrandbits(48):012x}",
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
    return ev(seconds, path, kind="api_call", nav="api", **fields)


def signup(seconds: float, **fields: Any) -> Event:
    return ev(seconds, "/api/auth/register", kind="api_call", nav="api", method="POST", event_name="signup", **fields)


def derive(events: list[Event], day: date = DAY):
    return derive_visitor_day(day, VISITOR, events, WINDOW)


def visits_of(events: list[Event]) -> list[tuple[int, int, int, bool]]:
    """(page views, events, duration in seconds, bounce) of each visit, in time order."""
    return [(v["page_views"], v["events"], v["duration_s"], v["bounce"]) for v in derive(events).visits]


# ---------------------------------------------------------------------------------------------
# Visits: the 30-minute gap, what extends a visit and what does not.
# ---------------------------------------------------------------------------------------------


def test_a_gap_of_exactly_thirty_minutes_is_one_visit():
    assert visits_of([ev(0), ev(1800, "/b")]) == [(2, 0, 1800, False)]


def test_a_gap_of_thirty_minutes_and_a_second_is_two_visits():
    first, second = ev(0), ev(1801, "/b")
    facts = derive([second, first])
    assert [(v["page_views"], v["events"], v["duration_s"], v["bounce"]) for v in facts.visits] == [
        (1, 0, 0, True),
        (1, 0, 0, True),
    ]
    assert [v["id"] for v in facts.visits] == [first.id, second.id]
    assert [pv["visit_id"] for pv in facts.page_views] == [first.id, second.id]


def test_api_calls_assets_and_errors_never_extend_a_visit():
    polling = [api(s) for s in range(600, 3000, 600)]  # every ten minutes, signed out
    asset = ev(2400, "/logo.png", kind="asset", nav="other")
    error = ev(2700, "/api/feed", kind="error", nav="api", status=500, error_type="http_500")
    facts = derive([ev(0), *polling, asset, error, ev(3000, "/b")])
    assert [(v["page_views"], v["events"], v["duration_s"], v["bounce"]) for v in facts.visits] == [
        (1, 0, 0, True),
        (1, 0, 0, True),
    ]
    assert facts.visitor_day == {"day": DAY, "visitor": VISITOR, "api_calls": 5, "api_calls_authenticated": 0}
    # The error is a site event row of its own, in no visit.
    assert [(s["kind"], s["name"], s["visit_id"]) for s in facts.site_events] == [("error", "http_500", None)]


def test_site_events_extend_a_visit():
    first, event, last = ev(0), signup(1500), ev(3000, "/b")
    facts = derive([last, event, first])
    assert [(v["page_views"], v["events"], v["duration_s"], v["bounce"]) for v in facts.visits] == [(2, 1, 3000, False)]
    visit = facts.visits[0]
    assert (visit["id"], visit["started_at"], visit["ended_at"]) == (first.id, clock(0), clock(3000))
    assert [(s["kind"], s["name"], s["visit_id"]) for s in facts.site_events] == [("event", "signup", first.id)]
    # Time on page runs to the next page view, across the event.
    assert [pv["time_on_page_ms"] for pv in facts.page_views] == [3_000_000, None]


def test_a_site_event_alone_is_a_visit_of_no_page():
    event = signup(100)
    [visit] = derive([event]).visits
    assert visit == {
        "day": DAY, "id": event.id, "visitor": VISITOR, "who": "v:" + VISITOR, "user_id": None,
        "started_at": clock(100), "ended_at": clock(100), "duration_s": 0, "page_views": 0, "events": 1,
        "bounce": False, "entry_page": None, "exit_page": None, "entry_label": None, "exit_label": None,
        "referrer": None, "source": None, "utm_source": None, "utm_medium": None, "utm_campaign": None,
        "device": "other", "browser": "Other", "os": "Other", "country": None,
    }  # fmt: skip


def test_a_site_event_after_the_gap_starts_a_visit_of_its_own():
    assert visits_of([ev(0), signup(1801)]) == [(1, 0, 0, True), (0, 1, 0, False)]


# ---------------------------------------------------------------------------------------------
# Bounce, duration, time on page, entry and exit.
# ---------------------------------------------------------------------------------------------


def test_one_page_view_is_a_bounce_with_no_duration_and_no_time_on_page():
    facts = derive([ev(42)])
    assert visits_of([ev(42)]) == [(1, 0, 0, True)]
    assert facts.page_views[0]["time_on_page_ms"] is None


def test_one_page_view_and_a_signup_is_no_bounce():
    assert visits_of([ev(0), signup(20)]) == [(1, 1, 20, False)]


def test_a_reload_is_a_second_page_view_and_no_bounce():
    assert visits_of([ev(0), ev(5)]) == [(2, 0, 5, False)]


def test_time_on_page_runs_to_the_next_page_view_and_the_last_page_has_none():
    events = [ev(0, "/"), ev(12.5, "/p/a"), ev(100.25, "/about"), api(150), ev(4000, "/b"), ev(4061.001, "/c")]
    facts = derive(events)
    assert [(pv["path"], pv["time_on_page_ms"]) for pv in facts.page_views] == [
        ("/", 12_500),
        ("/p/a", 87_750),
        ("/about", None),  # the last page of its visit: the API call after it is no page view
        ("/b", 61_001),
        ("/c", None),
    ]
    first, second = facts.visits
    assert (first["duration_s"], first["entry_page"], first["exit_page"]) == (100, "/", "/about")
    assert (second["duration_s"], second["entry_page"], second["exit_page"]) == (61, "/b", "/c")


def test_time_on_page_counts_every_millisecond():
    facts = derive([ev(0, "/a"), ev(1.001, "/b"), ev(5.002, "/c"), ev(5.3, "/d")])
    assert [pv["time_on_page_ms"] for pv in facts.page_views] == [1001, 4001, 298, None]


def test_entry_and_exit_labels_are_the_route_labels():
    facts = derive([ev(0, "/p/x1", label="/p/[post]"), ev(60, "/u/ann", label="/u/[user]")])
    [visit] = facts.visits
    assert (visit["entry_page"], visit["entry_label"], visit["exit_page"], visit["exit_label"]) == (
        "/p/x1",
        "/p/[post]",
        "/u/ann",
        "/u/[user]",
    )


def test_source_utm_and_device_are_the_entry_page_views():
    entry = ev(0, "/", referrer="google.com", utm_source="newsletter", utm_medium="email", utm_campaign="spring",
               device="mobile", browser="Mobile Safari", os="Mac OS X", country="FR")  # fmt: skip
    inner = ev(30, "/b", referrer="example.org", utm_source="other", device="desktop", browser="Chrome", os="Windows")
    [visit] = derive([inner, entry]).visits
    assert {k: visit[k] for k in ("referrer", "source", "utm_source", "utm_medium", "utm_campaign")} == {
        "referrer": "google.com",
        "source": "google.com",
        "utm_source": "newsletter",
        "utm_medium": "email",
        "utm_campaign": "spring",
    }
    # Old browser and OS names are read as today's.
    assert (visit["device"], visit["browser"], visit["os"], visit["country"]) == ("mobile", "Safari", "Mac", "FR")


def test_source_falls_back_to_the_utm_source():
    [visit] = derive([ev(0, utm_source="newsletter")]).visits
    assert (visit["referrer"], visit["source"]) == (None, "newsletter")


# ---------------------------------------------------------------------------------------------
# Deterministic ids, any order, duplicates.
# ---------------------------------------------------------------------------------------------


def _journey() -> list[Event]:
    return [
        ev(0, "/", referrer="google.com"),
        api(10, user_id="u1"),
        ev(60, "/p/a", content_kind="artwork", content_id="a"),
        ev(62, "/p/a", nav="beacon"),  # the snippet's echo of the navigation at 60
        signup(120),
        ev(1900, "/b"),
        ev(4000, "/c"),
        ev(4001, "/c", kind="impression", nav="other", content_kind="artwork", content_id="z"),
        ev(5000, "/api/x", kind="error", nav="api", status=500, error_type="http_500"),
    ]


def test_the_same_events_in_any_order_and_repeated_give_the_same_facts():
    events = _journey()
    expected = derive(events)
    rng = random.Random(3)
    for _ in range(20):
        shuffled = events + rng.sample(events, 4)
        rng.shuffle(shuffled)
        assert derive(shuffled) == expected
    assert [v["id"] for v in expected.visits] == [events[0].id, events[6].id]


def test_visit_ids_are_their_first_page_views_id_even_when_events_come_late():
    events = _journey()
    later = derive(events[2:])
    assert later.visits[0]["id"] == events[2].id
    assert derive(events).visits[0]["id"] == events[0].id


# ---------------------------------------------------------------------------------------------
# Lent users, the midnight split, beacon echoes.
# ---------------------------------------------------------------------------------------------


def test_a_signed_in_request_lends_its_user_to_the_page_views_and_the_visit():
    facts = derive([ev(0), api(600, user_id="u1"), ev(700, "/b")])
    assert [(pv["who"], pv["user_id"]) for pv in facts.page_views] == [("u:u1", "u1"), ("u:u1", "u1")]
    [visit] = facts.visits
    assert (visit["who"], visit["user_id"]) == ("u:u1", "u1")
    assert facts.visitor_day == {"day": DAY, "visitor": VISITOR, "api_calls": 1, "api_calls_authenticated": 1}


def test_a_user_is_lent_only_within_the_view_window():
    facts = derive([ev(0), api(1801, user_id="u1")])
    assert [(pv["who"], pv["user_id"]) for pv in facts.page_views] == [("v:" + VISITOR, None)]
    assert [(v["who"], v["user_id"]) for v in facts.visits] == [("v:" + VISITOR, None)]
    assert derive([ev(0), api(1800, user_id="u1")]).visits[0]["who"] == "u:u1"


def test_a_site_event_signed_in_names_the_visit_user():
    facts = derive([signup(0, user_id="u9")])
    assert [(v["who"], v["user_id"]) for v in facts.visits] == [("u:u9", "u9")]
    assert [(s["who"], s["user_id"]) for s in facts.site_events] == [("u:u9", "u9")]


def test_a_visit_ends_at_midnight_utc():
    before = ev(86_400 - 600, "/late")
    after = ev(600, "/early", day=DAY + timedelta(days=1))
    first = derive([before], DAY)
    second = derive([after], DAY + timedelta(days=1))
    assert [(v["day"], v["id"], v["duration_s"], v["bounce"]) for v in first.visits] == [(DAY, before.id, 0, True)]
    assert [(v["day"], v["id"], v["duration_s"], v["bounce"]) for v in second.visits] == [
        (DAY + timedelta(days=1), after.id, 0, True)
    ]
    assert first.page_views[0]["time_on_page_ms"] is None
    assert first.page_views[0]["hour"] == 23


def test_a_beacon_echoing_a_navigation_is_not_counted_twice():
    document = ev(0, "/p/a")
    echo = ev(3, "/p/a", nav="beacon")
    spa = ev(40, "/b", nav="beacon")  # a client-side navigation the proxy never saw
    facts = derive([document, echo, spa])
    assert [(pv["id"], pv["time_on_page_ms"]) for pv in facts.page_views] == [(document.id, 40_000), (spa.id, None)]
    assert visits_of([document, echo, spa]) == [(2, 0, 40, False)]
    assert visits_of([document, echo]) == [(1, 0, 0, True)]


def test_an_rsc_fetch_before_its_document_is_one_page_view():
    assert visits_of([ev(0, "/p/a", nav="rsc"), ev(2, "/p/a")]) == [(1, 0, 0, True)]


def test_a_beacon_from_a_visitor_the_proxy_never_saw_is_no_page_view():
    facts = derive([ev(0, "/p/a", nav="beacon", unverified=True)])
    assert facts.page_views == [] and facts.visits == []
    assert [(s["kind"], s["name"], s["visit_id"]) for s in facts.site_events] == [("unverified", "page_view", None)]


# ---------------------------------------------------------------------------------------------
# The stored facts (write path, both backends).
# ---------------------------------------------------------------------------------------------


async def _facts(engine) -> dict[str, list[dict[str, Any]]]:
    out = {}
    async with engine.connect() as conn:
        for table in FACT_TABLES:
            rows = (await conn.execute(select(table))).mappings().all()
            out[table.name] = sorted((dict(r) for r in rows), key=lambda r: (r["day"], r.get("id", ""), r["visitor"]))
    return out


def _expected(events: list[Event]) -> dict[str, list[dict[str, Any]]]:
    by_day: dict[tuple[date, str], list[Event]] = {}
    for e in events:
        by_day.setdefault((e.day, e.visitor), []).append(e)
    out: dict[str, list[dict[str, Any]]] = {t.name: [] for t in FACT_TABLES}
    for (day, visitor), mine in sorted(by_day.items()):
        f = derive_visitor_day(day, visitor, mine, WINDOW)
        out["fact_page_views"] += f.page_views
        out["fact_looks"] += f.looks
        out["fact_impressions"] += f.impressions
        out["fact_site_events"] += f.site_events
        out["fact_visits"] += f.visits
        if f.visitor_day and f.visitor_day["api_calls"]:
            out["fact_visitor_days"].append(f.visitor_day)
    return {k: sorted(v, key=lambda r: (r["day"], r.get("id", ""), r["visitor"])) for k, v in out.items()}


async def test_stored_facts_are_the_derivation_of_the_stored_events(database_url):
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        events = _journey() + [ev(86_400 - 60, "/late"), ev(60, "/next", day=DAY + timedelta(days=1))]
        await write_batch(engine, Batch(events=events))
        stored = await _facts(engine)
        assert stored == _expected(events)
        visits = [(v["day"], v["id"], v["page_views"], v["events"], v["duration_s"], v["bounce"], v["who"])
                  for v in stored["fact_visits"]]  # fmt: skip
        assert visits == sorted(
            [
                (DAY, events[0].id, 3, 1, 1900, False, "u:u1"),  # /, /p/a (its beacon echo absorbed), signup, /b
                (DAY, events[6].id, 1, 0, 0, True, "v:" + VISITOR),  # /c (the impression is no page view)
                (DAY, events[9].id, 1, 0, 0, True, "v:" + VISITOR),  # 23:59 ...
                (DAY + timedelta(days=1), events[10].id, 1, 0, 0, True, "v:" + VISITOR),  # ... and 00:01: two visits
            ],
            key=lambda v: (v[0], v[1]),
        )
        views = {pv["path"]: (pv["visit_id"], pv["time_on_page_ms"], pv["hour"]) for pv in stored["fact_page_views"]}
        assert views == {
            "/": (events[0].id, 60_000, 0),
            "/p/a": (events[0].id, 1_840_000, 0),
            "/b": (events[0].id, None, 0),
            "/c": (events[6].id, None, 1),
            "/late": (events[9].id, None, 23),
            "/next": (events[10].id, None, 0),
        }
        assert [(s["kind"], s["name"], s["visit_id"]) for s in stored["fact_site_events"]] == [
            ("event", "signup", events[0].id),
            ("error", "http_500", None),
        ]
        assert stored["fact_visitor_days"] == [
            {"day": DAY, "visitor": VISITOR, "api_calls": 3, "api_calls_authenticated": 1}
        ]
        assert len(stored["fact_looks"]) == 1 and len(stored["fact_impressions"]) == 1
        # Rewriting the batch, and each event again alone, change nothing.
        await write_batch(engine, Batch(events=events))
        for e in reversed(events):
            await write_batch(engine, Batch(events=[e]))
        assert await _facts(engine) == stored
    finally:
        await engine.dispose()


async def test_stored_times_are_the_events_to_the_microsecond(database_url, request):
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        first, second = ev(0.461, "/a"), ev(3.001, "/b")
        await write_batch(engine, Batch(events=[first, second]))
        async with engine.connect() as conn:
            raw = (await conn.execute(select(EVENTS.c.ts).order_by(EVENTS.c.ts))).scalars().all()
            facts = (await conn.execute(select(FACT_PAGE_VIEWS.c.ts).order_by(FACT_PAGE_VIEWS.c.ts))).scalars().all()
        assert [t.microsecond for t in raw] == [461_000, 1_000]
        assert [t.microsecond for t in facts] == [461_000, 1_000]
    finally:
        await engine.dispose()


async def test_stored_visits_grow_and_merge_as_events_arrive(database_url):
    """A page view landing in a gap joins two visits into one; the stored rows follow."""
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        first, last, middle = ev(0, "/a"), ev(3000, "/c"), ev(1500, "/b")
        await write_batch(engine, Batch(events=[first, last]))
        async with engine.connect() as conn:
            rows = (await conn.execute(select(FACT_VISITS.c.id, FACT_VISITS.c.page_views))).all()
        assert sorted(rows) == sorted([(first.id, 1), (last.id, 1)])
        await write_batch(engine, Batch(events=[middle]))
        async with engine.connect() as conn:
            rows = (await conn.execute(select(FACT_VISITS.c.id, FACT_VISITS.c.page_views, FACT_VISITS.c.bounce))).all()
            tops = (
                await conn.execute(
                    select(FACT_PAGE_VIEWS.c.path, FACT_PAGE_VIEWS.c.time_on_page_ms).order_by(FACT_PAGE_VIEWS.c.ts)
                )
            ).all()
        assert rows == [(first.id, 3, False)]
        assert tops == [("/a", 1_500_000), ("/b", 1_500_000), ("/c", None)]
        assert await _facts(engine) == _expected([first, last, middle])
    finally:
        await engine.dispose()


async def _stored_then_marked(engine, events: list[Event]) -> None:
    """Events as stored before facts existed: their facts gone, their visitor-day marked (the upgrade)."""
    await write_batch(engine, Batch(events=events))
    async with engine.begin() as conn:
        await delete_facts(conn)
        await mark(conn, [(DAY, VISITOR)])


def _before_facts() -> list[Event]:
    return [ev(0, "/a"), ev(60, "/b"), signup(90), api(100, user_id="u1")]


async def test_derive_marked_derives_a_marked_visitor_day_whole(database_url):
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        old = _before_facts()
        await _stored_then_marked(engine, old)
        assert await derive_marked(engine, Derivation()) == 1
        assert await _facts(engine) == _expected(old)
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(DERIVE_MARKS))).scalar_one() == 0
    finally:
        await engine.dispose()


async def test_a_new_event_of_a_marked_visitor_day_derives_it_whole(database_url):
    """The next event of a visitor-day stored before facts existed, even hours after its events,
    re-derives all of it (API counts included), as `derive_marked` would."""
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        old = _before_facts()
        await _stored_then_marked(engine, old)
        new = ev(20_000, "/c")  # hours later: a quiet gap lies between
        await write_batch(engine, Batch(events=[new]))
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(DERIVE_MARKS))).scalar_one() == 0
        assert await _facts(engine) == _expected([*old, new])
    finally:
        await engine.dispose()


# ---------------------------------------------------------------------------------------------
# Fact retention.
# ---------------------------------------------------------------------------------------------


def test_fact_retention_setting_defaults_parses_and_is_validated():
    assert Settings.from_env({}).fact_retention_days == 90
    s = Settings.from_env({"TRACKSIDE_FACT_RETENTION_DAYS": "30"})
    assert s.fact_retention_days == 30
    assert s.to_env()["TRACKSIDE_FACT_RETENTION_DAYS"] == "30"
    assert Settings.from_env(s.to_env()) == s
    assert Settings.from_env({"TRACKSIDE_FACT_RETENTION_DAYS": "7"}).fact_retention_days == 7  # = raw retention
    for bad in ("0", "-3", "6"):
        with pytest.raises(ConfigError, match="TRACKSIDE_FACT_RETENTION_DAYS"):
            Settings.from_env({"TRACKSIDE_FACT_RETENTION_DAYS": bad})
    with pytest.raises(ConfigError, match="TRACKSIDE_FACT_RETENTION_DAYS.*TRACKSIDE_RAW_RETENTION_DAYS"):
        Settings.from_env({"TRACKSIDE_RAW_RETENTION_DAYS": "120"})  # the default 90 is now too short
    with pytest.raises(ConfigError, match="TRACKSIDE_FACT_RETENTION_DAYS: invalid value 'ninety'"):
        Settings.from_env({"TRACKSIDE_FACT_RETENTION_DAYS": "ninety"})


async def _fact_days(engine) -> dict[str, list[date]]:
    async with engine.connect() as conn:
        return {
            t.name: list((await conn.execute(select(t.c.day).distinct().order_by(t.c.day))).scalars().all())
            for t in (FACT_PAGE_VIEWS, FACT_SITE_EVENTS, FACT_VISITS, FACT_VISITOR_DAYS)
        }


async def test_prune_deletes_facts_only_of_rolled_clean_days_behind_retention(database_url):
    await migrate(database_url)
    engine = create_engine(database_url)
    today = DAY + timedelta(days=40)
    days = [DAY + timedelta(days=i) for i in range(6)]
    try:
        for d in days:
            await write_batch(engine, Batch(events=[ev(60, "/", day=d), signup(90, day=d), api(100, day=d)]))
        # Nothing rolled up: nothing goes, however old.
        result = await prune(engine, 7, 0, today, fact_retention_days=30)
        assert (result.raw_events, result.fact_rows) == (0, 0)
        for d in days[:4]:
            await rollup_day(engine, d, WINDOW)
        # Day 3 gets a late event after its rollup: dirty, so it keeps its raw events and its facts.
        await write_batch(engine, Batch(events=[ev(200, "/x", day=days[3], visitor="b" * 32)]))
        async with engine.begin() as conn:
            await mark(conn, [(days[0], VISITOR), (days[2], "c" * 32)])  # marks of a pruned day go too
        # Raw events: days 0-3 are behind 7 days, 3 is dirty. Facts: days before today-37 (days 0-2)
        # are behind, and all rolled, clean and raw-pruned.
        result = await prune(engine, 7, 0, today, fact_retention_days=37)
        assert result.raw_events == 9  # 3 events of each of days 0, 1, 2
        assert result.fact_rows == 3 * 4  # a page view, a site event, a visit and a visitor-day, each
        assert result.daily_rows == 0
        assert await _fact_days(engine) == {
            "fact_page_views": days[3:],
            "fact_site_events": days[3:],
            "fact_visits": days[3:],
            "fact_visitor_days": days[3:],
        }
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(DERIVE_MARKS))).scalar_one() == 0
            left = (await conn.execute(select(EVENTS.c.day).distinct().order_by(EVENTS.c.day))).scalars().all()
        assert left == days[3:]
        # Run again: nothing more.
        again = await prune(engine, 7, 0, today, fact_retention_days=37)
        assert (again.raw_events, again.fact_rows) == (0, 0)
    finally:
        await engine.dispose()


async def test_prune_facts_keeps_days_whose_raw_events_are_kept(database_url):
    """A day rolled and clean, but with its raw events still there, may be rolled again: it keeps
    its facts, however old (only `prune`, raw first, can make it eligible)."""
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        await write_batch(engine, Batch(events=[ev(60, "/")]))
        await rollup_day(engine, DAY, WINDOW)
        async with engine.begin() as conn:
            assert await prune_facts(conn, DAY + timedelta(days=400)) == 0
        assert (await _fact_days(engine))["fact_page_views"] == [DAY]
        result = await prune(engine, 1, 0, DAY + timedelta(days=2), fact_retention_days=1)
        assert (result.raw_events, result.fact_rows) == (1, 2)  # a page view and its visit
        assert (await _fact_days(engine))["fact_visits"] == []
    finally:
        await engine.dispose()


async def test_the_workers_prune_job_prunes_facts_by_the_setting(make_settings, database_url):
    await migrate(database_url)
    engine = create_engine(database_url)
    settings = make_settings(database_url=database_url, fact_retention_days=30)
    today = datetime.now(UTC).date()
    old, recent = today - timedelta(days=31), today - timedelta(days=29)
    try:
        for d in (old, recent):
            await write_batch(engine, Batch(events=[ev(60, "/", day=d), api(70, day=d)]))
            await rollup_day(engine, d, WINDOW)
        result = await prune_old({"settings": settings, "engine": engine})
        # Raw events of both days (7 days); facts of the older one only: its page view, visit and API count.
        assert (result["raw_events"], result["fact_rows"], result["daily_rows"]) == (4, 3, 0)
        assert (await _fact_days(engine))["fact_visits"] == [recent]
    finally:
        await engine.dispose()
