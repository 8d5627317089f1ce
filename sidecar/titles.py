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
from trackside.storage.titles import Item, read_titles, read_titles_by_id, store_fetched_title

logger = logging.getLogger("trackside.titles")

_ASKABLE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
RETRY_SECONDS = 600.0  # an item whose answer had no title is asked again after this
FETCH_SECONDS = 10.0  # one question to the site, whatever waits for it
MAX_FETCHES = 16  # questions in flight at once, per process
MAX_FORGOTTEN = 10_000


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

    async def titles_by_id(self, ids: Iterable[str], kinds: list[str]) -> dict[str, str]:
        """Titles of bare ids (an answer grouped by id alone): the stored title of the id in one of
        `kinds`; where only one kind is possible, one not stored yet is asked for too."""
        ids = list(dict.fromkeys(ids))
        if len(kinds) == 1:
            return {i: t for (_, i), t in (await self.titles((kinds[0], i) for i in ids)).items()}
        async with self.engine.connect() as conn:
            stored = await read_titles_by_id(conn, ids, kinds)
        out: dict[str, str] = {}
        for kind in reversed(kinds):  # the settings' first kind wins where an id is in two
            out.update({i: t for (k, i), t in stored.items() if k == kind})
        return out

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
