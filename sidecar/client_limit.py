"""A cap on the requests one client address has in flight at once (`max_concurrent_per_client`).

The address is the one capture resolves (the socket peer, or `X-Forwarded-For` from trusted
proxies only), held as a keyed hash whose key is made at start and never leaves the process:
no raw IP is kept, and the hashes mean nothing after a restart.

Off by default: behind a TLS terminator or CDN that is not in `TRACKSIDE_TRUSTED_PROXIES`,
every request comes from that one address, and any cap would be a cap on the whole site."""

from __future__ import annotations

import hashlib
import secrets

from starlette.types import Scope

from trackside.enrich.client_ip import ClientIP


class ClientLimit:
    __slots__ = ("limit", "client_ip", "in_flight", "_key")

    def __init__(self, limit: int, client_ip: ClientIP) -> None:
        self.limit = limit
        self.client_ip = client_ip
        self.in_flight: dict[bytes, int] = {}
        self._key = secrets.token_bytes(32)

    def key_of(self, scope: Scope) -> bytes:
        client = scope.get("client")
        peer = client[0] if client else ""
        forwarded = None
        if self.client_ip.is_trusted(peer):
            hops = [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"]
            forwarded = ", ".join(hops) or None
        address = self.client_ip.resolve(peer, forwarded)
        return hashlib.blake2b(address.encode(), key=self._key, digest_size=16).digest()

    def enter(self, key: bytes) -> bool:
        """Count one more request of this address in, unless it already has `limit` in flight."""
        count = self.in_flight.get(key, 0)
        if count >= self.limit:
            return False
        self.in_flight[key] = count + 1
        return True

    def leave(self, key: bytes) -> None:
        count = self.in_flight[key] - 1
        if count:
            self.in_flight[key] = count
        else:
            del self.in_flight[key]  # nothing is kept of an address with nothing in flight
