"""Is an access token's grant still alive? Asked on every MCP request, so answers are cached.

A grant revoked on this instance is known at once (it is marked here as it is revoked); one
revoked elsewhere is seen when its cache entry ages out, within `ttl_seconds` (30 s by default,
inside the 60 s the contract allows).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jean_memory import clock
from jean_memory.db.tables import grants

MAX_ENTRIES = 100_000


class RevocationCache:
    def __init__(self, engine: Engine, ttl_seconds: int) -> None:
        self._engine = engine
        self._ttl = ttl_seconds
        self._checked: dict[str, tuple[float, bool]] = {}

    def known_status(self, grant_id: str) -> bool | None:
        """The cached answer while it is fresh, else None; never touches the database."""
        cached = self._checked.get(grant_id)
        if cached is not None and (cached[1] or clock.now() - cached[0] < self._ttl):
            return cached[1]
        return None

    def is_revoked(self, grant_id: str) -> bool:
        now = clock.now()
        cached = self._checked.get(grant_id)
        if cached is not None and (cached[1] or now - cached[0] < self._ttl):
            return cached[1]
        with self._engine.connect() as conn:
            revoked_at = conn.execute(sa.select(grants.c.revoked_at).where(grants.c.id == grant_id)).first()
        revoked = revoked_at is None or revoked_at[0] is not None  # an unknown grant counts as revoked
        if len(self._checked) >= MAX_ENTRIES:
            self._checked.clear()
        self._checked[grant_id] = (now, revoked)
        return revoked

    def mark_revoked(self, grant_id: str) -> None:
        self._checked[grant_id] = (clock.now(), True)
