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

import itertools
import json
from collections.abc import Iterable, Iterator
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
# Visits read and encoded at once by a rollup (`record_funnel_day`): at about 4 rows a visit, some
# 10-15 MB of Python objects, whatever the day's size. A 10M-event day encoded alone (931,798 visits):
# 20,000 a chunk 263 MB peak RSS (its backend 267 MB), 10,000 a chunk 244-247 MB (210 MB), 10-11 s both.
CHUNK_VISITS = 10_000


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
class _Chunk:
    """One chunk's visits (those with rows) and rows, encoded: the parts' arrays before the day's are joined."""

    arrays: dict[str, np.ndarray]
    anonymous: int


def encode_chunk(
    visit_cols: list[list[Any]],
    row_cols: list[list[Any]],
    ids: dict[str, int],
    anonymous_before: int = 0,
) -> _Chunk:
    """The parts (module doc) of some of a day's visitors. `visit_cols`: the visits' ids, whos, whether
    each is a user's, then the DIMS columns; `row_cols`: the rows' visit ids, microseconds from midnight,
    1 for a site event (else 0), paths or names, labels; both in any order. Anonymous visitors are
    numbered from `anonymous_before` (the day's earlier chunks')."""
    visit_ids, whos, users = visit_cols[0], visit_cols[1], visit_cols[2]
    index = {vid: i for i, vid in enumerate(visit_ids)}
    vi = np.fromiter(map(index.get, row_cols[0], itertools.repeat(-1)), dtype=np.int64, count=len(row_cols[0]))
    del index
    us = np.array(row_cols[1], dtype=np.int64)
    tokens = np.fromiter(map(ids.__getitem__, row_cols[3]), dtype=np.int64, count=len(row_cols[3])) * 2
    tokens += np.array(row_cols[2], dtype=np.int64)
    labels = np.fromiter(map(ids.__getitem__, row_cols[4]), dtype=np.uint32, count=len(row_cols[4]))
    kept = vi >= 0  # a row of no visit of the day: a funnel never reaches it
    vi, us, tokens, labels = vi[kept], us[kept], tokens[kept], labels[kept]
    order = np.lexsort((us, vi))  # visit by visit, each in time order
    vi, us, tokens, labels = vi[order], us[order], tokens[order], labels[order]
    per_visit = np.bincount(vi, minlength=len(visit_ids))
    with_rows = np.flatnonzero(per_visit)  # visits without rows are never reached
    counts = per_visit[with_rows]
    first_row = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    start = us[first_row] if len(us) else us
    offsets = us - np.repeat(start, counts)
    anonymous: dict[str, int] = {}
    who = [
        ids[whos[i]] if users[i] else -(anonymous_before + anonymous.setdefault(whos[i], len(anonymous)) + 1)
        for i in with_rows.tolist()
    ]
    arrays: dict[str, np.ndarray] = {
        "c": counts.astype(np.uint32),
        "w": np.array(who, dtype=np.int32),
        "s": start.astype(np.int64),
        "t": offsets.astype(np.uint32 if not len(offsets) or int(offsets.max()) <= _U32 else np.int64),
        "k": tokens.astype(np.uint32),
        "l": labels,
    }
    for d in range(len(DIMS)):
        column = visit_cols[3 + d]
        arrays[f"d{d}"] = np.array([0 if (x := column[i]) is None else ids[x] for i in with_rows.tolist()], np.int32)
    return _Chunk(arrays, len(anonymous))


def join_chunks(chunks: list[_Chunk]) -> Iterator[tuple[str, bytes]]:
    """The day's parts from its chunks, in order (each chunk's visits, then the next's), the header
    last. Each part is joined and packed only when asked for, its chunks' arrays dropped as it goes
    (a caller that stores each before asking for the next holds one packed part at a time)."""
    names = list(chunks[0].arrays)  # at least one chunk: a day without visits is one empty chunk
    n = sum(len(ch.arrays["c"]) for ch in chunks)
    rows = sum(len(ch.arrays["k"]) for ch in chunks)
    anonymous = sum(ch.anonymous for ch in chunks)
    dtypes: dict[str, str] = {}
    for name in names:
        pieces = [ch.arrays.pop(name) for ch in chunks]
        arr = np.concatenate(pieces)  # "t": 64 bits if any chunk's are
        del pieces
        if name == "c":
            arr = arr.astype(np.uint16 if n and int(arr.max()) < 2**16 else np.uint32)
        elif name == "w":
            arr = arr.astype(np.int32)
        data, dtypes[name] = _pack(arr)
        del arr
        yield name, data
        del data
    header = {
        "format": FORMAT, "visits": n, "rows": rows, "anonymous": anonymous, "dtypes": dtypes, "dims": list(DIMS),
    }  # fmt: skip
    yield "h", json.dumps(header, separators=(",", ":")).encode()


def encode_day(
    visit_cols: list[list[Any]],
    row_cols: list[list[Any]],
    ids: dict[str, int],
) -> tuple[dict[str, bytes], int]:
    """The parts of one day encoded in one chunk (`encode_chunk`), and its rows."""
    chunk = encode_chunk(visit_cols, row_cols, ids)
    rows = len(chunk.arrays["k"])
    return dict(join_chunks([chunk])), rows


async def _columns(conn: AsyncConnection, select: sa.Select[Any]) -> list[list[Any]]:
    """A SELECT's result column by column. PostgreSQL: one row of arrays (`array_agg` of each
    column: a million values decode several times faster than a million rows)."""
    width = len(select.selected_columns)
    if conn.dialect.name == "postgresql":
        sub = select.subquery("cols")
        row = (await conn.execute(sa.select(*(sa.func.array_agg(c) for c in sub.c)))).one()
        return [[] if x is None else x if isinstance(x, list) else list(x) for x in row]
    rows = (await conn.execute(select)).all()
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


async def _next_bound(conn: AsyncConnection, day: date, after: str | None, visits: int) -> str | None:
    """The last visitor of the chunk that starts after `after` and holds about `visits` visits (a
    visitor's visits all in one chunk); None: the rest of the day."""
    v = FACT_VISITS.c
    query = sa.select(v.visitor).where(v.day == day)
    if after is not None:
        query = query.where(v.visitor > after)
    found = (await conn.execute(query.order_by(v.visitor).offset(visits - 1).limit(1))).scalar()
    return None if found is None else str(found)


async def record_funnel_day(conn: AsyncConnection, day: date, chunk_visits: int = CHUNK_VISITS) -> int:
    """Replace the day's encoding with one made from its facts (the rollup, under the day's lock).
    Returns the rows encoded.

    Read and encoded a range of visitors at a time (about `chunk_visits` visits each, by the facts'
    (day, visitor) indexes): what Python holds of the day's rows at once stays the same however big
    the day; only the encoded arrays (12 bytes a row, 58 a visit) grow with it. A visit's rows are
    its visitor's, so a chunk holds whole visits; an anonymous visitor (`v:<visitor>`) is in one chunk."""
    fd = FUNNEL_DAYS.c
    await conn.execute(sa.delete(FUNNEL_DAYS).where(fd.day == day))
    v = FACT_VISITS.c
    pv, se = FACT_PAGE_VIEWS.c, FACT_SITE_EVENTS.c
    postgres = conn.dialect.name == "postgresql"

    def at(ts: Any) -> Any:
        if postgres:
            # The microseconds from midnight, exactly (EXTRACT of an interval is numeric).
            return sa.cast(sa.extract("epoch", ts - sa.cast(sa.literal(day), sa.DateTime)) * US, sa.BigInteger)
        return ts  # SQLite: parsed to a datetime below

    def within(column: Any, lo: str | None, hi: str | None) -> Any:
        return sa.and_(sa.true() if lo is None else column > lo, sa.true() if hi is None else column <= hi)

    chunks: list[_Chunk] = []
    anonymous = 0
    lo: str | None = None
    while True:
        hi = await _next_bound(conn, day, lo, chunk_visits)
        visit_cols = await _columns(
            conn,
            sa.select(v.id, v.who, v.who.like("u:%"), *(v[d] for d in DIMS)).where(
                v.day == day, within(v.visitor, lo, hi)
            ),
        )
        both = sa.union_all(
            sa.select(pv.visit_id, at(pv.ts), sa.literal(0).label("event"), pv.path.label("x"), pv.label).where(
                pv.day == day, within(pv.visitor, lo, hi)
            ),
            sa.select(se.visit_id, at(se.ts), sa.literal(1), se.name, se.label).where(
                se.day == day, within(se.visitor, lo, hi), se.kind == "event", se.visit_id.is_not(None)
            ),
        )
        row_cols = await _columns(conn, both)  # type: ignore[arg-type]
        if not postgres:
            midnight = datetime(day.year, day.month, day.day)
            parsed = (x if isinstance(x, datetime) else datetime.fromisoformat(str(x)) for x in row_cols[1])
            row_cols[1] = [
                ((td.days * 86_400 + td.seconds) * US + td.microseconds) for td in (x - midnight for x in parsed)
            ]
        strings = {*row_cols[3], *row_cols[4]}
        strings.update(w for w, user in zip(visit_cols[1], visit_cols[2], strict=True) if user)
        for column in visit_cols[3:]:
            strings.update(x for x in column if x is not None)
        chunk = encode_chunk(visit_cols, row_cols, await _number(conn, strings), anonymous)
        del visit_cols, row_cols, strings
        anonymous += chunk.anonymous
        chunks.append(chunk)
        if hi is None:
            break
        lo = hi
    rows = sum(len(ch.arrays["k"]) for ch in chunks)
    for part, data in join_chunks(chunks):  # one part packed and stored at a time
        await conn.execute(FUNNEL_DAYS.insert().values(day=day, part=part, data=data))
        del data
    return rows


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
