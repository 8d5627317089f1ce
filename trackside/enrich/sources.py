"""Where a visit came from, as a named source: `Google`, `Reddit`, `Hacker News`, ...

The referrer domains of known sources come from Matomo's public-domain search engine, social
network and AI assistant lists (converted into `data/referrer_sources.json`; origin, licence and
conversion in that file and in README, "Sources"). A source is, in order:

- the name of a known referrer domain or any of its subdomains (`google.co.uk`, `m.facebook.com`);
- else the visit's `utm_source`, as given;
- else the referrer domain itself;
- else None: no referrer and no `utm_source`, which queries show as `Direct / None`.

Pure and cached: derivation calls it for every page view."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

DIRECT = "Direct / None"
MAX_SOURCE = 64  # the facts' `source` column
DATA_FILE = "referrer_sources.json"
# Second-level labels under which a `.{}` entry also matches a two-label ending: `google.{}`
# matches `google.co.uk` and `google.com.br` (Matomo's rule: com.*, org.*, net.*, co.*, it.*, edu.*).
_SECOND_LEVEL = frozenset(("com", "co", "org", "net", "edu", "it", "ac", "gov", "ne", "or", "go"))
_SECTIONS = ("search", "social", "ai", "additions")


def _load() -> tuple[dict[str, str], dict[str, str]]:
    """(host -> name, host-without-its-ending -> name) from the data file."""
    raw = json.loads(resources.files("trackside.enrich").joinpath("data", DATA_FILE).read_text("utf-8"))
    exact: dict[str, str] = {}
    any_ending: dict[str, str] = {}
    for section in _SECTIONS:
        for name, hosts in raw[section].items():
            for host in hosts:
                host = host.lower()
                if host.endswith(".{}"):
                    any_ending.setdefault(host[:-3], name)
                else:
                    exact.setdefault(host, name)
    return exact, any_ending


_EXACT, _ANY_ENDING = _load()


def known_source(domain: str) -> str | None:
    """The named source of `domain` (lower case, no `www.`) or of its nearest listed parent domain."""
    return _known(domain.lower().rstrip("."))


@lru_cache(maxsize=8192)
def _known(domain: str) -> str | None:
    labels = domain.split(".")
    # The longest listed suffix wins: `gemini.google.com` is Gemini, `mail.google.com` Google.
    for i in range(len(labels)):
        rest = labels[i:]
        name = _EXACT.get(".".join(rest))
        if name is not None:
            return name
        if len(rest) >= 2:
            name = _ANY_ENDING.get(".".join(rest[:-1]))
            if name is not None:
                return name
        if len(rest) >= 3 and rest[-2] in _SECOND_LEVEL:
            name = _ANY_ENDING.get(".".join(rest[:-2]))
            if name is not None:
                return name
    return None


def source_of(referrer_domain: str | None, utm_source: str | None) -> str | None:
    """The source of a page view (see the module's doc); None is `Direct / None`."""
    if referrer_domain:
        name = known_source(referrer_domain)
        if name is not None:
            return name
    if utm_source:
        return utm_source[:MAX_SOURCE]
    if referrer_domain:
        return referrer_domain[:MAX_SOURCE]
    return None


def shown(source: str | None) -> str:
    """How a stored source reads in answers: None is `Direct / None`."""
    return DIRECT if source is None else source
