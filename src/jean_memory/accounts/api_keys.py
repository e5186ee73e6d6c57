"""API keys for the legacy endpoint: `jm_sk_...`, stored as SHA-256 hashes.

A key is shown once; afterwards it is known by its prefix (the first 12 characters), which is
what `apikey list` shows and `apikey revoke` takes. A revoked key's row is deleted, so the next
request with it fails on every instance at once (keys are looked up on each request, never
cached). Keys of a disabled account are refused while it stays disabled.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jean_memory import clock
from jean_memory.db.tables import api_keys, users

PREFIX = "jm_sk_"
SHOWN_PREFIX_LENGTH = 12
#: A key's last use is written at most this often: `apikey list` and /keys show it to the
#: minute, and a write on every legacy request was one more statement (and, on SQLite, one more
#: lock on the single writer) for each call (issue 17).
LAST_USED_EVERY_SECONDS = 60


class ApiKeyError(ValueError):
    pass


@dataclass(frozen=True)
class ApiKeyInfo:
    prefix: str
    created_at: float
    last_used_at: float | None


def create_api_key(engine: Engine, user_id: str) -> str:
    key = clock.new_token(PREFIX)
    with engine.begin() as conn:
        conn.execute(
            api_keys.insert().values(
                key_hash=clock.sha256_hex(key),
                user_id=user_id,
                prefix=key[:SHOWN_PREFIX_LENGTH],
                created_at=clock.now(),
            )
        )
    return key


def api_key_user_id(engine: Engine, key: str | None) -> str | None:
    """The owner of a key, or None (unknown, revoked, or the owner is disabled); records the use
    (at most once a minute per key) so people can see stale keys."""
    if not key or not key.startswith(PREFIX):
        return None
    key_hash = clock.sha256_hex(key)
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(api_keys.c.user_id, api_keys.c.last_used_at)
            .join(users, users.c.id == api_keys.c.user_id)
            .where(api_keys.c.key_hash == key_hash, users.c.disabled_at.is_(None))
        ).first()
    if row is None:
        return None
    now = clock.now()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY_SECONDS:
        with engine.begin() as conn:
            conn.execute(
                api_keys.update()
                .where(
                    api_keys.c.key_hash == key_hash,
                    sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at <= now - LAST_USED_EVERY_SECONDS),
                )
                .values(last_used_at=now)
            )
    return row.user_id


def list_api_keys(engine: Engine, user_id: str) -> list[ApiKeyInfo]:
    """A person's keys, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(api_keys.c.prefix, api_keys.c.created_at, api_keys.c.last_used_at)
            .where(api_keys.c.user_id == user_id)
            .order_by(api_keys.c.created_at)
        ).all()
    return [ApiKeyInfo(row.prefix, row.created_at, row.last_used_at) for row in rows]


def revoke_api_key(engine: Engine, prefix: str) -> str:
    """Delete the one key whose prefix starts with `prefix`; the owner's user id. ApiKeyError
    when none or several match (a prefix is 72 random bits after `jm_sk_`, but a shortened one
    may not be unique)."""
    prefix = prefix.strip()
    if not prefix.startswith(PREFIX) or len(prefix) <= len(PREFIX):
        raise ApiKeyError(f"{prefix!r} is not a key prefix: give the jm_sk_... prefix that `apikey list` shows")
    # The prefix is a literal: escape LIKE's wildcards ('_' is in every key).
    pattern = prefix[:SHOWN_PREFIX_LENGTH].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(api_keys.c.key_hash, api_keys.c.user_id, api_keys.c.prefix).where(
                api_keys.c.prefix.like(pattern, escape="\\")
            )
        ).all()
        if len(prefix) > SHOWN_PREFIX_LENGTH:  # a whole key or a longer piece of one: it must match
            rows = [row for row in rows if prefix.startswith(row.prefix)]
        if not rows:
            raise ApiKeyError(
                f"no API key has the prefix {prefix[:SHOWN_PREFIX_LENGTH]}; see jean-memory apikey list EMAIL"
            )
        if len(rows) > 1:
            raise ApiKeyError(f"{len(rows)} API keys start with {prefix}; give more of the prefix")
        conn.execute(api_keys.delete().where(api_keys.c.key_hash == rows[0].key_hash))
    return rows[0].user_id


def revoke_own_api_key(engine: Engine, user_id: str, prefix: str) -> bool:
    """Delete this person's key with exactly this prefix (the /keys page's "Revoke"); False when
    they have none, so another person's key answers exactly like an unknown one."""
    if not prefix.startswith(PREFIX) or len(prefix) != SHOWN_PREFIX_LENGTH:
        return False
    with engine.begin() as conn:
        deleted = conn.execute(
            api_keys.delete().where(api_keys.c.user_id == user_id, api_keys.c.prefix == prefix)
        ).rowcount
    return bool(deleted)
