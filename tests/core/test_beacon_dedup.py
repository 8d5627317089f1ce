"""Beacon page views against proxied navigations: each navigation counts once, however it was seen.

Every row is one visitor's day: the events the proxy and the snippet stored, and the page views,
looks and unverified beacons `derive_day` must make of them."""

from __future__ import annotations

import itertools

import pytest

from trackside.events import Event
from trackside.views import BEACON_ECHO_SECONDS, derive_day

_ids = itertools.count()
T0 = 1_790_000_000.0
WINDOW = 30 * 60.0
A1 = ("artwork", "a1")


def ev(ts, nav, path="/", *, kind="page_view", visitor="v1", content=None, view_type=None, unverified=False):
    content_kind, content_id = content or (None, None)
    return Event(
        id=f"{next(_ids):08d}", ts=T0 + ts, kind=kind, nav=nav, method="GET", path=path, label=path, status=200,
        visitor=visitor, content_kind=content_kind, content_id=content_id, view_type=view_type, unverified=unverified,
    )


def beacon(ts, path="/", **kw):
    return ev(ts, "beacon", path, **kw)


# (name, events, expected page views as (nav, path) in time order)
CASES = [
    ("document then its snippet beacon", [ev(0, "document", "/"), beacon(0.4, "/")], [("document", "/")]),
    ("data fetch then the pushState beacon", [ev(0, "data", "/b"), beacon(0.05, "/b")], [("data", "/b")]),
    ("rsc fetch then the beacon", [ev(0, "rsc", "/c"), beacon(1, "/c")], [("rsc", "/c")]),
    ("beacon first, data fetch late", [beacon(0, "/b"), ev(3, "data", "/b")], [("data", "/b")]),
    ("no request: the beacon alone counts", [ev(0, "document", "/"), beacon(0.3, "/"), beacon(5, "/about")],
     [("document", "/"), ("beacon", "/about")]),
    ("exactly at the edge of the window", [ev(0, "data", "/b"), beacon(BEACON_ECHO_SECONDS, "/b")], [("data", "/b")]),
    ("just past the window: two navigations", [ev(0, "data", "/b"), beacon(BEACON_ECHO_SECONDS + 0.01, "/b")],
     [("data", "/b"), ("beacon", "/b")]),
    ("another path never absorbs", [ev(0, "data", "/b"), beacon(0.1, "/c")], [("data", "/b"), ("beacon", "/c")]),
    ("another visitor never absorbs", [ev(0, "data", "/b", visitor="v2"), beacon(0.1, "/b")],
     [("data", "/b"), ("beacon", "/b")]),
    # Back to a page Next.js serves from its cache: one proxied navigation, two beacons, two views.
    ("one proxied navigation absorbs one beacon", [ev(0, "data", "/b"), beacon(0.1, "/b"), beacon(4, "/b")],
     [("data", "/b"), ("beacon", "/b")]),
    ("two proxied, two beacons", [ev(0, "data", "/b"), beacon(0.1, "/b"), ev(4, "data", "/b"), beacon(4.1, "/b")],
     [("data", "/b"), ("data", "/b")]),
    # A beacon absorbs into the nearest proxied navigation, leaving the other one for its own beacon.
    ("nearest first", [ev(0, "data", "/b"), ev(6, "document", "/b"), beacon(6.2, "/b"), beacon(0.2, "/b")],
     [("data", "/b"), ("document", "/b")]),
    ("api calls are not navigations", [ev(0, "api", "/api/p/a1", kind="api_call"), beacon(0.1, "/api/p/a1")],
     [("beacon", "/api/p/a1")]),
    ("a widget view is no page view", [beacon(0, "/p/a1", content=A1, view_type="widget")], []),
    # Without a valid token: counted when the proxy saw the visitor within the view window, else apart.
    ("a token-less beacon of a visitor the proxy saw counts",
     [ev(0, "document", "/"), beacon(3, "/x", unverified=True)], [("document", "/"), ("beacon", "/x")]),
    ("a token-less beacon of a visitor the proxy never saw counts apart",
     [ev(0, "document", "/"), beacon(3, "/x", visitor="v2", unverified=True)], [("document", "/")]),
]


@pytest.mark.parametrize("events,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_navigation_counts_once(events, expected):
    days = derive_day(events, WINDOW)
    assert [(pv.event.nav, pv.event.path) for pv in days.page_views] == expected


def test_a_dropped_beacon_makes_no_second_look_and_a_kept_one_makes_one():
    events = [ev(0, "data", "/p/a1", content=A1), beacon(0.1, "/p/a1", content=A1)]
    assert len(derive_day(events, WINDOW).looks) == 1
    alone = derive_day([beacon(0, "/p/a1", content=A1)], WINDOW)
    assert [(lk.content_id, lk.first.nav) for lk in alone.looks] == [("a1", "beacon")]


def test_a_widget_view_is_a_look_of_type_widget():
    days = derive_day([beacon(0, "/p/a1", content=A1, view_type="widget")], WINDOW)
    assert [(lk.content_id, lk.first.view_type) for lk in days.looks] == [("a1", "widget")]


def test_unverified_beacons_are_set_aside_whole():
    events = [
        beacon(0, "/p/a1", content=A1, unverified=True),
        beacon(1, "/p/a1", content=A1, view_type="widget", unverified=True),
        ev(2, "beacon", "/", kind="impression", content=A1, view_type="listing", unverified=True),
    ]
    days = derive_day(events, WINDOW)
    assert days.page_views == [] and days.looks == [] and days.impressions == []
    assert days.unverified == sorted(events, key=lambda e: e.ts)


def test_beacon_impressions_count_apart_from_views():
    events = [ev(0, "document", "/"), ev(1.5, "beacon", "/", kind="impression", content=A1, view_type="listing")]
    days = derive_day(events, WINDOW)
    assert [(im.event.content_id, im.event.view_type) for im in days.impressions] == [("a1", "listing")]
    assert days.looks == []
