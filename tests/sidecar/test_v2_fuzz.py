"""`POST /_trackside/api/v2/query` with hundreds of queries drawn at random from the whole vocabulary
(every metric, dimension, operator, nesting, date range, order and page), through a real sidecar on
the known site of `test_v2_query`, on both backends. Each answer is a 200 of the right shape or a 400
naming its problem: never a 500 (a combination the SQL builder cannot compile, a regular expression
the database refuses) and never a 503 on data this small.

The draws are seeded, so a failure names a body that fails again."""

from __future__ import annotations

import random
from typing import Any

import httpx

from tests.servers import run_sidecar
from tests.sidecar.test_stats import ADMIN
from tests.sidecar.test_v2_query import ALL, ROUTE, D, T, site  # noqa: F401 (the fixture)
from trackside.stats.v2.schema import (
    DIMENSIONS,
    EXTENSION_METRICS,
    METRICS,
    OPERATORS,
    SHORTCUTS,
    TIME_DIMENSIONS,
)

QUERIES = 500
# Values that match the site's rows, match none, and trouble a matcher: regular expressions a database
# refuses or reads differently, LIKE's wildcards, quotes, an empty string.
VALUES = (
    "/", "/about", "/p/a1", "/p/", "GB", "NL", "US", "Chrome", "Firefox", "Desktop", "Mobile", "Tablet",
    "Direct / None", "(not set)", "reddit.com", "Reddit", "newsletter", "signup", "About", "artwork", "a1",
    "listing", "iOS", "Mac", "United Kingdom", "", "%", "_", "'", "(", "[a-", "a{2,1}", "*", ".*", "^/p/.*$",
    "(?i)chrome", "\\", "ü",
)  # fmt: skip
RANGES = (*SHORTCUTS, ALL, [D, D], [T, T], [f"{T}T00:00:00Z", f"{T}T23:59:59Z"], [f"{D}T10:00:00Z", f"{T}T02:00:00Z"])


def _leaf(r: random.Random) -> list[Any]:
    op = r.choice(OPERATORS)
    dim = r.choice((*DIMENSIONS, "visit:country_name", "event:props:content_id"))
    values = r.sample(VALUES, r.randint(1, 3))
    leaf: list[Any] = [op, dim, values]
    if op != "is" and op != "is_not" and r.random() < 0.3 or r.random() < 0.1:
        leaf.append({"case_sensitive": r.random() < 0.5})
    return leaf


def _filter(r: random.Random, depth: int = 0) -> list[Any]:
    roll = r.random()
    if depth >= 2 or roll < 0.6:
        return _leaf(r)
    if roll < 0.75:
        return ["not", _filter(r, depth + 1)]
    return [r.choice(("and", "or")), [_filter(r, depth + 1) for _ in range(r.randint(1, 3))]]


def _body(r: random.Random) -> dict[str, Any]:
    metrics = r.sample((*METRICS, *EXTENSION_METRICS), r.randint(1, 3))
    dimensions = r.sample((*DIMENSIONS, *TIME_DIMENSIONS), r.choice((0, 0, 1, 1, 2)))
    body: dict[str, Any] = {"site_id": "makapix.club", "metrics": metrics, "date_range": r.choice(RANGES)}
    if dimensions:
        body["dimensions"] = dimensions
    if r.random() < 0.7:
        body["filters"] = [_filter(r) for _ in range(r.randint(1, 3))]
    if r.random() < 0.3:
        body["order_by"] = [[r.choice((*metrics, *dimensions)), r.choice(("asc", "desc"))]]
    if r.random() < 0.3:
        body["include"] = {"total_rows": r.random() < 0.5, "time_labels": r.random() < 0.5}
    if r.random() < 0.3:
        body["pagination"] = {"limit": r.choice((1, 2, 10_000)), "offset": r.choice((0, 1, 5))}
    return body


def _check(body: dict[str, Any], response: httpx.Response) -> str:
    """What the answer was ("ok" or "refused"); fails on anything else, with the body to replay."""
    where = f"{response.status_code} for {body}: {response.text[:300]}"
    if response.status_code == 400:
        error = response.json().get("error", "")
        assert isinstance(error, str) and len(error) > 10, where
        return "refused"
    assert response.status_code == 200, where
    answer = response.json()
    assert answer["query"]["metrics"] == body["metrics"], where
    for row in answer["results"]:
        assert len(row["metrics"]) == len(body["metrics"]), where
        assert len(row["dimensions"]) == len(body.get("dimensions", [])), where
        for name, value in zip(body["metrics"], row["metrics"], strict=True):
            assert value is None or value >= 0, where
            if name in ("bounce_rate", "percentage", "conversion_rate", "group_conversion_rate", "scroll_depth"):
                assert value is None or value <= 100, where
    limit = body.get("pagination", {}).get("limit", 10_000)
    assert len(answer["results"]) <= limit, where
    return "ok"


async def test_random_queries_are_answered_or_refused_by_name(site):  # noqa: F811 (the fixture)
    settings, _ = site
    r = random.Random(20261205)
    bodies = [_body(r) for _ in range(QUERIES)]
    seen: dict[str, int] = {}
    async with run_sidecar(settings) as (url, _):
        async with httpx.AsyncClient(base_url=url, headers={"authorization": "Bearer " + ADMIN}) as c:
            for body in bodies:
                outcome = _check(body, await c.post(ROUTE, json=body))
                seen[outcome] = seen.get(outcome, 0) + 1
    # The draws reach both ends: answers, and refusals.
    assert seen.get("ok", 0) >= 80 and seen.get("refused", 0) >= 80, seen
