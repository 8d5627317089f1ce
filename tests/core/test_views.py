"""View derivation: page views with their users, and looks (content views), from raw events."""

from __future__ import annotations

import itertools

from trackside.events import Event
from trackside.views import derive_day

_ids = itertools.count()
T0 = 1_790_000_000.0  # a fixed instant; only differences matter
WINDOW = 30 * 60.0


def event(ts, kind="page_view", nav="document", path="/", visitor="v1", user=None, content=None, author=None):
    kind_, id_ = content if content else (None, None)
    return Event(
        id=f"{next(_ids):08d}", ts=T0 + ts, kind=kind, nav=nav, method="GET", path=path, label=path, status=200,
        visitor=visitor, user_id=user, author_id=author, content_kind=kind_, content_id=id_,
    )


A1 = ("artwork", "a1")


def test_one_look_however_many_requests_and_reloads():
    events = [
        event(0, path="/p/a1", content=A1),
        event(1, kind="api_call", nav="api", path="/api/p/a1", content=A1),
        event(60, path="/p/a1", content=A1),  # reload
        event(120, nav="data", path="/p/a1", content=A1),  # back, then forward through Next data
        event(30 * 60 - 1, path="/p/a1", content=A1),
    ]
    d = derive_day(events, WINDOW)
    assert len(d.page_views) == 4
    assert [(lk.content_id, lk.visitor) for lk in d.looks] == [("a1", "v1")]


def test_a_new_look_after_the_window_from_the_first_request():
    events = [event(0, path="/p/a1", content=A1), event(29 * 60, path="/p/a1", content=A1),
              event(30 * 60, path="/p/a1", content=A1)]
    assert len(derive_day(events, WINDOW).looks) == 2


def test_two_visitors_two_looks_and_api_alone_is_a_look():
    events = [event(0, path="/p/a1", content=A1),
              event(5, kind="api_call", nav="api", path="/api/p/a1", visitor="v2", content=A1)]
    assert sorted(lk.visitor for lk in derive_day(events, WINDOW).looks) == ["v1", "v2"]


def test_page_view_takes_user_from_authenticated_api_request_of_same_visitor():
    events = [
        event(0, path="/p/a1", content=A1),
        event(2, kind="api_call", nav="api", path="/api/p/a1", user="u7", content=A1),
        event(10, path="/about"),
        event(10, path="/about", visitor="v2"),
        event(WINDOW + 100, path="/late"),
    ]
    d = derive_day(events, WINDOW)
    assert [(pv.event.path, pv.event.visitor, pv.user) for pv in d.page_views] == [
        ("/p/a1", "v1", "u7"),
        ("/about", "v1", "u7"),
        ("/about", "v2", None),
        ("/late", "v1", None),
    ]
    assert [lk.user for lk in d.looks] == ["u7"]


def test_author_looks_are_not_views():
    events = [
        event(0, path="/p/a1", content=A1),
        event(1, kind="api_call", nav="api", path="/api/p/a1", user="u7", content=A1, author="u7"),
        event(5, path="/p/a1", visitor="v2", content=A1),
    ]
    assert [lk.visitor for lk in derive_day(events, WINDOW).looks] == ["v2"]


def test_rsc_echo_before_document_is_not_a_second_page_view():
    events = [event(0, nav="rsc", path="/p/a1"), event(0.5, path="/p/a1"), event(100, nav="rsc", path="/x")]
    assert [(pv.event.nav, pv.event.path) for pv in derive_day(events, WINDOW).page_views] == [
        ("document", "/p/a1"),
        ("rsc", "/x"),
    ]


def test_order_of_input_does_not_matter():
    events = [event(i * 700, path="/p/a1", content=A1) for i in range(6)]
    forward = derive_day(events, WINDOW)
    backward = derive_day(list(reversed(events)), WINDOW)
    assert [lk.first.id for lk in forward.looks] == [lk.first.id for lk in backward.looks]
    assert len(forward.looks) == 2
