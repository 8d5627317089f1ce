"""Item titles at read time: the stored ones (`item_titles`), and for items without one, the title
field of the item's API answer (`TRACKSIDE_TITLE_URL`, `TRACKSIDE_TITLE_FIELD`), asked as
`TRACKSIDE_OWNER_URL` is asked (the same HTTP client, the id put into a URL template), never parsed
out of responses at capture.

An answer waits at most `TRACKSIDE_TITLE_TIMEOUT` for titles it asks for: those that come later
are stored for the next answer, so a slow upstream never holds a panel back for long. The site is
asked without credentials: a title is shown to every reader of the dashboard (share links too), so
it must be what anyone may see, and Trackside's own tokens are never the site's to read. An item
whose answer has no title (an error, a 404, no such field) is not asked again for `RETRY_SECONDS`.

Ids are asked only as plain path segments (letters, digits, `-`, `_`), so `..` or a slash can never
move the question to another path of the API."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from sidecar.upstreams import Upstreams
from trackside.item_titles import clean_title, field_of, item_page, kind_name, page_pattern
from trackside.settings import Settings
from trackside.stats.v2.schema import Query, V2Error
from trackside.storage.titles import Item, read_titles, read_titles_by_id, store_fetched_title

logger = logging.getLogger("trackside.titles")

_ASKABLE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
RETRY_SECONDS = 600.0  # an item whose answer had no title is asked again after this
FETCH_SECONDS = 10.0  # one question to the site, whatever waits for it
MAX_FETCHES = 16  # questions in flight at once, per process
MAX_FORGOTTEN = 10_000
CONTENT_ID = "event:props:content_id"
CONTENT_KIND = "event:props:content_kind"


class ItemTitles:
    def __init__(
        self, settings: Settings, engine: AsyncEngine, client: httpx.AsyncClient, upstreams: Upstreams
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.client = client
        self.upstreams = upstreams
        self._flights: dict[Item, asyncio.Task[str | None]] = {}
        self._without: dict[Item, float] = {}  # items whose answer had no title: when to ask again
        self._slots = asyncio.Semaphore(MAX_FETCHES)
        self.fetched = 0  # questions asked (for tests and metrics)

    def kinds(self) -> list[dict[str, Any]]:
        """The settings' content kinds, in their order: name, page template, whether titles are asked."""
        return [
            {
                "kind": kind,
                "name": kind_name(kind),
                "page": page_pattern(patterns),
                "title_url": kind in self.settings.title_url,
            }
            for kind, patterns in self.settings.content_rules.items()
        ]

    def page(self, kind: str, item: str) -> str | None:
        return item_page(kind, item, self.settings.content_rules)

    async def titles(self, items: Iterable[Item]) -> dict[Item, str]:
        """The titles of these items that are stored or come within the title timeout."""
        wanted = list(dict.fromkeys(items))
        if not wanted:
            return {}
        async with self.engine.connect() as conn:
            found = await read_titles(conn, wanted)
        missing = [i for i in wanted if i not in found and self._askable(i)]
        if missing:
            flights = [self._flight(i) for i in missing]
            await asyncio.wait(flights, timeout=self.settings.title_timeout)
            for item, flight in zip(missing, flights, strict=True):
                if flight.done() and not flight.cancelled() and flight.exception() is None:
                    title = flight.result()
                    if title is not None:
                        found[item] = title
        return found

    async def with_titles(self, kind: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Ranked rows (`{"id": ...}`) with each item's title (None: none known yet) and page."""
        found = await self.titles((kind, str(r["id"])) for r in items)
        return [{**r, "title": found.get((kind, str(r["id"]))), "page": self.page(kind, str(r["id"]))} for r in items]

    async def v2_titles(self, result: dict[str, Any], q: Query) -> None:
        """`include.titles` of a v2 query: `meta.titles` and `meta.pages`, one entry per result row (None
        where none is known), for queries grouped by `event:props:content_id`. A row's kind is its
        `event:props:content_kind` dimension, else the one kind an `is` filter names; else an id's
        stored title of any kind (the settings' first kind where two have one), never asked for."""
        result.setdefault("query", {}).setdefault("include", {})["titles"] = True
        dimensions, filters = tuple(q.dimensions), list(q.raw_filters)
        if CONTENT_ID not in dimensions:
            return
        at = dimensions.index(CONTENT_ID)
        kind_at = dimensions.index(CONTENT_KIND) if CONTENT_KIND in dimensions else None
        rows = result.get("results", [])
        ids = [str(r["dimensions"][at]) for r in rows]
        kinds = [str(r["dimensions"][kind_at]) if kind_at is not None else _filtered_kind(filters) for r in rows]
        known = await self.titles((k, i) for k, i in zip(kinds, ids, strict=True) if k is not None)
        loose = [i for k, i in zip(kinds, ids, strict=True) if k is None]
        by_id: dict[str, tuple[str, str]] = {}
        if loose:
            async with self.engine.connect() as conn:
                stored = await read_titles_by_id(conn, loose, list(self.settings.content_rules))
            for preferred in reversed(list(self.settings.content_rules)):  # the settings' first kind wins
                by_id.update({i: (k, t) for (k, i), t in stored.items() if k == preferred})
        titles: list[str | None] = []
        pages: list[str | None] = []
        for row_kind, item in zip(kinds, ids, strict=True):
            kind: str | None = row_kind
            title: str | None = None
            if row_kind is None:
                kind, title = by_id.get(item, (None, None))
            else:
                title = known.get((row_kind, item))
            titles.append(title)
            pages.append(self.page(kind, item) if kind is not None else None)
        result.setdefault("meta", {}).update(titles=titles, pages=pages)

    def _askable(self, item: Item) -> bool:
        kind, content_id = item
        if kind not in self.settings.title_url or not _ASKABLE_ID.match(content_id):
            return False
        again = self._without.get(item)
        if again is not None and again > time.monotonic():
            return False
        return True

    def _flight(self, item: Item) -> asyncio.Task[str | None]:
        """The one question in flight for this item (callers share it; none cancels it)."""
        flight = self._flights.get(item)
        if flight is None:
            flight = asyncio.create_task(self._fetch(item))
            self._flights[item] = flight
            flight.add_done_callback(lambda done: self._landed(item, done))
        return flight

    def _landed(self, item: Item, done: asyncio.Task[str | None]) -> None:
        if self._flights.get(item) is done:
            del self._flights[item]
        if not done.cancelled():
            done.exception()  # retrieved: its callers may be gone

    def _url(self, kind: str, content_id: str) -> str:
        template = self.settings.title_url[kind].replace("{id}", quote(content_id, safe=""))
        if template.startswith("/"):
            # A path goes where the proxy would send it (the route rules, a stripped /api prefix).
            path, sep, query = template.partition("?")
            target, sent = self.upstreams.resolve(path)
            return target.base + sent + sep + query
        return template

    async def _fetch(self, item: Item) -> str | None:
        kind, content_id = item
        title = None
        async with self._slots:
            self.fetched += 1
            try:
                answer = await self.client.get(
                    self._url(kind, content_id), headers={"accept": "application/json"}, timeout=FETCH_SECONDS
                )
                if answer.status_code == 200:
                    title = clean_title(field_of(answer.json(), self.settings.title_field))
            except (httpx.HTTPError, ValueError):
                title = None
        if title is None:
            if len(self._without) >= MAX_FORGOTTEN:
                self._without.clear()
            self._without[item] = time.monotonic() + RETRY_SECONDS
            return None
        try:
            async with self.engine.begin() as conn:
                await store_fetched_title(conn, item, title)
        except Exception:  # shown now anyway; asked again next time
            logger.exception("storing the title of %s %s failed", kind, content_id)
        return title

    async def close(self) -> None:
        for flight in list(self._flights.values()):
            flight.cancel()


def _filtered_kind(filters: list[Any]) -> str | None:
    """The one content kind a v2 query's top-level `is` filter names, if it names one."""
    for f in filters:
        if isinstance(f, list) and len(f) >= 3 and f[0] == "is" and f[1] == CONTENT_KIND:
            values = f[2]
            if isinstance(values, list) and len(values) == 1 and isinstance(values[0], str):
                return values[0]
    return None


def take_titles(raw: Any) -> tuple[bool, Any]:
    """A v2 query body without `include.titles` (this sidecar's own, not Plausible's), and its value."""
    if not isinstance(raw, dict) or not isinstance(raw.get("include"), dict) or "titles" not in raw["include"]:
        return False, raw
    include = dict(raw["include"])
    titles = include.pop("titles")
    if not isinstance(titles, bool):
        raise V2Error("include.titles is true or false")
    rest = {k: v for k, v in raw.items() if k != "include"}
    return titles, {**rest, "include": include} if include else rest
