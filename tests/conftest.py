"""Fixtures: a real server on 127.0.0.1 over a real database, accounts in it, and a clean clock.

The database is chosen by `--db` (sqlite by default); every test that takes `server` or
`engine` runs on it, so the same suite covers each backend.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jean_memory import clock
from jean_memory.accounts.users import User, create_user
from tests.support.oauth import PASSWORD
from tests.support.servers import RunningServer, threaded_server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--db", default=os.environ.get("JEAN_MEMORY_TEST_DB", "sqlite"), choices=["sqlite"])


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jean_memory.db'}"


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    clock.reset()
    yield
    clock.reset()


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[RunningServer]:
    with threaded_server(database_url, tmp_path / "data") as running:
        yield running


@pytest.fixture
def alice(server: RunningServer) -> User:
    return create_user(server.engine, "alice@example.com", PASSWORD)


@pytest.fixture
def bob(server: RunningServer) -> User:
    return create_user(server.engine, "bob@example.com", PASSWORD)
