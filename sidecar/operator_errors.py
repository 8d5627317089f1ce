"""An operator's mistakes as one line: a database or Redis that cannot be reached, a URL that names
no database. Anything else is a bug, and keeps its traceback.

The line names the store and its URL without the password, and the reason its driver gave."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from typing import NoReturn

import click

from trackside.settings import redacted


def sqlite_path(url: str) -> str | None:
    """The absolute file a SQLite URL names (None for an in-memory database or another backend)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    path = path.split("?", 1)[0]
    if path in ("", ":memory:"):
        return None
    return os.path.abspath(path)


def explain(exc: BaseException, database_url: str, redis_url: str | None) -> str | None:
    """One line for an outage or a wrong URL; None for anything else (a bug: let it show)."""
    from_redis = _raised_in(exc, ("redis", "arq"))
    reason = _reason(exc)
    if from_redis and _is_connection_error(exc):
        return f"cannot reach Redis at {redacted(redis_url or '?')}: {reason}"
    from_database = _raised_in(exc, ("asyncpg", "aiosqlite", "sqlalchemy", "sqlite3"))
    # An OSError elsewhere (a closed pipe, a full disk) is no database's: it keeps its traceback.
    if _is_database_error(exc) or (from_database and _is_connection_error(exc)):
        if "no such table" in reason or ("relation" in reason and "does not exist" in reason):
            return f"the database {redacted(database_url)} has no Trackside tables ({reason}); run `trackside migrate`"
        return f"cannot use the database {redacted(database_url)}: {reason}"
    return None


def fail(message: str, code: int = 1, *, as_json: bool | None = None) -> NoReturn:
    """Print `trackside: <message>` (a JSON log line with TRACKSIDE_LOG_FORMAT=json) and exit."""
    if as_json is None:
        as_json = os.environ.get("TRACKSIDE_LOG_FORMAT", "").strip().lower() == "json"
    if as_json:
        now = time.time()
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
            "level": "error",
            "logger": "trackside",
            "message": message,
        }
        click.echo(json.dumps(entry, ensure_ascii=False), err=True)
    else:
        click.echo(f"trackside: {message}", err=True)
    sys.exit(code)


def _is_database_error(exc: BaseException) -> bool:
    try:
        from sqlalchemy.exc import DBAPIError
    except ImportError:  # pragma: no cover - always installed
        return False
    return isinstance(exc, DBAPIError)


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, OSError | TimeoutError | socket.gaierror):
        return True
    try:
        import redis.exceptions
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError)


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # SQLAlchemy's wrapper: the driver's own words
    source = orig if orig is not None else exc
    text = str(source).strip().splitlines()[0] if str(source).strip() else type(source).__name__
    if isinstance(source, OSError) and source.strerror:
        text = source.strerror
    return text[:300]


def _raised_in(exc: BaseException, packages: tuple[str, ...]) -> bool:
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        module = frame.f_globals.get("__name__", "")
        if module.split(".", 1)[0] in packages:
            return True
    return False
