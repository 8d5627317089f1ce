"""The one settings object.

Built once by an entry point (the CLI, `create_app`, the worker) from `TRACKSIDE_*` environment
variables and CLI flags, then passed down. Nothing below the entry points reads `os.environ`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from trackside.errors import ConfigError

PREFIX = "TRACKSIDE_"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class RouteRule:
    """Requests whose path starts with `prefix` go to `upstream`; `strip` removes the prefix
    first (Caddy's `handle_path`)."""

    prefix: str
    upstream: str
    strip: bool = False


# Makapix's route labels. `[x]` matches one path segment, `[...x]` the rest of the path.
# Raw paths are grouped at capture time so daily rows do not grow with every sqid.
DEFAULT_LABEL_RULES: tuple[str, ...] = (
    "/p/[post]",
    "/post/[post]",
    "/b/[blog]",
    "/blog/[blog]",
    "/u/[user]",
    "/u/[user]/[tab]",
    "/user/[user]",
    "/user/[user]/[tab]",
    "/hashtags/[tag]",
    "/api/p/[post]",
    "/api/v1/p/[post]",
    "/api/post/recent",
    "/api/post/upload",
    "/api/post/[post]",
    "/api/post/[post]/[action]",
    "/api/v1/post/[post]",
    "/api/v1/post/[post]/[action]",
    "/api/player/p/[post]",
    "/api/player/post/[post]",
    "/api/blog-post/b/[blog]",
    "/api/blog-post/[blog]",
    "/api/blog-post/[blog]/[action]",
    "/api/user/u/[user]/[action]",
    "/api/user/[user]",
    "/api/user/[user]/[action]",
)

# Content kinds: a page view or API read of one of these paths is a look at that item.
# `[id]` marks the item's public id.
DEFAULT_CONTENT_RULES: Mapping[str, tuple[str, ...]] = {
    "artwork": ("/p/[id]", "/api/p/[id]", "/api/v1/p/[id]"),
    "blog_post": ("/b/[id]", "/blog/[id]", "/api/blog-post/b/[id]", "/api/blog-post/[id]"),
}

# "METHOD PATH-PATTERN=event": answered 2xx, such a request is also this site event.
DEFAULT_EVENT_RULES: tuple[str, ...] = (
    "POST /api/auth/register=signup",
    "POST /api/v1/auth/register=signup",
    "POST /api/post/upload=upload",
    "POST /api/v1/post/upload=upload",
)

DEFAULT_PLAYERS: tuple[str, ...] = ("Makapix-Player", "PixelFrame", "Divoom")


@dataclass(frozen=True)
class Settings:
    """Everything Trackside can be told. Each field maps to `TRACKSIDE_<FIELD>` in upper case.

    frontend_url / api_url: the upstreams. `/api/...` goes to the API, the rest to the frontend.
    routes: more rules, `PREFIX=URL` or `PREFIX=URL strip`, separated by `;`; longest prefix wins.
    api_strip_prefix: send `/x` for `/api/x` to the API (Caddy's `handle_path /api/*`).
    database_url: SQLAlchemy async URL; SQLite (aiosqlite) by default, or `postgresql+asyncpg://`.
    redis_url: unset means embedded mode (in-process writer and schedule).
    trusted_proxies: IPs or CIDRs whose `X-Forwarded-For`/`-Proto` are believed.
    jwt_secret: HS256 secret of the site's access tokens; without it no user is known from tokens.
    geoip_db: path of a MaxMind-format country `.mmdb`.
    country_header: a trusted CDN header carrying the country (e.g. `CF-IPCountry`).
    view_window_minutes: a look at an item lasts this long from its first request.
    """

    frontend_url: str = "http://127.0.0.1:3000"
    api_url: str = "http://127.0.0.1:8000"
    routes: tuple[RouteRule, ...] = ()
    api_strip_prefix: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    database_url: str = "sqlite+aiosqlite:///./trackside.db"
    redis_url: str | None = None
    auto_migrate: bool = True
    trusted_proxies: tuple[IPNetwork, ...] = ()
    jwt_secret: str | None = None
    geoip_db: str | None = None
    country_header: str | None = None
    site: str = "default"
    capture: bool = True
    store_assets: bool = False
    view_window_minutes: int = 30
    label_rules: tuple[str, ...] = DEFAULT_LABEL_RULES
    content_rules: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_CONTENT_RULES))
    event_rules: tuple[str, ...] = DEFAULT_EVENT_RULES
    # Goals (`trackside.goals`), comma-separated: `signup`, `NAME=event:EVENT`, `NAME=page:/p/*`.
    # Unset: one event goal per name of the event rules. More are stored by `trackside goals add`.
    goals: tuple[str, ...] | None = None
    # Funnels (`trackside.funnels`): JSON `{"NAME": [{"page": "/"}, {"goal": "upload"}]}` or compact
    # `NAME=/ > /p/* > goal:upload; NAME2=...`. More are stored by moderators (the funnels API).
    funnels: str | None = None
    # Facts keep a raw path only where the route rules allow it (`trackside.fact_paths`); a path
    # matching a redaction rule (`/reset-password/[token]`) is kept as the rule. Figures show at
    # most `fact_paths_per_label` raw paths per route label, the rest as `(other)`.
    path_redact: tuple[str, ...] = ()
    fact_paths_per_label: int = 1000
    bot_allowlist: tuple[str, ...] = DEFAULT_PLAYERS
    players: tuple[str, ...] = DEFAULT_PLAYERS
    honor_dnt: bool = False
    # Internal traffic, never recorded (`Capturer.excluded`): requests from these CIDRs (the client
    # address as resolved through the trusted proxies) and requests signed in as these user ids.
    exclude_addresses: tuple[IPNetwork, ...] = ()
    exclude_users: tuple[str, ...] = ()
    # More requests than this from one visitor in one minute are a flood: counted as bot traffic.
    flood_per_minute: int = 300
    # More requests than this from one client address in one minute, whatever their user agents,
    # are a flood too (0: no such limit). Well above the per-visitor limit, since a whole office,
    # school or mobile carrier's NAT may share one address. Private and loopback addresses are
    # never limited: they are a proxy's, not a visitor's (see README, "Bots and floods").
    flood_per_address: int = 3000
    # Beacons and the web snippet: origins that may send beacons (empty: any), whether a beacon
    # without a valid page token is refused (else stored as unverified), how long a page token
    # lives, and whether the sidecar injects the snippet into the HTML documents it serves.
    beacon_origins: tuple[str, ...] = ()
    beacon_require_token: bool = False
    beacon_token_minutes: int = 30
    inject_snippet: bool = False
    # Proxy limits.
    max_header_bytes: int = 32 * 1024
    # The request target (path and query): longer is a 414, as nginx's 8 KB header buffer does.
    max_target_bytes: int = 8 * 1024
    max_body_bytes: int = 100 * 1024 * 1024
    connect_timeout: float = 5.0
    upstream_timeout: float = 60.0
    client_timeout: float = 30.0
    upstream_connections: int = 512
    # Upstream keep-alive, as nginx's `keepalive*`: idle connections close after this long (before
    # Node's and uvicorn's 5 s; an answer's `Keep-Alive: timeout=N` shortens it to N-1 s), at most
    # this many wait idle per upstream, each serves so many requests and lives so long. A longer
    # answer head than `upstream_max_head_bytes` is a 502; a request waits at most
    # `upstream_pool_wait` seconds for a connection slot (then 503).
    upstream_keepalive_timeout: float = 4.0
    upstream_keepalive_connections: int = 64
    upstream_keepalive_requests: int = 1000
    upstream_keepalive_time: float = 3600.0
    upstream_max_head_bytes: int = 64 * 1024
    upstream_pool_wait: float = 10.0
    # Request bodies are taken whole before an upstream connection is used (nginx's default):
    # up to body_memory_bytes in memory, beyond that in an unlinked temporary file in
    # body_buffer_dir (unset: the system's temporary folder), all such files of the process
    # together at most body_buffer_max_bytes. Paths under the stream_uploads prefixes stream instead.
    body_memory_bytes: int = 64 * 1024
    body_buffer_dir: str | None = None
    body_buffer_max_bytes: int = 1024 * 1024 * 1024
    stream_uploads: tuple[str, ...] = ()
    # Once body_rate_grace seconds have passed, a request body must have come at body_min_rate
    # bytes a second on average since it began (0: no minimum).
    body_min_rate: int = 500
    body_rate_grace: float = 20.0
    # Requests in flight per client address (0: no cap); the address is held as a keyed hash.
    max_concurrent_per_client: int = 0
    # Buffer and flusher.
    buffer_size: int = 100_000
    flush_interval: float = 1.0
    flush_batch: int = 5_000
    spool_dir: str = "./trackside-spool"
    # Retention: raw events (only once rolled up), and daily rows (0 keeps them forever).
    raw_retention_days: int = 7
    daily_retention_days: int = 0
    # Fact rows (page views, visits, looks, ... per event: `trackside.storage.facts`), only once
    # their day is rolled up: at least as long as raw events, which they are derived from.
    fact_retention_days: int = 90
    # Stats endpoints: who may read them, and where ownership and roles come from.
    admin_token: str | None = None
    whoami_url: str | None = None
    # With a JWT secret and no who-am-I URL, whether the token's `roles` claim is believed (1) or
    # ignored (0). Unset is refused at start-up: the choice must be made (see README, "Who may see what").
    trust_roles_claim: bool | None = None
    # When set, `/_trackside/metrics` and the OpenAPI document need `Authorization: Bearer <it>`
    # (or the admin token).
    metrics_token: str | None = None
    # Failed sign-ins (401s) one client address may make on Trackside's own routes in a minute;
    # beyond, 429 with Retry-After until the minute is over (0: no limit). Per process.
    sign_in_failures: int = 20
    owner_url: str | None = None
    owner_field: str = "owner_id"
    # Item titles the dashboard shows (`sidecar.titles`): where an item's title is asked for, per
    # content kind (`artwork=/api/p/{id};blog_post=http://api:8000/api/blog-post/{id}`; a path goes
    # where the route rules send it), the JSON field holding it (dots reach into objects), and how
    # long an answer waits for titles not stored yet (those that come later are stored for the next).
    title_url: Mapping[str, str] = field(default_factory=dict)
    title_field: str = "title"
    title_timeout: float = 1.0
    stats_overlay: tuple[str, ...] = ("artwork",)
    # auto: the site's 404/405 on an item with recorded views is answered by Trackside alone;
    # always: the site's every non-200 stands; never: the site's API is not asked.
    stats_overlay_mode: str = "auto"
    # How long a stats answer of closed days alone is cached (its key changes with their rollups);
    # an answer that includes today is cached at most 5 s whatever this says.
    stats_cache_seconds: int = 300
    # The Stats API v2 query's statement timeout (`POST /_trackside/api/v2/query`): longer is a 503.
    query_timeout_seconds: float = 10.0
    # The events API (`POST /_trackside/api/event`): events one API key may send a second, per
    # process (a one-second burst); beyond it 429.
    events_api_rate: int = 1000
    # Path prefixes whose item looks have a view type: `/api/player/=player` (see player_views.py).
    view_type_rules: tuple[str, ...] = ()
    # Scale-out: the ARQ queue the sidecars feed and the workers drain.
    queue_name: str = "trackside:queue"
    # Embedded mode: where stored events are derived into facts: "process" (a child process at a
    # lower CPU priority), "thread" (the writer thread, in this process) or "off" (another process
    # derives: a `trackside worker`, another sidecar on the same database).
    deriver: str = "process"
    log_level: str = "info"
    log_format: str = "text"  # or "json": one object per line

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read `TRACKSIDE_*` variables, then apply `overrides` (CLI flags, already typed or strings).

        A bad value raises `ConfigError` naming the variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = PREFIX + f.name.upper()
            if name in environ:
                values[f.name] = _parse(f.name, environ[name], name)
        for key, raw in overrides.items():
            if raw is None:
                continue
            values[key] = _parse(key, raw, "--" + key.replace("_", "-")) if isinstance(raw, str) else raw
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for name in ("frontend_url", "api_url"):
            _check_url(getattr(self, name), PREFIX + name.upper())
        for rule in self.routes:
            _check_url(rule.upstream, PREFIX + "ROUTES")
        for name in ("whoami_url", "owner_url"):
            if getattr(self, name) is not None:
                _check_url(getattr(self, name), PREFIX + name.upper())
        if self.owner_url is not None and "{id}" not in self.owner_url:
            raise ConfigError("TRACKSIDE_OWNER_URL must contain {id}, e.g. http://api:8000/api/p/{id}")
        _check_titles(self)
        if self.stats_overlay_mode not in ("auto", "always", "never"):
            raise ConfigError(
                f"TRACKSIDE_STATS_OVERLAY_MODE must be auto, always or never, got {self.stats_overlay_mode!r}"
            )
        if self.deriver not in ("process", "thread", "off"):
            raise ConfigError(f"TRACKSIDE_DERIVER must be process, thread or off, got {self.deriver!r}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"TRACKSIDE_LOG_FORMAT must be text or json, got {self.log_format!r}")
        if self.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError(f"TRACKSIDE_LOG_LEVEL must be debug, info, warning or error, got {self.log_level!r}")
        for name in ("jwt_secret", "admin_token", "metrics_token"):
            _check_secret(getattr(self, name), PREFIX + name.upper())
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ConfigError("TRACKSIDE_ADMIN_TOKEN must be at least 16 characters")
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            raise ConfigError("TRACKSIDE_METRICS_TOKEN must be at least 16 characters")
        if self.jwt_secret is not None and self.whoami_url is None and self.trust_roles_claim is None:
            raise ConfigError(
                "TRACKSIDE_TRUST_ROLES_CLAIM must be set to 1 or 0: TRACKSIDE_JWT_SECRET is set without "
                "TRACKSIDE_WHOAMI_URL, so a token's `roles` claim would be the only source of roles, and whoever "
                "can sign a token could make themselves a moderator. 1: believe the claim (only the site signs "
                "tokens); 0: ignore it (only the admin token or a read API key sees sitewide stats); "
                "or set TRACKSIDE_WHOAMI_URL"
            )
        if self.sign_in_failures < 0:
            raise ConfigError(f"TRACKSIDE_SIGN_IN_FAILURES must be 0 (no limit) or more, got {self.sign_in_failures}")
        if not self.database_url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ConfigError(
                "TRACKSIDE_DATABASE_URL must start with sqlite+aiosqlite:// or postgresql+asyncpg://, "
                f"got {redacted(self.database_url)!r}"
            )
        _check_database_url(self.database_url)
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"TRACKSIDE_REDIS_URL must be a redis:// URL, got {redacted(self.redis_url)!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"TRACKSIDE_PORT must be 0-65535, got {self.port}")
        if self.fact_retention_days < max(1, self.raw_retention_days):
            raise ConfigError(
                "TRACKSIDE_FACT_RETENTION_DAYS must be at least 1 and at least TRACKSIDE_RAW_RETENTION_DAYS "
                f"({self.raw_retention_days}): facts are derived from raw events, so they cannot go first; "
                f"got {self.fact_retention_days}"
            )
        if self.flood_per_address < 0:
            raise ConfigError(f"TRACKSIDE_FLOOD_PER_ADDRESS must be 0 (no limit) or more, got {self.flood_per_address}")
        for name in (
            "workers",
            "view_window_minutes",
            "buffer_size",
            "flush_batch",
            "max_header_bytes",
            "max_target_bytes",
            "beacon_token_minutes",
            "events_api_rate",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"TRACKSIDE_{name.upper()} must be at least 1, got {getattr(self, name)}")
        for name in ("upstream_connections", "upstream_keepalive_requests"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TRACKSIDE_{name.upper()} must be at least 1, got {getattr(self, name)}")
        if self.upstream_keepalive_connections < 0:
            raise ConfigError(
                "TRACKSIDE_UPSTREAM_KEEPALIVE_CONNECTIONS must be 0 (no keep-alive) or more, "
                f"got {self.upstream_keepalive_connections}"
            )
        if self.upstream_max_head_bytes < 1024:
            raise ConfigError(
                f"TRACKSIDE_UPSTREAM_MAX_HEAD_BYTES must be at least 1024, got {self.upstream_max_head_bytes}"
            )
        for name in ("upstream_keepalive_timeout", "upstream_keepalive_time", "upstream_pool_wait"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"TRACKSIDE_{name.upper()} must be a positive number of seconds")
        if self.geoip_db is not None and not os.path.isfile(self.geoip_db):
            raise ConfigError(f"TRACKSIDE_GEOIP_DB: no such file {self.geoip_db!r}")
        _check_request_bodies(self)
        for event_rule in self.event_rules:
            parse_event_rule(event_rule)
        _check_goals_and_paths(self)
        from trackside.player_views import ViewRuleError, parse_view_type_rules

        try:
            parse_view_type_rules(self.view_type_rules)
        except ViewRuleError as exc:
            raise ConfigError(f"TRACKSIDE_VIEW_TYPE_RULES: {exc}") from None

    def warnings(self) -> list[str]:
        """What start-up should log, though it starts: secrets too short to resist guessing."""
        found = []
        for name in ("jwt_secret", "admin_token", "metrics_token"):
            value = getattr(self, name)
            if value is not None and len(value.encode()) < 32:
                found.append(f"{PREFIX}{name.upper()} is shorter than 32 bytes: use a long random value")
        return found

    def to_env(self) -> dict[str, str]:
        """The inverse of `from_env`, so worker processes started by the server rebuild the same object."""
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            env[PREFIX + f.name.upper()] = _format(f.name, value)
        return env

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def __repr__(self) -> str:
        # Never print secrets (arq's RedisSettings prints the password; we don't).
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in _SUMMARY}
        for url in ("database_url", "redis_url"):
            if shown.get(url):
                shown[url] = redacted(shown[url])
        for secret in ("jwt_secret", "admin_token", "metrics_token"):
            if getattr(self, secret):
                shown[secret] = "***"
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


def redacted(url: str) -> str:
    """A URL as logs and errors may show it: its password, if any, becomes `***`
    (`postgresql+asyncpg://user:***@host/db`, `redis://:***@host:6379/0`)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url


_SUMMARY = {"frontend_url", "api_url", "host", "port", "workers", "database_url", "redis_url", "capture"}

_BOOLS = {
    "api_strip_prefix",
    "auto_migrate",
    "capture",
    "store_assets",
    "honor_dnt",
    "beacon_require_token",
    "inject_snippet",
}
_INTS = {
    "port",
    "workers",
    "view_window_minutes",
    "max_header_bytes",
    "max_target_bytes",
    "max_body_bytes",
    "upstream_connections",
    "upstream_keepalive_connections",
    "upstream_keepalive_requests",
    "upstream_max_head_bytes",
    "buffer_size",
    "flush_batch",
    "raw_retention_days",
    "daily_retention_days",
    "fact_retention_days",
    "beacon_token_minutes",
    "stats_cache_seconds",
    "flood_per_minute",
    "sign_in_failures",
    "flood_per_address",
    "events_api_rate",
    "body_memory_bytes",
    "body_buffer_max_bytes",
    "body_min_rate",
    "max_concurrent_per_client",
    "fact_paths_per_label",
}
_FLOATS = {
    "connect_timeout",
    "upstream_timeout",
    "client_timeout",
    "flush_interval",
    "body_rate_grace",
    "upstream_keepalive_timeout",
    "upstream_keepalive_time",
    "upstream_pool_wait",
    "query_timeout_seconds",
    "title_timeout",
}
_TUPLES = {
    "label_rules",
    "event_rules",
    "bot_allowlist",
    "players",
    "stats_overlay",
    "beacon_origins",
    "stream_uploads",
    "view_type_rules",
    "goals",
    "path_redact",
    "exclude_users",
}


def _parse(key: str, raw: str, name: str) -> Any:
    raw = raw.strip()
    try:
        if key in _BOOLS:
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError("expected true or false")
        if key in _INTS:
            return int(raw)
        if key in _FLOATS:
            value = float(raw)
            if value <= 0:
                raise ValueError("must be positive")
            return value
        if key in _TUPLES:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if key == "routes":
            return tuple(_parse_route(part) for part in raw.split(";") if part.strip())
        if key in ("trusted_proxies", "exclude_addresses"):
            return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in raw.split(",") if part.strip())
        if key == "content_rules":
            return _parse_content_rules(raw)
        if key == "title_url":
            return _parse_title_url(raw)
        if key in ("redis_url", "jwt_secret", "geoip_db", "country_header", "admin_token", "whoami_url", "owner_url"):
            return raw or None
        if key == "metrics_token":
            return raw or None
        if key == "trust_roles_claim":
            if raw == "":
                return None
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return lowered in ("1", "true", "yes", "on")
            raise ValueError("expected 1 (believe the token's roles claim) or 0 (ignore it)")
        if key == "body_buffer_dir":
            return raw or None
        return raw
    except ValueError as exc:
        raise ConfigError(f"{name}: invalid value {raw!r}: {exc}") from None


def _check_request_bodies(settings: Settings) -> None:
    for name in ("body_memory_bytes", "body_buffer_max_bytes", "body_min_rate", "max_concurrent_per_client"):
        if getattr(settings, name) < 0:
            raise ConfigError(f"TRACKSIDE_{name.upper()} must be 0 or more, got {getattr(settings, name)}")
    for prefix in settings.stream_uploads:
        if not prefix.startswith("/"):
            raise ConfigError(f"TRACKSIDE_STREAM_UPLOADS: {prefix!r} should be a path prefix such as /api/post/upload")
    folder = settings.body_buffer_dir
    if folder is not None:
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"TRACKSIDE_BODY_BUFFER_DIR: {folder!r} is not a folder this process can write to")
        # Request bodies are no events: they must never be taken for spooled batches, or be left among them.
        buffer_dir = os.path.realpath(folder)
        spool = os.path.realpath(settings.spool_dir)
        if buffer_dir == spool or buffer_dir.startswith(spool + os.sep):
            raise ConfigError(f"TRACKSIDE_BODY_BUFFER_DIR must be outside the spool ({settings.spool_dir!r})")


def _check_goals_and_paths(settings: Settings) -> None:
    from trackside.goals import GoalError, settings_goals

    try:
        settings_goals(settings)
    except GoalError as exc:
        raise ConfigError(f"TRACKSIDE_GOALS: {exc}") from None
    from trackside.funnels import FunnelError, parse_funnels_setting

    try:
        parse_funnels_setting(settings.funnels)
    except FunnelError as exc:
        raise ConfigError(f"TRACKSIDE_FUNNELS: {exc}") from None
    for rule in settings.path_redact:
        if not rule.startswith("/"):
            raise ConfigError(
                f"TRACKSIDE_PATH_REDACT: {rule!r} should be a path pattern such as /reset-password/[token]"
            )
    if settings.fact_paths_per_label < 1:
        raise ConfigError(f"TRACKSIDE_FACT_PATHS_PER_LABEL must be at least 1, got {settings.fact_paths_per_label}")


def _parse_route(part: str) -> RouteRule:
    prefix, sep, rest = part.strip().partition("=")
    if not sep or not prefix.startswith("/"):
        raise ValueError("routes look like /prefix=http://host:port [strip]")
    words = rest.split()
    if not words or len(words) > 2 or (len(words) == 2 and words[1] != "strip"):
        raise ValueError("routes look like /prefix=http://host:port [strip]")
    return RouteRule(prefix=prefix.rstrip("/") or "/", upstream=words[0].rstrip("/"), strip=len(words) == 2)


def _parse_content_rules(raw: str) -> dict[str, tuple[str, ...]]:
    # kind=pattern|pattern;kind=pattern
    rules: dict[str, tuple[str, ...]] = {}
    for part in raw.split(";"):
        if not part.strip():
            continue
        kind, sep, patterns = part.partition("=")
        found = tuple(p.strip() for p in patterns.split("|") if p.strip())
        if not sep or not kind.strip() or not found or any("[id]" not in p for p in found):
            raise ValueError("content rules look like artwork=/p/[id]|/api/p/[id];blog_post=/b/[id]")
        rules[kind.strip()] = found
    return rules


def _parse_title_url(raw: str) -> dict[str, str]:
    # kind=/api/p/{id};kind=http://api:8000/x/{id}
    urls: dict[str, str] = {}
    for part in raw.split(";"):
        if not part.strip():
            continue
        kind, sep, url = part.partition("=")
        if not sep or not kind.strip() or not url.strip():
            raise ValueError("title URLs look like artwork=/api/p/{id};blog_post=http://api:8000/api/blog-post/{id}")
        urls[kind.strip()] = url.strip()
    return urls


def _check_titles(settings: Settings) -> None:
    for kind, url in settings.title_url.items():
        if kind not in settings.content_rules:
            raise ConfigError(
                f"TRACKSIDE_TITLE_URL: {kind!r} is no content kind of TRACKSIDE_CONTENT_RULES "
                f"({', '.join(settings.content_rules)})"
            )
        if "{id}" not in url:
            raise ConfigError(f"TRACKSIDE_TITLE_URL: the {kind} URL must contain {{id}}, e.g. /api/p/{{id}}")
        if not url.startswith("/"):
            _check_url(url, PREFIX + "TITLE_URL")
    if not settings.title_field.strip(".") or any(not part for part in settings.title_field.split(".")):
        raise ConfigError(f"TRACKSIDE_TITLE_FIELD must be a JSON field name such as title: {settings.title_field!r}")
    if not settings.title_timeout > 0:
        raise ConfigError("TRACKSIDE_TITLE_TIMEOUT must be a positive number of seconds")


def _format(key: str, value: Any) -> str:
    if key in _BOOLS or key == "trust_roles_claim":
        return "1" if value else "0"
    if key == "routes":
        return ";".join(f"{r.prefix}={r.upstream}{' strip' if r.strip else ''}" for r in value)
    if key in ("trusted_proxies", "exclude_addresses"):
        return ",".join(str(n) for n in value)
    if key == "content_rules":
        return ";".join(f"{k}={'|'.join(v)}" for k, v in value.items())
    if key == "title_url":
        return ";".join(f"{k}={v}" for k, v in value.items())
    if key in _TUPLES:
        return ",".join(value)
    return str(value)


# Values shipped in examples, compose files and tutorials: whoever reads them knows the secret.
_PLACEHOLDERS = frozenset(
    (
        "secret changeme change-me change_me password admin token test default example jwt-secret jwt_secret "
        "jwtsecret secret-key secret_key secretkey your-secret your_secret yoursecret your-secret-key supersecret "
        "super-secret mysecret my-secret replace-me replaceme xxx 12345678 0123456789"
    ).split()
)
_PLACEHOLDER_PREFIXES = ("change-me", "changeme", "change_me", "replace-me", "replace_me", "replaceme", "your-", "<")


def _check_secret(value: str | None, name: str) -> None:
    if value is None:
        return
    lowered = value.strip().lower()
    if lowered in _PLACEHOLDERS or lowered.startswith(_PLACEHOLDER_PREFIXES):
        raise ConfigError(f"{name} is a known placeholder value; set a long random one (e.g. `openssl rand -hex 32`)")


def _check_database_url(url: str) -> None:
    # The driver would fail on these with a traceback from deep inside; say it here, naming the setting.
    if url.startswith("postgresql"):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a port that is no number
        except ValueError as exc:
            raise ConfigError(f"TRACKSIDE_DATABASE_URL is not a valid URL ({exc})") from None
    elif "://" in url and url.split("://", 1)[1] not in ("", "/") and not url.split("://", 1)[1].startswith("/"):
        raise ConfigError(
            "TRACKSIDE_DATABASE_URL: a SQLite URL has three slashes before a relative path "
            "(sqlite+aiosqlite:///./trackside.db) and four before an absolute one"
        )


def _check_url(url: str, name: str) -> None:
    if not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1].strip("/")) == 0:
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {url!r}")


def parse_event_rule(rule: str) -> tuple[str, str, str]:
    """`"POST /api/auth/register=signup"` -> `("POST", "/api/auth/register", "signup")`."""
    head, sep, event = rule.rpartition("=")
    method, _, pattern = head.strip().partition(" ")
    if not sep or not method or not pattern.startswith("/") or not event.strip():
        raise ConfigError(f"TRACKSIDE_EVENT_RULES: {rule!r} should look like 'POST /api/auth/register=signup'")
    return method.upper(), pattern.strip(), event.strip()
