"""Page-view sums of the days whose raw events are kept, kept by derivation, so that sitewide figures
of today are a read of a few hundred rows instead of a grouping of the day's page views, and so is
the grouping of page views of a day's rollup (again when late events made a rolled day dirty).

Derivation replaces a visitor-day's page views from a cut on (`trackside.storage.facts._replace`).
It knows the rows it deletes and the rows it inserts, so it moves the sums by their difference, in
the same transaction:
- `fact_sum_who`: per (day, breakdown, key, who) the page views of signed-in uniques (`who`
  "u:<user>", as in the facts). A unique is counted while its row is above 0.
- anonymous uniques ("v:<visitor>", one visitor-day each): one row per visitor-day with its
  counts per breakdown key (`trackside.storage.visitor_sums`), counted while a key is above 0.
- `fact_sums`: per (day, breakdown, key) the page views, the signed-in ones, and the uniques,
  signed-in ones being those whose `who` names a user. A unique's count going from 0 to above (or
  back) moves the uniques by one: exact, never an estimate.

The breakdowns are those of `fact_reads.site_dims` for page views (`PAGE_VIEW_DIMS`, an empty key
skipped, hours as "00".."23"), plus `dim` "" with key "" for the day's totals. The day's API calls
ride along in `fact_sums` (`COUNTED`, key "", `n` and `n_auth` only), which sitewide reads otherwise
summed over every visitor-day of the day (13-45 ms of a cold read at 1.4 million events). Their row is
made, at 0, with the day's first sums, so a day started before it existed has none and is summed from
its facts. (Impressions cannot ride along: an author's own are left out by the same changing map.) Looks and other
facts are not summed here: the author's own looks are left out of figures by a map that can change
after the look (`item_authors`), which a sum kept at derivation could not follow.

A day's sums are complete only if they were kept from its first fact on: `fact_sum_days` names such
days. A day is added when derivation first writes facts for it and finds no page view, look or
impression stored yet (or by the migration that made these tables, from the facts then). A rollup
keeps them: a rolled day can be rolled again while its raw events are kept (late events derived
into its facts move its sums as they do today's), and its rollups read them. Pruning its raw events
deletes them (`drop_raw_pruned`; fact pruning deletes any left). A clean rolled day is read from its
daily rows, never from its sums; a dirty one (read from facts until rolled again) from its sums, the
same figures. Days rolled before rolled days kept their sums are not named: grouped from facts. Item
sums (`trackside.storage.item_sums`) follow the same days.

Each transaction applies its changes once, at its end, every row in one order (table, then key):
two transactions never wait on each other in a cycle.

Concurrency: on PostgreSQL two derivations of different visitor-days can move the same `who` row
(one user on two devices). The upsert returns each row's value after this transaction's change,
under its row lock, so the old value is that minus the change: the 0-crossing is decided by one
transaction alone. Rows are written in key order (no cycle between two writers). SQLite has one
writer at a time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.storage.tables import (
    FACT_IMPRESSIONS,
    FACT_LOOKS,
    FACT_PAGE_VIEWS,
    FACT_SUM_DAYS,
    FACT_SUM_WHO,
    FACT_SUMS,
    ROLLUP_DAYS,
    SUM_TABLES,
)

# Breakdowns of page views (the fact column of each): the same as sitewide's SQL grouping.
PAGE_VIEW_DIMS = ("label", "country", "device", "browser", "os", "referrer", "hour", "utm_source")
TOTAL = ("", "")
SumKey = tuple[str, str, str]  # (dim, key, who)
# A day's sums as `read` returns them: per (dim, key) its four figures, and the signed-in users.
Sums = tuple[dict[tuple[str, str], list[int]], set[str]]
# Counts of other facts kept beside the page views' sums (dim, key ""): [n, n signed in] moved by derivation.
API_CALLS = "#api_calls"
COUNTED = (API_CALLS,)


def _pairs(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = [TOTAL]
    for dim in PAGE_VIEW_DIMS:
        value = row[dim]
        if dim == "hour":
            out.append((dim, f"{int(value):02d}"))
        elif value:
            out.append((dim, value))
    return out


def tally(deltas: Counter[SumKey], rows: Iterable[Any], sign: int) -> None:
    """Add (`sign` 1) or take away (-1) these page-view rows' counts (`get`, not `+=`: a Counter's new key
    costs a Python-level `__missing__` call, and a drain of 150,000 events tallies a million keys)."""
    get = deltas.get
    for row in rows:
        who = row["who"]
        for dim, key in _pairs(row):
            k = (dim, key, who)
            deltas[k] = get(k, 0) + sign


async def kept(conn: AsyncConnection, day: date) -> bool:
    """Whether the day's sums are kept, starting them when the day has no page view, look or
    impression yet."""
    if (await conn.execute(select(FACT_SUM_DAYS.c.day).where(FACT_SUM_DAYS.c.day == day))).first() is not None:
        return True
    for table in (FACT_PAGE_VIEWS, FACT_LOOKS, FACT_IMPRESSIONS):
        if (await conn.execute(select(table.c.day).where(table.c.day == day).limit(1))).first() is not None:
            # Facts stored before sums were kept (or the day was rolled up): reads group facts.
            return False
    postgres = conn.dialect.name == "postgresql"
    await conn.exec_driver_sql(
        "INSERT INTO fact_sum_days (day) VALUES ($1) ON CONFLICT DO NOTHING"
        if postgres
        else "INSERT INTO fact_sum_days (day) VALUES (?) ON CONFLICT DO NOTHING",
        (day,) if postgres else (day.isoformat(),),
    )
    # The other counts start at 0 with the day: their rows say they are kept (`read`).
    await conn.exec_driver_sql(
        "INSERT INTO fact_sums (day, dim, key, n, n_auth, visitors, visitors_auth) "
        + ("VALUES ($1, $2, '', 0, 0, 0, 0)" if postgres else "VALUES (?, ?, '', 0, 0, 0, 0)")
        + " ON CONFLICT DO NOTHING",
        [(day, dim) if postgres else (day.isoformat(), dim) for dim in COUNTED],
    )
    return True


async def apply(
    conn: AsyncConnection,
    day: date,
    deltas: Counter[SumKey],
    anonymous: Counter[tuple[str, str]],
    visitors: Counter[tuple[str, str]],
    counted: Mapping[str, list[int]] | None = None,
) -> None:
    """Move the day's sums by these changes of signed-in uniques' page views (zero changes
    skipped), `anonymous` ones' page views per (dim, key), by `visitors`, the anonymous
    uniques moved per (dim, key) (`visitor_sums`), and by `counted`: per `COUNTED` dim, the change
    of [count, signed-in count]."""
    changes = sorted((k, n) for k, n in deltas.items() if n)
    totals: dict[tuple[str, str], list[int]] = {}
    if changes:
        after = await add_counts(conn, "fact_sum_who", ("dim", "key", "who"), day, changes, returning=True)
        for (dim, key, who), n in changes:
            now = after[(dim, key, who)]
            moved = (now > 0) - (now - n > 0)
            t = totals.setdefault((dim, key), [0, 0, 0, 0])
            t[0] += n
            t[1] += n
            t[2] += moved
            t[3] += moved
    for pair, n in anonymous.items():
        totals.setdefault(pair, [0, 0, 0, 0])[0] += n
    for pair, moved in visitors.items():
        totals.setdefault(pair, [0, 0, 0, 0])[2] += moved
    for dim, (n, n_auth) in (counted or {}).items():
        t = totals.setdefault((dim, ""), [0, 0, 0, 0])
        t[0] += n
        t[1] += n_auth
    rows = [(day, dim, key, *t) for (dim, key), t in sorted(totals.items()) if any(t)]
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql(
            "INSERT INTO fact_sums (day, dim, key, n, n_auth, visitors, visitors_auth) "
            "SELECT $1, * FROM unnest($2::varchar[], $3::varchar[], $4::bigint[], $5::bigint[], $6::bigint[], "
            "$7::bigint[]) ON CONFLICT (day, dim, key) DO UPDATE SET n = fact_sums.n + EXCLUDED.n, "
            "n_auth = fact_sums.n_auth + EXCLUDED.n_auth, visitors = fact_sums.visitors + EXCLUDED.visitors, "
            "visitors_auth = fact_sums.visitors_auth + EXCLUDED.visitors_auth",
            (day, *(list(column) for column in zip(*(r[1:] for r in rows), strict=True))),
        )
    else:
        await conn.exec_driver_sql(
            "INSERT INTO fact_sums (day, dim, key, n, n_auth, visitors, visitors_auth) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (day, dim, key) DO UPDATE SET n = n + excluded.n, n_auth = n_auth + excluded.n_auth, "
            "visitors = visitors + excluded.visitors, visitors_auth = visitors_auth + excluded.visitors_auth",
            [(day.isoformat(), *r[1:]) for r in rows],
        )


async def add_counts(
    conn: AsyncConnection,
    table: str,
    keys: tuple[str, ...],
    day: date,
    changes: list[tuple[Any, int]],
    *,
    returning: bool = False,
) -> dict[Any, int]:
    """Add each change to its row's `n` (a row made at 0 when missing), rows in key order. With
    `returning`, each row's `n` after the change (the last key column is the `who`, indexed with
    the day: on SQLite the rows are read first; one writer at a time, nothing moves them between)."""
    if conn.dialect.name == "postgresql":
        arrays = ", ".join(f"${i + 2}::varchar[]" for i in range(len(keys)))
        sql = (
            f"INSERT INTO {table} (day, {', '.join(keys)}, n) SELECT $1, * FROM unnest({arrays}, "
            f"${len(keys) + 2}::bigint[]) ON CONFLICT (day, {', '.join(keys)}) DO UPDATE SET n = {table}.n + EXCLUDED.n"
        )
        if returning:
            sql += f" RETURNING {', '.join(keys)}, n"
        columns = [[k[i] for k, _ in changes] for i in range(len(keys))]
        result = await conn.exec_driver_sql(sql, (day, *columns, [n for _, n in changes]))
        rows: Any = result.all() if returning else ()
        return {tuple(r[:-1]): int(r[-1]) for r in rows}
    current: dict[Any, int] = {}
    if returning:
        whos = sorted({k[-1] for k, _ in changes})
        for first in range(0, len(whos), 500):
            part = whos[first : first + 500]
            marks = ", ".join("?" * len(part))
            found = await conn.exec_driver_sql(
                f"SELECT {', '.join(keys)}, n FROM {table} WHERE day = ? AND {keys[-1]} IN ({marks})",
                (day.isoformat(), *part),
            )
            for r in found.all():
                current[tuple(r[:-1])] = int(r[-1])
    await conn.exec_driver_sql(
        f"INSERT INTO {table} (day, {', '.join(keys)}, n) VALUES ({', '.join('?' * (len(keys) + 2))}) "
        f"ON CONFLICT (day, {', '.join(keys)}) DO UPDATE SET n = n + excluded.n",
        [(day.isoformat(), *k, n) for k, n in changes],
    )
    return {k: current.get(tuple(k), 0) + n for k, n in changes} if returning else {}


async def read(conn: AsyncConnection, day: date, *, with_users: bool) -> Sums | None:
    """The day's sums, or None when they are not kept: per (dim, key) [page views, signed-in ones,
    uniques, signed-in uniques] (dim "" key "": the totals), `COUNTED` dims with key "" when kept
    (zeros included), and with `with_users` the signed-in users."""
    if (await conn.execute(select(FACT_SUM_DAYS.c.day).where(FACT_SUM_DAYS.c.day == day))).first() is None:
        return None
    s = FACT_SUMS.c
    sums = {
        (dim, key): [int(n), int(n_auth), int(v), int(v_auth)]
        for dim, key, n, n_auth, v, v_auth in await conn.execute(
            select(s.dim, s.key, s.n, s.n_auth, s.visitors, s.visitors_auth).where(
                s.day == day, or_(s.n > 0, s.dim.in_(COUNTED))
            )
        )
    }
    users: set[str] = set()
    if with_users:
        w = FACT_SUM_WHO.c
        # "u:" .. "u;": the signed-in uniques, by the (day, who) index.
        query = select(w.who).where(w.day == day, w.dim == "", w.key == "", w.who >= "u:", w.who < "u;", w.n > 0)
        users = {who[2:] for who in (await conn.execute(query)).scalars()}
    return sums, users


async def drop_raw_pruned(conn: AsyncConnection) -> list[date]:
    """Delete the sums of days whose raw events are pruned (never rolled again: `rollup.DayPruned`,
    and never derived again: their late events only add to their daily rows). Returns those days."""
    days = ROLLUP_DAYS.c
    query = select(FACT_SUM_DAYS.c.day).where(
        FACT_SUM_DAYS.c.day.in_(select(days.day).where(days.raw_pruned.is_(True)))
    )
    pruned = sorted((await conn.execute(query)).scalars())
    await drop(conn, pruned)
    return pruned


async def drop(conn: AsyncConnection, days: list[date]) -> None:
    """Delete these days' sums (their raw events or their facts pruned)."""
    if not days:
        return
    for table in SUM_TABLES:
        await conn.execute(delete(table).where(table.c.day.in_(days)))
