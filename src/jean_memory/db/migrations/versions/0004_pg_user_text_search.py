"""PostgreSQL: one text-search index per (user, words) instead of one over everybody's words

Revision ID: 0004
Revises: 0003

Every lexical query filters by user, but the GIN index on `text_search` alone holds every
user's words: for a common word PostgreSQL read tens of thousands of other people's rows and
then dropped them, which grew with the total row count (BM25 step 2.6 ms at 100k memories,
11 ms at 1M, for the same 1,000 memories per person; bench/README.md, "Scale"). A GIN index on
(user_id, text_search) answers for one person's rows only: 1.6 ms at 1M. A GIN index over a
plain column needs the `btree_gin` extension, part of PostgreSQL's contrib and trusted since
PostgreSQL 13 (the database owner may create it). SQLite is unchanged (migration 0003 did the
same there with an indexed owner column).
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.execute("CREATE INDEX ix_memories_user_text_search ON memories USING gin (user_id, text_search)")
    op.execute("DROP INDEX IF EXISTS ix_memories_text_search")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE INDEX IF NOT EXISTS ix_memories_text_search ON memories USING gin (text_search)")
    op.execute("DROP INDEX IF EXISTS ix_memories_user_text_search")
