"""`POST /_trackside/api/event`: the events API (the body of Plausible's Events API), answered by
the sidecar itself, never proxied or captured as a request.

Who may call it: a `write` API key (`trackside keys create --scope write`) or the admin token, as
`Authorization: Bearer ...`; anything else is a 401 (a `read` key: 403). Each key may send
`TRACKSIDE_EVENTS_API_RATE` events a second (per process, a one-second burst); beyond that a 429
with `Retry-After`. A bad body is a 400 naming the field. A stored event is answered `202`.

A raw ASGI app rather than a Starlette route: it is the one Trackside route meant to take
thousands of calls a second."""

from __future__ import annotations

import hmac
import json
import logging
import math
import time

from starlette.types import Receive, Scope, Send

from trackside.api_keys import KeyRing
from trackside.buffer import EventBuffer
from trackside.capture import Capturer
from trackside.server_events import (
    MAX_BODY_BYTES,
    BodyError,
    ServerEvents,
    check_idempotency_key,
    parse_body,
)
from trackside.settings import Settings

logger = logging.getLogger("trackside.events_api")

ROUTE = "/_trackside/api/event"
ADMIN_KEY_ID = "admin"
_READ = frozenset({b"authorization", b"user-agent", b"x-forwarded-for", b"idempotency-key"})


class RateLimits:
    """A token bucket per API key: `rate` events a second, at most `rate` saved up."""

    def __init__(self, rate: int) -> None:
        self.rate = float(rate)
        self._buckets: dict[str, list[float]] = {}  # key id -> [tokens, last refill]

    def take(self, key_id: str, now: float) -> float:
        """0.0 when the event may go; else how many seconds until it could."""
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = [self.rate, now]
        tokens = min(self.rate, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate


class _Refused(Exception):
    def __init__(
        self, status: int, detail: str, field: str | None = None, headers: list[tuple[bytes, bytes]] | None = None
    ):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.headers = headers or []


class EventsApi:
    def __init__(self, settings: Settings, capturer: Capturer, buffer: EventBuffer, keys: KeyRing) -> None:
        self.settings = settings
        self.capturer = capturer
        self.buffer = buffer
        self.keys = keys
        self.metrics = capturer.metrics
        self.events = ServerEvents(capturer, buffer)
        self.limits = RateLimits(settings.events_api_rate)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.time()
        headers = {name: value.decode("latin-1") for name, value in scope["headers"] if name in _READ}
        try:
            if scope["method"] != "POST":
                raise _Refused(405, "use POST", headers=[(b"allow", b"POST")])
            key_id = await self._authenticate(headers.get(b"authorization"))
            wait = self.limits.take(key_id, time.monotonic())
            if wait > 0.0:
                self.metrics.inc("events_api_refused_429")
                retry = str(max(1, math.ceil(wait))).encode()
                raise _Refused(429, "too many events for this key; slow down", headers=[(b"retry-after", retry)])
            idempotency_key = check_idempotency_key(headers.get(b"idempotency-key"))
            body = await _read_body(receive)
            event = parse_body(body, self.events.kinds)
            if not self.settings.capture:
                await _answer(
                    send,
                    202,
                    {"status": "ignored", "reason": "capture-off"},
                    [(b"x-trackside-ignored", b"capture-off")],
                )
                return
            if len(self.buffer) >= self.buffer.capacity:
                self.metrics.inc("events_api_refused_503")
                raise _Refused(503, "the event buffer is full; retry", headers=[(b"retry-after", b"1")])
            client = scope.get("client")
            ignored = self.events.record(
                event,
                key_id=key_id,
                idempotency_key=idempotency_key,
                user_agent=headers.get(b"user-agent", ""),
                forwarded_for=headers.get(b"x-forwarded-for"),
                peer=client[0] if client else None,
                started=started,
            )
        except BodyError as exc:
            self.metrics.inc(f"events_api_refused_{exc.status}")
            await _answer(send, exc.status, {"error": str(exc), "field": exc.field})
            return
        except _Refused as exc:
            answer = {"error": exc.detail} if exc.field is None else {"error": exc.detail, "field": exc.field}
            await _answer(send, exc.status, answer, exc.headers)
            return
        except Exception:  # a client never gets a 500 for what it sent; this is ours, and logged
            logger.exception("failed to record an events-API call")
            self.metrics.inc("events_api_failed")
            await _answer(send, 503, {"error": "the event could not be recorded; retry"}, [(b"retry-after", b"1")])
            return
        if ignored is not None:
            self.metrics.inc(f"events_api_ignored_{ignored}")
            await _answer(
                send, 202, {"status": "ignored", "reason": ignored}, [(b"x-trackside-ignored", ignored.encode())]
            )
            return
        self.metrics.inc("events_api_accepted")
        await send(_ACCEPTED_START)
        await send(_ACCEPTED_BODY)

    async def _authenticate(self, authorization: str | None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            self.metrics.inc("events_api_refused_401")
            raise _Refused(401, "an API key is required: Authorization: Bearer tsk_...", headers=_CHALLENGE)
        admin = self.settings.admin_token
        if admin and hmac.compare_digest(token.encode(), admin.encode()):
            return ADMIN_KEY_ID
        key = await self.keys.check(token)
        if key is None:
            self.metrics.inc("events_api_refused_401")
            raise _Refused(401, "unknown or revoked API key", headers=_CHALLENGE)
        if key.scope != "write":
            self.metrics.inc("events_api_refused_403")
            raise _Refused(403, f"API key {key.id} has scope {key.scope}; sending events needs scope write")
        return key.id


_CHALLENGE = [(b"www-authenticate", b'Bearer realm="trackside"')]
# The answer to almost every call, made once.
_ACCEPTED_PAYLOAD = b'{"status": "accepted"}'
_ACCEPTED_START = {
    "type": "http.response.start",
    "status": 202,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_ACCEPTED_PAYLOAD)).encode()),
        (b"cache-control", b"no-store"),
    ],
}
_ACCEPTED_BODY = {"type": "http.response.body", "body": _ACCEPTED_PAYLOAD}


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Refused(400, "the client went away before its body ended")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyError("body", f"larger than {MAX_BODY_BYTES} bytes", 413)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _answer(
    send: Send, status: int, body: dict[str, str], extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
