"""Alembic environment: runs migrations on the engine the caller hands over."""

from alembic import context

from jean_memory.db.tables import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
