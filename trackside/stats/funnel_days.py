"""A funnel over encoded days (`trackside.storage.funnel_days`), matched with NumPy: the same answers
as the funnel's SQL (`trackside.stats.v2.funnel`), faster over many closed days.

Which days: those of the range rolled and clean (as journeys' daily rows) that have an encoding; the
other days (today, days not rolled or dirty, days rolled before migration 0021) are asked of SQL, one
statement per run of consecutive days, answering each visitor's first visit reaching each step
(`firsts_select`). Not used at all (the funnel's one statement answers) for a date-time range, a
filter on a dimension the encoding does not hold, or when no day of the range is encoded.

Exactness: each step's and each filter's test is the SQL's own, run by the database over the
numbered strings (`funnel_strings`), so LIKE, case folding and regular expressions mean what they
mean in the funnel's statement on that backend. The times are the facts' microseconds; the seconds
between steps are computed as the statement computes them (PostgreSQL: the exact interval in
seconds; SQLite: `julianday`, which rounds each time to the millisecond). Then, as the statement
does: per visitor (a signed-in user over the range, by the id of their `u:...` string; an anonymous
visitor per day) the visit that reached each step first (earliest time, then fewest seconds), the
step's visitors, and the median (the middle value, or the mean of the two middle values)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.funnels import Step
from trackside.goals import EVENT, PAGE, Goal
from trackside.stats.v2.schema import Filter, Leaf, Node
from trackside.stats.v2.sql import EVENT_LEVEL, Builder
from trackside.storage.daily import rolled_days
from trackside.storage.funnel_days import DIMS, ROW_PARTS, VISIT_PARTS, EncodedDay, encoded_days, load_days
from trackside.storage.tables import FUNNEL_STRINGS

EPOCH = date(1970, 1, 1)
_SHIFT = 37  # a row's microseconds within its day are below 2**37
_LOW = (1 << _SHIFT) - 1
_FRESH = 1 << 61  # keys of visitors seen only on days asked of SQL

Found = dict[int, tuple[int, float | None]]


def _dim_of(leaf: Leaf) -> str | None:
    if not leaf.dimension.startswith("visit:"):
        return None
    name = leaf.dimension[6:]
    if name == "country_name":
        return "country"
    return name if name in DIMS else None


def supported(filters: tuple[Filter, ...]) -> bool:
    """Every leaf a visit dimension the encoding holds, or an event filter."""

    def ok(f: Filter) -> bool:
        if isinstance(f, Leaf):
            return f.dimension in EVENT_LEVEL or _dim_of(f) is not None
        return all(ok(c) for c in f.children)

    return all(ok(f) for f in filters)


class _Strings:
    """Tests run by the database over the numbered strings: boolean arrays indexed by string id
    (index 0: NULL)."""

    def __init__(self, conn: AsyncConnection, top: int) -> None:
        self.conn = conn
        self.top = top
        fs = FUNNEL_STRINGS.c
        named = [fs.text.label(d) for d in DIMS]
        nulls = [sa.cast(sa.null(), sa.String).label(d) for d in DIMS]
        self.table = sa.union_all(
            sa.select(fs.id.label("id"), fs.text.label("x"), *named),
            sa.select(sa.literal(0, sa.Integer).label("id"), sa.cast(sa.null(), sa.String).label("x"), *nulls),
        ).subquery("strs")

    async def where(self, condition: Any) -> np.ndarray:
        out = np.zeros(self.top + 1, dtype=bool)
        # One row back: the ids as an array (PostgreSQL) or a comma-separated list (SQLite).
        if self.conn.dialect.name == "postgresql":
            found = (await self.conn.execute(sa.select(sa.func.array_agg(self.table.c.id)).where(condition))).scalar()
            ids = np.array(found or [], dtype=np.int64)
        else:
            found = (
                await self.conn.execute(sa.select(sa.func.group_concat(self.table.c.id)).where(condition))
            ).scalar()
            ids = np.array(str(found).split(",") if found is not None else [], dtype=np.int64)
        out[ids] = True
        return out

    def tokens(self, pages: np.ndarray | None = None, events: np.ndarray | None = None) -> np.ndarray:
        """A token test (`2 * id`, plus 1 for a site event's name) from a test of paths and one of names."""
        out = np.zeros(2 * (self.top + 1), dtype=bool)
        if pages is not None:
            out[0::2] = pages
        if events is not None:
            out[1::2] = events
        return out

    async def goal_tokens(self, goal: Goal) -> np.ndarray:
        x = self.table.c.x
        if goal.kind == EVENT:
            return self.tokens(events=await self.where(x == goal.match))
        return self.tokens(pages=await self.where(goal.sql_condition(x)))


async def _step_tokens(strings: _Strings, steps: tuple[Step, ...], goals: list[Goal | None]) -> list[np.ndarray]:
    out = []
    for step, goal in zip(steps, goals, strict=True):
        out.append(await strings.goal_tokens(goal if goal is not None else Goal("step", PAGE, step.match)))
    return out


class _LeafTest:
    def __init__(self, leaf: Leaf, kind: str, ok: np.ndarray, dim: int = -1) -> None:
        self.leaf = leaf
        self.kind = kind  # "visit" (ok by string id of dim), "token" or "label" (ok of a row: any in the visit)
        self.ok = ok
        self.dim = dim


async def _leaf_tests(strings: _Strings, b: Builder, filters: tuple[Filter, ...]) -> dict[int, _LeafTest]:
    tests: dict[int, _LeafTest] = {}

    async def visit(f: Filter) -> None:
        if isinstance(f, Node):
            for c in f.children:
                await visit(c)
            return
        leaf = f
        x = strings.table.c.x
        if leaf.dimension == "event:page":
            ok = await strings.where(b.leaf_condition(x, leaf))
            tests[id(leaf)] = _LeafTest(leaf, "token", strings.tokens(pages=ok, events=np.full(strings.top + 1, ok[0])))
        elif leaf.dimension == "event:props:label":
            tests[id(leaf)] = _LeafTest(leaf, "label", await strings.where(b.leaf_condition(x, leaf)))
        elif leaf.dimension == "event:goal":
            ok = strings.tokens()
            for goal in b._goals_named(leaf):
                ok |= await strings.goal_tokens(goal)
            tests[id(leaf)] = _LeafTest(leaf, "token", ok)
        else:
            dim = _dim_of(leaf)
            assert dim is not None
            condition = b.visit_condition(strings.table, "visitors", (leaf,))
            assert condition is not None
            tests[id(leaf)] = _LeafTest(leaf, "visit", await strings.where(condition), DIMS.index(dim))

    for f in filters:
        await visit(f)
    return tests


def _parts_for(tests: dict[int, _LeafTest]) -> set[str]:
    parts = {*VISIT_PARTS, *ROW_PARTS}
    for t in tests.values():
        if t.kind == "visit":
            parts.add(f"d{t.dim}")
        elif t.kind == "label":
            parts.add("l")
    return parts


def _keep(ed: EncodedDay, vis: np.ndarray, filters: tuple[Filter, ...], tests: dict[int, _LeafTest]) -> np.ndarray:
    def mask(f: Filter) -> np.ndarray:
        if isinstance(f, Leaf):
            t = tests[id(f)]
            if t.kind == "visit":
                return t.ok[ed.parts[f"d{t.dim}"]]
            row_ok = t.ok[ed.parts["k"]] if t.kind == "token" else t.ok[ed.parts["l"]]
            holding = np.bincount(vis[row_ok], minlength=ed.visits) > 0
            return ~holding if f.negative else holding
        parts = [mask(c) for c in f.children]
        if f.op == "not":
            return ~parts[0]
        out = parts[0].copy()
        for p in parts[1:]:
            out = out & p if f.op == "and" else out | p
        return out

    keep = np.ones(ed.visits, dtype=bool)
    for f in filters:
        keep &= mask(f)
    return keep


def _sqlite_jd_ms(us: np.ndarray) -> np.ndarray:
    """SQLite's `julianday` of a time of day, in milliseconds from midnight: the seconds parsed as a
    double (whole seconds plus the fraction) and rounded to the millisecond (date.c, computeJD)."""
    sec = us // 1_000_000
    s = (sec % 60).astype(np.float64) + (us % 1_000_000) / 1e6
    return (sec // 3600) * 3_600_000 + ((sec % 3600) // 60) * 60_000 + np.floor(s * 1000.0 + 0.5).astype(np.int64)


def _seconds(day: date, later: np.ndarray, earlier: np.ndarray, sqlite: bool) -> np.ndarray:
    if not sqlite:
        return (later - earlier) / 1e6  # the interval's exact seconds, as a double (PostgreSQL's EXTRACT)
    base = (day.toordinal() + 1_721_424) * 86_400_000 + 43_200_000  # julianday of midnight, in ms
    return ((base + _sqlite_jd_ms(later)) / 86_400_000.0 - (base + _sqlite_jd_ms(earlier)) / 86_400_000.0) * 86400.0


class Reached:
    """Per step, the visitors who reached it so far: anonymous ones counted day by day (their ids are
    the day's), users (and visitors of the days asked of SQL) by key with their first visit's time."""

    def __init__(self, steps: int) -> None:
        self.anonymous = [0] * steps
        self.anonymous_secs: list[list[np.ndarray]] = [[] for _ in range(steps)]
        self.keyed: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(steps)]

    def add_day(self, k: int, who: np.ndarray, at: np.ndarray, secs: np.ndarray | None, anonymous: int) -> None:
        """Visits of one day that reached step k: their who (`w`), times, seconds from the previous step."""
        anon = who < 0
        users = ~anon
        if users.any():
            self.keyed[k].append(
                (who[users].astype(np.int64), at[users], secs[users] if secs is not None else at[users] * 0.0)
            )
        if not anon.any():
            return
        local = -who[anon].astype(np.int64) - 1
        at_a = at[anon]
        best = np.full(anonymous, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(best, local, at_a)
        reached = best < np.iinfo(np.int64).max
        self.anonymous[k] += int(reached.sum())
        if secs is None:
            return
        # The first visit reaching the step (the earliest time; then the fewest seconds).
        first = at_a == best[local]
        least = np.full(anonymous, np.inf)
        np.minimum.at(least, local[first], secs[anon][first])
        self.anonymous_secs[k].append(least[reached])

    def summary(self) -> Found:
        found: Found = {}
        for k in range(len(self.anonymous)):
            n = self.anonymous[k]
            chunks = [self.anonymous_secs[k]] if k else []
            keyed = self.keyed[k]
            if keyed:
                keys = np.concatenate([c[0] for c in keyed])
                at = np.concatenate([c[1] for c in keyed])
                secs = np.concatenate([c[2] for c in keyed])
                order = np.lexsort((secs, at, keys))
                sk = keys[order]
                chosen = order[np.concatenate(([True], sk[1:] != sk[:-1]))]
                n += len(chosen)
                if k:
                    chunks.append([secs[chosen]])
            if not n:
                continue
            median: float | None = None
            if k:
                s = np.concatenate([a for part in chunks for a in part])
                mid = [n // 2] if n % 2 else [n // 2 - 1, n // 2]
                part = np.partition(s, mid)
                median = float(part[n // 2]) if n % 2 else float((part[n // 2 - 1] + part[n // 2]) / 2)
            found[k] = (n, median)
        return found


def match_day(
    ed: EncodedDay, bits: np.ndarray, steps: int, keep: np.ndarray | None, sqlite: bool, out: Reached
) -> None:
    """The visits of one day reaching each step, added to `out`. `bits`: per token, bit k set when
    it matches step k."""
    if not ed.rows:
        return
    # Each row's key: its visit, then its microseconds since the visit's first row (sorted, as the rows).
    key = np.repeat(np.arange(ed.visits, dtype=np.int64) << _SHIFT, ed.parts["c"])
    key |= ed.parts["t"]
    hits = bits.take(ed.parts["k"])
    rows = np.flatnonzero((hits & 1) != 0)  # on booleans: several times faster than on bytes
    if keep is not None and len(rows):
        rows = rows[keep[key[rows] >> _SHIFT]]
    if not len(rows):
        return
    kr = key[rows] >> _SHIFT
    firsts = key[rows[np.concatenate(([True], kr[1:] != kr[:-1]))]]
    v = firsts >> _SHIFT
    o = firsts & _LOW
    who = ed.parts["w"]
    start = ed.parts["s"]
    base = (ed.day - EPOCH).days * 86_400 * 1_000_000
    out.add_day(0, who[v], base + start[v] + o, None, ed.anonymous)
    for k in range(1, steps):
        ck = key[np.flatnonzero((hits & (1 << k)) != 0)]
        if not len(ck):
            return
        # The first matching row of the same visit strictly after the previous step's.
        pos = np.searchsorted(ck, (v << _SHIFT) | o, side="right")
        inside = pos < len(ck)
        found = ck[np.minimum(pos, len(ck) - 1)]
        reached = inside & ((found >> _SHIFT) == v)
        if not reached.any():
            return
        later = found[reached] & _LOW
        earlier = o[reached]
        v, o = v[reached], later
        if sqlite:
            secs = _seconds(ed.day, start[v] + later, start[v] + earlier, True)
        else:
            secs = (later - earlier) / 1e6  # the interval's exact seconds, as a double (PostgreSQL's EXTRACT)
        out.add_day(k, who[v], base + start[v] + later, secs, ed.anonymous)


def _runs(days: list[date]) -> list[tuple[date, date]]:
    runs: list[tuple[date, date]] = []
    for d in days:
        if runs and runs[-1][1] + timedelta(days=1) == d:
            runs[-1] = (runs[-1][0], d)
        else:
            runs.append((d, d))
    return runs


def _micros(at: Any) -> int:
    moment = at if isinstance(at, datetime) else datetime.fromisoformat(str(at))
    td = moment.replace(tzinfo=None) - datetime(1970, 1, 1)
    return (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds


async def _sql_days(
    conn: AsyncConnection,
    b: Builder,
    steps: tuple[Step, ...],
    goals: list[Goal | None],
    days: list[date],
    out: Reached,
) -> None:
    from trackside.stats.v2.funnel import firsts_select

    rows: list[tuple[int, str, bool, int, float]] = []
    for first, last in _runs(days):
        run = Builder(replace(b.q, first=first, last=last), first, None, list(b.goals.values()), conn.dialect.name)
        for r in await conn.execute(firsts_select(run, steps, goals)):
            rows.append(
                (int(r.step), str(r.who_u), bool(r.is_user), _micros(r.at), np.nan if r.secs is None else r.secs)
            )
    if not rows:
        return
    users = sorted({who for _, who, is_user, _, _ in rows if is_user})
    fs = FUNNEL_STRINGS.c
    known: dict[str, int] = {}
    for i in range(0, len(users), 5000):
        chunk = users[i : i + 5000]
        found = await conn.execute(sa.select(fs.id, fs.text).where(fs.text.in_(chunk)))
        known.update({text: int(sid) for sid, text in found})
    fresh: dict[str, int] = {}
    by_step: dict[int, list[tuple[int, int, float]]] = {}
    for step, who, is_user, at, secs in rows:
        key = known.get(who) if is_user else None
        if key is None:
            key = fresh.setdefault(who, _FRESH + len(fresh))
        by_step.setdefault(step, []).append((key, at, float(secs)))
    for step, reached in by_step.items():
        keys = np.array([k for k, _, _ in reached], dtype=np.int64)
        at_ = np.array([a for _, a, _ in reached], dtype=np.int64)
        out.keyed[step].append((keys, at_, np.array([s for _, _, s in reached], dtype=np.float64)))


async def encoded_funnel(
    conn: AsyncConnection,
    b: Builder,
    steps: tuple[Step, ...],
    goals: list[Goal | None],
    oldest: date | None,
) -> Found | None:
    """The funnel's (visitors, median) per step from the encoded days and SQL for the others; None
    when the encodings cannot answer it (module doc): the caller asks its one statement."""
    q = b.q
    if q.start is not None or not supported(q.filters):
        return None
    first, last = b.first, q.last
    if oldest is not None:
        first = max(first, oldest)
    if first > last:
        return None
    usable = sorted((await encoded_days(conn, first, last)) & (await rolled_days(conn, first, last)))
    if not usable:
        return None
    top = int((await conn.execute(sa.select(sa.func.coalesce(sa.func.max(FUNNEL_STRINGS.c.id), 0)))).scalar_one())
    strings = _Strings(conn, top)
    step_tokens = await _step_tokens(strings, steps, goals)
    tests = await _leaf_tests(strings, b, q.filters)
    sqlite = conn.dialect.name == "sqlite"
    bits = np.zeros(len(step_tokens[0]), dtype=np.uint8)
    for k, tokens in enumerate(step_tokens):
        bits |= tokens.astype(np.uint8) << k
    out = Reached(len(steps))
    for ed in await load_days(conn, usable, _parts_for(tests)):
        keep = None
        if q.filters and ed.rows:
            keep = _keep(ed, ed.visit_of_row(), q.filters, tests)
        match_day(ed, bits, len(steps), keep, sqlite, out)
    encoded = set(usable)
    rest = [b.first + timedelta(days=i) for i in range((last - b.first).days + 1)]
    rest = [d for d in rest if d not in encoded]
    if rest:
        await _sql_days(conn, b, steps, goals, rest, out)
    return out.summary()
