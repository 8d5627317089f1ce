"""Looks with a view type decided by the site's answer or a rule: how a player's view through the
proxy (Makapix's `POST /api/player/events/view`, whose item is in the request body capture never
reads) becomes a look at that item with view type `player`.

- `X-Trackside-View: artwork:k3x9;player`: this request was a look at that item, of that type.
- `X-Trackside-View-Type: player`: the look this response is (the item its path shows, by the
  content rules) has that type.
- `TRACKSIDE_VIEW_TYPE_RULES=/api/player/=player`: requests under that path prefix that show an
  item (by the content rules, any method) are looks of that type.

A malformed hint is counted (`bad_view_hint`) and ignored: the request still counts as it would
without it."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable

from trackside.items import ItemError, parse_items

HINT_VIEW = b"x-trackside-view"
HINT_VIEW_TYPE = b"x-trackside-view-type"
_VIEW_TYPE = re.compile(r"[a-z][a-z0-9_-]{0,15}")

Look = tuple[str, str, str]  # (content kind, content id, view type)


class ViewRuleError(ValueError):
    """A malformed view-type rule; the message names it."""


def parse_view_type_rules(rules: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """`/api/player/=player` -> (prefix, view type), longest prefix first."""
    out = []
    for rule in rules:
        prefix, sep, view_type = rule.partition("=")
        prefix, view_type = prefix.strip(), view_type.strip()
        if not sep or not prefix.startswith("/") or not _VIEW_TYPE.fullmatch(view_type):
            raise ViewRuleError(f"{rule!r} should look like /api/player/=player (a path prefix, a lower-case word)")
        out.append((prefix, view_type))
    return tuple(sorted(out, key=lambda r: -len(r[0])))


class HintedViews:
    def __init__(
        self,
        kinds: Collection[str],
        match: Callable[[str], tuple[str, str] | None],
        rules: Iterable[str],
        bad_hint: Callable[[], None],
    ) -> None:
        self.kinds = frozenset(kinds)
        self.match = match
        self.rules = parse_view_type_rules(rules)
        self.bad_hint = bad_hint

    def look(self, path: str, hints: dict[bytes, str], found: tuple[str, str] | None) -> Look | None:
        """The typed look this answered request was, if the site's hints or a rule say so."""
        named = hints.get(HINT_VIEW)
        if named is not None:
            return self._named(named)
        typed = hints.get(HINT_VIEW_TYPE)
        if typed is not None:
            view_type = typed.strip().lower()
            item = found or self.match(path)
            if item is None or not _VIEW_TYPE.fullmatch(view_type):
                self.bad_hint()
                return None
            return item[0], item[1], view_type
        if self.rules:
            for prefix, view_type in self.rules:
                if path.startswith(prefix):
                    item = found or self.match(path)
                    return (item[0], item[1], view_type) if item is not None else None
        return None

    def _named(self, value: str) -> Look | None:
        items, _, view_type = value.partition(";")
        view_type = view_type.strip().lower()
        try:
            found = parse_items(items, self.kinds, limit=1)
        except ItemError:
            found = []
        if len(found) != 1 or not _VIEW_TYPE.fullmatch(view_type):
            self.bad_hint()
            return None
        return found[0][0], found[0][1], view_type
