"""Item titles in `item_titles` (`trackside.item_titles`): stored from the hints a batch carries,
and from the item's API answer when the dashboard asks for an item without one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from trackside.item_titles import MAX_TITLE
from trackside.storage.tables import ITEM_TITLES

Item = tuple[str, str]  # (content kind, content id)
# Items read in one statement (an OR of pairs): a panel shows at most 100.
READ_CHUNK = 200


def _upsert(conn: AsyncConnection) -> Any:
    stmt = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(ITEM_TITLES)
    return stmt.on_conflict_do_update(
        index_elements=["content_kind", "content_id"],
        set_={"title": stmt.excluded.title, "updated_at": stmt.excluded.updated_at},
    )


async def store_titles(conn: AsyncConnection, titles: Mapping[Item, str]) -> None:
    """The titles a batch's responses hinted (`X-Trackside-Title`): the latest replaces the stored one
    (sorted, so two writers take row locks in one order)."""
    if not titles:
        return
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [
        {"content_kind": k[:32], "content_id": i[:128], "title": t[:MAX_TITLE], "updated_at": now}
        for (k, i), t in sorted(titles.items())
    ]
    await conn.execute(_upsert(conn), rows)


async def read_titles(conn: AsyncConnection, items: Iterable[Item]) -> dict[Item, str]:
    """The stored titles of these items (those without one are left out)."""
    wanted = sorted(set(items))
    found: dict[Item, str] = {}
    t = ITEM_TITLES.c
    for first in range(0, len(wanted), READ_CHUNK):
        chunk = wanted[first : first + READ_CHUNK]
        where = or_(*(and_(t.content_kind == k, t.content_id == i) for k, i in chunk))
        for row in await conn.execute(select(t.content_kind, t.content_id, t.title).where(where)):
            found[(row.content_kind, row.content_id)] = row.title
    return found


async def read_titles_by_id(conn: AsyncConnection, ids: Iterable[str], kinds: Iterable[str]) -> dict[Item, str]:
    """Stored titles of these ids in any of these kinds (an answer that names ids without kinds)."""
    wanted = sorted(set(ids))
    kinds = list(kinds)
    found: dict[Item, str] = {}
    t = ITEM_TITLES.c
    for first in range(0, len(wanted), READ_CHUNK):
        chunk = wanted[first : first + READ_CHUNK]
        stmt = select(t.content_kind, t.content_id, t.title).where(t.content_id.in_(chunk), t.content_kind.in_(kinds))
        for row in await conn.execute(stmt):
            found[(row.content_kind, row.content_id)] = row.title
    return found


async def store_fetched_title(conn: AsyncConnection, item: Item, title: str) -> None:
    """A title read from the item's API answer."""
    await store_titles(conn, {item: title})
