"""Start-up on a PostgreSQL that lacks an extension the schema needs: a clear error that names
the fix, and nothing half-migrated (issue "Beyond one machine", item 5)."""

import pytest
import sqlalchemy as sa

from jean_memory.db.engine import normalise_url
from tests.support.databases import embedded_postgres_without, with_database
from tests.support.servers import cli_env, free_port, run_cli


@pytest.mark.parametrize(
    ("missing", "fix"),
    [("vector", "postgresql-<version>-pgvector"), ("btree_gin", "contrib")],
)
def test_serve_and_db_check_name_the_missing_extension(tmp_path, missing, fix):
    with embedded_postgres_without([missing]) as admin:
        engine = sa.create_engine(normalise_url(admin), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text('CREATE DATABASE "jm"'))
        engine.dispose()
        url = with_database(admin, "jm")
        env = cli_env(url, tmp_path / "data")

        for command in (["serve", "--port", str(free_port())], ["db", "upgrade"], ["db", "check"]):
            result = run_cli(command, env)
            assert result.returncode != 0, command
            assert missing in result.stderr and fix in result.stderr, (command, result.stderr)
            assert "Traceback" not in result.stderr

        engine = sa.create_engine(normalise_url(url))
        with engine.connect() as conn:  # refused before any migration ran
            assert not sa.inspect(conn).has_table("alembic_version")
            assert not sa.inspect(conn).has_table("users")
        engine.dispose()
