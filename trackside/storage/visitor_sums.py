"""What each anonymous visitor-day adds to the day's sums, one row per visitor-day.

An anonymous unique ("v:<visitor>") belongs to one visitor-day: the visitor hash changes with the
daily salt. Keeping it as one row per (breakdown, key, who) in `fact_sum_who` cost nine upserts for
every page view derived (one per breakdown) and one per item looked at, with their index
maintenance: most of a derivation's writing. Here a visitor-day's counts per breakdown key and per
item are one row (`fact_sum_visitors`), read, moved and written back once per derivation; a key
going from 0 to above (or back) moves the day's uniques (`fact_sums.visitors`) or the item's
viewers by one, exactly as a `who` row crossing 0 does. Signed-in uniques stay in `fact_sum_who`
and `item_sum_who`: a user spans visitor-days (two devices), so two derivations can move one
user's row at once.

Concurrency: two derivations of one visitor-day never write at once: the deriver writes a
visitor-day only while it holds the visitor-day's mark locked (`facts.commit_round`), as does a
rollup's derivation (which locks every mark of its day first: `rollup.lock_marks_of`). On PostgreSQL the rows are also
read `FOR UPDATE`.

The row's `counts` is JSON: a list of [kind, a, b, n], kind "p" for page views by breakdown `a`
and key `b` (as `day_sums`: `a` "" and `b` "" for all of them), "i" for looks of item kind `a` and
id `b`; keys at 0 are left out, and a row with none is deleted."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

PAGE = "p"
ITEM = "i"
Key = tuple[str, str, str]  # (PAGE, dim, key) or (ITEM, kind, item)

_CHUNK = 500


def split_pages(deltas: Counter[tuple[str, str, str]], into: dict[str, Counter[Key]]) -> None:
    """Move the anonymous `who`s' changes of page-view sums ((dim, key, who) -> n) into per-visitor
    changes; the signed-in ones stay in `deltas`."""
    _split(deltas, PAGE, into)


def split_items(whos: Counter[tuple[str, str, str]], into: dict[str, Counter[Key]]) -> None:
    """The same for item viewers ((kind, item, who) -> looks)."""
    _split(whos, ITEM, into)


def _split(deltas: Counter[tuple[str, str, str]], kind: str, into: dict[str, Counter[Key]]) -> None:
    pop = deltas.pop
    for k in [k for k in deltas if k[2][:2] == "v:"]:
        n = pop(k)
        if n:
            counts = into[k[2][2:]]
            key = (kind, k[0], k[1])
            counts[key] = counts.get(key, 0) + n


def decode(text: str | None) -> Counter[Key]:
    return Counter({(kind, a, b): n for kind, a, b, n in orjson.loads(text)}) if text else Counter()


def encode(counts: Counter[Key]) -> str:
    return orjson.dumps([[*k, n] for k, n in sorted(counts.items()) if n]).decode()


async def move(
    conn: AsyncConnection, day: date, changes: dict[str, Counter[Key]]
) -> tuple[Counter[tuple[str, str]], Counter[tuple[str, str]], Counter[tuple[str, str]]]:
    """Move these visitor-days' counts; returns their page views moved per breakdown key (dim, key),
    and by how many the uniques moved, per breakdown key and per item (kind, item)."""
    views: Counter[tuple[str, str]] = Counter()
    pages: Counter[tuple[str, str]] = Counter()
    items: Counter[tuple[str, str]] = Counter()
    visitors = sorted(v for v, c in changes.items() if any(c.values()))
    if not visitors:
        return views, pages, items
    postgres = conn.dialect.name == "postgresql"
    old: dict[str, str] = {}
    for first in range(0, len(visitors), _CHUNK):
        part = visitors[first : first + _CHUNK]
        if postgres:
            result = await conn.exec_driver_sql(
                "SELECT visitor, counts FROM fact_sum_visitors WHERE day = $1 AND visitor = ANY($2::varchar[]) "
                "ORDER BY visitor FOR UPDATE",
                (day, part),
            )
        else:
            result = await conn.exec_driver_sql(
                "SELECT visitor, counts FROM fact_sum_visitors WHERE day = ? "
                f"AND visitor IN ({', '.join('?' * len(part))})",
                (day.isoformat(), *part),
            )
        rows: Any = result.all()
        old.update((r[0], r[1]) for r in rows)
    written: list[tuple[str, str]] = []
    gone: list[str] = []
    for visitor in visitors:
        before = decode(old.get(visitor))
        after = before.copy()
        for key, n in changes[visitor].items():
            if not n:
                continue
            after[key] += n
            kind, a, b = key
            if kind == PAGE:
                views[(a, b)] += n
            moved = (after[key] > 0) - (before[key] > 0)
            if moved:
                (pages if kind == PAGE else items)[(a, b)] += moved
        if any(n > 0 for n in after.values()):
            written.append((visitor, encode(after)))
        elif visitor in old:
            gone.append(visitor)
    await _write(conn, day, written, gone, postgres)
    return views, pages, items


async def _write(
    conn: AsyncConnection, day: date, written: list[tuple[str, str]], gone: list[str], postgres: bool
) -> None:
    if postgres:
        if written:
            await conn.exec_driver_sql(
                "INSERT INTO fact_sum_visitors (day, visitor, counts) "
                "SELECT $1, * FROM unnest($2::varchar[], $3::text[]) "
                "ON CONFLICT (day, visitor) DO UPDATE SET counts = EXCLUDED.counts",
                (day, [v for v, _ in written], [c for _, c in written]),
            )
        if gone:
            await conn.exec_driver_sql(
                "DELETE FROM fact_sum_visitors WHERE day = $1 AND visitor = ANY($2::varchar[])", (day, gone)
            )
        return
    if written:
        await conn.exec_driver_sql(
            "INSERT INTO fact_sum_visitors (day, visitor, counts) VALUES (?, ?, ?) "
            "ON CONFLICT (day, visitor) DO UPDATE SET counts = excluded.counts",
            [(day.isoformat(), v, c) for v, c in written],
        )
    if gone:
        await conn.exec_driver_sql(
            "DELETE FROM fact_sum_visitors WHERE day = ? AND visitor = ?", [(day.isoformat(), v) for v in gone]
        )


def per_visitor() -> dict[str, Counter[Key]]:
    return defaultdict(Counter)
