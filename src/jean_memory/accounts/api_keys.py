"""API keys for the legacy endpoint: `jm_sk_...`, stored as SHA-256 hashes."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jean_memory import clock
from jean_memory.db.tables import api_keys

PREFIX = "jm_sk_"


def create_api_key(engine: Engine, user_id: str) -> str:
    key = clock.new_token(PREFIX)
    with engine.begin() as conn:
        conn.execute(
            api_keys.insert().values(
                key_hash=clock.sha256_hex(key), user_id=user_id, prefix=key[:12], created_at=clock.now()
            )
        )
    return key


def api_key_user_id(engine: Engine, key: str | None) -> str | None:
    """The owner of a key, or None; records the use so people can see stale keys."""
    if not key or not key.startswith(PREFIX):
        return None
    key_hash = clock.sha256_hex(key)
    with engine.begin() as conn:
        row = conn.execute(sa.select(api_keys.c.user_id).where(api_keys.c.key_hash == key_hash)).first()
        if row:
            conn.execute(api_keys.update().where(api_keys.c.key_hash == key_hash).values(last_used_at=clock.now()))
    return row.user_id if row else None
