"""The external referrer domain and UTM parameters; every other query parameter is dropped
(query strings carry tokens: `/reset-password?token=...`)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from urllib.parse import parse_qsl, urlsplit

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign")


@lru_cache(maxsize=8192)
def referrer_domain(referer: str | None, own_host: str | None) -> str | None:
    """Lower-cased host of `referer` without `www.`, port or userinfo; None for self-referrals."""
    if not referer:
        return None
    try:
        host = urlsplit(referer.strip()).hostname
    except ValueError:
        return None
    if not host:
        return None
    if not host.isprintable():
        return None  # no host name has control characters (a NUL would fail the batch's insert)
    host = host.lower().rstrip(".")
    if _is_address(host):
        # An address is no domain, and it may be a person's: never stored (a domain is public).
        return None
    if host.startswith("www."):
        host = host[4:]
    if own_host:
        own = own_host.lower().rsplit(":", 1)[0] if not own_host.startswith("[") else own_host.lower()
        if own.startswith("www."):
            own = own[4:]
        if host == own:
            return None
    return host[:255] or None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host.replace(":", "").isalnum() and host.count(":") >= 1 and not host.replace(":", "").isalpha()
    return True


def utm(query: str) -> tuple[str | None, str | None, str | None]:
    if "utm_" not in query:
        return None, None, None
    found: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=False):
        if key in UTM_KEYS and key not in found:
            # `%00` decodes to a NUL, which PostgreSQL cannot store: dropped.
            cleaned = value.replace("\x00", "").strip()[:100]
            if cleaned:
                found[key] = cleaned
    return found.get("utm_source"), found.get("utm_medium"), found.get("utm_campaign")
