"""What a signed-in person does to their own account from the /account page: change the password.

Unlike an administrator's `set_password` (lifecycle.py), which signs the person out everywhere,
a change made by the person keeps the browser that made it and ends every other session: whoever
knew the old password is signed out, the person is not.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from jean_memory import clock
from jean_memory.accounts.passwords import hash_password, verify_password
from jean_memory.db.tables import browser_sessions, users


class WrongPasswordError(ValueError):
    pass


def change_password(engine: Engine, user_id: str, current: str, new: str, keep_session: str | None) -> int:
    """Check the current password, set the new one and end the person's other browser sessions;
    how many ended. Raises WrongPasswordError or WeakPasswordError before changing anything."""
    with engine.connect() as conn:
        password_hash = conn.execute(sa.select(users.c.password_hash).where(users.c.id == user_id)).scalar()
    if not verify_password(password_hash, current):
        raise WrongPasswordError("the current password is not right")
    new_hash = hash_password(new)
    keep = clock.sha256_hex(keep_session) if keep_session else ""
    with engine.begin() as conn:
        conn.execute(users.update().where(users.c.id == user_id).values(password_hash=new_hash))
        return conn.execute(
            browser_sessions.delete().where(
                browser_sessions.c.user_id == user_id, browser_sessions.c.token_hash != keep
            )
        ).rowcount
