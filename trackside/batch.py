"""A batch: what the flusher hands to storage (or to Redis, or to the spool) in one piece."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from trackside.events import FIELDS, Event, as_row, new_event_id

BotKey = tuple[date, str, str]  # (UTC day, bot, route label)


@dataclass(slots=True)
class Batch:
    id: str = field(default_factory=new_event_id)
    events: list[Event] = field(default_factory=list)
    bots: Counter[BotKey] = field(default_factory=Counter)
    aliases: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, site's id) -> public id
    titles: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, id) -> hinted title

    def __len__(self) -> int:
        return len(self.events) + sum(self.bots.values())

    async def store_titles(self, conn: Any) -> None:
        """The titles the batch's responses hinted, in the writer's transaction (`trackside.storage.titles`)."""
        from trackside.storage.titles import store_titles

        await store_titles(conn, self.titles)

    def to_wire(self) -> dict[str, Any]:
        """JSON- and msgpack-safe: no pickle on the queue or in the spool."""
        return {**self.wire_without_rows(), "rows": [as_row(e) for e in self.events]}

    def wire_without_rows(self) -> dict[str, Any]:
        """The wire form but its events' rows (`as_row`, one per event), for a writer that packs
        those itself a chunk at a time (`trackside.queue.pack_batch`)."""
        return {
            "id": self.id,
            "fields": FIELDS,
            "bots": [[d.isoformat(), b, label, n] for (d, b, label), n in self.bots.items()],
            "aliases": [[kind, alias, item] for (kind, alias), item in self.aliases.items()],
            # Added later: a batch written without it (an older sidecar's, a spooled one) has no titles.
            "titles": [[kind, item, title] for (kind, item), title in self.titles.items()],
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Batch:
        bots: Counter[BotKey] = Counter()
        for d, b, label, n in data.get("bots", []):
            bots[(date.fromisoformat(d), str(b), str(label))] += int(n)
        aliases = {(str(k), str(a)): str(i) for k, a, i in data.get("aliases", [])}
        titles = {(str(k), str(i)): str(t) for k, i, t in data.get("titles", [])}
        rows = data.get("rows")
        if rows is not None:
            names = data["fields"]
            if tuple(names) == FIELDS:
                events = [Event(*row) for row in rows]
            else:  # written by another version: match by name
                events = [Event.from_dict(dict(zip(names, row, strict=True))) for row in rows]
        else:  # the dict form earlier versions queued and spooled
            events = [Event.from_dict(e) for e in data.get("events", [])]
        return cls(id=str(data["id"]), events=events, bots=bots, aliases=aliases, titles=titles)
