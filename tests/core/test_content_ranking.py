"""Content rankings merge unique viewers only for the rows they show; the answers must be the same
as merging every item's viewers first."""

from __future__ import annotations

from collections import Counter
from datetime import date

from trackside.figures import DayFigures, ItemFigures
from trackside.sketch import sketch_of
from trackside.stats.query import Query, popular_items, run_query


def _item(views: int, users: set[str], anonymous: int, *, rolled: bool) -> ItemFigures:
    f = ItemFigures(counts=Counter(views=views, impressions=1), anonymous_viewers=anonymous)
    if rolled:
        f.users_sketch = sketch_of(users)
    else:
        f.users = set(users)
    return f


def _days() -> list[DayFigures]:
    # Two rolled days (sketches) and one live day (exact sets). Over the range:
    #   a: 5 views, users {u1} on both rolled days + 1 anonymous      -> 2 unique viewers
    #   b: 5 views, users {u1, u2} then {u3} + 0 anonymous            -> 3
    #   c: 4 views, users {u4} live + 3 anonymous visitor-days        -> 4
    #   d: 1 view, nobody signed in, 1 anonymous                      -> 1
    d1 = DayFigures(date(2026, 11, 1), rolled=True)
    d1.items = {
        ("artwork", "a"): _item(3, {"u1"}, 0, rolled=True),
        ("artwork", "b"): _item(2, {"u1", "u2"}, 0, rolled=True),
        ("artwork", "c"): _item(2, set(), 2, rolled=True),
    }
    d2 = DayFigures(date(2026, 11, 2), rolled=True)
    d2.items = {
        ("artwork", "a"): _item(1, {"u1"}, 1, rolled=True),
        ("artwork", "b"): _item(3, {"u3"}, 0, rolled=True),
    }
    d3 = DayFigures(date(2026, 11, 3), rolled=False)
    d3.items = {
        ("artwork", "a"): _item(1, set(), 0, rolled=False),
        ("artwork", "c"): _item(2, {"u4"}, 1, rolled=False),
        ("artwork", "d"): _item(1, set(), 1, rolled=False),
        ("blog_post", "z"): _item(9, {"u9"}, 0, rolled=False),
    }
    return [d1, d2, d3]


def test_popular_orders_ties_on_views_by_viewers():
    days = _days()
    assert popular_items(days, "artwork", 1) == [{"id": "b", "views": 5, "unique_viewers": 3, "impressions": 2}]
    assert [r["id"] for r in popular_items(days, "artwork", 2)] == ["b", "a"]
    full = popular_items(days, "artwork", 10)
    assert [(r["id"], r["views"], r["unique_viewers"]) for r in full] == [
        ("b", 5, 3),
        ("a", 5, 2),
        ("c", 4, 4),
        ("d", 1, 1),
    ]
    assert popular_items(days, "artwork", 0) == []


def _query(metrics: tuple[str, ...], limit: int, offset: int) -> Query:
    return Query(
        metrics=metrics,
        dimensions=("content",),
        first=date(2026, 11, 1),
        last=date(2026, 11, 3),
        filters=(),
        limit=limit,
        offset=offset,
        order_desc=True,
    )


def test_content_query_pages_carry_merged_viewers():
    days = _days()
    page = run_query(_query(("content_views", "unique_viewers", "impressions"), 2, 1), days)
    assert page["meta"]["total_rows"] == 5
    # Ordered by views, then by key: blog_post:z (9), artwork:a (5), artwork:b (5), artwork:c (4), artwork:d (1).
    assert page["results"] == [
        {"dimensions": ["artwork:a"], "metrics": [5, 2, 3]},
        {"dimensions": ["artwork:b"], "metrics": [5, 3, 2]},
    ]
    by_viewers = run_query(_query(("unique_viewers", "content_views"), 3, 0), days)
    assert by_viewers["results"] == [
        {"dimensions": ["artwork:c"], "metrics": [4, 4]},
        {"dimensions": ["artwork:b"], "metrics": [3, 5]},
        {"dimensions": ["artwork:a"], "metrics": [2, 5]},
    ]
