"""Which upstream a path goes to: the longest matching route prefix wins."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from trackside.settings import RouteRule, Settings


@dataclass(frozen=True, slots=True)
class Target:
    base: str  # scheme://host:port with no trailing slash
    base_path: str  # a path prefix of the upstream URL itself, e.g. "/app"
    prefix: str
    strip: bool
    is_api: bool


class Upstreams:
    def __init__(self, settings: Settings) -> None:
        rules = list(settings.routes)
        rules.append(RouteRule("/api", settings.api_url.rstrip("/"), settings.api_strip_prefix))
        rules.append(RouteRule("/", settings.frontend_url.rstrip("/"), False))
        targets = []
        for rule in rules:
            parts = urlsplit(rule.upstream)
            base = f"{parts.scheme}://{parts.netloc}"
            targets.append(
                Target(base, parts.path.rstrip("/"), rule.prefix.rstrip("/"), rule.strip, rule.prefix == "/api")
            )
        # Longest prefix first; "/" (empty after rstrip) last.
        self._targets = sorted(targets, key=lambda t: len(t.prefix), reverse=True)

    def resolve(self, path: str, raw_path: str | None = None) -> tuple[Target, str]:
        """The target for `path` and the path to send it (prefix stripped when the rule says so).

        `path` is the decoded path, the one the upstream's framework and capture read; the route is
        chosen on it. `raw_path`, if given, is the request's path as it arrived, and what is sent:
        its bytes pass untouched, and a stripped prefix is removed from it segment by segment. The
        two must have the same segments, which holds when `raw_path` has no encoded slash (`%2F`),
        as the proxy makes sure."""
        raw = path if raw_path is None else raw_path
        for t in self._targets:
            if not t.prefix or path == t.prefix or path.startswith(t.prefix + "/"):
                if not t.strip:
                    return t, t.base_path + raw
                # "/api/v1" is two segments: the sent path is what follows the first two of `raw`
                # (`/%61pi/v1/x` -> `/x`, as `/api/v1/x` -> `/x`).
                depth = t.prefix.count("/")
                rest = raw.split("/")[depth + 1 :]
                return t, t.base_path + ("/" + "/".join(rest) if rest else "/")
        raise LookupError(path)  # unreachable: "/" matches everything
