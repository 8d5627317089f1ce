"""Funnels' encoded days (`funnel_days`, `funnel_strings`, migration 0021): each closed day's visits
in columns, written by the rollup of the day from its facts, so that a funnel over rolled days is
matched with NumPy (`trackside.stats.funnel_days`) instead of SQL over every page view of the range.

What a day holds (one row per part, `data` the part's raw little-endian array):
- `h`: a JSON header: the format, how many visits and rows, each part's dtype;
- `c`: per visit, its rows (page views, and site events of kind "event" with a visit), `w`: its who
  (a signed-in user's `u:...` as the id of that string in `funnel_strings`, so a user is one key
  across days; an anonymous visitor `-(n + 1)`, n numbering the day's anonymous visitors), `s`: the
  microseconds from midnight UTC to its first row;
- `t`: per row, the microseconds since the previous row of its visit (0 for the first); `k`: its
  token, the id of its path (a page view) or of its name (a site event) times 2, plus 1 for an event;
  `l`: the id of its label;
- `d`: per visit dimension of `DIMS` (the visit's entry values), the id of the value, 0 for NULL.

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

from trackside.storage.tables import FACT_PAGE_VIEWS, FACT_SITE_EVENTS, FACT_VISITS, FUNNEL_DAYS, FUNNEL_STRINGS

FORMAT = 1
# The visit dimensions a funnel's filters may name (`visit:<name>`; `visit:country_name` reads `country`).
DIMS = (
    "source", "referrer", "utm_source", "utm_medium", "utm_campaign", "entry_page", "exit_page", "country",
    "device", "browser", "os",
)  # fmt: skip
ROW_PARTS = ("t", "k")  # what every funnel reads, with the visits' "c", "w", "s"
VISIT_PARTS = ("c", "w", "s")
US = 1_000_000
_U32 = 2**32 - 1


def _strings_select(day: date) -> sa.Select[Any]:
    """Every string of one day an encoding names (UNION: distinct, never NULL)."""
    pv, se, v = FACT_PAGE_VIEWS.c, FACT_SITE_EVENTS.c, FACT_VISITS.c
    events = [se.day == day, se.kind == "event", se.visit_id.is_not(None)]
    parts: list[sa.Select[Any]] = [
        sa.select(pv.path.label("x")).where(pv.day == day),
        sa.select(pv.label).where(pv.day == day),
        sa.select(se.name).where(*events),
        sa.select(se.label).where(*events),
        sa.select(v.who).where(v.day == day, v.who.like("u:%")),
    ]
    parts += [sa.select(v[d]).where(v.day == day, v[d].is_not(None)) for d in DIMS]
    return sa.union(*parts)  # type: ignore[return-value]


async def _number_strings(conn: AsyncConnection, day: date) -> dict[str, int]:
    fs = FUNNEL_STRINGS.c
    found = _strings_select(day).subquery("found")
    new = (
        sa.select(found.c.x).where(~sa.exists().where(fs.text == found.c.x)).order_by(found.c.x)
    )  # one order: two rollups adding the same strings wait, never deadlock
    insert = sa.insert(FUNNEL_STRINGS).from_select(["text"], new)
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        insert = pg_insert(FUNNEL_STRINGS).from_select(["text"], new).on_conflict_do_nothing(index_elements=["text"])
    else:
        insert = insert.prefix_with("OR IGNORE")
    await conn.execute(insert)
    again = _strings_select(day).subquery("again")
    rows = await conn.execute(sa.select(fs.id, fs.text).join(again, again.c.x == fs.text))
    return {text: int(sid) for sid, text in rows}


def _pack(arr: np.ndarray) -> tuple[bytes, str]:
    arr = np.ascontiguousarray(arr)
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    return arr.astype(dtype, copy=False).tobytes(), dtype.str


def encode_day(
    visits: dict[str, tuple[str, bool, tuple[Any, ...]]],
    rows: Iterable[tuple[str, datetime, int, str, str]],
    day: date,
    ids: dict[str, int],
) -> dict[str, bytes]:
    """The parts of one day: `visits` id -> (who, is a user, the DIMS values); `rows` (visit id, ts,
    1 for a site event else 0, path or name, label) ordered by visit id and time."""
    midnight = datetime(day.year, day.month, day.day)
    counts: list[int] = []
    who: list[int] = []
    start: list[int] = []
    dims: list[tuple[Any, ...]] = []
    deltas: list[int] = []
    tokens: list[int] = []
    labels: list[int] = []
    anonymous: dict[str, int] = {}
    current: str | None = None
    previous = 0
    for visit_id, ts, event, text, label in rows:
        td = ts - midnight
        us = (td.days * 86_400 + td.seconds) * US + td.microseconds
        if visit_id != current:
            visit = visits.get(visit_id)
            if visit is None:  # a row of no visit of the day: a funnel never reaches it
                continue
            current = visit_id
            w, is_user, values = visit
            if is_user:
                who.append(ids[w])
            else:
                who.append(-(anonymous.setdefault(w, len(anonymous)) + 1))
            dims.append(values)
            counts.append(0)
            start.append(us)
            previous = us
        counts[-1] += 1
        deltas.append(us - previous)
        previous = us
        tokens.append(ids[text] * 2 + event)
        labels.append(ids[label])
    n = len(counts)
    c = np.array(counts, dtype=np.uint32)
    t = np.array(deltas, dtype=np.int64)
    arrays = {
        "c": c.astype(np.uint16) if n and int(c.max()) < 2**16 else c,
        "w": np.array(who, dtype=np.int32),
        "s": np.array(start, dtype=np.int64),
        "t": t.astype(np.uint32) if not len(t) or int(t.max()) <= _U32 else t,
        "k": np.array(tokens, dtype=np.uint32),
        "l": np.array(labels, dtype=np.uint32),
        "d": np.array(
            [[0 if x is None else ids[x] for x in values] for values in dims] or np.zeros((0, len(DIMS))),
            dtype=np.int32,
        ).T.copy(),
    }
    parts: dict[str, bytes] = {}
    dtypes: dict[str, str] = {}
    for name, arr in arrays.items():
        parts[name], dtypes[name] = _pack(arr)
    header = {"format": FORMAT, "visits": n, "rows": int(c.sum()), "dtypes": dtypes, "dims": list(DIMS)}
    parts["h"] = json.dumps(header, separators=(",", ":")).encode()
    return parts


async def record_funnel_day(conn: AsyncConnection, day: date) -> int:
    """Replace the day's encoding with one made from its facts (the rollup, under the day's lock).
    Returns the rows encoded."""
    fd = FUNNEL_DAYS.c
    await conn.execute(sa.delete(FUNNEL_DAYS).where(fd.day == day))
    ids = await _number_strings(conn, day)
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
    # Typed through the table's columns (SQLite: `ts` parsed to a datetime).
    rows = await conn.execute(
        sa.select(
            both.c.visit_id, sa.type_coerce(both.c.ts, sa.DateTime), both.c.event, both.c.x, both.c.label
        ).order_by(both.c.visit_id, both.c.ts)
    )
    parts = encode_day(visits, rows, day, ids)
    await conn.execute(FUNNEL_DAYS.insert(), [{"day": day, "part": p, "data": data} for p, data in parts.items()])
    return int(json.loads(parts["h"])["rows"])


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

    def visit_of_row(self) -> np.ndarray:
        return np.repeat(np.arange(self.visits, dtype=np.int64), self.parts["c"].astype(np.int64))

    def first_rows(self) -> np.ndarray:
        c = self.parts["c"].astype(np.int64)
        return np.concatenate(([0], np.cumsum(c)[:-1])) if len(c) else c

    def times(self, visit_of_row: np.ndarray) -> np.ndarray:
        """Each row's microseconds from midnight UTC (rows in visit and time order)."""
        deltas = self.parts["t"].astype(np.int64)
        running = np.cumsum(deltas)
        first = self.first_rows()
        # The visit's start, plus the deltas since its first row.
        base = self.parts["s"] - running[first] if len(first) else self.parts["s"]
        return running + base[visit_of_row]


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
            arr = np.frombuffer(data, dtype=np.dtype(header["dtypes"][part]))
            if part == "d":
                arr = arr.reshape(len(header["dims"]), header["visits"])
            arrays[part] = arr
        out.append(EncodedDay(d, int(header["visits"]), int(header["rows"]), arrays))
    return out
