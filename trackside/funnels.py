"""Funnels: ordered steps within one visit, each a page pattern (`/`, `/p/*`, as goals' patterns)
or a goal by name (`upload`). A funnel has 2 to 8 steps.

Where named funnels come from (`list_funnels`), a name defined once:
- `TRACKSIDE_FUNNELS`: JSON, `{"Upload": [{"page": "/"}, {"page": "/p/*"}, {"goal": "upload"}]}`,
  or the compact form `Upload=/ > /p/* > goal:upload; Sign up=/ > goal:signup` (steps split by `>`,
  funnels by `;`, a step `goal:NAME` or a page pattern). Checked at start-up; a goal a step names is
  checked when the funnel is asked (goals may be stored in the database).
- the `funnels` table: moderators through `/_trackside/api/funnels` (the dashboard's form).
  A stored funnel whose name the settings also define is hidden by it.

The figures themselves are `trackside.stats.v2.funnel`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.goals import MAX_NAME, PAGE, GoalError, check_goal

MIN_STEPS = 2
MAX_STEPS = 8
PAGE_STEP = "page"
GOAL_STEP = "goal"
SETTINGS = "settings"
DATABASE = "database"


class FunnelError(ValueError):
    """A bad funnel or step: the message names what is wrong (`steps[2].page: ...`)."""


class FunnelConflict(Exception):
    """A funnel of that name exists (or is defined in the settings, which the API cannot change)."""


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # PAGE_STEP or GOAL_STEP
    match: str  # the page pattern, or the goal's name

    @property
    def label(self) -> str:
        return self.match

    def as_dict(self) -> dict[str, str]:
        return {self.kind: self.match}


@dataclass(frozen=True, slots=True)
class Funnel:
    name: str
    steps: tuple[Step, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "steps": [s.as_dict() for s in self.steps]}


@dataclass(frozen=True, slots=True)
class StoredFunnel:
    funnel: Funnel
    origin: str  # SETTINGS or DATABASE
    created_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.funnel.as_dict(),
            "origin": self.origin,
            "created_at": self.created_at.isoformat(timespec="seconds") + "Z" if self.created_at else None,
        }


def parse_step(raw: Any, at: int) -> Step:
    where = f"steps[{at}]"
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in (PAGE_STEP, GOAL_STEP):
        raise FunnelError(f'{where}: one of {{"page": PATTERN}} or {{"goal": NAME}}')
    kind, match = next(iter(raw.items()))
    if not isinstance(match, str) or not match.strip():
        raise FunnelError(f"{where}.{kind}: a non-empty string")
    match = match.strip()
    if kind == PAGE_STEP:
        try:
            check_goal("step", PAGE, match)
        except GoalError as exc:
            message = str(exc).split(": ", 1)[1]
            raise FunnelError(f"{where}.page: {match[:80]!r}: {message}") from None
    elif len(match) > MAX_NAME or not match.isprintable():
        raise FunnelError(f"{where}.goal: a goal's name, 1 to {MAX_NAME} printable characters")
    return Step(kind, match)


def parse_steps(raw: Any) -> tuple[Step, ...]:
    if not isinstance(raw, list):
        raise FunnelError(f'steps: a list of {MIN_STEPS} to {MAX_STEPS} steps, {{"page": PATTERN}} or {{"goal": NAME}}')
    if not MIN_STEPS <= len(raw) <= MAX_STEPS:
        raise FunnelError(f"steps: a funnel has {MIN_STEPS} to {MAX_STEPS} steps, got {len(raw)}")
    return tuple(parse_step(step, i) for i, step in enumerate(raw))


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise FunnelError(f"name: required, 1 to {MAX_NAME} printable characters")
    name = name.strip()
    if len(name) > MAX_NAME or not name.isprintable() or any(c in name for c in ";=>{}"):
        raise FunnelError(f"name: 1 to {MAX_NAME} printable characters, none of ; = > {{ }}")
    return name


def check_funnel(name: Any, steps: Any) -> Funnel:
    return Funnel(check_name(name), parse_steps(steps))


def _compact_step(text: str) -> dict[str, str]:
    text = text.strip()
    if text.startswith("goal:"):
        return {GOAL_STEP: text[5:].strip()}
    return {PAGE_STEP: text}


def parse_funnels_setting(raw: str | None) -> list[Funnel]:
    """`TRACKSIDE_FUNNELS`, JSON or compact (module doc); FunnelError naming the funnel and step."""
    if raw is None or not raw.strip():
        return []
    text = raw.strip()
    entries: list[tuple[Any, Any]]
    if text.startswith("{"):
        try:
            decoded = json.loads(text)
        except ValueError as exc:
            raise FunnelError(f"not valid JSON ({exc})") from None
        if not isinstance(decoded, dict):
            raise FunnelError('JSON: an object {"NAME": [step, ...]}')
        entries = list(decoded.items())
    else:
        entries = []
        for part in text.split(";"):
            if not part.strip():
                continue
            name, sep, rest = part.partition("=")
            if not sep:
                raise FunnelError(f"{part.strip()[:80]!r}: write NAME=STEP > STEP > ... (goal:NAME for a goal)")
            entries.append((name, [_compact_step(s) for s in rest.split(">")]))
    found: dict[str, Funnel] = {}
    for name, steps in entries:
        try:
            funnel = check_funnel(name, steps)
        except FunnelError as exc:
            raise FunnelError(f"funnel {str(name)[:80]!r}: {exc}") from None
        if funnel.name in found:
            raise FunnelError(f"funnel {funnel.name!r} is defined twice")
        found[funnel.name] = funnel
    return list(found.values())


def settings_funnels(settings: Any) -> list[Funnel]:
    return parse_funnels_setting(getattr(settings, "funnels", None))


def _table() -> sa.Table:
    from trackside.storage.tables import FUNNELS

    return FUNNELS


async def stored_funnels(conn: AsyncConnection) -> list[StoredFunnel]:
    t = _table()
    out = []
    for r in await conn.execute(sa.select(t.c.name, t.c.steps, t.c.created_at).order_by(t.c.name)):
        steps = tuple(Step(k, m) for entry in json.loads(r.steps) for k, m in entry.items())
        out.append(StoredFunnel(Funnel(r.name, steps), DATABASE, r.created_at))
    return out


async def list_funnels(conn: AsyncConnection, settings: Any) -> list[StoredFunnel]:
    """Every funnel with its origin: the settings' first, then the stored ones by name."""
    own = [StoredFunnel(f, SETTINGS) for f in settings_funnels(settings)]
    names = {s.funnel.name for s in own}
    return own + [s for s in await stored_funnels(conn) if s.funnel.name not in names]


async def add_funnel(conn: AsyncConnection, settings: Any, funnel: Funnel) -> StoredFunnel:
    """Stores a funnel (checked by the caller); FunnelConflict when the name is taken."""
    if any(f.name == funnel.name for f in settings_funnels(settings)):
        raise FunnelConflict(f"funnel {funnel.name!r} is defined in the settings (TRACKSIDE_FUNNELS)")
    t = _table()
    if (await conn.execute(sa.select(t.c.name).where(t.c.name == funnel.name))).first() is not None:
        raise FunnelConflict(f"funnel {funnel.name!r} exists")
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    steps = json.dumps([s.as_dict() for s in funnel.steps], separators=(",", ":"))
    try:
        async with conn.begin_nested():
            await conn.execute(t.insert().values(name=funnel.name, steps=steps, created_at=now))
    except sa.exc.IntegrityError:
        raise FunnelConflict(f"funnel {funnel.name!r} exists") from None
    return StoredFunnel(funnel, DATABASE, now)


async def remove_funnel(conn: AsyncConnection, settings: Any, name: str) -> bool:
    """Removes a stored funnel; False when there is none. FunnelConflict for one of the settings."""
    if any(f.name == name for f in settings_funnels(settings)):
        raise FunnelConflict(f"funnel {name!r} is defined in the settings; change TRACKSIDE_FUNNELS to remove it")
    t = _table()
    done = await conn.execute(t.delete().where(t.c.name == name))
    return bool(done.rowcount)
