"""The SQL of a v2 query: one grouped SELECT per source of facts, built with SQLAlchemy Core so the
same code speaks SQLite and PostgreSQL.

Sources:
- events: page views and site events (`kind` "event") of the range, each joined to its visit,
  whose entry values are every `visit:*` dimension (as Plausible's sessions): visitors, pageviews,
  events, and visits when broken down by an event dimension;
- visits: the visits of the range for visits, bounce rate, visit duration and views per visit; an
  event filter (a page, a label, a goal) keeps the visits containing such an event, and its
  negation those containing none;
- looks, impressions (the author's own left out, by `item_authors`), errors, API calls (per
  visitor-day) and bot hits (per day and label): Trackside's extensions.

A visitor is `who` (`u:<user>` or `v:<visitor>`): a signed-in user counts once over the range,
an anonymous visitor once per UTC day (the visitor id changes with the daily salt)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from trackside.goals import EVENT, Goal
from trackside.stats.v2.labels import DEVICES, DIRECT, NOT_SET, matching_codes
from trackside.stats.v2.schema import VISIT_DIMENSIONS, Filter, Leaf, Query, V2Error, leaves
from trackside.storage.label_days import LABEL_DAYS, LABEL_USERS, MARKER
from trackside.storage.tables import (
    BOT_HITS,
    FACT_IMPRESSIONS,
    FACT_LOOKS,
    FACT_PAGE_VIEWS,
    FACT_SITE_EVENTS,
    FACT_VISITOR_DAYS,
    FACT_VISITS,
    ITEM_AUTHORS,
)
from trackside.storage.visit_days import TOTAL, VISIT_DIM_DAYS, VISIT_DIM_USERS, row_dimension, visit_value

Expr = ColumnElement[Any]
# The raw figures each source's SELECT answers per group, after its dimension columns.
EVENT_FIGURES = (
    "visitors", "pageviews", "events", "event_visits", "time_on_page_sum", "time_on_page_count", "scroll_sum",
    "scroll_count",
)  # fmt: skip
VISIT_FIGURES = ("visits", "bounces", "duration", "visit_pageviews")
# The event figures a visit row holds (`Builder.visit_event_plan`).
VISIT_EVENT_FIGURES = frozenset(("visitors", "pageviews", "events", "event_visits"))
EVENT_LEVEL = ("event:page", "event:props:label", "event:goal")


@dataclass
class Plan:
    """A SELECT and how to read its rows: the query dimensions it groups by (in order, with how many
    columns each takes), and the figure names of the columns after them."""

    select: sa.Select[Any]
    dimensions: list[tuple[str, int]]
    figures: tuple[str, ...]


class Builder:
    def __init__(
        self,
        q: Query,
        first: date,
        grain: str | None,
        goals: list[Goal],
        dialect: str,
        row_days: tuple[date, ...] = (),
        label_days: tuple[date, ...] = (),
    ) -> None:
        self.q = q
        self.first = first
        self.grain = grain
        self.goals = {g.name: g for g in goals}
        self.postgres = dialect == "postgresql"
        # Rolled days of the range whose visits' daily rows are written (`trackside.storage.visit_days`):
        # `visit_event_plan` reads them there, when `rows_apply`.
        self.row_days = row_days
        # Rolled days of the range whose route labels' daily rows are written (`trackside.storage.label_days`):
        # `label_row_plan` reads them there, when `label_rows_apply`.
        self.label_days = label_days

    # Shared pieces.

    def _contains(self, col: Expr, value: str) -> Expr:
        found = sa.func.strpos(col, value) if self.postgres else sa.func.instr(col, value)
        return found > 0

    def leaf_condition(self, col: Expr, leaf: Leaf) -> Expr:
        """A leaf filter on a string column, as its positive operator (negation is the caller's)."""
        col = sa.func.coalesce(col, "")
        op = leaf.positive_op
        if op == "matches":
            return sa.or_(*(self._regexp(col, v, leaf.case_sensitive) for v in leaf.values))
        values = list(leaf.values)
        if not leaf.case_sensitive:
            col = sa.func.lower(col)
            values = [v.lower() for v in values]
        if op == "is":
            return col.in_(values)
        return sa.or_(*(self._contains(col, v) for v in values))

    def _regexp(self, col: Expr, pattern: str, case_sensitive: bool) -> Expr:
        if self.postgres:
            return col.regexp_match(pattern, flags=None if case_sensitive else "i")  # ~ or ~*
        # SQLite's REGEXP is Python's `re` (SQLAlchemy's dialect installs it); the flag goes inline,
        # since SQLAlchemy drops `flags` from a negated match on SQLite.
        return col.regexp_match(pattern if case_sensitive else "(?i)" + pattern)

    def _apply(self, leaf: Leaf, condition: Expr) -> Expr:
        return sa.not_(condition) if leaf.negative else condition

    def compile(self, filters: tuple[Filter, ...], leaf_of: Callable[[Leaf], Expr]) -> Expr | None:
        if not filters:
            return None
        return sa.and_(*(self._node(f, leaf_of) for f in filters))

    def _node(self, f: Filter, leaf_of: Callable[[Leaf], Expr]) -> Expr:
        if isinstance(f, Leaf):
            return leaf_of(f)
        parts = [self._node(child, leaf_of) for child in f.children]
        if f.op == "not":
            return sa.not_(parts[0])
        return sa.and_(*parts) if f.op == "and" else sa.or_(*parts)

    def _in_range(self, day: Expr, ts: Expr | None) -> list[Expr]:
        conds = [day >= self.first, day <= self.q.last]
        if ts is not None and self.q.start is not None and self.q.end is not None:
            conds += [ts >= self.q.start, ts <= self.q.end]
        return conds

    def _time(self, day: Expr, hour: Expr | None, metric: str) -> list[Expr]:
        grain = self.grain
        if grain == "hour":
            if hour is None:
                raise V2Error(f"metric '{metric}' is counted per day: it cannot be broken down by hour")
            return [day, hour]
        if grain == "day":
            return [day]
        if grain == "week":
            if self.postgres:
                return [sa.cast(sa.func.date_trunc("week", sa.cast(day, sa.DateTime)), sa.Date)]
            return [sa.func.date(day, "-6 days", "weekday 1")]
        if self.postgres:
            return [sa.cast(sa.func.date_trunc("month", sa.cast(day, sa.DateTime)), sa.Date)]
        return [sa.func.strftime("%Y-%m-01", day)]

    def _unique(self, who: Expr, day: Expr) -> Expr:
        # Signed-in users once over the range; anonymous visitors once per day.
        return sa.func.count(sa.distinct(sa.case((who.like("u:%"), who), else_=who + "|" + sa.cast(day, sa.String))))

    def _group(
        self,
        metric: str,
        columns: Callable[[str], Expr | None],
        day: Expr,
        hour: Expr | None,
        skip: tuple[str, ...] = (),
    ) -> tuple[list[Expr], list[tuple[str, int]]]:
        exprs: list[Expr] = []
        dims: list[tuple[str, int]] = []
        for d in self.q.dimensions:
            if d in skip:
                continue
            if d.startswith("time"):
                part = self._time(day, hour, metric)
            else:
                col = columns(d)
                if col is None:
                    raise V2Error(f"metric '{metric}' cannot be broken down by '{d}'")
                part = [col]
            exprs += part
            dims.append((d, len(part)))
        return exprs, dims

    def _leaf_on(self, metric: str, columns: Callable[[str], Expr | None]) -> Callable[[Leaf], Expr]:
        def leaf_of(leaf: Leaf) -> Expr:
            if leaf.dimension == "visit:country_name":
                col = columns("visit:country")
                if col is None:
                    raise V2Error(f"metric '{metric}' cannot be filtered by '{leaf.dimension}'")
                codes = matching_codes(leaf.positive_op, leaf.values, leaf.case_sensitive)
                return self._apply(leaf, col.in_(codes) if codes else sa.false())
            col = columns(leaf.dimension)
            if col is None:
                raise V2Error(f"metric '{metric}' cannot be filtered by '{leaf.dimension}'")
            return self._apply(leaf, self.leaf_condition(col, leaf))

        return leaf_of

    @staticmethod
    def _device(col: Expr) -> Expr:
        return sa.case(*((col == raw, spelled) for raw, spelled in DEVICES.items()), else_=col)

    def _visit_columns(self, v: Any) -> Callable[[str], Expr | None]:
        # The same values as the visits' daily rows keep (`trackside.storage.visit_days`).
        return functools.partial(visit_value, v)

    # Events: page views and site events, each with its visit.

    def events(self, name: str = "e", only: str | None = None) -> Any:
        """Page views and site events; `only` "pages" or "site": the one a goal's conversions are in."""
        pv, se = FACT_PAGE_VIEWS.c, FACT_SITE_EVENTS.c
        pages = sa.select(
            pv.day, pv.ts, pv.hour, pv.who, pv.visit_id, sa.literal(1).label("is_page"),
            sa.literal("pageview").label("name"), pv.path, pv.label, pv.time_on_page_ms, pv.scroll_depth,
        ).where(*self._in_range(pv.day, pv.ts))  # fmt: skip
        # A site event has no page: its path is the request's, most often an API route.
        events = sa.select(
            se.day, se.ts, se.hour, se.who, se.visit_id, sa.literal(0).label("is_page"), se.name,
            sa.cast(sa.null(), sa.String).label("path"), se.label,
            sa.cast(sa.null(), sa.BigInteger).label("time_on_page_ms"),
            sa.cast(sa.null(), sa.SmallInteger).label("scroll_depth"),
        ).where(se.kind == "event", *self._in_range(se.day, se.ts))  # fmt: skip
        if only is not None:
            return (pages if only == "pages" else events).subquery(name)
        return sa.union_all(pages, events).subquery(name)

    def goal_condition(self, e: Any, goal: Goal) -> Expr:
        if goal.kind == EVENT:
            return sa.and_(e.c.is_page == 0, e.c.name == goal.match)
        return sa.and_(e.c.is_page == 1, goal.sql_condition(e.c.path))

    def _goals_named(self, leaf: Leaf) -> list[Goal]:
        if leaf.op == "is":
            missing = [v for v in leaf.values if v not in self.goals]
            if missing:
                raise V2Error(f"goal '{missing[0]}' is not configured")
        return [g for name, g in self.goals.items() if _name_matches(name, leaf)]

    def _goal_leaf(self, e: Any, leaf: Leaf) -> Expr:
        goals = self._goals_named(leaf)
        return sa.or_(*(self.goal_condition(e, g) for g in goals)) if goals else sa.false()

    def _event_columns(self, e: Any, v: Any) -> Callable[[str], Expr | None]:
        visit = self._visit_columns(v)

        def columns(d: str) -> Expr | None:
            if d == "event:page":
                return e.c.path
            if d == "event:props:label":
                return e.c.label
            return visit(d)

        return columns

    def event_plan(
        self,
        metric: str,
        filters: tuple[Filter, ...],
        goal: Goal | None = None,
        drop_goal_dimension: bool = False,
        needs: frozenset[str] = frozenset(EVENT_FIGURES),
    ) -> Plan:
        """Visitors, pageviews, events and visits per group. `goal`: only its conversions (one row
        group of an `event:goal` breakdown); `drop_goal_dimension` groups as if it were not asked.
        `needs`: the figures of EVENT_FIGURES to count (each count of distinct values is a sort of its
        own: one not asked for is not made). Counted from visits alone where they hold it all
        (`by_visits`)."""
        if goal is None and self.by_visits(filters, needs):
            return self.visit_event_plan(metric, filters, needs)
        if goal is None and self.label_rows_apply(filters):
            return self.label_row_plan(needs)
        # A goal's conversions are page views or site events, never both: the other table is not read.
        e = self.events(only=None if goal is None else "site" if goal.kind == EVENT else "pages")
        v = FACT_VISITS.alias("v")
        columns = self._event_columns(e, v)
        leaf_on = self._leaf_on(metric, columns)

        def leaf_of(leaf: Leaf) -> Expr:
            if leaf.dimension == "event:goal":
                return self._goal_leaf(e, leaf)
            return leaf_on(leaf)

        exprs, dims = self._group(metric, columns, e.c.day, e.c.hour, skip=("event:goal",))
        figures = [
            self._unique(e.c.who, e.c.day).label("visitors"),
            sa.func.coalesce(sa.func.sum(e.c.is_page), 0).label("pageviews"),
            sa.func.count().label("events"),
            sa.func.count(sa.distinct(e.c.visit_id)).label("event_visits"),
            # Time on page: a page view's until the visitor's next one; a visit's last page has none.
            sa.func.coalesce(sa.func.sum(e.c.time_on_page_ms), 0).label("time_on_page_sum"),
            sa.func.count(e.c.time_on_page_ms).label("time_on_page_count"),
            # Scroll depth: over the page views the web snippet reported (`fact_page_views.scroll_depth`).
            sa.func.coalesce(sa.func.sum(e.c.scroll_depth), 0).label("scroll_sum"),
            sa.func.count(e.c.scroll_depth).label("scroll_count"),
        ]
        figures = [f for f in figures if f.name in needs] or figures[1:2]
        # The visit is joined only when a visit dimension or filter needs its entry values.
        named = [*self.q.dimensions, *(leaf.dimension for f in filters for leaf in leaves(f))]
        source = e
        if any(d.startswith("visit:") for d in named):
            # The visits' own range too, though the events' implies it: without it PostgreSQL hashes every
            # visit of the table for the join, today's partition (the biggest day) included.
            on = sa.and_(v.c.day == e.c.day, v.c.id == e.c.visit_id, *self._in_range(v.c.day, None))
            source = e.join(v, on)
        select = sa.select(*exprs, *figures).select_from(source)
        condition = self.compile(filters, leaf_of)
        if condition is not None:
            select = select.where(condition)
        if goal is not None:
            select = select.where(self.goal_condition(e, goal))
        if "event:page" in self.q.dimensions:
            select = select.where(e.c.path.is_not(None))
        if exprs:
            select = select.group_by(*exprs)
        if "event:goal" in self.q.dimensions and not drop_goal_dimension:
            at = self.q.dimensions.index("event:goal")
            before = sum(1 for d in self.q.dimensions[:at] if d != "event:goal")
            dims.insert(before, ("event:goal", 0))
        return Plan(select, dims, tuple(f.name for f in figures))

    def by_visits(self, filters: tuple[Filter, ...], needs: frozenset[str]) -> bool:
        """Whether the event figures asked (`needs`) can be counted from visits alone: grouped and filtered
        by visit dimensions only (and days, weeks or months: an event's day is its visit's), the range
        whole days, and no figure of single page views (time on page, scroll depth)."""
        if not needs <= VISIT_EVENT_FIGURES:
            return False
        if self.grain == "hour" or (self.q.start is not None and self.q.end is not None):
            return False
        named = [
            *(d for d in self.q.dimensions if not d.startswith("time")),
            *(leaf.dimension for f in filters for leaf in leaves(f)),
        ]
        return all(d in VISIT_DIMENSIONS for d in named)

    def visit_event_plan(
        self, metric: str, filters: tuple[Filter, ...], needs: frozenset[str], with_visits: bool = False
    ) -> Plan:
        """`event_plan`'s visitors, pageviews, events and visits by visit dimensions, from visits: no
        page view is read but those of signed-in visits, where the same figures come out.

        Every page view and site event (`kind` "event") belongs to one visit of its visitor-day
        (`trackside.derive`), whose counts it is in (`page_views`, `events`), and the visit's `who` is
        one of its events' (the first signed-in one's, else the anonymous visitor's). So the
        visitors of a group of visits are their `who`s, plus the other `who`s of their events, which
        only a signed-in visit can hold (a page view before signing in is the anonymous visitor's):
        those events are read through the visitor index of the facts (day, visitor).

        `with_visits`: `visit_plan`'s figures too (VISIT_FIGURES), from the same rows: its visits are
        these, when `by_visits` holds."""
        v = FACT_VISITS.alias("v")
        columns = self._visit_columns(v)
        exprs, dims = self._group(metric, columns, v.c.day, None)
        condition = self.compile(filters, self._leaf_on(metric, columns))
        # Rolled days from their daily rows; the facts of the other days only (none: no facts read). The
        # days as a list alone: SQLite would otherwise search the range's and filter them.
        from_rows = self.row_days if self.rows_apply(filters) else ()
        open_days = self._open_days(from_rows) if from_rows else None

        def days_of(day: Expr) -> list[Expr]:
            return self._in_range(day, None) if open_days is None else [day.in_(open_days)]

        keep = [*days_of(v.c.day), *([condition] if condition is not None else [])]

        def key(who: Expr, day: Expr) -> Expr:
            return sa.case((who.like("u:%"), who), else_=who + "|" + sa.cast(day, sa.String))

        grouped = [x.label(f"g{i}") for i, x in enumerate(exprs)]
        zero = sa.literal(0)
        parts: list[sa.Select[Any]] = []
        if open_days is None or open_days:
            parts.append(
                sa.select(
                    *grouped,
                    key(v.c.who, v.c.day).label("k"),
                    v.c.page_views.label("pv"),
                    (v.c.page_views + v.c.events).label("ev"),
                    sa.literal(1).label("n"),
                    sa.case((v.c.bounce, 1), else_=0).label("b"),
                    v.c.duration_s.label("s"),
                    zero.label("a"),
                ).where(*keep)
            )
        if "visitors" in needs and (open_days is None or open_days):
            for table in (FACT_PAGE_VIEWS, FACT_SITE_EVENTS):
                t = table.alias("o")
                extra = [t.c.kind == "event"] if table is FACT_SITE_EVENTS else []
                on = sa.and_(t.c.day == v.c.day, t.c.visitor == v.c.visitor, t.c.visit_id == v.c.id)
                parts.append(
                    sa.select(
                        *grouped,
                        key(t.c.who, t.c.day).label("k"),
                        *_who_only(),
                    )
                    .select_from(v.join(t, on))
                    .where(v.c.user_id.is_not(None), t.c.who != v.c.who, *extra, *keep, *days_of(t.c.day))
                )
        if from_rows:
            parts += self._row_parts(metric, from_rows, "visitors" in needs)
        u = sa.union_all(*parts).subquery("u")
        figures = [
            # Visitors: the distinct `who`s, plus the rows' anonymous visitor-days (days apart: they add up).
            (sa.func.count(sa.distinct(u.c.k)) + sa.func.coalesce(sa.func.sum(u.c.a), 0)).label("visitors"),
            sa.func.coalesce(sa.func.sum(u.c.pv), 0).label("pageviews"),
            sa.func.coalesce(sa.func.sum(u.c.ev), 0).label("events"),
            sa.func.coalesce(sa.func.sum(u.c.n), 0).label("event_visits"),
        ]
        figures = [f for f in figures if f.name in needs] or figures[1:2]
        if with_visits:
            figures += [
                sa.func.coalesce(sa.func.sum(u.c.n), 0).label("visits"),
                sa.func.coalesce(sa.func.sum(u.c.b), 0).label("bounces"),
                sa.func.coalesce(sa.func.sum(u.c.s), 0).label("duration"),
                sa.func.coalesce(sa.func.sum(u.c.pv), 0).label("visit_pageviews"),
            ]
        keys = [u.c[f"g{i}"] for i in range(len(exprs))]
        select = sa.select(*keys, *figures)
        if keys:
            select = select.group_by(*keys)
        return Plan(select, dims, tuple(f.name for f in figures))

    def label_rows_apply(self, filters: tuple[Filter, ...]) -> bool:
        """Whether `event_plan` reads its rolled days from the route labels' daily rows: there are such days,
        the query is by `event:props:label` alone, without filters, over whole days."""
        if not self.label_days or filters or self.grain is not None or self.q.dimensions != ("event:props:label",):
            return False
        return self.q.start is None or self.q.end is None

    def label_row_plan(self, needs: frozenset[str]) -> Plan:
        """`event_plan`'s figures by route label: the rolled days' from their daily rows (anonymous visitors and
        visits as counts of each day, which add up; signed-in visitors as rows, counted distinct), the other
        days' from their page views and site events."""
        open_days = self._open_days(self.label_days)
        zero = sa.literal(0)
        parts: list[sa.Select[Any]] = []
        if open_days:
            e = self.events()
            key = sa.case((e.c.who.like("u:%"), e.c.who), else_=e.c.who + "|" + sa.cast(e.c.day, sa.String))
            parts.append(
                sa.select(
                    e.c.label.label("g0"),
                    key.label("k"),
                    e.c.visit_id.label("vid"),
                    e.c.is_page.label("pv"),
                    sa.literal(1).label("ev"),
                    zero.label("nv"),
                    e.c.time_on_page_ms.label("ts"),
                    sa.case((e.c.time_on_page_ms.is_not(None), 1), else_=0).label("tc"),
                    e.c.scroll_depth.label("ss"),
                    sa.case((e.c.scroll_depth.is_not(None), 1), else_=0).label("sc"),
                    zero.label("a"),
                ).where(e.c.day.in_(open_days))
            )
        r = LABEL_DAYS.alias("r")
        parts.append(
            sa.select(
                r.c.label.label("g0"),
                sa.cast(sa.null(), sa.String).label("k"),
                sa.cast(sa.null(), sa.String).label("vid"),
                r.c.page_views.label("pv"),
                r.c.events.label("ev"),
                r.c.visits.label("nv"),
                r.c.time_on_page_sum.label("ts"),
                r.c.time_on_page_count.label("tc"),
                r.c.scroll_sum.label("ss"),
                r.c.scroll_count.label("sc"),
                r.c.anon_visitors.label("a"),
            ).where(r.c.day.in_(self.label_days), r.c.label != MARKER)
        )
        if "visitors" in needs:
            ru = LABEL_USERS.alias("ru")
            parts.append(
                sa.select(
                    ru.c.label.label("g0"),
                    ru.c.who.label("k"),
                    sa.cast(sa.null(), sa.String).label("vid"),
                    *(zero.label(name) for name in ("pv", "ev", "nv", "ts", "tc", "ss", "sc", "a")),
                ).where(ru.c.day.in_(self.label_days))
            )
        u = sa.union_all(*parts).subquery("u")

        def total(column: Any) -> Expr:
            return sa.func.coalesce(sa.func.sum(column), 0)

        figures = [
            (sa.func.count(sa.distinct(u.c.k)) + total(u.c.a)).label("visitors"),
            total(u.c.pv).label("pageviews"),
            total(u.c.ev).label("events"),
            (sa.func.count(sa.distinct(u.c.vid)) + total(u.c.nv)).label("event_visits"),
            total(u.c.ts).label("time_on_page_sum"),
            total(u.c.tc).label("time_on_page_count"),
            total(u.c.ss).label("scroll_sum"),
            total(u.c.sc).label("scroll_count"),
        ]
        figures = [f for f in figures if f.name in needs] or figures[1:2]
        select = sa.select(u.c.g0, *figures).group_by(u.c.g0)
        return Plan(select, [("event:props:label", 1)], tuple(f.name for f in figures))

    def rows_apply(self, filters: tuple[Filter, ...]) -> bool:
        """Whether `visit_event_plan` reads its rolled days from the visits' daily rows: there are such
        days, no filter, at most one dimension besides days, weeks or months (the rows are per visit
        dimension: `by_visits` holds for the rest)."""
        if not self.row_days or filters or self.grain == "hour":
            return False
        if self.q.start is not None and self.q.end is not None:
            return False
        return len([d for d in self.q.dimensions if not d.startswith("time")]) <= 1

    def _open_days(self, rolled: tuple[date, ...]) -> list[date]:
        """The range's days not read from the daily rows (those the facts answer)."""
        skip = set(rolled)
        days = (self.first + timedelta(days=n) for n in range((self.q.last - self.first).days + 1))
        return [d for d in days if d not in skip]

    def _row_parts(self, metric: str, days: tuple[date, ...], users: bool) -> list[sa.Select[Any]]:
        """`visit_event_plan`'s union parts from the daily rows of `days`: the figures (anonymous visitors as
        a count, `a`) and, for visitors, the signed-in users (`k`)."""
        dim = row_dimension(next((d for d in self.q.dimensions if not d.startswith("time")), TOTAL))
        r = VISIT_DIM_DAYS.alias("r")
        exprs, _ = self._group(metric, lambda d: r.c.value, r.c.day, None)
        parts: list[sa.Select[Any]] = [
            sa.select(
                *(x.label(f"g{i}") for i, x in enumerate(exprs)),
                sa.cast(sa.null(), sa.String).label("k"),
                r.c.page_views.label("pv"),
                r.c.events.label("ev"),
                r.c.visits.label("n"),
                r.c.bounces.label("b"),
                r.c.duration.label("s"),
                r.c.anon_visitors.label("a"),
            ).where(r.c.dim == dim, r.c.day.in_(days))
        ]
        if users:
            ru = VISIT_DIM_USERS.alias("ru")
            exprs, _ = self._group(metric, lambda d: ru.c.value, ru.c.day, None)
            parts.append(
                sa.select(
                    *(x.label(f"g{i}") for i, x in enumerate(exprs)),
                    ru.c.who.label("k"),
                    *_who_only(),
                ).where(ru.c.dim == dim, ru.c.day.in_(days))
            )
        return parts

    # Visits.

    def visit_condition(self, v: Any, metric: str, filters: tuple[Filter, ...]) -> Expr | None:
        """The visits of `v` (an alias of the visits) the filters keep: visit dimensions by the
        visit's entry values, an event filter by the visit holding such an event (or none)."""
        leaf_on = self._leaf_on(metric, self._visit_columns(v))

        def leaf_of(leaf: Leaf) -> Expr:
            if leaf.dimension not in EVENT_LEVEL:
                return leaf_on(leaf)
            # An event filter keeps visits containing a matching event (its negation: none).
            e = self.events("e_in_visit")
            if leaf.dimension == "event:goal":
                matched = self._goal_leaf(e, leaf)
            else:
                col = e.c.path if leaf.dimension == "event:page" else e.c.label
                matched = self.leaf_condition(col, leaf)
            # A semi-join on the matching events' visit ids, computed once (not a subquery per
            # visit: facts have no index on visit_id). Visit ids are event ids, unique across days.
            holding = sa.select(e.c.visit_id).where(e.c.visit_id.is_not(None), matched)
            return v.c.id.not_in(holding) if leaf.negative else v.c.id.in_(holding)

        return self.compile(filters, leaf_of)

    def visit_plan(self, metric: str, filters: tuple[Filter, ...]) -> Plan:
        v = FACT_VISITS.alias("v")
        columns = self._visit_columns(v)
        hour = sa.func.extract("hour", v.c.started_at)
        exprs, dims = self._group(metric, columns, v.c.day, hour)
        figures = [
            sa.func.count().label("visits"),
            sa.func.coalesce(sa.func.sum(sa.case((v.c.bounce, 1), else_=0)), 0).label("bounces"),
            sa.func.coalesce(sa.func.sum(v.c.duration_s), 0).label("duration"),
            sa.func.coalesce(sa.func.sum(v.c.page_views), 0).label("visit_pageviews"),
        ]
        select = sa.select(*exprs, *figures).select_from(v).where(*self._in_range(v.c.day, v.c.started_at))
        condition = self.visit_condition(v, metric, filters)
        if condition is not None:
            select = select.where(condition)
        if exprs:
            select = select.group_by(*exprs)
        return Plan(select, dims, VISIT_FIGURES)

    # Trackside's extensions.

    def _not_author(self, table: Any) -> tuple[Any, Expr]:
        a = ITEM_AUTHORS.alias("a")
        joined = table.outerjoin(
            a, sa.and_(a.c.content_kind == table.c.content_kind, a.c.content_id == table.c.content_id)
        )
        keep = sa.or_(a.c.author_id.is_(None), table.c.user_id.is_(None), table.c.user_id != a.c.author_id)
        return joined, keep

    def looks_plan(self, metric: str) -> Plan:
        t = FACT_LOOKS.alias("l")

        def columns(d: str) -> Expr | None:
            if d in ("event:props:content_kind", "event:props:content_id", "event:props:view_type"):
                return t.c[d[12:]]
            if d == "visit:device":
                return self._device(t.c.device)
            if d in ("visit:country", "visit:country_name"):
                return sa.func.coalesce(t.c.country, NOT_SET)
            if d == "visit:referrer":
                return sa.func.coalesce(t.c.referrer, DIRECT)
            return None

        joined, keep = self._not_author(t)
        figures = [sa.func.count().label("content_views")]
        if "unique_viewers" in self.q.metrics:  # a count of distinct viewers is a sort: only when asked
            figures.append(self._unique(t.c.who, t.c.day).label("unique_viewers"))
        return self._simple(metric, joined, keep, columns, t.c.day, t.c.hour, t.c.ts, figures)

    def impressions_plan(self, metric: str) -> Plan:
        t = FACT_IMPRESSIONS.alias("i")

        def columns(d: str) -> Expr | None:
            if d in ("event:props:content_kind", "event:props:content_id", "event:props:view_type"):
                return t.c[d[12:]]
            return None

        joined, keep = self._not_author(t)
        return self._simple(
            metric, joined, keep, columns, t.c.day, t.c.hour, t.c.ts, [sa.func.count().label("impressions")]
        )

    def errors_plan(self, metric: str) -> Plan:
        t = FACT_SITE_EVENTS.alias("s")

        def columns(d: str) -> Expr | None:
            return {"event:page": t.c.path, "event:props:label": t.c.label}.get(d)

        return self._simple(
            metric, t, t.c.kind == "error", columns, t.c.day, t.c.hour, t.c.ts, [sa.func.count().label("errors")]
        )

    def api_plan(self, metric: str) -> Plan:
        t = FACT_VISITOR_DAYS
        figures = [sa.func.coalesce(sa.func.sum(t.c.api_calls), 0).label("api_calls")]
        return self._simple(metric, t, sa.true(), lambda d: None, t.c.day, None, None, figures)

    def bots_plan(self, metric: str) -> Plan:
        t = BOT_HITS
        figures = [sa.func.coalesce(sa.func.sum(t.c.hits), 0).label("bot_hits")]
        return self._simple(
            metric,
            t,
            sa.true(),
            lambda d: t.c.label if d == "event:props:label" else None,
            t.c.day,
            None,
            None,
            figures,
        )

    def _simple(
        self,
        metric: str,
        source: Any,
        keep: Expr,
        columns: Callable[[str], Expr | None],
        day: Expr,
        hour: Expr | None,
        ts: Expr | None,
        figures: list[Any],
    ) -> Plan:
        exprs, dims = self._group(metric, columns, day, hour)
        select = sa.select(*exprs, *figures).select_from(source).where(keep, *self._in_range(day, ts))
        condition = self.compile(self.q.filters, self._leaf_on(metric, columns))
        if condition is not None:
            select = select.where(condition)
        if exprs:
            select = select.group_by(*exprs)
        return Plan(select, dims, tuple(f.name for f in figures))


def _name_matches(name: str, leaf: Leaf) -> bool:
    subject = name if leaf.case_sensitive else name.lower()
    wanted = leaf.values if leaf.case_sensitive else tuple(v.lower() for v in leaf.values)
    if leaf.op == "is":
        return subject in wanted
    return any(v in subject for v in wanted)


def oldest_fact_day() -> sa.Select[Any]:
    return sa.select(sa.func.min(FACT_VISITS.c.day))


def _who_only() -> list[Expr]:
    """The figure columns of a union part that only names a visitor (`k`): every figure 0."""
    zero = sa.literal(0)
    return [zero.label(name) for name in ("pv", "ev", "n", "b", "s", "a")]
