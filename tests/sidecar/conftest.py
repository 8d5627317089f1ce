"""Fixtures shared by the stats tests: a database seeded with known events."""

from __future__ import annotations

import pytest

from tests.sidecar.test_stats import ADMIN, SECRET, seed
from trackside.batch import Batch
from trackside.storage.engine import create_engine
from trackside.storage.migrate import migrate
from trackside.storage.writes import write_batch


@pytest.fixture
async def seeded(upstream_url, make_settings, database_url):
    await migrate(database_url)
    engine = create_engine(database_url)
    await write_batch(engine, Batch(events=seed()))
    settings = make_settings(
        frontend_url=upstream_url, api_url=upstream_url, jwt_secret=SECRET,
        admin_token=ADMIN,
        database_url=database_url,
        trust_roles_claim=True,
    )
    yield settings, engine
    await engine.dispose()


