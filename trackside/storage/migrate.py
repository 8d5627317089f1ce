"""Run the Alembic migrations to head on the configured database (`trackside migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from trackside.storage.engine import create_engine, writing

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _upgrade(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def migrate(database_url: str, revision: str = "head") -> None:
    engine = create_engine(database_url)
    try:
        # Writing from the start (SQLite: BEGIN IMMEDIATE): two processes migrating one new file at once
        # (a worker and a sidecar) take turns; a transaction that read the version first and wrote
        # after the other's commit would fail at once ("database is locked").
        async with writing(engine) as conn:
            if conn.dialect.name == "postgresql":
                # Several sidecars starting at once: one migrates, the others wait and find nothing to do.
                await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7428190)")
            await conn.run_sync(_upgrade, revision)
    finally:
        await engine.dispose()
