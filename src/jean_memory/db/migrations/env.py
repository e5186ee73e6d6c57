"""Alembic environment: runs migrations on the connection (or engine) the caller hands over."""

from alembic import context

from jean_memory.db.tables import metadata


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    """The full-text index tables are made by raw SQL in migrations, not described by `metadata`."""
    if type_ == "table" and name and name.startswith("memories_fts"):
        return False
    if type_ == "column" and name in ("text_search", "text_search_simple"):  # PostgreSQL's generated tsvectors
        return False
    made_by_hand = name in (
        "ix_memories_text_search",
        "ix_memories_user_text_search",
        "ix_memories_user_text_search_simple",
    ) or (name or "").startswith("ix_memory_vectors_hnsw")
    return not (type_ == "index" and made_by_hand)


def run_migrations(connection):  # type: ignore[no-untyped-def]
    with connection.begin():
        context.configure(
            connection=connection, target_metadata=metadata, render_as_batch=True, include_object=include_object
        )
        context.run_migrations()


# upgrade() hands over the connection holding its lock; other commands (check, downgrade) an engine.
given = context.config.attributes.get("connection")
if given is not None:
    run_migrations(given)
else:
    with context.config.attributes["engine"].connect() as connection:
        run_migrations(connection)
