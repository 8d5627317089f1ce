"""The rollup's groupings in SQL (`trackside.storage.visit_days`, `trackside.storage.label_days`) against
the same figures counted here in Python from the day's fact rows, on both backends: a day of random visits
in which visitors come back (several visits of one `who`, with other values), sign in halfway (a visit
of two `who`s), share a device between accounts and send site events, so that every way a visitor is
counted once per value is taken."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import UTC, datetime

import sqlalchemy as sa

from tests.sidecar.test_stats import ev, midnight
from trackside.batch import Batch
from trackside.derive import derivation_of
from trackside.figures import derive_pending
from trackside.rollup import rollup_day
from trackside.stats.v2.labels import DEVICES, DIRECT, NOT_SET
from trackside.storage.engine import create_engine
from trackside.storage.label_days import FIGURES, LABEL_DAYS, LABEL_USERS, MARKER
from trackside.storage.migrate import migrate
from trackside.storage.tables import FACT_PAGE_VIEWS, FACT_SITE_EVENTS, FACT_VISITS
from trackside.storage.visit_days import ROW_DIMENSIONS, TOTAL, VISIT_DIM_DAYS, VISIT_DIM_USERS
from trackside.storage.writes import write_batch

H = 3600
PATHS = ("/", "/a", "/b", "/p/a1", "/p/a2", "/b/post-1", "/about")
PLACES = (
    dict(country="GB", referrer="reddit.com", device="desktop", browser="Firefox", os="Linux"),
    dict(country="NL", device="mobile", browser="Safari", os="iOS", utm_source="newsletter", utm_medium="email"),
    dict(country="DE", referrer="news.ycombinator.com", device="tablet", browser="Chrome", os="Android"),
    dict(device="desktop", browser="Chrome", os="Windows"),
)


def events(seed: int = 12) -> list:
    """A day (yesterday) of 60 visitors, each one device and 1-3 visits hours apart, some signing in."""
    rng = random.Random(seed)
    day = midnight(1)
    out = []
    for i in range(60):
        visitor, place = f"v{i}", dict(rng.choice(PLACES))
        users = [None] if rng.random() < 0.5 else [f"u{rng.randrange(8)}", f"u{rng.randrange(8, 12)}"]
        for visit in range(rng.choice((1, 1, 2, 3))):
            at = day + (1 + 6 * visit) * H + rng.randrange(3 * H)
            place = dict(rng.choice(PLACES)) if rng.random() < 0.3 else place  # came back from elsewhere
            for n in range(rng.randrange(1, 5)):
                # Anonymous first, then (sometimes) signed in, as one account or another of the device.
                user = None if n == 0 and rng.random() < 0.5 else rng.choice(users)
                out.append(ev(at + 60 * n, visitor, path=rng.choice(PATHS), user_id=user, **place))
            if rng.random() < 0.3:
                out.append(
                    ev(at + 300, visitor, path="/api/auth/register", kind="api_call", nav="api", method="POST",
                       event_name="signup", user_id=rng.choice(users), **place)
                )  # fmt: skip
    return out


def visit_value(visit, dim: str):
    name = dim[6:]
    if name in ("source", "referrer"):
        return visit[name] or DIRECT
    if name == "device":
        return DEVICES.get(visit["device"], visit["device"])
    if name in ("browser", "os"):
        return visit[name]
    return NOT_SET if visit[name] is None else visit[name]


async def expected(conn, day):
    """Visits' and labels' rows as their modules' docs define them, counted from the fact rows."""
    visits = [r._mapping for r in await conn.execute(sa.select(FACT_VISITS).where(FACT_VISITS.c.day == day))]
    pages = [r._mapping for r in await conn.execute(sa.select(FACT_PAGE_VIEWS).where(FACT_PAGE_VIEWS.c.day == day))]
    site = [
        r._mapping
        for r in await conn.execute(
            sa.select(FACT_SITE_EVENTS).where(FACT_SITE_EVENTS.c.day == day, FACT_SITE_EVENTS.c.kind == "event")
        )
    ]
    # Visits: each visit's figures under its `who`, and every other `who` of a signed-in visit's rows.
    of_visit = {(v["visitor"], v["id"]): v for v in visits}
    rows = [(v, v["who"], (1, int(bool(v["bounce"])), v["duration_s"], v["page_views"], v["page_views"] + v["events"]))
            for v in visits]  # fmt: skip
    for r in (*pages, *site):
        v = of_visit.get((r["visitor"], r["visit_id"]))
        if v is not None and v["user_id"] is not None and r["who"] != v["who"]:
            rows.append((v, r["who"], (0, 0, 0, 0, 0)))
    sums: dict = defaultdict(lambda: [0, 0, 0, 0, 0])
    whos: dict = defaultdict(set)
    for v, who, figures in rows:
        for dim in ROW_DIMENSIONS:
            key = (dim, TOTAL if dim == TOTAL else visit_value(v, dim))
            sums[key] = [a + (b or 0) for a, b in zip(sums[key], figures, strict=True)]
            whos[key].add(who)
    visit_rows = {k: (*s, sum(1 for w in whos[k] if not w.startswith("u:"))) for k, s in sums.items()}
    visit_rows.setdefault((TOTAL, TOTAL), (0,) * 6)
    visit_users = {(*k, w) for k, ws in whos.items() for w in ws if w.startswith("u:")}
    # Labels: page views and site events by label.
    per_label: dict = defaultdict(lambda: {"pv": 0, "n": 0, "visits": set(), "top": [], "scroll": [], "who": set()})
    for r, is_page in [*((p, 1) for p in pages), *((s, 0) for s in site)]:
        f = per_label[r["label"]]
        f["pv"] += is_page
        f["n"] += 1
        if r["visit_id"] is not None:
            f["visits"].add(r["visit_id"])
        if is_page and r["time_on_page_ms"] is not None:
            f["top"].append(r["time_on_page_ms"])
        if is_page and r["scroll_depth"] is not None:
            f["scroll"].append(r["scroll_depth"])
        f["who"].add(r["who"])
    label_rows = {
        label: (f["pv"], f["n"], len(f["visits"]), sum(f["top"]), len(f["top"]), sum(f["scroll"]), len(f["scroll"]),
                sum(1 for w in f["who"] if not w.startswith("u:")))
        for label, f in per_label.items()
    }  # fmt: skip
    label_rows[MARKER] = (0,) * len(FIGURES)
    label_users = {(label, w) for label, f in per_label.items() for w in f["who"] if w.startswith("u:")}
    kinds = {
        "other_whos": len(rows) - len(visits),
        "anonymous_back": sum(1 for n in Counter(v["who"] for v in visits if v["user_id"] is None).values() if n > 1),
        "signed_in": len(visit_users),
    }
    return visit_rows, visit_users, label_rows, label_users, kinds


async def test_visits_and_labels_rows_are_the_facts_counted(make_settings, database_url):
    await migrate(database_url)
    settings = make_settings(database_url=database_url, goals=("signup",))
    engine = create_engine(database_url)
    derivation = derivation_of(settings)
    day = datetime.fromtimestamp(midnight(1), UTC).date()
    try:
        await write_batch(engine, Batch(events=events()), derivation)
        async with engine.connect() as conn:
            await derive_pending(conn, day, day, derivation)
        await rollup_day(engine, day, derivation.window_seconds, derivation=derivation)
        async with engine.connect() as conn:
            visit_rows, visit_users, label_rows, label_users, kinds = await expected(conn, day)
            d, u = VISIT_DIM_DAYS.c, VISIT_DIM_USERS.c
            got = {
                (r.dim, r.value): (r.visits, r.bounces, r.duration, r.page_views, r.events, r.anon_visitors)
                for r in await conn.execute(sa.select(VISIT_DIM_DAYS).where(d.day == day))
            }
            got_users = {tuple(r) for r in await conn.execute(sa.select(u.dim, u.value, u.who).where(u.day == day))}
            ld, lu = LABEL_DAYS.c, LABEL_USERS.c
            got_labels = {
                r.label: tuple(r._mapping[name] for name in FIGURES)
                for r in await conn.execute(sa.select(LABEL_DAYS).where(ld.day == day))
            }
            got_label_users = {tuple(r) for r in await conn.execute(sa.select(lu.label, lu.who).where(lu.day == day))}
    finally:
        await engine.dispose()
    # The day is what it should be: visitors back with other values, visits of two `who`s, signed-in users.
    assert visit_rows[(TOTAL, TOTAL)][0] > 60 and all(n > 0 for n in kinds.values()), kinds
    assert got == visit_rows
    assert got_users == visit_users
    assert got_labels == label_rows
    assert got_label_users == label_users
