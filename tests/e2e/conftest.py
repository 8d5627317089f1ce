"""Fixtures for the end-to-end tests: the Next.js site, the stand-in API and frontend, and sidecar processes.

Servers are session-scoped (one ``next start`` and one API for all tests); sidecars are per test, each on its own
database file. Every process started here is ended in teardown, by its own id.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e import helpers
from tests.e2e.helpers import Proc


@pytest.fixture(scope="session")
def e2e_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def browser_tools() -> dict[str, str]:
    """node and chromium, or a skip (a failure under CI)."""
    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        helpers.skip_or_fail("node/npm are not installed")
    chromium = helpers.chromium_path()
    if chromium is None:
        helpers.skip_or_fail("chromium is not installed (/usr/bin/chromium, or set $CHROMIUM)")
    return {"node": str(node), "chromium": str(chromium)}


@pytest.fixture(scope="session")
def nextsite_build(browser_tools: dict[str, str]) -> str:
    """Builds tests/e2e/nextsite (idempotent); the Next.js build id."""
    return helpers.build_nextsite()


@pytest.fixture(scope="session")
def next_server(nextsite_build: str, e2e_tmp: Path) -> Iterator[Proc]:
    proc = helpers.start_next(e2e_tmp)
    proc.extra["build_id"] = nextsite_build
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def api_server(e2e_tmp: Path) -> Iterator[Proc]:
    proc = helpers.start_stub(e2e_tmp, "api")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def frontend_stub(e2e_tmp: Path) -> Iterator[Proc]:
    proc = helpers.start_stub(e2e_tmp, "frontend")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def e2e_database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'trackside.db'}"


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """``sidecar_factory(frontend_url=..., api_url=..., database_url=..., jwt_secret=None, name=...)`` starts a
    sidecar and waits for its health check; any still running at teardown is ended."""
    started: list[Proc] = []

    def start(**kwargs) -> Proc:
        proc = helpers.start_sidecar(tmp_path, **kwargs)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            proc.stop()
