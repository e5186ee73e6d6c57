"""Accounts for the made-up people benchmarks and tests hand straight to MemoryService.

Every write of a memory or document checks that its owner still has an account (review finding
7), so a benchmark that saves for "person-1" needs a users row with that id first.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jean_memory import clock
from jean_memory.db.tables import users


def ensure_people(engine: Engine, *user_ids: str) -> None:
    """Insert a minimal account (unusable password hash) for each id that has none yet."""
    with engine.begin() as conn:
        for user_id in user_ids:
            if conn.execute(sa.select(users.c.id).where(users.c.id == user_id)).first() is None:
                conn.execute(
                    users.insert().values(
                        id=user_id, email=f"{user_id}@people.test", password_hash="!", created_at=clock.now()
                    )
                )
