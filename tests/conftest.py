"""Fixtures: a real server on 127.0.0.1 over a real database, accounts in it, and a clean clock.

The databases are chosen by `--db` (default "sqlite,postgresql", or JEAN_MEMORY_TEST_DB when
set); every test that takes `server` or `engine` runs once on each, so the same suite covers
both backends. `--db sqlite` skips the embedded PostgreSQL for a quicker run.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from jean_memory import clock
from jean_memory.accounts.passwords import hash_password
from jean_memory.accounts.users import User, insert_user
from jean_memory.db.engine import create_engine
from jean_memory.db.migrate import upgrade
from tests.support.databases import (
    SERVER_DIRECTORY_PREFIX,
    admin_url,
    fresh_postgresql_database,
    memory_backed_directory,
    migrated_template,
    remove_stale_servers,
    start_embedded_postgres,
    stop_embedded_postgres,
)
from tests.support.oauth import PASSWORD
from tests.support.sdk_client import Browser
from tests.support.servers import RunningServer, threaded_server

BACKENDS = ("sqlite", "postgresql")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        default=os.environ.get("JEAN_MEMORY_TEST_DB", "sqlite,postgresql"),
        help="comma-separated backends every database test runs on: sqlite, postgresql",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:  # every database test, through database_url or directly
        chosen = [b.strip() for b in metafunc.config.getoption("--db").split(",") if b.strip()]
        unknown = set(chosen) - set(BACKENDS)
        if unknown:
            raise pytest.UsageError(f"--db: unknown backends {sorted(unknown)}; use {', '.join(BACKENDS)}")
        if metafunc.definition.get_closest_marker("one_database"):
            chosen = chosen[:1]
        metafunc.parametrize("backend", chosen, indirect=True, scope="function")


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[str]:
    """An existing server from DATABASE_URL, else an embedded one for the whole session.

    Its data lives in a directory of its own, not under pytest's rotating temp root, which a
    concurrent pytest run may prune while this server still uses it."""
    existing = admin_url()
    if existing:
        yield existing
        return
    memory = memory_backed_directory()
    if memory:
        remove_stale_servers(memory)
    base = Path(tempfile.mkdtemp(prefix=SERVER_DIRECTORY_PREFIX, dir=memory))
    try:
        yield start_embedded_postgres(base)
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("PostgreSQL tests need the embedded-postgres package or DATABASE_URL")
    finally:
        stop_embedded_postgres(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'jean_memory.db'}"
        return
    server_url = request.getfixturevalue("postgresql_server")
    template = request.getfixturevalue("postgresql_template")
    with fresh_postgresql_database(server_url, template) as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database of the test's backend, for tests that use the service layer directly."""
    engine = create_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def postgresql_template(postgresql_server: str) -> str:
    return migrated_template(postgresql_server)


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    clock.reset()
    yield
    clock.reset()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once per test process, copied for each `server`, as PostgreSQL's
    template database is: running the migrations was a fifth of a second of every test."""
    path = tmp_path_factory.mktemp("sqlite-template") / "jean_memory.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection closed: the WAL is checkpointed into the file
    return path


@pytest.fixture
def server(database_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    if database_url.startswith("sqlite:///"):
        target = Path(database_url.removeprefix("sqlite:///"))
        if not target.exists():
            shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
            target.chmod(0o600)  # as the server creates its database
    with threaded_server(database_url, tmp_path / "data") as running:
        yield running


@pytest.fixture
def alice(server: RunningServer) -> User:
    return person(server.engine, "alice@example.com")


@pytest.fixture
def bob(server: RunningServer) -> User:
    return person(server.engine, "bob@example.com")


@functools.cache
def password_hash() -> str:
    """PASSWORD's argon2 hash, made once per test process: hashing is a tenth of a second on
    purpose, and the alice and bob of every test need no salt of their own."""
    return hash_password(PASSWORD)


def person(engine: Engine, email: str) -> User:
    """An account as `create_user` makes it (the same hash format and parameters)."""
    with engine.begin() as conn:
        return insert_user(conn, email, password_hash())


@pytest.fixture
def anyio_backend() -> str:
    """The anyio pytest plugin runs each `@pytest.mark.anyio` test on this backend (trio is not installed)."""
    return "asyncio"


@pytest.fixture
async def browser(alice: User) -> AsyncIterator[Browser]:
    """Alice's browser for the SDK's OAuth flow; a fresh cookie jar per test, so the first
    authorization shows both pages. (test_client_replays.py has a synchronous one of its own.)"""
    async with httpx.AsyncClient(timeout=15) as http:
        yield Browser(http=http, email=alice.email)
