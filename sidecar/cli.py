"""`trackside`: serve, migrate, report (and, from the rollups package, worker and rollup)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
from datetime import UTC, date, datetime
from typing import Any

import click

from sidecar.operator_errors import explain, fail, sqlite_path
from trackside.errors import ConfigError
from trackside.logs import configure_logging
from trackside.settings import Settings

# The settings the running command was given: the URLs an outage's one line names.
_current: Settings | None = None


def _settings(**overrides: Any) -> Settings:
    global _current
    try:
        _current = Settings.from_env(**overrides)
    except ConfigError as exc:
        fail(str(exc), 2)
    return _current


def _logging(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    for warning in settings.warnings():
        logging.getLogger("trackside").warning("%s", warning)


class _Commands(click.Group):
    """Every command: a database or Redis that cannot be reached is one line and exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            settings = _current
            database_url = settings.database_url if settings else os.environ.get("TRACKSIDE_DATABASE_URL", "?")
            redis_url = settings.redis_url if settings else os.environ.get("TRACKSIDE_REDIS_URL")
            line = explain(exc, database_url, redis_url)
            if line is None:
                raise
            fail(line, 1, as_json=settings.log_format == "json" if settings else None)


@click.group(cls=_Commands)
@click.version_option(package_name="trackside", prog_name="trackside", message="%(prog)s %(version)s")
def main() -> None:
    """Trackside: self-hosted traffic analytics for a Next.js frontend and a Python API."""
    threading.excepthook = _quiet_orphaned_driver_threads


def _quiet_orphaned_driver_threads(args: threading.ExceptHookArgs) -> None:
    # When a command fails to reach its database, aiosqlite's worker thread can still try to hand a
    # result to the event loop that asyncio.run has just closed. The operator already has the one
    # line that explains the failure; that thread's traceback would only bury it.
    if args.exc_type is RuntimeError and "Event loop is closed" in str(args.exc_value):
        return
    threading.__excepthook__(args)


@main.command()
@click.option("--frontend-url", help="Upstream for every path but /api/... [TRACKSIDE_FRONTEND_URL]")
@click.option("--api-url", help="Upstream for /api/... [TRACKSIDE_API_URL]")
@click.option("--host", help="Address to listen on [TRACKSIDE_HOST, default 127.0.0.1]")
@click.option("--port", type=int, help="Port to listen on [TRACKSIDE_PORT, default 8080]")
@click.option("--workers", type=int, help="Server processes [TRACKSIDE_WORKERS, default 1]")
@click.option("--database-url", help="SQLite (default ./trackside.db) or postgresql+asyncpg:// URL")
@click.option("--redis-url", help="Redis URL; unset means embedded mode [TRACKSIDE_REDIS_URL]")
@click.option("--trusted-proxies", help="IPs/CIDRs whose X-Forwarded-For is believed [TRACKSIDE_TRUSTED_PROXIES]")
@click.option("--jwt-secret", help="HS256 secret of the site's access tokens [TRACKSIDE_JWT_SECRET]")
@click.option("--geoip-db", help="Country .mmdb file [TRACKSIDE_GEOIP_DB]")
@click.option("--no-capture", is_flag=True, default=False, help="Proxy only, record nothing (for benchmarks)")
@click.option("--log-level", help="debug, info, warning, error [TRACKSIDE_LOG_LEVEL]")
def serve(no_capture: bool, **flags: Any) -> None:
    """Run the sidecar: a reverse proxy that records every request."""
    import uvicorn

    from sidecar.server import MIGRATED_ENV, uvicorn_options

    settings = _settings(capture=False if no_capture else None, **flags)
    _logging(settings)
    log = logging.getLogger("trackside.sidecar")
    if settings.auto_migrate:
        # In a child process: the server's supervisor then never imports Alembic and SQLAlchemy,
        # and stays small (it only watches the worker processes).
        done = subprocess.run(
            [sys.executable, "-m", "sidecar", "migrate", "--database-url", settings.database_url],
            env={**os.environ, **settings.to_env()},
        )
        if done.returncode != 0:
            sys.exit(1)  # the migration said why, in one line
    # Worker processes rebuild the same settings from the environment.
    os.environ.update(settings.to_env())
    os.environ[MIGRATED_ENV] = "1"
    # The server processes' counters, added up by whichever of them answers a scrape.
    from trackside.metric_files import SHARED_ENV, new_run_dir, remove_run_dir

    metrics_dir = os.environ[SHARED_ENV] = new_run_dir()
    mode = "embedded (no Redis)" if settings.redis_url is None else "Redis"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    log.info("Trackside on http://%s:%d/, dashboard http://%s:%d/_trackside/", host, settings.port, host, settings.port)
    log.info("Trackside %s mode: %r", mode, settings)
    options = uvicorn_options(settings)
    options["log_config"] = None  # keep the logging configured above (text or JSON)
    if settings.workers > 1:
        from sidecar.workers import serve_forked

        serve_forked(settings, options, metrics_dir)  # becomes the supervisor, which removes the directory
    try:
        uvicorn.run("sidecar.app:create_app", factory=True, **options)
    finally:
        remove_run_dir(metrics_dir)  # after a kill, the next `trackside serve` removes it


@main.command()
@click.option("--redis-url", help="Redis URL [TRACKSIDE_REDIS_URL]")
@click.option("--database-url", help="Database the batches go to [TRACKSIDE_DATABASE_URL]")
@click.option("--burst", is_flag=True, help="Drain the queue, then exit")
@click.option("--health-file", help="The worker's heartbeat file [default: TRACKSIDE_SPOOL_DIR/worker-health.json]")
@click.option("--check", is_flag=True, help="Health check: exit 0 if the worker here is running and reaches Redis")
def worker(redis_url: str | None, database_url: str | None, burst: bool, health_file: str | None, check: bool) -> None:
    """Run the ARQ worker: persist batches, roll up closed days, prune. It outlives Redis and
    database outages (reconnecting with backoff); `--check` tells a container's health check."""
    import importlib

    settings = _settings(redis_url=redis_url, database_url=database_url)
    # Found by name, as arq's CLI would: the sidecar package never imports the worker's code.
    health = importlib.import_module("rollups.health")
    path = health_file or str(health.health_path(settings))
    if check:
        healthy, line = health.check(path)
        click.echo(line, err=not healthy)
        sys.exit(0 if healthy else 1)
    if settings.redis_url is None:
        click.echo("trackside: TRACKSIDE_REDIS_URL is required for a worker (embedded mode needs none)", err=True)
        sys.exit(2)
    _logging(settings)
    asyncio.run(importlib.import_module("rollups.worker").run(settings, burst=burst, health_file=path))


@main.command()
@click.option("--day", help="Roll up this UTC day (YYYY-MM-DD), even if it was rolled up before")
@click.option("--backfill", is_flag=True, help="Roll up every closed day that needs it")
@click.option("--database-url", help="Database [TRACKSIDE_DATABASE_URL]")
def rollup(day: str | None, backfill: bool, database_url: str | None) -> None:
    """Roll up closed UTC days into daily rows (the worker and the embedded mode do this on a schedule)."""
    from trackside.derive import derivation_of
    from trackside.rollup import DayPruned, pending_days, rollup_day, utc_today
    from trackside.storage.engine import create_engine

    settings = _settings(database_url=database_url)
    one = _day(day, "--day")
    if (one is None) == (not backfill):
        raise click.UsageError("give either --day YYYY-MM-DD or --backfill")
    if one is not None and one >= utc_today():
        raise click.BadParameter("only closed days (before today, UTC) can be rolled up", param_hint="--day")
    window = settings.view_window_minutes * 60.0

    async def run() -> None:
        engine = create_engine(settings.database_url)
        try:
            days = [one] if one is not None else await pending_days(engine)
            with click.progressbar(days, label="rolling up", show_pos=True, item_show_func=str) as bar:
                for d in bar:
                    await rollup_day(engine, d, window, force=one is not None, derivation=derivation_of(settings))
            click.echo(f"rolled up {len(days)} day(s)")
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except DayPruned as exc:
        click.echo(f"\ntrackside: {exc}", err=True)
        sys.exit(1)


@main.command("migrate")
@click.option("--database-url", help="Database to migrate [TRACKSIDE_DATABASE_URL]")
def migrate_command(database_url: str | None) -> None:
    """Create or upgrade the schema (Alembic migrations)."""
    from trackside.storage.migrate import migrate

    settings = _settings(database_url=database_url)
    configure_logging(settings.log_level, settings.log_format)  # no secret warnings: serve gives them once
    asyncio.run(migrate(settings.database_url))
    if settings.log_format == "json":
        logging.getLogger("trackside").info("schema is up to date")
    else:
        click.echo("schema is up to date")


def _day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"expected YYYY-MM-DD, got {value!r}", param_hint=name) from None


@main.command()
@click.option("--since", help="First UTC day, YYYY-MM-DD (default: today)")
@click.option("--until", help="Last UTC day, YYYY-MM-DD (default: today)")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts")
@click.option("--database-url", help="Database to read [TRACKSIDE_DATABASE_URL]")
def report(since: str | None, until: str | None, as_json: bool, database_url: str | None) -> None:
    """Page views, content views, API calls, errors, devices, countries, referrers; bots apart."""
    from trackside.derive import derivation_of
    from trackside.report import build_report, format_report
    from trackside.storage.engine import create_engine

    settings = _settings(database_url=database_url)
    today = datetime.now(UTC).date()
    first = _day(since, "--since") or today
    last = _day(until, "--until") or today
    if last < first:
        raise click.BadParameter("--until is before --since", param_hint="--until")
    path = sqlite_path(settings.database_url)
    if path is not None and not os.path.isfile(path):
        # Opening it would create an empty database, and report nothing as if nothing had happened.
        fail(f"no database at {path} (TRACKSIDE_DATABASE_URL={settings.database_url}); run it where the sidecar ran")

    async def run() -> dict[str, Any]:
        engine = create_engine(settings.database_url)
        try:
            return await build_report(
                engine, first, last, settings.view_window_minutes * 60.0, derivation_of(settings)
            )
        finally:
            await engine.dispose()

    data = asyncio.run(run())
    click.echo(json.dumps(data, indent=2) if as_json else format_report(data))


@main.group()
def keys() -> None:
    """API keys for server-to-server callers: write (the events API) or read."""


def _keys_run(database_url: str | None, work: Any) -> Any:
    from trackside.storage.engine import create_engine
    from trackside.storage.migrate import migrate

    settings = _settings(database_url=database_url)

    async def run() -> Any:
        if settings.auto_migrate:
            await migrate(settings.database_url)
        engine = create_engine(settings.database_url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@keys.command("create")
@click.option("--scope", type=click.Choice(["write", "read"]), required=True, help="write: send events; read: stats")
@click.option("--name", required=True, help="What the key is for, e.g. mqtt-handler")
@click.option("--database-url", help="Database [TRACKSIDE_DATABASE_URL]")
def keys_create(scope: str, name: str, database_url: str | None) -> None:
    """Make a key; it is printed once and only its hash is stored."""
    from trackside.api_keys import KeyError_, create_key

    try:
        key, secret = _keys_run(database_url, lambda engine: create_key(engine, name, scope))
    except KeyError_ as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(f"created key {key.id} ({key.scope}, {key.name!r}); keep it now, it is not shown again:", err=True)
    click.echo(secret)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts")
@click.option("--database-url", help="Database [TRACKSIDE_DATABASE_URL]")
def keys_list(as_json: bool, database_url: str | None) -> None:
    """The keys, revoked ones included (never their secrets)."""
    from trackside.api_keys import list_keys

    found = _keys_run(database_url, list_keys)
    if as_json:
        click.echo(json.dumps([k.as_dict() for k in found], indent=2))
        return
    for k in found:
        row = k.as_dict()
        state = f"revoked {row['revoked_at']}" if k.revoked_at else "active"
        click.echo(f"{k.id}  {k.scope:<5}  {row['created_at']}  {state:<28}  {k.name}")


@keys.command("revoke")
@click.argument("key_id")
@click.option("--database-url", help="Database [TRACKSIDE_DATABASE_URL]")
def keys_revoke(key_id: str, database_url: str | None) -> None:
    """Revoke a key by its id (every sidecar refuses it within 10 seconds)."""
    from trackside.api_keys import revoke_key

    if not _keys_run(database_url, lambda engine: revoke_key(engine, key_id)):
        click.echo(f"trackside: no active key {key_id!r}", err=True)
        sys.exit(1)
    click.echo(f"revoked key {key_id}")


@main.group()
def share() -> None:
    """Share tokens: read-only links that open the dashboard signed in (/_trackside/#token=...)."""


@share.command("create")
@click.option("--expires", default="30d", show_default=True, help="How long it lasts: 90m, 12h, 30d, 2w")
@click.option("--label", default="", help="Who or what it is for, e.g. board-meeting")
@click.option("--database-url", help="Database [TRACKSIDE_DATABASE_URL]")
def share_create(expires: str, label: str, database_url: str | None) -> None:
    """Make a token; it is printed once and only its hash is stored."""
    from trackside.share_tokens import ShareError, create_share, parse_expiry

    try:
        lasts = parse_expiry(expires)
        token, secret = _keys_run(database_url, lambda engine: create_share(engine, label, lasts))
    except ShareError as exc:
        raise click.BadParameter(str(exc)) from None
    expires_at = token.as_dict()["expires_at"]
    click.echo(
        f"created share token {token.id} (expires {expires_at}); keep it now, it is not shown again."
        f" Open /_trackside/#token=<token> to see the dashboard:",
        err=True,
    )
    click.echo(secret)


@share.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts")
@click.option("--database-url", help="Database [TRACKSIDE_DATABASE_URL]")
def share_list(as_json: bool, database_url: str | None) -> None:
    """The share tokens, expired and revoked ones included (never their secrets)."""
    from trackside.share_tokens import list_shares

    found = _keys_run(database_url, list_shares)
    if as_json:
        click.echo(json.dumps([t.as_dict() for t in found], indent=2))
        return
    for t in found:
        row = t.as_dict()
        if t.revoked_at:
            state = f"revoked {row['revoked_at']}"
        elif t.expired():
            state = f"expired {row['expires_at']}"
        else:
            state = f"expires {row['expires_at']}"
        click.echo(f"{t.id}  {row['created_at']}  {state:<28}  {t.label}")


@share.command("revoke")
@click.argument("token_id")
@click.option("--database-url", help="Database [TRACKSIDE_DATABASE_URL]")
def share_revoke(token_id: str, database_url: str | None) -> None:
    """Revoke a share token by its id (every sidecar refuses it within 10 seconds)."""
    from trackside.share_tokens import revoke_share

    if not _keys_run(database_url, lambda engine: revoke_share(engine, token_id)):
        click.echo(f"trackside: no active share token {token_id!r}", err=True)
        sys.exit(1)
    click.echo(f"revoked share token {token_id}")


@main.group()
def goals() -> None:
    """Goals: site events (signup, upload, ...) and page patterns that count as conversions."""


def _goals_run(database_url: str | None, work: Any) -> Any:
    settings = _settings(database_url=database_url)

    async def in_transaction(engine: Any) -> Any:
        async with engine.begin() as conn:
            return await work(conn, settings)

    return _keys_run(database_url, in_transaction)


@goals.command("add")
@click.argument("name")
@click.option("--event", help="A site event's name: signup, upload, an X-Trackside-Event hint's name")
@click.option("--page", help="A page pattern: * is any run of characters but /, ** any run (e.g. /p/*)")
@click.option("--database-url", help="Database [TRACKSIDE_DATABASE_URL]")
def goals_add(name: str, event: str | None, page: str | None, database_url: str | None) -> None:
    """Store a goal: NAME --event EVENT, or NAME --page PATTERN."""
    from trackside.goals import EVENT, PAGE, GoalConflict, GoalError, add_goal, check_goal

    if (event is None) == (page is None):
        raise click.UsageError("give either --event EVENT or --page PATTERN")
    try:
        goal = check_goal(name, EVENT, event) if event is not None else check_goal(name, PAGE, page or "")
    except GoalError as exc:
        hint = {"name": "NAME", "kind": "--event/--page", "match": "--event" if event is not None else "--page"}
        raise click.BadParameter(str(exc), param_hint=hint[exc.field]) from None
    try:
        _goals_run(database_url, lambda conn, settings: add_goal(conn, settings, goal))
    except GoalConflict as exc:
        click.echo(f"trackside: {exc}", err=True)
        sys.exit(1)
    click.echo(f"added goal {goal.name!r} ({goal.kind} {goal.match})")


@goals.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts")
@click.option("--database-url", help="Database [TRACKSIDE_DATABASE_URL]")
def goals_list(as_json: bool, database_url: str | None) -> None:
    """Every goal: the settings' (TRACKSIDE_GOALS, or the event rules' names), then the stored ones."""
    from trackside.goals import list_goals

    found = _goals_run(database_url, list_goals)
    if as_json:
        click.echo(json.dumps([g.as_dict() for g in found], indent=2))
        return
    for g in found:
        click.echo(f"{g.goal.kind:<5}  {g.origin:<8}  {g.goal.name}  {g.goal.match}")


@goals.command("remove")
@click.argument("name")
@click.option("--database-url", help="Database [TRACKSIDE_DATABASE_URL]")
def goals_remove(name: str, database_url: str | None) -> None:
    """Remove a stored goal (a goal of the settings changes with TRACKSIDE_GOALS)."""
    from trackside.goals import GoalConflict, remove_goal

    try:
        removed = _goals_run(database_url, lambda conn, settings: remove_goal(conn, settings, name))
    except GoalConflict as exc:
        click.echo(f"trackside: {exc}", err=True)
        sys.exit(1)
    if not removed:
        click.echo(f"trackside: no stored goal {name!r}", err=True)
        sys.exit(1)
    click.echo(f"removed goal {name!r}")
