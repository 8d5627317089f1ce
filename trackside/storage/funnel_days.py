"""Funnels' encoded days (`funnel_days`, `funnel_strings`, migration 0021): each closed day's visits
in columns, written by the rollup of the day from its facts, so that a funnel over rolled days is
matched with NumPy (`trackside.stats.funnel_days`) instead of SQL over every page view of the range.

What a day holds (one row per part, `data` the part's raw little-endian array):
- `h`: a JSON header: the format, how many visits and rows, each part's dtype;
- `c`: per visit, its rows (page views, and site events of kind "event" with a visit), `w`: its who
  (a signed-in user's `u:...` as the id of that string in `funnel_strings`, so a user is one key
  across days; an anonymous visitor `-(n + 1)`, n numbering the day's anonymous visitors), `s`: the
  microseconds from midnight UTC to its first row;
- `t`: per row, the microseconds since its visit's first row (32 bits, or 64 on a day with a visit
  over 71 minutes); `k`: its token, the id of its path (a page view) or of its name (a site event)
  times 2, plus 1 for an event; `l`: the id of its label;
- `d0` ... `d10`: per visit dimension of `DIMS` (the visit's entry values, one part each: a filter
  reads its own), the id of the value, 0 for NULL.

A visit's rows are in time order; only the visits of `fact_visits` with at least one row are kept
(a funnel starts at a visit's row and keeps the visits it joins). Strings (paths, names, labels,
users, the visit dimensions' values) are numbered once for every day in `funnel_strings`: a step's
or a filter's test is run by the database over those strings (the same SQL, so the same answer on
either backend) and applied to the ids with NumPy.

A day's parts are replaced whole when it is rolled again, and deleted with the day's facts (a funnel
counts facts only); a day rolled before migration 0021 has none until rolled again (the funnel asks
SQL for it)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.storage.tables import FACT_PAGE_VIEWS, FACT_SITE_EVENTS, FACT_VISITS, FUNNEL_DAYS

FORMAT = 3  # 1, 2: never released
# The visit dimensions a funnel's filters may name (`visit:<name>`; `visit:country_name` reads `country`).
DIMS = (
    "source", "referrer", "utm_source", "utm_medium", "utm_campaign", "entry_page", "exit_page", "country",
    "device", "browser", "os",
)  # fmt: skip
ROW_PARTS = ("t", "k")  # what every funnel reads, with the visits' "c", "w", "s"
VISIT_PARTS = ("c", "w", "s")
US = 1_000_000
_U32 = 2**32 - 1


async def _number(conn: AsyncConnection, strings: set[str]) -> dict[str, int]:
    """Each string's id in `funnel_strings`, numbering the new ones (in one order: two rollups adding
    the same strings wait for each other, never deadlock)."""
    values = sorted(strings)
    if not values:
        return {}
    if conn.dialect.name == "postgresql":
        bound = {"a": values}
        await conn.execute(
            sa.text(
                "INSERT INTO funnel_strings (text) SELECT x FROM unnest(CAST(:a AS text[])) AS u(x) "
                "WHERE NOT EXISTS (SELECT 1 FROM funnel_strings f WHERE f.text = u.x) ORDER BY x "
                "ON CONFLICT (text) DO NOTHING"
            ),
            bound,
        )
        rows = await conn.execute(
            sa.text(
                "SELECT f.id, f.text FROM unnest(CAST(:a AS text[])) AS u(x) JOIN funnel_strings f ON f.text = u.x"
            ),
            bound,
        )
    else:
        payload = {"a": json.dumps(values)}
        await conn.execute(
            sa.text("INSERT OR IGNORE INTO funnel_strings (text) SELECT value FROM json_each(:a) ORDER BY value"),
            payload,
        )
        rows = await conn.execute(
            sa.text("SELECT id, text FROM funnel_strings WHERE text IN (SELECT value FROM json_each(:a))"), payload
        )
    return {text: int(sid) for sid, text in rows}


def _pack(arr: np.ndarray) -> tuple[bytes, str]:
    arr = np.ascontiguousarray(arr)
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    return arr.astype(dtype, copy=False).tobytes(), dtype.str


@dataclass
class _Rows:
    """A day's rows as read, visit by visit (rows of no visit of the day left out)."""

    visits: list[tuple[str, bool, tuple[Any, ...]]]  # (who, is a user, the DIMS values)
    counts: list[int]
    start: list[int]  # the visit's first row, microseconds from midnight
    offsets: list[int]  # each row's microseconds since its visit's first row
    events: list[int]  # 1: a site event (its name), 0: a page view (its path)
    texts: list[str]
    labels: list[str]


def read_rows(
    visits: dict[str, tuple[str, bool, tuple[Any, ...]]],
    rows: Iterable[tuple[str, Any, int, str, str]],
    day: date,
) -> _Rows:
    """`visits` id -> (who, is a user, the DIMS values); `rows` (visit id, ts or its microseconds from
    midnight, 1 for a site event else 0, path or name, label) ordered by visit id and time."""
    midnight = datetime(day.year, day.month, day.day)
    out = _Rows([], [], [], [], [], [], [])
    current: str | None = None
    skipping = False
    first = 0
    for visit_id, ts, event, text, label in rows:
        if isinstance(ts, datetime):
            td = ts - midnight
            us = (td.days * 86_400 + td.seconds) * US + td.microseconds
        else:
            us = int(ts)
        if visit_id != current:
            current = visit_id
            visit = visits.get(visit_id)
            skipping = visit is None  # a row of no visit of the day: a funnel never reaches it
            if skipping:
                continue
            first = us
            out.visits.append(visit)  # type: ignore[arg-type]
            out.counts.append(0)
            out.start.append(first)
        elif skipping:
            continue
        out.counts[-1] += 1
        out.offsets.append(us - first)
        out.events.append(event)
        out.texts.append(text)
        out.labels.append(label)
    return out


def encode_day(r: _Rows, ids: dict[str, int]) -> dict[str, bytes]:
    """The parts of one day (module doc) from its rows and the ids of their strings."""
    anonymous: dict[str, int] = {}
    who = [ids[w] if is_user else -(anonymous.setdefault(w, len(anonymous)) + 1) for w, is_user, _ in r.visits]
    n = len(r.counts)
    c = np.array(r.counts, dtype=np.uint32)
    t = np.array(r.offsets, dtype=np.int64)
    dims = [[0 if x is None else ids[x] for x in values] for _, _, values in r.visits]
    arrays = {
        "c": c.astype(np.uint16) if n and int(c.max()) < 2**16 else c,
        "w": np.array(who, dtype=np.int32),
        "s": np.array(r.start, dtype=np.int64),
        "t": t.astype(np.uint32) if not len(t) or int(t.max()) <= _U32 else t,
        "k": np.array([ids[x] * 2 + e for x, e in zip(r.texts, r.events, strict=True)], dtype=np.uint32),
        "l": np.array([ids[x] for x in r.labels], dtype=np.uint32),
    }
    by_dim = np.array(dims or np.zeros((0, len(DIMS))), dtype=np.int32).T
    arrays.update({f"d{i}": by_dim[i].copy() for i in range(len(DIMS))})
    parts: dict[str, bytes] = {}
    dtypes: dict[str, str] = {}
    for name, arr in arrays.items():
        parts[name], dtypes[name] = _pack(arr)
    header = {
        "format": FORMAT, "visits": n, "rows": len(t), "anonymous": len(anonymous), "dtypes": dtypes,
        "dims": list(DIMS),
    }  # fmt: skip
    parts["h"] = json.dumps(header, separators=(",", ":")).encode()
    return parts


async def record_funnel_day(conn: AsyncConnection, day: date) -> int:
    """Replace the day's encoding with one made from its facts (the rollup, under the day's lock).
    Returns the rows encoded."""
    fd = FUNNEL_DAYS.c
    await conn.execute(sa.delete(FUNNEL_DAYS).where(fd.day == day))
    v = FACT_VISITS.c
    visits = {
        r[0]: (r[1], bool(r[2]), tuple(r[3:]))
        for r in await conn.execute(
            sa.select(v.id, v.who, v.who.like("u:%"), *(v[d] for d in DIMS)).where(v.day == day)
        )
    }
    pv, se = FACT_PAGE_VIEWS.c, FACT_SITE_EVENTS.c
    both = sa.union_all(
        sa.select(pv.visit_id, pv.ts, sa.literal(0).label("event"), pv.path.label("x"), pv.label).where(pv.day == day),
        sa.select(se.visit_id, se.ts, sa.literal(1), se.name, se.label).where(
            se.day == day, se.kind == "event", se.visit_id.is_not(None)
        ),
    ).subquery("rows")
    if conn.dialect.name == "postgresql":
        # The microseconds from midnight, exactly (EXTRACT of an interval is numeric), not a datetime each.
        since = both.c.ts - sa.cast(sa.literal(day), sa.DateTime)
        at: Any = sa.cast(sa.extract("epoch", since) * US, sa.BigInteger)
    else:
        at = sa.type_coerce(both.c.ts, sa.DateTime)  # typed: SQLite's text parsed to a datetime
    result = await conn.execute(
        sa.select(both.c.visit_id, at, both.c.event, both.c.x, both.c.label).order_by(both.c.visit_id, both.c.ts)
    )
    rows = read_rows(visits, result.all(), day)
    strings = {*rows.texts, *rows.labels}
    for w, is_user, values in rows.visits:
        if is_user:
            strings.add(w)
        strings.update(x for x in values if x is not None)
    parts = encode_day(rows, await _number(conn, strings))
    await conn.execute(FUNNEL_DAYS.insert(), [{"day": day, "part": p, "data": data} for p, data in parts.items()])
    return len(rows.offsets)


async def forget_funnel_days(conn: AsyncConnection, days: list[date]) -> None:
    """The encodings of days whose facts are deleted (a funnel counts facts only)."""
    if days:
        await conn.execute(sa.delete(FUNNEL_DAYS).where(FUNNEL_DAYS.c.day.in_(days)))


@dataclass
class EncodedDay:
    day: date
    visits: int
    rows: int
    parts: dict[str, np.ndarray]

    anonymous: int = 0

    def visit_of_row(self) -> np.ndarray:
        return np.repeat(np.arange(self.visits, dtype=np.int32), self.parts["c"])


async def encoded_days(conn: AsyncConnection, first: date, last: date) -> set[date]:
    """Days in [first, last] with an encoding of this format."""
    fd = FUNNEL_DAYS.c
    rows = await conn.execute(sa.select(fd.day, fd.data).where(fd.part == "h", fd.day >= first, fd.day <= last))
    out = set()
    for day, data in rows:
        if json.loads(bytes(data)).get("format") == FORMAT:
            out.add(day if isinstance(day, date) else date.fromisoformat(str(day)[:10]))
    return out


async def load_days(conn: AsyncConnection, days: Iterable[date], parts: Iterable[str]) -> list[EncodedDay]:
    fd = FUNNEL_DAYS.c
    wanted = sorted(set(days))
    if not wanted:
        return []
    raw: dict[date, dict[str, bytes]] = {}
    rows = await conn.execute(
        sa.select(fd.day, fd.part, fd.data).where(fd.day.in_(wanted), fd.part.in_(sorted({"h", *parts})))
    )
    for day, part, data in rows:
        d = day if isinstance(day, date) else date.fromisoformat(str(day)[:10])
        raw.setdefault(d, {})[part] = data
    out = []
    for d in wanted:
        found = raw.get(d, {})
        header = json.loads(bytes(found["h"]))
        arrays: dict[str, np.ndarray] = {}
        for part, data in found.items():
            if part == "h":
                continue
            arrays[part] = np.frombuffer(data, dtype=np.dtype(header["dtypes"][part]))
        out.append(EncodedDay(d, int(header["visits"]), int(header["rows"]), arrays, int(header["anonymous"])))
    return out
