"""The flood limits: requests a minute beyond which a client is no person, whatever it says.

Two counts, each for the current UTC minute: one per visitor (address and user agent, the
visitor id), and one per client address. The second exists because a script that sends a new
user agent string with each request is a new visitor each time and never reaches the first.

No raw address is held: the per-address count is kept under a keyed BLAKE2b hash whose random
key lives in this process only and is replaced every minute, with the counts. An IPv6 client is
counted by its /64, the block one subscriber gets (rotating within it is free).

Memory is bounded: at most `MAX_KEYS` visitors and as many addresses a minute; one not yet seen
when a table is full is not counted that minute (a botnet of that size is beyond this limit's
reach anyway, and the ones already counted stay counted)."""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from typing import Any

MAX_KEYS = 100_000


class FloodLimit:
    __slots__ = ("per_visitor", "per_address", "_minute", "_visitors", "_addresses", "_key")

    def __init__(self, per_visitor: int, per_address: int) -> None:
        self.per_visitor = per_visitor
        self.per_address = per_address  # 0: no per-address limit
        self._minute = -1
        self._visitors: dict[str, int] = {}
        self._addresses: dict[bytes, int] = {}
        self._key = b""

    def over(self, visitor: str, address: str, started: float) -> bool:
        """Counts one request; whether it is beyond either limit in its minute."""
        minute = int(started // 60)
        if minute > self._minute:
            # A late record of the previous minute (the flusher may see requests slightly out of
            # order) counts in this one, rather than reset the counts back and forth.
            self._minute = minute
            self._visitors = {}
            self._addresses = {}
            self._key = secrets.token_bytes(32)
        flood = _count(self._visitors, visitor) > self.per_visitor
        if self.per_address:
            block = _limited_block(address)
            if block is not None:
                key = hashlib.blake2b(block, key=self._key, digest_size=16).digest()
                flood = _count(self._addresses, key) > self.per_address or flood
        return flood

    def __len__(self) -> int:
        """How many visitors and addresses are held (for tests of the bound)."""
        return len(self._visitors) + len(self._addresses)


def _count(table: dict[Any, int], key: Any) -> int:
    count = table.get(key, 0) + 1
    if count > 1 or len(table) < MAX_KEYS:
        table[key] = count
    return count


def _limited_block(address: str) -> bytes | None:
    """The bytes an address is counted under, or None for one never limited: private, loopback
    and other non-public addresses are where a proxy chain not set in `TRACKSIDE_TRUSTED_PROXIES`
    puts every visitor, and limiting them would call the whole site a flood. (Not memoised: a
    cache would hold raw addresses.)"""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None  # no address resolved (a forged X-Forwarded-For entry): nothing to count
    if not ip.is_global:
        return None
    if ip.version == 6:
        return ip.packed[:8]
    return ip.packed
