"""Beacons without a valid page token: counted when the proxy saw the same visitor within the view
window (before or after), set apart otherwise; decided when views are derived, from whatever
events are stored by then, and the same for a whole day and for one item's read."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from tests.reports import report_of
from tests.sidecar.test_stats import midnight
from tests.storing import write_batch
from trackside.batch import Batch
from trackside.events import Event
from trackside.figures import item_days, load_days, sum_days
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.views import derive_day

_ids = itertools.count()
T0 = 1_790_000_000.0
WINDOW = 30 * 60.0
A1 = ("artwork", "a1")


def ev(ts, nav, path="/", *, t0=T0, kind="page_view", visitor="v1", content=None, view_type=None, unverified=False):
    content_kind, content_id = content or (None, None)
    return Event(
        id=f"{next(_ids):08d}",
        ts=t0 + ts,
        kind=kind,
        nav=nav,
        method="GET",
        path=path,
        label=path,
        status=200,
        visitor=visitor,
        content_kind=content_kind,
        content_id=content_id,
        view_type=view_type,
        unverified=unverified,
        device="desktop",
    )


def tokenless(ts, path="/", **kw):
    return ev(ts, "beacon", path, unverified=True, **kw)


def test_a_proxied_request_ten_minutes_later_makes_a_tokenless_beacon_count():
    events = [tokenless(0, "/about"), ev(600, "api", "/api/feed", kind="api_call")]
    days = derive_day(events, WINDOW)
    assert [(pv.event.nav, pv.event.path) for pv in days.page_views] == [("beacon", "/about")]
    assert days.unverified == []


def test_the_proxied_request_may_come_first_and_must_be_within_the_window():
    before = derive_day([ev(0, "document", "/"), tokenless(WINDOW, "/x")], WINDOW)
    assert [pv.event.path for pv in before.page_views] == ["/", "/x"]
    late = [tokenless(0, "/x"), ev(WINDOW + 1, "document", "/")]
    outside = derive_day(late, WINDOW)
    assert [pv.event.path for pv in outside.page_views] == ["/"]
    assert outside.unverified == [late[0]]


def test_a_tokenless_beacon_of_a_never_seen_visitor_stays_unverified():
    events = [ev(0, "document", "/", visitor="v1"), tokenless(5, "/x", visitor="v2"), tokenless(9, "/y", visitor="v2")]
    days = derive_day(events, WINDOW)
    assert [(pv.event.visitor, pv.event.path) for pv in days.page_views] == [("v1", "/")]
    assert days.unverified == events[1:]
    # Another token-less beacon is no evidence: only a request through the proxy is.
    assert derive_day([tokenless(0, "/a"), tokenless(1, "/b")], WINDOW).page_views == []


def test_no_double_count_with_a_proxied_page_view_of_the_same_page():
    # The site's own hook reports the navigation the proxy also saw: one page view, one look.
    events = [ev(0, "data", "/p/a1", content=A1), tokenless(0.2, "/p/a1", content=A1)]
    days = derive_day(events, WINDOW)
    assert [(pv.event.nav, pv.event.path) for pv in days.page_views] == [("data", "/p/a1")]
    assert [(lk.content_id, lk.first.nav) for lk in days.looks] == [("a1", "data")]
    assert days.unverified == []


def test_a_widget_on_another_site_counts_for_a_visitor_of_this_one():
    widget = tokenless(0, "/p/a1", content=A1, view_type="widget")
    days = derive_day([widget, ev(300, "document", "/")], WINDOW)
    assert [(lk.content_id, lk.first.view_type) for lk in days.looks] == [("a1", "widget")]
    assert [pv.event.path for pv in days.page_views] == ["/"]  # a widget is never a page view


@pytest.fixture
async def engine(database_url):
    await migrate(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def test_stored_apart_then_counted_once_the_visit_is_stored(engine, database_url):
    """The beacon is stored first; the proxied request 10 minutes later arrives in a later batch (say,
    through another sidecar). The day's figures and the item's own read agree, exactly."""
    d0 = midnight(0)
    first = [
        tokenless(60, "/p/a1", t0=d0, visitor="va", content=A1),  # the site's own hook, no token
        tokenless(70, "/p/a1", t0=d0, visitor="vz", content=A1),  # a visitor the proxy never sees
        ev(61, "document", "/", t0=d0, visitor="vb"),
    ]
    await write_batch(engine, Batch(events=first))
    report = await report_of(database_url)
    assert report["page_views"]["total"] == 1
    assert report["unverified_beacons"] == {"page_view": 2}
    await write_batch(engine, Batch(events=[ev(660, "api", "/api/feed", t0=d0, visitor="va", kind="api_call")]))
    report = await report_of(database_url)
    assert report["page_views"]["total"] == 2
    assert report["page_views"]["by_label"] == {"/": 1, "/p/a1": 1}
    assert report["unverified_beacons"] == {"page_view": 1}
    today = datetime.now(UTC).date()
    async with engine.connect() as conn:
        whole = sum_days(await load_days(conn, today, today, WINDOW)).items
        one = dict(await item_days(conn, "artwork", "a1", today, today, WINDOW))[today]
    assert whole[A1]["views"] == 1
    assert one is not None and one.counts["views"] == 1 and one.viewers == 1
