"""Memories keep a history, go to a trash, and can be superseded

Revision ID: 0008
Revises: 0007

`deleted_at` puts a memory in the trash: out of search, list and context at once, restorable
until the maintenance task purges it (`JEAN_MEMORY_TRASH_DAYS`). `superseded_by` and
`superseded_at` mark a memory a newer one replaced. `memory_history` records every change
(created, merged, updated, superseded, deleted, restored) with its time, app and the text
before. Plain ADD COLUMN, no table copy: on SQLite a copy would drop the full-text triggers.
Existing memories are live, current and without history.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    op.add_column("memories", sa.Column("deleted_at", Time, nullable=True))
    op.add_column("memories", sa.Column("superseded_by", sa.String(32), nullable=True))
    op.add_column("memories", sa.Column("superseded_at", Time, nullable=True))
    op.create_index("ix_memories_user_deleted", "memories", ["user_id", "deleted_at"])
    op.create_table(
        "memory_history",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("memory_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("at", Time, nullable=False),
        sa.Column("client", sa.String(255), nullable=True),
        sa.Column("text_before", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_memory_history")),
    )
    op.create_index("ix_memory_history_user_memory", "memory_history", ["user_id", "memory_id"])


def downgrade() -> None:
    op.drop_index("ix_memory_history_user_memory", "memory_history")
    op.drop_table("memory_history")
    op.drop_index("ix_memories_user_deleted", "memories")
    op.drop_column("memories", "superseded_at")
    op.drop_column("memories", "superseded_by")
    op.drop_column("memories", "deleted_at")
