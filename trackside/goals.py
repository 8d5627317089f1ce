"""Goals: what counts as a conversion. A goal is a site event by name (`signup`, `upload`, a rule's
or an `X-Trackside-Event` hint's name) or a page pattern (`/p/*`: a page view whose path matches).

Where goals come from (`load_goals`), in this order, a name defined once:
- `TRACKSIDE_GOALS`, comma-separated: `signup` (an event goal of that name), `NAME=event:EVENT`,
  `NAME=page:PATTERN`. Unset, every event name of the site's event rules is a goal (Makapix: signup,
  upload); set to nothing, no goal comes from the settings.
- the `goals` table: `trackside goals add|remove`, or the moderators' API `/_trackside/api/goals`.
  A stored goal whose name the settings also define is hidden by it.

Page patterns: `*` is any run of characters but `/` (one path segment or part of one), `**` any run
at all; everything else matches itself, whole path to whole path (`/p/*` matches `/p/a1` and `/p/`,
a run may be empty, but not `/p/a1/edit`; `/docs/**` matches both). The path tested is a fact's path:
the raw path where the route rules keep it (`trackside.fact_paths`), else the route label, whose
`[param]` segments are one segment like any other (`/p/*` matches `/p/[post]`).

In SQL: `page_goal_like(pattern)` is a LIKE pattern (escape character `\\`) that every matching path
satisfies; with `**` only it is exact, with a single `*` it also lets `/` through, so test
`Goal.sql_condition(column)`: the LIKE (cheap, uses an index on a literal prefix) and, when needed,
the regular expression (`regexp_match`: `~` on PostgreSQL, a Python function on SQLite that
SQLAlchemy's SQLite dialect installs). `page_goal_regex` is the same test in Python."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

EVENT = "event"
PAGE = "page"
KINDS = (EVENT, PAGE)
MAX_NAME = 64
MAX_EVENT = 64  # site events' names are stored up to 64 characters
MAX_PATTERN = 512  # a fact's path is at most 512 characters
LIKE_ESCAPE = "\\"

SETTINGS = "settings"
DATABASE = "database"


@dataclass(frozen=True, slots=True)
class Goal:
    name: str  # as shown and as `event:goal` answers it
    kind: str  # EVENT or PAGE
    match: str  # the event name, or the page pattern (`*` any run of characters but `/`, `**` any)

    def matches_path(self, path: str) -> bool:
        """A page goal's test of one path (False for an event goal)."""
        return self.kind == PAGE and page_goal_regex(self.match).match(path) is not None

    def sql_condition(self, column: Any) -> Any:
        """A page goal's test of a path column as a SQLAlchemy condition (see the module's doc)."""
        if self.kind != PAGE:
            raise ValueError(f"goal {self.name!r} is an event goal, not a page goal")
        like = column.like(page_goal_like(self.match), escape=LIKE_ESCAPE)
        if like_is_exact(self.match):
            return like
        return sa.and_(like, column.regexp_match(page_goal_regex(self.match).pattern))


@dataclass(frozen=True, slots=True)
class StoredGoal:
    """A goal as listed: where it is defined, and (stored ones) when it was added."""

    goal: Goal
    origin: str  # SETTINGS or DATABASE
    created_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.goal.name,
            "kind": self.goal.kind,
            "match": self.goal.match,
            "origin": self.origin,
            "created_at": self.created_at.isoformat(timespec="seconds") + "Z" if self.created_at else None,
        }


class GoalError(ValueError):
    """A bad goal: `field` names what is wrong (name, kind or match)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class GoalConflict(Exception):
    """A goal of that name exists (or is defined in the settings, which the API cannot change)."""


@lru_cache(maxsize=1024)
def page_goal_regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*|\*)", pattern)
    out = []
    for part in parts:
        if part == "**":
            out.append(".*")
        elif part == "*":
            out.append("[^/]*")
        else:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "$", re.DOTALL)


def page_goal_like(pattern: str) -> str:
    """The LIKE pattern (escape `\\`) every path matching `pattern` satisfies."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return re.sub(r"\*+", "%", escaped)


def like_is_exact(pattern: str) -> bool:
    """Whether the LIKE pattern alone is the test: no single `*` (LIKE's `%` also matches `/`)."""
    return re.search(r"(?<!\*)\*(?!\*)", pattern) is None


def check_goal(name: str, kind: str, match: str) -> Goal:
    """The goal, or GoalError naming the bad field."""
    name = name.strip() if isinstance(name, str) else name
    match = match.strip() if isinstance(match, str) else match
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or not name.isprintable() or "," in name:
        raise GoalError("name", f"1 to {MAX_NAME} printable characters, no comma")
    if kind not in KINDS:
        raise GoalError("kind", f"event or page, got {kind!r}")
    if not isinstance(match, str) or not match or not match.isprintable():
        raise GoalError("match", "required: an event name or a page pattern")
    if kind == EVENT:
        if len(match) > MAX_EVENT or any(c.isspace() for c in match) or "," in match:
            raise GoalError("match", f"an event name: 1 to {MAX_EVENT} characters, no space or comma")
    else:
        if not match.startswith("/") or len(match) > MAX_PATTERN:
            raise GoalError("match", f"a page pattern starts with / (at most {MAX_PATTERN} characters), e.g. /p/*")
        if any(c.isspace() for c in match) or "?" in match or "#" in match or "," in match:
            raise GoalError("match", "a page pattern is a path: no space, ?, # or comma")
        if "***" in match:
            raise GoalError("match", "* is one segment's run, ** any run; *** means nothing more")
    return Goal(name, kind, match)


def parse_goal_setting(entry: str) -> Goal:
    """One `TRACKSIDE_GOALS` entry: `signup`, `NAME=event:EVENT` or `NAME=page:PATTERN`."""
    name, sep, rest = entry.partition("=")
    if not sep:
        return check_goal(entry, EVENT, entry)
    kind, colon, match = rest.strip().partition(":")
    if not colon or kind.strip() not in KINDS:
        raise GoalError("kind", f"{entry!r}: write NAME=event:EVENT or NAME=page:PATTERN")
    return check_goal(name, kind.strip(), match)


def settings_goals(settings: Any) -> list[Goal]:
    """The goals the settings define (`Settings`; typed loosely to keep this module import-light)."""
    if settings.goals is None:
        from trackside.settings import parse_event_rule

        names = dict.fromkeys(parse_event_rule(rule)[2] for rule in settings.event_rules)
        return [Goal(n, EVENT, n) for n in names]
    found: dict[str, Goal] = {}
    for entry in settings.goals:
        goal = parse_goal_setting(entry)
        if goal.name in found:
            raise GoalError("name", f"{goal.name!r} is defined twice")
        found[goal.name] = goal
    return list(found.values())


def _table() -> sa.Table:
    from trackside.storage.tables import GOALS

    return GOALS


async def stored_goals(conn: AsyncConnection) -> list[StoredGoal]:
    t = _table()
    rows = await conn.execute(sa.select(t.c.name, t.c.kind, t.c.match, t.c.created_at).order_by(t.c.name))
    return [StoredGoal(Goal(r.name, r.kind, r.match), DATABASE, r.created_at) for r in rows]


async def list_goals(conn: AsyncConnection, settings: Any) -> list[StoredGoal]:
    """Every goal with its origin: the settings' first, then the stored ones by name."""
    own = [StoredGoal(g, SETTINGS) for g in settings_goals(settings)]
    names = {s.goal.name for s in own}
    return own + [s for s in await stored_goals(conn) if s.goal.name not in names]


async def load_goals(conn: AsyncConnection, settings: Any) -> list[Goal]:
    """The goals in force: the settings' (or the event rules' names), then the stored ones."""
    return [s.goal for s in await list_goals(conn, settings)]


async def add_goal(conn: AsyncConnection, settings: Any, goal: Goal) -> StoredGoal:
    """Stores a goal (checked); GoalConflict when the name is taken, here or in the settings."""
    goal = check_goal(goal.name, goal.kind, goal.match)
    if any(g.name == goal.name for g in settings_goals(settings)):
        raise GoalConflict(f"goal {goal.name!r} is defined in the settings (TRACKSIDE_GOALS or the event rules)")
    t = _table()
    if (await conn.execute(sa.select(t.c.name).where(t.c.name == goal.name))).first() is not None:
        raise GoalConflict(f"goal {goal.name!r} exists")
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    try:
        async with conn.begin_nested():
            await conn.execute(t.insert().values(name=goal.name, kind=goal.kind, match=goal.match, created_at=now))
    except sa.exc.IntegrityError:
        raise GoalConflict(f"goal {goal.name!r} exists") from None  # added at the same moment elsewhere
    return StoredGoal(goal, DATABASE, now)


async def remove_goal(conn: AsyncConnection, settings: Any, name: str) -> bool:
    """Removes a stored goal; False when there is none. GoalConflict for a goal of the settings."""
    if any(g.name == name for g in settings_goals(settings)):
        raise GoalConflict(f"goal {name!r} is defined in the settings; change TRACKSIDE_GOALS to remove it")
    t = _table()
    done = await conn.execute(t.delete().where(t.c.name == name))
    return bool(done.rowcount)
