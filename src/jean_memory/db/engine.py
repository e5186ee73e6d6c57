"""The database engine: one per process, SQLite (embedded default) or PostgreSQL.

Queries are synchronous SQLAlchemy Core run in worker threads (`run_db`), so the CLI, the
server and the tests share one code path and the event loop never waits on a query.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.engine import Engine

P = ParamSpec("P")
T = TypeVar("T")


def normalise_url(url: str) -> str:
    """Accept the `postgresql://` and `postgres://` spellings PaaS hosts hand out, and pick psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # A pool as large as the worker-thread pool (anyio's 40), so busy moments reuse
        # connections instead of opening and closing overflow ones on every request.
        engine = sa.create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=40, max_overflow=10
        )

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # WAL lets the CLI write while the server reads; a busy timeout makes writers queue
            # instead of failing with "database is locked".
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


async def run_db(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking database function in a worker thread."""
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
