"""Path patterns: `/p/[post]` matches one segment per `[name]`, `[...name]` the rest.

Used for route labels, content kinds and site-event rules, so all three speak one syntax."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

MAX_PATH = 512
_ID_LIKE = re.compile(
    r"^(?:\d+|[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}|[0-9a-f]{16,}|.{41,})$", re.I
)


@dataclass(frozen=True, slots=True)
class Pattern:
    text: str
    regex: re.Pattern[str]


def compile_pattern(text: str) -> Pattern:
    parts = []
    for segment in text.strip("/").split("/"):
        if segment.startswith("[...") and segment.endswith("]"):
            parts.append(rf"(?P<{_group(segment[4:-1])}>.+)")
        elif segment.startswith("[") and segment.endswith("]"):
            parts.append(rf"(?P<{_group(segment[1:-1])}>[^/]+)")
        else:
            parts.append(re.escape(segment))
    return Pattern(text, re.compile("^/" + "/".join(parts) + "/?$"))


def _group(name: str) -> str:
    return re.sub(r"\W", "_", name) or "x"


class Labeler:
    """Groups a raw path into a route label: the first matching rule, else a generic shape."""

    def __init__(self, rules: Iterable[str]) -> None:
        self._patterns = [compile_pattern(r) for r in rules]
        self.label = lru_cache(maxsize=16384)(self._label)

    def _label(self, path: str) -> str:
        for p in self._patterns:
            if p.regex.match(path):
                return p.text
        return generic_label(path)


def generic_label(path: str) -> str:
    """Unknown paths keep their first three segments, ids replaced, so a scan of random URLs
    cannot grow the label set without bound beyond what three segments allow."""
    segments = [s for s in path.split("/") if s][:3]
    shaped = ["[id]" if _ID_LIKE.match(s) else s[:40] for s in segments]
    return ("/" + "/".join(shaped))[:128]


class ContentMatcher:
    """Finds the content item a path looks at: `("artwork", "a1")` for `/p/a1`."""

    def __init__(self, rules: Mapping[str, Iterable[str]]) -> None:
        self._patterns = [(kind, compile_pattern(p)) for kind, pats in rules.items() for p in pats]
        self.match = lru_cache(maxsize=16384)(self._match)

    def _match(self, path: str) -> tuple[str, str] | None:
        for kind, p in self._patterns:
            m = p.regex.match(path)
            if m:
                return kind, m.group("id")[:128]
        return None


class EventRules:
    """`POST /api/auth/register=signup`: a 2xx answer to that request is also a signup."""

    def __init__(self, rules: Iterable[tuple[str, str, str]]) -> None:
        self._rules = [(method, compile_pattern(pattern), name) for method, pattern, name in rules]

    def match(self, method: str, path: str) -> str | None:
        for m, p, name in self._rules:
            if m == method and p.regex.match(path):
                return name
        return None
