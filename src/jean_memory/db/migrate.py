"""Bringing a database up to the current schema, on start and from the CLI."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
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


def upgrade(engine: Engine) -> None:
    check_extensions(engine)
    command.upgrade(alembic_config(engine), "head")


def current_and_head(engine: Engine) -> tuple[str | None, str | None]:
    script = ScriptDirectory.from_config(alembic_config(engine))
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return current, script.get_current_head()
