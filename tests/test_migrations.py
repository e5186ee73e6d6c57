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


OWNERS = ["u1", "ff52d917b93113ba3ca0422449e24c46", "Zoë-ß 東京", "e" * 32]


def test_memories_saved_before_the_fts_owner_column_are_found_after_it(database_url):
    """Migration 0003 rebuilds SQLite's full-text index with the owner as an indexed token;
    rows written under 0002 must be found by owner afterwards, and by nobody else."""
    import sqlalchemy as sa

    from jean_memory.memory.lexical import lexical_search, owner_token

    engine = create_engine(database_url)
    config = alembic_config(engine)
    command.upgrade(config, "0002")
    with engine.begin() as conn:
        for pk, owner in enumerate(OWNERS, start=1):
            conn.execute(
                sa.text(
                    "INSERT INTO memories (pk, id, user_id, text, content_hash, tags, created_at, updated_at, kind)"
                    " VALUES (:pk, :id, :user_id, :text, 'h', '[]', 0, 0, 'memory')"
                ),
                {"pk": pk, "id": f"m{pk}", "user_id": owner, "text": f"my parrot is called Kiwi number {pk}"},
            )
    upgrade(engine)
    with engine.connect() as conn:
        for pk, owner in enumerate(OWNERS, start=1):
            assert [hit for hit, _ in lexical_search(conn, owner, "parrot", 10)] == [pk]
        if engine.dialect.name == "sqlite":  # the trigger's SQL and the Python mapping agree
            stored = conn.execute(sa.text("SELECT owner FROM memories_fts_content ORDER BY pk")).scalars().all()
            assert stored == [owner_token(owner) for owner in OWNERS]
    engine.dispose()
