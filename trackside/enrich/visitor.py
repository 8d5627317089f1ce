"""The anonymous visitor: HMAC-SHA256 of (site, ip, user agent) under a salt that rotates every
UTC day. One salt per UTC date for every sidecar (created once, insert-or-ignore, in the database
or Redis); deleted after 48 hours, after which no one can link a visitor across days or recover
an IP."""

from __future__ import annotations

import hmac
from datetime import date
from hashlib import sha256
from typing import Protocol


class SaltSource(Protocol):
    def salt_for(self, day: date) -> bytes | None: ...


def visitor_hash(salt: bytes, site: str, ip: str, user_agent: str) -> str:
    # The NUL separators keep ("1.2.3.4", "5 UA") and ("1.2.3.45", " UA") apart.
    message = f"{site}\x00{ip}\x00{user_agent}".encode("utf-8", "surrogateescape")
    return hmac.digest(salt, message, sha256)[:16].hex()
