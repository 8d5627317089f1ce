"""Alembic environment: Trackside runs migrations programmatically on a connection it passes in
(`trackside.storage.migrate`), so the same scripts run on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
