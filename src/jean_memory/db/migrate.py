"""Bringing a database up to the current schema, on start and from the CLI."""

from __future__ import annotations

import fcntl
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine | None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


class MissingExtensionError(RuntimeError):
    """The database lacks something only its administrator can add."""


def check_extensions(engine: Engine) -> None:
    """PostgreSQL needs pgvector and btree_gin; say how to get them rather than fail inside a
    migration."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        available = set(
            conn.execute(
                sa.text("SELECT name FROM pg_available_extensions WHERE name IN ('vector', 'btree_gin')")
            ).scalars()
        )
    if "vector" not in available:
        raise MissingExtensionError(
            "PostgreSQL has no pgvector extension. Install it on the database server "
            "(Debian/Ubuntu: apt-get install postgresql-<version>-pgvector; managed services: enable "
            "the 'vector' extension), then start again."
        )
    if "btree_gin" not in available:
        raise MissingExtensionError(
            "PostgreSQL has no btree_gin extension (part of PostgreSQL's contrib modules). Install "
            "the contrib package on the database server (Debian/Ubuntu: it comes with "
            "postgresql-<version>; some distributions: postgresql-contrib; managed services: enable "
            "'btree_gin'), then start again."
        )


# Any fixed number: pg_advisory_lock keys are per database, so this only queues our own upgrades.
UPGRADE_LOCK_KEY = 0x4A4D5550  # "JMUP"


@contextmanager
def _upgrade_lock(engine: Engine) -> Iterator[sa.Connection]:
    """One upgrade at a time per database, so instances starting together do not race to create
    the same tables; yields the connection to migrate on (on PostgreSQL, the one holding the lock).

    PostgreSQL: a session advisory lock, freed by the server if the process dies. SQLite: an
    exclusive flock on a file beside the database, freed by the kernel likewise; an in-memory
    database belongs to one process and needs none."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
            connection.commit()  # the session lock outlives this; migrations begin their own transaction
            try:
                yield connection
            finally:
                connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": UPGRADE_LOCK_KEY})
                connection.commit()
            return
        database = engine.url.database
        if engine.dialect.name != "sqlite" or not database or database == ":memory:":
            yield connection
            return
        # 0600 like the database beside it (issue 12 finding 8), whatever the umask.
        lock_fd = os.open(f"{database}.upgrade-lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        if os.fstat(lock_fd).st_uid == os.geteuid():
            os.fchmod(lock_fd, 0o600)  # exactly, and also one an older version made 0644
        with os.fdopen(lock_fd, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # closing the file releases it
            yield connection


@functools.cache
def head_revision() -> str | None:
    """The newest migration's revision. Alembic finds it by executing every migration file, a
    tenth of a second each time; the files do not change while the process runs."""
    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()


def upgrade(engine: Engine) -> None:
    """Bring the schema to head; safe to call from several processes at once."""
    check_extensions(engine)
    config = alembic_config(engine)
    head = head_revision()
    with _upgrade_lock(engine) as connection:
        # Read inside the lock: whoever waited finds the schema current and does nothing.
        if MigrationContext.configure(connection).get_current_revision() == head:
            connection.rollback()
            return
        connection.rollback()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def current_and_head(engine: Engine) -> tuple[str | None, str | None]:
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, head_revision()
