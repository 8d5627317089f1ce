"""The path a fact row keeps. Raw events keep the request's path for 7 days; facts are kept for
months, and paths carry secrets (`/reset-password/<token>`), so a fact keeps the raw path only where
the operator's rules say the path is safe to keep:

1. A redaction rule (`TRACKSIDE_PATH_REDACT`, e.g. `/reset-password/[token]`) that matches: the fact
   keeps the rule itself, `/reset-password/[token]`. Redaction rules come first, so they also cover
   paths that a route rule would otherwise keep.
2. A route rule (`TRACKSIDE_LABEL_RULES`, or a content rule of `TRACKSIDE_CONTENT_RULES`) that
   matches: the raw path, when every `[param]` value looks like an id or a slug (at most 64
   characters, no `=`, `;` or space); else the rule itself (`/p/[post]`).
3. Anything else: the event's route label (the generic shape, ids replaced: `trackside.paths`).

Distinct raw paths per label: derivation is per visitor-day and must give the same rows whenever it
runs again, so it cannot count paths across visitors. The cap (`TRACKSIDE_FACT_PATHS_PER_LABEL`,
default 1000) is applied when figures are read: `cap_per_label` keeps each label's top paths and
folds the rest into one `(other)` row per label."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from trackside import events as ev
from trackside.paths import MAX_PATH, compile_pattern

OTHER = "(other)"
MAX_VALUE = 64
_SAFE_VALUE = re.compile(r"^[^=;\s]{1,64}$")


class FactPaths:
    """`path_of(event)`: the path a fact keeps (see the module's doc). Cached per path."""

    def __init__(self, route_rules: Iterable[str], redact_rules: Iterable[str] = ()) -> None:
        self._redact = [compile_pattern(r) for r in redact_rules]
        self._routes = [compile_pattern(r) for r in route_rules]
        self._kept = lru_cache(maxsize=16384)(self._keep)

    def path_of(self, e: ev.Event) -> str:
        kept = self._kept(e.path)
        return e.label if kept is None else kept

    def _keep(self, path: str) -> str | None:
        """The path to keep, or None when the event's label stands."""
        for p in self._redact:
            if p.regex.match(path):
                return p.text
        for p in self._routes:
            m = p.regex.match(path)
            if m:
                if all(_SAFE_VALUE.match(v) for v in m.groups() if v is not None):
                    return path[:MAX_PATH]
                return p.text
        return None


def fact_path_of(settings: Any) -> Callable[[ev.Event], str]:
    """The settings' `path_of` for derivation (`Settings`; typed loosely to keep this module import-light)."""
    routes = (*settings.label_rules, *(p for patterns in settings.content_rules.values() for p in patterns))
    return _fact_paths(routes, tuple(settings.path_redact)).path_of


@lru_cache(maxsize=8)
def _fact_paths(routes: tuple[str, ...], redact: tuple[str, ...]) -> FactPaths:
    # The worker asks once per batch: the same rules keep one set of compiled patterns and its cache.
    return FactPaths(routes, redact)


def cap_per_label(rows: Iterable[tuple[str, str, int]], cap: int) -> list[tuple[str, str, int]]:
    """(label, path, count) rows, at most `cap` paths per label: each label's top `cap - 1` paths by
    count (then path) and, when there are more, one (label, `(other)`, their sum) row. Rows come
    out by label, then count, largest first. Only for counts that add up (page views, not visitors)."""
    if cap < 1:
        raise ValueError("cap must be at least 1")
    by_label: dict[str, list[tuple[str, int]]] = {}
    for label, path, count in rows:
        by_label.setdefault(label, []).append((path, count))
    out: list[tuple[str, str, int]] = []
    for label in sorted(by_label):
        paths = sorted(by_label[label], key=lambda pc: (-pc[1], pc[0]))
        if len(paths) <= cap:
            out.extend((label, p, c) for p, c in paths)
            continue
        out.extend((label, p, c) for p, c in paths[: cap - 1])
        out.append((label, OTHER, sum(c for _, c in paths[cap - 1 :])))
    return out
