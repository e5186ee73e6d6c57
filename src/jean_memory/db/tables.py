"""The schema, as SQLAlchemy Core tables: the single description Alembic migrations and queries share.

Times are epoch seconds (float) taken from `jean_memory.clock`, so a test that moves the clock
moves every lifetime at once. Every secret column holds a hash, never the secret.
"""

from __future__ import annotations

import sqlalchemy as sa

from jean_memory.db.types import EmbeddingVector

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Time = sa.Float(precision=53)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
    # Set while the account is disabled: no sign-in, no API key; its grants were revoked then.
    sa.Column("disabled_at", Time),
    sa.Column("last_sign_in_at", Time),  # every browser sign-in (migration 0011)
)

browser_sessions = sa.Table(
    "browser_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("last_used_at", Time),
)

oauth_clients = sa.Table(
    "oauth_clients",
    metadata,
    sa.Column("client_id", sa.String(2048), primary_key=True),
    sa.Column("client_secret_hash", sa.String(64)),
    sa.Column("client_name", sa.String(255), nullable=False),
    sa.Column("redirect_uris", sa.JSON, nullable=False),
    sa.Column("token_endpoint_auth_method", sa.String(40), nullable=False),
    sa.Column("grant_types", sa.JSON, nullable=False),
    sa.Column("scope", sa.String(1000)),
    sa.Column("source", sa.String(10), nullable=False),  # dcr | static | cimd
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("last_used_at", Time),
    sa.Column("expires_at", Time),  # CIMD cache expiry; unused DCR clients are swept by last use
)

authorization_requests = sa.Table(
    "authorization_requests",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("client_id", sa.String(2048), nullable=False),
    sa.Column("redirect_uri", sa.String(2048), nullable=False),
    sa.Column("redirect_uri_given", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("code_challenge", sa.String(128), nullable=False),
    sa.Column("state", sa.String(2048)),
    sa.Column("scope", sa.String(1000), nullable=False),
    sa.Column("resource", sa.String(2048), nullable=False),
    sa.Column("prompt", sa.String(100)),
    sa.Column("user_id", sa.String(32)),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
)

consents = sa.Table(
    "consents",
    metadata,
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("client_id", sa.String(2048), primary_key=True),
    sa.Column("scope", sa.String(1000), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    # The one redirect URI the consent was given for (NULL: given before this was kept).
    sa.Column("redirect_uri", sa.String(2048)),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("client_id", sa.String(2048), nullable=False),
    sa.Column("scope", sa.String(1000), nullable=False),
    sa.Column("resource", sa.String(2048), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("revoked_at", Time),
    sa.Column("revoked_reason", sa.String(40)),
    sa.Column("last_used_at", Time),  # at most once a minute per grant (migration 0009)
)

invites = sa.Table(
    # One-time sign-up links: kind "setup" (first run, makes an administrator) or "invite".
    "invites",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(10), nullable=False),
    sa.Column("email", sa.String(320)),  # an invite for one address only, when given
    sa.Column("created_by", sa.String(32)),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("used_at", Time),
    sa.Column("used_by", sa.String(32)),
)

authorization_codes = sa.Table(
    "authorization_codes",
    metadata,
    sa.Column("code_hash", sa.String(64), primary_key=True),
    sa.Column("grant_id", sa.String(32), sa.ForeignKey("grants.id", ondelete="CASCADE"), nullable=False),
    sa.Column("client_id", sa.String(2048), nullable=False),
    sa.Column("redirect_uri", sa.String(2048), nullable=False),
    sa.Column("redirect_uri_given", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("code_challenge", sa.String(128), nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("used_at", Time),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("grant_id", sa.String(32), sa.ForeignKey("grants.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("expires_at", Time, nullable=False),
    sa.Column("rotated_at", Time),
)

memories = sa.Table(
    "memories",
    metadata,
    # An integer key so SQLite's FTS5 index can point at rows; `id` is what clients see.
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("client", sa.String(255)),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    # A memory is a fact ("memory") or a piece of a stored document ("chunk"); both are searched.
    sa.Column("kind", sa.String(10), nullable=False, server_default="memory"),
    sa.Column("document_id", sa.String(32)),  # chunks are deleted with their document, in code
    # In the trash since then (memory/trash.py): out of search, list and context, purged later.
    sa.Column("deleted_at", Time),
    # Replaced by a newer memory about the same thing (its id), since `superseded_at`.
    sa.Column("superseded_by", sa.String(32)),
    sa.Column("superseded_at", Time),
    sa.Index("ix_memories_user_created", "user_id", "created_at"),
    sa.Index("ix_memories_user_deleted", "user_id", "deleted_at"),
    sa.Index("ix_memories_user_hash", "user_id", "content_hash"),
    sa.Index("ix_memories_document", "document_id"),
)

documents = sa.Table(
    "documents",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.String(32), nullable=False, index=True),
    sa.Column("title", sa.String(500), nullable=False),
    sa.Column("document_type", sa.String(40), nullable=False),
    sa.Column("source_url", sa.String(2048)),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("status", sa.String(10), nullable=False),  # pending | ready
    sa.Column("chunk_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("client", sa.String(255)),
    sa.Column("created_at", Time, nullable=False),
)

# Every change of a memory (memory/history.py): what happened, when, by which app, and the text
# it had before. Kept while the memory is, trash included; purged and erased with it.
memory_history = sa.Table(
    "memory_history",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("memory_id", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(12), nullable=False),  # created merged updated superseded deleted restored
    sa.Column("at", Time, nullable=False),
    sa.Column("client", sa.String(255)),
    sa.Column("text_before", sa.Text),
    sa.Index("ix_memory_history_user_memory", "user_id", "memory_id"),
)

# One vector per memory and embedding model; the model name lets a model change re-embed.
memory_vectors = sa.Table(
    "memory_vectors",
    metadata,
    sa.Column("memory_pk", sa.Integer, sa.ForeignKey("memories.pk", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("vector", EmbeddingVector, nullable=False),
    sa.Index("ix_memory_vectors_user_model", "user_id", "model"),
)

# Bumped on every write to a user's memories: an instance's cached vectors are current while the
# number it cached with is still the number here, whoever wrote.
memory_versions = sa.Table(
    "memory_versions",
    metadata,
    sa.Column("user_id", sa.String(32), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
)

# Work that outlives a request (saving what jean_memory kept, chunking documents): recorded before
# the request answers, done by any instance's worker, resumed after a crash when the lock lapses.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("locked_until", Time),
    sa.Column("created_at", Time, nullable=False),
    sa.Index("ix_jobs_created", "created_at"),
)

rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("bucket", sa.String(200), primary_key=True),
    sa.Column("window_start", sa.BigInteger, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)
