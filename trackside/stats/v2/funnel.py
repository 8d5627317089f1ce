"""A funnel asked at `POST /_trackside/api/v2/funnel`: ordered steps within one visit, each a page
pattern or a goal, over a v2 date range and v2 filters (parsed by `schema.parse`, so both mean
exactly what they mean in a v2 query).

What is counted: a visit reaches step 1 at its first event matching step 1, and step k at its first
event matching step k strictly after the time it reached step k-1 (so the steps are in order, and a
step repeated needs a later event). A visitor reaches a step when one of their visits does; visitors
are counted as v2's are (a signed-in user once over the range, an anonymous visitor once per UTC
day), the visit's `who` deciding (a visit with a signed-in page view or event is its user's). The
time to a step is, for each visitor, that of the first visit in which they reached it (seconds from
the previous step's event to the step's); the median over the step's visitors is answered.
Filters keep visits: visit dimensions by the visit's entry values, an event filter the visits
holding such an event (as v2's visit metrics).

In SQL on both backends, one statement: step 1 is the first matching page view or event of each
visit of the range (grouped by visit, joined to the visit for its who and the filters); each next
step joins the previous step's visits with the range's rows matching it on the visit id, keeping the
earliest after the previous step's time (each step a materialized CTE, read once per step); per
visitor the first visit reaching each step is picked by a window; the medians are the middle rows of
a window ordered by seconds. Each step reads only the rows it matches (a narrow scan of the page
views or site events of the range): Speed in the README has what it costs. Closed days that their
rollup encoded are matched with NumPy instead (`trackside.stats.funnel_days`, the same answers)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackside.funnels import GOAL_STEP, FunnelError, Step, parse_steps
from trackside.goals import EVENT, PAGE, Goal
from trackside.stats.funnel_days import encoded_funnel
from trackside.stats.v2.engine import Limits, _deadline
from trackside.stats.v2.schema import Query, V2Error, echo_range, parse
from trackside.stats.v2.sql import Builder, Expr, oldest_fact_day
from trackside.storage.engine import snapshot
from trackside.storage.tables import FACT_PAGE_VIEWS, FACT_SITE_EVENTS, FACT_VISITS

KEYS = ("site_id", "date_range", "steps", "filters")
# PostgreSQL, for this statement's transaction only. The per-step results are CTEs the planner cannot
# estimate: it picked nested loops over hundreds of thousands of visits (minutes), and parallel plans
# in which every worker rebuilt the same hash tables (measured 2.4x slower than one process). Hashes and
# sorts in memory; no JIT (compiling a statement over 30 day partitions took 2.6 s, longer than parts
# of the run). Measured in bench/funnel_bench.py.
PG_SETTINGS = ("enable_nestloop = off", "max_parallel_workers_per_gather = 0", "jit = off", "work_mem = '128MB'")

MEANING = {
    "visitors": (
        "unique visitors of the period who reached the step in order within one visit: a visit reaches "
        "step 1 at its first matching page view or event, and each next step at its first matching one "
        "after the previous step's; a signed-in user counts once over the range, an anonymous visitor "
        "once per UTC day (the anonymous id is salted anew daily)"
    ),
    "visit": (
        "one visitor's page views and site events with no gap over 30 minutes, within one UTC day: "
        "steps in two visits (a longer pause, or midnight UTC between them) do not make a funnel"
    ),
    "dropoff": "visitors of the previous step who did not reach this one (0 for the first step)",
    "conversion_rate": "visitors of this step as a percentage of the first step's (2 decimals)",
    "conversion_rate_step": "visitors of this step as a percentage of the previous step's (2 decimals)",
    "median_seconds_from_previous": (
        "median over the step's visitors of the seconds from the previous step to this one, in the first "
        "visit in which each reached this step (null for the first step, or when nobody reached it)"
    ),
    "filters": (
        "as in a v2 query; they keep visits: visit dimensions by the visit's entry values, an event "
        "filter the visits holding such an event"
    ),
    "steps": 'a page step matches page views whose path matches the pattern (as goals\' patterns: "*" one '
    'segment\'s run, "**" any); a goal step matches its goal (a site event by name, or a page pattern)',
}


@dataclass(frozen=True, slots=True)
class FunnelQuery:
    q: Query  # the date range and filters, as a v2 query of visitors
    steps: tuple[Step, ...]
    raw_steps: list[Any]


def parse_funnel(body: Any, today: date) -> FunnelQuery:
    if not isinstance(body, dict):
        raise V2Error("the funnel is a JSON object {date_range, steps, filters}")
    for key in body:
        if key not in KEYS:
            raise V2Error(f"parameter '{key}' is not supported ({', '.join(KEYS)})")
    if "steps" not in body:
        raise V2Error('steps is required: 2 to 8 steps, each {"page": PATTERN} or {"goal": NAME}')
    try:
        steps = parse_steps(body["steps"])
    except FunnelError as exc:
        raise V2Error(str(exc)) from None
    v2 = {"metrics": ["visitors"], "filters": body.get("filters", [])}
    if "date_range" in body:
        v2["date_range"] = body["date_range"]
    if "site_id" in body:
        v2["site_id"] = body["site_id"]
    return FunnelQuery(parse(v2, today), steps, body["steps"])


def resolve_goals(steps: tuple[Step, ...], goals: list[Goal]) -> list[Goal | None]:
    """Each goal step's goal (None for a page step); V2Error naming an unknown goal."""
    by_name = {g.name: g for g in goals}
    out: list[Goal | None] = []
    for i, step in enumerate(steps):
        if step.kind != GOAL_STEP:
            out.append(None)
            continue
        goal = by_name.get(step.match)
        if goal is None:
            known = ", ".join(sorted(by_name)[:20]) or "none is defined"
            raise V2Error(f"steps[{i}].goal: no goal named {step.match[:80]!r} (goals: {known})")
        out.append(goal)
    return out


def _seconds(later: Any, earlier: Any, postgres: bool) -> Expr:
    if postgres:
        return sa.extract("epoch", later - earlier)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0


def _step_rows(b: Builder, step: Step, goal: Goal | None) -> Any:
    """(visit_id, day, ts) of the range's page views or site events matching one step."""
    if goal is not None and goal.kind == EVENT:
        se = FACT_SITE_EVENTS.c
        return sa.select(se.visit_id, se.day, se.ts).where(
            se.kind == "event", se.name == goal.match, se.visit_id.is_not(None), *b._in_range(se.day, se.ts)
        )
    pv = FACT_PAGE_VIEWS.c
    pattern = goal.match if goal is not None else step.match
    return sa.select(pv.visit_id, pv.day, pv.ts).where(
        Goal("step", PAGE, pattern).sql_condition(pv.path), *b._in_range(pv.day, pv.ts)
    )


def _firsts(b: Builder, steps: tuple[Step, ...], goals: list[Goal | None], with_user: bool = False) -> Any:
    """Per step and visitor, the visits that reached the step, `r` 1 for the visitor's first."""
    # Step 1: each visit's first matching event, with the visit's who (the filters keep visits).
    rows = _step_rows(b, steps[0], goals[0]).subquery("s0")
    first = sa.select(rows.c.visit_id, rows.c.day, sa.func.min(rows.c.ts).label("t")).group_by(
        rows.c.visit_id, rows.c.day
    )
    first_q = first.cte("first").prefix_with("MATERIALIZED")  # aggregated once, not in every parallel worker
    visits = FACT_VISITS.alias("w")
    f0 = (
        sa.select(
            first_q.c.visit_id,
            first_q.c.day,
            visits.c.who,
            sa.cast(sa.null(), sa.DateTime).label("prev"),
            first_q.c.t,
        )
        .select_from(first_q.join(visits, sa.and_(visits.c.id == first_q.c.visit_id, visits.c.day == first_q.c.day)))
        .where(visits.c.day >= b.first, visits.c.day <= b.q.last)
    )
    if b.q.filters:
        keep = b.visit_condition(visits, "visitors", b.q.filters)
        if keep is not None:
            f0 = f0.where(keep)
    reached = [f0.cte("f0").prefix_with("MATERIALIZED")]
    # Each next step: the earliest matching event of the same visit after the previous step's.
    for k in range(1, len(steps)):
        p = reached[-1]
        s = _step_rows(b, steps[k], goals[k]).subquery(f"s{k}")
        reached.append(
            sa.select(p.c.visit_id, p.c.day, p.c.who, p.c.t.label("prev"), sa.func.min(s.c.ts).label("t"))
            .select_from(p.join(s, sa.and_(s.c.visit_id == p.c.visit_id, s.c.ts > p.c.t)))
            .group_by(p.c.visit_id, p.c.day, p.c.who, p.c.t)
            .cte(f"f{k}")
            .prefix_with("MATERIALIZED")
        )
    parts = []
    for k, f in enumerate(reached):
        who = sa.case((f.c.who.like("u:%"), f.c.who), else_=f.c.who + "|" + sa.cast(f.c.day, sa.String))
        secs = sa.cast(sa.null(), sa.Float) if k == 0 else sa.cast(_seconds(f.c.t, f.c.prev, b.postgres), sa.Float)
        user = [f.c.who.like("u:%").label("is_user")] if with_user else []
        parts.append(
            sa.select(
                sa.literal(k, sa.Integer).label("step"),
                who.label("who_u"),
                f.c.t.label("at"),
                secs.label("secs"),
                *user,
            )
        )
    steps_u = sa.union_all(*parts).subquery("steps_u")
    more = [steps_u.c.who_u, steps_u.c.at, steps_u.c.is_user] if with_user else []
    return sa.select(
        steps_u.c.step,
        steps_u.c.secs,
        *more,
        sa.func.row_number()
        .over(partition_by=[steps_u.c.step, steps_u.c.who_u], order_by=[steps_u.c.at, steps_u.c.secs])
        .label("r"),
    ).subquery("firsts")


def firsts_select(b: Builder, steps: tuple[Step, ...], goals: list[Goal | None]) -> sa.Select[Any]:
    """(step, who_u, is_user, at, secs): each visitor's first visit reaching each step, for
    `trackside.stats.funnel_days` (the days it asks of SQL)."""
    firsts = _firsts(b, steps, goals, with_user=True)
    c = firsts.c
    return sa.select(c.step, c.who_u, c.is_user, c.at, c.secs).where(c.r == 1)


def funnel_select(b: Builder, steps: tuple[Step, ...], goals: list[Goal | None]) -> sa.Select[Any]:
    """(step, visitors, median seconds) per step reached by anyone: one statement (module doc)."""
    firsts = _firsts(b, steps, goals)
    ranked = (
        sa.select(
            firsts.c.step,
            firsts.c.secs,
            sa.func.row_number().over(partition_by=firsts.c.step, order_by=firsts.c.secs).label("rn"),
            sa.func.count().over(partition_by=firsts.c.step).label("n"),
        )
        .where(firsts.c.r == 1)
        .subquery("ranked")
    )
    # The median: the middle row (n odd) or the mean of the two middle rows (n even).
    middle = sa.and_(2 * ranked.c.rn >= ranked.c.n, 2 * ranked.c.rn <= ranked.c.n + 2)
    return (
        sa.select(
            ranked.c.step,
            sa.func.max(ranked.c.n).label("visitors"),
            sa.func.avg(sa.case((middle, ranked.c.secs))).label("median"),
        )
        .group_by(ranked.c.step)
        .order_by(ranked.c.step)
    )


def _rate(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def _iso(moment: datetime) -> str:
    return moment.replace(microsecond=0, tzinfo=UTC).isoformat()


async def answer_funnel(
    engine: AsyncEngine,
    fq: FunnelQuery,
    limits: Limits,
    goals: Any,  # Callable[[AsyncConnection], Awaitable[list[Goal]]]
    now: datetime | None = None,
) -> dict[str, Any]:
    now = now or datetime.now(UTC).replace(tzinfo=None)
    q = fq.q
    async with snapshot(engine) as conn:
        conn_: AsyncConnection = conn
        async with _deadline(conn_, limits.timeout_seconds):
            if conn_.dialect.name == "postgresql":
                for setting in PG_SETTINGS:
                    await conn_.exec_driver_sql(f"SET LOCAL {setting}")
            goal_list: list[Goal] = await goals(conn_)
            step_goals = resolve_goals(fq.steps, goal_list)
            oldest = (await conn_.execute(oldest_fact_day())).scalar()
            oldest_day = (
                (oldest if isinstance(oldest, date) else date.fromisoformat(str(oldest)[:10])) if oldest else None
            )
            first = q.first if q.first is not None else (oldest_day or q.last)
            q = replace(q, first=first)
            builder = Builder(q, first, None, goal_list, conn_.dialect.name)
            statement = funnel_select(builder, fq.steps, step_goals)  # built first: it refuses bad filters
            # Closed days encoded by their rollup are matched with NumPy (trackside.stats.funnel_days).
            encoded = await encoded_funnel(conn_, builder, fq.steps, step_goals, oldest_day)
            found = (
                encoded
                if encoded is not None
                else {int(row.step): (int(row.visitors), row.median) for row in await conn_.execute(statement)}
            )
    out = []
    top = found.get(0, (0, None))[0]
    previous = top
    for k, step in enumerate(fq.steps):
        visitors, median = found.get(k, (0, None))
        out.append(
            {
                "label": step.label,
                "step": step.as_dict(),
                "visitors": visitors,
                "dropoff": previous - visitors if k else 0,
                "conversion_rate": _rate(visitors, top),
                "conversion_rate_step": _rate(visitors, previous) if k else _rate(visitors, top),
                "median_seconds_from_previous": None if k == 0 or median is None else round(float(median), 1),
            }
        )
        previous = visitors
    meta: dict[str, Any] = {
        **MEANING,
        "provisional_since": _iso(now - timedelta(minutes=limits.window_minutes)),
        "computed_at": _iso(now),
    }
    facts_begin = oldest_day or now.date() - timedelta(days=limits.retention_days - 1)
    if first < facts_begin:
        meta["facts_begin"] = facts_begin.isoformat()
        meta["facts_note"] = (
            f"figures come from facts, which begin at {facts_begin.isoformat()} "
            f"(kept {limits.retention_days} days): days before are not counted here"
        )
    return {
        "steps": out,
        "meta": meta,
        "query": {
            "site_id": q.site_id,
            "date_range": echo_range(q, first),
            "steps": [s.as_dict() for s in fq.steps],
            "filters": q.raw_filters,
        },
    }
