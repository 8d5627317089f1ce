"""A limit on failed sign-ins to Trackside's own routes (the dashboard's API, the query API, the
stats endpoints, the metrics, the events API): a client address whose tokens were refused (401) more than
`sign_in_failures` times in a minute gets 429 with `Retry-After` until that minute is over, so the
admin token or a metrics token cannot be guessed at wire speed.

The address is the one capture resolves (the socket peer, or `X-Forwarded-For` from trusted proxies
only), held as a keyed hash whose key is made at start and never leaves the process: no raw IP is
kept. Counts are per process (with `--workers N`, N times the limit at most)."""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trackside.enrich.client_ip import ClientIP

WINDOW_SECONDS = 60.0
# Beyond this many addresses with recent failures, the expired ones are forgotten (and, should that
# not be enough, all: a flood of addresses must not grow the process without bound).
MAX_TRACKED = 100_000
# Paths that check no token: a blocked client still gets the health checks and the dashboard's files.
_OPEN = ("/_trackside/health", "/_trackside/ready", "/_trackside/", "/_trackside/index.html")
_OPEN_PREFIX = "/_trackside/static/"


class SignInLimit:
    def __init__(self, app: ASGIApp, limit: int, client_ip: ClientIP) -> None:
        self.app = app
        self.limit = limit
        self.client_ip = client_ip
        self._key = secrets.token_bytes(32)
        # address hash -> (failures, end of their window)
        self.failures: dict[bytes, tuple[int, float]] = {}

    def guarding(self, app: ASGIApp) -> SignInLimit:
        """The same limit (the same counts) in front of another app."""
        other = SignInLimit(app, self.limit, self.client_ip)
        other._key, other.failures = self._key, self.failures
        return other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if self.limit <= 0 or scope["type"] != "http" or path in _OPEN or path.startswith(_OPEN_PREFIX):
            await self.app(scope, receive, send)
            return
        key = self._key_of(scope)
        now = time.monotonic()
        count, until = self.failures.get(key, (0, 0.0))
        if count >= self.limit and now < until:
            await _too_many(send, math.ceil(until - now))
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self._failed(key)
            await send(message)

        await self.app(scope, receive, watch)

    def _failed(self, key: bytes) -> None:
        now = time.monotonic()
        count, until = self.failures.get(key, (0, 0.0))
        self.failures[key] = (count + 1, until) if now < until else (1, now + WINDOW_SECONDS)
        if len(self.failures) > MAX_TRACKED:
            for stale in [k for k, v in self.failures.items() if v[1] <= now]:
                del self.failures[stale]  # in place: the guards of other routes share this dict
            if len(self.failures) > MAX_TRACKED:
                self.failures.clear()

    def _key_of(self, scope: Scope) -> bytes:
        client = scope.get("client")
        peer = client[0] if client else None
        hops = [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"]
        address = self.client_ip.resolve(peer, ", ".join(hops) or None)
        return hashlib.blake2b(address.encode(), key=self._key, digest_size=16).digest()


async def _too_many(send: Send, retry_after: int) -> None:
    body = json.dumps({"detail": "too many failed sign-ins from this address; try again later"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(max(1, retry_after)).encode()),
                (b"cache-control", b"private, no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
