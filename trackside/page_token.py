"""Page tokens: a signed, short-lived mark that a sidecar served this visitor a page.

A token is `<issue time>.<MAC>`, the MAC an HMAC-SHA256 under the day's shared salt over the
visitor hash and the issue time. Every sidecar already has the salts, so any of them can check a
token another issued, with nothing new to deploy; a token carries no IP and works only for the
visitor (IP and user agent) it was issued to, for `ttl` seconds. When the salt is deleted (48
hours) every token of that day is dead too."""

from __future__ import annotations

import base64
import hmac
from datetime import UTC, datetime
from hashlib import sha256

from starlette.types import Scope

from trackside.enrich.client_ip import ClientIP
from trackside.enrich.visitor import SaltSource, visitor_hash

MAX_TOKEN = 64
# Sidecars' clocks may disagree a little: a token "from the future" is fine within this.
CLOCK_SKEW_SECONDS = 300


class PageTokens:
    def __init__(self, salts: SaltSource, site: str, ttl_seconds: float) -> None:
        self.salts = salts
        self.site = site
        self.ttl = ttl_seconds

    def issue(self, ip: str, user_agent: str, now: float) -> str | None:
        """A token for this visitor, or None while the shared salt is not loaded (beacons are then unverified)."""
        issued = int(now)
        mac = self._mac(ip, user_agent, issued)
        return None if mac is None else f"{issued}.{mac}"

    def verify(self, token: str | None, ip: str, user_agent: str, now: float) -> bool:
        if not token or len(token) > MAX_TOKEN:
            return False
        issued_text, sep, mac = token.partition(".")
        if not sep or not (issued_text.isascii() and issued_text.isdigit()) or len(issued_text) > 12:
            return False
        issued = int(issued_text)
        if not -CLOCK_SKEW_SECONDS <= now - issued <= self.ttl:
            return False
        expected = self._mac(ip, user_agent, issued)
        return expected is not None and hmac.compare_digest(expected, mac)

    def _mac(self, ip: str, user_agent: str, issued: int) -> str | None:
        salt = self.salts.salt_for(datetime.fromtimestamp(issued, UTC).date())
        if salt is None:
            return None
        visitor = visitor_hash(salt, self.site, ip, user_agent)
        digest = hmac.digest(salt, f"page-token\x00{visitor}\x00{issued}".encode(), sha256)
        return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def request_identity(scope: Scope, client_ip: ClientIP) -> tuple[str, str]:
    """(client IP, user agent) of a request, the IP resolved exactly as capture resolves it."""
    user_agent = ""
    forwarded_for = None
    for name, value in scope["headers"]:
        if name == b"user-agent":
            user_agent = value.decode("latin-1")
        elif name == b"x-forwarded-for":
            forwarded_for = value.decode("latin-1")
    client = scope.get("client")
    return client_ip.resolve(client[0] if client else None, forwarded_for), user_agent
