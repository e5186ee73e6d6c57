"""Migrations and table definitions must agree, and every migration must run both ways."""

from alembic import command

from jean_memory.db.engine import create_engine
from jean_memory.db.migrate import alembic_config, current_and_head, upgrade


def test_migrations_match_the_tables_and_run_down_and_up(database_url):
    engine = create_engine(database_url)
    upgrade(engine)
    config = alembic_config(engine)
    command.check(config)  # raises when tables.py describes something no migration creates
    command.downgrade(config, "base")
    assert current_and_head(engine)[0] is None
    upgrade(engine)
    current, head = current_and_head(engine)
    assert current == head
    engine.dispose()
