"""The one way tests read figures: `trackside report`'s builder over today's UTC day."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from trackside.derive import derivation_of
from trackside.report import build_report
from trackside.settings import Settings
from trackside.storage.engine import create_engine


async def report_of(database_url: str) -> dict[str, Any]:
    engine = create_engine(database_url)
    today = datetime.now(UTC).date()
    try:
        return await build_report(engine, today, today, 1800.0, derivation_of(Settings()))
    finally:
        await engine.dispose()
