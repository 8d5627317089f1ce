"""The database engine: one place knows SQLite pragmas, transactions and pool settings."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

# An execution option: this connection's transactions will write (SQLite: BEGIN IMMEDIATE).
WRITER = "trackside_writer"


class _RollbackOnClose(sqlite3.Connection):
    """A SQLite connection that rolls back its open transaction when it is closed.

    A task cancelled while its statement runs (a deriver stopped mid-write, a job cancelled) has its
    connection closed by SQLAlchemy, not rolled back. If that statement's cursor is still alive (the
    cancelled task's traceback holds it), sqlite3_close_v2 only makes the connection a zombie, which
    keeps its transaction, and with it the database's write lock, until the garbage collector
    finalizes the statement: every other writer waited its busy timeout and failed."""

    def close(self) -> None:
        if self.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.rollback()
        super().close()


def create_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    if database_url.startswith("sqlite"):
        # isolation_level=None hands transactions to us: pysqlite would otherwise issue BEGIN only
        # before a write, so a read of several statements would see several states of the file.
        connect_args = {"timeout": 30, "isolation_level": None, "factory": _RollbackOnClose}
        engine = create_async_engine(database_url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL lets readers and the writer (and several sidecar processes) share the file;
            # busy_timeout makes a second writer wait instead of failing at once.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock at once (waiting up to busy_timeout): a transaction that
            # reads first and writes later would fail at once if another writer committed between.
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITER) else "BEGIN")

        return engine
    return create_async_engine(database_url, pool_size=5, max_overflow=5, pool_pre_ping=True, **kwargs)


@contextlib.asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that holds the right to write from its start (SQLite's write lock; on
    PostgreSQL an ordinary transaction)."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{WRITER: True})
        async with conn.begin():
            yield conn


@contextlib.asynccontextmanager
async def snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection whose reads all see one state of the database, even while a rollup and a
    prune commit in between (they move a day from raw events to daily rows)."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            yield conn


@contextlib.asynccontextmanager
async def planner_off(conn: AsyncConnection, *settings: str) -> AsyncIterator[None]:
    """PostgreSQL: these planner settings (`enable_sort`, `jit`, ...) off for the statements run inside,
    in this transaction only; nothing elsewhere. For statements over a day the planner has no
    statistics for yet, whose estimated few rows lead it to plans that are quadratic or sort
    everything (the rollup's)."""
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        for setting in settings:
            await conn.exec_driver_sql(f"SET LOCAL {setting} = off")
    yield
    if postgres:
        for setting in settings:
            await conn.exec_driver_sql(f"RESET {setting}")
