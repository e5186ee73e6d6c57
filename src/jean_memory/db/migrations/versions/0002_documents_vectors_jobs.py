"""documents, vectors, per-user versions and background jobs

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from jean_memory.db.types import EmbeddingVector

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Time = sa.Float(precision=53)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table(
        "documents",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("document_type", sa.String(40), nullable=False),
        sa.Column("source_url", sa.String(2048), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("chunk_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("client", sa.String(255), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
    )
    op.create_index(op.f("ix_documents_user_id"), "documents", ["user_id"])
    # Plain ADD COLUMN, no foreign key: on SQLite adding a constraint needs a table copy, which
    # would drop the FTS triggers. Deleting a document deletes its chunks in the same transaction.
    op.add_column("memories", sa.Column("kind", sa.String(10), server_default="memory", nullable=False))
    op.add_column("memories", sa.Column("document_id", sa.String(32), nullable=True))
    op.create_index("ix_memories_document", "memories", ["document_id"])
    op.create_table(
        "memory_vectors",
        sa.Column("memory_pk", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("vector", EmbeddingVector(), nullable=False),
        sa.ForeignKeyConstraint(
            ["memory_pk"], ["memories.pk"], name=op.f("fk_memory_vectors_memory_pk_memories"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("memory_pk", name=op.f("pk_memory_vectors")),
    )
    op.create_index("ix_memory_vectors_user_model", "memory_vectors", ["user_id", "model"])
    op.create_table(
        "memory_versions",
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_memory_versions")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", Time, nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_created", "jobs", ["created_at"])


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("memory_versions")
    op.drop_table("memory_vectors")
    op.drop_index("ix_memories_document", "memories")
    op.drop_column("memories", "document_id")
    op.drop_column("memories", "kind")
    op.drop_index(op.f("ix_documents_user_id"), "documents")
    op.drop_table("documents")
