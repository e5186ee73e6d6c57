"""Browser sign-in sessions: a random cookie value, stored only as its hash."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from jean_memory import clock
from jean_memory.db.tables import browser_sessions, users

COOKIE_NAME = "jm_session"


def start_session(engine: Engine, user_id: str, lifetime_seconds: int) -> str:
    token = clock.new_token()
    now = clock.now()
    with engine.begin() as conn:
        conn.execute(
            browser_sessions.insert().values(
                token_hash=clock.sha256_hex(token), user_id=user_id, created_at=now, expires_at=now + lifetime_seconds
            )
        )
    return token


def session_user_id(engine: Engine, token: str | None) -> str | None:
    """The signed-in user, or None (no cookie, expired, ended, or the account is disabled)."""
    if not token:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(browser_sessions.c.user_id)
            .join(users, users.c.id == browser_sessions.c.user_id)
            .where(
                browser_sessions.c.token_hash == clock.sha256_hex(token),
                browser_sessions.c.expires_at > clock.now(),
                users.c.disabled_at.is_(None),
            )
        ).first()
    return row.user_id if row else None


def end_sessions(conn: Connection, user_id: str) -> int:
    """Sign the person out of every browser (password change, disabling): how many ended."""
    return conn.execute(browser_sessions.delete().where(browser_sessions.c.user_id == user_id)).rowcount


def sweep_expired_sessions(engine: Engine) -> int:
    """Drop sessions past their expiry (every sign-in adds one); how many went."""
    with engine.begin() as conn:
        return conn.execute(browser_sessions.delete().where(browser_sessions.c.expires_at <= clock.now())).rowcount
