"""May an access token's grant still be honoured? Asked on every MCP request, so answers are cached.

A grant revoked on this instance is known at once (it is marked here as it is revoked); one
revoked elsewhere is seen when its cache entry ages out, within `ttl_seconds` (30 s by default,
inside the 60 s the contract allows). The RFC 7009 endpoint that revokes is `revoke.py`.

A live grant is not enough: it must be the token's own, its user the token's `sub` and its
client the token's `client_id` (CONTRACT "Access token"). Otherwise one person's live grant id
beside another person's `sub` would be honoured, so a token signed by anyone who ever held
the key (or forged through a signing oracle) could read anybody's memories with their own grant.

A read that finds the grant live and the token's also records its use (`grants.last_used_at`,
at most once a minute per grant), so the person's /apps page can say when each app last came:
accurate to the cache's lifetime plus a minute, for at most one small write a minute per grant.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jean_memory import clock
from jean_memory.db.tables import grants
from jean_memory.oauth.grants import note_grant_use

MAX_ENTRIES = 100_000

Owner = tuple[str, str]  # (user_id, client_id) of a live grant


class RevocationCache:
    def __init__(self, engine: Engine, ttl_seconds: int) -> None:
        self._engine = engine
        self._ttl = ttl_seconds
        # grant id -> (when read, the live grant's owner or None when revoked or unknown)
        self._checked: dict[str, tuple[float, Owner | None]] = {}
        # A revoked entry is final: a read that saw the grant live just before `mark_revoked`
        # must not write "live" over it when it finishes (review finding 2).
        self._lock = threading.Lock()

    def known_status(self, grant_id: str, user_id: str, client_id: str) -> bool | None:
        """Whether the token must be refused, while the cached answer is fresh; else None.
        Never touches the database."""
        cached = self._checked.get(grant_id)
        if cached is not None and (cached[1] is None or clock.now() - cached[0] < self._ttl):
            return cached[1] != (user_id, client_id)
        return None

    def is_revoked(self, grant_id: str, user_id: str, client_id: str) -> bool:
        """True when the grant is revoked, unknown, or not this user's grant for this client."""
        known = self.known_status(grant_id, user_id, client_id)
        if known is not None:
            return known
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(grants.c.user_id, grants.c.client_id, grants.c.revoked_at, grants.c.last_used_at).where(
                    grants.c.id == grant_id
                )
            ).first()
        owner = None if row is None or row.revoked_at is not None else (row.user_id, row.client_id)
        if owner is not None and owner == (user_id, client_id):
            # Used now: at most once a minute per grant, and only when the cache sent us here.
            note_grant_use(self._engine, grant_id, row.last_used_at)
        with self._lock:
            current = self._checked.get(grant_id)
            if current is not None and current[1] is None:
                owner = None  # revoked while we read: stays revoked
            if len(self._checked) >= MAX_ENTRIES:
                self._checked.clear()
            self._checked[grant_id] = (clock.now(), owner)
        return owner != (user_id, client_id)

    def mark_revoked(self, grant_id: str) -> None:
        with self._lock:
            self._checked[grant_id] = (clock.now(), None)
