"""The database engine: one per process, SQLite (embedded default) or PostgreSQL.

Queries are synchronous SQLAlchemy Core run in worker threads (`off_loop.run_db`), so the CLI,
the server and the tests share one code path and the event loop never waits on a query.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jean_memory.config import PRIVATE_FILE_MODE, private_directory


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
        database_file = Path(path) if path and path != ":memory:" and not path.startswith("file:") else None
        if database_file is not None:
            _create_private(database_file)
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
            cursor.execute("PRAGMA busy_timeout=30000")
            _switch_to_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
            if database_file is not None:
                _narrow(database_file)

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _switch_to_wal(cursor: sqlite3.Cursor, seconds: float = 30.0) -> None:
    """`PRAGMA journal_mode=WAL` on a new database needs it to itself, and SQLite answers
    "database is locked" at once, without its busy handler, while another process is creating
    the same file (instances starting together on a new database). Retried until `seconds`."""
    deadline = time.monotonic() + seconds
    delay = 0.01
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)  # a retry loop with a deadline, not a wait for an event
            delay = min(delay * 2, 0.5)


def _create_private(database_file: Path) -> None:
    """Create the database file 0600 before SQLite opens it (SQLite would make it 0644 under
    umask 022), in a new 0700 directory. An existing directory is not ours to narrow here: the
    file may live anywhere DATABASE_URL says (the data directory is narrowed by `serve`)."""
    if not database_file.parent.exists():
        private_directory(database_file.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    _narrow(database_file)


def _narrow(database_file: Path) -> None:
    """The database and its -wal and -shm files 0600, exactly. SQLite creates -wal and -shm
    with the main file's permissions (os_unix.c, findCreateFileMode), so once the main file is
    0600 they are too; this also narrows files made by versions before that was so."""
    for path in (database_file, Path(f"{database_file}-wal"), Path(f"{database_file}-shm")):
        try:
            status = path.stat()
        except FileNotFoundError:
            continue
        if status.st_mode & 0o777 != PRIVATE_FILE_MODE and status.st_uid == os.geteuid():
            os.chmod(path, PRIVATE_FILE_MODE)
