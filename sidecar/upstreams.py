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

    def resolve(self, path: str) -> tuple[Target, str]:
        """The target and the path to send it (prefix stripped when the rule says so)."""
        for t in self._targets:
            if not t.prefix or path == t.prefix or path.startswith(t.prefix + "/"):
                sent = path[len(t.prefix) :] or "/" if t.strip else path
                return t, t.base_path + sent
        raise LookupError(path)  # unreachable: "/" matches everything
